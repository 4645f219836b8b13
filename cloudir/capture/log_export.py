"""Capture a CloudWatch Logs group through an export task to S3, for groups too large to page.

FilterLogEvents reads a few pages a second; a group of many gigabytes takes hours that
way. CloudWatch Logs' own export task (`CreateExportTask`) copies a window of a group to
an S3 bucket as gzipped text, one folder per stream (`PREFIX/<taskId>/<stream>/000000.gz`),
and the objects are then copied into the case through the CloudTrail capture's fetch
(ETag- and size-pinned, hashed into custody, resumable), as every S3 log capture is.

- **The task as received.** The CreateExportTask answer (its `taskId`) and the last
  DescribeExportTasks answer are stored in the item byte for byte
  (`export-task/<taskId>/...`), so the case shows which task wrote the files it holds.
- **Waiting.** DescribeExportTasks is asked with a backoff from POLL_FIRST to POLL_MOST
  seconds until the task is COMPLETED, FAILED or CANCELLED, or the timeout passes; a
  task that did not complete (or is still running at the timeout) is a named problem
  and the item ends incomplete. A task left running goes on in AWS.
- **One at a time.** An account runs one export task at a time (RUNNING or PENDING);
  another one already running is LimitExceededException, said as such. CreateExportTask
  is tried once: botocore would retry LimitExceededException as throttling for minutes,
  and a create retried after its answer was lost would start a second export.
- **Resume.** The item's `source` is the group, region, window, stream prefix and
  destination: the same command run again finds the item, reads the task it recorded
  and, when that task is COMPLETED or still running, does not start another: it waits
  for it if need be and copies what is not yet held. A recorded task that FAILED, was
  CANCELLED or is no longer known to the service is replaced by a new one, said.
- **No filter pattern.** An export task takes none: every event of the window and
  streams is exported, and the timeline (or `query`) does the filtering.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cloudir.aws import Aws, call, error_code
from cloudir.capture.cloudtrail import (
    ItemResult,
    LogObject,
    evidence_name_for_key,
    fetch_plan,
    keep_body,
    reencode,
)
from cloudir.capture.log_group import find_log_group, group_item
from cloudir.case import Case
from cloudir.errors import CloudError, UsageError
from cloudir.evidence_item import EvidenceItem
from cloudir.progress import Counter, Reporter
from cloudir.timewindow import Window

TASK_DIR: Final = "export-task"  # export-task/<taskId>/CreateExportTask.json, ...
CREATED: Final = "CreateExportTask.json"
DESCRIBED: Final = "DescribeExportTasks"  # -NN.json: one per run that asked
DEFAULT_PREFIX: Final = "exportedlogs"  # what AWS uses when no prefix is given
WRITE_TEST: Final = "aws-logs-write-test"  # CloudWatch Logs' permission check object
POLL_FIRST: Final = 2.0  # seconds before the first DescribeExportTasks
POLL_MOST: Final = 30.0  # the backoff's ceiling
DONE: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Destination:
    """Where the export task writes: a bucket in the group's region and a key prefix."""

    bucket: str
    prefix: str  # no leading or trailing "/"; AWS's default when none was given

    @classmethod
    def parse(cls, uri: str) -> Destination:
        """`s3://BUCKET[/PREFIX]`, or a UsageError saying what is wrong with it."""
        if not uri.startswith("s3://"):
            raise UsageError(f"--export-to must be s3://BUCKET[/PREFIX], not {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise UsageError(f"--export-to: {bucket!r} is not an S3 bucket name")
        return cls(bucket, prefix.strip("/") or DEFAULT_PREFIX)

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", self.prefix, *parts])


@dataclass
class ExportResult(ItemResult):
    """One group's export and what this run got: the `--json` item."""

    log_group: str = ""
    task_id: str | None = None
    status: str | None = None  # the task's last status code
    reused: bool = False  # a task an earlier run started, not a new one
    objects: list[LogObject] = field(default_factory=list)
    last_answer: tuple[bytes, dict[str, Any]] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "log_group": self.log_group,
            "region": self.region,
            "export_task": self.task_id,
            "status": self.status,
            "reused_task": self.reused,
            "listed": self.listed,
            "captured": self.captured,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "failed": self.failed,
            "resumed": self.item.resumed,
        }


def check_destination(aws: Aws, destination: Destination, region: str | None = None) -> None:
    """The bucket can be listed with these credentials: asked before the case is made, so
    a mistyped bucket leaves no case and starts no task."""
    s3 = aws.client("s3", region or aws.region)
    try:
        call(
            f"s3:ListObjectsV2 s3://{destination.bucket}/{destination.prefix}/",
            s3.list_objects_v2,
            Bucket=destination.bucket,
            Prefix=f"{destination.prefix}/",
            MaxKeys=1,
        )
    except CloudError as exc:
        if error_code(exc) == "NoSuchBucket":
            raise UsageError(f"--export-to: there is no bucket named {destination.bucket}") from exc
        raise


def capture_log_export(
    case: Case,
    aws: Aws,
    log_group: str,
    window: Window,
    identity: dict[str, str],
    report: Reporter,
    destination: Destination,
    region: str | None = None,
    stream_prefix: str | None = None,
    timeout: float = 3600,
    workers: int = 16,
    on_progress: Counter | None = None,
    sleep: Callable[[float], None] = time.sleep,  # a test passes its own, to not wait
    clock: Callable[[], float] = time.monotonic,
) -> ExportResult:
    """Export `log_group`'s window (streams named `stream_prefix...`) to `destination`
    and copy what the task wrote into one evidence item of kind `cloudwatch-logs`."""
    region = region or aws.region
    logs = aws.client("logs", region)
    # One try for the create: retried after an answer lost on the way, a task that runs
    # would make the retry fail (one at a time) or start a second export.
    creator = aws.client("logs", region, attempts=1)
    raw: list[bytes] = []
    for client, operation in ((creator, "CreateExportTask"), (logs, "DescribeExportTasks")):
        client.meta.events.register(
            f"before-parse.cloudwatch-logs.{operation}", functools.partial(keep_body, raw)
        )
    described = find_log_group(aws, log_group, region)
    extra: dict[str, Any] = {"destination": destination.uri()}
    if stream_prefix:
        extra["stream_prefix"] = stream_prefix
    evidence_id, meta = group_item(
        case, "export_task", "logs-export", log_group, region, window, identity, described, extra
    )
    account = meta["source"]["account"]
    item = case.item(evidence_id, meta)
    result = ExportResult(item, account, region, log_group=log_group)
    item.summary = functools.partial(_summary, result, destination)
    with item:
        task_id = _reusable_task(case, logs, raw, result, report)
        if task_id is None:
            task_id = _create(creator, raw, result, log_group, window, destination, stream_prefix)
            report(f"{evidence_id}: export task {task_id} started for {log_group} into "
                   f"{destination.uri(task_id)}/")  # fmt: skip
        task = _wait(logs, raw, result, task_id, timeout, sleep, clock, report)
        result.status = _status(task)
        if result.status != "COMPLETED":
            message = (task.get("status") or {}).get("message") if task else None
            if result.status in DONE:
                item.problem(f"export task {task_id} ended {result.status}"
                             + (f": {message}" if message else ""))  # fmt: skip
            else:
                item.problem(
                    f"export task {task_id} still {result.status or 'unknown'} after "
                    f"{timeout:g} s; it goes on in AWS: run again with --start "
                    f"{_iso(window.start)} --end {_iso(window.end)} to wait for it and copy "
                    "what it wrote"
                )
            item.finish(complete=False)
            return result
        s3 = aws.client("s3", region)
        result.objects = list(_task_objects(s3, destination, task_id, item, report))
        result.listed = len(result.objects)
        if not result.objects:
            where = destination.uri(task_id)
            item.note(f"export task {task_id} wrote no log files under {where}/ "
                      "(no events in the window and streams)")  # fmt: skip
            report(f"{evidence_id}: {item.notes[-1]}")
        else:
            report(f"{evidence_id}: {len(result.objects)} files written by export task "
                   f"{task_id}")  # fmt: skip
        fetch_plan(case, s3, [(result, result.objects, destination.bucket)], window, workers,
                   on_progress)  # fmt: skip
    return result


def _reusable_task(
    case: Case, logs: Any, raw: list[bytes], result: ExportResult, report: Reporter
) -> str | None:
    """The task an earlier run of this item started, when it can still deliver: COMPLETED
    (copy what is not yet held) or PENDING/RUNNING (wait for it); else None (said)."""
    task_id = _recorded_task(case, result.evidence_id)
    if task_id is None:
        return None
    try:
        task = _describe(logs, raw, result, task_id)
    except CloudError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        report(f"{result.evidence_id}: export task {task_id} is no longer known to the "
               "service; starting a new one")  # fmt: skip
        return None
    status = _status(task)
    if status in ("FAILED", "CANCELLED"):
        report(f"{result.evidence_id}: export task {task_id} ended {status}; starting a new one")
        return None
    result.reused = True
    report(f"{result.evidence_id}: export task {task_id} recorded by an earlier run is "
           f"{status or 'of no status'}; not starting another")  # fmt: skip
    return task_id


def _recorded_task(case: Case, evidence_id: str) -> str | None:
    """The task id of the last CreateExportTask answer custody holds for this item."""
    found = None
    for entry in case.custody_entries():
        source = entry.get("source")
        if (
            entry.get("evidence_id") == evidence_id
            and isinstance(source, dict)
            and source.get("operation") == "CreateExportTask"
            and isinstance(source.get("task_id"), str)
            and _TASK_ID.match(source["task_id"])
        ):
            found = source["task_id"]
    return found


def _create(
    creator: Any,
    raw: list[bytes],
    result: ExportResult,
    log_group: str,
    window: Window,
    destination: Destination,
    stream_prefix: str | None,
) -> str:
    kwargs: dict[str, Any] = {
        "taskName": f"cloudir-{result.evidence_id}"[:512],
        "logGroupName": log_group,
        "fromTime": _ms(window.start),
        "to": _ms(window.end),
        "destination": destination.bucket,
        "destinationPrefix": destination.prefix,
    }
    if stream_prefix:
        kwargs["logStreamNamePrefix"] = stream_prefix
    raw.clear()
    try:
        resp = call("logs:CreateExportTask", creator.create_export_task, **kwargs)
    except CloudError as exc:
        if error_code(exc) == "LimitExceededException":
            raise CloudError(
                "another export task is already running in this account (CloudWatch Logs "
                "runs one at a time): wait for it or cancel it (aws logs "
                "describe-export-tasks --status-code RUNNING), then run this again"
            ) from exc
        if error_code(exc) == "InvalidParameterException":
            raise CloudError(
                f"{exc}; the bucket {destination.bucket} must be in the group's region and "
                "its policy must let logs.amazonaws.com call s3:GetBucketAcl and s3:PutObject"
            ) from exc
        raise
    task_id = resp.get("taskId")
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise CloudError(f"CreateExportTask answered a task id cloudir cannot use: {task_id!r}")
    body = raw[-1] if raw else reencode(resp)
    result.item.store(
        f"{TASK_DIR}/{task_id}/{CREATED}",
        body,
        captured=0,
        source={
            "type": "export_task",
            "operation": "CreateExportTask",
            "task_id": task_id,
            "request": {k: v for k, v in kwargs.items() if k != "taskName"},
            "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
            "as_received": bool(raw),
        },
    )
    result.task_id = task_id
    return task_id


def _describe(logs: Any, raw: list[bytes], result: ExportResult, task_id: str) -> dict[str, Any]:
    """The task as DescribeExportTasks tells it (an answer without it: an empty dict)."""
    raw.clear()
    resp = call("logs:DescribeExportTasks", logs.describe_export_tasks, taskId=task_id)
    result.task_id = task_id
    result.last_answer = (raw[-1] if raw else reencode(resp), resp)
    for task in resp.get("exportTasks") or []:
        if isinstance(task, dict) and task.get("taskId") == task_id:
            return task
    return {}


def _wait(
    logs: Any,
    raw: list[bytes],
    result: ExportResult,
    task_id: str,
    timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    report: Reporter,
) -> dict[str, Any]:
    """Ask until the task is done or `timeout` passes; the last answer is stored."""
    deadline = clock() + timeout
    pause = POLL_FIRST
    said: str | None = None
    try:
        while True:
            task = _describe(logs, raw, result, task_id)
            status = _status(task)
            if status in DONE or clock() >= deadline:
                return task
            if status != said:
                report(f"{result.evidence_id}: export task {task_id} is {status or 'unknown'}")
                said = status
            sleep(min(pause, max(0.0, deadline - clock())))
            pause = min(pause * 2, POLL_MOST)
    finally:
        _store_last_answer(result, task_id)


def _store_last_answer(result: ExportResult, task_id: str) -> None:
    answer = result.last_answer
    if answer is None:
        return
    body, resp = answer
    result.last_answer = None
    folder: Path = result.item.case.evidence_dir(result.evidence_id) / TASK_DIR / task_id
    held = len(list(folder.glob(f"{DESCRIBED}-*.json"))) if folder.is_dir() else 0
    tasks = [t for t in resp.get("exportTasks") or [] if isinstance(t, dict)]
    result.item.store(
        f"{TASK_DIR}/{task_id}/{DESCRIBED}-{held + 1:02d}.json",
        body,
        captured=0,
        source={
            "type": "export_task",
            "operation": "DescribeExportTasks",
            "task_id": task_id,
            "status": _status(tasks[0]) if tasks else None,
            "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
            "as_received": body is not None,
        },
    )


def _task_objects(
    s3: Any, destination: Destination, task_id: str, item: EvidenceItem, report: Reporter
) -> Iterator[LogObject]:
    """Every object under `PREFIX/<taskId>/`, named `logs/<taskId>/<stream>/<file>` in
    the item; CloudWatch Logs' permission check object (`PREFIX/aws-logs-write-test`,
    written before the export) is not log data: skipped, on the record."""
    base = f"{destination.prefix}/"
    listing = s3.get_paginator("list_objects_v2")
    for prefix in (f"{base}{task_id}/", f"{base}{WRITE_TEST}"):
        pages = listing.paginate(Bucket=destination.bucket, Prefix=prefix)
        listed: list[dict[str, Any]] = call(
            f"s3:ListObjectsV2 s3://{destination.bucket}/{prefix}", list, pages
        )
        for page in listed:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.rsplit("/", 1)[-1] == WRITE_TEST:
                    reason = (f"s3://{destination.bucket}/{key} ({obj.get('Size')} bytes): "
                              "CloudWatch Logs' permission check before an export, not log "
                              "data; not copied")  # fmt: skip
                    item.skip(reason)
                    report(f"{item.evidence_id}: skipped {reason}")
                    continue
                if not key.startswith(f"{base}{task_id}/"):
                    continue  # a key that only starts like the write test's
                yield LogObject(
                    key,
                    obj["Size"],
                    obj.get("ETag", "").strip('"'),
                    obj.get("LastModified"),
                    evidence_name_for_key(key.removeprefix(base)),
                )


def _status(task: dict[str, Any] | None) -> str | None:
    status = (task or {}).get("status")
    code = status.get("code") if isinstance(status, dict) else None
    return code if isinstance(code, str) else None


def _iso(moment: Any) -> str:
    """The window's bound as --start/--end take it: a re-run with a relative --start
    would be another window, so another item and another task."""
    return str(moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z"))


def _ms(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


def _summary(result: ExportResult, destination: Destination, item: EvidenceItem) -> str:
    text = (
        f"export task {result.task_id} ({result.status}) of {result.log_group} "
        f"({result.region}) to {destination.uri()}/: {item.captured} captured, "
        f"{item.skipped} skipped or already held, {len(item.problems)} failed of "
        f"{result.listed} listed"
    )
    return "; ".join([text, *item.problems])
