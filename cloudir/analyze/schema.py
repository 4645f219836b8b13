"""The timeline's Arrow schema: the single source of truth for every parser and reader.

Declared as data so a parser, the Parquet writer and the exporters cannot disagree on a
column's name, order or type. `TimelineRow` is the same columns as a named tuple: parsers
hand rows to Arrow as plain tuples (fast, column by column), and code and tests read a
row's values by name, never by a position that shifts when a column is added.
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from cloudir import __version__

SCHEMA_VERSION = "1"

COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("timestamp", pa.timestamp("us", tz="UTC"), "when it happened"),
    ("timestamp_desc", pa.string(), "what the time means, as in plaso/Timesketch"),
    ("source", pa.string(), "cloudtrail, host, container"),
    ("artifact", pa.string(), "parser-level kind, e.g. aws:cloudtrail"),
    ("host", pa.string(), "instance id, hostname or container id"),
    ("user", pa.string(), "principal ARN or user name"),
    ("src_ip", pa.string(), "source address where known"),
    ("action", pa.string(), "e.g. iam.amazonaws.com:CreateAccessKey"),
    ("target", pa.string(), "the object acted on"),
    ("outcome", pa.string(), "success, failure, or the error code"),
    ("message", pa.string(), "one readable line"),
    ("evidence_id", pa.string(), "the evidence item it came from"),
    ("event_id", pa.string(), "stable id for de-duplication"),
    ("raw", pa.string(), "the full source record as JSON"),
]

COLUMN_NAMES = [name for name, _, _ in COLUMNS]

Text = str | bytes | None  # a string column: str, or UTF-8 bytes Arrow decodes on flush


class TimelineRow(NamedTuple):
    """One timeline row, as a parser yields it, in COLUMNS order.

    A tuple, so the batch builder turns rows into Arrow columns with one `zip`; a named
    one, so readers say `row.message`, not `row[10]`. The time is still text (or epoch
    seconds) here: the batch builder parses every row's time in bulk.
    """

    timestamp: str | int | float | None
    timestamp_desc: Text
    source: Text
    artifact: Text
    host: Text
    user: Text
    src_ip: Text
    action: Text
    target: Text
    outcome: Text
    message: Text
    evidence_id: Text
    event_id: Text
    raw: Text


if list(TimelineRow._fields) != COLUMN_NAMES:  # not an assert: `python -O` keeps this check
    raise RuntimeError("TimelineRow's fields must be schema.COLUMNS' names, in order")
# Columns whose values repeat, so Parquet dictionaries pay; the rest are near-unique.
DICTIONARY_COLUMNS = [
    "timestamp_desc", "source", "artifact", "host", "user", "src_ip", "action",
    "outcome", "evidence_id",
]  # fmt: skip

TIMELINE_SCHEMA = pa.schema(
    [pa.field(name, kind, nullable=True) for name, kind, _ in COLUMNS],
    metadata={
        "cloudir.schema_version": SCHEMA_VERSION,
        "cloudir.version": __version__,
    },
)
