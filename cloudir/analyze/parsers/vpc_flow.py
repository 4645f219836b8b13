"""VPC Flow Logs on the timeline: one row per flow record, at the flow's start.

Flow logs delivered to S3 are text files (gzipped as AWS delivers them, or plain) whose
first line names the fields, space-separated, in the flow log's own order: the default
(version 2) format, or any custom format of fields up to the latest version. The header
is read and every record mapped by name, so a format with fields unknown today still
reads (the field is kept in `raw` as text). `-` is "no value". CloudWatch Logs holds the
records without a header; a file whose first line is a record in the default format, in
every field's shape, is read as the default format (a custom format without its header
cannot be told apart safely, and is not guessed).

Each record keeps every field in `raw` under its flow log name (numbers as JSON numbers,
`-` as null), plus the Sigma network connection names `SourceIp`, `DestinationIp`,
`SourcePort`, `DestinationPort` and `Protocol` (`tcp`, `udp`, `icmp`, ...), so rules
written either way read it. NODATA and SKIPDATA records (an interval without traffic, or
records AWS dropped for capacity) carry no addresses; they are still rows, with the log
status as the action: a gap in what the flow log saw is part of the evidence.

A bad line (a field count other than the header's, a port, count or time that is not a
number, an address that is not one, an end before the start, no time at all, a time
outside years 1-9999) is one entry in timeline/errors.jsonl; the rest of the file reads.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from cloudir.analyze.host.rows import host_row
from cloudir.analyze.parsers import (
    BATCH_ROWS,
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
    json_loads,
    register,
)
from cloudir.safe_text import inert

KIND = "vpc-flow"
ARTIFACT = "aws:vpc-flow"
SOURCE = "vpc-flow"
TIME_DESC = "Flow Start"

# The default format: version 2's fields in this order (what CloudWatch Logs holds).
DEFAULT_FIELDS = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
)  # fmt: skip
# Every field the flow log record format documented when this was written (a header
# names at least half known fields; an unknown one is read as text all the same):
# https://docs.aws.amazon.com/vpc/latest/userguide/flow-log-records.html
KNOWN_FIELDS = frozenset(
    {
        *DEFAULT_FIELDS,
        "vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr",
        "pkt-dstaddr", "region", "az-id", "sublocation-type", "sublocation-id",
        "pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path",
        "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn",
        "ecs-container-instance-id", "ecs-container-id", "ecs-second-container-id",
        "ecs-service-name", "ecs-task-definition-arn", "ecs-task-arn", "ecs-task-id",
        "reject-reason",
    }
)  # fmt: skip
# Fields that are numbers, with their largest value: anything else there is a bad line.
INTEGER_FIELDS = {
    "version": 2**31, "srcport": 65535, "dstport": 65535, "protocol": 255,
    "packets": 2**63 - 1, "bytes": 2**63 - 1, "start": 253_402_300_799,
    "end": 253_402_300_799, "tcp-flags": 255, "traffic-path": 2**31,
}  # fmt: skip
ADDRESS_FIELDS = ("srcaddr", "dstaddr", "pkt-srcaddr", "pkt-dstaddr")
# IANA protocol numbers, named as Sigma's network connection rules (Sysmon) name them.
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp",
             132: "sctp"}  # fmt: skip
# `<account>_vpcflowlogs_<region>_<flow-log-id>_<YYYYMMDDTHHmmZ>_<hash>.log.gz`, as S3
# delivery names them (https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-s3-path.html).
DELIVERY_NAME = re.compile(
    r"^\d{12}_vpcflowlogs_[a-z0-9-]+_fl-[0-9a-z]+_\d{8}T\d{4}Z_[0-9a-f]+\.log(\.gz|\.parquet)?$",
    re.I,
)
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_LINE = 64 << 10  # a flow record is a few hundred bytes; a longer line is not one
HEAD_BYTES = 8 << 10
PARQUET_MAGIC = b"PAR1"
RECOGNISE_MAX_FILES = 20  # content checks per item: a delivery folder holds thousands
MAX_FIELDS = 256


@dataclass(frozen=True)
class Format:
    """The fields of the records that follow, in order; `header` False: assumed default."""

    fields: tuple[str, ...]
    header: bool = True


class BadLine(ValueError):
    """A line that is not a flow record of the format in force; the text says why."""


def header_fields(tokens: Sequence[str]) -> tuple[str, ...] | None:
    """The field names when `tokens` are a header line: lower-case hyphenated names, no
    name twice, and at least half of them (and two or more) documented flow log fields.
    A record never qualifies: its times and counts are numbers."""
    if not tokens or len(tokens) > MAX_FIELDS or len(set(tokens)) != len(tokens):
        return None
    if not all(_FIELD_NAME.match(token) for token in tokens):
        return None
    known = sum(token in KNOWN_FIELDS for token in tokens)
    if known < 2 or known * 2 < len(tokens):
        return None
    return tuple(tokens)


def is_default_record(tokens: Sequence[str]) -> bool:
    """A header-less line that is a version 2 default-format record in every field's
    shape: only then is a header-less file read (CloudWatch Logs' records)."""
    if len(tokens) != len(DEFAULT_FIELDS) or tokens[0] != "2":
        return False
    try:
        record = parse_record(Format(DEFAULT_FIELDS, header=False), tokens)
    except BadLine:
        return False
    return (
        re.fullmatch(r"\d{12}|unknown|-", tokens[1]) is not None  # unknown: an AWS service's
        and re.fullmatch(r"[a-z]+(-[0-9a-z]+)+|-", tokens[2]) is not None
        and record["start"] is not None
        and tokens[12] in ("ACCEPT", "REJECT", "-")
        and tokens[13] in ("OK", "NODATA", "SKIPDATA")
    )


def parse_record(fmt: Format, tokens: Sequence[str]) -> dict[str, Any]:
    """One record's fields by name, checked: numbers as int, `-` as None."""
    if len(tokens) != len(fmt.fields):
        raise BadLine(f"{len(tokens)} fields where the format has {len(fmt.fields)}")
    record: dict[str, Any] = {}
    for name, token in zip(fmt.fields, tokens, strict=True):
        if token == "-":
            record[name] = None
        elif name in INTEGER_FIELDS:
            if not token.isascii() or not token.isdigit() or len(token) > 20:
                raise BadLine(f"{name} {inert(token, 40)!r} is not a number")
            value = int(token)
            if value > INTEGER_FIELDS[name]:
                raise BadLine(f"{name} {value} is out of range")
            record[name] = value
        elif name in ADDRESS_FIELDS:
            try:
                record[name] = str(ipaddress.ip_address(token))
            except ValueError:
                raise BadLine(f"{name} {inert(token, 60)!r} is not an IP address") from None
        else:
            record[name] = token
    start, end = record.get("start"), record.get("end")
    if start is not None and end is not None and end < start:
        raise BadLine(f"end {end} is before start {start}")
    if start == 0 or end == 0:
        raise BadLine("a time of 0 (1970-01-01) is no flow's time")
    return record


def flow_row(record: dict[str, Any], evidence_id: str, number: int) -> Row | None:
    """The timeline row of one checked record; None when it has no time at all."""
    when = record.get("start") or record.get("end")
    if when is None:
        return None
    status = record.get("log-status")
    action = record.get("action") or (status if status in ("NODATA", "SKIPDATA") else None)
    protocol = record.get("protocol")
    name = PROTOCOLS.get(protocol, str(protocol)) if protocol is not None else None
    raw = {**record, **_sigma_fields(record, name)}
    src, dst = record.get("srcaddr"), record.get("dstaddr")
    interface = record.get("interface-id")
    host = record.get("instance-id") or interface
    outcome = {"ACCEPT": "success", "REJECT": "failure"}.get(record.get("action") or "")
    return host_row(
        when=datetime.fromtimestamp(when, UTC).isoformat(),
        desc=TIME_DESC,
        artifact=ARTIFACT,
        host=host,
        evidence_id=evidence_id,
        raw=json.dumps(raw, ensure_ascii=False),
        message=_message(record, action, name),
        src_ip=src,
        action=action,
        target=_endpoint(dst, record.get("dstport"), name) if dst else None,
        outcome=outcome,
        occurrence=number,
        source=SOURCE,
    )


def _sigma_fields(record: dict[str, Any], protocol: str | None) -> dict[str, Any]:
    """The Sigma network connection names for what the record holds."""
    names = {
        "SourceIp": record.get("srcaddr"),
        "DestinationIp": record.get("dstaddr"),
        "SourcePort": record.get("srcport"),
        "DestinationPort": record.get("dstport"),
        "Protocol": protocol,
    }
    return {key: value for key, value in names.items() if value is not None}


def _endpoint(address: str | None, port: int | None, protocol: str | None) -> str:
    where = f"[{address}]" if address and ":" in address and port is not None else address
    text = f"{where}:{port}" if port is not None else f"{where}"
    return f"{text}/{protocol}" if protocol else text


def _message(record: dict[str, Any], action: str | None, protocol: str | None) -> str:
    interface = record.get("interface-id") or "?"
    status = record.get("log-status")
    if record.get("srcaddr") is None and status in ("NODATA", "SKIPDATA"):
        what = "no traffic" if status == "NODATA" else "records skipped (capacity)"
        return f"{status}: {what} on {interface}"
    src = _endpoint(record.get("srcaddr") or "?", record.get("srcport"), None)
    dst = _endpoint(record.get("dstaddr") or "?", record.get("dstport"), None)
    counts = f"{record.get('packets') or 0} packets, {record.get('bytes') or 0} bytes"
    return inert(f"{action or '-'} {protocol or '-'} {src} -> {dst} ({counts}) on {interface}")


def accepts(path: Path) -> bool:
    return skip_reason(path) is None


def skip_reason(path: Path) -> str | None:
    return None


def is_parquet(path: Path, head: bytes | None = None) -> bool:
    """The Parquet delivery format (`FileFormat: parquet`): `....log.parquet`, or any
    file whose first bytes are Parquet's magic number (`head`, when the caller has read
    them already; else read here)."""
    if path.name.lower().endswith(".parquet"):
        return True
    if head is None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(4)
    return head[:4] == PARQUET_MAGIC


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    if is_page(path):
        yield from batches(_page_rows(path, evidence_id, errors), errors)
        return
    if is_parquet(path):
        yield from batches(_parquet_rows(path, evidence_id, errors), errors)
        return
    yield from batches(_rows(path, evidence_id, errors), errors)


def _parquet_rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    """The Parquet delivery: one column per field, named with `_` where the text format
    has `-` (`account_id`, `log_status`; Athena's table for it). Each row goes through
    the text format's checks (`parse_record`), a batch at a time."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        fields = tuple(name.replace("_", "-") for name in names)
        if not header_fields(fields):
            errors.add(f"{path.name}: a Parquet file whose columns are not flow log fields")
            return
        fmt = Format(fields)
        number = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                number += 1
                tokens = ["-" if v is None else str(v) for v in values]
                try:
                    record = parse_record(fmt, tokens)
                except BadLine as exc:
                    errors.add(f"bad flow record: {exc}", record=number)
                    continue
                row = flow_row(record, evidence_id, number)
                if row is None:
                    errors.add("no start or end time: not placed on the timeline", record=number)
                    continue
                yield row
    except (OSError, ValueError, pa.ArrowException) as exc:
        errors.add(f"{path.name}: not a readable Parquet file ({_first(exc)})")


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_page(path: Path) -> bool:
    """A CloudWatch Logs page (`capture logs --vpc-flow` of a flow log delivered there)."""
    return path.parent.name == "pages" and path.suffix.lower() == ".json"


def page_format(path: Path) -> Format:
    """The flow log's own field format (`${version} ${account-id} ...`, recorded by the
    capture from DescribeFlowLogs), else the default: CloudWatch Logs holds no header."""
    try:
        meta = json_loads((path.parent.parent / "meta.json").read_bytes())
    except (OSError, ValueError):
        meta = {}
    text = meta.get("log_format") if isinstance(meta, dict) else None
    fields = tuple(re.findall(r"\$\{([a-z0-9-]+)\}", text)) if isinstance(text, str) else ()
    return Format(fields or DEFAULT_FIELDS, header=False)


def _page_rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    """Each log event's message is one record, in the flow log's format."""
    from cloudir.analyze.parsers.cloudwatch_logs import read_page

    page = read_page(path, errors)
    if page is None:
        return
    fmt = page_format(path)
    digits = re.sub(r"\D", "", path.stem)
    first = int(digits[-9:] or 0) * 100_000  # rows of two pages never share an occurrence
    for number, event in enumerate(page[0], 1):
        message = event.get("message") if isinstance(event, dict) else None
        if not isinstance(message, str) or len(message) > MAX_LINE:
            errors.add("a log event without a flow record as its message", record=number)
            continue
        try:
            record = parse_record(fmt, message.split())
        except BadLine as exc:
            errors.add(f"not a flow record: {exc}", record=number)
            continue
        row = flow_row(record, evidence_id, first + number)
        if row is None:
            errors.add("a flow record without a start or end time", record=number)
            continue
        yield row


def _rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    """Every record's row in file order; bad lines are logged by line number."""
    try:
        fh = _open(path)
    except OSError as exc:
        errors.add(f"{path.name}: not readable ({exc.strerror or exc})")
        return
    number = 0
    fmt: Format | None = None
    with fh:
        try:
            for number, line in _lines(fh):
                if line is None:
                    errors.add(f"a line longer than {MAX_LINE} bytes", line=number)
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    errors.add("not valid UTF-8; not a flow record", line=number)
                    continue
                tokens = text.split()
                if not tokens:
                    continue
                fields = header_fields(tokens)
                if fields is not None:
                    fmt = Format(fields)
                    continue
                if fmt is None:
                    if not is_default_record(tokens):
                        errors.add(
                            "the first line is neither a header of flow log fields nor a "
                            "default-format record; the file is not read",
                            line=number,
                        )
                        return
                    fmt = Format(DEFAULT_FIELDS, header=False)
                try:
                    record = parse_record(fmt, tokens)
                except BadLine as exc:
                    errors.add(f"bad flow record: {exc}", line=number)
                    continue
                row = flow_row(record, evidence_id, number)
                if row is None:
                    errors.add("no start or end time: not placed on the timeline", line=number)
                    continue
                yield row
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            errors.add(f"truncated or corrupt gzip after line {number} ({exc})")
        except OSError as exc:
            errors.add(f"cannot read file after line {number}: {exc}")


def _open(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when its magic says gzip, streamed either way."""
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes what we return
    if fh.read(2) == b"\x1f\x8b":
        fh.seek(0)
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its end) in order; None for a line over MAX_LINE,
    whose rest is read past in bounded pieces."""
    number = 0
    while True:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while True:
                more = fh.readline(MAX_LINE)
                if not more or more.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, line.rstrip(b"\r\n")


def _first_line(head: bytes) -> list[str] | None:
    """The first line's tokens from the file's first bytes (inflated when gzip)."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
        except zlib.error:
            return None
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) >= HEAD_BYTES:
        return None
    try:
        return line.decode("utf-8").split()
    except UnicodeDecodeError:
        return None


def looks_like_flow_log(path: Path) -> bool:
    """The first line is a header of flow log fields, or a default-format record; or a
    Parquet file whose columns are flow log fields. One open, as sniff reads: a regular
    file only, never through a link or waiting on a FIFO; the first HEAD_BYTES decide
    text, and a Parquet file's schema is read from the same handle."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            head = fh.read(HEAD_BYTES)
        except OSError:
            return False
        if is_parquet(path, head):
            import pyarrow.parquet as pq

            try:
                fh.seek(0)
                names = pq.read_schema(fh).names
            except (OSError, ValueError, pa.ArrowException):
                return False
            return header_fields(tuple(n.replace("_", "-") for n in names)) is not None
    tokens = _first_line(head)
    if not tokens:
        return False
    return header_fields(tokens) is not None or is_default_record(tokens)


def recognise(paths: Sequence[Path]) -> int:
    """Flow logs by their S3 delivery name (surest when every file has one and the first
    files' first line checks out), else by a first line of flow log field names or a
    default-format record."""
    if not paths:
        return NOT_MINE
    named = [path for path in paths if DELIVERY_NAME.match(path.name)]
    if named:
        sample = named[:RECOGNISE_MAX_FILES]
        if len(named) == len(paths) and all(looks_like_flow_log(p) for p in sample):
            return BY_NAME_AND_STRUCTURE
        return BY_NAME
    if any(looks_like_flow_log(path) for path in paths[:RECOGNISE_MAX_FILES]):
        return BY_CONTENT
    return NOT_MINE


# A connection has a source address; NODATA and SKIPDATA records are no connection.
_CONNECTION = "src_ip IS NOT NULL"

register(
    Parser(
        name="vpc-flow",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one VPC flow log record, at its start: `raw` holds every field by its flow "
                "log name and `SourceIp`, `DestinationIp`, `SourcePort`, `DestinationPort`, "
                "`Protocol`",
                (
                    Logsource("aws", "vpcflowlogs"),
                    Logsource("aws", category="network_connection", condition=_CONNECTION),
                    Logsource(None, category="network_connection", condition=_CONNECTION),
                ),
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=60,
    )
)
