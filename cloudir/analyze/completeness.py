"""What the timeline could not see: items whose capture never finished, and evidence
files custody records that are gone, unreadable or no longer plain files.

Custody is the record of what was captured, the disk is what the timeline reads; a
timeline that silently reads less than custody promises looks whole and is not. Each
gap becomes one `EvidenceProblem`, listed in `timeline/errors.jsonl` and under
`evidence_problems` in `timeline/summary.json`, and `timeline --strict` exits 3 on any.

An item's completion state comes from custody alone, in order: a capture run that adds
to an item (`evidence-opened`, a `capture` entry, `partials-removed` on a resume) leaves
it open until a closing entry. `capture-complete` closes it whole; `capture-incomplete`
closes it partial; `respond-complete` and `respond-incomplete` close a containment
record (its outcome is on file either way); `capture-ebs-image` closes an image
download. An item still open at the end was cut short (Ctrl-C, kill, crash, full disk).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cloudir.analyze.error_entries import error_entry
from cloudir.case import EVIDENCE_DIR, PARTIAL_SUFFIX, Case
from cloudir.custody_actions import CustodyAction as A
from cloudir.custody_actions import read_action

# "changed": an object a manifest pins answered with other bytes (s3_manifest.py)
KINDS = ("incomplete", "missing", "unreadable", "unrecorded", "not_regular", "changed")
OPENS = frozenset({A.EVIDENCE_OPENED, A.CAPTURE, A.PARTIALS_REMOVED, A.RESPOND_PLAN})
CLOSES_WHOLE = frozenset({A.CAPTURE_COMPLETE, A.RESPOND_COMPLETE, A.RESPOND_INCOMPLETE})
CLOSES_PARTIAL = frozenset({A.CAPTURE_INCOMPLETE})
CLOSES_DOWNLOAD = frozenset({A.CAPTURE_EBS_IMAGE})
# cloudir opens an ebs-snapshot item only once AWS reports the snapshot completed
# (capture/ebs.py `_open_snapshot_item`), and writes no capture-complete for it.
WHOLE_WHEN_OPENED = frozenset({"ebs-snapshot"})
CHECKPOINT_SUFFIX = ".checkpoint"


@dataclass(frozen=True)
class EvidenceProblem:
    evidence_id: str
    path: str
    kind: str  # one of KINDS
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Its errors.jsonl line, also its entry in summary.json's `evidence_problems`."""
        return error_entry(self.evidence_id, self.path, self.reason, kind=self.kind)


@dataclass
class _ItemState:
    state: str = "unknown"  # open | whole | partial | unknown (no entries that say)
    opened_by: str = ""
    opened_at: str = ""
    note: str = ""


@dataclass
class Completeness:
    problems: list[EvidenceProblem]
    recorded: dict[str, str]  # each path custody records -> the item it was filed under

    def unreadable_paths(self) -> set[str]:
        """The files the timeline must not open: custody and the disk disagree about them."""
        return {p.path for p in self.problems if p.kind != "incomplete"}


def check_evidence(case: Case) -> Completeness:
    """Every gap between custody and the disk: items first, then files, in path order.

    Custody is read in one pass and no entry is kept, so a case of 50,000 captured files
    costs the paths, not 50,000 parsed entries.
    """
    recorded: dict[str, str] = {}
    states: dict[str, _ItemState] = {}
    for entry in case.custody_entries():
        files = entry.get("files")
        for item in files if isinstance(files, list) else []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                recorded[item["path"]] = str(entry.get("evidence_id") or "")
        _advance(states, entry)
    found = _incomplete_items(case, states)
    found += _recorded_file_problems(case, recorded)
    found += _unrecorded_files(case, recorded)
    return Completeness(found, recorded)


def _advance(states: dict[str, _ItemState], entry: dict[str, Any]) -> None:
    """One custody entry moves its item between open, whole and partial."""
    evidence_id, action = entry.get("evidence_id"), read_action(entry.get("action"))
    if isinstance(evidence_id, str) and evidence_id:
        item = states.setdefault(evidence_id, _ItemState())
        if action in CLOSES_WHOLE or (action in CLOSES_DOWNLOAD and item.state != "partial"):
            item.state = "whole"
        elif action in CLOSES_PARTIAL:
            item.state, item.note = "partial", str(entry.get("note") or "")
        elif action in OPENS or (entry.get("files") and action not in CLOSES_DOWNLOAD):
            if item.state != "open":
                item.opened_by = str(entry.get("command") or "")
                item.opened_at = str(entry.get("ts") or "")
            item.state = "open"


def _incomplete_items(case: Case, states: dict[str, _ItemState]) -> list[EvidenceProblem]:
    problems = []
    for evidence_id in sorted(states):
        item = states[evidence_id]
        folder = f"{EVIDENCE_DIR}/{evidence_id}"
        if item.state == "open" and _kind(case, evidence_id) in WHOLE_WHEN_OPENED:
            continue
        if item.state == "open":
            reason = (
                f"capture cut short: opened by `{item.opened_by}` at {item.opened_at} with no "
                "capture-complete after it (Ctrl-C, kill or crash); run the capture again"
            )
        elif item.state == "partial":
            reason = "its last capture did not complete; re-run it to fetch the rest" + (
                f" ({item.note})" if item.note else ""
            )
        else:
            continue
        problems.append(EvidenceProblem(evidence_id, folder, "incomplete", reason))
    return problems


def _kind(case: Case, evidence_id: str) -> str:
    try:
        return str(case.read_meta(evidence_id).get("kind", ""))
    except Exception:  # an unreadable meta.json is reported as its own file
        return ""


def _recorded_file_problems(case: Case, recorded: dict[str, str]) -> list[EvidenceProblem]:
    problems = []
    for rel in sorted(recorded):
        evidence_id = recorded[rel] or _item_of(rel)
        reason = _file_problem(case.root, rel)
        if reason is not None:
            kind, text = reason
            problems.append(EvidenceProblem(evidence_id, rel, kind, text))
    return problems


def _file_problem(root: Path, rel: str) -> tuple[str, str] | None:
    """Why custody's file cannot be read as it was recorded, or None when it can."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] != EVIDENCE_DIR or ".." in parts or rel.startswith("/"):
        return "not_regular", "custody names a path outside the evidence folder; not opened"
    path = root.joinpath(*parts)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing", "recorded in custody but not on disk; run cloudir verify"
    except OSError as exc:
        return "unreadable", f"cannot be examined: {exc.strerror or exc}"
    if stat.S_ISLNK(info.st_mode):
        return "not_regular", "now a symbolic link, not the recorded file; not followed"
    if not stat.S_ISREG(info.st_mode):
        return "not_regular", f"now a {_type_name(info.st_mode)}, not a regular file; not opened"
    for folder in path.parents:
        if folder == root:
            break
        if folder.is_symlink():
            return "not_regular", f"{folder.name}/ is now a symbolic link; not followed"
    try:
        # O_NONBLOCK: a FIFO swapped in after the lstat must not hang the timeline
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return "unreadable", f"cannot be opened: {exc.strerror or exc}"
    try:
        os.read(fd, 1)
    except OSError as exc:
        return "unreadable", f"cannot be read: {exc.strerror or exc}"
    finally:
        os.close(fd)
    return None


def _type_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _unrecorded_files(case: Case, recorded: dict[str, str]) -> list[EvidenceProblem]:
    """Anything in an item custody does not know: planted, or left by a write cut short."""
    base = case.root / EVIDENCE_DIR
    problems = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in sorted(filenames) + links:
            path = here / name
            rel = case.relpath(path)
            if rel in recorded or name.endswith(CHECKPOINT_SUFFIX):
                continue
            evidence_id = _item_of(rel)
            if name.endswith(PARTIAL_SUFFIX):
                problems.append(
                    EvidenceProblem(
                        evidence_id,
                        rel,
                        "incomplete",
                        "temporary file of a write cut short: the capture that made it "
                        "did not finish; run it again",
                    )
                )
            else:
                problems.append(
                    EvidenceProblem(
                        evidence_id,
                        rel,
                        "unrecorded",
                        "not in custody.jsonl, so not parsed; run cloudir verify",
                    )
                )
    return problems


def _item_of(rel: str) -> str:
    parts = rel.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == EVIDENCE_DIR else ""
