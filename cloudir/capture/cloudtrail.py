"""CloudTrail capture: the trail's S3 objects as delivered, or LookupEvents pages.

S3 listing follows CloudTrail's key layout
(`<prefix>/AWSLogs/[o-org/]<account>/CloudTrail/<region>/YYYY/MM/DD/<file>`) and lists
only the day folders the window needs: a trail bucket can hold years of logs and a
responder needs the last days now. Objects keep their original bytes; each one gets
its own custody entry with the S3 key, size, ETag, VersionId and SHA-256.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudir.aws import Aws, call, keep_body
from cloudir.case import Case, FileRecord
from cloudir.custody_actions import CustodyAction, read_action
from cloudir.errors import CloudError, EvidenceError, UsageError
from cloudir.evidence_item import EvidenceItem, ItemTally
from cloudir.progress import Counter, Reporter
from cloudir.s3_key_names import (  # noqa: F401 - the names every S3 capture gives keys
    evidence_name_for_key,
    key_for_evidence_name,
    version_name,
)
from cloudir.timewindow import Window

_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
_FILE_TIME = re.compile(r"_(\d{8}T\d{4})Z_")
SLACK_BEFORE = timedelta(minutes=15)
# A file is named for its delivery, which is always after its events and usually within
# 15 minutes, but AWS promises no bound: look half a day past the window's end.
SLACK_AFTER = timedelta(hours=12)
LOOKUP_MIN_INTERVAL = 0.6  # LookupEvents allows 2 requests/second per account and region


@dataclass(frozen=True)
class LogPrefix:
    """One account's CloudTrail folder in the bucket."""

    account: str
    organization: str | None
    prefix: str  # ends with "CloudTrail/"


@dataclass(frozen=True)
class LogObject:
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    name: str  # where it goes in the item: logs/YYYY/MM/DD/<file>, one name per key


@dataclass
class ItemResult(ItemTally):
    """One account/region folder (or one region's LookupEvents) and what this run got:
    the item's own tally, shown as the `--json` item."""

    item: EvidenceItem
    account: str
    region: str
    listed: int = 0  # objects listed (S3), pages read (LookupEvents)
    lookup_filter: dict[str, str] | None = None  # the LookupAttributes entry, when filtered

    @property
    def rewritten(self) -> list[str]:
        """Objects changed since they were captured: the new version is taken beside."""
        return self.item.notes

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "account": self.account,
            "region": self.region,
            "listed": self.listed,
            "captured": self.captured,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "failed": self.failed,
            "rewritten": self.rewritten,
            "resumed": self.item.resumed,
        } | ({"filter": self.lookup_filter} if self.lookup_filter else {})


def resolve_trail(aws: Aws, trail: str) -> tuple[str, str]:
    """The bucket and key prefix a trail delivers to (DescribeTrails)."""
    client = aws.client("cloudtrail")
    resp = call("cloudtrail:DescribeTrails", client.describe_trails, trailNameList=[trail])
    # Only the trail asked for: an endpoint that ignores trailNameList (moto does) must
    # not hand back another trail's bucket as this one's.
    trails = [t for t in resp.get("trailList", []) if trail in (t.get("Name"), t.get("TrailARN"))]
    if not trails:
        raise UsageError(f"no trail named {trail!r} in {aws.region}; check --region")
    found = trails[0]
    if not found.get("S3BucketName"):
        raise UsageError(f"trail {trail!r} has no S3 bucket; use --lookup instead")
    return found["S3BucketName"], found.get("S3KeyPrefix") or ""


def _common_prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter="/"
    )
    found: list[str] = []
    listed: list[dict[str, Any]] = call(f"s3:ListObjectsV2 s3://{bucket}/{prefix}", list, pages)
    for page in listed:
        found.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return found


def _last_part(prefix: str) -> str:
    return prefix.rstrip("/").rsplit("/", 1)[-1]


def discover_accounts(s3: Any, bucket: str, prefix: str, accounts: list[str]) -> list[LogPrefix]:
    """Accounts under `AWSLogs/`, looking one level into organization folders."""
    base = (prefix.strip("/") + "/" if prefix.strip("/") else "") + "AWSLogs/"
    found: list[LogPrefix] = []
    for sub in _common_prefixes(s3, bucket, base):
        name = _last_part(sub)
        if _ORG.match(name):
            for acct_prefix in _common_prefixes(s3, bucket, sub):
                acct = _last_part(acct_prefix)
                if _ACCOUNT.match(acct):
                    found.append(LogPrefix(acct, name, f"{acct_prefix}CloudTrail/"))
        elif _ACCOUNT.match(name):
            found.append(LogPrefix(name, None, f"{sub}CloudTrail/"))
    if accounts:
        found = [p for p in found if p.account in accounts]
    if not found:
        wanted = f" for account(s) {', '.join(accounts)}" if accounts else ""
        raise UsageError(f"no CloudTrail logs under s3://{bucket}/{base}{wanted}")
    return found


def discover_regions(s3: Any, bucket: str, log_prefix: LogPrefix, regions: list[str]) -> list[str]:
    names = [_last_part(p) for p in _common_prefixes(s3, bucket, log_prefix.prefix)]
    return [n for n in names if not regions or n in regions]


def list_day_objects(
    s3: Any, bucket: str, region_prefix: str, window: Window
) -> Iterator[LogObject]:
    """One listing per day folder; only files named for a time far outside the window are
    left. Anything else in a day folder is taken, whatever its name: an object skipped
    for its name would be a place to hide a log."""
    listing = s3.get_paginator("list_objects_v2")
    for page in day_pages(listing, "ListObjectsV2", bucket, region_prefix, window):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if named_outside(key, window):
                continue
            yield LogObject(
                key,
                obj["Size"],
                obj.get("ETag", "").strip('"'),
                obj.get("LastModified"),
                evidence_name_for_key(key.removeprefix(region_prefix)),
            )


def day_pages(
    paginator: Any, operation: str, bucket: str, region_prefix: str, window: Window
) -> Iterator[dict[str, Any]]:
    """The listing pages (a ListObjectsV2 or ListObjectVersions `paginator`, named at the
    call so tests/test_triage_policy.py sees the operation) of every day folder the window
    needs, widened by the delivery slack."""
    for day in window.days(SLACK_BEFORE, SLACK_AFTER):
        day_prefix = f"{region_prefix}{day:%Y/%m/%d}/"
        pages = paginator.paginate(Bucket=bucket, Prefix=day_prefix)
        listed: list[dict[str, Any]] = call(
            f"s3:{operation} s3://{bucket}/{day_prefix}", list, pages
        )
        yield from listed


def named_outside(key: str, window: Window) -> bool:
    """True for a file whose delivery time in its name is far outside the window."""
    stamp = _FILE_TIME.search(key.rsplit("/", 1)[-1])
    if not stamp:
        return False
    moment = datetime.strptime(stamp.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)
    return not window.contains(moment, SLACK_BEFORE, SLACK_AFTER)


def capture_s3(
    case: Case,
    aws: Aws,
    bucket: str,
    prefix: str,
    accounts: list[str],
    regions: list[str],
    window: Window,
    workers: int,
    identity: dict[str, str],
    report: Reporter,
    on_progress: Counter | None = None,
) -> list[ItemResult]:
    """Capture every log file the window needs, one evidence item per account and region.

    `on_progress` hears (files done, files planned); the caller draws it, if at all.
    """
    s3 = aws.client("s3")
    # Every item opened ends on the record: a listing that fails for a later account
    # closes the ones already opened as incomplete.
    with contextlib.ExitStack() as items:
        plan = _open_items(case, s3, bucket, prefix, accounts, regions, window, identity, items)
        total = sum(len(objects) for _, objects in plan)
        report(f"{total} log files in {len(plan)} account/region folder(s) for the window")
        fetch_plan(case, s3, [(r, objects, bucket) for r, objects in plan], window, workers,
                   on_progress)  # fmt: skip
    return [result for result, _ in plan]


def fetch_plan(
    case: Case,
    s3: Any,
    plan: list[tuple[ItemResult, list[LogObject], str]],
    window: Window,
    workers: int,
    on_progress: Counter | None = None,
) -> None:
    """Fetch every listed object into its open item (result, objects, bucket), in
    parallel, and close each item: complete when every object is held, incomplete (and
    resumable) otherwise, also when interrupted. Shared by every S3 log capture."""
    total = sum(len(objects) for _, objects, _ in plan)
    if on_progress:
        on_progress(0, total)
    recorded = case.recorded_files()
    etags = _held_etags(case)
    folds = folds_case(case)
    finished = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                pool.submit(_fetch_one, case, s3, bucket, obj, result.item, recorded, etags)
                for result, objects, bucket in plan
                for obj in _without_case_twins(case, result.item, objects, recorded, folds)
            ]
            try:
                for done_count, _ in enumerate(as_completed(futures), 1):
                    if on_progress:
                        on_progress(done_count, total)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running downloads finish
                raise
        finished = True
    finally:
        for result, _, _ in plan:
            note = result.item.summary(result.item) + ("" if finished else "; interrupted")
            result.item.finish(
                note,
                complete=finished and not result.failed,
                source={"window": window.as_dict()},
            )


def _open_items(
    case: Case,
    s3: Any,
    bucket: str,
    prefix: str,
    accounts: list[str],
    regions: list[str],
    window: Window,
    identity: dict[str, str],
    items: contextlib.ExitStack,
    lister: Callable[[Any, str, str, Window], Iterator[Any]] = list_day_objects,
    mode: str | None = None,
) -> list[tuple[ItemResult, list[Any]]]:
    """One open item per account and region folder, with the objects the window needs
    (`lister`'s: copies list objects, a manifest lists versions). A `mode` other than a
    copy is part of the item's source, so a manifest never resumes into a copy's item."""
    plan: list[tuple[ItemResult, list[Any]]] = []
    for log_prefix in discover_accounts(s3, bucket, prefix, accounts):
        for region in discover_regions(s3, bucket, log_prefix, regions):
            objects = list(lister(s3, bucket, f"{log_prefix.prefix}{region}/", window))
            source: dict[str, Any] = {
                "type": "s3",
                "bucket": bucket,
                "prefix": f"{log_prefix.prefix}{region}/",
                "account": log_prefix.account,
                "organization": log_prefix.organization,
                "region": region,
            }
            if mode:
                source["mode"] = mode
            # The same folder captured again (even with a later relative --start) resumes
            # into the item that already holds it.
            evidence_id = case.item_with_source(source) or case.unique_evidence_id(
                f"cloudtrail-{log_prefix.account}-{region}-{window.label()}"
                + (f"-{mode}" if mode else "")
            )
            meta = {
                "kind": "cloudtrail",
                "source": source,
                "window": window.as_dict(),
                "caller_identity": identity,
            }
            summary = functools.partial(_s3_summary, bucket, len(objects))
            item = items.enter_context(case.item(evidence_id, meta, summary=summary))
            plan.append((ItemResult(item, log_prefix.account, region, len(objects)), objects))
    if not plan:
        raise UsageError(f"no CloudTrail region folders match in s3://{bucket}/{prefix}")
    return plan


def _s3_summary(bucket: str, listed: int, item: EvidenceItem) -> str:
    return (
        f"s3://{bucket}: {item.captured} captured, {item.skipped} already held, "
        f"{len(item.problems)} failed of {listed} listed"
    )


def folds_case(case: Case) -> bool:
    """True on a case-insensitive file system (macOS and Windows by default), where
    `A.json` and `a.json` are one file: the case's `evidence` folder answers to
    `EVIDENCE` too."""
    evidence = case.evidence_dir("-").parent
    try:
        return os.path.samefile(evidence, evidence.with_name(evidence.name.upper()))
    except OSError:
        return False


def _without_case_twins(
    case: Case,
    item: EvidenceItem,
    objects: list[LogObject],
    recorded: dict[str, FileRecord],
    folds: bool,
) -> list[LogObject]:
    """On a file system that folds case, keys whose names differ only in case would share
    one file: the first (or the one already held) is fetched, each other one is a named
    failure. On a case-sensitive file system every name is its own file."""
    if not folds:
        return objects
    base = case.relpath(case.evidence_dir(item.evidence_id)) + "/"
    taken = {
        path[len(base) :].lower(): path[len(base) :] for path in recorded if path.startswith(base)
    }
    kept = []
    for obj in objects:
        other = taken.setdefault(obj.name.lower(), obj.name)
        if other == obj.name:
            kept.append(obj)
        else:
            item.problem(
                f"{obj.key}: its name differs from {other!r} only in case, and this "
                "file system does not tell them apart; capture into a case on a "
                "case-sensitive file system"
            )
    return kept


def _fetch_one(
    case: Case,
    s3: Any,
    bucket: str,
    obj: LogObject,
    item: EvidenceItem,
    recorded: dict[str, FileRecord],
    etags: dict[str, str],
) -> None:
    """Fetch one object; any failure is counted against the item, never raised.

    Only the object exactly as listed becomes evidence: the GET is pinned to the listed
    ETag and the bytes must add up to the listed size. Anything else (replaced since the
    listing, a short or padded answer) is a named failure, nothing is recorded, the item
    stays capture-incomplete, and the next run fetches the object again.
    """
    note = ""
    try:
        if case.is_captured(item.evidence_id, obj.name, recorded):
            held_etag = etags.get(case.relpath(case.target_path(item.evidence_id, obj.name)))
            if held_etag in (None, obj.etag):
                item.skip()
                return
            # Rewritten since it was captured: the held copy stays, the new version is
            # taken beside it and named, since a rewritten log is itself a finding.
            note = f"rewritten since it was captured: the case holds ETag {held_etag} at {obj.name}"
            item.note(f"{obj.key}: {note}, now ETag {obj.etag}")
            obj = replace(obj, name=version_name(obj.etag, obj.name))
            if case.is_captured(item.evidence_id, obj.name, recorded):
                item.skip()
                return
        resp = _get_as_listed(s3, bucket, obj)
        chunks = resp["Body"].iter_chunks(1 << 20)
        item.store(
            obj.name,
            chunks,
            expected_bytes=obj.size,
            source=_object_source(bucket, obj, resp),
            note=note,
        )
    except Exception as exc:  # one object's failure must not stop the others
        item.problem(f"{obj.key}: {_failure(exc, obj)}")


def _object_source(bucket: str, obj: LogObject, resp: dict[str, Any]) -> dict[str, Any]:
    """Custody's record of the object as S3 answered the GET."""
    modified = resp.get("LastModified") or obj.last_modified
    return {
        "type": "s3",
        "bucket": bucket,
        "key": obj.key,
        "size": obj.size,
        "etag": resp.get("ETag", obj.etag).strip('"'),
        "version_id": resp.get("VersionId"),
        "last_modified": modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if modified
        else None,
        "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
    }


def _held_etags(case: Case) -> dict[str, str]:
    """Each S3 object's evidence path with the ETag custody recorded for it."""
    etags: dict[str, str] = {}
    for entry in case.custody_entries():
        source = entry.get("source")
        if read_action(entry.get("action")) is CustodyAction.CAPTURE and isinstance(source, dict):
            for f in entry.get("files") or []:
                etag = source.get("etag")
                if source.get("type") == "s3" and isinstance(etag, str) and isinstance(f, dict):
                    etags.setdefault(str(f.get("path")), etag)
    return etags


def _get_as_listed(s3: Any, bucket: str, obj: LogObject) -> dict[str, Any]:
    resp = s3.get_object(Bucket=bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
    etag = resp.get("ETag", "").strip('"')
    length = resp.get("ContentLength")
    if etag != obj.etag:
        resp["Body"].close()
        raise ObjectChanged(
            f"changed since it was listed (listed ETag {obj.etag}, read {etag or 'none'}); "
            "re-run to fetch it again"
        )
    if length != obj.size:
        resp["Body"].close()
        raise ObjectChanged(
            f"answered with {length} bytes for an object listed at {obj.size} bytes: "
            "a short or padded answer; re-run to fetch it again"
        )
    return resp


class ObjectChanged(Exception):
    """The object read is not the object listed."""


def _failure(exc: Exception, obj: LogObject) -> str:
    """Why one object is not evidence, in words a responder can act on."""
    if isinstance(exc, ObjectChanged):
        return str(exc)
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    if code in ("PreconditionFailed", "412"):
        return (
            f"changed since it was listed (its ETag is no longer {obj.etag}); "
            "re-run to fetch the current version"
        )
    if isinstance(exc, EvidenceError) and "expected" in str(exc):
        return f"{exc} as listed: a short or padded answer; re-run to fetch it again"
    return f"{type(exc).__name__}: {exc}"


class RequestSpacing:
    """botocore `before-send` hook: at least LOOKUP_MIN_INTERVAL between two requests."""

    def __init__(
        self,
        interval: float = LOOKUP_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self.clock, self.sleep = clock, sleep  # a test passes its own, to check without waiting
        self.last: float | None = None

    def __call__(self, **_: Any) -> None:
        if self.last is not None:
            pause = self.interval - (self.clock() - self.last)
            if pause > 0:
                self.sleep(pause)
        self.last = self.clock()


@dataclass(frozen=True)
class LookupFilter:
    """One LookupAttributes entry: the API takes exactly one per request, so a capture
    filtered by several values makes one lookup (and one evidence item) per value."""

    key: str  # AccessKeyId, Username, ResourceName, EventName, ... (the API's names)
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"AttributeKey": self.key, "AttributeValue": self.value}


def capture_lookup(
    case: Case,
    aws: Aws,
    regions: list[str],
    window: Window,
    identity: dict[str, str],
    report: Reporter,
    on_page: Callable[[int, int], None] | None = None,  # (pages, events): the caller draws
    spacing: Callable[[], Callable[..., None]] = RequestSpacing,  # a test gives a fake clock
    filters: list[LookupFilter] | None = None,
) -> list[ItemResult]:
    """Page through LookupEvents, saving each response body byte for byte as received.

    The API only holds 90 days of management events; the pages are the only copy of
    what the API said at capture time, so they are stored before anything parses them.
    Without `filters` every event in the window is read; with them, one lookup per
    filter and region, each its own item whose meta and page sources name the filter.
    """
    oldest = datetime.now(UTC) - timedelta(days=90)
    if window.start < oldest:
        report("LookupEvents only returns the last 90 days; older events need the S3 trail")
    account = identity.get("Account", "unknown")
    results = []
    for region in regions or [aws.region]:
        client = aws.client("cloudtrail", region)
        raw_pages: list[bytes] = []
        client.meta.events.register(
            "before-parse.cloudtrail.LookupEvents", functools.partial(keep_body, raw_pages)
        )
        # Spaced where each HTTP request leaves, so botocore's retries obey the limit too.
        client.meta.events.register("before-send.cloudtrail.LookupEvents", spacing())
        chosen: list[LookupFilter | None] = list(filters) if filters else [None]
        for lookup_filter in chosen:
            results.append(
                _lookup_item(
                    case, client, raw_pages, account, region, window, identity, lookup_filter,
                    on_page,
                )
            )  # fmt: skip
    return results


def _lookup_item(
    case: Case,
    client: Any,
    raw_pages: list[bytes],
    account: str,
    region: str,
    window: Window,
    identity: dict[str, str],
    lookup_filter: LookupFilter | None,
    on_page: Callable[[int, int], None] | None,
) -> ItemResult:
    """One region's (and filter's) pages as one item."""
    base = f"cloudtrail-api-{account}-{region}-{window.start:%Y%m%dT%H%M}"
    source: dict[str, Any] = {"type": "lookup_events", "account": account, "region": region}
    if lookup_filter:
        base += f"-{lookup_filter.key}-{lookup_filter.value}"
        source["filter"] = lookup_filter.as_dict()
    evidence_id = case.unique_evidence_id(base)
    meta = {
        "kind": "cloudtrail",
        "source": source,
        "window": window.as_dict(),
        "caller_identity": identity,
    }
    result = ItemResult(case.item(evidence_id, meta), account, region)
    result.lookup_filter = lookup_filter.as_dict() if lookup_filter else None
    result.item.summary = functools.partial(_lookup_summary, result)
    with result.item as item:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "StartTime": window.start,
                "EndTime": window.end,
                "MaxResults": 50,
            }
            if lookup_filter:
                kwargs["LookupAttributes"] = [lookup_filter.as_dict()]
            if token:
                kwargs["NextToken"] = token
            raw_pages.clear()
            try:
                resp = call("cloudtrail:LookupEvents", client.lookup_events, **kwargs)
            except CloudError:
                item.finish("LookupEvents failed", complete=False)
                raise
            result.listed += 1
            reencoded = not raw_pages
            body = raw_pages[-1] if raw_pages else reencode(resp)
            page_source: dict[str, Any] = {
                "type": "lookup_events",
                "region": region,
                "page": result.listed,
                "events": len(resp.get("Events", [])),
                "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
                "as_received": not reencoded,
            }
            if lookup_filter:
                page_source["filter"] = lookup_filter.as_dict()
            item.store(
                f"pages/page-{result.listed:05d}.json",
                body,
                captured=len(resp.get("Events", [])),
                source=page_source,
            )
            if on_page:
                on_page(result.listed, item.captured)
            token = resp.get("NextToken")
            if not token:
                break
    return result


def _lookup_summary(result: ItemResult, item: EvidenceItem) -> str:
    text = f"LookupEvents {result.region}: {item.captured} events in {result.listed} pages"
    if result.lookup_filter:
        text += " for {AttributeKey}={AttributeValue}".format(**result.lookup_filter)
    return "; ".join([text, *item.problems])


def reencode(resp: dict[str, Any]) -> bytes:
    import json

    body = {k: v for k, v in resp.items() if k != "ResponseMetadata"}
    return json.dumps(body, default=str).encode()
