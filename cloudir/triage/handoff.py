"""Handing a triage off: the result document to an SNS topic, the case folder to S3.

Triage runs with no person watching (a container started by EventBridge), so its output
has to leave the machine: a SOAR or a mailbox gets the result document through SNS, and
the case folder goes to a bucket the responder named, because the container's disk dies
with the task. Both are evidence handling, so both are strict:

* SNS takes at most 256 KiB. A document over that is never a reason to fail the hand-off
  (the alert would then reach nobody): a trimmed document is sent instead, lists cut to
  their first items and long strings shortened, with a `trimmed` member that says what
  was cut and where the whole document is (triage/result.json in the case).
* Every object is hashed before it leaves, and S3 is given that SHA-256
  (`x-amz-checksum-sha256`), so S3 stores exactly the bytes that were hashed or refuses
  them. An evidence file is first compared with the hash custody recorded for it: a file
  that changed since it was captured is not uploaded as if it were fine, it is reported,
  counted and recorded (`upload-refused`). Each object sent is a custody entry
  (`upload`: bucket, key, version id, the checksum S3 answered), and the run ends with
  `upload-complete` or `upload-incomplete`; custody.jsonl itself goes last.
* Files stream from disk (one part at a time is read by the HTTP client, never a whole
  file); large files go up in parts, each with its own SHA-256, so S3 checks each part.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir.aws import Aws, call, error_code
from cloudir.case import (
    CHUNK,
    PARTIAL_SUFFIX,
    Case,
    FileRecord,
    NotRegularFileError,
    file_kind,
    open_regular,
)
from cloudir.case_folder import CUSTODY_FILE, EVIDENCE_DIR, LOCK_FILE
from cloudir.custody_actions import CustodyAction
from cloudir.errors import CloudError, UsageError
from cloudir.progress import Reporter
from cloudir.safe_text import inert

# -- SNS ---------------------------------------------------------------------------------

SNS_MESSAGE_LIMIT = 256 * 1024
"""SNS's limit for one message, in bytes (UTF-8)."""

SNS_SUBJECT = "cloudir triage result"
FIFO_GROUP = "cloudir-triage"

# (items kept of each list, characters kept of each string), tried in turn until the
# document fits; then only the top-level scalars, then only the `trimmed` note.
TRIM_STEPS = ((50, 2048), (10, 512), (3, 160), (0, 80))
MAX_DEPTH = 24
CUTS_SHOWN = 40

_TOPIC_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):sns:"
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2}):(?P<account>\d{12}):"
    r"(?P<name>[A-Za-z0-9_-]{1,251}\.fifo|[A-Za-z0-9_-]{1,256})"
)


@dataclass(frozen=True)
class TopicArn:
    """An SNS topic ARN, checked for shape: the region it names is where Publish goes."""

    text: str
    partition: str
    region: str
    account: str
    name: str

    @property
    def fifo(self) -> bool:
        """A FIFO topic needs a message group (and a deduplication id) on every Publish."""
        return self.name.endswith(".fifo")


def parse_topic_arn(text: str) -> TopicArn:
    """The topic ARN `--notify sns:ARN` names; UsageError (one line) for any other text."""
    given = text.removeprefix("sns:") if text.startswith("sns:arn:") else text
    match = _TOPIC_ARN.fullmatch(given)
    if match is None:
        raise UsageError(
            f"--notify {inert(text, 120)!r} is not an SNS topic ARN; give "
            "sns:arn:aws:sns:REGION:ACCOUNT:TOPIC"
        )
    return TopicArn(given, **match.groupdict())


def notify_sns(aws: Aws, topic_arn: str, document: dict[str, Any]) -> str:
    """Publish the triage result document (JSON) to the topic; the MessageId SNS gave.

    A document over SNS's 256 KiB is sent trimmed (`sns_message`), never refused.
    CloudError (one line, naming sns:Publish) when SNS refuses or cannot be reached.
    """
    topic = parse_topic_arn(topic_arn)
    message = sns_message(document)
    request: dict[str, Any] = {"TopicArn": topic.text, "Message": message, "Subject": SNS_SUBJECT}
    if topic.fifo:
        request["MessageGroupId"] = FIFO_GROUP
        request["MessageDeduplicationId"] = hashlib.sha256(message.encode()).hexdigest()
    sns = aws.client("sns", topic.region)
    response = call("sns:Publish", sns.publish, **request)
    return str(response["MessageId"])


def sns_message(document: dict[str, Any], limit: int = SNS_MESSAGE_LIMIT) -> str:
    """The document as one JSON text of at most `limit` UTF-8 bytes.

    Whole when it fits. Otherwise lists are cut to their first items and long strings
    shortened, harder at each step, until it fits; every key stays, so the scope, the
    verdict, the counts and the report paths are still there. The `trimmed` member says
    that it was cut, how big the whole document was, and which lists and strings were
    cut (JSON paths).
    """
    whole = _dumps(document)
    size = len(whole.encode())
    if size <= limit:
        return whole
    for keep, chars in TRIM_STEPS:
        cuts: list[dict[str, Any]] = []
        trimmed = _trim(document, keep, chars, "$", cuts, 0)
        if not isinstance(trimmed, dict):  # a dict stays a dict; this is for mypy
            break
        trimmed["trimmed"] = _trim_note(size, limit, cuts)
        text = _dumps(trimmed)
        if len(text.encode()) <= limit:
            return text
    note = _trim_note(size, limit, [])
    note["note"] += "; only the document's top-level values are left"
    scalars: dict[str, Any] = {}
    used = len(_dumps({"trimmed": note}))  # ASCII: characters are bytes
    for key, value in document.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            name, short = _short(str(key), 80), _short(value, 80)
            used += len(_dumps(name)) + len(_dumps(short)) + 2  # ':' and ','
            if used > limit:
                break
            scalars[name] = short
    return _dumps({**scalars, "trimmed": note})


def _dumps(value: Any) -> str:
    # ASCII only: a lone surrogate from a mis-decoded name cannot make the text unsendable
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)


def _trim_note(size: int, limit: int, cuts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "note": (
            f"the whole document is {size} bytes, over SNS's {limit}-byte limit: lists were "
            "cut to their first items and long strings shortened; the whole document is "
            "triage/result.json in the case folder"
        ),
        "whole_bytes": size,
        "limit_bytes": limit,
        "cuts": cuts[:CUTS_SHOWN],
        "more_cuts": max(0, len(cuts) - CUTS_SHOWN),
    }


def _short(value: Any, chars: int) -> Any:
    if isinstance(value, str) and len(value) > chars:
        return value[: max(0, chars - 1)] + "…"
    return value


def _trim(
    value: Any, keep: int, chars: int, path: str, cuts: list[dict[str, Any]], depth: int
) -> Any:
    """A copy of `value` with lists cut to `keep` items and strings to `chars`; each cut
    is appended to `cuts` as {"path", "kept", "of"} (items, or characters for a string)."""
    if depth > MAX_DEPTH:
        cuts.append({"path": path, "kept": 0, "of": "nested deeper"})
        return None
    if isinstance(value, dict):
        return {
            _short(str(k), chars): _trim(v, keep, chars, f"{path}.{k}", cuts, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        if len(value) > keep:
            cuts.append({"path": path, "kept": keep, "of": len(value)})
        return [
            _trim(v, keep, chars, f"{path}[{i}]", cuts, depth + 1)
            for i, v in enumerate(value[:keep])
        ]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)
    if len(text) > chars:
        cuts.append({"path": path, "kept": chars, "of": len(text)})
        return _short(text, chars)
    return text


# -- S3 ----------------------------------------------------------------------------------

PART_SIZE = 64 << 20
"""Files over this go up in parts of (at least) this size; smaller ones in one PUT."""
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum number of parts
MAX_KEY_BYTES = 1024
CHECKSUM_REFUSED = frozenset({"BadDigest", "XAmzContentChecksumMismatch", "InvalidDigest"})
"""Error codes with which S3 refuses bytes that do not match the checksum sent."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_UNSAFE_PREFIX = re.compile(r"[\x00-\x1f\x7f\\?#]")


@dataclass(frozen=True)
class S3Destination:
    """Where `--upload s3://BUCKET[/PREFIX]` sends the case folder."""

    bucket: str
    prefix: str  # "" or "a/b", no slash at either end

    def folder(self, name: str) -> str:
        """The key prefix of one case folder: PREFIX/<case folder name>/."""
        return "/".join(p for p in (self.prefix, name) if p) + "/"


def parse_s3_url(text: str) -> S3Destination:
    """`s3://BUCKET[/PREFIX]`, checked strictly; UsageError (one line) for anything else.

    The bucket must be a valid S3 bucket name; the prefix must not hold empty, `.` or
    `..` segments, control characters, backslashes, `?` or `#`: a key with those is
    legal in S3 but a typing mistake here far more often than a wish.
    """

    def refuse(why: str) -> UsageError:
        return UsageError(
            f"--upload {inert(text, 120)!r}: {why}; give s3://BUCKET or s3://BUCKET/PREFIX"
        )

    if not text.startswith("s3://"):
        raise (refuse("not an s3:// URL"))
    bucket, _, prefix = text.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_LIKE.fullmatch(bucket):
        raise (refuse(f"{inert(bucket, 80)!r} is not a valid S3 bucket name"))
    prefix = prefix.rstrip("/")
    if prefix:
        if _UNSAFE_PREFIX.search(prefix):
            raise (refuse("the prefix holds a control character, '\\', '?' or '#'"))
        if any(seg in ("", ".", "..") for seg in prefix.split("/")):
            raise (refuse("the prefix has an empty, '.' or '..' segment"))
        if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES // 2:
            raise (refuse(f"the prefix is over {MAX_KEY_BYTES // 2} bytes"))
    return S3Destination(bucket, prefix)


@dataclass(frozen=True)
class UploadedObject:
    """One file of the case as it now is in S3."""

    path: str  # relative to the case folder
    key: str
    sha256: str  # hex, of the bytes read and sent
    bytes: int
    parts: int  # 1 for a single PUT
    version_id: str | None  # when the bucket is versioned
    checksum_sha256: str | None  # what S3 answered (base64; "...-N" for N parts)
    etag: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "key": self.key,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "parts": self.parts,
            "version_id": self.version_id,
            "checksum_sha256": self.checksum_sha256,
            "etag": self.etag,
        }


@dataclass
class UploadResult:
    """What `upload_case` did. `refused` files are case files NOT uploaded because their
    bytes are not what custody (or the hash taken before sending) says; `skipped` are
    things that are not the case's files (its lock, links, FIFOs, temporary files)."""

    bucket: str
    prefix: str  # the case folder's key prefix, ending in "/"
    uploaded: list[UploadedObject] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def destination(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.uploaded)

    @property
    def complete(self) -> bool:
        """Every file of the case went up as custody knows it."""
        return not self.refused

    def as_dict(self) -> dict[str, Any]:
        """For the result document: counts and the problems, not every object."""
        return {
            "destination": self.destination,
            "complete": self.complete,
            "uploaded": len(self.uploaded),
            "bytes": self.bytes,
            "refused": [{"path": p, "reason": r} for p, r in self.refused],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


class _Refused(Exception):
    """One file that must not go up; the message says why (never raised out of here),
    `detail` what custody's entry adds (the hashes that differ)."""

    def __init__(self, why: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(why)
        self.detail = detail or {}


@dataclass(frozen=True)
class _Hashed:
    sha256: str
    size: int
    parts: tuple[tuple[int, int, bytes], ...]  # (offset, length, raw SHA-256) per part


def upload_case(
    aws: Aws,
    case: Case,
    destination: str,
    report: Reporter,
    part_size: int = PART_SIZE,
) -> UploadResult:
    """Copy every file of the case folder to `destination` (s3://BUCKET[/PREFIX]) under
    PREFIX/<case folder name>/, each object's SHA-256 checked by S3 and recorded.

    Holds the case lock (re-entrant: the triage command already holds it), so nothing
    writes the case while it is copied. UsageError for a bad URL; CloudError (one line)
    when S3 refuses the upload itself (no bucket, no permission), after the custody
    entry that closes the run as incomplete. A refused file does not stop the run.
    """
    from cloudir.case_lock import hold

    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size {part_size} is under S3's minimum of {MIN_PART_SIZE}")
    dest = parse_s3_url(destination)
    name = case.root.resolve().name
    result = UploadResult(dest.bucket, dest.folder(name))
    s3 = aws.client("s3")
    with hold(case.root):
        recorded = case.recorded_files()
        files, skipped, unlisted = _case_files(case.root)
        result.skipped.extend(skipped)
        for path, why in skipped:
            if path != LOCK_FILE:
                report(f"not uploaded (not case data): {inert(path)}: {inert(why)}")
        result.refused.extend(unlisted)
        for path, why in unlisted:
            report(f"NOT uploaded: {inert(path)}: {inert(why)}")
            _record_refused(case, result, path, why, {})
        closed = False
        try:
            for rel in files:
                if rel == CUSTODY_FILE:
                    closed = True
                    _close(case, result, report)
                _upload_one(s3, case, result, rel, recorded.get(rel), part_size, report)
        except BaseException as exc:
            if not closed:
                _close(case, result, report, stopped=exc)
            raise
    return result


def _close(
    case: Case, result: UploadResult, report: Reporter, stopped: BaseException | None = None
) -> None:
    """The run's closing custody entry, written before custody.jsonl itself goes up, so
    the copy in S3 holds it (the local log then gains the `upload` of custody.jsonl)."""
    summary = (
        f"{len(result.uploaded)} objects ({result.bytes} bytes) copied to "
        f"{result.destination}, {len(result.refused)} refused, {len(result.skipped)} skipped"
    )
    if stopped is None:
        summary += f"; {CUSTODY_FILE} follows as the last object"
    else:
        summary += f"; stopped by {type(stopped).__name__}: {stopped}"
    if result.complete and stopped is None:
        case.record(CustodyAction.UPLOAD_COMPLETE, None, [], note=summary, source=result.as_dict())
    else:
        case.record(
            CustodyAction.UPLOAD_INCOMPLETE, None, [], note=summary, source=result.as_dict()
        )
    report(inert(summary))


def _record_refused(
    case: Case, result: UploadResult, rel: str, why: str, detail: dict[str, Any]
) -> None:
    source = {"bucket": result.bucket, "key": result.prefix + rel, "path": rel, **detail}
    case.record(
        CustodyAction.UPLOAD_REFUSED,
        _evidence_id(rel),
        [],
        note=f"{rel} not copied to {result.destination}: {why}",
        source=source,
    )


def _evidence_id(rel: str) -> str | None:
    parts = rel.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == EVIDENCE_DIR else None


def _case_files(root: Path) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The case's regular files (relative, sorted, custody.jsonl last), what was skipped
    and why, and what could not even be listed (refused: it may hold case files)."""
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    unlisted: list[tuple[str, str]] = []

    def cannot_list(exc: OSError) -> None:
        where = Path(exc.filename or root)
        rel = where.relative_to(root).as_posix() if where != root else "."
        unlisted.append((rel, f"cannot be listed ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            if os.path.islink(here / name):
                dirnames.remove(name)
                skipped.append(((here / name).relative_to(root).as_posix(), "a symbolic link"))
        for name in sorted(filenames):
            rel = (here / name).relative_to(root).as_posix()
            try:
                mode = os.lstat(here / name).st_mode
            except OSError as exc:
                unlisted.append((rel, f"cannot be read ({exc.strerror or exc})"))
                continue
            if rel == LOCK_FILE:
                skipped.append((rel, "the case lock (who holds the case now), not case data"))
            elif not stat.S_ISREG(mode):
                skipped.append((rel, f"{file_kind(mode)}, not a regular file; never followed"))
            elif name.endswith(PARTIAL_SUFFIX):
                skipped.append((rel, "an incomplete temporary file"))
            else:
                files.append(rel)
    files.sort(key=lambda rel: (rel == CUSTODY_FILE, rel))
    return files, skipped, unlisted


def _upload_one(
    s3: Any,
    case: Case,
    result: UploadResult,
    rel: str,
    recorded: FileRecord | None,
    part_size: int,
    report: Reporter,
) -> None:
    key = result.prefix + rel
    try:
        _check_key(key)
        try:
            fd = open_regular(case.root / rel)
        except NotRegularFileError as exc:
            raise _Refused(f"became {exc.kind} while the case was copied") from None
        except OSError as exc:
            raise _Refused(f"cannot be read ({exc.strerror or exc})") from None
        with os.fdopen(fd, "rb") as fh:
            hashed = _hash(fh.fileno(), _part_size(os.fstat(fh.fileno()).st_size, part_size))
            if rel.startswith(EVIDENCE_DIR + "/"):
                _check_custody(rel, hashed, recorded)
            obj = _send(s3, result.bucket, key, rel, fh.fileno(), hashed, case)
    except _Refused as refused:
        why = str(refused)
        result.refused.append((rel, why))
        report(f"NOT uploaded: {inert(rel)}: {inert(why)}")
        _record_refused(case, result, rel, why, refused.detail)
        return
    result.uploaded.append(obj)
    case.record(
        CustodyAction.UPLOAD,
        _evidence_id(rel),
        [],
        note=f"{rel} copied to s3://{result.bucket}/{key}",
        source={"bucket": result.bucket, **obj.as_dict()},
    )


def _check_key(key: str) -> None:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Refused("its name is not UTF-8, and an S3 key must be") from None
    if size > MAX_KEY_BYTES:
        raise _Refused(f"its key would be {size} bytes, over S3's {MAX_KEY_BYTES}")


def _check_custody(rel: str, hashed: _Hashed, recorded: FileRecord | None) -> None:
    """An evidence file goes up only as custody recorded it."""
    detail = {
        "sha256": hashed.sha256,
        "bytes": hashed.size,
        "recorded_sha256": None if recorded is None else recorded.sha256,
        "recorded_bytes": None if recorded is None else recorded.bytes,
    }
    if recorded is None:
        raise _Refused("an evidence file custody never recorded (cloudir verify)", detail)
    if (recorded.sha256, recorded.bytes) != (hashed.sha256, hashed.size):
        raise _Refused(
            f"SHA-256 {hashed.sha256} ({hashed.size} bytes) is not the {recorded.sha256} "
            f"({recorded.bytes} bytes) custody recorded: changed since capture (cloudir verify)",
            detail,
        )


def _part_size(size: int, wanted: int) -> int | None:
    """None for one PUT; else the part size (at least `wanted`, few enough parts)."""
    if size <= wanted:
        return None
    least = -(-size // MAX_PARTS)
    return max(wanted, -(-least // (1 << 20)) * (1 << 20))


def _hash(fd: int, part_size: int | None) -> _Hashed:
    """The whole file's SHA-256 and, for a multipart upload, each part's, in one read."""
    whole = hashlib.sha256()
    parts: list[tuple[int, int, bytes]] = []
    offset = 0
    step = part_size or (1 << 62)
    while True:
        part = hashlib.sha256()
        length = 0
        while length < step:
            chunk = os.pread(fd, min(CHUNK, step - length), offset + length)
            if not chunk:
                break
            whole.update(chunk)
            part.update(chunk)
            length += len(chunk)
        if length or not parts:
            parts.append((offset, length, part.digest()))
        offset += length
        if length < step:
            break
    return _Hashed(whole.hexdigest(), offset, tuple(parts))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _metadata(sha256: str, case: Case) -> dict[str, str]:
    meta = {"sha256": sha256}
    case_id = case.info.get("id")
    if isinstance(case_id, str) and case_id.isascii() and case_id.isprintable():
        meta["cloudir-case"] = case_id[:200]
    return meta


def _send(
    s3: Any, bucket: str, key: str, rel: str, fd: int, hashed: _Hashed, case: Case
) -> UploadedObject:
    """PUT (or multipart) the hashed bytes with their SHA-256; S3 refuses other bytes."""
    common = {"Bucket": bucket, "Key": key}
    meta = _metadata(hashed.sha256, case)
    try:
        if len(hashed.parts) == 1:
            offset, length, digest = hashed.parts[0]
            sent = _b64(digest)
            resp = call(
                "s3:PutObject",
                s3.put_object,
                **common,
                Body=FileSlice(fd, offset, length),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sent,
                Metadata=meta,
            )
        else:
            sent = _b64(hashlib.sha256(b"".join(d for _, _, d in hashed.parts)).digest())
            resp = _multipart(s3, common, fd, hashed, meta)
    except CloudError as exc:
        if error_code(exc) in CHECKSUM_REFUSED:
            raise _Refused(
                "S3 refused the bytes: they are not those hashed just before (the file "
                f"changed while it was read): {exc}"
            ) from None
        raise
    answered = resp.get("ChecksumSHA256")
    if answered is not None and str(answered).split("-")[0] != sent:
        raise _Refused(f"S3 answered checksum {answered} for {sent} sent")
    return UploadedObject(
        path=rel,
        key=key,
        sha256=hashed.sha256,
        bytes=hashed.size,
        parts=len(hashed.parts),
        version_id=_version(resp.get("VersionId")),
        checksum_sha256=None if answered is None else str(answered),
        etag=None if resp.get("ETag") is None else str(resp["ETag"]),
    )


def _version(value: Any) -> str | None:
    return None if value in (None, "null") else str(value)


def _multipart(
    s3: Any, common: dict[str, str], fd: int, hashed: _Hashed, meta: dict[str, str]
) -> dict[str, Any]:
    started = call(
        "s3:PutObject",
        s3.create_multipart_upload,
        **common,
        ChecksumAlgorithm="SHA256",
        Metadata=meta,
    )
    upload_id = started["UploadId"]
    try:
        parts = []
        for number, (offset, length, digest) in enumerate(hashed.parts, 1):
            resp = call(
                "s3:PutObject",
                s3.upload_part,
                **common,
                UploadId=upload_id,
                PartNumber=number,
                Body=FileSlice(fd, offset, length),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(digest),
            )
            parts.append(
                {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": _b64(digest)}
            )
        done: dict[str, Any] = call(
            "s3:PutObject",
            s3.complete_multipart_upload,
            **common,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
        return done
    except BaseException:
        with contextlib.suppress(CloudError):  # the parts would otherwise be billed forever
            call(
                "s3:AbortMultipartUpload",
                s3.abort_multipart_upload,
                **common,
                UploadId=upload_id,
            )
        raise


class FileSlice(io.RawIOBase):
    """`length` bytes of an open file from `offset`, as a seekable stream: the HTTP
    client reads it block by block (and seeks back to retry), so a part is never held
    in memory. pread keeps slices of one descriptor independent of each other."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._length

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset + self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base: Callable[[], int] = {
            io.SEEK_SET: lambda: 0,
            io.SEEK_CUR: lambda: self._pos,
            io.SEEK_END: lambda: self._length,
        }[whence]
        self._pos = max(0, base() + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos
