"""The Docker SDK, imported without its ssh transport until an ssh:// engine is used.

`import docker` imports paramiko for the ssh:// transport whether or not any engine is
reached over ssh, and paramiko imports cryptography's key types and invoke: about a
third of `capture container`'s start (0.08 s on the bench machine), paid again on every
run. So the SDK is imported here with paramiko held back (the SDK catches the
ImportError, as when paramiko is not installed) and `enable_ssh` loads the transport
when the engine's address is ssh://. Import the SDK through this module (first), so the
saving holds whichever cloudir module imports it first.
"""

from __future__ import annotations

import sys

_HOLD_BACK = "paramiko" not in sys.modules and "docker" not in sys.modules
if _HOLD_BACK:
    sys.modules["paramiko"] = None  # type: ignore[assignment]  # import paramiko fails
try:
    import docker
    import docker.errors
    from docker.context import ContextAPI
    from docker.models.containers import Container
finally:
    if _HOLD_BACK:
        del sys.modules["paramiko"]

__all__ = ["Container", "ContextAPI", "docker", "enable_ssh"]


def enable_ssh() -> None:
    """Load the SDK's ssh transport where its client looks for it. ImportError when
    paramiko is not installed (the SDK still needs it when ssh is shelled out to)."""
    import docker.api.client as api_client
    import docker.transport as transport

    if hasattr(api_client, "SSHHTTPAdapter"):
        return
    from docker.transport.sshconn import SSHHTTPAdapter

    transport.SSHHTTPAdapter = SSHHTTPAdapter
    api_client.SSHHTTPAdapter = SSHHTTPAdapter
