"""Elastic Load Balancing access logs: one row per request an Application (or Classic)
Load Balancer answered.

The load balancer sees the web attack before the application's own logs do, and keeps
seeing it when the instance is gone. ELB delivers gzipped files every five minutes
(`<account>_elasticloadbalancing_<region>_app.<name>.<id>_<end time>_<ip>_<random>.log.gz`;
Classic ELB: `..._<name>_<end time>_<ip>_<random>.log`, plain). One request per line,
space-separated, the request, user agent and later text fields in quotes. AWS adds fields
at the end over the years: every field present is kept, the documented ones by name,
later ones as `extra_fields`; lines of older load balancers with fewer fields are read.

Application Load Balancer lines start with the request type (`http`, `https`, `h2`,
`grpcs`, `ws`, `wss`); Classic ELB lines start with the time, which tells the two apart
line by line. Network Load Balancer (TLS) logs are another format and are not read.

`raw` holds the fields by name (addresses split as AWS's Athena table splits them:
`client_ip`, `client_port`, ...) and, for Sigma's web rules, the same request under the
field names of Sigma's `webserver`/`proxy` taxonomy (`c-ip`, `cs-method`, `cs-uri-query`,
`sc-status`, `cs-user-agent`, ...; docs/detection.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

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

KIND = "alb-access"
SOURCE = "elb"
ARTIFACT = "aws:alb_access"
TIME_DESC = "Response Time"
MAX_MESSAGE = 1000
RECOGNISE_MAX_FILES = 20
EXTRA = "extra_fields"

# The documented fields in log order (Elastic Load Balancing user guide, "Access log
# entries"); `client:port`-style fields are split into address and port below.
ALB_FIELDS: tuple[str, ...] = (
    "type",
    "time",
    "elb",
    "client:port",
    "target:port",
    "request_processing_time",
    "target_processing_time",
    "response_processing_time",
    "elb_status_code",
    "target_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
    "target_group_arn",
    "trace_id",
    "domain_name",
    "chosen_cert_arn",
    "matched_rule_priority",
    "request_creation_time",
    "actions_executed",
    "redirect_url",
    "error_reason",
    "target:port_list",
    "target_status_code_list",
    "classification",
    "classification_reason",
    "conn_trace_id",
)
CLASSIC_FIELDS: tuple[str, ...] = (
    "time",
    "elb",
    "client:port",
    "backend:port",
    "request_processing_time",
    "backend_processing_time",
    "response_processing_time",
    "elb_status_code",
    "backend_status_code",
    "received_bytes",
    "sent_bytes",
    "request",
    "user_agent",
    "ssl_cipher",
    "ssl_protocol",
)
# The oldest lines of each end with the user agent (Classic ELB before 2015 even with the
# request; it is required here, the line means little without it).
ALB_MIN_FIELDS = ALB_FIELDS.index("user_agent") + 1
CLASSIC_MIN_FIELDS = CLASSIC_FIELDS.index("user_agent") + 1
SPLIT = {
    "client:port": ("client_ip", "client_port"),
    "target:port": ("target_ip", "target_port"),
    "backend:port": ("backend_ip", "backend_port"),
    "target:port_list": ("target_port_list", None),
}
ALB_TYPES = frozenset({"http", "https", "h2", "grpcs", "ws", "wss"})
_TYPE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
# AWS's delivery names: ALB (`app.`) gzipped, Classic (no type prefix) plain.
ALB_NAME = re.compile(
    r"^\d{12}_elasticloadbalancing_[a-z0-9-]+_app\.[^_]+_\d{8}T\d{4}Z_[0-9a-fA-F.:]+_[0-9a-z]+\.log\.gz$"
)
CLASSIC_NAME = re.compile(
    r"^\d{12}_elasticloadbalancing_[a-z0-9-]+_(?!app\.|net\.)[^_]+_\d{8}T\d{4}Z_[0-9a-fA-F.:]+_[0-9a-z]+\.log$"
)


def _address(value: str) -> tuple[str | None, str | None]:
    """`192.0.2.1:443` or `[2001:db8::1]:443` (or `-`) as address and port."""
    if value in ("", "-"):
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, None
    return host.strip("[]") or None, port or None


def _named(names: Sequence[str], values: list[str]) -> dict[str, object]:
    named: dict[str, object] = {}
    for name, value in zip(names, values, strict=False):
        split = SPLIT.get(name)
        if split is None:
            named[name] = value
        elif split[1] is None:
            named[split[0]] = value
        else:
            address, port = _address(value)
            named[split[0]], named[split[1]] = address, port
    if len(values) > len(names):
        named[EXTRA] = values[len(names) :]
    return named


def fields_of(line: str) -> dict[str, object]:
    """The line's fields by name, Application or Classic ELB by its first field; BadLine
    for what is neither."""
    values = split_fields(line)
    if not values:
        raise BadLine("no fields")
    if _ISO_TIME.match(values[0]):
        names, least, kind = CLASSIC_FIELDS, CLASSIC_MIN_FIELDS, "a Classic ELB"
    elif _TYPE.match(values[0]):
        names, least, kind = ALB_FIELDS, ALB_MIN_FIELDS, "an ALB"
        if not _ISO_TIME.match(values[1] if len(values) > 1 else ""):
            raise BadLine(f"unreadable time {inert(values[1] if len(values) > 1 else '', 60)!r}")
    else:
        raise BadLine(f"neither a request type nor a time: {inert(values[0], 60)!r}")
    if len(values) < least:
        raise BadLine(f"{len(values)} fields, {kind} access log line has at least {least}")
    named = _named(names, values)
    named.update(_request_parts(str(named["request"])))
    return named


def _request_parts(request: str) -> dict[str, object]:
    """`GET http://host:80/p?q HTTP/1.1` as verb, URL and protocol (`-` for each of a
    TCP or unparsed request)."""
    parts = request.split(" ")
    if len(parts) < 3:
        return {"request_verb": "-", "request_url": request or "-", "request_proto": "-"}
    return {
        "request_verb": parts[0],
        "request_url": " ".join(parts[1:-1]),
        "request_proto": parts[-1],
    }


def sigma_fields(named: dict[str, object]) -> dict[str, object]:
    """The request under Sigma's webserver/proxy field names (W3C extended log names).

    `cs-uri-query` and `c-uri-query` hold the path with its query string, as SigmaHQ's
    webserver rules read it (they look for `../` and `/etc/passwd` there); `cs-uri-stem`
    the path alone."""
    url = str(named.get("request_url") or "-")
    try:
        parts = urlsplit(url)
        host, path, query = parts.hostname, parts.path, parts.query
    except ValueError:  # a hostile URL (unbalanced [ in the host): the text as the path
        host, path, query = None, url, ""
    path_query = f"{path}?{query}" if query else path
    last = path.rsplit("/", 1)[-1]
    extension = last.rsplit(".", 1)[-1] if "." in last else None
    verb = named.get("request_verb")
    agent = named.get("user_agent")
    target_ip = named.get("target_ip", named.get("backend_ip"))
    return {
        "c-ip": named.get("client_ip"),
        "src_ip": named.get("client_ip"),
        "dst_ip": target_ip,
        "cs-method": None if verb == "-" else verb,
        "c-uri": None if url == "-" else url,
        "cs-uri-stem": path or None,
        "c-uri-stem": path or None,
        "cs-uri-query": path_query or None,
        "c-uri-query": path_query or None,
        "c-uri-extension": extension,
        "cs-host": host,
        "r-dns": host,
        "cs-version": None if named.get("request_proto") == "-" else named.get("request_proto"),
        "sc-status": named.get("elb_status_code"),
        "cs-user-agent": None if agent == "-" else agent,
        "c-useragent": None if agent == "-" else agent,
        "cs-bytes": named.get("received_bytes"),
        "sc-bytes": named.get("sent_bytes"),
    }


def looks_like_alb(line: str) -> bool:
    """A line of ALB's (a known request type) or Classic ELB's shape."""
    try:
        named = fields_of(line)
    except BadLine:
        return False
    return named.get("type", "http") in ALB_TYPES


def to_row(named: dict[str, object], evidence_id: str, number: int) -> Row:
    verb = str(named["request_verb"])
    url = str(named["request_url"])
    status = str(named["elb_status_code"])
    client = named.get("client_ip")
    raw = {**named, **sigma_fields(named)}
    message = f"{client or '-'} {verb} {url} -> {status} via {named['elb']} ({named['user_agent']})"
    return host_row(
        when=str(named["time"]),
        desc=TIME_DESC,
        artifact=ARTIFACT,
        host=None,
        evidence_id=evidence_id,
        raw=json.dumps(raw, ensure_ascii=False),
        message=inert(message, MAX_MESSAGE),
        src_ip=str(client) if client else None,
        action=None if verb == "-" else verb,
        target=None if url == "-" else url,
        outcome=status_outcome(status),
        occurrence=number,
        source=SOURCE,
    )


def rows(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    for number, line in log_lines(path, errors):
        try:
            named = fields_of(line)
        except BadLine as exc:
            errors.add(f"not an ELB access log line: {exc}", line=number)
            continue
        yield to_row(named, evidence_id, number)


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    yield from batches(rows(path, evidence_id, errors), errors)


def accepts(path: Path) -> bool:
    """Every file of an alb-access item: the responder or recognition said what it is."""
    return True


def recognise(paths: Sequence[Path]) -> int:
    """ELB's delivery names whose first line is an access log line are surest; the names
    alone come next; a first line of the shape under another name is content. One such
    file makes the item's kind, as in `s3_access.recognise`."""
    if not paths:
        return NOT_MINE
    named = [p for p in paths if ALB_NAME.match(p.name) or CLASSIC_NAME.match(p.name)]
    if named:
        sample = named[:RECOGNISE_MAX_FILES]
        if any(first_line_is(path, looks_like_alb) for path in sample):
            return BY_NAME_AND_STRUCTURE
        return BY_NAME
    if any(first_line_is(p, looks_like_alb) for p in paths[:RECOGNISE_MAX_FILES]):
        return BY_CONTENT
    return NOT_MINE


PARSER = register(
    Parser(
        name="alb-access",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one request an Application or Classic Load Balancer answered: `action` "
                "the HTTP method, `target` the URL, `outcome` from elb_status_code",
                (
                    Logsource(None, category="webserver"),
                    Logsource(None, category="proxy"),
                    Logsource("aws", "elb"),
                ),
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=82,
    )
)
