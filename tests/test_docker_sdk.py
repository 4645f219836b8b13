"""The Docker SDK without paramiko until an ssh:// engine needs it (docker_sdk.py)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from cloudir.capture import containers
from cloudir.capture.docker_sdk import docker, enable_ssh

assert "paramiko" not in sys.modules, "paramiko imported for a local engine"
try:
    docker.APIClient(base_url="ssh://nobody@127.0.0.1:1", use_ssh_client=True, version="1.41")
except docker.errors.DockerException as exc:
    assert "paramiko" in str(exc), exc
else:
    raise AssertionError("the ssh transport was there before enable_ssh")
enable_ssh()
assert "paramiko" in sys.modules
docker.APIClient(base_url="ssh://nobody@127.0.0.1:1", use_ssh_client=True, version="1.41")
print("ok")
"""


def test_paramiko_waits_for_an_ssh_engine() -> None:
    """A fresh interpreter: this one may have imported the SDK (and paramiko) already."""
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
