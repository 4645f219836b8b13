"""The timeline's folder layout: Hive-style partitions by source and UTC event date.

    timeline/log_source=cloudtrail/event_date=2024-07-31/part-1-00003.parquet

Spark, Athena, Glue, Trino and DuckDB (`hive_partitioning`) read the two keys from the
folder names and skip the folders a query's filter rules out, so a question about one day
of an organization's trail reads that day. The keys are named apart from the timeline's
columns (`source`, `timestamp`) because Hive and Athena refuse a partition key that is
also a column of the files, and every file keeps the whole timeline schema: cloudir's own
readers list the files and read them with partitioning off, so the timeline they see is
the same columns whatever the layout.

A file holds the rows of one partition only. Writers that meet many days at once (a
month of LookupEvents in one chunk) keep one open file per partition and bound what they
buffer (PENDING_BYTES): past it, the partition with the most buffered rows writes a row
group early.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cloudir.case_folder import PARTITION_DATE as DATE_KEY  # the UTC date of `timestamp`
from cloudir.case_folder import PARTITION_SOURCE as SOURCE_KEY  # the row's `source` column

NO_VALUE: Final = "__HIVE_DEFAULT_PARTITION__"  # Hive's folder name for a NULL key
PENDING_BYTES: Final = 128 << 20  # rows buffered over all open partitions of one writer

# Hive escapes these (and control characters) in partition values as %XX; so does cloudir,
# plus anything outside printable ASCII, so a value never makes a folder name of its own.
_PLAIN = re.compile(r"[A-Za-z0-9_.\-]")


def escape(value: str | None) -> str:
    """A partition value as a folder name's part, escaped as Hive escapes it; a value of
    dots alone ("." or "..") escaped whole, so no part of a name is ever one of those."""
    if value is None or value == "":
        return NO_VALUE
    if value.strip(".") == "":
        return "".join(_percent(ch) for ch in value)
    return "".join(ch if _PLAIN.fullmatch(ch) else _percent(ch) for ch in value)


def _percent(ch: str) -> str:
    return "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))


def partition_dir(source: str | None, day: str | None) -> str:
    """`log_source=<source>/event_date=<day>`: where rows of that source and day go."""
    return f"{SOURCE_KEY}={escape(source)}/{DATE_KEY}={escape(day)}"


def split(batch: Any) -> Iterator[tuple[str, Any]]:
    """The batch's rows by partition, in the order each partition first appears; each
    partition's rows keep their order (de-duplication's "first copy" relies on it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if batch.num_rows == 0:
        return
    sources = batch.column("source")
    days = pc.cast(pc.cast(batch.column("timestamp"), pa.date32()), pa.string())
    keys = pc.binary_join_element_wise(
        pc.fill_null(sources, "\x00"), pc.fill_null(days, "\x00"), "\x01"
    )
    encoded = pc.dictionary_encode(keys)
    if len(encoded.dictionary) == 1:  # the common case: one file's rows, one day
        yield partition_dir(_value(sources[0]), _value(days[0])), batch
        return
    for code, key in enumerate(encoded.dictionary.to_pylist()):
        source, day = (None if part == "\x00" else part for part in key.split("\x01"))
        rows = batch.filter(pc.equal(encoded.indices, code))
        yield partition_dir(source, day), rows


def _value(scalar: Any) -> str | None:
    value = scalar.as_py()
    return None if value is None else str(value)


@dataclass
class _Part:
    """One partition's file of a writer: its row groups, and whose rows it holds."""

    group: Any  # timeline._RowGroups
    runs: list[tuple[str, int]] = field(default_factory=list)  # (evidence file, rows)


class PartitionedParts:
    """A writer's rows as one file per partition, all named `name`, under `root`.

    With `partitioned=False` every row goes to `root/name` (the Spark timeline's driver
    staging, which is not the timeline). With `filesystem`, `root` is a path in that
    pyarrow file system (the Spark executors writing to `--parts-uri`). `close` returns
    each file written with the runs of rows it holds, per evidence file, in write order
    (`duplicates.FileRows`).
    """

    def __init__(
        self, root: Path | str, name: str, partitioned: bool = True, filesystem: Any = None
    ) -> None:
        self.root = root
        self.name = name
        self.partitioned = partitioned
        self.filesystem = filesystem  # pyarrow's, for a root at a storage URI
        self.parts: dict[str, _Part] = {}

    def add(self, batch: Any, relpath: str = "") -> None:
        pieces = split(batch) if self.partitioned else iter([("", batch)])
        for folder, rows in pieces:
            part = self.parts.get(folder)
            if part is None:
                part = self.parts[folder] = _Part(self._group(folder))
            part.group.add(rows)
            if part.runs and part.runs[-1][0] == relpath:
                part.runs[-1] = (relpath, part.runs[-1][1] + rows.num_rows)
            else:
                part.runs.append((relpath, rows.num_rows))
        self._bound_memory()

    def close(self) -> dict[str, list[tuple[str, int]]]:
        written = {}
        for part in self.parts.values():
            if part.group.close():
                written[part.group.path] = part.runs
        return written

    def _group(self, folder: str) -> Any:
        from cloudir.analyze.timeline import _RowGroups

        if self.filesystem is not None:
            where = f"{self.root}/{folder}" if folder else str(self.root)
            self.filesystem.create_dir(where, recursive=True)
            return _RowGroups(f"{where}/{self.name}", self.filesystem)
        target = Path(self.root) / folder if folder else Path(self.root)
        target.mkdir(parents=True, exist_ok=True)
        return _RowGroups(str(target / self.name))

    def _bound_memory(self) -> None:
        pending = sum(p.group.bytes for p in self.parts.values())
        while pending > PENDING_BYTES:
            fullest = max(self.parts.values(), key=lambda p: p.group.bytes)
            pending -= fullest.group.bytes
            fullest.group.flush()
