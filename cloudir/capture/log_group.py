"""Capture a CloudWatch Logs group for a window: FilterLogEvents pages, byte for byte.

Much of what an investigation needs past CloudTrail lands in CloudWatch Logs: a Lambda
function's output, the EKS control plane's audit log, VPC flow logs and Route 53 Resolver
query logs delivered there. Retention ends it (often 7 to 30 days), so the pages are the
only copy of what the service said at capture time, stored as received before anything
parses them, one evidence item per group, region, window and filter.

- **Paging and throttling.** FilterLogEvents pages until there is no `nextToken` (a page
  may hold no events while the service still searches); requests are spaced at least
  REQUEST_INTERVAL apart where they leave (FilterLogEvents' quota is a few requests per
  second per account and region, shared with every other reader), so botocore's retries
  obey it too.
- **Resume.** A capture of the same group, region, window and filter that was cut short
  reopens its item and goes on from the last stored page's `nextToken`; a token the
  service no longer takes (they expire) starts the pages again after those held, and the
  timeline's de-duplication collapses the events held twice (same eventId, same bytes).
- **What the group was.** Its ARN, retention, creation time, stored bytes and KMS key go
  into meta.json: a retention of 7 days says why the window's start holds nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloudir.aws import Aws, call, keep_body
from cloudir.capture.cloudtrail import RequestSpacing, reencode
from cloudir.case import Case
from cloudir.custody_actions import CustodyAction
from cloudir.errors import CloudError, UsageError
from cloudir.evidence_item import EvidenceItem, ItemTally
from cloudir.progress import Reporter
from cloudir.timewindow import Window

KIND: Final = "cloudwatch-logs"
PAGES_DIR: Final = "pages"
REQUEST_INTERVAL: Final = 0.25  # seconds between two FilterLogEvents requests
PAGE_LIMIT: Final = 10_000  # events per page: the API's largest
_EXPIRED = ("InvalidParameterException",)  # what an expired or foreign nextToken answers


@dataclass
class LogGroupResult(ItemTally):
    """One group's capture and what this run got: the `--json` item."""

    item: EvidenceItem
    log_group: str
    region: str
    pages: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "log_group": self.log_group,
            "region": self.region,
            "pages": self.pages,
            "events": self.events,
            "captured": self.captured,
            "bytes": self.bytes,
            "failed": self.failed,
            "resumed": self.item.resumed,
        }


def capture_log_group(
    case: Case,
    aws: Aws,
    log_group: str,
    window: Window,
    identity: dict[str, str],
    report: Reporter,
    filter_pattern: str | None = None,
    region: str | None = None,
    on_page: Callable[[int, int], None] | None = None,  # (pages, events): the caller draws
    spacing: Callable[[], Callable[..., None]] = functools.partial(
        RequestSpacing, REQUEST_INTERVAL
    ),
    stream_prefix: str | None = None,
    kind: str = KIND,
    name: str = "logs",
    meta: dict[str, Any] | None = None,
) -> LogGroupResult:
    """Every event of `log_group` in `window` (matching `filter_pattern`, in CloudWatch
    Logs' own filter syntax, and in streams named `stream_prefix...`) into one evidence
    item of pages as received. `kind` and `name` (the item id's start) let a source whose
    events have their own parser (an EKS cluster's audit log, flow logs) keep its pages
    apart; `meta` goes into meta.json for that parser (a flow log's field format)."""
    region = region or aws.region
    client = aws.client("logs", region)
    described = find_log_group(aws, log_group, region)
    raw_pages: list[bytes] = []
    client.meta.events.register(
        "before-parse.cloudwatch-logs.FilterLogEvents", functools.partial(keep_body, raw_pages)
    )
    client.meta.events.register("before-send.cloudwatch-logs.FilterLogEvents", spacing())
    extra: dict[str, Any] = {}
    if filter_pattern:
        extra["filter_pattern"] = filter_pattern
    if stream_prefix:
        extra["stream_prefix"] = stream_prefix
    evidence_id, item_meta = group_item(
        case, "filter_log_events", name, log_group, region, window, identity, described, extra
    )
    item_meta = {**(meta or {}), **item_meta, "kind": kind}
    if not described.get("retentionInDays"):
        retention = "never expire"
    else:
        retention = f"are kept {described['retentionInDays']} days"
    report(f"log group {log_group} ({region}): its events {retention}")
    result = LogGroupResult(case.item(evidence_id, item_meta), log_group, region)
    result.item.summary = functools.partial(_summary, result)
    if result.item.resumed and _closed_whole(case, evidence_id):
        report(f"{evidence_id}: this group and window are already captured whole")
        result.item.leave_as_is()
        return result
    with result.item as item:
        held, token = _held_pages(case, evidence_id)
        result.pages = held
        if token:
            report(f"{evidence_id}: resuming after page {held}")
        query = _Query(log_group, window, filter_pattern, stream_prefix)
        _page(client, raw_pages, item, result, query, token, report, on_page)
    return result


def group_item(
    case: Case,
    source_type: str,
    name: str,
    log_group: str,
    region: str,
    window: Window,
    identity: dict[str, str],
    described: dict[str, Any],
    extra: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The evidence id and meta.json of a log group's capture, by either API (pages of
    FilterLogEvents, or an export task): the item that already holds this source (a
    resumed capture), else a new id named after the account, region, group and window."""
    account = identity.get("Account", "unknown")
    source: dict[str, Any] = {
        "type": source_type,
        "account": account,
        "region": region,
        "log_group": log_group,
        "window": window.as_dict(),
        **extra,
    }
    group_name = log_group.strip("/").replace("/", "-")
    evidence_id = case.item_with_source(source) or case.unique_evidence_id(
        f"{name}-{account}-{region}-{group_name}-{window.start:%Y%m%dT%H%M}"
    )
    meta = {
        "kind": KIND,
        "source": source,
        "log_group": described,
        "window": window.as_dict(),
        "caller_identity": identity,
    }
    return evidence_id, meta


def find_log_group(aws: Aws, log_group: str, region: str | None = None) -> dict[str, Any]:
    """The group as DescribeLogGroups tells it; a one-line error when there is none (the
    CLI asks before it creates the case, so a mistyped name leaves no empty case)."""
    client = aws.client("logs", region or aws.region)
    paginator = client.get_paginator("describe_log_groups")
    pages = call(
        "logs:DescribeLogGroups",
        lambda: list(paginator.paginate(logGroupNamePrefix=log_group)),
    )
    for page in pages:
        for group in page.get("logGroups", []):
            if group.get("logGroupName") == log_group:
                keys = ("arn", "retentionInDays", "creationTime", "storedBytes", "kmsKeyId",
                        "logGroupClass")  # fmt: skip
                return {key: group[key] for key in keys if key in group}
    raise UsageError(f"no log group named {log_group} in this account and region")


@dataclass(frozen=True)
class _Query:
    """What every FilterLogEvents request of one capture asks."""

    log_group: str
    window: Window
    filter_pattern: str | None
    stream_prefix: str | None

    def arguments(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "startTime": _ms(self.window.start),
            "endTime": _ms(self.window.end),
            "limit": PAGE_LIMIT,
        }
        if self.filter_pattern:
            kwargs["filterPattern"] = self.filter_pattern
        if self.stream_prefix:
            kwargs["logStreamNamePrefix"] = self.stream_prefix
        return kwargs


def _page(
    client: Any,
    raw_pages: list[bytes],
    item: EvidenceItem,
    result: LogGroupResult,
    query: _Query,
    token: str | None,
    report: Reporter,
    on_page: Callable[[int, int], None] | None,
) -> None:
    restarted = False
    log_group = query.log_group
    while True:
        kwargs = query.arguments()
        if token:
            kwargs["nextToken"] = token
        raw_pages.clear()
        try:
            resp = call("logs:FilterLogEvents", client.filter_log_events, **kwargs)
        except CloudError as exc:
            if token and not restarted and any(code in str(exc) for code in _EXPIRED):
                report(
                    f"{item.evidence_id}: the stored page token is no longer taken; reading "
                    "the window again (events held twice collapse in the timeline)"
                )
                token, restarted = None, True
                continue
            raise
        result.pages += 1
        events = len(resp.get("events", []))
        body = raw_pages[-1] if raw_pages else reencode(resp)
        item.store(
            f"{PAGES_DIR}/page-{result.pages:05d}.json",
            body,
            captured=events,
            source={
                "type": "filter_log_events",
                "log_group": log_group,
                "page": result.pages,
                "events": events,
                "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
                "as_received": bool(raw_pages),
            },
        )
        result.events += events
        if on_page:
            on_page(result.pages, result.events)
        token = resp.get("nextToken")
        if not token:
            return


def _held_pages(case: Case, evidence_id: str) -> tuple[int, str | None]:
    """How many pages an earlier run stored, and the last one's nextToken (resume)."""
    folder: Path = case.evidence_dir(evidence_id) / PAGES_DIR
    pages = sorted(folder.glob("page-*.json")) if folder.is_dir() else []
    if not pages:
        return 0, None
    try:
        last = json.loads(pages[-1].read_bytes())
    except (OSError, ValueError):
        return len(pages), None
    token = last.get("nextToken") if isinstance(last, dict) else None
    return len(pages), token if isinstance(token, str) and token else None


def _closed_whole(case: Case, evidence_id: str) -> bool:
    """The item's last closing entry in custody is capture-complete."""
    closing = {CustodyAction.CAPTURE_COMPLETE.value, CustodyAction.CAPTURE_INCOMPLETE.value}
    last = None
    for entry in case.custody_entries():
        if entry.get("evidence_id") == evidence_id and entry.get("action") in closing:
            last = entry["action"]
    return last == CustodyAction.CAPTURE_COMPLETE.value


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def _summary(result: LogGroupResult, item: EvidenceItem) -> str:
    text = f"FilterLogEvents {result.log_group} ({result.region}): {result.events} events "
    text += f"in {result.pages} pages"
    return "; ".join([text, *item.problems])
