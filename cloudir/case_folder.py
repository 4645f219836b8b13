"""What a folder given as `--case` is, judged before anything is written into it.

A wrong `--case` is a typing mistake (a file, a folder of other things: exit 2); a case
folder that is not as cloudir made it (case.json that is not an object, custody.jsonl
gone, evidence/ a link out of the case) is damage to report (exit 3), never to paper
over: starting a fresh custody log in a damaged case would hide what happened to it.
Every check uses lstat and opens with O_NOFOLLOW, so a link planted in the case can
neither make cloudir read a FIFO forever nor write outside the folder.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from pathlib import Path
from typing import Any

from cloudir.errors import EvidenceError, UsageError

CASE_FILE = "case.json"
CUSTODY_FILE = "custody.jsonl"
EVIDENCE_DIR = "evidence"
LOCK_FILE = "case.lock"
# Left by cloudir itself (a lock of a run that died, a case.json cut short while
# being created): a folder holding only these is still an empty folder.
OWN_LEFTOVERS = frozenset({LOCK_FILE, CASE_FILE + ".partial"})
# Derived folders the stages write: a link there would carry their writes out of the case.
OUTPUT_DIRS = ("timeline", "timeline.building", "timeline.old", "findings", "report", "export")
CASE_FILE_LIMIT = 1 << 20


class FolderState(enum.Enum):
    ABSENT = "absent"
    EMPTY = "empty"
    CASE = "case"
    FOREIGN = "foreign"  # holds other things and no case.json


def folder_state(root: Path) -> FolderState:
    """Classify `root`; raise for what is neither a folder nor an intact case layout."""
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        if root.is_symlink():
            raise UsageError(
                f"{root} is a symbolic link to nothing; give --case a folder"
            ) from None
        return FolderState.ABSENT
    except NotADirectoryError:
        raise UsageError(f"{root}: part of this path is a file, not a folder") from None
    except OSError as exc:
        raise UsageError(f"{root}: cannot use it as a case folder ({exc.strerror})") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{root} is a file, not a case folder; give --case a folder")
    names = _names(root)
    if CASE_FILE in names:
        check_case_layout(root)
        return FolderState.CASE
    remnants = [n for n in (CUSTODY_FILE, EVIDENCE_DIR) if n in names]
    if remnants:
        raise EvidenceError(
            f"{root} holds {' and '.join(remnants)} but no {CASE_FILE}: a damaged case; "
            f"restore {CASE_FILE} from a copy"
        )
    return FolderState.FOREIGN if foreign_entries(root) else FolderState.EMPTY


def refuse_inside_a_case(root: Path) -> None:
    """A new case is never made inside another one: in its evidence/ it would be files
    custody never recorded, in its timeline/ or report/ it would be wiped by a rebuild."""
    target = root.expanduser().resolve()
    for folder in target.parents:
        if (folder / CASE_FILE).is_file():
            raise UsageError(f"{root} is inside the case {folder}; make the new case outside it")


def foreign_entries(root: Path) -> list[str]:
    """What a folder holds that cloudir did not put there, sorted."""
    return sorted(n for n in _names(root) if n not in OWN_LEFTOVERS)


def refuse_foreign(root: Path, adoptable: bool = True) -> UsageError:
    entries = foreign_entries(root)
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    advice = "pick a new or empty folder"
    if adoptable:
        advice += ", or add --adopt-folder to make this one a case (its files stay as they are)"
    return UsageError(f"{root} is not a cloudir case (no {CASE_FILE}) and holds {shown}; {advice}")


def check_case_layout(root: Path) -> None:
    """The three things every case has, each of the kind cloudir made, none a link."""
    _expect(root / CASE_FILE, stat.S_ISREG, "a regular file", required=True)
    _expect(root / CUSTODY_FILE, stat.S_ISREG, "a regular file", required=True)
    _expect(root / EVIDENCE_DIR, stat.S_ISDIR, "a folder", required=False)


def check_output_links(root: Path) -> None:
    """Before a stage writes: none of the folders it writes may lead out of the case."""
    for name in OUTPUT_DIRS:
        path = root / name
        if path.is_symlink():
            raise EvidenceError(
                f"{path} is a symbolic link (to {_target(path)}): cloudir writes there and "
                "never follows a link out of the case; remove the link"
            )


def read_case_info(root: Path) -> dict[str, Any]:
    """case.json as an object with an id, read without following a link or blocking."""
    path = root / CASE_FILE
    check_case_layout(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EvidenceError(f"{path} is not a regular file: a damaged case")
        data = fh.read(CASE_FILE_LIMIT + 1)
    if len(data) > CASE_FILE_LIMIT:
        raise EvidenceError(f"{path} is over {CASE_FILE_LIMIT} bytes: not one cloudir wrote")
    try:
        info = json.loads(data)
    except ValueError as exc:
        reason = _first_line(exc)
        raise EvidenceError(f"{path} is not valid JSON ({reason}): a damaged case") from None
    if not isinstance(info, dict):
        kind = type(info).__name__
        raise EvidenceError(f"{path} holds a JSON {kind}, not an object: a damaged case")
    if not isinstance(info.get("id"), str) or not info["id"]:
        raise EvidenceError(f"{path} has no case id: a damaged case")
    return info


def _expect(path: Path, is_kind: Any, kind: str, required: bool) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        if required:
            raise EvidenceError(
                f"{path.parent} has no {path.name}: a damaged case; restore it from a copy"
            ) from None
        return
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        raise EvidenceError(
            f"{path} is a symbolic link (to {_target(path)}): a case keeps its own "
            f"{path.name}, never a link out of the folder"
        )
    if not is_kind(mode):
        raise EvidenceError(f"{path} is not {kind}: a damaged case")


def _names(root: Path) -> set[str]:
    try:
        return set(os.listdir(root))
    except OSError as exc:
        raise UsageError(f"{root}: cannot list it ({exc.strerror})") from None


def _target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
