"""Evidence the responder already holds: log folders, exported files.

The originals are only read: each file is copied into the case while it is hashed, and
custody records where it came from. A file that changes while it is copied is reported,
because the copy then matches no stable original.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.capture.tree import TreeCounts, change_between, looks_like_root_fs, tree_tar_chunks
from cloudir.case import (
    PARTIAL_SUFFIX,
    Case,
    FileRecord,
    NotRegularFileError,
    open_regular,
    safe_name,
)
from cloudir.custody_actions import CAPTURE_CLOSING, CustodyAction, read_action
from cloudir.errors import CloudirError, EvidenceError, UsageError
from cloudir.evidence_item import EvidenceItem, ItemTally

COPY_CHUNK = 1 << 20


@dataclass
class FilesResult(ItemTally):
    """One item of files (or one tree) and what this run got into it: the item's own
    tally, shown as the `--json` item."""

    item: EvidenceItem
    source: str

    @property
    def kind(self) -> str:
        return self.item.kind

    @property
    def warnings(self) -> list[str]:
        """What was seen and is not a file to copy (a link, a FIFO, an unreadable folder)."""
        return self.item.left_out

    @property
    def changed_since(self) -> list[str]:
        """Held files whose original changed since: the held copy stays, the change is named."""
        return self.item.notes

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "source": self.source,
            "kind": self.kind,
            "captured": self.captured,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "warnings": self.warnings,
            "failed": self.failed,
            "changed_since": self.changed_since,
        }


Recognise = Callable[[list[Path]], str]
"""One item's files -> their evidence kind, for `--kind auto`. The CLI passes the one the
parsers declare (`cloudir.analyze.parsers.recognise_kind`); capture does not import
analysis, so without one every item is kept as FALLBACK_KIND."""
FALLBACK_KIND = "files"


def guess_kind(paths: list[Path], recognise: Recognise | None = None) -> str:
    """The parser family a set of files belongs to, as `recognise` says; a disk image, its
    split segments or a file system export is `disk-image`, opened through dissect."""
    return recognise(paths) if recognise is not None else FALLBACK_KIND


def _segment(name: str) -> bool:
    """Split raw (`.000`, `.001`, ...) and EWF segments (`.E02`, ...)."""
    suffix = name.rsplit(".", 1)[-1]
    return (len(suffix) == 3 and suffix.isdigit()) or (
        len(suffix) == 3 and suffix[0] == "e" and suffix[1:].isdigit()
    )


def _walk(root: Path, warnings: list[str]) -> list[Path]:
    if root.is_symlink():
        warnings.append(f"{root}: symbolic link not followed")
        return []
    if root.is_file():
        return [root]
    found: list[Path] = []
    if not root.is_dir():
        warnings.append(f"{root}: not a regular file or folder, not captured")
        return []

    def unreadable(exc: OSError) -> None:
        warnings.append(f"{exc.filename}: cannot be read ({exc.strerror}), not captured")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        # os.walk lists a link to a folder among the folders and does not enter it: it
        # must still be named, or it vanishes from the capture without a word.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for name in sorted(filenames + links):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                warnings.append(f"{path}: not a regular file, not captured")
                continue
            found.append(path)
    return found


def refuse_case_overlap(case_root: Path, paths: list[Path]) -> None:
    """UsageError when a path is the case folder, lies inside it, or holds it.

    Capturing the case into itself would copy custody and evidence as new evidence, and
    a folder holding the case grows while it is copied. Paths are compared resolved
    (symbolic links followed) and by device and inode, so a second name for the same
    folder (a link, a bind mount) is caught too.
    """
    for given in paths:
        overlap = _overlap(case_root, given)
        if overlap:
            raise UsageError(
                f"{given}: {overlap} the case folder {case_root}; capture from outside the case"
            )


def _overlap(case_root: Path, given: Path) -> str:
    case_chain = _identity_chain(case_root)
    given_chain = _identity_chain(given)
    if not case_chain or not given_chain:
        return ""
    if case_chain[0] == given_chain[0]:
        return "is"
    if case_chain[0] in given_chain:
        return "is inside"
    if given_chain[0] in case_chain:
        return "holds"
    return ""


def _identity_chain(path: Path) -> list[tuple[Any, ...]]:
    """The path and each folder above it (links resolved), as (device, inode) where it
    exists and as its resolved name where it does not yet (a case about to be made)."""
    chain: list[tuple[Any, ...]] = []
    current = path.resolve()
    while True:
        try:
            info = os.stat(current)
            chain.append((info.st_dev, info.st_ino))
        except OSError:
            chain.append(("path", str(current)))
        if current.parent == current:
            return chain
        current = current.parent


def capture_paths(
    case: Case,
    paths: list[Path],
    kind: str,
    report: Callable[[str], None],
    on_file: Callable[[int], None] | None = None,
    recognise: Recognise | None = None,
) -> list[FilesResult]:
    """One evidence item per path given; re-running with the same path resumes it.
    `recognise` names an item's kind for `kind` "auto" (see `Recognise`)."""
    results = []
    for given in paths:
        if not given.exists():
            raise UsageError(f"{given}: no such file or folder")
    refuse_case_overlap(case.root, paths)
    for group in split_sets(paths):
        given = group[0]
        source = given.resolve()
        if given.is_dir() and (
            kind == "disk-image" or (kind == "auto" and looks_like_root_fs(given))
        ):
            results.append(capture_tree(case, given, report))
            continue
        warnings: list[str] = []
        files = _walk(given, warnings) if len(group) == 1 else group
        item_kind = guess_kind(files, recognise) if kind == "auto" else kind
        evidence_id = _item_for(case, source, item_kind, len(files))
        meta = {
            "kind": item_kind,
            "source": {"type": "files", "path": str(source), "files": len(files)},
        }
        summary = functools.partial(_files_summary, source)
        with case.item(evidence_id, meta, summary=summary) as item:
            result = FilesResult(item, str(source))
            for warning in warnings:
                item.leave_out(warning)
            recorded = case.recorded_files()
            originals = _originals(case, evidence_id) if item.resumed else {}
            for path in files:
                relative = (
                    [path.name]
                    if path == given or len(group) > 1
                    else path.relative_to(given).parts
                )
                name = "files/" + "/".join(_component(part) for part in relative)
                record = _capture_file(item, path, name, recorded, originals)
                if record and on_file:
                    on_file(record.bytes)
            for warning in result.warnings + result.failed + result.changed_since:
                report(warning)
        results.append(result)
    return results


def _capture_file(
    item: EvidenceItem,
    path: Path,
    name: str,
    recorded: dict[str, FileRecord],
    originals: dict[str, dict[str, Any]],
) -> FileRecord | None:
    """One original into the item; anything short of a stored copy is counted on the item
    (already held, changed since, left out, failed), never raised."""
    if item.resumed and item.case.is_captured(item.evidence_id, name, recorded):
        item.skip()
        change = _changed_since(path, originals.get(str(path.resolve())))
        if change:
            item.note(
                f"{path}: changed since it was captured ({change}); the held copy is kept, "
                "the new content is not in this case: capture it into another case folder "
                "to keep both"
            )
        return None
    try:
        return copy_stable(item, name, path)
    except NotRegularFile as exc:
        item.leave_out(f"{path}: {exc}, not captured")
    except ChangedWhileCopied as exc:
        item.problem(f"{path}: {exc}")
    except OSError as exc:
        item.problem(f"{path}: cannot be read ({exc.strerror or exc})")
    except CloudirError as exc:  # e.g. the case refused the name: counted, not fatal
        item.problem(f"{path}: {exc}")
    return None


def _files_summary(source: Path, item: EvidenceItem) -> str:
    return (
        f"{source}: {item.captured} captured, {item.skipped} already held, "
        f"{len(item.problems)} failed, {len(item.left_out)} not captured"
    )


def _originals(case: Case, evidence_id: str) -> dict[str, dict[str, Any]]:
    """What custody recorded of each original this item copied, by its resolved path."""
    found: dict[str, dict[str, Any]] = {}
    for entry in case.custody_entries():
        source = entry.get("source")
        if (
            entry.get("evidence_id") == evidence_id
            and isinstance(source, dict)
            and source.get("type") == "file"
            and isinstance(source.get("original_path"), str)
        ):
            found.setdefault(source["original_path"], source)
    return found


def _changed_since(path: Path, source: dict[str, Any] | None) -> str:
    """How the original differs from when it was captured (size, mtime); "" if it does
    not, or custody holds nothing to compare with."""
    if source is None:
        return ""
    try:
        now = path.lstat()
    except OSError as exc:
        return f"cannot be read now: {exc.strerror or exc}"
    if source.get("original_size") not in (None, now.st_size):
        return f"{source['original_size']} bytes then, {now.st_size} now"
    then = source.get("original_mtime")
    mtime = datetime.fromtimestamp(now.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if then not in (None, mtime):
        return f"modified {then} then, {mtime} now"
    return ""


class NotRegularFile(Exception):
    """What is at the path now is not a regular file (swapped since it was listed)."""


class ChangedWhileCopied(Exception):
    """The original changed while it was copied: the copy matches no one state of it."""


def copy_stable(item: EvidenceItem, name: str, path: Path) -> FileRecord:
    """Copy `path` into the item and record it, or raise: only a copy of one unchanging
    file is kept.

    The file is opened without following a link and without waiting on a FIFO (either
    may have been swapped in since the folder was listed). Its size, mtime and ctime on
    the open descriptor, the bytes read, and the inode the path names are compared
    before and after the copy. When anything differs the copy is discarded before it
    gets its final name, so nothing is recorded and the next run copies the file again
    (it is never "already held"): a copy that matches no state the original was ever in
    is not evidence of anything, and the timeline would read it as whole.
    """
    try:
        fd = open_regular(path)
    except NotRegularFileError as exc:
        raise NotRegularFile(exc.kind) from None
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fd)
        os.set_blocking(fd, True)
        source = {
            "type": "file",
            "original_path": str(path.resolve()),
            "original_mtime": datetime.fromtimestamp(before.st_mtime, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "original_size": before.st_size,
        }
        return item.store(name, _chunks(fh, path, before), source=source)


def _chunks(fh: Any, path: Path, before: os.stat_result) -> Iterator[bytes]:
    """The file's bytes; after the last one, ChangedWhileCopied if it did not hold still."""
    size = 0
    while chunk := fh.read(COPY_CHUNK):
        size += len(chunk)
        yield chunk
    reason = change_between(before, os.fstat(fh.fileno()), size, path)
    if reason:
        raise ChangedWhileCopied(
            f"changed while it was copied ({reason}); the copy was not kept: "
            "capture it again (or copy it somewhere still first)"
        )


def capture_tree(case: Case, given: Path, report: Callable[[str], None]) -> FilesResult:
    """A folder holding a file system (a root, a mounted image) as one tar in the case,
    links, owners, modes and times kept as data; the timeline reads it through dissect."""
    source = given.resolve()
    name = f"files/{safe_name(source.name or 'root')}.tar"
    meta: dict[str, Any] = {"kind": "disk-image", "source": {"type": "tree", "path": str(source)}}
    held = case.item_with_source(meta["source"])
    evidence_id = held or case.unique_evidence_id(safe_name(f"disk-image-{source.name}"))
    summary = functools.partial(_tree_summary, source)
    with case.item(evidence_id, meta, summary=summary) as item:
        result = FilesResult(item, str(source))
        if item.resumed and case.is_captured(evidence_id, name, case.recorded_files()):
            item.skip()
            _close_if_left_open(item)
            return result
        counts = TreeCounts()

        def described() -> str:  # known once the tar is written
            return (
                f"{source}: {counts.entries} entries ({counts.links} links, kept as links) as "
                f"a tar made by cloudir; {len(counts.problems)} could not be read"
            )

        try:
            item.store(
                name,
                tree_tar_chunks(given, counts),
                note=described,
                source=lambda: {
                    "type": "tree",
                    "original_path": str(source),
                    "entries": counts.entries,
                    "problems": len(counts.problems),
                },
            )
        except EvidenceError as exc:  # the tar was not kept; the next run makes it again
            item.problem(str(exc))
            item.finish(f"{source}: {exc}")
            return result
        for problem in counts.problems:
            item.problem(problem)
            report(problem)
        item.finish(described())
    return result


def _tree_summary(source: Path, item: EvidenceItem) -> str:
    return "; ".join([f"{source}", *item.problems])


def _close_if_left_open(item: EvidenceItem) -> None:
    """A run killed between recording the tar and closing its item left the item open, and
    the timeline would call it cut short for good: the tar is whole, so close the item as
    that run would have (incomplete unless its capture entry says nothing was unreadable)."""
    last_capture: dict[str, Any] | None = None
    for entry in item.case.custody_entries():
        if entry.get("evidence_id") != item.evidence_id:
            continue
        action = read_action(entry.get("action"))
        if action is CustodyAction.CAPTURE:
            last_capture = entry
        elif action in CAPTURE_CLOSING:
            last_capture = None
    if last_capture is None:
        item.leave_as_is()
        return
    problems = (last_capture.get("source") or {}).get("problems")
    item.finish(
        "closing the item an earlier run recorded and was stopped before closing"
        + ("" if problems == 0 else f"; that run could not read {problems or 'some'} entries"),
        complete=problems == 0,
    )


def split_sets(paths: list[Path]) -> list[list[Path]]:
    """The paths, with the segments of one split image (`disk.000 disk.001`, `web.E01
    web.E02`, given side by side) as one group, so they land in one item together."""
    groups: list[list[Path]] = []
    by_set: dict[tuple[Path, str, str], list[Path]] = {}
    for path in paths:
        suffix = path.name.rsplit(".", 1)[-1].lower() if "." in path.name else ""
        if path.is_file() and _segment(path.name.lower()):
            key = (
                path.parent.resolve(),
                path.name[: -len(suffix) - 1],
                "raw" if suffix[0].isdigit() else "ewf",
            )
            if key in by_set:
                by_set[key].append(path)
                continue
            by_set[key] = [path]
            groups.append(by_set[key])
        else:
            groups.append([path])
    return [sorted(group, key=lambda p: p.name.lower()) for group in groups]


def _component(name: str) -> str:
    """A name the case would take for an interrupted run's leftover (`*.partial`, which it
    clears on resume) is given a distinct one. NUL cannot occur in a real file name, so
    the case's hashed cleaning of `name + NUL` meets no other file's name."""
    return name + "\0" if name.endswith(PARTIAL_SUFFIX) else name


def _item_for(case: Case, source: Path, kind: str, files: int) -> str:
    """Reuse the item that already holds this source path, else a new readable id."""
    held = case.item_with_source({"type": "files", "path": str(source), "files": files})
    return held or case.unique_evidence_id(safe_name(f"{kind}-{source.name}"))
