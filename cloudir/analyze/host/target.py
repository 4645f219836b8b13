"""Opening a disk image or file system export with dissect.target, or saying why not.

dissect opens almost anything without complaint (a text file becomes a target with no
file system), so the checks that make a responder's error message come after the open:
no file system, an encrypted volume, no recognised operating system.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from cloudir.analyze.parsers import ErrorLog
from cloudir.errors import EvidenceError

# Names dissect gives the volume systems of encrypted volumes it cannot open unkeyed.
_ENCRYPTED = ("luks", "bitlocker", "bde", "fve")
UNKNOWN_OS = ("default", "", None)


# What dissect logs that says nothing about the evidence: a plugin that does not apply to
# this OS, the time zone it assumes, the OS it picked.
_NOISE = re.compile(
    r"Failed to load (sub)?plugin|falling back to UTC|Found compatible|Selected OS|"
    r"No log files found|not supported|Unsupported|not compatible|Can.t identify|"
    r"Failed to find OS plugin|will affect performance|Broken OS plugin"
)
_TARGET_PREFIX = re.compile(r"^<Target [^>]*>: ")


def quiet_dissect() -> None:
    """dissect's log goes nowhere by itself (never the responder's terminal); what it
    says about the evidence reaches the error log through `DissectWarnings`."""
    # dissect sets its target logger to this level on every open (default CRITICAL)
    os.environ["DISSECT_LOG_TARGET"] = "WARNING"
    for name in ("dissect", "flow.record"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    logging.getLogger("dissect.target.target").setLevel(logging.WARNING)


class DissectWarnings(logging.Handler):
    """Collects what dissect skipped while reading (a log line it cannot parse, a file in
    an unknown format), so no skip is silent: each becomes one error-log entry."""

    def __init__(self, errors: ErrorLog, limit: int = 10_000) -> None:
        super().__init__(logging.WARNING)
        self.errors = errors
        self.limit = limit
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string in a third-party message
            text = str(record.msg)
        if _NOISE.search(text):
            return
        if self.limit <= 0:
            self.dropped += 1
            return
        self.limit -= 1
        line = _TARGET_PREFIX.sub("", text.strip()).splitlines()[0][:300]
        self.errors.add(f"dissect skipped: {line}")

    def __enter__(self) -> DissectWarnings:
        quiet_dissect()
        logging.getLogger("dissect").addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger("dissect").removeHandler(self)
        if self.dropped:
            self.errors.add(f"dissect skipped {self.dropped} more items (not listed)")


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


def truncation(target: Any, path: Path) -> str | None:
    """One line when a file system claims more bytes than its volume holds: the image was
    cut short (an interrupted copy), and whatever lies past the end reads as missing."""
    for fs in target.filesystems:
        ext = getattr(fs, "extfs", None)
        volume_size = getattr(getattr(fs, "volume", None), "size", None)
        if ext is None or not volume_size:
            continue
        claimed = int(ext.block_count) * int(ext.block_size)
        if claimed > volume_size:
            return (
                f"{path.name}: the image looks truncated: its ext file system spans "
                f"{claimed:,} bytes, the volume holds {volume_size:,}; what lies past the "
                "end cannot be read"
            )
    return None


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
