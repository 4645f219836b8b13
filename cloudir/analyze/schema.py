"""The timeline's Arrow schema: the single source of truth for every parser and reader.

Declared as data so a parser, the Parquet writer and the exporters cannot disagree on a
column's name, order or type.
"""

from __future__ import annotations

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
