"""The command line: parse options, call one function, print, map errors to exit codes.

Heavy libraries (boto3, pyarrow, duckdb) are imported inside the commands that need
them so `cloudir --help` answers at once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cloudir import __version__
from cloudir.errors import (
    EXIT_EVIDENCE,
    EXIT_FINDINGS,
    EXIT_USAGE,
    CloudirError,
    EvidenceError,
    UsageError,
)

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="Incident response for AWS: capture evidence with chain of custody, "
    "build one timeline, query it.\n\n"
    "Example: cloudir capture cloudtrail --case ./case-42 --trail main --start 7d",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
capture_app = typer.Typer(
    help="Bring evidence into the case; every file is hashed into custody.jsonl.",
    no_args_is_help=True,
)
app.add_typer(capture_app, name="capture")
timeline_app = typer.Typer(
    help="Parse all evidence into the case's Parquet timeline.\n\n"
    "Example: cloudir timeline --case ./case-42",
    invoke_without_command=True,
)
app.add_typer(timeline_app, name="timeline")

_state: dict[str, Any] = {"debug": False, "wait": 0.0}

CaseOpt = Annotated[
    Path, typer.Option("--case", envvar="CLOUDIR_CASE", help="Case folder (or CLOUDIR_CASE).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
ProfileOpt = Annotated[str | None, typer.Option(help="AWS profile name.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="AWS endpoint (emulators, VPC endpoints)."
    ),
]
RetryOpt = Annotated[
    str, typer.Option("--retry-mode", help="botocore retry mode: standard or adaptive.")
]


def _say(message: str) -> None:
    """Messages often quote evidence (keys, paths, errors): always printed inert."""
    from cloudir.console import inert, stderr

    stderr.print(inert(message), markup=False)


def _out(message: str) -> None:
    """A result line on stdout; it may name evidence, so it is printed inert too."""
    from cloudir.console import inert

    print(inert(message))


def _space_problem(exc: BaseException) -> str | None:
    """A write that failed for lack of space, named with its file where one is known.

    The case's own writes already raise NoSpaceError; this catches the other stages'
    writes, through causes too, and the text of errors from libraries (DuckDB, Arrow)
    that report a full disk without an errno.
    """
    from cloudir.case import SPACE_REASONS

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in SPACE_REASONS:
            where = f" while writing {current.filename}" if current.filename else ""
            return SPACE_REASONS[current.errno] + where
        text = str(current)
        if "No space left on device" in text:
            return f"no space left on device ({text.strip().splitlines()[0][:300]})"
        current = current.__cause__ or current.__context__
    return None


def handled(fn: F) -> F:
    """One line on stderr and the contract's exit code; a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CloudirError as exc:
            if _state["debug"]:
                raise
            _say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted: only complete, hashed files were recorded; run it again to resume")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            space = _space_problem(exc)
            if space:
                _say(f"error: {space}")
            else:
                _say(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(EXIT_EVIDENCE) from None

    return wrapper  # type: ignore[return-value]


def _locks_case(
    creates: bool = False,
    when: Callable[[dict[str, Any]], bool] | None = None,
    adoptable: bool = True,
) -> Callable[[F], F]:
    """A command that changes the case holds its lock for its whole run (exit 2 naming
    the holder when another has it); `when` limits that to e.g. `--yes`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            case = kwargs.get("case")
            if case is None or (when is not None and not when(kwargs)):
                return fn(*args, **kwargs)
            from cloudir.case_lock import for_command

            with for_command(
                case,
                creates=creates,
                adopt_folder=kwargs.get("adopt_folder", False),
                adoptable=adoptable,
                title=kwargs.get("title"),
                examiner=kwargs.get("examiner"),
                wait=_state["wait"],
                say=_say,
            ):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _in_use_by(case: Path) -> str | None:
    from cloudir.case_lock import in_use_by

    return in_use_by(case)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _version(value: bool) -> None:
    if value:
        print(f"cloudir {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            envvar="CLOUDIR_WAIT",
            help="When another command is changing the case, wait up to SECONDS for it "
            "(default 0: exit 2 at once, naming it).",
        ),
    ] = 0,
) -> None:
    """Incident response for AWS."""
    _state["debug"] = debug
    _state["wait"] = wait


def _aws(profile: str | None, region: str | None, endpoint: str | None, retry: str, pool: int):
    from cloudir.aws import Aws, AwsOptions

    if retry not in ("standard", "adaptive"):
        raise UsageError("--retry-mode must be standard or adaptive")
    return Aws(AwsOptions(profile, region, endpoint, retry_mode=retry, pool_size=pool))


TitleOpt = Annotated[str | None, typer.Option(help="Case title when creating it.")]
ExaminerOpt = Annotated[str | None, typer.Option(help="Examiner when creating the case.")]
AdoptOpt = Annotated[
    bool,
    typer.Option(
        "--adopt-folder",
        help="Make the case in a folder that already holds other files (they stay as "
        "they are and are not evidence); without it such a folder is refused.",
    ),
]
FsTimelineOpt = Annotated[
    bool | None,
    typer.Option(
        "--fs-timeline/--no-fs-timeline",
        help="MACB rows for every file in disk images (default: images under 64 GiB).",
        show_default=False,
    ),
]


@capture_app.command("cloudtrail")
@handled
@_locks_case(creates=True)
def capture_cloudtrail(
    case: CaseOpt,
    bucket: Annotated[str | None, typer.Option(help="Trail bucket to read.")] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix before AWSLogs/.")] = "",
    trail: Annotated[
        str | None, typer.Option(help="Trail name: its bucket and prefix come from DescribeTrails.")
    ] = None,
    lookup: Annotated[
        bool, typer.Option("--lookup", help="Also read the LookupEvents API (last 90 days).")
    ] = False,
    account: Annotated[
        list[str] | None,
        typer.Option(metavar="ID", help="Account id to collect (repeatable; default all)."),
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option(
            metavar="REGION",
            help="Region to collect (repeatable; default all). The first is the API region.",
        ),
    ] = None,
    start: Annotated[str, typer.Option(help="Window start: ISO 8601 or age (7d, 36h).")] = "7d",
    end: Annotated[str | None, typer.Option(help="Window end (default now).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 16,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture CloudTrail logs from the trail's S3 bucket and/or LookupEvents.

    Example: cloudir capture cloudtrail --case ./case-42 --bucket org-trail --account
    111122223333 --region us-east-1 --start 2024-07-30 --end 2024-08-01
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture import cloudtrail
    from cloudir.console import count_progress
    from cloudir.timewindow import Window

    if not (bucket or trail or lookup):
        raise UsageError("say where to read: --bucket, --trail or --lookup")
    if bucket and trail:
        raise UsageError("give --bucket or --trail, not both")
    window = Window.parse(start, end)
    regions = region or []
    aws = _aws(profile, regions[0] if regions else None, endpoint_url, retry_mode, workers)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    results: list[Any] = []
    if bucket or trail:
        if trail:
            bucket, prefix = cloudtrail.resolve_trail(aws, trail)
            _say(f"trail {trail} delivers to s3://{bucket}/{prefix}")
        assert bucket is not None
        with count_progress() as bar:
            task = bar.add_task("downloading", total=None)
            results += cloudtrail.capture_s3(
                the_case,
                aws,
                bucket,
                prefix,
                account or [],
                regions,
                window,
                workers,
                identity,
                _say,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if lookup:
        with count_progress() as bar:
            task = bar.add_task("LookupEvents", total=None)
            results += cloudtrail.capture_lookup(
                the_case, aws, regions, window, identity, _say,
                on_page=lambda pages, events: bar.update(
                    task, completed=pages, description=f"LookupEvents: {events} events"
                ),
            )  # fmt: skip
    summary = [r.as_dict() for r in results]
    if as_json:
        _emit_json({"case": str(case), "window": window.as_dict(), "items": summary})
    else:
        for r in results:
            _out(
                f"{r.evidence_id}: {r.captured} captured, {r.skipped} already held, "
                f"{len(r.failed)} failed, {r.bytes} bytes"
            )
    for line in [w for r in results for w in getattr(r, "rewritten", [])][:20]:
        _say(f"rewritten: {line}")  # a delivered log changed after capture: both are kept
    failed = [f for r in results for f in r.failed]
    if failed:
        for line in failed[:20]:
            _say(f"failed: {line}")
        from cloudir.errors import CloudError

        raise CloudError(f"{len(failed)} log files could not be fetched; re-run to resume")


@capture_app.command("ebs")
@handled
@_locks_case(creates=True)
def capture_ebs(
    case: CaseOpt,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Describe this instance and snapshot all its EBS volumes at once."),
    ] = None,
    volume_id: Annotated[
        list[str] | None, typer.Option(metavar="VOL", help="Snapshot this volume (repeatable).")
    ] = None,
    snapshot_id: Annotated[
        list[str] | None,
        typer.Option(metavar="SNAP", help="Use this existing snapshot (repeatable)."),
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Read each snapshot into the case as image.raw.")
    ] = False,
    workers: Annotated[int, typer.Option(help="Parallel block downloads.")] = 32,
    share_with: Annotated[
        str | None,
        typer.Option(metavar="ACCOUNT", help="Let this account create volumes from them."),
    ] = None,
    copy_to_region: Annotated[
        str | None, typer.Option(metavar="REGION", help="Copy the snapshots into this region.")
    ] = None,
    kms_key_id: Annotated[
        str | None, typer.Option(help="KMS key for the copies (encrypted snapshots).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for snapshots (and again for copies).")
    ] = 1800,
    region: Annotated[str | None, typer.Option(help="AWS region of the instance.")] = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot EBS volumes, tagged with the case; optionally download, share or copy them.

    Exits 4 when --timeout passes first: the snapshots keep running in AWS, and running
    the command again with --snapshot-id picks them up.

    Example: cloudir capture ebs --case ./case-42 --region eu-west-1 --instance-id
    i-0abc123def4567890 --download --share-with 111122223333
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture.ebs import EbsRequest
    from cloudir.capture.ebs import capture_ebs as run
    from cloudir.console import TERMINAL

    request = EbsRequest(
        instance_id=instance_id,
        volume_ids=tuple(volume_id or ()),
        snapshot_ids=tuple(snapshot_id or ()),
        download=download,
        workers=workers,
        share_with=share_with,
        copy_to_region=copy_to_region,
        kms_key_id=kms_key_id,
        timeout=timeout,
    )
    request.check()
    aws = _aws(profile, region, endpoint_url, retry_mode, workers)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    result = run(the_case, aws, request, identity, _say, TERMINAL)
    if as_json:
        _emit_json({"case": str(case), **result.as_dict()})
        return
    if result.instance:
        _out(f"{result.instance.evidence_id}: {len(result.instance.files)} files")
    for snap in result.snapshots:
        line = f"{snap.evidence_id}: {snap.snapshot_id} of {snap.volume_id} {snap.state}"
        if snap.shared_with:
            line += f", shared with {', '.join(snap.shared_with)}"
        for copy in snap.copies:
            line += f", copied to {copy['region']} as {copy['snapshot_id']}"
        if snap.image:
            line += f", image {snap.image['path']} sha256 {snap.image['sha256']}"
        _out(line)


@capture_app.command("files")
@handled
@_locks_case(creates=True)
def capture_files(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to bring in.")],
    case: CaseOpt,
    kind: Annotated[
        str,
        typer.Option(help="Evidence kind: auto, cloudtrail, disk-image, container-image or files."),
    ] = "auto",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy evidence you already hold into the case; the originals are only read.

    Disk images (raw/dd, split raw, E01, VMDK, VHD, qcow2) and tar exports of a file
    system are opened by `cloudir timeline` through dissect.target.

    Example: cloudir capture files --case ./case-42 ~/Downloads/AWSLogs web-1.E01
    """
    from cloudir.analyze.parsers import capture_kinds, recognise_kind
    from cloudir.capture.files import capture_paths, refuse_case_overlap
    from cloudir.case import Case

    if kind not in (kinds := ["auto", *capture_kinds()]):
        raise UsageError(f"--kind must be {', '.join(kinds[:-1])} or {kinds[-1]}")
    refuse_case_overlap(case, paths)  # before the case folder is made
    the_case = Case.open_or_create(case, title=title, examiner=examiner)
    results = capture_paths(the_case, paths, kind, _say, recognise=recognise_kind)
    if as_json:
        _emit_json({"case": str(case), "items": [r.as_dict() for r in results]})
    else:
        for r in results:
            _out(
                f"{r.evidence_id} ({r.kind}): {r.captured} captured, {r.skipped} already held, "
                f"{r.bytes} bytes from {r.source}"
            )
    problems = sum(len(r.failed) + len(r.warnings) for r in results)
    if problems:
        raise EvidenceError(f"{problems} file(s) not captured as they were; see the lines above")


@capture_app.command("container")
@handled
@_locks_case(creates=True)
def capture_container(
    case: CaseOpt,
    containers: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME|ID", help="Containers to capture, by name or id."),
    ] = None,
    all_containers: Annotated[
        bool, typer.Option("--all", help="Every container on the engine, stopped ones too.")
    ] = False,
    running: Annotated[
        bool, typer.Option("--running", help="With --all: only the running ones.")
    ] = False,
    pause: Annotated[
        bool,
        typer.Option("--pause", help="Freeze each running container while it is captured."),
    ] = False,
    changed_only: Annotated[
        bool,
        typer.Option(
            "--changed-only", help="changed.tar of what the diff names instead of fs.tar."
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="Containers captured in parallel.")] = 4,
    docker_host: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Engine: unix://, tcp:// (TLS per DOCKER_TLS_VERIFY) or ssh:// "
            "(default DOCKER_HOST).",
        ),
    ] = None,
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture Docker containers: inspect, image, diff, logs, processes, file system.

    Exits 2 for a name the engine does not know (nothing is captured then), 4 when the
    engine cannot be reached or fails mid-capture (the item is marked capture-incomplete).

    Example: cloudir capture container --case ./case-42 --pause web-1 3f2a9c1e7b4d
    """
    from cloudir.capture import containers as capture
    from cloudir.case import Case
    from cloudir.console import TERMINAL

    request = capture.ContainerRequest(
        names=tuple(containers or ()),
        all=all_containers,
        running=running,
        pause=pause,
        changed_only=changed_only,
        workers=workers,
        docker_host=docker_host,
    )
    request.check()
    engine = capture.connect(docker_host, workers)
    chosen = capture.select(engine, request)
    the_case = Case.open_or_create(case, title=title, examiner=examiner)
    results = (
        capture.capture_containers(the_case, engine, chosen, request, TERMINAL) if chosen else []
    )
    if as_json:
        _emit_json({"case": str(case), "containers": [r.as_dict() for r in results]})
    else:
        if not chosen:
            _say(f"no containers to capture on {engine.host}")
        for r in results:
            _out(
                f"{r.evidence_id}: {len(r.files)} files, {r.bytes} bytes"
                + (", paused during capture" if r.paused else "")
                + ("" if r.complete else ", INCOMPLETE")
            )
            for note in r.notes:
                _say(f"{r.evidence_id}: {note}")
    capture.raise_if_incomplete(results, _say)


respond_app = typer.Typer(
    help="Contain an incident: every action prints its plan and changes nothing until "
    "--yes; with --yes each change and the state before it go to custody, and "
    "`respond restore` puts it back.\n\n"
    "Example: cloudir respond isolate --case ./case-42 --instance-id i-0abc123def4567890",
    no_args_is_help=True,
)
app.add_typer(respond_app, name="respond")
YesOpt = Annotated[
    bool, typer.Option("--yes", help="Carry out the plan (default: print it, change nothing).")
]
RegionOpt = Annotated[str | None, typer.Option(help="AWS region.")]


def _respond_out(response: Any, as_json: bool, case: Path) -> None:
    if as_json:
        _emit_json({"case": str(case), **response.as_dict()})
        return
    for plan in response.plans:
        for line in plan.lines():
            _out(line)
    if not response.applied and any(p.changes for p in response.plans):
        _out("plan only: nothing was changed; add --yes to carry it out")
    for outcome in response.outcomes:
        _out(f"{outcome.action_id}: {len(outcome.done)} change(s) done, recorded in custody")


@respond_app.command("isolate")
@handled
@_locks_case(creates=True, when=lambda kw: kw["yes"])
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

    aws = _aws(profile, region, endpoint_url, retry_mode, 10)
    ref = run.CaseRef(case, title, examiner)
    response = run.isolate(
        ref,
        aws,
        instance_id,
        list(allow_cidr or []),
        yes,
        _say,
        snapshot=not no_snapshot,
        replace=replace,
        keep_credentials=keep_credentials,
    )
    _respond_out(response, as_json, case)


@respond_app.command("disable-key")
@handled
@_locks_case(creates=True, when=lambda kw: kw["yes"])
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

    aws = _aws(profile, region, endpoint_url, retry_mode, 10)
    ref = run.CaseRef(case, title, examiner)
    response = run.disable_key(ref, aws, access_key_id, revoke_sessions, role, yes, _say)
    _respond_out(response, as_json, case)


@respond_app.command("restore")
@handled
@_locks_case(when=lambda kw: kw["yes"])
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
    response = run.restore(ref, run.aws_factory(options), action, force, yes, _say)
    _respond_out(response, as_json, case)


@timeline_app.callback()
@handled
@_locks_case(when=lambda kw: kw["ctx"].invoked_subcommand is None)
def timeline(
    ctx: typer.Context,
    case: Annotated[
        Path | None, typer.Option("--case", envvar="CLOUDIR_CASE", help="Case folder.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parser processes (default: all cores).")] = 0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 3 when any evidence is incomplete, missing or unreadable, or any "
            "file had parse errors (implausible times alone do not count).",
        ),
    ] = False,
    fs_timeline: FsTimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse all evidence into CASE/timeline/*.parquet (rebuilt on every run).

    Example: cloudir timeline --case ./case-42
    """
    if ctx.invoked_subcommand is not None:
        return
    if case is None:
        raise UsageError("--case is required (or set CLOUDIR_CASE)")
    from cloudir.analyze.timeline import build_timeline
    from cloudir.case import Case
    from cloudir.console import count_progress

    the_case = Case.open(case)
    with count_progress() as bar:
        task = bar.add_task("parsing evidence files", total=None)

        def progress(done: int, total: int, rows: int) -> None:
            bar.update(task, completed=done, total=total, description=f"parsed {rows} events")

        result = build_timeline(the_case, workers or None, progress, _parse_options(fs_timeline))
    if as_json:
        _emit_json(result.as_dict())
    else:
        _out(
            f"{result.rows} events from {result.files} files into {result.path} "
            f"({result.duplicates_dropped} duplicates dropped)"
        )
    if result.conflicting_copies["events"]:
        events = result.conflicting_copies["events"]
        _say(
            f"{events} {'event has' if events == 1 else 'events have'} copies that disagree, "
            "a sign of tampering: every version is kept; see conflicting_copies in summary.json"
        )
    if result.errors or (result.rows == 0 and result.files):
        _say(result.summary_line())
        if strict and result.strict_failures():
            raise typer.Exit(EXIT_EVIDENCE)


@timeline_app.command("export")
@handled
def timeline_export(
    case: CaseOpt,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Output file (default CASE/export/).")] = None,
) -> None:
    """Write the timeline in Timesketch's import format (message, datetime, timestamp_desc).

    Example: cloudir timeline export --case ./case-42 --format csv --out case-42.csv
    """
    from cloudir.analyze.query import export
    from cloudir.case import Case

    the_case = Case.open(case)
    if out is None:
        out = the_case.paths.export_file(fmt)
        out.parent.mkdir(exist_ok=True)
    rows = export(the_case, fmt, out)
    _out(f"{rows} rows written to {out}")


@app.command()
@handled
def query(
    sql: Annotated[str, typer.Argument(help="DuckDB SQL over the view `timeline`.")],
    case: CaseOpt,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
    width: Annotated[int, typer.Option(help="Longest cell shown in the table.")] = 80,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the rows to FILE instead (.csv, .json, .jsonl or .parquet).",
        ),
    ] = None,
) -> None:
    """Run read-only SQL over the timeline (no other files, no network, no settings).

    Example: cloudir query --case ./case-42 "SELECT user, count(*) FROM timeline GROUP BY 1"
    """
    from cloudir.analyze.query import run_query, write_result
    from cloudir.case import Case

    if output is not None:
        if as_json or as_csv:
            raise UsageError("--output writes a file; leave out --json and --csv")
        _out(f"{write_result(Case.open(case), sql, output)} rows written to {output}")
        return
    columns, rows = run_query(Case.open(case), sql)
    if as_json:
        _emit_json([dict(zip(columns, row, strict=True)) for row in rows])
    elif as_csv:
        import csv

        from cloudir.console import inert

        writer = csv.writer(sys.stdout)
        if sys.stdout.isatty():  # a terminal gets inert text; a pipe gets the exact values
            columns = [inert(c) for c in columns]
            rows = [tuple(inert(v) for v in row) for row in rows]
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        _print_table(columns, rows, width)


def _print_table(columns: list[str], rows: list[tuple[Any, ...]], width: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from cloudir.console import inert, stdout

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(Text(inert(column, width)))
    for row in rows:
        table.add_row(*[Text(inert(v, width)) for v in row])
    stdout.print(table)
    _say(f"{len(rows)} rows")


rules_app = typer.Typer(help="Inspect Sigma rules: what loads, what is skipped and why.")
app.add_typer(rules_app, name="rules")

RulesOpt = Annotated[
    list[Path] | None,
    typer.Option("--rules", metavar="PATH", help="Extra Sigma rule file or folder (repeatable)."),
]

NoBuiltinOpt = Annotated[
    bool, typer.Option("--no-builtin", help="Run only the rules given with --rules.")
]
FailOnOpt = Annotated[str, typer.Option(help="Exit 1 when a finding reaches this level.")]


@app.command()
@handled
@_locks_case()
def detect(
    case: CaseOpt,
    rules: RulesOpt = None,
    no_builtin: NoBuiltinOpt = False,
    fail_on: FailOnOpt = "high",
    as_json: JsonOpt = False,
) -> None:
    """Run Sigma rules over the timeline; write findings/findings.{json,parquet}.

    Example: cloudir detect --case ./case-42 --rules ./my-rules --fail-on medium
    """
    from cloudir.analyze import detect as engine
    from cloudir.case import Case

    if fail_on not in engine.LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(engine.LEVELS)}")
    the_case = Case.open(case)
    result = engine.detect(the_case, rules or [], builtin=not no_builtin)
    if as_json:
        sys.stdout.write(the_case.paths.findings_json.read_text())
    else:
        _print_findings(result.findings)
    _say_detection(result)
    if _reaches(result.findings, fail_on):
        raise typer.Exit(EXIT_FINDINGS)


def _say_detection(result: Any) -> None:
    from cloudir.analyze import detect as engine

    builtin_root = str(engine.BUILTIN_RULES)
    own = [s for s in result.rules.skipped if not s["path"].startswith(builtin_root)]
    for skipped in own:  # the user's own rules: each one named; built-ins: see `rules list`
        _say(f"skipped rule {_skipped_where(skipped)}: {skipped['reason']}")
    if len(own) < len(result.rules.skipped):
        _say(
            f"{len(result.rules.skipped) - len(own)} built-in rules not run; "
            "`cloudir rules list` says why"
        )
    reported = result.rules.reported
    correlations = sum(1 for r in reported if r.is_correlation)
    _say(
        f"{len(reported)} rules run ({correlations} correlations), "
        f"{len(result.rules.skipped)} skipped, {len(result.findings)} findings in {result.path}"
    )


def _reaches(findings: list[dict[str, Any]], fail_on: str) -> bool:
    from cloudir.analyze.detect import LEVELS

    return any(LEVELS.index(f["level"]) >= LEVELS.index(fail_on) for f in findings)


FormatOpt = Annotated[
    str, typer.Option("--format", help="Comma-separated: html, md, json (default all three).")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Folder for the report (default CASE/report).")
]


@app.command()
@handled
@_locks_case()
def report(
    case: CaseOpt, fmt: FormatOpt = "html,md,json", out: OutOpt = None, as_json: JsonOpt = False
) -> None:
    """Write the incident report (HTML, Markdown, JSON) from the case's findings.

    Example: cloudir report --case ./case-42 --format html,md --out ./handover
    """
    from cloudir.case import Case
    from cloudir.report.write import parse_formats, write_report

    written = write_report(Case.open(case), parse_formats(fmt), out)
    _report_written(written, as_json)


def _parse_options(fs_timeline: bool | None) -> Any:
    from cloudir.analyze.parsers import ParseOptions

    return ParseOptions(fs_timeline=fs_timeline)


def _report_written(written: dict[str, Path], as_json: bool) -> None:
    if as_json:
        _emit_json({fmt: str(path) for fmt, path in written.items()})
    else:
        for path in written.values():
            _out(str(path))


@app.command()
@handled
@_locks_case()
def analyze(
    case: CaseOpt,
    rules: RulesOpt = None,
    no_builtin: NoBuiltinOpt = False,
    fail_on: FailOnOpt = "high",
    fmt: FormatOpt = "html,md,json",
    out: OutOpt = None,
    workers: Annotated[int, typer.Option(help="Parser processes (default: all cores).")] = 0,
    fs_timeline: FsTimelineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Timeline, detect and report in one go; exits like detect (1 at --fail-on).

    Example: cloudir analyze --case ./case-42 --fail-on medium
    """
    from cloudir.analyze import detect as engine
    from cloudir.analyze.timeline import build_timeline
    from cloudir.case import Case
    from cloudir.console import count_progress
    from cloudir.report.write import parse_formats, write_report

    if fail_on not in engine.LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(engine.LEVELS)}")
    formats = parse_formats(fmt)
    the_case = Case.open(case)
    with count_progress() as bar:
        task = bar.add_task("timeline: parsing evidence", total=3)

        def progress(done: int, total: int, rows: int) -> None:
            bar.update(task, description=f"timeline: {rows} events from {done}/{total} files")

        timeline = build_timeline(the_case, workers or None, progress, _parse_options(fs_timeline))
        bar.update(task, completed=1, description="detect: running rules")
        detection = engine.detect(the_case, rules or [], builtin=not no_builtin)
        bar.update(task, completed=2, description="report: writing")
        written = write_report(the_case, formats, out)
        bar.update(task, completed=3, description="done")
    _say(f"timeline: {timeline.rows} events, {len(timeline.errors)} evidence problems skipped")
    if not as_json:
        _print_findings(detection.findings)
    _say_detection(detection)
    _report_written(written, as_json)
    if _reaches(detection.findings, fail_on):
        raise typer.Exit(EXIT_FINDINGS)


def _print_findings(findings: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from cloudir.console import inert, stdout

    table = Table(show_lines=False, pad_edge=False)
    table.add_column("level", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("first seen (UTC)", no_wrap=True)
    table.add_column("who", ratio=1)
    table.add_column("from", ratio=1)
    for f in findings:
        entities = f["entities"]
        who = list(dict.fromkeys(p.rsplit(":", 1)[-1] for p in entities["principals"]))[:2]
        table.add_row(
            Text(f["level"]),
            Text(inert(f["title"], 80)),
            Text(str(f["count"])),
            Text(f["first_seen"][:19].replace("T", " ")),
            Text(inert(", ".join(who), 50)),
            Text(inert(", ".join(entities["source_ips"][:3]), 50)),
        )
    stdout.print(table)


@rules_app.command("list")
@handled
def rules_list(
    rules: RulesOpt = None,
    no_builtin: Annotated[bool, typer.Option("--no-builtin", help="Only --rules.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the rules that load and those skipped, with reasons.

    Example: cloudir rules list --rules ./sigma/rules/cloud/aws
    """
    _rules_report(rules or [], not no_builtin, as_json)


@rules_app.command("validate")
@handled
def rules_validate(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or folders.")],
    as_json: JsonOpt = False,
) -> None:
    """Check that rules load and compile; exit 3 if any is skipped.

    Example: cloudir rules validate ./my-rules
    """
    if _rules_report(paths, False, as_json):
        raise typer.Exit(EXIT_EVIDENCE)


def _rule_kind(rule: Any) -> str:
    """`rule`, a correlation's type, or `feeds-only` for a base that only feeds one."""
    if rule.correlation is not None:
        return rule.correlation.kind
    return "rule" if rule.output else "feeds-only"


def _skipped_where(skipped: dict[str, Any]) -> str:
    """`title (file, document 2, line 14)`: enough to find one document in a long file."""
    where = [skipped["path"]]
    if skipped.get("document"):
        where.append(f"document {skipped['document']}, line {skipped['line']}")
    return f"{skipped['title'] or '-'} ({', '.join(where)})"


def _rules_report(paths: list[Path], builtin: bool, as_json: bool) -> int:
    from cloudir.analyze import detect as engine

    ruleset = engine.validate(paths, builtin)
    if as_json:
        _emit_json(
            {
                "loaded": [
                    {
                        "id": r.rule_id,
                        "title": r.title,
                        "level": r.level,
                        "path": r.path,
                        "kind": _rule_kind(r),
                    }
                    for r in ruleset.rules
                ],
                "skipped": ruleset.skipped,
            }
        )
    else:
        for r in ruleset.rules:
            _out(f"ok       {r.level:<13} {_rule_kind(r):<12} {r.title} ({r.path})")
        for skipped in ruleset.skipped:
            _out(f"SKIPPED  {_skipped_where(skipped)}: {skipped['reason']}")
    _say(f"{len(ruleset.rules)} rules load, {len(ruleset.skipped)} skipped")
    return len(ruleset.skipped)


@app.command()
@handled
@_locks_case(when=lambda kw: kw["repair"])
def verify(
    case: CaseOpt,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            metavar="SHA256",
            help="A custody head noted earlier, outside the case: fail unless custody "
            "still holds that line (catches removed or rewritten entries).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="First close a torn custody tail (a write cut short) with a "
            "custody-repaired entry; nothing else is written.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every evidence file against custody.jsonl; exit 3 on any difference.

    Example: cloudir verify --case ./case-42 --head 3f1c...e9
    """
    from cloudir.case import Case
    from cloudir.console import byte_progress, inert

    if head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", head):
        raise UsageError("--head takes the 64 hex digits verify printed as the custody head")
    the_case = Case.open(case)
    if repair and (closed := the_case.repair_custody_tail()):
        _say(f"repaired: {inert(closed['note'])}")
    with byte_progress() as bar:
        task = bar.add_task("hashing evidence", total=the_case.total_recorded_bytes())
        report = the_case.verify(on_bytes=lambda n: bar.advance(task, n), head=head)
    if as_json:
        _emit_json(report.as_dict())
    for path in report.changed:
        why = report.changed_reasons.get(path)
        _say(f"CHANGED   {inert(path)}" + (f" ({inert(why)})" if why else ""))
    for path in report.missing:
        _say(f"MISSING   {inert(path)}")
    busy = _in_use_by(case) if any(p.endswith(".partial") for p in report.unrecorded) else None
    for path in report.unrecorded:
        hint = " (an interrupted capture: re-run it)" if path.endswith(".partial") else ""
        if hint and busy:
            hint = f" (still being written: the case is in use by {busy})"
        _say(f"UNRECORDED {inert(path)}{hint}")
    for path, records in report.conflicts.items():
        hashes = ", ".join(f"{r.sha256} ({r.bytes} bytes)" for r in records)
        _say(f"CONFLICT  {inert(path)}: custody records {len(records)} hashes: {hashes}")
    for line in report.chain_errors + ([report.torn_tail] if report.torn_tail else []):
        _say(f"CUSTODY   {inert(line)}")
    for note in report.notes:
        _say(f"note: {inert(note)}")
    if not report.ok:
        raise typer.Exit(EXIT_EVIDENCE)
    if not as_json:
        print(f"ok: {report.checked} evidence files match custody.jsonl")
        print(f"custody head: sha256 {report.custody_head} (note it outside the case)")


@app.command()
@handled
@_locks_case(creates=True, adoptable=False)
def demo(
    case: Annotated[Path, typer.Option("--case", help="Case folder to create.")] = Path(
        "demo-case"
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier demo case in that folder.")
    ] = False,
) -> None:
    """Run the whole job against a local AWS emulator: no account, no network.

    Example: cloudir demo --case ./demo-case
    """
    from cloudir.demo import run_demo

    run_demo(case, _say, _print_findings, replace=force)


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # typer/click failures outside any command
        if os.environ.get("CLOUDIR_DEBUG") or "--debug" in sys.argv:
            raise
        from cloudir.console import inert

        print(f"error: {inert(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
