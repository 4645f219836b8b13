"""`capture ebs` against a moto server over HTTP: describe, snapshot, share, copy."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cloudir.aws import call
from cloudir.capture.ebs import (
    SnapshotCapture,
    SnapshotTimeout,
    _copy_failure,
    wait_for_snapshots,
)
from cloudir.errors import CloudError
from tests.conftest import boto_client, cloudir, custody

REGION = ["--region", "us-east-1"]


@pytest.fixture
def instance(moto_url: str) -> dict[str, Any]:
    """A running instance in its own VPC with one extra EBS volume besides the root."""
    ec2 = boto_client(moto_url, "ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(
        GroupName=f"web-{uuid.uuid4().hex[:8]}", Description="web", VpcId=vpc
    )["GroupId"]
    run = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        SubnetId=subnet,
        SecurityGroupIds=[group],
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]}],
    )
    instance_id = run["Instances"][0]["InstanceId"]
    described = ec2.describe_instances(InstanceIds=[instance_id])
    found = described["Reservations"][0]["Instances"][0]
    volumes = [m["Ebs"]["VolumeId"] for m in found["BlockDeviceMappings"] if "Ebs" in m]
    assert volumes
    return {"ec2": ec2, "id": instance_id, "volumes": volumes, "group": group}


def capture(case: Path, moto_url: str, *args: str) -> Any:
    return cloudir(
        "capture", "ebs", "--case", str(case), "--endpoint-url", moto_url, *REGION, *args
    )


def tag_map(snapshot: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_instance_capture_records_metadata_and_tagged_snapshots(
    tmp_path: Path, moto_url: str, instance: dict[str, Any]
) -> None:
    case = tmp_path / "case"
    result = capture(case, moto_url, "--instance-id", instance["id"], "--examiner", "ana", "--json")
    assert result.code == 0, result.stderr
    out = result.json()

    item = f"ec2-{instance['id']}"
    folder = case / "evidence" / item
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "ec2-instance"
    assert meta["instance"]["tags"] == {"Name": "web"}
    assert instance["group"] in [g["GroupId"] for g in meta["instance"]["security_groups"]]
    assert meta["instance"]["network_interfaces"]
    described = json.loads((folder / "describe-instances.json").read_text())
    assert described["Reservations"][0]["Instances"][0]["InstanceId"] == instance["id"]
    volumes = json.loads((folder / "describe-volumes.json").read_text())
    assert sorted(v["VolumeId"] for v in volumes["Volumes"]) == sorted(instance["volumes"])

    entries = custody(case)
    captured = {
        e["files"][0]["path"]: e for e in entries if e["action"] == "capture" and e["files"]
    }
    for name in ("describe-instances.json", "describe-volumes.json"):
        entry = captured[f"evidence/{item}/{name}"]
        assert len(entry["files"][0]["sha256"]) == 64
        assert entry["source"]["request_id"]
    console_ok = (folder / "console-output.json").exists()
    skipped = [e for e in entries if e["action"] == "capture-skipped"]
    assert console_ok or skipped  # either captured or a noted skip

    snap_entries = [e for e in entries if e["action"] == "snapshot"]
    assert sorted(e["source"]["volume_id"] for e in snap_entries) == sorted(instance["volumes"])
    snapshot_ids = [e["source"]["snapshot_id"] for e in snap_entries]
    for entry in snap_entries:
        assert entry["source"]["request_id"] and entry["source"]["start_time"]
        assert entry["evidence_id"] == f"ebs-{entry['source']['snapshot_id']}"

    in_aws = instance["ec2"].describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
    case_id = json.loads((case / "case.json").read_text())["id"]
    for snap in in_aws:
        tags = tag_map(snap)
        assert tags["cloudir:case"] == case_id
        assert tags["cloudir:source-volume"] == snap["VolumeId"]
        assert tags["cloudir:source-instance"] == instance["id"]
        assert tags["cloudir:examiner"] == "ana"
        assert tags["cloudir:version"]
        snap_meta = json.loads(
            (case / "evidence" / f"ebs-{snap['SnapshotId']}" / "meta.json").read_text()
        )
        assert snap_meta["kind"] == "ebs-snapshot"
        assert snap_meta["snapshot"]["SnapshotId"] == snap["SnapshotId"]
        assert snap_meta["volume"]["VolumeId"] == snap["VolumeId"]

    assert sorted(s["snapshot_id"] for s in out["snapshots"]) == sorted(snapshot_ids)
    assert {s["state"] for s in out["snapshots"]} == {"completed"}
    assert set(out["items"]) == {item, *(f"ebs-{s}" for s in snapshot_ids)}
    assert out["images"] == []

    verified = cloudir("verify", "--case", str(case))
    assert verified.code == 0, verified.stderr


def test_volume_ids_are_snapshotted_with_their_instance_named(
    tmp_path: Path, moto_url: str, instance: dict[str, Any]
) -> None:
    volume = instance["volumes"][0]
    result = capture(tmp_path / "case", moto_url, "--volume-id", volume, "--json")
    assert result.code == 0, result.stderr
    [snap] = result.json()["snapshots"]
    assert snap["volume_id"] == volume and snap["instance_id"] == instance["id"]
    [in_aws] = instance["ec2"].describe_snapshots(SnapshotIds=[snap["snapshot_id"]])["Snapshots"]
    assert tag_map(in_aws)["cloudir:source-instance"] == instance["id"]
    assert not (tmp_path / "case" / "evidence" / f"ec2-{instance['id']}").exists()


def test_share_with_adds_create_volume_permission(
    tmp_path: Path, moto_url: str, instance: dict[str, Any]
) -> None:
    case = tmp_path / "case"
    volume = instance["volumes"][0]
    result = capture(
        case, moto_url, "--volume-id", volume, "--share-with", "123456789012", "--json"
    )
    assert result.code == 0, result.stderr
    [snap] = result.json()["snapshots"]
    assert snap["shared_with"] == ["123456789012"]
    perms = instance["ec2"].describe_snapshot_attribute(
        SnapshotId=snap["snapshot_id"], Attribute="createVolumePermission"
    )["CreateVolumePermissions"]
    assert {"UserId": "123456789012"} in perms
    [shared] = [e for e in custody(case) if e["action"] == "share"]
    assert shared["source"]["snapshot_id"] == snap["snapshot_id"]
    assert shared["source"]["account"] == "123456789012" and shared["source"]["request_id"]


def test_copy_to_region_creates_a_tagged_copy_there(
    tmp_path: Path, moto_url: str, instance: dict[str, Any]
) -> None:
    case = tmp_path / "case"
    volume = instance["volumes"][0]
    result = capture(
        case, moto_url, "--volume-id", volume, "--copy-to-region", "us-west-2", "--json"
    )
    assert result.code == 0, result.stderr
    [snap] = result.json()["snapshots"]
    [copy] = snap["copies"]
    assert copy["region"] == "us-west-2" and copy["state"] == "completed"
    west = boto_client(moto_url, "ec2", "us-west-2")
    [there] = west.describe_snapshots(SnapshotIds=[copy["snapshot_id"]])["Snapshots"]
    assert tag_map(there)["cloudir:copied-from"] == f"us-east-1/{snap['snapshot_id']}"
    actions = [e["action"] for e in custody(case) if e["evidence_id"] == snap["evidence_id"]]
    assert "snapshot-copy" in actions and "snapshot-copy-complete" in actions


def test_existing_snapshot_is_described_not_retaken(
    tmp_path: Path, moto_url: str, instance: dict[str, Any]
) -> None:
    ec2 = instance["ec2"]
    taken = ec2.create_snapshot(VolumeId=instance["volumes"][0], Description="by someone else")
    before = len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    case = tmp_path / "case"
    result = capture(case, moto_url, "--snapshot-id", taken["SnapshotId"], "--json")
    assert result.code == 0, result.stderr
    [snap] = result.json()["snapshots"]
    assert snap["snapshot_id"] == taken["SnapshotId"] and not snap["taken_by_cloudir"]
    assert len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) == before
    assert [e["action"] for e in custody(case) if e["action"].startswith("snapshot")] == [
        "snapshot-described"
    ]
    meta = json.loads((case / "evidence" / f"ebs-{taken['SnapshotId']}" / "meta.json").read_text())
    assert meta["snapshot"]["Description"] == "by someone else"


def test_unknown_instance_exits_4_with_one_line(tmp_path: Path, moto_url: str) -> None:
    result = capture(tmp_path / "case", moto_url, "--instance-id", "i-0123456789abcdef0")
    assert result.code == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "InvalidInstanceID.NotFound" in lines[0]


def test_instance_and_volume_together_is_a_usage_error(tmp_path: Path, moto_url: str) -> None:
    result = capture(
        tmp_path / "case", moto_url, "--instance-id", "i-0123", "--volume-id", "vol-0123"
    )
    assert result.code == 2
    assert "exactly one of" in result.stderr
    assert not (tmp_path / "case").exists()


def test_share_with_needs_an_account_id(tmp_path: Path, moto_url: str) -> None:
    result = capture(tmp_path / "case", moto_url, "--volume-id", "vol-1", "--share-with", "bob")
    assert result.code == 2
    assert "--share-with must be a 12-digit account id, not 'bob'" in result.stderr
    assert not (tmp_path / "case").exists()


def test_wait_timeout_names_pending_snapshots_and_their_progress() -> None:
    """AWS never finishes in time: the error names each snapshot still running and its %."""
    now = [0.0]

    def describe(ids: list[str]) -> list[dict[str, Any]]:
        states = {"snap-a": ("completed", "100%"), "snap-b": ("pending", "45%")}
        return [{"SnapshotId": i, "State": states[i][0], "Progress": states[i][1]} for i in ids]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(SnapshotTimeout) as caught:
        wait_for_snapshots(
            describe, ["snap-a", "snap-b"], 60, poll=15, clock=lambda: now[0], sleep=sleep
        )
    assert caught.value.pending == ["snap-b"]
    assert "snap-b 45%" in str(caught.value) and "keep running in AWS" in str(caught.value)
    assert caught.value.exit_code == 4
    assert now[0] == 60


def test_wait_stops_at_a_snapshot_in_error() -> None:
    def describe(ids: list[str]) -> list[dict[str, Any]]:
        return [{"SnapshotId": i, "State": "error", "StateMessage": "volume gone"} for i in ids]

    with pytest.raises(CloudError, match="volume gone"):
        wait_for_snapshots(describe, ["snap-x"], 60, sleep=lambda _: None)


def test_copy_failure_names_the_keys_and_the_missing_permissions() -> None:
    def refused() -> None:
        error = {"Code": "KMS.AccessDeniedException", "Message": "not allowed to use key"}
        raise ClientError({"Error": error}, "CopySnapshot")

    snap = SnapshotCapture("snap-1", "vol-1", None, taken_by_cloudir=True)
    snap.update({"Encrypted": True, "KmsKeyId": "arn:aws:kms:us-east-1:1:key/src"})
    with pytest.raises(CloudError) as caught:
        call("ec2:CopySnapshot", refused)
    message = str(_copy_failure(caught.value, snap, "us-west-2", "arn:aws:kms:us-west-2:1:key/dst"))
    assert "KMS.AccessDeniedException" in message
    assert "kms:Decrypt and kms:CreateGrant on the source key arn:aws:kms:us-east-1:1:key/src" in (
        message
    )
    assert "kms:ReEncrypt* on the target key arn:aws:kms:us-west-2:1:key/dst" in message
    assert "\n" not in message


def test_download_through_the_cli_gives_the_image_and_resumes(
    tmp_path: Path, moto_url: str
) -> None:
    """`capture ebs --snapshot-id S --download`: the image bytes, hashed into custody; a
    second run of the same command fetches nothing again."""
    import hashlib

    from tests.test_ebs_download import put_snapshot

    image = bytes(range(256)) * 16 + b"\0" * 4096 + b"intruder was here\n" * 64
    image += b"\0" * (-len(image) % 512)  # whole blocks, as a disk holds them
    snapshot, _ = put_snapshot(moto_url, image)
    case = tmp_path / "case"
    result = capture(case, moto_url, "--snapshot-id", snapshot, "--download", "--json")
    assert result.code == 0, result.stderr
    [image_info] = result.json()["images"]
    raw = (case / "evidence" / f"ebs-{snapshot}" / "image.raw").read_bytes()
    assert raw[: len(image)] == image and not raw[len(image) :].strip(b"\0")
    assert image_info["sha256"] == hashlib.sha256(raw).hexdigest()
    again = capture(case, moto_url, "--snapshot-id", snapshot, "--download", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["images"][0]["sha256"] == image_info["sha256"]
    assert cloudir("verify", "--case", str(case)).code == 0
