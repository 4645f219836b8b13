"""`cloudir triage`: from one GuardDuty or Security Hub alert to a verdict and a report.

The stages are cloudir/triage/run.py's; this module reads the options, draws, and maps the
result to the exit code (detect's: 1 when a finding reaches --fail-on).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.common import (
    AdoptOpt,
    CaseOpt,
    EndpointOpt,
    ExaminerOpt,
    JsonOpt,
    ProfileOpt,
    RetryOpt,
    TitleOpt,
    emit_json,
    handled,
    locks_case,
    open_aws,
    say,
    show,
)
from cloudir.cli.detect import FailOnOpt, NoBuiltinOpt, RulesOpt, SuppressOpt
from cloudir.errors import EXIT_FINDINGS, UsageError

MAX_STDIN_BYTES = 10 << 20  # the reader's own limit; refuse before holding more


def _margin(text: str | None, option: str) -> timedelta | None:
    """ "36h", "2d", "90m" as a margin of the scope's window."""
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise UsageError(f"{option} must be minutes, hours or days, e.g. 90m, 36h, 2d")
    return timedelta(seconds=int(number) * units[unit])


def _read_source(
    finding: str | None, guardduty: str | None, securityhub: str | None, aws: Any
) -> Any:
    from cloudir.triage.run import AlertInput

    given = [x for x in (finding, guardduty, securityhub) if x]
    if len(given) != 1:
        raise UsageError("give one alert: a FINDING.json (or - for stdin), --guardduty "
                         "DETECTOR:FINDING_ID or --securityhub ARN")  # fmt: skip
    if finding == "-":
        data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(data) > MAX_STDIN_BYTES:
            raise UsageError(f"the alert on stdin is over {MAX_STDIN_BYTES} bytes")
        return AlertInput(data, {"type": "stdin"})
    if finding:
        path = Path(finding)
        if not path.is_file():
            raise UsageError(f"{finding}: no such file")
        if path.stat().st_size > MAX_STDIN_BYTES:
            raise UsageError(f"{finding}: over {MAX_STDIN_BYTES} bytes, not an alert document")
        return AlertInput(path.read_bytes(), {"type": "file", "name": path.name})
    from cloudir.alerts.fetch import fetch_guardduty, fetch_securityhub

    if guardduty:
        detector, _, finding_id = guardduty.partition(":")
        if not finding_id:
            raise UsageError("--guardduty takes DETECTOR_ID:FINDING_ID")
        data = fetch_guardduty(aws, detector, finding_id)
        origin = {"type": "guardduty_api", "detector_id": detector, "finding_id": finding_id,
                  "region": aws.region}  # fmt: skip
        return AlertInput(data, origin, finding_id)
    assert securityhub is not None
    data = fetch_securityhub(aws, securityhub)
    return AlertInput(data, {"type": "securityhub_api", "id": securityhub}, securityhub)


@handled
@locks_case(creates=True)
def triage(
    case: CaseOpt,
    finding: Annotated[
        str | None,
        typer.Argument(
            metavar="[FINDING.json|-]",
            help="The alert: a GuardDuty or Security Hub finding, or an EventBridge event; "
            "- reads stdin.",
        ),
    ] = None,
    guardduty: Annotated[
        str | None,
        typer.Option(metavar="DETECTOR:FINDING_ID", help="Read the finding from GuardDuty."),
    ] = None,
    securityhub: Annotated[
        str | None, typer.Option(metavar="ARN", help="Read the finding from Security Hub.")
    ] = None,
    playbook: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE|DIR", help="Playbook file or folder (repeatable); chosen first."
        ),
    ] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Store the alert, print scope and plan, stop.")
    ] = False,
    no_collect: Annotated[
        bool,
        typer.Option("--no-collect", help="Collect nothing: analyse what the case already holds."),
    ] = False,
    contain: Annotated[
        bool, typer.Option("--contain", help="Carry out the playbook's containment.")
    ] = False,
    trail: Annotated[
        str | None, typer.Option(help="Trail to read (overrides the playbook).")
    ] = None,
    bucket: Annotated[
        str | None, typer.Option(help="Trail bucket[/prefix] (overrides the playbook).")
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Window margin before the alert's first seen (default 24h).")
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="Window margin after its last seen (default 1h).")
    ] = None,
    rules: RulesOpt = None,
    no_builtin: NoBuiltinOpt = False,
    suppress: SuppressOpt = None,
    fail_on: FailOnOpt = "high",
    notify: Annotated[
        str | None, typer.Option(metavar="sns:ARN", help="Publish the result to an SNS topic.")
    ] = None,
    upload: Annotated[
        str | None, typer.Option(metavar="s3://BUCKET/PREFIX", help="Upload the case folder.")
    ] = None,
    docker_host: Annotated[
        str | None, typer.Option(envvar="DOCKER_HOST", help="Docker engine for containers.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region (default: the alert's).")] = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Triage one alert with no person in between: keep it as evidence, scope it, collect
    by a playbook, analyse, judge it (confirmed, corroborated, not corroborated,
    explained), report, and contain only when told.

    Example: cloudir triage --case ./case-42 guardduty-finding.json --plan

    Example: aws events ... | cloudir triage --case /case - --upload s3://ir-cases/
    --notify sns:arn:aws:sns:eu-west-1:111122223333:ir
    """
    from cloudir.analyze import detect as engine
    from cloudir.triage.run import TriageOptions, exit_level_reached
    from cloudir.triage.run import triage as run_triage

    if fail_on not in engine.LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(engine.LEVELS)}")
    from cloudir.triage.handoff import parse_s3_url, parse_topic_arn

    topic = None
    if notify is not None:
        if not notify.startswith("sns:"):
            raise UsageError("--notify takes sns:ARN")
        topic = notify[len("sns:") :]
        parse_topic_arn(topic)  # a bad ARN is refused before anything is written
    if upload is not None:
        parse_s3_url(upload)
    if plan and (upload or notify):
        raise UsageError("--plan stops before the hand-off: drop --upload and --notify")
    options = TriageOptions(
        playbooks=list(playbook or []),
        plan_only=plan,
        collect=not no_collect,
        contain=contain,
        trail=trail,
        bucket=bucket,
        docker_host=docker_host,
        rules=list(rules or []),
        builtin=not no_builtin,
        suppress=list(suppress or []),
        before=_margin(before, "--before"),
        after=_margin(after, "--after"),
        notify=topic,
        upload=upload,
        title=title,
        examiner=examiner,
    )
    made: dict[str | None, Any] = {}

    def aws_for(alert_region: str | None) -> Any:
        chosen = region or alert_region
        if chosen not in made:
            made[chosen] = open_aws(profile, chosen, endpoint_url, retry_mode, 16)
        return made[chosen]

    fetched = aws_for(None) if (guardduty or securityhub) else None
    source = _read_source(finding, guardduty, securityhub, fetched)
    result = run_triage(case, source, options, aws_for, say, say)
    if as_json:
        emit_json(result.as_dict())
    else:
        verdict = result.verdict.get("verdict")
        if verdict:
            show(f"verdict: {verdict}")
            for reason in result.verdict.get("reasons", []):
                show(f"  - {reason}")
        for fmt, path in result.report.items():
            show(f"report ({fmt}): {path}")
    if exit_level_reached(result, fail_on):
        raise typer.Exit(EXIT_FINDINGS)
