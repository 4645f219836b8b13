"""S3 server access logs: one row per request a bucket served (or refused).

CloudTrail records object reads only when data events are on, which they rarely are;
a bucket's server access log records every request, so "what did they download" is
answered here. The files are what S3 delivers to the log bucket (`2026-01-05-10-15-42-
1A2B3C4D5E6F7A8B`, no extension), one request per line: space-separated fields, the time
in brackets, the request-URI, referer and user agent in quotes. Old lines stop after the
user agent or the version id; newer ones grew fields at the end over the years (and may
again): every field present is kept, the documented ones by name, later ones as
`extra_fields`.

`raw` is the line's fields as logged (the key URL-encoded, `-` for "none"); the `target`
column decodes the key (`s3://bucket/reports/q1 2026.pdf`). A line that is not a request
(too few fields, a quote or bracket not closed, an unreadable time) is one error log
entry and the rest of the file is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa

from cloudir.analyze.host.rows import host_row
from cloudir.analyze.parsers import (
    BY_CONTENT,
    BY_NAME,
    BY_NAME_AND_STRUCTURE,
    NOT_MINE,
    ErrorLog,
    Logsource,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    register,
)
from cloudir.analyze.parsers._access_log import (
    BadLine,
    first_line_is,
    log_lines,
    split_fields,
    status_outcome,
)
from cloudir.safe_text import inert

KIND = "s3-access"
SOURCE = "s3"
ARTIFACT = "aws:s3_access"
TIME_DESC = "Request Time"
MAX_MESSAGE = 1000
RECOGNISE_MAX_FILES = 20

# The documented fields, in log order (Amazon S3 User Guide, "Amazon S3 server access log
# format"), named as the guide names them, in snake case.
FIELDS = (
    "bucket_owner",
    "bucket",
    "time",
    "remote_ip",
    "requester",
    "request_id",
    "operation",
    "key",
    "request_uri",
    "http_status",
    "error_code",
    "bytes_sent",
    "object_size",
    "total_time",
    "turn_around_time",
    "referer",
    "user_agent",
    "version_id",
    "host_id",
    "signature_version",
    "cipher_suite",
    "authentication_type",
    "host_header",
    "tls_version",
    "access_point_arn",
    "acl_required",
)
MIN_FIELDS = FIELDS.index("user_agent") + 1  # the oldest lines end with the user agent
EXTRA = "extra_fields"

# S3's delivery name: the hour's time and a random hex suffix, no extension.
DELIVERY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-[0-9A-Fa-f]{8,32}$")
MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_TIME = re.compile(
    r"^(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$"
)
_OPERATION = re.compile(r"^[A-Z][A-Z0-9_]*\.[A-Za-z0-9_.]+$")
ANONYMOUS = ("-", "Anonymous")  # today's `-`; the oldest logs wrote "Anonymous"


def iso_time(logged: str) -> str:
    """`06/Feb/2019:00:00:38 +0000` as ISO 8601; BadLine for any other shape. The batch
    builder parses the result (and logs a day that does not exist)."""
    found = _TIME.match(logged)
    if found is None or found.group(2) not in MONTHS:
        raise BadLine(f"unreadable time [{inert(logged, 60)}]")
    day, month, year, hour, minute, second, sign, zh, zm = found.groups()
    return f"{year}-{MONTHS[month]:02d}-{day}T{hour}:{minute}:{second}{sign}{zh}:{zm}"


def fields_of(line: str) -> dict[str, object]:
    """The line's fields by name; BadLine for what is not an S3 access log line."""
    values = split_fields(line)
    if len(values) < MIN_FIELDS:
        raise BadLine(f"{len(values)} fields, an S3 access log line has at least {MIN_FIELDS}")
    named: dict[str, object] = dict(zip(FIELDS, values, strict=False))
    if len(values) > len(FIELDS):
        named[EXTRA] = values[len(FIELDS) :]
    if not _OPERATION.match(values[6]):
        raise BadLine(f"operation {inert(values[6], 60)!r} is not S3's (REST.GET.OBJECT)")
    return named


def looks_like_s3_access(line: str) -> bool:
    """A line that splits into S3's fields with a readable time and an operation."""
    try:
        named = fields_of(line)
        iso_time(str(named["time"]))
    except BadLine:
        return False
    return True


def target_of(bucket: str, key: str) -> str:
    """`s3://bucket/key` with the key URL-decoded (S3 logs it encoded); the bucket alone
    for a request without a key."""
    if key in ("", "-"):
        return f"s3://{bucket}"
    return f"s3://{bucket}/{unquote(key)}"


def message_of(named: dict[str, object]) -> str:
    requester = str(named["requester"])
    who = "anonymous" if requester in ANONYMOUS else requester
    status = str(named["http_status"])
    error = str(named["error_code"])
    result = status if error in ("", "-") else f"{status} {error}"
    target = target_of(str(named["bucket"]), str(named["key"]))
    text = f"{who} {named['operation']} {target} from {named['remote_ip']}: {result}"
    return inert(text, MAX_MESSAGE)


def to_row(named: dict[str, object], when: str, evidence_id: str, number: int) -> Row:
    status = str(named["http_status"])
    outcome = status_outcome(status, str(named["error_code"]))
    remote = str(named["remote_ip"])
    return host_row(
        when=when,
        desc=TIME_DESC,
        artifact=ARTIFACT,
        host=None,
        evidence_id=evidence_id,
        raw=json.dumps(named, ensure_ascii=False),
        message=message_of(named),
        user=str(named["requester"]),
        src_ip=None if remote == "-" else remote,
        action=f"s3:{named['operation']}",
        target=target_of(str(named["bucket"]), str(named["key"])),
        outcome=outcome,
        occurrence=number,
        source=SOURCE,
    )


def rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    for number, line in log_lines(path, errors):
        try:
            named = fields_of(line)
            when = iso_time(str(named["time"]))
        except BadLine as exc:
            errors.add(f"not an S3 access log line: {exc}", line=number)
            continue
        yield to_row(named, when, evidence_id, number)


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    yield from batches(rows(path, evidence_id, errors), errors)


def accepts(path: Path) -> bool:
    """Every file of an s3-access item: the responder or recognition said what it is."""
    return True


def recognise(paths: Sequence[Path]) -> int:
    """S3's delivery names whose first line is an access log line are surest; the names
    alone (empty files) come next; a first line of S3's shape under another name
    (`access.log`, a gzipped copy) is recognised by content. As for CloudTrail, one such
    file makes the item's kind: a stray file beside the logs is read as one, and each of
    its lines is a counted error, not a reason to leave the logs unread."""
    if not paths:
        return NOT_MINE
    named = [path for path in paths if DELIVERY_NAME.match(path.name)]
    if named:
        sample = named[:RECOGNISE_MAX_FILES]
        if any(first_line_is(path, looks_like_s3_access) for path in sample):
            return BY_NAME_AND_STRUCTURE
        return BY_NAME
    if any(first_line_is(p, looks_like_s3_access) for p in paths[:RECOGNISE_MAX_FILES]):
        return BY_CONTENT
    return NOT_MINE


PARSER = register(
    Parser(
        name="s3-access",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one request in an S3 server access log: `action` `s3:<operation>`, "
                "`target` `s3://bucket/key`, `raw` the line's fields by name",
                (Logsource("aws", "s3"),),
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=80,
    )
)
