"""Evidence that stays in S3: a manifest of pinned object versions, and reading exactly them.

An organization's trail can be hundreds of GB a month; copying it into a case on a laptop
is the step `capture cloudtrail --manifest` leaves out. The case then holds, instead of
the objects, a manifest: one JSON line per object version (bucket, key, VersionId, ETag,
size), hashed into custody like any evidence file. A version of an S3 object never
changes, so the manifest names the bytes as surely as a copy would, for as long as the
bucket keeps that version (versioning, Object Lock, lifecycle rules are the bucket
owner's to keep).

Reading is pinned three ways: `GetObject` asks for the recorded VersionId, is conditional
on the recorded ETag (`IfMatch`), and the answer must be the recorded size, byte for
byte. Anything else is not the evidence (a version deleted, an object overwritten in an
unversioned bucket, a short answer) and becomes a named, counted evidence problem, never
rows from other bytes. Both engines read through `read_pinned`: the DuckDB path's worker
processes and the Spark executors.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloudir.aws import Aws, AwsOptions

MANIFEST_SUFFIX: Final = ".s3-manifest.jsonl"
NULL_VERSION: Final = "null"  # S3's VersionId of an object written while versioning was off
MAX_PINNED_BYTES: Final = 1 << 30  # read in one piece; a CloudTrail file is a few MB
READ_CHUNK: Final = 1 << 20
READ_AHEAD: Final = 8  # pinned reads in flight per parser process or Spark task

# errors.jsonl kinds of a pinned read that failed (docs/DESIGN.md)
MISSING: Final = "missing"  # the version (or the key) is gone
CHANGED: Final = "changed"  # S3 answered with other bytes than the manifest pins
UNREADABLE: Final = "unreadable"  # access denied, network, throttled past retries


def is_manifest(path: Path | str) -> bool:
    return str(path).endswith(MANIFEST_SUFFIX)


@dataclass(frozen=True)
class PinnedObject:
    """One object version the case holds by reference."""

    bucket: str
    key: str
    version_id: str
    etag: str  # without quotes
    size: int
    last_modified: str | None = None  # ISO 8601 UTC, as listed
    region: str | None = None  # the bucket's region

    @property
    def uri(self) -> str:
        """How errors.jsonl and the report name it: the version is part of the name."""
        return f"s3://{self.bucket}/{self.key}?versionId={self.version_id}"

    def request(self) -> dict[str, Any]:
        """GetObject's and HeadObject's parameters that pin this version: the VersionId
        (none for `null`: S3 takes no version there), and the ETag as a precondition."""
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key,
            "IfMatch": f'"{self.etag}"',
        }
        if self.version_id != NULL_VERSION:
            request["VersionId"] = self.version_id
        return request

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "last_modified": self.last_modified,
            "region": self.region,
        }

    @classmethod
    def from_dict(cls, entry: Any) -> PinnedObject:
        """A manifest line, checked: a manifest is evidence and may have been edited."""
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
        text = {name: entry.get(name) for name in ("bucket", "key", "version_id", "etag")}
        for name, value in text.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} is missing or not text")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size is missing or not a whole number of bytes")
        optional = {name: entry.get(name) for name in ("last_modified", "region")}
        for name, value in optional.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} is not text")
        return cls(size=size, **text, **optional)  # type: ignore[arg-type]


def manifest_bytes(objects: Iterable[PinnedObject]) -> bytes:
    """The manifest file: one object per line, keys sorted, in the order given."""
    lines = [json.dumps(o.as_dict(), sort_keys=True, ensure_ascii=True) for o in objects]
    return "".join(line + "\n" for line in lines).encode()


def read_manifest(path: Path) -> tuple[list[PinnedObject], list[tuple[int, str]]]:
    """The pinned objects, and each line that is not one as (line number, why)."""
    pinned: list[PinnedObject] = []
    bad: list[tuple[int, str]] = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                pinned.append(PinnedObject.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
                bad.append((number, f"not a manifest entry: {exc}"))
    return pinned, bad


class PinnedReadError(Exception):
    """The pinned version could not be read as recorded; `kind` says how (errors.jsonl)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def read_pinned(
    pinned: PinnedObject, options: AwsOptions | None = None, client: Any = None
) -> bytes:
    """Exactly the version the manifest pins, or PinnedReadError. `client`: an S3 client
    to use instead of this process's own for `options` (a test's stubbed one)."""
    if pinned.size > MAX_PINNED_BYTES:
        raise PinnedReadError(
            UNREADABLE,
            f"{pinned.size} bytes: larger than the {MAX_PINNED_BYTES} a pinned read takes "
            "in one piece; capture it into the case instead (without --manifest)",
        )
    client = client or _s3_client(options or AwsOptions(), pinned.region)
    try:
        resp = client.get_object(**pinned.request())
    except Exception as exc:
        raise _read_failure(exc, pinned) from exc
    body = resp["Body"]
    try:
        etag = str(resp.get("ETag", "")).strip('"')
        if etag != pinned.etag:
            raise PinnedReadError(
                CHANGED, f"S3 answered ETag {etag or 'none'}; the manifest pins {pinned.etag}"
            )
        version = resp.get("VersionId") or NULL_VERSION
        if version != pinned.version_id:
            raise PinnedReadError(
                CHANGED, f"S3 answered version {version}; the manifest pins {pinned.version_id}"
            )
        data = bytearray()
        for chunk in body.iter_chunks(READ_CHUNK):
            data += chunk
            if len(data) > pinned.size:
                break
    except PinnedReadError:
        raise
    except Exception as exc:  # the connection dropped mid-body
        raise PinnedReadError(UNREADABLE, f"read failed: {type(exc).__name__}: {exc}") from exc
    finally:
        body.close()
    if len(data) != pinned.size:
        raise PinnedReadError(
            CHANGED,
            f"S3 answered {len(data)}{'+' if len(data) > pinned.size else ''} bytes; "
            f"the manifest pins {pinned.size}",
        )
    return bytes(data)


def read_ahead(
    pins: Iterable[PinnedObject], options: AwsOptions | None = None, depth: int = READ_AHEAD
) -> Generator[bytes | PinnedReadError, None, None]:
    """Each pin's bytes (or why not), in order, with up to `depth` reads in flight.

    A GET costs tens of milliseconds of waiting and a CloudTrail file milliseconds of
    parsing: one read at a time would leave a parser process (or a Spark task) idle most
    of the time. Memory stays bounded: at most `depth` objects are held ahead.
    """

    def read(pinned: PinnedObject) -> bytes | PinnedReadError:
        try:
            return read_pinned(pinned, options)
        except PinnedReadError as exc:
            return exc

    queue = iter(pins)
    with ThreadPoolExecutor(max_workers=max(1, depth)) as pool:
        pending = deque(pool.submit(read, p) for p in itertools.islice(queue, max(1, depth)))
        while pending:
            done = pending.popleft()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.submit(read, following))
            yield done.result()


def check_pinned(pinned: PinnedObject, options: AwsOptions | None = None) -> None:
    """That S3 still holds the pinned version as recorded (HeadObject: no bytes read), or
    PinnedReadError saying how it does not. `verify --s3`'s check."""
    client = _s3_client(options or AwsOptions(), pinned.region)
    try:
        resp = client.head_object(**pinned.request())
    except Exception as exc:
        raise _read_failure(exc, pinned) from exc
    etag = str(resp.get("ETag", "")).strip('"')
    size = resp.get("ContentLength")
    if etag != pinned.etag or size != pinned.size:
        raise PinnedReadError(
            CHANGED,
            f"S3 holds ETag {etag or 'none'}, {size} bytes; the manifest pins "
            f"{pinned.etag}, {pinned.size} bytes",
        )


@functools.lru_cache(maxsize=16)
def _s3_client(options: AwsOptions, region: str | None) -> Any:
    """One client per process, options and region: worker processes and Spark executors
    read many objects each, and a client costs milliseconds to build."""
    return Aws(options).client("s3", region)


def _read_failure(exc: Exception, pinned: PinnedObject) -> PinnedReadError:
    """Why the GET failed, in the errors.jsonl kind a responder acts on."""
    from cloudir.safe_text import inert

    error = getattr(exc, "response", {}).get("Error", {})
    code = str(error.get("Code", ""))
    if code in ("NoSuchVersion", "NoSuchKey", "404"):
        return PinnedReadError(
            MISSING,
            f"{code}: the version the manifest pins is gone from S3 (deleted, or expired by "
            "a lifecycle rule)",
        )
    if code in ("PreconditionFailed", "412"):
        return PinnedReadError(
            CHANGED, f"its ETag is no longer {pinned.etag}: overwritten since the manifest"
        )
    if code:
        return PinnedReadError(UNREADABLE, inert(f"{code}: {error.get('Message', '')}", 300))
    return PinnedReadError(UNREADABLE, inert(f"{type(exc).__name__}: {exc}", 300))
