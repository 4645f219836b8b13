"""Opening a disk image or file system export with dissect.target, or saying why not.

dissect opens almost anything without complaint (a text file becomes a target with no
file system), so the checks that make a responder's error message come after the open:
no file system, an encrypted volume, no recognised operating system.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cloudir.errors import EvidenceError

# Names dissect gives the volume systems of encrypted volumes it cannot open unkeyed.
_ENCRYPTED = ("luks", "bitlocker", "bde", "fve")
UNKNOWN_OS = ("default", "", None)


def quiet_dissect() -> None:
    """dissect logs every plugin that does not apply to an image at ERROR; those are not
    problems with the evidence, and real ones reach the error log through exceptions."""
    for name in ("dissect", "flow.record"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def open_target(path: Path) -> Any:
    """A dissect Target with at least one file system, or EvidenceError in one line."""
    quiet_dissect()
    from dissect.target import Target
    from dissect.target.exceptions import TargetError

    try:
        target = Target.open(path)
    except TargetError as exc:
        raise EvidenceError(f"{path.name}: dissect cannot open it: {_first_line(exc)}") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise EvidenceError(f"{path.name}: unreadable image: {_first_line(exc)}") from exc
    if not target.filesystems:
        encrypted = _encrypted_volume(target)
        if encrypted:
            raise EvidenceError(
                f"{path.name}: the volume is encrypted ({encrypted}); decrypt it first, "
                "then capture the decrypted image"
            )
        raise EvidenceError(
            f"{path.name}: no file system found (not a disk image, truncated, or a "
            "file system dissect does not read)"
        )
    return target


def os_name(target: Any) -> str | None:
    """The operating system dissect recognised, or None."""
    name = getattr(target, "os", None)
    return None if name in UNKNOWN_OS else str(name)


def hostname(target: Any) -> str | None:
    try:
        name = target.hostname
    except Exception:  # no hostname plugin for this OS, or an unreadable /etc/hostname
        return None
    return str(name) if name else None


def _encrypted_volume(target: Any) -> str | None:
    for volume in getattr(target, "volumes", []) or []:
        kinds = " ".join(
            str(x).lower()
            for x in (type(volume).__name__, getattr(volume, "vs", None), volume.name)
            if x
        )
        for name in _ENCRYPTED:
            if name in kinds:
                return name.upper()
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
