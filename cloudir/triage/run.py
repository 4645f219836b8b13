"""`cloudir triage` end to end: one alert in, a scoped case, a verdict and a report out.

The order is the responder's first hour, written down: keep the alert as evidence before
anything reads it (custody starts with what arrived), derive the scope and say it before
acting (`--plan` stops there), collect by the playbook through the capture code, analyse
as `analyze` does, judge the alert against what was collected, and contain only when
told (`--contain` or a playbook's explicit `auto: true`). Each stage's result lands in
the case (`triage/*.json`) as well as in the one result document a SOAR reads, so a
rerun or a person picking the case up sees the same thing the automation saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloudir.alerts.model import Alert, AlertError, Scope
from cloudir.aws import Aws
from cloudir.case import Case
from cloudir.errors import CloudirError, UsageError
from cloudir.progress import Reporter

RESULT_VERSION = "1.0"
VERDICT_EXIT_LEVELS = ("informational", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class AlertInput:
    """The alert as it arrived, before anything reads it, and where it came from."""

    data: bytes
    origin: dict[str, Any]  # {"type": "file", "path": ...}, {"type": "stdin"}, {"type":
    # "guardduty_api", "detector_id", "finding_id", "region"}, {"type": "securityhub_api", ...}
    finding_id: str | None = None  # the one asked for, when the document may hold several


@dataclass
class TriageOptions:
    playbooks: list[Path] = field(default_factory=list)
    plan_only: bool = False
    collect: bool = True
    contain: bool = False
    trail: str | None = None
    bucket: str | None = None
    docker_host: str | None = None
    rules: list[Path] = field(default_factory=list)
    builtin: bool = True
    suppress: list[Path] = field(default_factory=list)
    formats: list[str] = field(default_factory=lambda: ["html", "md", "json"])
    before: timedelta | None = None
    after: timedelta | None = None
    notify: str | None = None
    upload: str | None = None
    title: str | None = None
    examiner: str | None = None


@dataclass
class TriageResult:
    """The one document a SOAR reads (`--json`, triage/result.json, the SNS message)."""

    case: Path
    alert: Alert
    alert_evidence_id: str
    scope: Scope
    playbook: dict[str, Any]
    planned: list[dict[str, Any]]
    containment_plan: list[dict[str, Any]]
    status: str = "planned"  # planned, analysed
    collection: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)
    containment: dict[str, Any] = field(default_factory=lambda: {"status": "not run"})
    notify: dict[str, Any] | None = None
    upload: dict[str, Any] | None = None
    finding_levels: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "result_version": RESULT_VERSION,
            "generated": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "case": str(self.case),
            "status": self.status,
            "alert": {**self.alert.as_dict(), "evidence_id": self.alert_evidence_id},
            "scope": self.scope.as_dict(),
            "playbook": self.playbook,
            "plan": self.planned,
            "collection": self.collection,
            "timeline": self.timeline,
            "findings": self.findings,
            "verdict": self.verdict,
            "report": self.report,
            "containment": {"plan": self.containment_plan, **self.containment},
            "notify": self.notify,
            "upload": self.upload,
        }


def read_input(source: AlertInput) -> Alert:
    """The alert, or a usage error (exit 2) in one line: a document that is not an alert
    is the responder's input, not evidence cloudir failed to read."""
    from cloudir.alerts.read import read_alert

    try:
        return read_alert(source.data, source.finding_id)
    except AlertError as exc:
        raise UsageError(f"alert: {exc}") from None


def store_alert(case: Case, alert: Alert, source: AlertInput) -> str:
    """Keep the alert exactly as received, hashed into custody, before it is acted on."""
    stamp = (alert.first_seen or datetime.now(UTC)).strftime("%Y%m%dT%H%M")
    base = f"alert-{alert.source}-{stamp}"
    held = case.item_with_source(source.origin | {"sha256": _sha256(source.data)})
    if held is not None:
        return held  # the same alert from the same place: a rerun resumes
    evidence_id = case.unique_evidence_id(base)
    meta = {
        "kind": "alert",
        "source": source.origin | {"sha256": _sha256(source.data)},
        "alert": {"source": alert.source, "product": alert.product, "id": alert.id,
                  "type": alert.type},
    }  # fmt: skip
    with case.item(evidence_id, meta) as item:
        item.store("alert.json", source.data, source=source.origin, note=f"{alert.product} alert")
    return evidence_id


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, document: dict[str, Any]) -> Path:
    """Whole or not at all: a reader never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def triage(
    case_root: Path,
    source: AlertInput,
    options: TriageOptions,
    aws_for: Callable[[str | None], Aws] | None,
    report: Reporter,
    show: Callable[[str], None],
) -> TriageResult:
    """Run the stages in order; see the module docstring. `aws_for(region)` opens AWS,
    called only when a stage needs it (collecting, containing, --upload, --notify), so
    `--plan` and `--no-collect` run on a laptop with no credentials. Raises UsageError
    before anything is written when the alert or a playbook is bad."""
    from cloudir.alerts.scope import DEFAULT_AFTER, DEFAULT_BEFORE, scope_of
    from cloudir.triage.collect import plan
    from cloudir.triage.containment import plan_containment
    from cloudir.triage.playbook import choose, load_playbooks

    alert = read_input(source)
    playbook = choose(alert, load_playbooks(options.playbooks))
    scope = scope_of(
        alert, before=options.before or DEFAULT_BEFORE, after=options.after or DEFAULT_AFTER
    )
    containment = plan_containment(scope, playbook)
    contains = options.contain or any(c.auto and c.runnable for c in containment)
    needs_aws = not options.plan_only and (
        options.collect or contains or bool(options.upload or options.notify)
    )
    aws = aws_for(scope.region) if aws_for is not None and needs_aws else None
    if needs_aws and aws is None:
        raise UsageError(
            "collecting, containing, --upload and --notify need AWS; "
            "give --no-collect alone to analyse the case as it is"
        )
    if aws is not None:
        from cloudir.aws import open_case_as_caller

        case, identity = open_case_as_caller(aws, case_root, options.title, options.examiner)
    else:
        case, identity = Case.open_or_create(case_root, options.title, options.examiner), {}
    evidence_id = store_alert(case, alert, source)
    write_json(case.paths.triage_alert, alert.as_dict() | {"evidence_id": evidence_id})
    write_json(case.paths.triage_scope, scope.as_dict())
    planned = plan(scope, playbook, trail=options.trail, bucket=options.bucket)
    result = TriageResult(
        case_root, alert, evidence_id, scope, playbook.as_dict(),
        [p.as_dict() for p in planned], [c.as_dict() for c in containment],
    )  # fmt: skip
    show_scope(alert, scope, playbook.name, show)
    if options.collect:
        for step in planned:
            show(f"  collect {step.line()}")
    else:
        show("  collect: nothing (--no-collect): the evidence the case already holds")
    for action in containment:
        show(f"  contain {action.line()}")
    if options.plan_only:
        return _finish(case, result)
    if aws is not None and options.collect:
        from cloudir.triage.collect import collect

        steps = collect(
            case, aws, scope, playbook, identity, report, alert=alert,
            docker_host=options.docker_host, trail=options.trail, bucket=options.bucket,
        )  # fmt: skip
        result.collection = [s.as_dict() for s in steps]
    else:
        report("--no-collect: analysing the evidence the case already holds")
    analyse(case, alert, scope, options, result, report)
    if aws is not None and contains:
        result.containment = contain(case_root, aws, containment, options, report)
    _finish(case, result)
    hand_off(case, aws, options, result, report)
    return _finish(case, result)


def show_scope(alert: Alert, scope: Scope, playbook: str, show: Callable[[str], None]) -> None:
    from cloudir.safe_text import inert

    sample = " (a SAMPLE finding)" if alert.sample else ""
    show(f"alert: {alert.product} {inert(alert.type, 200)} ({alert.severity}){sample}")
    show(f"  {inert(alert.title, 300)}")
    show(f"scope: account {scope.account or '?'}, region {scope.region or '?'}, "
         f"{scope.start:%Y-%m-%d %H:%M}Z to {scope.end:%Y-%m-%d %H:%M}Z")  # fmt: skip
    for name, values in scope.as_dict().items():
        if isinstance(values, list) and values:
            show(f"  {name}: {inert(', '.join(values), 600)}")
    show(f"playbook: {playbook}")


def analyse(
    case: Case,
    alert: Alert,
    scope: Scope,
    options: TriageOptions,
    result: TriageResult,
    report: Reporter,
) -> None:
    """timeline, detect, the verdict, then the report (which shows the verdict first)."""
    from collections import Counter

    from cloudir.analyze import detect as engine
    from cloudir.analyze.timeline import build_timeline
    from cloudir.report.write import write_report
    from cloudir.triage.verdict import validate_alert, write_validation

    timeline = build_timeline(case)
    result.timeline = {"rows": timeline.rows, "evidence_problems": len(timeline.errors)}
    detection = engine.detect(case, options.rules, builtin=options.builtin,
                              suppress=options.suppress)  # fmt: skip
    levels = [f["level"] for f in detection.findings]
    result.finding_levels = levels
    result.findings = {
        "total": len(levels),
        "by_level": dict(Counter(levels)),
        "top": [
            {k: f.get(k) for k in ("title", "level", "outcome", "count", "rule_id")}
            for f in detection.findings[:10]
        ],
    }
    validation = validate_alert(case.root, alert, scope)
    write_validation(case.root, validation)
    result.verdict = {"verdict": validation.verdict, "rule": validation.rule,
                      "reasons": list(validation.reasons)}  # fmt: skip
    written = write_report(case, options.formats)
    result.report = {fmt: str(path) for fmt, path in written.items()}
    result.status = "analysed"


def contain(
    case_root: Path,
    aws: Aws,
    planned: Sequence[Any],
    options: TriageOptions,
    report: Reporter,
) -> dict[str, Any]:
    """Each runnable action through `cloudir respond`'s own code, with its plan, custody
    and restore path; one action's failure is recorded and the next still runs."""
    from cloudir.respond import run

    ref = run.CaseRef(case_root, options.title, options.examiner)
    done: list[dict[str, Any]] = []
    for action in planned:
        if not action.runnable or not (options.contain or action.auto):
            continue
        args = action.arguments
        try:
            if action.action == "isolate":
                response = run.isolate(
                    ref, aws, args["instance_id"], list(args["allow_cidrs"]), True, report,
                    snapshot=args["snapshot"], replace=args["replace"],
                    keep_credentials=args["keep_credentials"],
                )  # fmt: skip
            else:
                response = run.disable_key(
                    ref, aws, args["access_key_id"], args["revoke_sessions"], args["role"],
                    True, report,
                )  # fmt: skip
            done.append({"action": action.action, "target": action.target, "status": "done",
                         "response": response.as_dict()})  # fmt: skip
        except CloudirError as exc:
            report(f"contain {action.action} {action.target}: {exc}")
            done.append({"action": action.action, "target": action.target, "status": "failed",
                         "error": str(exc)})  # fmt: skip
    failed = any(d["status"] == "failed" for d in done)
    status = "failed" if failed else ("done" if done else "nothing to run")
    return {"status": status, "actions": done}


def hand_off(
    case: Case, aws: Aws | None, options: TriageOptions, result: TriageResult, report: Reporter
) -> None:
    """Upload the case, then notify (the message names where the case went)."""
    if not (options.upload or options.notify):
        return
    if aws is None:
        raise UsageError("--upload and --notify need AWS; they cannot run with --no-collect")
    from cloudir.triage.handoff import notify_sns, upload_case

    if options.upload:
        uploaded = upload_case(aws, case, options.upload, report)
        result.upload = uploaded.as_dict()
    if options.notify:
        message_id = notify_sns(aws, options.notify, result.as_dict())
        result.notify = {"topic": options.notify, "message_id": message_id}


def _finish(case: Case, result: TriageResult) -> TriageResult:
    write_json(case.paths.triage_result, result.as_dict())
    return result


def exit_level_reached(result: TriageResult, fail_on: str) -> bool:
    floor = VERDICT_EXIT_LEVELS.index(fail_on)
    return any(
        level in VERDICT_EXIT_LEVELS and VERDICT_EXIT_LEVELS.index(level) >= floor
        for level in result.finding_levels
    )
