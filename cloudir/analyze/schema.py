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

SCHEMA_VERSION = "2"

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

ROW_COLUMN_NAMES = [name for name, _, _ in COLUMNS]

# Fields of the record in `raw` that many rules compare, copied into columns of their own
# when the timeline is written (schema 2, issue 20): a rule reads a small dictionary
# column instead of parsing every row's JSON (docs/detection.md has what that saves).
# The path in the record, as rules name it; each is a string, or "true"/"false" for a
# boolean, exactly as DuckDB's json_transform renders the value (NULL when absent).
PROMOTED_FIELDS = (
    "eventSource", "eventName", "errorCode", "sourceIPAddress", "userAgent",
    "recipientAccountId", "awsRegion", "eventType", "readOnly",
    "sessionCredentialFromConsole", "vpcEndpointId",
    "userIdentity.type", "userIdentity.arn", "userIdentity.accountId",
    "userIdentity.accessKeyId", "userIdentity.userName", "userIdentity.principalId",
    "userIdentity.invokedBy", "userIdentity.sessionContext.attributes.mfaAuthenticated",
    "userIdentity.sessionContext.sessionIssuer.type",
    "userIdentity.sessionContext.sessionIssuer.arn",
    "userIdentity.sessionContext.sessionIssuer.userName",
)  # fmt: skip
PROMOTED_ARTIFACT = "aws:cloudtrail"  # the only rows that fill them (parsers/cloudtrail.py)
PROMOTED_FROM = "promoted_from"
"""The column saying whose fields the promoted columns hold ("aws:cloudtrail"); NULL means
they are not filled for the row (a record of another shape), and readers go to `raw`."""


def promoted_column(path: str) -> str:
    """`userIdentity.type` -> `raw_userIdentity_type`: a plain name Spark, Hive and Athena
    take without quoting (a dot would read as a struct member there)."""
    return "raw_" + path.replace(".", "_")


COLUMNS += [(PROMOTED_FROM, pa.string(), "whose fields the raw_* columns hold, or NULL")]
COLUMNS += [(promoted_column(p), pa.string(), f"the record's {p}") for p in PROMOTED_FIELDS]
COLUMN_NAMES = [name for name, _, _ in COLUMNS]
PROMOTED_COLUMNS = COLUMN_NAMES[len(ROW_COLUMN_NAMES) :]  # promoted_from, then the fields

Text = str | bytes | None  # a string column: str, or UTF-8 bytes Arrow decodes on flush


class TimelineRow(NamedTuple):
    """One timeline row, as a parser yields it, in COLUMNS order (without the promoted
    columns, which are made from `raw` when the rows become a batch).

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


if list(TimelineRow._fields) != ROW_COLUMN_NAMES:  # not an assert: `python -O` keeps it
    raise RuntimeError("TimelineRow's fields must be schema.COLUMNS' first names, in order")
# Columns whose values repeat, so Parquet dictionaries pay; the rest are near-unique.
DICTIONARY_COLUMNS = [
    "timestamp_desc", "source", "artifact", "host", "user", "src_ip", "action",
    "outcome", "evidence_id", *PROMOTED_COLUMNS,
]  # fmt: skip

# Columns whose Parquet pages carry no min/max: a record's or a message's text makes long
# statistics that no filter prunes by (a substring match reads every page anyway), and
# computing them cost the timeline's writer about 5% of its time.
UNSUMMARISED_COLUMNS = ("raw", "message")

TIMELINE_SCHEMA = pa.schema(
    [pa.field(name, kind, nullable=True) for name, kind, _ in COLUMNS],
    metadata={
        "cloudir.schema_version": SCHEMA_VERSION,
        "cloudir.version": __version__,
    },
)
