"""`cloudir capture ...`: bring evidence into the case (CloudTrail, EBS, files, containers)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.common import (
    AdoptOpt,
    CaseOpt,
    EndOpt,
    EndpointOpt,
    ExaminerOpt,
    JsonOpt,
    ProfileOpt,
    RetryOpt,
    StartOpt,
    TitleOpt,
    emit_json,
    handled,
    locks_case,
    open_aws,
    say,
    show,
)
from cloudir.errors import EvidenceError, UsageError

capture_app = typer.Typer(
    help="Bring evidence into the case; every file is hashed into custody.jsonl.",
    no_args_is_help=True,
)


@capture_app.command("cloudtrail")
@handled
@locks_case(creates=True)
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
    manifest: Annotated[
        bool,
        typer.Option(
            "--manifest",
            help="Pin the trail's objects by version (key, VersionId, ETag, size) in a "
            "manifest instead of copying them: for trails too large to copy; the timeline "
            "reads exactly those versions from S3.",
        ),
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
    start: StartOpt = "7d",
    end: EndOpt = None,
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

    Example (leave an org trail in S3): cloudir capture cloudtrail --case ./case-42
    --trail org-trail --manifest --start 30d
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture import cloudtrail
    from cloudir.console import count_progress
    from cloudir.timewindow import Window

    if not (bucket or trail or lookup):
        raise UsageError("say where to read: --bucket, --trail or --lookup")
    if bucket and trail:
        raise UsageError("give --bucket or --trail, not both")
    if manifest and not (bucket or trail):
        raise UsageError("--manifest pins a trail bucket's objects: give --bucket or --trail")
    window = Window.parse(start, end)
    regions = region or []
    aws = open_aws(profile, regions[0] if regions else None, endpoint_url, retry_mode, workers)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    results: list[Any] = []
    pinned_ids: set[str] = set()  # items pinned by --manifest: their notes are said above
    if bucket or trail:
        if trail:
            bucket, prefix = cloudtrail.resolve_trail(aws, trail)
            say(f"trail {trail} delivers to s3://{bucket}/{prefix}")
        assert bucket is not None
        if manifest:
            from cloudir.capture.cloudtrail_manifest import capture_manifest

            pinned = capture_manifest(
                the_case, aws, bucket, prefix, account or [], regions, window, identity, say
            )
            for line in [note for r in pinned for note in r.item.notes][:20]:
                say(f"in S3: {line}")  # logs rewritten or deleted after delivery
            results += pinned
            pinned_ids.update(r.evidence_id for r in pinned)
    if (bucket or trail) and not manifest:
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
                say,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if lookup:
        with count_progress() as bar:
            task = bar.add_task("LookupEvents", total=None)
            results += cloudtrail.capture_lookup(
                the_case, aws, regions, window, identity, say,
                on_page=lambda pages, events: bar.update(
                    task, completed=pages, description=f"LookupEvents: {events} events"
                ),
            )  # fmt: skip
    summary = [r.as_dict() for r in results]
    if as_json:
        emit_json({"case": str(case), "window": window.as_dict(), "items": summary})
    else:
        for r in results:
            show(
                f"{r.evidence_id}: {r.captured} captured, {r.skipped} already held, "
                f"{len(r.failed)} failed, {r.bytes} bytes"
            )
    copied = [r for r in results if r.evidence_id not in pinned_ids]
    for line in [w for r in copied for w in getattr(r, "rewritten", [])][:20]:
        say(f"rewritten: {line}")  # a delivered log changed after capture: both are kept
    failed = [f for r in results for f in r.failed]
    if failed:
        for line in failed[:20]:
            say(f"failed: {line}")
        from cloudir.errors import CloudError

        raise CloudError(f"{len(failed)} log files could not be fetched; re-run to resume")


@capture_app.command("ebs")
@handled
@locks_case(creates=True)
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
    aws = open_aws(profile, region, endpoint_url, retry_mode, workers)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    result = run(the_case, aws, request, identity, say, TERMINAL)
    if as_json:
        emit_json({"case": str(case), **result.as_dict()})
        return
    if result.instance:
        show(f"{result.instance.evidence_id}: {len(result.instance.files)} files")
    for snap in result.snapshots:
        line = f"{snap.evidence_id}: {snap.snapshot_id} of {snap.volume_id} {snap.state}"
        if snap.shared_with:
            line += f", shared with {', '.join(snap.shared_with)}"
        for copy in snap.copies:
            line += f", copied to {copy['region']} as {copy['snapshot_id']}"
        if snap.image:
            line += f", image {snap.image['path']} sha256 {snap.image['sha256']}"
        show(line)


@capture_app.command("logs")
@handled
@locks_case(creates=True)
def capture_logs(
    case: CaseOpt,
    log_group: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="CloudWatch Logs group to read (repeatable)."),
    ] = None,
    vpc_flow: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ID",
            help="VPC flow logs of this VPC, subnet or interface (or flow log fl- id, or "
            "all), from where they are delivered (repeatable).",
        ),
    ] = None,
    dns: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ID",
            help="Route 53 Resolver query logs of this VPC (or rqlc- config id, or all).",
        ),
    ] = None,
    alb: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Access logs of this load balancer (name or ARN)."),
    ] = None,
    s3_access: Annotated[
        list[str] | None,
        typer.Option(metavar="BUCKET", help="Server access logs of this S3 bucket."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel downloads from S3.")] = 16,
    filter_pattern: Annotated[
        str | None,
        typer.Option(
            "--filter",
            metavar="PATTERN",
            help="Only events matching this CloudWatch Logs filter pattern (its own syntax).",
        ),
    ] = None,
    stream_prefix: Annotated[
        str | None,
        typer.Option(metavar="PREFIX", help="Only the --log-group streams named PREFIX..."),
    ] = None,
    export_to: Annotated[
        str | None,
        typer.Option(
            metavar="S3URI",
            help="Export each --log-group through a CloudWatch Logs export task to "
            "s3://BUCKET[/PREFIX] (same region) and copy what it writes: for groups too "
            "large to page. No --filter.",
        ),
    ] = None,
    export_timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="How long to wait for an export task."),
    ] = 3600,
    region: Annotated[str | None, typer.Option(help="AWS region of the log groups.")] = None,
    start: StartOpt = "7d",
    end: EndOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture logs for a window: CloudWatch Logs groups, and the logs AWS services deliver.

    --vpc-flow, --dns, --alb and --s3-access find where the logs are delivered from the
    resource's own configuration: S3 folders are copied file by file (as CloudTrail's),
    CloudWatch Logs groups read as FilterLogEvents pages as received. Logging that is off
    is said. Run again with the same --start and --end to resume a capture cut short.

    --export-to has CloudWatch Logs export each --log-group's window to S3 (one task at a
    time per account; the task's answers are kept) and copies the files into the case;
    run again with the same absolute --start and --end to wait for a task still running
    and copy what is not yet held.

    Example: cloudir capture logs --case ./case-42 --region eu-west-1 --log-group
    /aws/lambda/billing-export --start 2024-07-30 --end 2024-08-01

    Example: cloudir capture logs --case ./case-42 --region eu-west-1 --log-group
    /ecs/web --export-to s3://ir-exports/case-42 --start 2024-07-01 --end 2024-08-01

    Example: cloudir capture logs --case ./case-42 --region eu-west-1 --vpc-flow
    vpc-0abc1234 --dns vpc-0abc1234 --alb web-prod --s3-access payroll-exports --start 2d
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture.log_group import capture_log_group, find_log_group
    from cloudir.capture.log_sources import DeliveredGroup
    from cloudir.console import count_progress
    from cloudir.timewindow import Window

    if not (log_group or vpc_flow or dns or alb or s3_access):
        raise UsageError(
            "say which logs to read: --log-group NAME, --vpc-flow ID, --dns ID, --alb NAME "
            "or --s3-access BUCKET (each repeatable)"
        )
    if stream_prefix and not log_group:
        raise UsageError("--stream-prefix narrows the groups named with --log-group NAME")
    destination = _export_destination(export_to, log_group, filter_pattern, export_timeout)
    window = Window.parse(start, end)
    aws = open_aws(profile, region, endpoint_url, retry_mode, workers)
    found = _delivered_logs(aws, vpc_flow, dns, alb, s3_access)
    groups = [DeliveredGroup(name, "") for name in log_group or []] + found.log_groups
    for group in groups:  # every name checked before the case is made or changed
        find_log_group(aws, group.name, region)
    if destination:
        from cloudir.capture.log_export import check_destination

        check_destination(aws, destination, region)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    for note in found.notes:
        say(note)
    results: list[Any] = []
    if found.folders:
        from cloudir.capture.s3_logs import capture_log_folders

        with count_progress() as bar:
            task = bar.add_task("delivered log files", total=None)
            results += capture_log_folders(
                the_case, aws, found.folders, window, workers, identity, say,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    for group in groups:
        if group.holds:
            say(f"{group.holds} is delivered to the log group {group.name}")
        with count_progress() as bar:
            task = bar.add_task(group.name, total=None)

            def on_page(pages: int, events: int, task: Any = task, name: str = group.name) -> None:
                bar.update(task, completed=pages, description=f"{name}: {events} events")

            named = not group.holds  # --filter is for the groups named with --log-group
            if named and destination:
                from cloudir.capture.log_export import capture_log_export

                results.append(
                    capture_log_export(
                        the_case, aws, group.name, window, identity, say, destination,
                        region, stream_prefix, export_timeout, workers,
                        on_progress=functools.partial(_progress, bar, task),
                    )
                )  # fmt: skip
                continue
            results.append(
                capture_log_group(
                    the_case, aws, group.name, window, identity, say,
                    filter_pattern if named else None, region, on_page,
                    stream_prefix=stream_prefix if named else None, kind=group.kind,
                    name="logs" if group.kind == "cloudwatch-logs" else group.kind,
                    meta=dict(group.meta),
                )
            )  # fmt: skip
    if as_json:
        emit_json(
            {"case": str(case), "window": window.as_dict(), "notes": found.notes,
             "items": [r.as_dict() for r in results]}
        )  # fmt: skip
    else:
        for r in results:
            show(f"{r.evidence_id}: {r.captured} captured, {r.skipped} already held, "
                 f"{len(r.failed)} failed, {r.bytes} bytes")  # fmt: skip
    failed = [f for r in results for f in r.failed]
    if failed:
        for line in failed[:20]:
            say(f"failed: {line}")
        from cloudir.errors import CloudError

        raise CloudError(f"{len(failed)} problem(s) left items incomplete; re-run to resume")


def _progress(bar: Any, task: Any, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


def _export_destination(
    export_to: str | None,
    log_group: list[str] | None,
    filter_pattern: str | None,
    timeout: float,
) -> Any:
    """--export-to's bucket and prefix, or a usage error for what cannot go with it."""
    if export_to is None:
        return None
    from cloudir.capture.log_export import Destination

    if not log_group:
        raise UsageError("--export-to exports the groups named with --log-group NAME")
    if filter_pattern:
        raise UsageError(
            "--filter cannot go with --export-to: an export task takes no filter pattern "
            "and copies every event of the window; filter in the timeline (cloudir query), "
            "or drop --export-to to page with the filter"
        )
    if not timeout > 0:
        raise UsageError("--export-timeout must be a number of seconds above 0")
    return Destination.parse(export_to)


def _delivered_logs(
    aws: Any,
    vpc_flow: list[str] | None,
    dns: list[str] | None,
    alb: list[str] | None,
    s3_access: list[str] | None,
) -> Any:
    """Where each named resource's logs are delivered, from its configuration."""
    from cloudir.aws import call, caller_of
    from cloudir.capture import log_sources

    found = log_sources.Found()
    if not (vpc_flow or dns or alb or s3_access):
        return found
    identity = caller_of(call("sts:GetCallerIdentity", aws.client("sts").get_caller_identity))
    account, region = identity.get("Account", "unknown"), aws.region
    if vpc_flow:
        found.add(log_sources.flow_logs(aws, vpc_flow, account, region))
    if dns:
        found.add(log_sources.resolver_query_logs(aws, dns, account, region))
    if alb:
        found.add(log_sources.load_balancer_logs(aws, alb, account, region))
    if s3_access:
        found.add(log_sources.s3_access_logs(aws, s3_access, account, region))
    return found


@capture_app.command("eks")
@handled
@locks_case(creates=True)
def capture_eks(
    clusters: Annotated[list[str], typer.Argument(metavar="CLUSTER...", help="EKS clusters.")],
    case: CaseOpt,
    region: Annotated[str | None, typer.Option(help="AWS region of the clusters.")] = None,
    start: StartOpt = "7d",
    end: EndOpt = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture EKS clusters: their configuration and the control plane's audit log.

    The audit log (kube-apiserver-audit streams of /aws/eks/CLUSTER/cluster) is read for
    the window as CloudWatch Logs pages; a cluster with audit logging off is said so.

    Example: cloudir capture eks --case ./case-42 --region eu-west-1 prod-cluster --start 2d
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture import eks
    from cloudir.console import count_progress
    from cloudir.timewindow import Window

    window = Window.parse(start, end)
    aws = open_aws(profile, region, endpoint_url, retry_mode, 4)
    for cluster in clusters:  # every name checked before the case is made or changed
        eks.describe_cluster(aws, cluster, region)
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    results = []
    for cluster in clusters:
        with count_progress() as bar:
            task = bar.add_task(f"{cluster} audit log", total=None)

            def on_page(pages: int, events: int, task: Any = task, name: str = cluster) -> None:
                bar.update(task, completed=pages, description=f"{name}: {events} audit events")

            results.append(
                eks.capture_eks(the_case, aws, cluster, window, identity, say, region, on_page)
            )
    if as_json:
        emit_json(
            {"case": str(case), "window": window.as_dict(), "items": [r.as_dict() for r in results]}
        )
        return
    for r in results:
        audit = f"{r.audit.events} audit events" if r.audit else "no audit log"
        show(f"{r.evidence_id}: {r.cluster}, {audit}")


@capture_app.command("lambda")
@handled
@locks_case(creates=True)
def capture_lambda(
    case: CaseOpt,
    functions: Annotated[
        list[str] | None,
        typer.Argument(metavar="FUNCTION", help="Functions to capture, by name or ARN."),
    ] = None,
    all_functions: Annotated[
        bool, typer.Option("--all", help="Every function of the region.")
    ] = False,
    region: Annotated[str | None, typer.Option(help="AWS region of the functions.")] = None,
    start: Annotated[str, typer.Option(help="Log window start: ISO 8601 or age (7d, 36h).")] = "7d",
    end: Annotated[str | None, typer.Option(help="Log window end (default now).")] = None,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    retry_mode: RetryOpt = "adaptive",
    title: TitleOpt = None,
    examiner: ExaminerOpt = None,
    adopt_folder: AdoptOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Capture Lambda functions: configuration, code (hash-checked), layers, policy, logs.

    One evidence item per function (GetFunction, the code package checked against its
    CodeSha256, versions, aliases, resource policy, function URL, event source mappings,
    each layer and its package; every alias's and published version's own policy and
    every alias's own URL), all as received; the function's log group for
    --start/--end becomes an item of its own. Nothing in a package is unpacked or run.

    Example: cloudir capture lambda billing-export --case ./case-42 --start 30d

    Example: cloudir capture lambda --all --case ./case-42 --region eu-west-1
    """
    from cloudir.aws import open_case_as_caller
    from cloudir.capture import lambda_functions as capture
    from cloudir.timewindow import Window

    if bool(functions) == all_functions:
        raise UsageError("name the functions to capture, or give --all (not both)")
    window = Window.parse(start, end)
    aws = open_aws(profile, region, endpoint_url, retry_mode, 4)
    names = list(functions or [])
    if all_functions:
        names = capture.list_functions(aws, region)
    else:
        capture.check_functions(aws, names, region)  # before the case is made or changed
    if not names:
        say("no Lambda functions in this account and region; nothing captured")
        return
    the_case, identity = open_case_as_caller(aws, case, title, examiner)
    results = [
        capture.capture_function(the_case, aws, name, window, identity, say, region)
        for name in names
    ]
    if as_json:
        emit_json(
            {"case": str(case), "window": window.as_dict(), "items": [r.as_dict() for r in results]}
        )
    else:
        for r in results:
            logs = r.log_group.evidence_id if r.log_group else "no log group"
            show(
                f"{r.evidence_id}: {r.function} code {r.code}, {r.layers} layers, "
                f"{r.versions} versions, {r.aliases} aliases, "
                f"{r.qualifier_policies} of {r.qualifiers} qualifiers with a policy, "
                f"{len(r.qualifier_url_auth_types)} alias URLs, "
                f"{r.urls_auth_none} URLs with auth NONE, logs: {logs}"
            )
            for note in r.notes:
                say(f"{r.evidence_id}: {note}")  # no policy, no URL, an image function
    failed = [f"{r.function}: {problem}" for r in results for problem in r.failed]
    if failed:
        for line in failed[:20]:
            say(f"incomplete: {line}")
        raise EvidenceError(f"{len(failed)} problem(s): items left incomplete; see above")


@capture_app.command("files")
@handled
@locks_case(creates=True)
def capture_files(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to bring in.")],
    case: CaseOpt,
    kind: Annotated[
        str,
        typer.Option(
            help="Evidence kind: auto (recognised by content), or one a parser declares: "
            "cloudtrail, disk-image, container-image, alert (a GuardDuty or Security Hub "
            "finding document), route53-resolver, cloudwatch-logs, vpc-flow, s3-access, "
            "alb-access, files, ... (a wrong one lists them all)."
        ),
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
    results = capture_paths(the_case, paths, kind, say, recognise=recognise_kind)
    if as_json:
        emit_json({"case": str(case), "items": [r.as_dict() for r in results]})
    else:
        for r in results:
            show(
                f"{r.evidence_id} ({r.kind}): {r.captured} captured, {r.skipped} already held, "
                f"{r.bytes} bytes from {r.source}"
            )
    problems = sum(len(r.failed) + len(r.warnings) for r in results)
    if problems:
        raise EvidenceError(f"{problems} file(s) not captured as they were; see the lines above")


@capture_app.command("container")
@handled
@locks_case(creates=True)
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
        emit_json({"case": str(case), "containers": [r.as_dict() for r in results]})
    else:
        if not chosen:
            say(f"no containers to capture on {engine.host}")
        for r in results:
            show(
                f"{r.evidence_id}: {len(r.files)} files, {r.bytes} bytes"
                + (", paused during capture" if r.paused else "")
                + ("" if r.complete else ", INCOMPLETE")
            )
            for note in r.notes:
                say(f"{r.evidence_id}: {note}")
    capture.raise_if_incomplete(results, say)
