"""EBS capture: the instance as AWS describes it, snapshots of its disks, and (on request)
each snapshot's blocks as a raw image in the case.

A snapshot is the first thing a responder takes: it freezes the disks inside AWS in
seconds, while the instance may still be running and may be terminated by the attacker or
by autoscaling at any moment. The instance's description (tags, instance profile,
security groups, network interfaces, console output) is captured first, because it is
lost with the instance. Every API response is stored as JSON evidence and every call that
changes something in the account (CreateSnapshot(s), CreateTags, ModifySnapshotAttribute,
CopySnapshot) is in custody with its request id, so the account's CloudTrail and the case
tell the same story.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudir import __version__
from cloudir.aws import Aws, call, error_code, request_id, tag_list
from cloudir.case import Case, FileRecord
from cloudir.custody_actions import CustodyAction, read_action
from cloudir.errors import CloudError, UsageError
from cloudir.evidence_item import EvidenceItem
from cloudir.progress import NO_PROGRESS, Progress, Reporter

POLL_SECONDS = 15.0  # DescribeSnapshots is cheap, but progress only moves every few seconds
TAG_VALUE_LIMIT = 256
_ACCOUNT = re.compile(r"^\d{12}$")

Describe = Callable[[list[str]], list[dict[str, Any]]]
OnSnapshots = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class EbsRequest:
    """What the responder asked for: exactly one of the three sources, then the options."""

    instance_id: str | None = None
    volume_ids: tuple[str, ...] = ()
    snapshot_ids: tuple[str, ...] = ()
    download: bool = False
    workers: int = 32
    share_with: str | None = None
    copy_to_region: str | None = None
    kms_key_id: str | None = None
    timeout: float = 1800.0
    poll: float = POLL_SECONDS

    def check(self) -> None:
        """Usage errors (exit 2) before any call reaches AWS."""
        sources = sum(bool(s) for s in (self.instance_id, self.volume_ids, self.snapshot_ids))
        if sources != 1:
            raise UsageError("give exactly one of --instance-id, --volume-id or --snapshot-id")
        if self.share_with is not None and not _ACCOUNT.match(self.share_with):
            raise UsageError(f"--share-with must be a 12-digit account id, not {self.share_with!r}")
        if self.kms_key_id and not self.copy_to_region:
            raise UsageError("--kms-key-id only applies to --copy-to-region")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")


@dataclass
class InstanceCapture:
    """The `ec2-<instance-id>` item: what the instance looked like when captured."""

    item: EvidenceItem
    instance_id: str
    volume_ids: list[str] = field(default_factory=list)

    @property
    def evidence_id(self) -> str:
        return self.item.evidence_id

    @property
    def files(self) -> list[str]:
        return self.item.files

    @property
    def skipped(self) -> list[str]:
        """What the API would not give (console output), each a capture-skipped entry."""
        return self.item.skip_reasons

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "instance_id": self.instance_id,
            "volume_ids": self.volume_ids,
            "files": self.files,
            "skipped": self.skipped,
        }


@dataclass
class SnapshotCapture:
    """One snapshot and everything this run did with it."""

    snapshot_id: str
    volume_id: str | None
    instance_id: str | None
    taken_by_cloudir: bool
    request_id: str | None = None
    start_time: str | None = None
    evidence_id: str = ""
    state: str = "pending"
    progress: str = ""
    encrypted: bool = False
    kms_key_id: str | None = None
    volume_size_gib: int | None = None
    shared_with: list[str] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    image: dict[str, Any] | None = None
    volume: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.evidence_id = self.evidence_id or f"ebs-{self.snapshot_id}"

    def update(self, description: dict[str, Any]) -> None:
        self.state = description.get("State", self.state)
        self.progress = description.get("Progress", self.progress)
        self.encrypted = bool(description.get("Encrypted", self.encrypted))
        self.kms_key_id = description.get("KmsKeyId", self.kms_key_id)
        self.volume_size_gib = description.get("VolumeSize", self.volume_size_gib)
        self.volume_id = self.volume_id or description.get("VolumeId")
        if description.get("StartTime") and not self.start_time:
            self.start_time = _iso(description["StartTime"])

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "volume"}


@dataclass
class EbsResult:
    region: str
    instance: InstanceCapture | None
    snapshots: list[SnapshotCapture]

    def as_dict(self) -> dict[str, Any]:
        items = [self.instance.evidence_id] if self.instance else []
        items += [s.evidence_id for s in self.snapshots]
        return {
            "region": self.region,
            "instance": self.instance.as_dict() if self.instance else None,
            "snapshots": [s.as_dict() for s in self.snapshots],
            "items": items,
            "images": [
                {"snapshot_id": s.snapshot_id, "evidence_id": s.evidence_id, **s.image}
                for s in self.snapshots
                if s.image
            ],
        }


class SnapshotTimeout(CloudError):
    """The wait ended before AWS finished; the snapshots themselves carry on in AWS."""

    def __init__(self, message: str, pending: list[str], latest: dict[str, dict[str, Any]]) -> None:
        super().__init__(message)
        self.pending = pending
        self.latest = latest


# -- the whole command ---------------------------------------------------------------
def capture_ebs(
    case: Case,
    aws: Aws,
    request: EbsRequest,
    identity: dict[str, str],
    report: Reporter,
    progress: Progress = NO_PROGRESS,
) -> EbsResult:
    """Describe, snapshot, wait, record; then share, copy and download as asked.

    `progress` shows the waits (percent per snapshot, per copy) and downloads (bytes).
    """
    request.check()
    ec2 = aws.client("ec2")
    instance: InstanceCapture | None = None
    if request.snapshot_ids:
        snapshots = existing_snapshots(case, ec2, aws.region, list(request.snapshot_ids))
    else:
        if request.instance_id:
            instance, volumes = capture_instance(
                case, ec2, aws.region, request.instance_id, identity
            )
            report(f"{instance.evidence_id}: {len(instance.files)} files describe the instance")
            for note in instance.skipped:
                report(f"skipped: {note}")
        else:
            volumes = describe_volumes(ec2, list(request.volume_ids))
        snapshots = take_snapshots(case, ec2, aws.region, volumes, request.instance_id, report)
    if not snapshots:
        report("no EBS volumes to snapshot")
        return EbsResult(aws.region, instance, [])
    _wait_and_record(case, ec2, aws.region, snapshots, identity, request, report, progress)
    for snap in snapshots:
        if request.share_with:
            share_snapshot(case, ec2, snap, request.share_with, report)
        if request.copy_to_region:
            start_copy(case, aws, snap, request.copy_to_region, request.kms_key_id, report)
    if request.download:
        for snap in snapshots:
            snap.image = download(case, aws, snap, request.workers, report, progress)
    if request.copy_to_region:
        wait_for_copies(case, aws, snapshots, request, progress)
    return EbsResult(aws.region, instance, snapshots)


# -- the instance --------------------------------------------------------------------
def capture_instance(
    case: Case, ec2: Any, region: str, instance_id: str, identity: dict[str, str]
) -> tuple[InstanceCapture, list[dict[str, Any]]]:
    """Store DescribeInstances, DescribeVolumes and the console output as JSON evidence.

    The console output often holds the boot log and cloud-init output an attacker cannot
    edit from inside; when the API has none, or the caller may not read it, that is a
    noted skip, not a failure.
    """
    try:
        described = call("ec2:DescribeInstances", ec2.describe_instances, InstanceIds=[instance_id])
    except CloudError as exc:
        raise CloudError(f"{exc} (looked in {region}; pass --region)") from exc
    reservation = described["Reservations"][0]
    found = reservation["Instances"][0]
    evidence_id = case.unique_evidence_id(f"ec2-{instance_id}")
    meta = {
        "kind": "ec2-instance",
        "source": {
            "type": "ec2-instance",
            "instance_id": instance_id,
            "region": region,
            "account": reservation.get("OwnerId"),
        },
        "caller_identity": identity,
        "instance": _instance_summary(found),
    }
    summary = functools.partial(_instance_note, instance_id)
    with case.item(evidence_id, meta, summary=summary) as item:
        instance = InstanceCapture(item, instance_id)
        _store_response(instance, "describe-instances.json", "ec2:DescribeInstances", described)
        instance.volume_ids = [
            m["Ebs"]["VolumeId"] for m in found.get("BlockDeviceMappings", []) if "Ebs" in m
        ]
        volumes: list[dict[str, Any]] = []
        if instance.volume_ids:
            resp = call("ec2:DescribeVolumes", ec2.describe_volumes, VolumeIds=instance.volume_ids)
            _store_response(instance, "describe-volumes.json", "ec2:DescribeVolumes", resp)
            volumes = resp["Volumes"]
        _capture_console(ec2, instance)
    return instance, volumes


def _instance_note(instance_id: str, item: EvidenceItem) -> str:
    text = f"{instance_id}: {len(item.files)} files, {len(item.skip_reasons)} skipped"
    return "; ".join([text, *item.problems])


def _instance_summary(found: dict[str, Any]) -> dict[str, Any]:
    """The facts a responder reads first, lifted from DescribeInstances into meta.json."""
    return {
        "state": found.get("State", {}).get("Name"),
        "launch_time": _iso(found.get("LaunchTime")),
        "image_id": found.get("ImageId"),
        "instance_type": found.get("InstanceType"),
        "vpc_id": found.get("VpcId"),
        "subnet_id": found.get("SubnetId"),
        "private_ip": found.get("PrivateIpAddress"),
        "public_ip": found.get("PublicIpAddress"),
        "key_name": found.get("KeyName"),
        "tags": {t["Key"]: t["Value"] for t in found.get("Tags", [])},
        "iam_instance_profile": found.get("IamInstanceProfile"),
        "security_groups": found.get("SecurityGroups", []),
        "network_interfaces": [
            {
                "id": eni.get("NetworkInterfaceId"),
                "mac": eni.get("MacAddress"),
                "private_ips": [
                    p.get("PrivateIpAddress") for p in eni.get("PrivateIpAddresses", [])
                ],
                "public_ip": eni.get("Association", {}).get("PublicIp"),
                "groups": [g.get("GroupId") for g in eni.get("Groups", [])],
            }
            for eni in found.get("NetworkInterfaces", [])
        ],
        "block_devices": found.get("BlockDeviceMappings", []),
    }


def _capture_console(ec2: Any, instance: InstanceCapture) -> None:
    item = instance.item
    try:
        resp = call("ec2:GetConsoleOutput", ec2.get_console_output, InstanceId=instance.instance_id)
    except CloudError as exc:
        item.skip(f"console output not captured: {exc}")
        return
    if not resp.get("Output"):
        item.skip("console output not captured: the API returned none (yet)")
        return
    _store_response(instance, "console-output.json", "ec2:GetConsoleOutput", resp)
    text = resp["Output"].encode("utf-8", "surrogateescape")
    source = _api_source(instance, "ec2:GetConsoleOutput", resp)
    item.store("console-output.txt", text, source=source, note="Output field as text")


def _store_response(
    instance: InstanceCapture, name: str, api: str, resp: dict[str, Any]
) -> FileRecord:
    return instance.item.store(name, _as_json(resp), source=_api_source(instance, api, resp))


def _api_source(instance: InstanceCapture, api: str, resp: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "ec2-api",
        "api": api,
        "instance_id": instance.instance_id,
        "request_id": request_id(resp),
    }


def describe_volumes(ec2: Any, volume_ids: list[str]) -> list[dict[str, Any]]:
    return call("ec2:DescribeVolumes", ec2.describe_volumes, VolumeIds=volume_ids)["Volumes"]


# -- taking snapshots ------------------------------------------------------------------
def snapshot_tags(case: Case, volume_id: str | None, instance_id: str | None) -> dict[str, str]:
    """Tags that tie a snapshot in the account back to this case and this capture."""
    tags = {
        "Name": f"cloudir {case.info['id']} {volume_id or ''}".strip(),
        "cloudir:case": case.info["id"],
        "cloudir:source-volume": volume_id or "",
        "cloudir:source-instance": instance_id or "",
        "cloudir:examiner": case.info.get("examiner", ""),
        "cloudir:version": __version__,
    }
    return {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items() if v}


def take_snapshots(
    case: Case,
    ec2: Any,
    region: str,
    volumes: list[dict[str, Any]],
    instance_id: str | None,
    report: Reporter,
) -> list[SnapshotCapture]:
    """Snapshot the instance's volumes in one CreateSnapshots call, else each volume.

    CreateSnapshots takes all of an instance's volumes at the same instant (crash
    consistent across volumes), which matters when a file system or LVM spans disks.
    """
    if not volumes:
        return []
    by_id = {v["VolumeId"]: v for v in volumes}
    if instance_id:
        common = {k: v for k, v in snapshot_tags(case, None, instance_id).items() if k != "Name"}
        resp = call(
            "ec2:CreateSnapshots",
            ec2.create_snapshots,
            InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
            Description=f"cloudir case {case.info['id']}: volumes of {instance_id}",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(common)}],
        )
        taken = [_started(i, instance_id, by_id, request_id(resp)) for i in resp["Snapshots"]]
        for snap in taken:  # every snapshot that exists is in custody before anything can fail
            _record_started(case, region, snap, "ec2:CreateSnapshots", common)
        for snap in taken:  # the per-volume tags CreateSnapshots cannot set itself
            extra = {
                k: v
                for k, v in snapshot_tags(case, snap.volume_id, instance_id).items()
                if k not in common
            }
            tag_resp = call(
                "ec2:CreateTags",
                ec2.create_tags,
                Resources=[snap.snapshot_id],
                Tags=tag_list(extra),
            )
            case.record(
                CustodyAction.TAG,
                snap.evidence_id,
                [],
                note=f"tagged {snap.snapshot_id} with its source volume",
                source={"snapshot_id": snap.snapshot_id, "tags": extra,
                        "request_id": request_id(tag_resp)},
            )  # fmt: skip
    else:
        taken = []
        for volume in volumes:
            attached = [a.get("InstanceId") for a in volume.get("Attachments", [])]
            attached_to = attached[0] if attached else None
            tags = snapshot_tags(case, volume["VolumeId"], attached_to)
            info = call(
                "ec2:CreateSnapshot",
                ec2.create_snapshot,
                VolumeId=volume["VolumeId"],
                Description=f"cloudir case {case.info['id']}: {volume['VolumeId']}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )
            snap = _started(info, attached_to, by_id, request_id(info))
            _record_started(case, region, snap, "ec2:CreateSnapshot", tags)
            taken.append(snap)
    for snap in taken:
        report(f"snapshot {snap.snapshot_id} of {snap.volume_id} started at {snap.start_time}")
    return taken


def _started(
    info: dict[str, Any],
    instance_id: str | None,
    volumes: dict[str, dict[str, Any]],
    request_id: str | None,
) -> SnapshotCapture:
    snap = SnapshotCapture(
        info["SnapshotId"],
        info.get("VolumeId"),
        instance_id,
        taken_by_cloudir=True,
        request_id=request_id,
    )
    snap.update(info)
    snap.volume = volumes.get(snap.volume_id or "")
    return snap


def _record_started(
    case: Case, region: str, snap: SnapshotCapture, api: str, tags: dict[str, str]
) -> None:
    case.record(
        CustodyAction.SNAPSHOT,
        snap.evidence_id,
        [],
        note=f"{snap.snapshot_id} of {snap.volume_id} started",
        source={
            "api": api,
            "region": region,
            "snapshot_id": snap.snapshot_id,
            "volume_id": snap.volume_id,
            "instance_id": snap.instance_id,
            "start_time": snap.start_time,
            "request_id": snap.request_id,
            "tags": tags,
        },
    )


def existing_snapshots(
    case: Case, ec2: Any, region: str, snapshot_ids: list[str]
) -> list[SnapshotCapture]:
    """Snapshots someone already took: described and recorded, never re-taken."""
    resp = call("ec2:DescribeSnapshots", ec2.describe_snapshots, SnapshotIds=snapshot_ids)
    by_id = {s["SnapshotId"]: s for s in resp.get("Snapshots", [])}
    missing = [s for s in snapshot_ids if s not in by_id]
    if missing:
        raise CloudError(f"snapshot(s) not found in {region}: {', '.join(missing)}")
    found = []
    for snapshot_id in dict.fromkeys(snapshot_ids):
        info = by_id[snapshot_id]
        tags = {t["Key"]: t["Value"] for t in info.get("Tags", [])}
        snap = SnapshotCapture(
            snapshot_id,
            info.get("VolumeId"),
            tags.get("cloudir:source-instance"),
            taken_by_cloudir=False,
            request_id=request_id(resp),
        )
        snap.update(info)
        case.record(
            CustodyAction.SNAPSHOT_DESCRIBED,
            snap.evidence_id,
            [],
            note=f"existing snapshot {snapshot_id} (owner {info.get('OwnerId')})",
            source={
                "api": "ec2:DescribeSnapshots",
                "region": region,
                "snapshot_id": snapshot_id,
                "volume_id": snap.volume_id,
                "start_time": snap.start_time,
                "owner_id": info.get("OwnerId"),
                "request_id": snap.request_id,
            },
        )
        found.append(snap)
    return found


# -- waiting ---------------------------------------------------------------------------
def wait_for_snapshots(
    describe: Describe,
    snapshot_ids: list[str],
    timeout: float,
    on_update: OnSnapshots | None = None,
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, dict[str, Any]]:
    """Poll until every snapshot is completed; raise SnapshotTimeout naming the rest.

    A snapshot in state `error` ends the wait at once: AWS will not finish it.
    """
    deadline = clock() + timeout
    latest: dict[str, dict[str, Any]] = {}
    while True:
        pending = [s for s in snapshot_ids if latest.get(s, {}).get("State") != "completed"]
        if pending:
            for info in describe(pending):
                latest[info["SnapshotId"]] = info
        failed = [latest[s] for s in pending if latest.get(s, {}).get("State") == "error"]
        if failed:
            names = ", ".join(f"{s['SnapshotId']} ({s.get('StateMessage', 'no reason')})"
                              for s in failed)  # fmt: skip
            raise CloudError(f"AWS could not complete snapshot(s): {names}")
        if on_update:
            on_update(list(latest.values()))
        pending = [s for s in snapshot_ids if latest.get(s, {}).get("State") != "completed"]
        if not pending:
            return latest
        left = deadline - clock()
        if left <= 0:
            shown = ", ".join(f"{s} {latest.get(s, {}).get('Progress') or '0%'}" for s in pending)
            raise SnapshotTimeout(
                f"gave up waiting after {timeout:g}s; still pending: {shown}. "
                "They keep running in AWS",
                pending,
                latest,
            )
        sleep(min(poll, left))


def _describe_tolerant(ec2: Any) -> Describe:
    """DescribeSnapshots that treats a just-created, not-yet-visible snapshot as pending."""

    def describe(ids: list[str]) -> list[dict[str, Any]]:
        try:
            return call("ec2:DescribeSnapshots", ec2.describe_snapshots, SnapshotIds=ids)[
                "Snapshots"
            ]
        except CloudError as exc:
            if error_code(exc) == "InvalidSnapshot.NotFound":  # eventual consistency
                return []
            raise

    return describe


def _wait_and_record(
    case: Case,
    ec2: Any,
    region: str,
    snapshots: list[SnapshotCapture],
    identity: dict[str, str],
    request: EbsRequest,
    report: Reporter,
    progress: Progress,
) -> None:
    """Wait with a progress line per snapshot, then open one `ebs-<id>` item for each.

    On timeout the completed ones still become items, and the message names the command
    that picks every snapshot up again.
    """
    by_id = {s.snapshot_id: s for s in snapshots}
    with progress.bars("percent") as bars:
        lines = {
            s.snapshot_id: bars.add(f"snapshot {s.snapshot_id} of {s.volume_id}", total=100)
            for s in snapshots
        }

        def shown(latest: list[dict[str, Any]]) -> None:
            for info in latest:
                by_id[info["SnapshotId"]].update(info)
                lines[info["SnapshotId"]].update(_percent(info.get("Progress")))

        try:
            latest = wait_for_snapshots(
                _describe_tolerant(ec2), list(by_id), request.timeout, shown, request.poll
            )
        except SnapshotTimeout as exc:
            for snap in snapshots:
                if snap.snapshot_id in exc.pending:
                    case.record(
                        CustodyAction.SNAPSHOT_PENDING,
                        snap.evidence_id,
                        [],
                        note=f"{snap.snapshot_id} still {snap.state} at {snap.progress or '0%'} "
                        f"when the wait ended after {request.timeout:g}s; it continues in AWS",
                    )
                else:
                    described = exc.latest[snap.snapshot_id]
                    _open_snapshot_item(case, region, snap, identity, described)
            again = " ".join(f"--snapshot-id {s.snapshot_id}" for s in snapshots)
            raise CloudError(
                f"{exc}; run `cloudir capture ebs --case {case.root} {again}` "
                "(with the same options) once they complete"
            ) from exc
    for snap in snapshots:
        snap.update(latest[snap.snapshot_id])
        _open_snapshot_item(case, region, snap, identity, latest[snap.snapshot_id])
    report(f"{len(snapshots)} snapshot(s) completed")


def _open_snapshot_item(
    case: Case,
    region: str,
    snap: SnapshotCapture,
    identity: dict[str, str],
    described: dict[str, Any],
) -> None:
    """The item holds the completed snapshot's description; an earlier run's is reused."""
    meta = {
        "kind": "ebs-snapshot",
        "source": {
            "type": "ebs-snapshot",
            "snapshot_id": snap.snapshot_id,
            "region": region,
            "account": described.get("OwnerId"),
        },
        "snapshot": described,
        "volume": snap.volume,
        "instance_id": snap.instance_id,
        "taken_by_cloudir": snap.taken_by_cloudir,
        "request_id": snap.request_id,
        "caller_identity": identity,
    }
    case.open_item(snap.evidence_id, meta)


# -- share, copy, download -------------------------------------------------------------
def share_snapshot(
    case: Case, ec2: Any, snap: SnapshotCapture, account: str, report: Reporter
) -> None:
    """Let a forensic account create volumes from the snapshot (createVolumePermission)."""
    try:
        resp = call(
            "ec2:ModifySnapshotAttribute",
            ec2.modify_snapshot_attribute,
            SnapshotId=snap.snapshot_id,
            Attribute="createVolumePermission",
            OperationType="add",
            UserIds=[account],
        )
    except CloudError as exc:
        hint = ""
        if snap.encrypted:
            hint = (
                f"; {snap.snapshot_id} is encrypted with {snap.kms_key_id}: a snapshot under "
                "the AWS managed key aws/ebs cannot be shared, copy it with --copy-to-region "
                "--kms-key-id <customer managed key> and share the copy"
            )
        raise CloudError(f"{exc}{hint}") from exc
    case.record(
        CustodyAction.SHARE,
        snap.evidence_id,
        [],
        note=f"createVolumePermission added for {account}",
        source={
            "api": "ec2:ModifySnapshotAttribute",
            "snapshot_id": snap.snapshot_id,
            "account": account,
            "request_id": request_id(resp),
        },
    )
    snap.shared_with.append(account)
    if snap.encrypted:
        report(
            f"{snap.snapshot_id} is encrypted with {snap.kms_key_id}: account {account} also "
            "needs kms:Decrypt, kms:CreateGrant and kms:DescribeKey on that key (key policy)"
        )


def start_copy(
    case: Case,
    aws: Aws,
    snap: SnapshotCapture,
    region: str,
    kms_key_id: str | None,
    report: Reporter,
) -> None:
    """CopySnapshot into `region`; a copy custody already holds is not made twice."""
    earlier = _earlier_copy(case, snap.snapshot_id, region)
    if earlier:
        report(f"{snap.snapshot_id} was already copied to {region} as {earlier}")
        snap.copies.append({"region": region, "snapshot_id": earlier, "kms_key_id": kms_key_id})
        return
    target = aws.client("ec2", region)
    tags = snapshot_tags(case, snap.volume_id, snap.instance_id)
    tags["cloudir:copied-from"] = f"{aws.region}/{snap.snapshot_id}"
    kwargs: dict[str, Any] = {
        "SourceRegion": aws.region,
        "SourceSnapshotId": snap.snapshot_id,
        "Description": f"cloudir case {case.info['id']}: copy of {aws.region}/{snap.snapshot_id}",
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
    }
    if kms_key_id:
        kwargs.update(Encrypted=True, KmsKeyId=kms_key_id)
    elif snap.encrypted:
        report(f"{snap.snapshot_id} is encrypted: the copy uses the default EBS key in {region}")
    try:
        resp = call("ec2:CopySnapshot", target.copy_snapshot, **kwargs)
    except CloudError as exc:
        raise _copy_failure(exc, snap, region, kms_key_id) from exc
    copy_id = resp["SnapshotId"]
    case.record(
        CustodyAction.SNAPSHOT_COPY,
        snap.evidence_id,
        [],
        note=f"copy of {snap.snapshot_id} into {region} started as {copy_id}",
        source={
            "api": "ec2:CopySnapshot",
            "snapshot_id": snap.snapshot_id,
            "source_region": aws.region,
            "region": region,
            "copy_snapshot_id": copy_id,
            "kms_key_id": kms_key_id,
            "request_id": request_id(resp),
            "tags": tags,
        },
    )
    snap.copies.append({"region": region, "snapshot_id": copy_id, "kms_key_id": kms_key_id})


def _earlier_copy(case: Case, snapshot_id: str, region: str) -> str | None:
    for entry in case.custody_entries():
        source = entry.get("source") or {}
        if (
            read_action(entry.get("action")) is CustodyAction.SNAPSHOT_COPY
            and source.get("snapshot_id") == snapshot_id
            and source.get("region") == region
        ):
            return source.get("copy_snapshot_id")
    return None


def _copy_failure(
    exc: CloudError, snap: SnapshotCapture, region: str, kms_key_id: str | None
) -> CloudError:
    """Name the key and the permission a failed encrypted copy most likely lacked."""
    code = error_code(exc) or ""
    about_keys = (
        code.startswith("KMS")
        or "AccessDenied" in code
        or code == "UnauthorizedOperation"
        or "kms" in str(exc).lower()
    )
    if not about_keys:
        return exc
    source_key = snap.kms_key_id if snap.encrypted else None
    target_key = kms_key_id or (f"the default EBS key in {region}" if snap.encrypted else None)
    needs = ["ec2:CopySnapshot on the snapshots"]
    if source_key:
        needs.append(f"kms:Decrypt and kms:CreateGrant on the source key {source_key}")
    if target_key:
        needs.append(
            f"kms:CreateGrant, kms:Decrypt, kms:GenerateDataKeyWithoutPlaintext and "
            f"kms:ReEncrypt* on the target key {target_key}"
        )
    return CloudError(
        f"{exc}; copying {snap.snapshot_id} into {region} needs "
        + ", ".join(needs)
        + " (in the caller's IAM policy and the key policy)"
    )


def wait_for_copies(
    case: Case,
    aws: Aws,
    snapshots: list[SnapshotCapture],
    request: EbsRequest,
    progress: Progress = NO_PROGRESS,
) -> None:
    """Wait for every copy; record each completed copy in custody under its source item."""
    region = request.copy_to_region or aws.region
    copies = {c["snapshot_id"]: (s, c) for s in snapshots for c in s.copies}
    with progress.bars("percent") as bars:
        lines = {cid: bars.add(f"copy {cid} in {region}", total=100) for cid in copies}

        def shown(latest: list[dict[str, Any]]) -> None:
            for info in latest:
                lines[info["SnapshotId"]].update(_percent(info.get("Progress")))

        try:
            latest = wait_for_snapshots(
                _describe_tolerant(aws.client("ec2", region)),
                list(copies),
                request.timeout,
                shown,
                request.poll,
            )
        except SnapshotTimeout as exc:
            raise CloudError(
                f"copies in {region}: {exc}; the source snapshots are complete and recorded"
            ) from exc
    for copy_id, (snap, copy) in copies.items():
        copy["state"] = latest[copy_id].get("State")
        case.record(
            CustodyAction.SNAPSHOT_COPY_COMPLETE,
            snap.evidence_id,
            [],
            note=f"{copy_id} in {region} completed",
            source={"snapshot_id": snap.snapshot_id, "region": region, "copy_snapshot_id": copy_id},
        )


def download(
    case: Case,
    aws: Aws,
    snap: SnapshotCapture,
    workers: int,
    report: Reporter,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """The snapshot's blocks as `image.raw` in its item, through the EBS direct APIs."""
    from cloudir.capture.ebs_download import download_snapshot

    with progress.bars("bytes") as bars:
        total = (snap.volume_size_gib or 0) << 30
        line = bars.add(snap.snapshot_id, total=total or None)

        def fetched(done: int, total_bytes: int | None = None) -> None:
            line.update(done, total=total_bytes or total or None)

        result = download_snapshot(
            case,
            aws,
            snap.snapshot_id,
            snap.evidence_id,
            workers=workers,
            progress=fetched,
            report=report,
        )
    return {
        "path": str(result.path),
        "sha256": result.sha256,
        "volume_bytes": result.volume_bytes,
        "block_size": result.block_size,
        "blocks_listed": result.blocks_listed,
        "blocks_fetched": result.blocks_fetched,
        "blocks_resumed": result.blocks_resumed,
        "seconds": result.seconds,
    }


# -- small helpers -------------------------------------------------------------------
def _as_json(resp: dict[str, Any]) -> bytes:
    """The response as botocore parsed it (EC2 answers in XML), request metadata aside."""
    body = {k: v for k, v in resp.items() if k != "ResponseMetadata"}
    return json.dumps(body, indent=2, sort_keys=True, default=_json_default).encode() + b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _percent(progress: str | None) -> int:
    try:
        return int(str(progress or "0").rstrip("%"))
    except ValueError:
        return 0
