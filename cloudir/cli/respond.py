"""`cloudir respond ...`: containment, a printed plan first, every change in custody."""

from __future__ import annotations

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
from cloudir.errors import UsageError

respond_app = typer.Typer(
    help="Contain an incident: every action prints its plan and changes nothing until "
    "--yes; with --yes each change and the state before it go to custody, and "
    "`respond restore` puts it back.\n\n"
    "Example: cloudir respond isolate --case ./case-42 --instance-id i-0abc123def4567890",
    no_args_is_help=True,
)
YesOpt = Annotated[
    bool, typer.Option("--yes", help="Carry out the plan (default: print it, change nothing).")
]
RegionOpt = Annotated[str | None, typer.Option(help="AWS region.")]


def _respond_out(response: Any, as_json: bool, case: Path) -> None:
    if as_json:
        emit_json({"case": str(case), **response.as_dict()})
        return
    for plan in response.plans:
        for line in plan.lines():
            show(line)
    if not response.applied and any(p.changes for p in response.plans):
        show("plan only: nothing was changed; add --yes to carry it out")
    for outcome in response.outcomes:
        show(f"{outcome.action_id}: {len(outcome.done)} change(s) done, recorded in custody")


@respond_app.command("isolate")
@handled
@locks_case(creates=True, when=lambda kw: kw["yes"])
def respond_isolate(
    case: CaseOpt,
    instance_id: Annotated[str, typer.Option(help="The instance to isolate.")],
    allow_cidr: Annotated[
        list[str] | None,
        typer.Option(metavar="CIDR", help="Let examiners in from this range (repeatable)."),
    ] = None,
    yes: YesOpt = False,
    no_snapshot: Annotated[
        bool, typer.Option("--no-snapshot", help="Do not snapshot the volumes first.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Let its auto-scaling group launch a replacement instance."),
    ] = False,
    keep_credentials: Annotated[
        bool,
        typer.Option(
            "--keep-credentials",
            help="Leave its instance profile and metadata service alone.",
        ),
    ] = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "standard",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Cut an instance off the network, keeping its disk: snapshot, out of its
    auto-scaling group, termination and stop protection, instance profile detached and
    metadata service off, quarantine group alone on every interface, tags.

    Without --yes it prints the plan and changes nothing. Connections already
    established may survive a security-group change: the plan says how to cut them.

    Example: cloudir respond isolate --case ./case-42 --region eu-west-1 --instance-id
    i-0abc123def4567890 --allow-cidr 198.51.100.0/24 --yes
    """
    from cloudir.respond import run

    aws = open_aws(profile, region, endpoint_url, retry_mode, 10)
    ref = run.CaseRef(case, title, examiner)
    response = run.isolate(
        ref,
        aws,
        instance_id,
        list(allow_cidr or []),
        yes,
        say,
        snapshot=not no_snapshot,
        replace=replace,
        keep_credentials=keep_credentials,
    )
    _respond_out(response, as_json, case)


@respond_app.command("disable-key")
@handled
@locks_case(creates=True, when=lambda kw: kw["yes"])
def respond_disable_key(
    case: CaseOpt,
    access_key_id: Annotated[
        str | None,
        typer.Option(help="AKIA... (a user's key) or ASIA... (a session); or give --role."),
    ] = None,
    revoke_sessions: Annotated[
        bool,
        typer.Option(
            "--revoke-sessions",
            help="Deny every session issued before now (on the key's user, or --role).",
        ),
    ] = False,
    role: Annotated[
        str | None, typer.Option(help="Role whose sessions to revoke (for ASIA keys).")
    ] = None,
    yes: YesOpt = False,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "standard",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop a stolen key: make it inactive (it can be made active again, and its history
    stays); with --revoke-sessions, deny the sessions it already made.

    A session key (ASIA...) cannot be made inactive: --revoke-sessions denies its role's
    sessions issued before now; the role comes from --role or the case's CloudTrail.

    Example: cloudir respond disable-key --case ./case-42 --access-key-id
    AKIAIOSFODNN7EXAMPLE --revoke-sessions --yes

    Example: cloudir respond disable-key --case ./case-42 --role ci-runner
    --revoke-sessions --yes
    """
    from cloudir.respond import run

    aws = open_aws(profile, region, endpoint_url, retry_mode, 10)
    ref = run.CaseRef(case, title, examiner)
    response = run.disable_key(ref, aws, access_key_id, revoke_sessions, role, yes, say)
    _respond_out(response, as_json, case)


@respond_app.command("restore")
@handled
@locks_case(when=lambda kw: kw["yes"])
def respond_restore(
    case: CaseOpt,
    action: Annotated[
        str | None,
        typer.Option(metavar="ID", help="The action to undo (default: every one not undone)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also put back settings changed since by others.")
    ] = False,
    yes: YesOpt = False,
    region: Annotated[
        str | None, typer.Option(help="AWS region (default: where the action was taken).")
    ] = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "standard",
    as_json: JsonOpt = False,
) -> None:
    """Put back what containment changed, from the state custody recorded before it.

    Without --yes it prints what it would put back. A setting someone changed since
    cloudir set it is left alone, and --yes then refuses (exit 2) unless --force.
    Snapshots are evidence and are never deleted.

    Example: cloudir respond restore --case ./case-42 --action
    response-isolate-i-0abc123def4567890-20261128T061500Z --yes
    """
    from cloudir.aws import AwsOptions
    from cloudir.respond import run

    if retry_mode not in ("standard", "adaptive"):
        raise UsageError("--retry-mode must be standard or adaptive")
    options = AwsOptions(profile, region, endpoint_url, retry_mode=retry_mode)
    ref = run.CaseRef(case)
    response = run.restore(ref, run.aws_factory(options), action, force, yes, say)
    _respond_out(response, as_json, case)
