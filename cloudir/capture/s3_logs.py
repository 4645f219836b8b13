"""Copy the log files AWS services deliver to S3 for a window, one item per log folder.

VPC flow logs, Route 53 Resolver query logs, load balancer access logs and S3 server
access logs all land in a bucket the way CloudTrail does: a folder per day (or a date in
each name), files written once. `capture/log_sources.py` finds the folders (from the flow
log, resolver, load balancer or bucket configuration); this module lists the days the
window needs and copies each object exactly as listed, through the CloudTrail capture's
own fetch (ETag-pinned, size-checked, resumable, a rewritten object taken beside the held
one): the same custody for every log a service delivers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cloudir.aws import Aws, call
from cloudir.capture.cloudtrail import (
    SLACK_AFTER,
    SLACK_BEFORE,
    ItemResult,
    LogObject,
    evidence_name_for_key,
    fetch_plan,
    named_outside,
)
from cloudir.case import Case
from cloudir.evidence_item import EvidenceItem
from cloudir.progress import Counter, Reporter
from cloudir.timewindow import Window

DAY_FOLDERS = "%Y/%m/%d/"  # AWSLogs/<account>/<service>/<region>/2024/07/31/
HIVE_DAY_FOLDERS = "year=%Y/month=%m/day=%d/"  # flow logs' Hive-compatible partitions
DATED_NAMES = "%Y-%m-%d-"  # S3 server access logs: <prefix>2024-07-31-10-00-00-<id>


@dataclass(frozen=True)
class LogFolder:
    """Where one service delivers one stream of log files, and what pointed there."""

    kind: str  # the evidence kind its files are: vpc-flow, route53-resolver, ...
    bucket: str
    prefix: str  # the part of every key before the day (`day_format`)
    day_format: str  # strftime of the day part of the key
    label: str  # the evidence id's start: vpc-flow-fl-0abc-us-east-1
    account: str = ""
    region: str = ""
    found_by: dict[str, Any] = field(default_factory=dict)  # flow log id, LB ARN, ...

    def source(self) -> dict[str, Any]:
        """The item's identity: the folder, not what pointed at it (a second flow log into
        the same folder resumes into the same item)."""
        return {"type": "s3", "kind": self.kind, "bucket": self.bucket, "prefix": self.prefix}


def list_folder(s3: Any, folder: LogFolder, window: Window) -> Iterator[LogObject]:
    """Every object of the days the window needs (widened by the delivery slack), but
    files whose name gives a time far outside it. Anything else in a day is taken,
    whatever its name: an object skipped for its name would be a place to hide a log."""
    listing = s3.get_paginator("list_objects_v2")
    for day in window.days(SLACK_BEFORE, SLACK_AFTER):
        prefix = folder.prefix + day.strftime(folder.day_format)
        pages = listing.paginate(Bucket=folder.bucket, Prefix=prefix)
        listed: list[dict[str, Any]] = call(
            f"s3:ListObjectsV2 s3://{folder.bucket}/{prefix}", list, pages
        )
        for page in listed:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if named_outside(key, window):
                    continue
                yield LogObject(
                    key,
                    obj["Size"],
                    obj.get("ETag", "").strip('"'),
                    obj.get("LastModified"),
                    evidence_name_for_key(key.removeprefix(folder.prefix)),
                )


def capture_log_folders(
    case: Case,
    aws: Aws,
    folders: list[LogFolder],
    window: Window,
    workers: int,
    identity: dict[str, str],
    report: Reporter,
    on_progress: Counter | None = None,
) -> list[ItemResult]:
    """Each folder's files for the window into an item of its kind; a folder captured
    before (the same source) resumes into its item."""
    s3 = aws.client("s3")
    with contextlib.ExitStack() as items:
        plan: list[tuple[ItemResult, list[LogObject], str]] = []
        for folder in folders:
            objects = list(list_folder(s3, folder, window))
            source = folder.source()
            evidence_id = case.item_with_source(source) or case.unique_evidence_id(
                f"{folder.label}-{window.label()}"
            )
            meta = {
                "kind": folder.kind,
                "source": source,
                "found_by": folder.found_by,
                "window": window.as_dict(),
                "caller_identity": identity,
            }
            summary = functools.partial(_summary, folder, len(objects))
            item = items.enter_context(case.item(evidence_id, meta, summary=summary))
            plan.append(
                (
                    ItemResult(item, folder.account, folder.region, len(objects)),
                    objects,
                    folder.bucket,
                )
            )
            report(
                f"{evidence_id}: {len(objects)} {folder.kind} files in s3://"
                f"{folder.bucket}/{folder.prefix} for the window"
            )
        fetch_plan(case, s3, plan, window, workers, on_progress)
    return [result for result, _, _ in plan]


def _summary(folder: LogFolder, listed: int, item: EvidenceItem) -> str:
    return (
        f"s3://{folder.bucket}/{folder.prefix} ({folder.kind}): {item.captured} captured, "
        f"{item.skipped} already held, {len(item.problems)} failed of {listed} listed"
    )
