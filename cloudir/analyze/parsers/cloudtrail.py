"""CloudTrail records: who called which AWS API, from where, with which keys.

Reads every shape the records travel in: S3 delivery files (`{"Records": [...]}`, .json
or .json.gz), LookupEvents output (API pages `{"Events": [...]}` and Event-history JSONL,
where `CloudTrailEvent` is a JSON string), plain JSON arrays of events, and EventBridge
envelopes whose `detail` is the record. `raw` holds the CloudTrail record's own bytes,
exactly as the evidence has them, so the same event reads the same whichever way it came.

The parse is the timeline's hot loop. msgspec slices each record out of its file
without building it as Python objects (`msgspec.Raw`), then decodes only the fields the
timeline columns need into small structs; the rest of the record is never materialised.
A document whose records all have CloudTrail's own field types (nearly every delivery
file) is then turned into columns at once (`block_batches`); any other record goes
through `to_row`, the reference the column path is tested against.
"""

from __future__ import annotations

import decimal
import gzip
import hashlib
import io
import itertools
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa

from cloudir.analyze import messages
from cloudir.analyze.parsers import (
    BATCH_ROWS,
    BY_CONTENT,
    BY_NAME,
    JSON_SAFE_ESCAPE,
    NOT_MINE,
    BatchBuilder,
    ErrorLog,
    Logsource,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    columns_to_batch,
    register,
)
from cloudir.analyze.schema import PROMOTED_ARTIFACT
from cloudir.sniff import sniff

_INFLATE: Any = zlib
try:
    from isal import isal_zlib

    _INFLATE = isal_zlib
except ImportError:  # a platform without an isal wheel: zlib, the same bytes, slower
    pass

# A single JSON document is parsed whole; CloudTrail's own files are a few MB. Larger
# documents (or gzip bombs) are refused with a reason; JSON lines stream without limit.
MAX_DOCUMENT_BYTES = 128 << 20
ONE_SHOT_BYTES = 32 << 20
SOURCE = "cloudtrail"
ARTIFACT = PROMOTED_ARTIFACT  # "aws:cloudtrail": the rows that fill the promoted columns
TIME_DESC = "Event Time"
NULL = msgspec.Raw(b"null")


class Identity(msgspec.Struct):
    arn: Any = None
    userName: Any = None  # field names as CloudTrail spells them
    principalId: Any = None
    invokedBy: Any = None


class RecordView(msgspec.Struct, rename={"detail_type": "detail-type"}):
    """The fields the timeline reads from a record, and from the envelopes around one."""

    eventTime: Any = None
    eventSource: Any = None
    eventName: Any = None
    eventID: Any = None
    sourceIPAddress: Any = None
    errorCode: Any = None
    errorMessage: Any = None
    userIdentity: Identity | None = None
    resources: msgspec.Raw = NULL
    requestParameters: msgspec.Raw = NULL
    responseElements: msgspec.Raw = NULL
    CloudTrailEvent: Any = None  # LookupEvents
    detail: msgspec.Raw = NULL  # EventBridge
    detail_type: Any = None
    source: Any = None
    Type: Any = None  # SNS/SQS notifications, recognised to say why they hold no events
    Message: Any = None


class Container(msgspec.Struct):
    Records: list[msgspec.Raw] | None = None  # S3 delivery
    Events: list[msgspec.Raw] | None = None  # a LookupEvents API page


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
TargetParameters = msgspec.defstruct(
    "TargetParameters", [(k, Any, None) for k in TARGET_PARAMETERS]
)

_RECORD = msgspec.json.Decoder(RecordView)
_CONTAINER = msgspec.json.Decoder(Container)
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_VIEWS = msgspec.json.Decoder(list[RecordView])


class RecordViews(msgspec.Struct):
    Records: list[RecordView] | None = None


_RECORD_VIEWS = msgspec.json.Decoder(RecordViews)


class TypedSessionAttributes(msgspec.Struct):
    mfaAuthenticated: str | bool | None = None


class TypedSessionIssuer(msgspec.Struct):
    type: str | None = None
    arn: str | None = None
    userName: str | None = None


class TypedSessionContext(msgspec.Struct):
    attributes: TypedSessionAttributes | None = None
    sessionIssuer: TypedSessionIssuer | None = None


class TypedIdentity(msgspec.Struct):
    arn: str | None = None
    userName: str | None = None
    principalId: str | None = None
    invokedBy: str | None = None
    type: str | None = None
    accountId: str | None = None
    accessKeyId: str | None = None
    sessionContext: TypedSessionContext | None = None


class NamedResource(msgspec.Struct):
    ARN: str | None = None


class TypedView(msgspec.Struct):
    """A record whose fields all have the types CloudTrail gives them: the shape of
    nearly every record, and the one the column-at-a-time path reads. A record with any
    other shape fails this decode and its file takes the row-at-a-time path."""

    eventTime: str | None = None
    eventSource: str | None = None
    eventName: str | None = None
    eventID: str | None = None
    sourceIPAddress: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    userIdentity: TypedIdentity | None = None
    resources: list[NamedResource] | None = None
    userAgent: str | None = None  # this and below: read only for the promoted columns
    recipientAccountId: str | None = None
    awsRegion: str | None = None
    eventType: str | None = None
    readOnly: bool | str | None = None
    sessionCredentialFromConsole: bool | str | None = None
    vpcEndpointId: str | None = None
    requestParameters: msgspec.Raw = NULL
    responseElements: msgspec.Raw = NULL
    CloudTrailEvent: msgspec.Raw = NULL
    detail: msgspec.Raw = NULL


class TypedRecords(msgspec.Struct):
    Records: list[TypedView] | None = None


_TYPED_VIEW = msgspec.json.Decoder(TypedView)
_TYPED_VIEWS = msgspec.json.Decoder(list[TypedView])
_TYPED_RECORDS = msgspec.json.Decoder(TypedRecords)
_TARGETS = msgspec.json.Decoder(TargetParameters)
_ANY = msgspec.json.Decoder()


def _finite_or_decimal(text: str) -> float | decimal.Decimal:
    number = float(text)
    return number if math.isfinite(number) else decimal.Decimal(text)


# _ANY for JSON with a number past a float's range (1e999): that one as a Decimal, written
# back by _JSON as the number it was; every other number as _ANY reads it
_WIDE = msgspec.json.Decoder(float_hook=_finite_or_decimal)
_JSON = msgspec.json.Encoder(decimal_format="number")
_UNREADABLE = object()  # what _embedded gives for JSON no decoder of ours can hold


class NotCloudTrail(ValueError):
    """A JSON value that is not a CloudTrail record in any shape we know."""


def accepts(path: Path) -> bool:
    return not path.name.endswith(".zip")


def open_evidence(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when its magic says gzip (whatever its name says).

    Files of ordinary size are read and inflated in one call, which is about twice as
    fast as GzipFile's buffered reads; large or unusual ones stream.
    """
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes what we return
    magic = fh.read(2)
    fh.seek(0)
    if magic != b"\x1f\x8b":
        return fh
    if path.stat().st_size <= ONE_SHOT_BYTES:
        inflated = _inflate_single_member(fh.read())
        if inflated is not None:
            fh.close()
            return io.BytesIO(inflated)
        fh.seek(0)
    return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]


def open_evidence_bytes(data: bytes) -> BinaryIO:
    """`open_evidence` for a file whose bytes are already read (by Spark's binaryFile
    reader): the same gzip decision by magic, the same one-shot limit, the same stream
    fallback, so a file parses to the same rows and errors whoever read it."""
    if data[:2] != b"\x1f\x8b":
        return io.BytesIO(data)
    if len(data) <= ONE_SHOT_BYTES:
        inflated = _inflate_single_member(data)
        if inflated is not None:
            return io.BytesIO(inflated)
    return gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")  # type: ignore[return-value]


def _inflate_single_member(data: bytes) -> bytes | None:
    """One gzip member inflated up to the document limit; None means 'stream it instead'.

    ISA-L's inflate (isal) reads these files about 1.5x as fast as zlib's, a sixth of
    the parse; anything it does not finish cleanly goes to GzipFile, whose errors are
    the ones the error log has always named.
    """
    inflater = _INFLATE.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_DOCUMENT_BYTES)
    except (zlib.error, _INFLATE.error):
        return None
    if inflater.unconsumed_tail or inflater.unused_data or not inflater.eof:
        return None  # larger than the limit, several members, or truncated: GzipFile decides
    return out


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    yield from _parse_opened(lambda: open_evidence(path), evidence_id, errors)


def parse_bytes(data: bytes, evidence_id: str, errors: ErrorLog) -> Iterator[pa.RecordBatch]:
    """`parse` for a file's bytes read by someone else (the Spark timeline's executors):
    the same records, rows and errors.jsonl entries as `parse` gives for the file."""
    yield from _parse_opened(lambda: open_evidence_bytes(data), evidence_id, errors)


def _parse_opened(
    opener: Callable[[], BinaryIO], evidence_id: str, errors: ErrorLog
) -> Iterator[pa.RecordBatch]:
    builder = BatchBuilder(errors, promoted_from_raw)
    number = 0
    try:
        for entry in _records(opener, errors):
            if isinstance(entry, Block):
                yield from _flushed(builder)
                yield from block_batches(entry, evidence_id, errors)
                number = entry.first + len(entry.raws) - 1
                continue
            number, raw, view = entry
            row = to_row(raw, view, evidence_id, number, errors)
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


def _records(opener: Callable[[], BinaryIO], errors: ErrorLog) -> Records:
    """Whole-file JSON, or JSON lines; the first line decides which, read as a stream.

    No read is unbounded: a line or document over MAX_DOCUMENT_BYTES is reported, not
    loaded, so a hostile file cannot take the worker's memory. Each record comes with
    its number in file order, counting the records that could not be read, so every
    error about a record names the same record.
    """
    counter = [0]
    with opener() as fh:
        lines = _bounded_lines(fh)
        number, first = next(((n, line) for n, line in lines if line.strip()), (0, b""))
        if not first:
            errors.add("empty file")
            return
        try:
            first_items = _items(first) if first.endswith(b"\n") or not fh.read(1) else None
        except msgspec.DecodeError:
            first_items = None  # not a complete document on one line: a whole-file document
        if first_items is not None:
            yield from _unwrap_all(first_items, errors, number if number > 1 else None, counter)
            yield from _json_lines(lines, errors, counter)
            return
        fh.seek(0)
        document = fh.read(MAX_DOCUMENT_BYTES + 1)
        if len(document) > MAX_DOCUMENT_BYTES:
            errors.add(f"a single JSON document over {MAX_DOCUMENT_BYTES} bytes; not parsed")
            return
        try:
            items = _items(document)
        except msgspec.DecodeError as exc:
            numbered = [(n, line) for n, line in enumerate(document.splitlines(), 1)]
            if _mostly_json_lines(numbered):  # JSON lines whose first line is broken
                yield from _json_lines(iter(numbered), errors, counter)
            else:
                errors.add(_json_error(exc))
            return
        yield from _unwrap_all(items, errors, None, counter)


def _bounded_lines(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Numbered lines; an over-long line comes back cut, for the caller to report."""
    number = 0
    while line := fh.readline(MAX_DOCUMENT_BYTES + 1):
        number += 1
        yield number, line
        if len(line) > MAX_DOCUMENT_BYTES and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # skip the remainder of the over-long line


def _json_lines(
    lines: Iterator[tuple[int, bytes]], errors: ErrorLog, counter: list[int]
) -> Records:
    """A line that cannot be read is one record lost: it counts as one, named by line."""
    for number, line in lines:
        if not line.strip():
            continue
        if len(line) > MAX_DOCUMENT_BYTES:
            counter[0] += 1
            errors.add(f"line over {MAX_DOCUMENT_BYTES} bytes; not parsed", line=number)
            continue
        try:
            items = _items(line)
        except msgspec.DecodeError as exc:
            counter[0] += 1
            errors.add(_json_error(exc), line=number)
            continue
        yield from _unwrap_all(items, errors, number, counter)


def _mostly_json_lines(numbered: list[tuple[int, bytes]]) -> bool:
    lines = [line for _, line in numbered if line.strip()]
    if len(lines) < 2:
        return False
    good = 0
    for line in lines:
        try:
            _items(line)
            good += 1
        except msgspec.DecodeError:
            pass
    return good * 2 >= len(lines)


def _json_error(exc: msgspec.DecodeError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"unexpected JSON shape: {exc}"
    return f"invalid JSON: {str(exc).removeprefix('JSON is malformed: ')}"


Items = tuple[list[msgspec.Raw], list[RecordView] | None, list[TypedView] | None]


def _items(document: bytes) -> Items:
    """`_read_items`, where JSON nested past msgspec's depth limit is a DecodeError like any
    other JSON it cannot read (msgspec raises RecursionError, which would cost the file)."""
    try:
        return _read_items(document)
    except RecursionError as exc:
        raise msgspec.DecodeError("JSON is malformed: nested deeper than msgspec reads") from exc


def _read_items(document: bytes) -> Items:
    """The records of one JSON document, each as its own bytes, and their fields.

    The fields of a whole list are decoded in one call (a quarter faster than record by
    record). A list of plain records, every field of the type CloudTrail gives it, comes
    with typed views for the column-at-a-time path (`block_batches`); any other list
    with the forgiving views, or with None when odd types leave each record to be read
    on its own.
    """
    head = document.lstrip()[:1]
    if head == b"[":
        raws = _ITEMS.decode(document)
        typed = _typed(_TYPED_VIEWS, document)
        if typed is not None and _plain_records(typed):
            return raws, None, typed
        return raws, _typed(_VIEWS, document), None
    if head == b"{":
        box = _CONTAINER.decode(document)
        if box.Records is not None:
            records = _typed(_TYPED_RECORDS, document)
            if records is not None and _plain_records(records.Records):
                return box.Records, None, records.Records
            typed = _typed(_RECORD_VIEWS, document)
            return box.Records, typed.Records if typed is not None else None, None
        if box.Events is not None:
            return box.Events, None, None
        return [msgspec.Raw(document.strip())], None, None
    _embedded(_ANY, document)  # raises for malformed JSON, else it is a bare value
    raise msgspec.ValidationError("JSON value is not an object or a list of events")


def _typed(decoder: msgspec.json.Decoder, document: bytes) -> Any:
    """The document in `decoder`'s types, or None: a field of another type, or text that
    is not UTF-8 (msgspec raises UnicodeDecodeError for it, not a DecodeError), sends its
    records the row-at-a-time way, which keeps and logs such bytes."""
    try:
        return decoder.decode(document)
    except (msgspec.ValidationError, UnicodeDecodeError):
        return None


def _plain_records(views: list[TypedView] | None) -> bool:
    """Every view a CloudTrail record with a time, none an envelope around one."""
    if not views:
        return False
    for view in views:
        if not view.eventTime or view.CloudTrailEvent != NULL or view.detail != NULL:
            return False
    return True


class Block(msgspec.Struct):
    """Plain records of one document, numbered from `first`, for `block_batches`."""

    first: int
    raws: list[msgspec.Raw]
    views: list[TypedView]


Records = Iterator[tuple[int, bytes, RecordView] | Block]


def _unwrap_all(items: Items, errors: ErrorLog, line: int | None, counter: list[int]) -> Records:
    raws, views, typed = items
    if typed is not None:
        yield Block(counter[0] + 1, raws, typed)
        counter[0] += len(raws)
        return
    for index, item in enumerate(raws):
        counter[0] += 1
        if views is not None:
            view = views[index]
            plain = view.CloudTrailEvent is None and view.detail == NULL
            if plain and (view.eventTime is not None or view.eventName is not None):
                yield counter[0], bytes(item), view
                continue
        try:
            raw, view = unwrap(item)
        except NotCloudTrail as exc:
            errors.add(str(exc), record=counter[0], line=line)
            continue
        yield counter[0], raw, view


def _view(raw: bytes | msgspec.Raw) -> RecordView:
    """Decode the fields we read; a record with odd types takes the slow, forgiving path."""
    try:
        return _RECORD.decode(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as exc:
        raise NotCloudTrail(_json_error(exc)) from exc
    except UnicodeDecodeError:
        # a field the view reads holds bytes that are not UTF-8: read them as the row's
        # `raw` will show them (\\xNN, logged when the batch is built)
        raw = bytes(raw).decode("utf-8", JSON_SAFE_ESCAPE).encode()
        return _view(raw)
    value = _embedded(_ANY, raw)
    if value is _UNREADABLE:
        raise NotCloudTrail("a number too long to read (an integer of thousands of digits)")
    if not isinstance(value, dict):
        raise NotCloudTrail("record is not a JSON object")
    ident = value.get("userIdentity")
    fields: dict[str, Any] = {
        name: value.get(name)
        for name in ("eventTime", "eventSource", "eventName", "eventID", "sourceIPAddress",
                     "errorCode", "errorMessage", "CloudTrailEvent", "source", "Type", "Message")
    }  # fmt: skip
    fields["detail_type"] = value.get("detail-type")
    for name in ("resources", "requestParameters", "responseElements", "detail"):
        fields[name] = msgspec.Raw(_JSON.encode(value.get(name)))
    if isinstance(ident, dict):
        fields["userIdentity"] = Identity(
            *(ident.get(k) for k in ("arn", "userName", "principalId", "invokedBy"))
        )
    return RecordView(**fields)


def unwrap(item: msgspec.Raw) -> tuple[bytes, RecordView]:
    """The CloudTrail record inside any envelope we know: its bytes and its fields."""
    view = _view(item)
    if view.CloudTrailEvent is not None:
        inner = view.CloudTrailEvent
        if isinstance(inner, dict):
            inner = _JSON.encode(inner).decode()
        if not isinstance(inner, str):
            raise NotCloudTrail("CloudTrailEvent is not a JSON object")
        data = inner.encode()
        if data.lstrip()[:1] != b"{":
            raise NotCloudTrail("CloudTrailEvent is not a JSON object")
        return data, _view(data)
    if view.detail != NULL and (view.detail_type is not None or view.source is not None):
        data = bytes(view.detail)
        if data[:1] != b"{":
            raise NotCloudTrail("EventBridge detail is not a JSON object")
        return data, _view(data)
    if view.eventTime is not None or view.eventName is not None or view.eventID is not None:
        return bytes(item), view
    data = bytes(item)
    if b'"eventTime"' in data or b'"eventName"' in data:  # present, but null
        return data, view
    if view.Type == "Notification" or "s3ObjectKey" in str(view.Message or ""):
        raise NotCloudTrail("SNS/SQS delivery notification: names log files, holds no events")
    raise NotCloudTrail("not a CloudTrail record (no eventTime, eventName or eventID)")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return _JSON.encode(value).decode()
    return str(value)


def principal(identity: Identity | None) -> str | None:
    if identity is None:
        return None
    for value in (identity.arn, identity.userName, identity.principalId, identity.invokedBy):
        if value:
            return _text(value)
    return None


def target_of(view: RecordView) -> str | None:
    if view.resources != NULL:
        resources = _embedded(_ANY, view.resources)
        if isinstance(resources, list):
            arns = [r.get("ARN") for r in resources if isinstance(r, dict) and r.get("ARN")]
            if arns:
                return ", ".join(_text(a) or "" for a in arns)
    return _parameter_target(view.requestParameters)


def _parameter_target(params: msgspec.Raw) -> str | None:
    """The object requestParameters name: the first key of TARGET_PARAMETERS present,
    else the first non-empty string value."""
    if params == NULL:
        return None
    try:
        named = _embedded(_TARGETS, params)
    except msgspec.ValidationError:
        return None  # requestParameters that are not an object name no target
    # Fields are declared in priority order, so the first truthy one is the target.
    value = next(filter(None, msgspec.structs.astuple(named)), None)
    if value is not None:
        return _readable(value)
    every = _embedded(_ANY, params)
    if not isinstance(every, dict):
        return None
    return next((v for v in every.values() if isinstance(v, str) and v), None)


def _embedded(decoder: msgspec.json.Decoder, value: bytes | msgspec.Raw | str) -> Any:
    """JSON msgspec has already read as well formed (a field kept raw, or a record),
    decoded when a column needs it, where a raise would cost the whole file.

    Bytes that are not UTF-8 read as the row's `raw` will show them (\\xNN, logged when
    the batch is built). For `_ANY`, a number past a float's range (1e999) reads as a
    Decimal (`_WIDE`), and JSON no decoder holds (an integer of thousands of digits) as
    _UNREADABLE. A typed decoder (`_TARGETS`) raises ValidationError for a value of
    another type, as it always did, for its caller to handle.
    """
    try:
        return decoder.decode(value)
    except UnicodeDecodeError:  # only bytes raise it, so this recursion ends at once
        return _embedded(decoder, bytes(value).decode("utf-8", JSON_SAFE_ESCAPE))  # type: ignore[arg-type]
    except msgspec.ValidationError:
        if decoder is not _ANY:
            raise
        return _wide(value)


def _wide(value: bytes | msgspec.Raw | str) -> Any:
    if not isinstance(value, str):
        value = bytes(value).decode("utf-8", JSON_SAFE_ESCAPE)
    try:
        return _WIDE.decode(value)
    except msgspec.DecodeError:
        return _UNREADABLE


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


def outcome_of(view: RecordView | TypedView) -> str:
    if view.errorCode:
        return _text(view.errorCode) or "failure"
    if view.eventName == "ConsoleLogin" and view.responseElements != NULL:
        response = _embedded(_ANY, view.responseElements)
        if isinstance(response, dict) and response.get("ConsoleLogin") == "Failure":
            return "failure"
    return "success"


def host_of(identity: Identity | None) -> str | None:
    """Calls made with an instance profile carry the instance id as the session name."""
    if identity is not None and identity.principalId:
        session = str(identity.principalId).rpartition(":")[2]
        if session.startswith("i-") and session[2:].isalnum():
            return session
    return None


def to_row(
    raw: bytes, view: RecordView, evidence_id: str, number: int, errors: ErrorLog
) -> Row | None:
    """One record to one row: plain attribute reads and one tuple, no per-column dicts."""
    when = view.eventTime
    if not when:
        errors.add("record without eventTime", number)
        return None
    identity = view.userIdentity
    user = principal(identity)
    source = view.eventSource
    if source.__class__ is not str:
        source = _text(source) or "?"
    name = view.eventName
    if name.__class__ is not str:
        name = _text(name) or "?"
    target = target_of(view)
    src_ip = view.sourceIPAddress
    if src_ip is not None and src_ip.__class__ is not str:
        src_ip = _text(src_ip)
    error_code = view.errorCode
    if error_code is not None and error_code.__class__ is not str:
        error_code = _text(error_code)
    event_id = view.eventID
    # Positional, through tuple.__new__: a TimelineRow without NamedTuple's Python-level
    # __new__, which would cost this per-event hot path about 0.5 µs a row.
    return tuple.__new__(
        Row,
        (
            when if isinstance(when, str) else _text(when),
            TIME_DESC,
            SOURCE,
            ARTIFACT,
            host_of(identity),
            user,
            src_ip,
            f"{source}:{name}",
            target,
            error_code or outcome_of(view),
            messages.cloudtrail(
                user, source, name, target, src_ip, error_code, _text(view.errorMessage)
            ),
            evidence_id,
            (event_id if event_id.__class__ is str else _text(event_id))
            if event_id
            else hashlib.sha256(raw).hexdigest(),
            raw,
        ),
    )


def block_batches(block: Block, evidence_id: str, errors: ErrorLog) -> Iterator[pa.RecordBatch]:
    """`to_row` for a whole document of plain records, a column at a time.

    The same values as `to_row` gives each record (tests/test_cloudtrail_columns.py
    holds the two paths to one another); what it saves is the per-record call, which
    was most of the timeline's time on S3 delivery files. Converting Python values to
    Arrow was the next cost, so constant columns are repeated by Arrow, `raw` is the
    records' bytes joined once (`_joined_text`), and the promoted event source and name,
    error code and source IP are the lists the row columns are built from (`src_ip`'s
    is that column itself, converted once for both).
    """
    for start in range(0, len(block.raws), BATCH_ROWS):
        raws = block.raws[start : start + BATCH_ROWS]
        columns = block_columns(raws, block.views[start : start + BATCH_ROWS], evidence_id)
        first = block.first + start
        yield columns_to_batch(columns, list(range(first, first + len(raws))), errors)


def block_columns(
    raws: list[msgspec.Raw], views: list[TypedView], evidence_id: str
) -> list[Sequence[Any] | pa.Array]:
    """The timeline's columns for plain records (at most BATCH_ROWS), before Arrow checks
    and converts them (`columns_to_batch`); apart so bench/ingest_budget.py can time the
    two steps on their own."""
    count = len(raws)
    identities = [view.userIdentity for view in views]
    users = [
        None
        if identity is None
        else identity.arn or identity.userName or identity.principalId or identity.invokedBy
        or None
        for identity in identities
    ]  # fmt: skip
    hosts = [
        host_of(identity)  # type: ignore[arg-type]
        if identity is not None and identity.principalId and "i-" in identity.principalId
        else None
        for identity in identities
    ]
    sources = [view.eventSource for view in views]
    names = [view.eventName for view in views]
    src_ips = [view.sourceIPAddress for view in views]
    error_codes = [view.errorCode for view in views]
    targets = [_typed_target(view) for view in views]
    raw = _joined_text(raws)
    return [
        [view.eventTime for view in views],
        _repeated(TIME_DESC, count),
        _repeated(SOURCE, count),
        _repeated(ARTIFACT, count),
        hosts,
        users,
        src_ips,
        [
            f"{'?' if source is None else source}:{'?' if name is None else name}"
            for source, name in zip(sources, names, strict=True)
        ],
        targets,
        [code or outcome_of(view) for code, view in zip(error_codes, views, strict=True)],
        messages.cloudtrail_column(
            users,
            sources,
            names,
            targets,
            src_ips,
            error_codes,
            [view.errorMessage for view in views],
        ),
        _repeated(evidence_id, count),
        [
            view.eventID or hashlib.sha256(item).hexdigest()
            for view, item in zip(views, raws, strict=True)
        ],
        [bytes(item) for item in raws] if raw is None else raw,
        _repeated(PROMOTED_ARTIFACT, count),  # promoted_from, then the promoted fields
        sources,
        names,
        error_codes,
        src_ips,
        *promoted_columns(views, row_fields=False),
    ]


def _repeated(value: str, count: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), count)


def _joined_text(raws: list[msgspec.Raw]) -> pa.Array | None:
    """The records' bytes as one string column, built from one joined buffer and its
    offsets instead of a Python bytes object per record; None when any record is not
    UTF-8, for `columns_to_batch` to keep and log those bytes row by row."""
    data = b"".join(raws)
    if len(data) >= 1 << 31:  # past int32 offsets; a document is at most
        return None  # MAX_DOCUMENT_BYTES, so this only guards that bound moving
    offsets = pa.array([0, *itertools.accumulate(map(len, raws))], pa.int32())
    text = pa.StringArray.from_buffers(len(raws), offsets.buffers()[1], pa.py_buffer(data))
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return text


def promoted_columns(views: Sequence[TypedView | None], row_fields: bool = True) -> list[list[Any]]:
    """schema.PROMOTED_COLUMNS for typed views (None: a record not of CloudTrail's own
    types, whose promoted columns stay NULL and whose rules read `raw`). With
    `row_fields=False`, without promoted_from and the first four fields (event source
    and name, error code, source IP), whose lists `block_batches` already has.

    A boolean is "true"/"false" and a string itself: what DuckDB's json_transform gives
    for the path, so a rule reads the same value from the column as from `raw`.

    One comprehension per field, in schema.PROMOTED_FIELDS' order: 1.4 µs a record, where
    reading the paths generically (getattr per level, or msgspec's astuple and zip) took
    3.4-3.8. tests/test_cloudtrail_columns.py compares each column with DuckDB's read of
    its path in `raw`, so a field out of order fails there.
    """
    identities = [None if view is None else view.userIdentity for view in views]
    contexts = [None if identity is None else identity.sessionContext for identity in identities]
    attributes = [None if context is None else context.attributes for context in contexts]
    issuers = [None if context is None else context.sessionIssuer for context in contexts]
    leading = []
    if row_fields:
        leading = [
            [None if view is None else PROMOTED_ARTIFACT for view in views],
            [None if view is None else view.eventSource for view in views],
            [None if view is None else view.eventName for view in views],
            [None if view is None else view.errorCode for view in views],
            [None if view is None else view.sourceIPAddress for view in views],
        ]
    return [
        *leading,
        [None if view is None else view.userAgent for view in views],
        [None if view is None else view.recipientAccountId for view in views],
        [None if view is None else view.awsRegion for view in views],
        [None if view is None else view.eventType for view in views],
        [None if view is None else _flag(view.readOnly) for view in views],
        [None if view is None else _flag(view.sessionCredentialFromConsole) for view in views],
        [None if view is None else view.vpcEndpointId for view in views],
        [None if identity is None else identity.type for identity in identities],
        [None if identity is None else identity.arn for identity in identities],
        [None if identity is None else identity.accountId for identity in identities],
        [None if identity is None else identity.accessKeyId for identity in identities],
        [None if identity is None else identity.userName for identity in identities],
        [None if identity is None else identity.principalId for identity in identities],
        [None if identity is None else identity.invokedBy for identity in identities],
        [None if a is None else _flag(a.mfaAuthenticated) for a in attributes],
        [None if issuer is None else issuer.type for issuer in issuers],
        [None if issuer is None else issuer.arn for issuer in issuers],
        [None if issuer is None else issuer.userName for issuer in issuers],
    ]


def _flag(value: str | bool | None) -> str | None:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


def promoted_from_raw(columns: list[Sequence[Any]]) -> list[list[Any]]:
    """`promoted_columns` for rows built one at a time: each row's `raw` decoded again
    into a typed view, so a record gets the same promoted values whichever path read it."""
    views: list[TypedView | None] = []
    for artifact, raw in zip(columns[3], columns[-1], strict=True):
        views.append(_typed_view(raw) if artifact == ARTIFACT else None)
    return promoted_columns(views)


def _typed_view(raw: bytes | str) -> TypedView | None:
    """The record's typed view, read from the text its `raw` column will hold: bytes that
    are not UTF-8 as `\\xNN` (columns_to_batch keeps them so), so a promoted value is
    always what a reader of `raw` finds."""
    try:
        return _TYPED_VIEW.decode(raw)
    except UnicodeDecodeError:
        if isinstance(raw, str):
            return None
        return _typed_view(raw.decode("utf-8", JSON_SAFE_ESCAPE))
    except msgspec.DecodeError:
        return None  # a field of another type: its rules read `raw`


def _typed_target(view: TypedView) -> str | None:
    """`target_of` for a typed view."""
    if view.resources:
        arns = [resource.ARN for resource in view.resources if resource.ARN]
        if arns:
            return ", ".join(arns)
    return _parameter_target(view.requestParameters)


# Names a CloudTrail export goes by; `capture files --kind auto` takes any of them as
# CloudTrail, and otherwise looks for a `{"Records": ...}` document, plain or compressed.
NAME_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")


def recognise(paths: Sequence[Path]) -> int:
    if any(path.name.lower().endswith(NAME_SUFFIXES) for path in paths):
        return BY_NAME
    if any(sniff(path).format == "cloudtrail" for path in paths):
        return BY_CONTENT
    return NOT_MINE


register(
    Parser(
        name="cloudtrail",
        evidence_kinds=("cloudtrail",),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one CloudTrail record: an AWS API call, who made it, from where",
                (Logsource("aws", "cloudtrail"), Logsource("aws")),
            ),
        ),
        capture_kind="cloudtrail",
        recognise=recognise,
        priority=10,
    )
)
