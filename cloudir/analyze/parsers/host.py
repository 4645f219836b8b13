"""Disk images and file system exports: host artifacts and the file system timeline.

The image is opened in place through dissect.target (nothing is mounted or extracted);
the artifacts its operating system has become rows (`host/records.py`), then every file
system entry becomes MACB rows (`host/fs_timeline.py`). One artifact that fails costs
that artifact, logged, not the image.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from cloudir.analyze.host.records import row_sources
from cloudir.analyze.parsers import (
    BY_CONTENT,
    BY_NAME,
    NOT_MINE,
    ErrorLog,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    register,
)
from cloudir.errors import EvidenceError
from cloudir.sniff import sniff

# Images bigger than this get no file system timeline unless asked (--fs-timeline).
FS_TIMELINE_AUTO_LIMIT = 64 << 30
_IMAGE = re.compile(
    r"(\.(raw|dd|img|e01|ex01|vmdk|vhd|vhdx|qcow2|vdi|tar|tar\.gz|tgz)|\.(000|001))$", re.I
)
_LATER_SEGMENT = re.compile(r"\.(e0[2-9]|e[1-9]\d|[0-9]{3})$", re.I)
_ANY_SEGMENT = re.compile(r"\.([0-9]{3}|e[0-9]{2})$", re.I)  # split raw, EWF: any segment


def accepts(path: Path) -> bool:
    """A disk image by name (`.E01`, `.raw`, a file system export `.tar`) or by content
    (`disk.ext4`, `evidence.bin`, `sda`); never a later segment of a split image."""
    if skip_reason(path) is not None:
        return False
    return bool(_IMAGE.search(path.name)) or sniff(path).disk_image


def recognise(paths: Sequence[Path]) -> int:
    """One item's files are a disk image when any is one by name, its split segments
    included (`web.E02`, `disk.001`), or else by content (a superblock, a partition
    table, an image container's magic)."""
    if any(_IMAGE.search(path.name) or _ANY_SEGMENT.search(path.name) for path in paths):
        return BY_NAME
    if any(sniff(path).disk_image for path in paths):
        return BY_CONTENT
    return NOT_MINE


def skip_reason(path: Path) -> str | None:
    """Why a file that looks like part of an image is not opened by itself."""
    match = _LATER_SEGMENT.search(path.name)
    if not match:
        return None
    suffix = match.group(1).lower()
    if suffix == "000":
        return None
    if suffix == "001" and not path.with_name(path.name[:-3] + "000").exists():
        return None
    return "a later segment of a split image; read with its first segment"


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    from cloudir.analyze.host.target import DissectWarnings

    options = options or ParseOptions()
    with DissectWarnings(errors):
        yield from _parse_target(path, evidence_id, errors, options)


def _parse_target(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    from cloudir.analyze.host.target import open_target

    try:
        target = open_target(path)
    except EvidenceError as exc:
        errors.add(str(exc))
        return
    yield from batches(_rows(target, path, evidence_id, errors, options), errors)


def _rows(
    target: Any, path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[Row]:
    """The image's artifacts, then its file system timeline, row by row."""
    from cloudir.analyze.host.records import RecordRows, artifacts_for
    from cloudir.analyze.host.target import hostname, os_name, truncation

    cut = truncation(target, path)
    if cut:
        errors.add(cut)
    host = hostname(target) or evidence_id
    system = os_name(target)
    fs_timeline = _fs_timeline_wanted(path, options)
    if system is None:
        errors.add(
            f"{path.name}: no operating system recognised, so no host artifacts"
            + ("; the file system timeline is read" if fs_timeline else "")
        )
    else:
        mapper = RecordRows(target, host, evidence_id, errors)
        for spec in artifacts_for(system):
            for position, record in enumerate(_records(target, spec.function, errors)):
                try:
                    rows = list(mapper.rows(record, spec, position))
                except Exception as exc:  # one odd record costs that record
                    errors.add(f"{spec.function}: record {position + 1} not mapped: {exc}")
                    continue
                yield from rows
    if fs_timeline:
        try:
            from cloudir.analyze.host.fs_timeline import fs_rows

            yield from fs_rows(target, host, evidence_id, errors)
        except Exception as exc:
            errors.add(f"file system timeline stopped: {type(exc).__name__}: {exc}")


def _records(target: Any, function: str, errors: ErrorLog) -> Iterator[Any]:
    """The function's records; a function this image does not have yields nothing, one
    that breaks midway is logged with what it had yielded so far kept. The functions one
    bad file or line could stop are read file by file, line by line (`host/readers.py`)."""
    from dissect.target.exceptions import PluginNotFoundError, UnsupportedPluginError

    from cloudir.analyze.host.readers import READERS

    try:
        if function in READERS:
            iterator = READERS[function](target, errors)
        else:
            found: Any = target
            for part in function.split("."):
                found = getattr(found, part)
            iterator = iter(found())
    except (PluginNotFoundError, UnsupportedPluginError):
        return
    except Exception as exc:
        errors.add(f"{function}: {type(exc).__name__}: {exc}")
        return
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except (PluginNotFoundError, UnsupportedPluginError):
            return
        except Exception as exc:
            errors.add(f"{function} stopped: {type(exc).__name__}: {exc}")
            return
        yield record


def _fs_timeline_wanted(path: Path, options: ParseOptions) -> bool:
    if options.fs_timeline is not None:
        return options.fs_timeline
    try:
        return path.stat().st_size < FS_TIMELINE_AUTO_LIMIT
    except OSError:
        return False


# Every artifact the host tables write (`host/records.py`), and the file system timeline.
ROW_SOURCES = (
    *row_sources(),
    RowSource("fs:entry", "one file system entry's times (MACB), from the image itself"),
)
# What the responder declared a disk image (`--kind disk-image`) is opened whatever its
# name (`sda`, `disk.bin`); a file that is none says so in one line.
register(
    Parser(
        name="host",
        evidence_kinds=("disk-image",),
        accepts=lambda path: skip_reason(path) is None,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=ROW_SOURCES,
        capture_kind="disk-image",
        recognise=recognise,
        priority=20,
    )
)
# Loose files and snapshots: the disk images among them, by name or by content. Last of
# all parsers, so that `--kind` lists `files`, the kind of what nothing recognised, last.
register(
    Parser(
        name="host",
        evidence_kinds=("ebs-snapshot", "files"),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=ROW_SOURCES,
        capture_kind="files",
        priority=1000,
    )
)
