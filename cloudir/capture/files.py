"""Evidence the responder already holds: log folders, exported files.

The originals are only read: each file is copied into the case while it is hashed, and
custody records where it came from. A file that changes while it is copied is reported,
because the copy then matches no stable original.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.capture.tree import TreeCounts, looks_like_root_fs, tree_tar_chunks
from cloudir.case import Case, safe_name
from cloudir.errors import UsageError

CLOUDTRAIL_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


DISK_IMAGE_SUFFIXES = (
    ".raw", ".dd", ".img", ".e01", ".ex01", ".vmdk", ".vhd", ".vhdx", ".qcow2", ".vdi",
    ".tar", ".tar.gz", ".tgz",
)  # fmt: skip


def guess_kind(paths: list[Path]) -> str:
    """The parser family a set of files belongs to. A disk image, its split segments or a
    file system export (tar) is `disk-image`; the timeline opens those through dissect."""
    names = [p.name.lower() for p in paths]
    if any(n.endswith(CLOUDTRAIL_SUFFIXES) for n in names):
        return "cloudtrail"
    if len(paths) == 1 and names[0].endswith(".tar"):
        from cloudir.analyze.parsers.image_layers import is_image_archive

        if is_image_archive(paths[0]):
            return "container-image"  # `docker save` or an OCI layout, not a file system
    if names and any(n.endswith(DISK_IMAGE_SUFFIXES) or _segment(n) for n in names):
        return "disk-image"
    return "files"


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
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                warnings.append(f"{path}: not a regular file, not captured")
                continue
            found.append(path)
    return found


def capture_paths(
    case: Case,
    paths: list[Path],
    kind: str,
    report: Callable[[str], None],
    on_file: Callable[[int], None] | None = None,
) -> list[FilesResult]:
    """One evidence item per path given; re-running with the same path resumes it."""
    results = []
    for given in paths:
        if not given.exists():
            raise UsageError(f"{given}: no such file or folder")
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
        item_kind = guess_kind(files) if kind == "auto" else kind
        evidence_id = _item_for(case, source, item_kind, len(files))
        result = FilesResult(evidence_id, str(source), item_kind, warnings=warnings)
        meta = {
            "kind": item_kind,
            "source": {"type": "files", "path": str(source), "files": len(files)},
        }
        resumed = case.open_item(evidence_id, meta)
        recorded = case.recorded_files()
        for path in files:
            name = (
                path.name if path == given or len(group) > 1 else path.relative_to(given).as_posix()
            )
            name = "files/" + name
            if resumed and case.is_captured(evidence_id, name, recorded):
                result.skipped += 1
                continue
            try:
                before = path.stat()
                record = case.store_copy(evidence_id, name, path)
                after = path.stat()
            except OSError as exc:
                result.failed.append(f"{path}: {exc.strerror or exc}")
                continue
            note = ""
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                note = "original changed while it was copied"
                result.failed.append(f"{path}: changed while it was copied; capture it again")
            case.record(
                "capture",
                evidence_id,
                [record],
                note=note,
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
        for warning in result.warnings + result.failed:
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


def capture_tree(case: Case, given: Path, report: Callable[[str], None]) -> FilesResult:
    """A folder holding a file system (a root, a mounted image) as one tar in the case,
    links, owners, modes and times kept as data; the timeline reads it through dissect."""
    source = given.resolve()
    name = f"files/{safe_name(source.name or 'root')}.tar"
    meta = {"kind": "disk-image", "source": {"type": "tree", "path": str(source)}}
    held = case.item_with_source(meta["source"])
    evidence_id = held or case.unique_evidence_id(safe_name(f"disk-image-{source.name}"))
    result = FilesResult(evidence_id, str(source), "disk-image")
    resumed = case.open_item(evidence_id, meta)
    if resumed and case.is_captured(evidence_id, name, case.recorded_files()):
        result.skipped = 1
        return result
    counts = TreeCounts()
    record = case.store_stream(evidence_id, name, tree_tar_chunks(given, counts))
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
        source={"type": "tree", "original_path": str(source), "entries": counts.entries},
    )
    for problem in counts.problems:
        report(problem)
    case.record(
        "capture-incomplete" if counts.problems else "capture-complete", evidence_id, [], note=note
    )
    return result


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


def _item_for(case: Case, source: Path, kind: str, files: int) -> str:
    """Reuse the item that already holds this source path, else a new readable id."""
    held = case.item_with_source({"type": "files", "path": str(source), "files": files})
    return held or case.unique_evidence_id(safe_name(f"{kind}-{source.name}"))
