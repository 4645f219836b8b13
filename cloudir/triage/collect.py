"""Collect what a playbook names for one scope, through the capture code `capture` uses.

Each step calls the same functions `cloudir capture ...` calls (capture_s3,
capture_lookup, capture_ebs, capture_containers), so evidence items, their meta.json and
every custody entry are exactly what the commands write; only the drawing is left out.
Related findings are the one new source: the alert service's own answers, stored as
received as evidence of kind "alert".

A step that fails does not end the collection: the rest of the playbook may still get
the evidence that decides the verdict. A step's failure or skip is counted in its
StepResult, reported, and recorded in custody (`capture-skipped`, no evidence id, the
step and the reason in its note and source), so the case says what triage did not take
and why. Only an interrupt (Ctrl-C, SystemExit) ends the run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudir.alerts.model import Alert, Scope
from cloudir.aws import Aws, call, keep_body
from cloudir.case import Case
from cloudir.custody_actions import CustodyAction
from cloudir.errors import UsageError
from cloudir.progress import Reporter
from cloudir.safe_text import inert
from cloudir.timewindow import Window
from cloudir.triage.playbook import Playbook, Step

MAX_LOOKUPS = 25  # LookupEvents filters per step: 2 requests/s, each its own evidence item
MAX_RESOURCE_IDS = 20  # resource ids per related-findings query (Security Hub's filter limit)
PROBLEMS_KEPT = 20

_LOOKUP_KEYS = {"access-key": "AccessKeyId", "user": "Username", "resource": "ResourceName"}
_GUARDDUTY_FIELDS = {
    "instance": "resource.instanceDetails.instanceId",
    "access-key": "resource.accessKeyDetails.accessKeyId",
    "iam-user": "resource.accessKeyDetails.userName",
    "s3-bucket": "resource.s3BucketDetails.name",
    "eks-cluster": "resource.eksClusterDetails.name",
    "ecs-cluster": "resource.ecsClusterDetails.name",
    "lambda": "resource.lambdaDetails.functionName",
    "rds": "resource.rdsDbInstanceDetails.dbInstanceIdentifier",
}
_DETECTOR = re.compile(r":detector/([A-Za-z0-9]{1,300})/finding/")


@dataclass(frozen=True)
class PlannedStep:
    """What one step will collect for this scope, before anything is asked of AWS."""

    kind: str
    what: str  # one line: the source and the filter
    targets: tuple[str, ...] = ()
    skip: str | None = None  # the step will be skipped, and why

    def line(self) -> str:
        text = f"{self.kind}: " + (f"skipped: {self.skip}" if self.skip else self.what)
        if self.targets and not self.skip:
            text += f" [{', '.join(self.targets)}]"
        return inert(text, 600)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "targets": list(self.targets),
                "skip": self.skip}  # fmt: skip


@dataclass
class StepResult:
    """What one step got: its items, counts, and why it was skipped or failed.

    status: "done" (nothing failed), "partial" (some things failed, some were taken),
    "failed" (the step stopped, or nothing it tried was taken: `reason` says why),
    "skipped" (nothing to do or no way to do it: `reason`).
    """

    kind: str
    status: str = "done"
    evidence_ids: list[str] = field(default_factory=list)
    captured: int = 0  # files, events, snapshots, containers or findings taken
    skipped: int = 0  # targets not taken (with a reason) or already held
    failed: int = 0
    reason: str | None = None
    problems: list[str] = field(default_factory=list)  # the first failures, one line each

    def fail(self, text: str) -> None:
        self.failed += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(inert(text, 500))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Run:
    """Everything a step needs, and what earlier steps learnt."""

    case: Case
    aws: Aws
    scope: Scope
    playbook: Playbook
    identity: dict[str, str]
    report: Reporter
    alert: Alert
    docker_host: str | None
    trail: str | None
    bucket: str | None
    window: Window
    trail_read: bool = False  # a cloudtrail step read a trail bucket: lookup-events may rest


# -- the plan ------------------------------------------------------------------------------
def plan(
    scope: Scope, playbook: Playbook, *, trail: str | None = None, bucket: str | None = None
) -> list[PlannedStep]:
    """Each step as it will run for this scope; `trail`/`bucket` as collect() gets them."""
    planned: list[PlannedStep] = []
    has_cloudtrail = any(s.kind == "cloudtrail" for s in playbook.steps)
    window = f"{_iso(scope.start)} to {_iso(scope.end)}"
    where = f"account {scope.account or 'any'}, region {scope.region or 'any'}"
    for step in playbook.steps:
        if step.kind == "cloudtrail":
            source = _trail_words(step, trail, bucket)
            planned.append(
                PlannedStep("cloudtrail", f"CloudTrail from {source}, {where}, {window}")
            )
        elif step.kind == "lookup-events":
            filters = _lookup_filters(scope, step)
            when = (
                " if no trail bucket is read"
                if step["when"] == "no-trail" and has_cloudtrail
                else ""
            )
            targets = tuple(f"{k}={v}" for k, v in filters)
            skip = None if filters else _no_filter_reason(step)
            planned.append(
                PlannedStep(
                    "lookup-events",
                    f"LookupEvents in {scope.region or 'the session region'}, {window}, "
                    f"one lookup per value{when}",
                    targets[:MAX_LOOKUPS],
                    skip,
                )
            )
        elif step.kind == "ebs":
            what = "describe each instance and snapshot its EBS volumes" + (
                ", then download each snapshot into the case" if step["download"] else
                " (no download)"
            )  # fmt: skip
            skip = None if scope.instances else "the scope names no EC2 instance"
            planned.append(PlannedStep("ebs", what, scope.instances, skip))
        elif step.kind == "containers":
            skip = None if scope.containers else "the scope names no container"
            planned.append(
                PlannedStep(
                    "containers",
                    "capture each container from the Docker engine, if one is reachable",
                    scope.containers,
                    skip,
                )
            )
        else:
            planned.append(
                PlannedStep(
                    "related-findings",
                    "the alert source's other findings on the same resources "
                    f"(at most {step['max_findings']})",
                )
            )
    return planned


def _trail_words(step: Step, trail: str | None, bucket: str | None) -> str:
    if bucket:
        return f"s3://{bucket.removeprefix('s3://')}"
    if trail:
        return f"trail {trail}"
    if step["bucket"]:
        return f"s3://{step['bucket']}/{step['prefix']}"
    if step["trail"]:
        return f"trail {step['trail']}"
    return "the account's first trail that logs to S3"


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


# -- collecting ----------------------------------------------------------------------------
def collect(
    case: Case,
    aws: Aws,
    scope: Scope,
    playbook: Playbook,
    identity: dict[str, str],
    report: Reporter,
    *,
    alert: Alert,
    docker_host: str | None = None,
    trail: str | None = None,
    bucket: str | None = None,
) -> list[StepResult]:
    """Run every step in playbook order; one StepResult per step, never raising for a
    step's failure (interrupts are raised). `bucket` ("name" or "name/prefix") or `trail`
    overrides the playbook's trail for the cloudtrail step."""
    run = _Run(
        case, _in_region(aws, scope.region), scope, playbook, identity, report, alert,
        docker_host, trail, bucket, Window(scope.start, scope.end),
    )  # fmt: skip
    steps: dict[str, Callable[[_Run, Step, StepResult], None]] = {
        "cloudtrail": _cloudtrail,
        "lookup-events": _lookup_events,
        "ebs": _ebs,
        "containers": _containers,
        "related-findings": _related_findings,
    }
    results = []
    for number, step in enumerate(playbook.steps):
        result = StepResult(step.kind)
        before = set(case.evidence_ids())
        report(f"playbook {playbook.name}: {step.kind}")
        try:
            steps[step.kind](run, step, result)
        except Exception as exc:  # one step's failure must not stop the others
            result.status = "failed"
            result.reason = _one_line(exc)
            result.failed += 1
        made = sorted(set(case.evidence_ids()) - before)
        result.evidence_ids += [e for e in made if e not in result.evidence_ids]
        if result.status == "done" and result.failed:
            # Some parts failed: partial if anything was taken, else the step failed.
            result.status = "partial" if result.captured else "failed"
            result.reason = result.reason or (result.problems[0] if result.problems else None)
        if result.status in ("failed", "skipped"):
            _record_step(case, playbook, number, result)
            report(f"{step.kind}: {result.status}: {result.reason}")
        elif result.failed:
            report(f"{step.kind}: {result.failed} failed: {'; '.join(result.problems[:3])}")
        results.append(result)
    return results


def _record_step(case: Case, playbook: Playbook, number: int, result: StepResult) -> None:
    """A step that took nothing goes on the record with its reason."""
    case.record(
        CustodyAction.CAPTURE_SKIPPED,
        None,
        [],
        note=f"triage playbook {playbook.name}: {result.kind} step {result.status}: "
        f"{result.reason}",
        source={
            "type": "triage-step",
            "playbook": playbook.name,
            "step": number,
            "kind": result.kind,
            "outcome": result.status,
            "skipped": result.skipped,
        },
    )


def _skip(result: StepResult, reason: str, count: int = 0) -> None:
    result.status = "skipped"
    result.reason = reason
    result.skipped += count


def _in_region(aws: Aws, region: str | None) -> Aws:
    """The session in the scope's region (EBS and the alert services are regional)."""
    if not region or region == aws.region:
        return aws
    return Aws(dataclasses.replace(aws.options, region=region))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return inert(text if isinstance(exc, UsageError) or ":" in text else
                 f"{type(exc).__name__}: {text}", 500)  # fmt: skip


# -- cloudtrail ------------------------------------------------------------------------------
def _cloudtrail(run: _Run, step: Step, result: StepResult) -> None:
    from cloudir.capture import cloudtrail

    location = _trail_location(run, step)
    if location is None:
        _skip(result, "no trail in this account and region logs to S3 (DescribeTrails)")
        return
    bucket, prefix, how = location
    run.report(f"cloudtrail: {how} delivers to s3://{bucket}/{prefix}")
    items = cloudtrail.capture_s3(
        run.case,
        run.aws,
        bucket,
        prefix,
        [run.scope.account] if run.scope.account else [],
        [run.scope.region] if run.scope.region else [],
        run.window,
        step["workers"],
        run.identity,
        run.report,
    )
    run.trail_read = True
    for item in items:
        result.evidence_ids.append(item.evidence_id)
        result.captured += item.captured
        result.skipped += item.skipped
        for problem in item.failed:
            result.fail(problem)


def _trail_location(run: _Run, step: Step) -> tuple[str, str, str] | None:
    """(bucket, prefix, how it was found); None when the account has no S3 trail."""
    from cloudir.capture.cloudtrail import resolve_trail

    if run.bucket:
        name, _, prefix = run.bucket.removeprefix("s3://").partition("/")
        return name, prefix, "the bucket given"
    if run.trail:
        return (*resolve_trail(run.aws, run.trail), f"trail {run.trail}")
    if step["bucket"]:
        return step["bucket"], step["prefix"], "the playbook's bucket"
    if step["trail"]:
        return (*resolve_trail(run.aws, step["trail"]), f"trail {step['trail']}")
    client = run.aws.client("cloudtrail")
    trails = call("cloudtrail:DescribeTrails", client.describe_trails, includeShadowTrails=True)
    for found in trails.get("trailList", []):
        if found.get("S3BucketName"):
            name = found.get("Name", "?")
            return found["S3BucketName"], found.get("S3KeyPrefix") or "", f"trail {name}"
    return None


# -- lookup-events ---------------------------------------------------------------------------
def _lookup_filters(scope: Scope, step: Step) -> list[tuple[str, str]]:
    values = {
        "access-key": scope.access_keys,
        "user": scope.users,
        "resource": (*scope.instances, *scope.buckets, *scope.functions, *scope.databases,
                     *scope.clusters, *scope.roles),
    }  # fmt: skip
    found: list[tuple[str, str]] = []
    for by in step["by"]:
        for value in values[by]:
            pair = (_LOOKUP_KEYS[by], value)
            if value and pair not in found:
                found.append(pair)
    return found


def _no_filter_reason(step: Step) -> str:
    names = {"access-key": "access key", "user": "user name", "resource": "resource name"}
    return "the scope names no " + " or ".join(names[b] for b in step["by"]) + " to filter by"


def _lookup_events(run: _Run, step: Step, result: StepResult) -> None:
    from cloudir.capture import cloudtrail

    if step["when"] == "no-trail" and run.trail_read:
        _skip(result, "the trail bucket was read (when: no-trail)")
        return
    filters = _lookup_filters(run.scope, step)
    if not filters:
        _skip(result, _no_filter_reason(step))
        return
    if len(filters) > MAX_LOOKUPS:
        result.skipped += len(filters) - MAX_LOOKUPS
        run.report(
            f"lookup-events: {len(filters)} filter values; the first {MAX_LOOKUPS} are looked "
            f"up, {len(filters) - MAX_LOOKUPS} skipped"
        )
    spacing = cloudtrail.RequestSpacing()  # one pace for every lookup of the step
    region = run.scope.region or run.aws.region
    for key, value in filters[:MAX_LOOKUPS]:
        try:
            items = cloudtrail.capture_lookup(
                run.case, run.aws, [region], run.window, run.identity, run.report,
                spacing=lambda: spacing, filters=[cloudtrail.LookupFilter(key, value)],
            )  # fmt: skip
        except Exception as exc:  # one value's failure leaves the others to look up
            result.fail(f"{key}={value}: {_one_line(exc)}")
            continue
        for item in items:
            result.evidence_ids.append(item.evidence_id)
            result.captured += item.captured


# -- ebs -----------------------------------------------------------------------------------
def _ebs(run: _Run, step: Step, result: StepResult) -> None:
    from cloudir.capture.ebs import EbsRequest, capture_ebs

    if not run.scope.instances:
        _skip(result, "the scope names no EC2 instance")
        return
    for instance in run.scope.instances:
        request = EbsRequest(
            instance_id=instance,
            download=step["download"],
            workers=step["workers"],
            timeout=float(step["timeout"]),
        )
        try:
            taken = capture_ebs(run.case, run.aws, request, run.identity, run.report)
        except Exception as exc:  # the next instance's disks are still worth freezing
            result.fail(f"{instance}: {_one_line(exc)}")
            continue
        if taken.instance:
            result.evidence_ids.append(taken.instance.evidence_id)
        for snap in taken.snapshots:
            result.evidence_ids.append(snap.evidence_id)
            result.captured += 1


# -- containers ------------------------------------------------------------------------------
def _containers(run: _Run, step: Step, result: StepResult) -> None:
    from cloudir.capture import containers as capture
    from cloudir.errors import CloudError

    names = run.scope.containers
    if not names:
        _skip(result, "the scope names no container")
        return
    try:
        engine = capture.connect(run.docker_host, step["workers"])
    except CloudError as exc:
        _skip(result, _one_line(exc), len(names))
        return
    chosen = []
    for name in names:
        try:
            chosen += capture.select(engine, capture.ContainerRequest(names=(name,)))
        except UsageError:
            result.skipped += 1
            run.case.record(
                CustodyAction.CAPTURE_SKIPPED,
                None,
                [],
                note=f"triage playbook {run.playbook.name}: no container {inert(name, 120)!r} "
                f"on {engine.host}",
                source={"type": "triage-step", "kind": "containers", "container": name,
                        "docker_host": engine.host},
            )  # fmt: skip
    if not chosen:
        _skip(result, f"none of {len(names)} container(s) is on {engine.host}")
        return
    request = capture.ContainerRequest(
        names=tuple(names),
        pause=step["pause"],
        changed_only=step["changed_only"],
        workers=step["workers"],
        docker_host=run.docker_host,
    )
    for taken in capture.capture_containers(run.case, engine, chosen, request):
        result.evidence_ids.append(taken.evidence_id)
        if taken.complete:
            result.captured += 1
        else:
            result.fail(f"container {taken.name}: {'; '.join(taken.problems)}")


# -- related findings ----------------------------------------------------------------------
def _related_findings(run: _Run, step: Step, result: StepResult) -> None:
    if run.alert.source == "guardduty":
        _guardduty_related(run, step, result)
    elif run.alert.source == "securityhub":
        _securityhub_related(run, step, result)
    else:
        _skip(result, f"cloudir cannot ask {inert(run.alert.source, 40)!r} for findings")


def _alert_item(run: _Run, service: str, source: dict[str, Any]) -> Any:
    """The item for the alert service's answers: kind "alert", like the alert itself."""
    evidence_id = run.case.unique_evidence_id(f"alert-related-{service}-{run.alert.id[:60]}")
    meta = {
        "kind": "alert",
        "source": {"type": service, "related_to": run.alert.id, **source},
        "window": run.window.as_dict(),
        "caller_identity": run.identity,
    }
    return run.case.item(evidence_id, meta)


def _store_answer(
    item: Any, name: str, bodies: list[bytes], resp: dict[str, Any], source: dict[str, Any],
    related: int,
) -> None:  # fmt: skip
    as_received = bool(bodies)
    body = bodies[-1] if bodies else json.dumps(
        {k: v for k, v in resp.items() if k != "ResponseMetadata"}, default=str
    ).encode()  # fmt: skip
    item.store(
        name,
        body,
        captured=related,
        source={
            **source,
            "findings": len(resp.get("Findings", [])),
            "related": related,
            "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
            "as_received": as_received,
        },
    )


def _securityhub_ids(alert: Alert) -> list[str]:
    """The resource ids exactly as Security Hub holds them (ASFF Resources[].Id)."""
    found: list[str] = []
    resources = alert.raw.get("Resources")
    for resource in resources if isinstance(resources, list) else []:
        value = resource.get("Id") if isinstance(resource, dict) else None
        if isinstance(value, str) and value and value not in found:
            found.append(value)
    for resource in alert.resources:
        if resource.id and resource.id not in found:
            found.append(resource.id)
    return found


def _securityhub_related(run: _Run, step: Step, result: StepResult) -> None:
    ids = _securityhub_ids(run.alert)
    if not ids:
        _skip(result, "the alert names no resource to look for")
        return
    if len(ids) > MAX_RESOURCE_IDS:
        result.skipped += len(ids) - MAX_RESOURCE_IDS
        ids = ids[:MAX_RESOURCE_IDS]
    filters = {
        "ResourceId": [{"Value": i, "Comparison": "EQUALS"} for i in ids],
        "Id": [{"Value": run.alert.id, "Comparison": "NOT_EQUALS"}],
    }
    region = run.scope.region or run.aws.region
    client = run.aws.client("securityhub", region)
    bodies: list[bytes] = []
    client.meta.events.register(
        "before-parse.securityhub.GetFindings", functools.partial(keep_body, bodies)
    )
    wanted = set(ids)
    source = {"api": "securityhub:GetFindings", "region": region, "filters": filters}
    with _alert_item(run, "securityhub", source) as item:
        result.evidence_ids.append(item.evidence_id)
        token: str | None = None
        page = 0
        while result.captured < step["max_findings"]:
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            bodies.clear()
            resp = call("securityhub:GetFindings", client.get_findings, **kwargs)
            page += 1
            related = sum(
                1
                for f in resp.get("Findings", [])
                if f.get("Id") != run.alert.id
                and any(
                    r.get("Id") in wanted for r in f.get("Resources") or [] if isinstance(r, dict)
                )
            )
            _store_answer(item, f"securityhub/get-findings-{page:05d}.json", bodies, resp,
                          {"type": "securityhub", "api": "GetFindings", "page": page,
                           "region": region}, related)  # fmt: skip
            result.captured += related
            token = resp.get("NextToken")
            if not token:
                break


def _guardduty_criteria(alert: Alert) -> list[dict[str, Any]]:
    """One FindingCriteria per GuardDuty field (fields in one criteria are ANDed; the
    values of one field are ORed), each excluding the alert itself."""
    by_field: dict[str, list[str]] = {}
    for resource in alert.resources:
        name = _GUARDDUTY_FIELDS.get(resource.kind)
        values = by_field.setdefault(name, []) if name else None
        if values is not None and resource.id and resource.id not in values:
            values.append(resource.id)
    return [
        {"Criterion": {name: {"Equals": values[:50]}, "id": {"NotEquals": [alert.id]}}}
        for name, values in by_field.items()
        if values
    ]


def _guardduty_related(run: _Run, step: Step, result: StepResult) -> None:
    criteria = _guardduty_criteria(run.alert)
    if not criteria:
        _skip(result, "the alert names no resource GuardDuty can filter findings by")
        return
    region = run.scope.region or run.aws.region
    client = run.aws.client("guardduty", region)
    detector = _detector(run.alert, client)
    bodies: list[bytes] = []
    client.meta.events.register(
        "before-parse.guardduty.GetFindings", functools.partial(keep_body, bodies)
    )
    found: list[str] = []
    for criterion in criteria:
        token = ""
        while len(found) < step["max_findings"]:
            kwargs: dict[str, Any] = {
                "DetectorId": detector, "FindingCriteria": criterion, "MaxResults": 50,
            }  # fmt: skip
            if token:
                kwargs["NextToken"] = token
            resp = call("guardduty:ListFindings", client.list_findings, **kwargs)
            found += [i for i in resp.get("FindingIds", []) if i not in found and i != run.alert.id]
            token = resp.get("NextToken") or ""
            if not token:
                break
    found = found[: step["max_findings"]]
    source = {"api": "guardduty:GetFindings", "region": region, "detector_id": detector,
              "criteria": criteria}  # fmt: skip
    with _alert_item(run, "guardduty", source) as item:
        result.evidence_ids.append(item.evidence_id)
        if not found:
            item.note("GuardDuty lists no other finding on these resources")
        for batch, start in enumerate(range(0, len(found), 50), 1):
            ids = found[start : start + 50]
            bodies.clear()
            resp = call(
                "guardduty:GetFindings", client.get_findings, DetectorId=detector, FindingIds=ids
            )
            related = sum(1 for f in resp.get("Findings", []) if f.get("Id") in ids)
            _store_answer(item, f"guardduty/get-findings-{batch:05d}.json", bodies, resp,
                          {"type": "guardduty", "api": "GetFindings", "region": region,
                           "detector_id": detector, "finding_ids": ids}, related)  # fmt: skip
            result.captured += related


def _detector(alert: Alert, client: Any) -> str:
    """The detector that raised the alert (its ARN says), else the region's only one."""
    arn = alert.raw.get("Arn") or alert.raw.get("arn")
    match = _DETECTOR.search(arn) if isinstance(arn, str) else None
    if match:
        return match.group(1)
    listed = call("guardduty:ListDetectors", client.list_detectors).get("DetectorIds", [])
    if not listed:
        raise UsageError("GuardDuty has no detector in this region")
    return str(listed[0])
