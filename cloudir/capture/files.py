"""Evidence the responder already holds: log folders, exported files.

The originals are only read: each file is copied into the case while it is hashed, and
custody records where it came from. A file that changes while it is copied is reported,
because the copy then matches no stable original.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.capture.tree import TreeCounts, change_between, looks_like_root_fs, tree_tar_chunks
from cloudir.case import PARTIAL_SUFFIX, Case, NotRegularFileError, open_regular, safe_name
from cloudir.errors import CloudirError, EvidenceError, UsageError

COPY_CHUNK = 1 << 20


@dataclass
class FilesResult:
    evidence_id: str
    source: str
    kind: str
    captured: int = 0
    skipped: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # held files whose original has changed since: the held copy stays, the change is named
    changed_since: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        result = FilesResult(evidence_id, str(source), item_kind, warnings=warnings)
        meta = {
            "kind": item_kind,
            "source": {"type": "files", "path": str(source), "files": len(files)},
        }
        resumed = case.open_item(evidence_id, meta)
        recorded = case.recorded_files()
        originals = _originals(case, evidence_id) if resumed else {}
        for path in files:
            relative = (
                [path.name] if path == given or len(group) > 1 else path.relative_to(given).parts
            )
            name = "files/" + "/".join(_component(part) for part in relative)
            if resumed and case.is_captured(evidence_id, name, recorded):
                result.skipped += 1
                change = _changed_since(path, originals.get(str(path.resolve())))
                if change:
                    result.changed_since.append(
                        f"{path}: changed since it was captured ({change}); the held copy "
                        "is kept, the new content is not in this case: capture it into "
                        "another case folder to keep both"
                    )
                continue
            try:
                record, before = copy_stable(case, evidence_id, name, path)
            except NotRegularFile as exc:
                result.warnings.append(f"{path}: {exc}, not captured")
                continue
            except ChangedWhileCopied as exc:
                result.failed.append(f"{path}: {exc}")
                continue
            except OSError as exc:
                result.failed.append(f"{path}: cannot be read ({exc.strerror or exc})")
                continue
            except CloudirError as exc:  # e.g. the case refused the name: counted, not fatal
                result.failed.append(f"{path}: {exc}")
                continue
            case.record(
                "capture",
                evidence_id,
                [record],
                source={
                    "type": "file",
                    "original_path": str(path.resolve()),
                    "original_mtime": datetime.fromtimestamp(before.st_mtime, UTC).strftime(
                        "%Y-%m-%dT%H:%M:%S.%fZ"
                    ),
                    "original_size": before.st_size,
                },
            )
            result.captured += 1
            result.bytes += record.bytes
            if on_file:
                on_file(record.bytes)
        for warning in result.warnings + result.failed + result.changed_since:
            report(warning)
        case.record(
            "capture-incomplete" if result.failed or result.warnings else "capture-complete",
            evidence_id,
            [],
            note=(
                f"{source}: {result.captured} captured, {result.skipped} already held, "
                f"{len(result.failed)} failed, {len(result.warnings)} not captured"
            ),
        )
        results.append(result)
    return results


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


def copy_stable(case: Case, evidence_id: str, name: str, path: Path) -> tuple[Any, os.stat_result]:
    """Copy `path` into the item, or raise: only a copy of one unchanging file is kept.

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
        record = case.store_stream(evidence_id, name, _chunks(fh, path, before))
    return record, before


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
    result = FilesResult(evidence_id, str(source), "disk-image")
    resumed = case.open_item(evidence_id, meta)
    if resumed and case.is_captured(evidence_id, name, case.recorded_files()):
        result.skipped = 1
        _close_if_left_open(case, evidence_id)
        return result
    counts = TreeCounts()
    try:
        record = case.store_stream(evidence_id, name, tree_tar_chunks(given, counts))
    except EvidenceError as exc:  # the tar was not kept; the next run makes it again
        result.failed = [str(exc)]
        case.record("capture-incomplete", evidence_id, [], note=f"{source}: {exc}")
        return result
    result.failed = counts.problems
    result.captured, result.bytes = 1, record.bytes
    note = (
        f"{source}: {counts.entries} entries ({counts.links} links, kept as links) as a tar "
        f"made by cloudir; {len(counts.problems)} could not be read"
    )
    case.record(
        "capture",
        evidence_id,
        [record],
        note=note,
        source={
            "type": "tree",
            "original_path": str(source),
            "entries": counts.entries,
            "problems": len(counts.problems),
        },
    )
    for problem in counts.problems:
        report(problem)
    case.record(
        "capture-incomplete" if counts.problems else "capture-complete", evidence_id, [], note=note
    )
    return result


def _close_if_left_open(case: Case, evidence_id: str) -> None:
    """A run killed between recording the tar and closing its item left the item open, and
    the timeline would call it cut short for good: the tar is whole, so close the item as
    that run would have (incomplete unless its capture entry says nothing was unreadable)."""
    last_capture: dict[str, Any] | None = None
    for entry in case.custody_entries():
        if entry.get("evidence_id") != evidence_id:
            continue
        if entry.get("action") == "capture":
            last_capture = entry
        elif entry.get("action") in ("capture-complete", "capture-incomplete"):
            last_capture = None
    if last_capture is None:
        return
    problems = (last_capture.get("source") or {}).get("problems")
    case.record(
        "capture-complete" if problems == 0 else "capture-incomplete",
        evidence_id,
        [],
        note="closing the item an earlier run recorded and was stopped before closing"
        + ("" if problems == 0 else f"; that run could not read {problems or 'some'} entries"),
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
