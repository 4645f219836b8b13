"""CloudTrail records: who called which AWS API, from where, with which keys.

Reads every shape the records travel in: S3 delivery files (`{"Records": [...]}`, .json
or .json.gz), LookupEvents output (API pages `{"Events": [...]}` and Event-history JSONL,
where `CloudTrailEvent` is a JSON string), plain JSON arrays of events, and EventBridge
envelopes whose `detail` is the record. `raw` always holds the CloudTrail record itself,
so the same event reads the same whichever way it arrived.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from cloudir.analyze import messages
from cloudir.analyze.parsers import BATCH_ROWS, BatchBuilder, ErrorLog, Parser, Row, register

MAX_DOCUMENT_BYTES = 1 << 30
SOURCE = "cloudtrail"
ARTIFACT = "aws:cloudtrail"
TIME_DESC = "Event Time"

# requestParameters keys that name the object acted on, most specific first.
TARGET_PARAMETERS = (
    "userName",
    "roleName",
    "groupName",
    "policyArn",
    "bucketName",
    "name",
    "trailName",
    "functionName",
    "secretId",
    "keyId",
    "instanceId",
    "snapshotId",
    "imageId",
    "groupId",
    "detectorId",
    "configurationRecorderName",
    "flowLogIds",
    "dBSnapshotIdentifier",
    "parameterName",
    "accessKeyId",
    "instancesSet",
    "key",
)


class NotCloudTrail(ValueError):
    """A JSON value that is not a CloudTrail record in any shape we know."""


def accepts(path: Path) -> bool:
    return not path.name.endswith(".zip")


def open_evidence(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when its magic says gzip (whatever its name says)."""
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes what we return
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def parse(path: Path, evidence_id: str, errors: ErrorLog) -> Iterator[pa.RecordBatch]:
    builder = BatchBuilder(errors)
    number = 0
    try:
        for number, event in enumerate(_events(path, errors), 1):
            row = to_row(event, evidence_id, number, errors)
            if row is not None:
                builder.add(number, row)
                if len(builder) >= BATCH_ROWS:
                    yield from _flushed(builder)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        errors.add(f"truncated or corrupt gzip after {number} records ({exc})")
    except OSError as exc:
        errors.add(f"cannot read file: {exc}")
    yield from _flushed(builder)


def _flushed(builder: BatchBuilder) -> Iterator[pa.RecordBatch]:
    batch = builder.flush()
    if batch is not None:
        yield batch


def _events(path: Path, errors: ErrorLog) -> Iterator[dict[str, Any]]:
    """Whole-file JSON, or JSON lines; the first line decides which, read as a stream."""
    with open_evidence(path) as fh:
        first = fh.readline()
        while first and not first.strip():
            first = fh.readline()
        if not first:
            errors.add("empty file")
            return
        try:
            document = orjson.loads(first)
        except orjson.JSONDecodeError:
            document = None
        if document is not None:
            yield from _from_document(document, errors, None)
            for line_number, line in enumerate(fh, 2):
                if not line.strip():
                    continue
                try:
                    document = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    errors.add(f"invalid JSON: {exc}", line=line_number)
                    continue
                yield from _from_document(document, errors, line_number)
            return
        rest = fh.read(MAX_DOCUMENT_BYTES)
        if fh.read(1):
            errors.add(f"a single JSON document over {MAX_DOCUMENT_BYTES} bytes; not parsed")
            return
        try:
            document = orjson.loads(first + rest)
        except orjson.JSONDecodeError as exc:
            errors.add(f"invalid JSON: {exc}")
            return
        yield from _from_document(document, errors, None)


def _from_document(document: Any, errors: ErrorLog, line: int | None) -> Iterator[dict[str, Any]]:
    if isinstance(document, dict):
        for key in ("Records", "Events"):
            if isinstance(document.get(key), list):
                yield from _unwrap_all(document[key], errors, line)
                return
        items = [document]
    elif isinstance(document, list):
        items = document
    else:
        errors.add("JSON value is not an object or a list of events", line=line)
        return
    yield from _unwrap_all(items, errors, line)


def _unwrap_all(items: list[Any], errors: ErrorLog, line: int | None) -> Iterator[dict[str, Any]]:
    for index, item in enumerate(items):
        try:
            yield unwrap(item)
        except NotCloudTrail as exc:
            errors.add(str(exc), record=index + 1, line=line)


def unwrap(item: Any) -> dict[str, Any]:
    """The CloudTrail record inside any envelope we know."""
    if not isinstance(item, dict):
        raise NotCloudTrail("record is not a JSON object")
    if "CloudTrailEvent" in item:
        inner = item["CloudTrailEvent"]
        if isinstance(inner, str):
            try:
                inner = orjson.loads(inner)
            except orjson.JSONDecodeError as exc:
                raise NotCloudTrail(f"CloudTrailEvent is not valid JSON: {exc}") from exc
        if not isinstance(inner, dict):
            raise NotCloudTrail("CloudTrailEvent is not a JSON object")
        return inner
    detail = item.get("detail")
    if isinstance(detail, dict) and ("detail-type" in item or "source" in item):
        return detail
    if "eventTime" in item or "eventName" in item or "eventID" in item:
        return item
    if item.get("Type") == "Notification" or "s3ObjectKey" in str(item.get("Message", "")):
        raise NotCloudTrail("SNS/SQS delivery notification: names log files, holds no events")
    raise NotCloudTrail("not a CloudTrail record (no eventTime, eventName or eventID)")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def principal(identity: Any) -> str | None:
    if not isinstance(identity, dict):
        return None
    for key in ("arn", "userName", "principalId", "invokedBy"):
        if identity.get(key):
            return _text(identity[key])
    return None


def target_of(event: dict[str, Any]) -> str | None:
    resources = event.get("resources")
    if isinstance(resources, list):
        arns = [r.get("ARN") for r in resources if isinstance(r, dict) and r.get("ARN")]
        if arns:
            return ", ".join(_text(a) or "" for a in arns)
    params = event.get("requestParameters")
    if isinstance(params, dict):
        for key in TARGET_PARAMETERS:
            if params.get(key):
                return _readable(params[key])
        for value in params.values():
            if isinstance(value, str) and value:
                return value
    return None


def _readable(value: Any) -> str | None:
    """EC2's `{"items": [{"instanceId": "i-1"}]}` reads as `i-1`; lists join with commas."""
    if isinstance(value, dict) and isinstance(value.get("items"), list):
        value = value["items"]
    if isinstance(value, list):
        names = []
        for entry in value:
            if isinstance(entry, dict):
                entry = next((v for v in entry.values() if isinstance(v, str)), None)
            if entry is not None:
                names.append(_text(entry) or "")
        return ", ".join(names) or None
    return _text(value)


def outcome_of(event: dict[str, Any]) -> str:
    if event.get("errorCode"):
        return _text(event["errorCode"]) or "failure"
    response = event.get("responseElements")
    if isinstance(response, dict) and response.get("ConsoleLogin") == "Failure":
        return "failure"
    return "success"


def host_of(identity: Any) -> str | None:
    """Calls made with an instance profile carry the instance id as the session name."""
    if isinstance(identity, dict):
        session = str(identity.get("principalId") or "").rpartition(":")[2]
        if session.startswith("i-") and session[2:].isalnum():
            return session
    return None


def to_row(event: dict[str, Any], evidence_id: str, number: int, errors: ErrorLog) -> Row | None:
    """The hot loop of the timeline: plain lookups and one tuple, no per-column dicts."""
    when = event.get("eventTime")
    if not when:
        errors.add("record without eventTime", number)
        return None
    raw = orjson.dumps(event)
    identity = event.get("userIdentity")
    user = principal(identity)
    source = _text(event.get("eventSource"))
    name = _text(event.get("eventName"))
    target = target_of(event)
    src_ip = _text(event.get("sourceIPAddress"))
    error_code = _text(event.get("errorCode"))
    event_id = event.get("eventID")
    return (
        when if isinstance(when, str) else _text(when),
        TIME_DESC,
        SOURCE,
        ARTIFACT,
        host_of(identity),
        user,
        src_ip,
        f"{source}:{name}",
        target,
        error_code or outcome_of(event),
        messages.cloudtrail(
            user, source, name, target, src_ip, error_code, _text(event.get("errorMessage"))
        ),
        evidence_id,
        _text(event_id) if event_id else hashlib.sha256(raw).hexdigest(),
        raw,
    )


register(Parser(name="cloudtrail", evidence_kinds=("cloudtrail",), accepts=accepts, parse=parse))
