"""Route 53 Resolver query logs: which name each instance of a VPC asked the resolver for.

AWS delivers the logs to S3 as gzip files of JSON lines, one query per line
(`AWSLogs/<account>/vpcdnsquerylogs/<vpc>/YYYY/MM/DD/<vpc>_vpcdnsquerylogs_<account>_
<YYYYMMDDTHHmm>Z_<hash>.log.gz`), and to CloudWatch Logs as one log event per query with
the same JSON object as its message; a CloudWatch Logs export to S3 writes each event as
`<ISO time> <message>`. Every form reads the same: one row per query at its
`query_timestamp`, `raw` the JSON object exactly as delivered (the export's time prefix
and line end left out), so a rule reads AWS's own field names.

The file streams line by line (a line is at most MAX_LINE_BYTES), so a file of any size
takes bounded memory. The query name is chosen by whoever asked (a tunnelling client
writes data into it): it stays data, in `target` and `raw`, and is made inert in the
message. A line that is not a query record (not JSON, no time, a time no calendar has,
a field of the wrong type) is one line in timeline/errors.jsonl, and the file goes on.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
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
    parse_timestamp,
)
from cloudir.analyze.parsers import register as register_parser
from cloudir.safe_text import inert

KIND = "route53-resolver"
SOURCE = "route53"
ARTIFACT = "aws:route53_resolver"
TIME_DESC = "Query Time"
ANSWERED = ("NOERROR", "NXDOMAIN")  # rcodes of a query its name's server answered
MAX_LINE_BYTES = 1 << 20  # a query with every answer is a few KiB; more is not a record
MAX_PAGE_BYTES = 64 << 20  # FilterLogEvents answers 1 MB at most; room for a re-encoding
MAX_MESSAGE = 1000
MAX_ANSWERS_SHOWN = 5
RECOGNISE_MAX_FILES = 20  # a folder of hourly files: its first files tell what it is
HEAD_BYTES = 64 << 10  # what recognition reads (inflated) to find the first record

# AWS's S3 object name for resolver query logs (the key's last part).
AWS_NAME = re.compile(r"_vpcdnsquerylogs_\d{12}_\d{8}T\d{4}Z_[0-9a-f]+\.log(\.gz)?$", re.I)
# Names a responder's copy of the logs goes by.
NAME_SUFFIXES = (".log", ".log.gz", ".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson",
                 ".ndjson.gz", ".gz")  # fmt: skip
# A CloudWatch Logs export line: the event's ingestion time, a space, the message.
EXPORT_PREFIX = re.compile(rb"^\d{4}-\d{2}-\d{2}T[0-9:.]+Z? (?=\{)")

# Fields a row reads, and the JSON types each may have (absent and null are allowed).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "query_name": (str,),
    "query_type": (str,),
    "query_class": (str,),
    "rcode": (str,),
    "srcaddr": (str,),
    "srcport": (str, int),
    "transport": (str,),
    "vpc_id": (str,),
    "account_id": (str,),
    "region": (str,),
    "answers": (list,),
    "srcids": (dict,),
    "firewall_rule_action": (str,),
}

_ANY = msgspec.json.Decoder()
# what msgspec raises for text it cannot read as JSON: malformed or of another shape, or
# nested past its depth limit (a RecursionError, which no DecodeError handler catches)
NOT_JSON = (msgspec.DecodeError, RecursionError)

# Sigma's `category: dns` field names (the taxonomy's, as SigmaHQ's rules under
# rules/network/dns use them; QueryName/QueryResults as Sysmon's DNS events name the
# same things) to where a row holds them. The name is the `target` column: without the
# root's trailing dot, as DNS logs of other products write it.
SIGMA_DNS_FIELDS = (
    ("query", "target"),
    ("QueryName", "target"),
    ("answer", "answers.Rdata"),
    ("QueryResults", "answers.Rdata"),
    ("record_type", "query_type"),
    ("parent_domain", "cloudir.query_domain"),
)


def accepts(path: Path) -> bool:
    """Every file of a resolver-log item: AWS's own names, a responder's, or none."""
    return True


# -- recognition ------------------------------------------------------------------------


def recognise(paths: Sequence[Path]) -> int:
    """Resolver logs by content (the first record of each file has `query_name`,
    `query_timestamp` and `srcids`), surest with a log name (AWS's `_vpcdnsquerylogs_`
    name, or `.log(.gz)`, `.json(l)(.gz)`), which CloudTrail also claims for `.json`.
    AWS's name alone (an empty file) is BY_NAME."""
    if not paths:
        return NOT_MINE
    content = named = aws_named = 0
    for path in list(paths)[:RECOGNISE_MAX_FILES]:
        name = path.name.lower()
        by_aws_name = bool(AWS_NAME.search(name))
        shaped = _first_record_is_query(path)
        if not (shaped or by_aws_name):
            return NOT_MINE
        content += shaped
        aws_named += by_aws_name
        named += by_aws_name or name.endswith(NAME_SUFFIXES)
    checked = min(len(paths), RECOGNISE_MAX_FILES)
    if content and named == checked:
        return BY_NAME_AND_STRUCTURE
    if content:
        return BY_CONTENT
    return BY_NAME if aws_named == checked else NOT_MINE


def _first_record_is_query(path: Path) -> bool:
    """The first non-empty line, read from at most HEAD_BYTES of (inflated) content; for
    a CloudWatch Logs page, its first event's message."""
    if is_page(path):
        return _first_event_is_query(path)
    head = _head(path)
    for line in head.splitlines():
        if line.strip():
            return _is_query(_record_of(line.strip()))
    return False


def _is_query(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("query_name"), str)
        and isinstance(record.get("query_timestamp"), str)
        and isinstance(record.get("srcids"), dict)
    )


def _first_event_is_query(path: Path) -> bool:
    head = _head(path, MAX_PAGE_BYTES)
    try:
        page = _PAGE.decode(head)
        first = _EVENT.decode(page.events[0]) if page.events else None
    except NOT_JSON:
        return False
    message = first.message if first is not None else None
    return isinstance(message, str) and _is_query(_record_of(message.encode()))


def _head(path: Path, limit: int = HEAD_BYTES) -> bytes:
    """The file's first bytes, gunzipped when it is gzip; b"" for anything unreadable.
    Never through a link and never waiting on a FIFO, as `cloudir.sniff` reads."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        data = os.pread(fd, limit, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)
    if data[:2] == b"\x1f\x8b":
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit)
        except zlib.error:
            return b""
    return data


def _record_of(line: bytes) -> Any:
    """The JSON value of one line (a CloudWatch export's time prefix left out); None
    when the line is not JSON."""
    prefix = EXPORT_PREFIX.match(line)
    try:
        return _ANY.decode(line[prefix.end() :] if prefix else line)
    except (*NOT_JSON, UnicodeDecodeError):
        return None


# -- parsing ----------------------------------------------------------------------------


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    yield from batches(_rows(path, evidence_id, errors), errors)


def _open(path: Path) -> BinaryIO:
    """The file's bytes, streamed through gzip when its magic says gzip."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by the caller
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines without their line end; None for a line over MAX_LINE_BYTES (the
    rest of it is read past, never held)."""
    number = 0
    while line := fh.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line.rstrip(b"\r\n")


def _rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    if is_page(path):
        yield from _page_rows(path, evidence_id, errors)
        return
    number = 0
    try:
        with _open(path) as fh:
            for number, line in _lines(fh):
                if line is None:
                    errors.add(f"line over {MAX_LINE_BYTES} bytes; not parsed", line=number)
                    continue
                if not line.strip():
                    continue
                row = _row_of(line, number, evidence_id, _on_line(errors, number))
                if row is not None:
                    yield row
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        errors.add(f"truncated or corrupt gzip after line {number} ({exc})")
    except OSError as exc:
        errors.add(f"cannot read file: {exc}")


def _on_line(errors: ErrorLog, number: int) -> Callable[[str], None]:
    return lambda reason: errors.add(reason, line=number)


def _on_record(errors: ErrorLog, number: int) -> Callable[[str], None]:
    return lambda reason: errors.add(reason, record=number)


# -- CloudWatch Logs pages ------------------------------------------------------------------


class _Event(msgspec.Struct):
    message: Any = None
    logStreamName: Any = None  # the API's names
    eventId: Any = None


class _Page(msgspec.Struct):
    events: list[msgspec.Raw] | None = None


_PAGE = msgspec.json.Decoder(_Page)
_EVENT = msgspec.json.Decoder(_Event)


def is_page(path: Path) -> bool:
    """A CloudWatch Logs FilterLogEvents page as `capture logs` stores one
    (`pages/page-00001.json`) of a group the resolver delivers to: each event's
    `message` is one query record."""
    return path.parent.name == "pages" and path.suffix.lower() == ".json"


def _page_rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    """One row per event; its id is CloudWatch's event id, so a page held twice (a resumed
    capture reading the window again) gives the same rows, which the timeline collapses."""
    try:
        if path.stat().st_size > MAX_PAGE_BYTES:
            errors.add(f"{path.name}: over {MAX_PAGE_BYTES} bytes, not a FilterLogEvents page")
            return
        page = _PAGE.decode(path.read_bytes())
    except OSError as exc:
        errors.add(f"cannot read file: {exc}")
        return
    except NOT_JSON as exc:
        errors.add(f"{path.name}: not a FilterLogEvents page ({exc})")
        return
    if page.events is None:
        errors.add(f"{path.name}: not a FilterLogEvents page (no `events` list)")
        return
    digits = "".join(c for c in path.stem if c.isdigit())
    first = int(digits[-9:] or 0) * 100_000  # two pages' rows never share an occurrence
    for number, raw in enumerate(page.events, 1):
        complain = _on_record(errors, number)
        try:
            event = _EVENT.decode(raw)
        except NOT_JSON:
            complain("event is not a CloudWatch Logs event object")
            continue
        if not isinstance(event.message, str):
            complain("event has no message text")
            continue
        row = _row_of(event.message.encode("utf-8", "surrogatepass"), first + number,
                      evidence_id, complain)  # fmt: skip
        if row is not None and isinstance(event.eventId, str) and event.eventId:
            key = f"{event.logStreamName}\x00{event.eventId}".encode("utf-8", "surrogatepass")
            row = row._replace(event_id=hashlib.sha256(key).hexdigest()[:32])
        if row is not None:
            yield row


def _row_of(
    line: bytes, number: int, evidence_id: str, complain: Callable[[str], None]
) -> Row | None:
    """One query record to its row; None (and the reason logged) for anything else."""
    prefix = EXPORT_PREFIX.match(line)
    body = line[prefix.end() :] if prefix else line
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        complain("not valid UTF-8; not a query record")
        return None
    try:
        record = _ANY.decode(text)
    except NOT_JSON as exc:
        complain(f"invalid JSON: {str(exc).removeprefix('JSON is malformed: ')}")
        return None
    reason = _problem(record)
    if reason:
        complain(reason)
        return None
    moment = parse_timestamp(record["query_timestamp"])
    if moment is None:
        shown = inert(record["query_timestamp"], 60)
        complain(f"unreadable query_timestamp {shown!r}")
        return None
    return _row(record, text, moment.isoformat(), evidence_id, number)


def _problem(record: Any) -> str | None:
    """Why a JSON value is not a query record we can place, or None."""
    if not isinstance(record, dict):
        return "not a query record: a JSON value that is not an object"
    if not isinstance(record.get("query_timestamp"), str) or not record["query_timestamp"]:
        if "query_timestamp" in record and record["query_timestamp"] is not None:
            return "query_timestamp is not a string; not placed"
        return "no query_timestamp; not placed"
    if record.get("query_name") is None:
        return "no query_name; not a query record"
    for name, types in FIELD_TYPES.items():
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"{name} is a JSON {_json_type(value)}, not a {types[0].__name__}"
    srcids = record.get("srcids") or {}
    for name in ("instance", "resolver_endpoint"):
        if srcids.get(name) is not None and not isinstance(srcids[name], str):
            return f"srcids.{name} is a JSON {_json_type(srcids[name])}, not a str"
    return None


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"),
                       (list, "array"), (dict, "object")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return "null"


def domain_of(query_name: str) -> str:
    """The name without the root's trailing dot (`example.com.` is `example.com`)."""
    return query_name[:-1] if len(query_name) > 1 and query_name.endswith(".") else query_name


def outcome_of(record: dict[str, Any]) -> str | None:
    """Whether the query went out and came back: `success` for NOERROR and NXDOMAIN (the
    name's own name server answered, so a tunnel's data reached it; the rcode stays in
    the message and `raw`), `blocked` when DNS Firewall blocked it (never sent on),
    else the rcode (SERVFAIL, REFUSED, ...). Triage reads any outcome other than
    `success` as a failure and lowers a finding's level for it, which a tunnel whose
    server answers NXDOMAIN to every query must not get."""
    if str(record.get("firewall_rule_action") or "").upper() == "BLOCK":
        return "blocked"
    rcode = record.get("rcode")
    if rcode is None:
        return None
    return "success" if rcode.upper() in ANSWERED else rcode


def answers_of(record: dict[str, Any]) -> list[str]:
    return [
        str(answer["Rdata"])
        for answer in record.get("answers") or []
        if isinstance(answer, dict) and answer.get("Rdata") is not None
    ]


def _row(record: dict[str, Any], raw: str, when: str, evidence_id: str, number: int) -> Row:
    name = domain_of(record["query_name"])
    query_type = record.get("query_type") or "query"
    srcids = record.get("srcids") or {}
    instance = srcids.get("instance")
    src_ip = record.get("srcaddr")
    return host_row(
        when=when,
        desc=TIME_DESC,
        artifact=ARTIFACT,
        host=instance,
        evidence_id=evidence_id,
        raw=raw,
        message=inert(_message(record, name, query_type, instance), MAX_MESSAGE),
        src_ip=src_ip,
        action=f"dns:{query_type}",
        target=name,
        outcome=outcome_of(record),
        occurrence=number,
        source=SOURCE,
    )


def _message(record: dict[str, Any], name: str, query_type: str, instance: str | None) -> str:
    """`10.0.1.5 (i-0abc) asked A example.com: NOERROR 93.184.216.34`, plus the DNS
    Firewall's action when it acted."""
    who = record.get("srcaddr") or "?"
    if instance:
        who += f" ({instance})"
    answers = answers_of(record)
    shown = ", ".join(answers[:MAX_ANSWERS_SHOWN])
    if len(answers) > MAX_ANSWERS_SHOWN:
        shown += f", ... ({len(answers)} answers)"
    text = f"{who} asked {query_type} {name}: {record.get('rcode') or '?'}"
    if shown:
        text += f" {shown}"
    action = record.get("firewall_rule_action")
    if action:
        text += f" (DNS Firewall {action})"
    return text


PARSER = register_parser(
    Parser(
        name="route53-resolver",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one DNS query a VPC's resolver answered: `target` the name, `action` "
                "`dns:<type>`, `src_ip`/`host` the asker",
                (
                    Logsource("aws", "route53"),
                    Logsource(None, None, "dns", fields=SIGMA_DNS_FIELDS),
                ),
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=55,
    )
)
