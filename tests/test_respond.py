"""`cloudir respond` against a moto server over HTTP: plan, act, fail half-way, restore.

moto keeps the groups given at launch on the instance and merges them into every
attached interface's groups (real EC2 keeps groups on interfaces only), so the
instances here get their groups through their network interfaces, as an auto-scaling
group's launch template with `NetworkInterfaces` does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import boto_client, cloudir, custody, query, records_gz
from tests.fault_proxy import FaultProxy

REGION = ["--region", "us-east-1"]


class Estate:
    """An instance in an auto-scaling group, two interfaces, an EBS volume: and its state."""

    def __init__(self, url: str) -> None:
        self.ec2 = boto_client(url, "ec2")
        self.asg = boto_client(url, "autoscaling")
        tag = uuid.uuid4().hex[:8]
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        self.vpc = self.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.9.1.0/24")["Subnet"]
        self.web = self._group(f"web-{tag}")
        self.ssh = self._group(f"ssh-{tag}")
        self.group_name = f"runners-{tag}"
        self.ec2.create_launch_template(
            LaunchTemplateName=f"lt-{tag}",
            LaunchTemplateData={
                "ImageId": image,
                "InstanceType": "t3.micro",
                "NetworkInterfaces": [
                    {"DeviceIndex": 0, "Groups": [self.web], "SubnetId": subnet["SubnetId"]}
                ],
            },
        )
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.group_name,
            LaunchTemplate={"LaunchTemplateName": f"lt-{tag}"},
            MinSize=2,
            MaxSize=4,
            DesiredCapacity=2,
            VPCZoneIdentifier=subnet["SubnetId"],
        )
        group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group_name])
        self.instance = sorted(i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"])[
            0
        ]
        second = self.ec2.create_network_interface(
            SubnetId=subnet["SubnetId"], Groups=[self.web, self.ssh]
        )["NetworkInterface"]["NetworkInterfaceId"]
        self.ec2.attach_network_interface(
            NetworkInterfaceId=second, InstanceId=self.instance, DeviceIndex=1
        )

    def _group(self, name: str) -> str:
        return self.ec2.create_security_group(GroupName=name, Description=name, VpcId=self.vpc)[
            "GroupId"
        ]

    def state(self) -> dict[str, Any]:
        """Everything isolation may touch, as AWS reports it."""
        found = self.ec2.describe_instances(InstanceIds=[self.instance])
        instance = found["Reservations"][0]["Instances"][0]
        group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group_name])[
            "AutoScalingGroups"
        ][0]

        def attribute(name: str, key: str) -> bool:
            resp = self.ec2.describe_instance_attribute(InstanceId=self.instance, Attribute=name)
            return resp[key]["Value"]

        groups = self.ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [self.vpc]}]
        )["SecurityGroups"]
        return {
            "interfaces": {
                n["NetworkInterfaceId"]: sorted(g["GroupId"] for g in n["Groups"])
                for n in instance["NetworkInterfaces"]
            },
            "in_group": self.instance in [i["InstanceId"] for i in group["Instances"]],
            "desired": group["DesiredCapacity"],
            "min": group["MinSize"],
            "termination_protection": attribute("disableApiTermination", "DisableApiTermination"),
            "stop_protection": attribute("disableApiStop", "DisableApiStop"),
            "tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])},
            "vpc_groups": sorted(g["GroupName"] for g in groups),
        }

    def snapshots(self) -> list[dict[str, Any]]:
        return self.ec2.describe_snapshots(
            Filters=[{"Name": "tag:cloudir:source-instance", "Values": [self.instance]}]
        )["Snapshots"]


@pytest.fixture
def estate(moto_url: str) -> Estate:
    return Estate(moto_url)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as running:
        yield running


def respond(url: str, *args: str) -> Any:
    return cloudir("respond", *args, "--endpoint-url", url, *REGION)


def isolate(url: str, case: Path, estate: Estate, *args: str) -> Any:
    return respond(url, "isolate", "--case", str(case), "--instance-id", estate.instance, *args)


def actions(case: Path, prefix: str = "respond-") -> list[dict[str, Any]]:
    return [e for e in custody(case) if e["action"].startswith(prefix)]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_plan_only_changes_nothing_and_writes_nothing(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    result = isolate(moto_url, case, estate, "--json")
    assert result.code == 0, result.stderr
    plan = result.json()["plans"][0]
    assert result.json()["applied"] is False
    kinds = [c["kind"] for c in plan["changes"]]
    assert kinds == [
        "snapshot",
        "asg-min-size",
        "asg-membership",  # out of the group before the network is cut
        "instance-attribute",
        "instance-attribute",
        "metadata-endpoint",
        "security-group",
        "eni-security-groups",
        "eni-security-groups",
        "tags",
    ]
    eni_before = {c["target"]: c["before"] for c in plan["changes"] if c["kind"].startswith("eni")}
    assert eni_before == before["interfaces"]
    membership = next(c for c in plan["changes"] if c["kind"] == "asg-membership")
    assert "desired capacity 2 → 1, no replacement" in membership["summary"]
    assert any("established may survive" in n for n in plan["notes"])
    assert "autoscaling:DetachInstances" in plan["permissions"]
    assert estate.state() == before
    assert estate.snapshots() == []
    assert not case.exists()

    text = isolate(moto_url, case, estate)
    assert text.code == 0
    assert "plan only: nothing was changed; add --yes" in text.stdout
    assert "connections already established may survive" in text.stdout
    assert estate.state() == before


def test_yes_leaves_only_the_quarantine_group_and_records_every_step(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    result = isolate(moto_url, case, estate, "--yes", "--json")
    assert result.code == 0, result.stderr
    outcome = result.json()["outcomes"][0]
    assert outcome["status"] == "complete" and len(outcome["done"]) == 10

    after = estate.state()
    quarantine = {tuple(groups) for groups in after["interfaces"].values()}
    assert len(quarantine) == 1
    (group_id,) = quarantine.pop()
    assert group_id not in (estate.web, estate.ssh)
    rules = estate.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert rules["IpPermissions"] == [] and rules["IpPermissionsEgress"] == []
    assert rules["GroupName"] == "cloudir-quarantine-case"
    assert after["interfaces"].keys() == before["interfaces"].keys()
    assert not after["in_group"]
    assert (after["desired"], after["min"]) == (1, 1)
    assert after["termination_protection"] and after["stop_protection"]
    assert after["tags"]["cloudir:case"] == "case"
    assert "cloudir:isolated" in after["tags"]
    snapshots = estate.snapshots()
    assert snapshots and all(
        {"Key": "cloudir:case", "Value": "case"} in s["Tags"] for s in snapshots
    )

    entries = actions(case)
    assert [e["action"] for e in entries] == (
        ["respond-plan"] + ["respond-change-started", "respond-change"] * 10 + ["respond-complete"]
    )
    changes = [e["source"] for e in entries if e["action"] == "respond-change"]
    eni_changes = {c["target"]: c for c in changes if c["kind"] == "eni-security-groups"}
    for eni, groups in before["interfaces"].items():
        assert eni_changes[eni]["before"] == groups
        assert eni_changes[eni]["after"] == [group_id]
    action_id = outcome["action_id"]
    plan = json.loads((case / "evidence" / action_id / "plan.json").read_text())
    assert plan["facts"]["instance_id"] == estate.instance
    assert all(e["actor"].startswith("arn:aws:") for e in entries)
    verify = cloudir("verify", "--case", str(case), "--json")
    assert verify.code == 0 and verify.json()["ok"], verify.stdout

    assert cloudir("timeline", "--case", str(case)).code == 0
    rows = query(
        case,
        'SELECT action, target, host, outcome, message, "user" FROM timeline '
        "WHERE source = 'response' ORDER BY timestamp",
    )
    assert len(rows) == 10
    assert {r["host"] for r in rows} == {estate.instance}
    assert {r["outcome"] for r in rows} == {"success"}
    assert rows[0]["action"] == "cloudir:isolate:snapshot"
    assert {r["target"] for r in rows if r["action"].endswith("eni-security-groups")} == set(
        before["interfaces"]
    )
    assert rows[0]["user"].startswith("arn:aws:")


def test_restore_returns_the_recorded_state_and_keeps_the_snapshots(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    assert isolate(moto_url, case, estate, "--yes").code == 0
    taken = estate.snapshots()

    preview = respond(moto_url, "restore", "--case", str(case), "--json")
    assert preview.code == 0, preview.stderr
    assert preview.json()["applied"] is False
    assert len(preview.json()["plans"][0]["changes"]) == 9  # all but the snapshot
    assert estate.state() != before

    result = respond(moto_url, "restore", "--case", str(case), "--yes", "--json")
    assert result.code == 0, result.stderr
    after = estate.state()
    assert after["interfaces"] == before["interfaces"]
    assert after["in_group"] and after["min"] == before["min"]
    assert after["desired"] == before["desired"]
    assert not after["termination_protection"] and not after["stop_protection"]
    assert after["tags"] == before["tags"]
    assert after["vpc_groups"] == before["vpc_groups"]  # the quarantine group is gone
    assert [s["SnapshotId"] for s in estate.snapshots()] == [s["SnapshotId"] for s in taken]

    restored = [e for e in actions(case) if e["action"] == "respond-complete"]
    assert len(restored) == 2
    again = respond(moto_url, "restore", "--case", str(case), "--yes", "--json")
    assert again.code == 0 and again.json()["plans"] == []
    assert "no containment action in the case left to restore" in again.stderr

    # the hand-over report says what was changed and that it was put back
    assert cloudir("analyze", "--case", str(case)).code == 0
    report = json.loads((case / "report" / "report.json").read_text())
    [isolation] = report["containment"]
    assert isolation["action"] == "isolate" and isolation["status"] == "complete"
    assert isolation["restored_by"].startswith("response-restore-")
    assert len(isolation["steps"]) == 10
    markdown = (case / "report" / "report.md").read_text()
    assert "## Containment" in markdown and "→ the quarantine group only" in markdown
    html = (case / "report" / "report.html").read_text()
    assert 'id="containment"' in html and isolation["action_id"] in html


def test_allow_cidr_lets_only_the_examiners_in(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    result = isolate(
        moto_url,
        tmp_path / "case",
        estate,
        "--allow-cidr",
        "198.51.100.0/24",
        "--no-snapshot",
        "--yes",
    )
    assert result.code == 0, result.stderr
    (groups,) = {tuple(g) for g in estate.state()["interfaces"].values()}
    rules = estate.ec2.describe_security_groups(GroupIds=list(groups))["SecurityGroups"][0]
    assert [r["CidrIp"] for p in rules["IpPermissions"] for r in p["IpRanges"]] == [
        "198.51.100.0/24"
    ]
    assert rules["IpPermissionsEgress"] == []
    assert estate.snapshots() == []


def test_allow_cidr_for_the_whole_internet_is_refused(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    result = isolate(moto_url, tmp_path / "case", estate, "--allow-cidr", "0.0.0.0/0")
    assert result.code == 2
    assert "whole internet" in one_line(result.stderr)


def test_a_permission_refused_half_way_is_on_the_record_and_restorable(
    tmp_path: Path, estate: Estate, proxy: FaultProxy
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    proxy.deny("ModifyInstanceMetadataOptions")
    result = isolate(proxy.url, case, estate, "--no-snapshot", "--yes")
    assert result.code == 4
    line = one_line(result.stderr)
    assert "missing permission ec2:ModifyInstanceMetadataOptions" in line
    assert "stopped at step 5 of 9" in line and "respond restore" in line

    half = estate.state()
    assert not half["in_group"] and half["termination_protection"]  # steps 1-4 landed
    assert half["interfaces"] == before["interfaces"]  # 6-9 never tried
    end = actions(case)[-1]
    assert end["action"] == "respond-incomplete"
    assert end["source"] == {"done": [1, 2, 3, 4], "failed": 5, "not_done": [6, 7, 8, 9]}
    assert "ec2:ModifyInstanceMetadataOptions" in end["note"]
    outcome = json.loads((case / "evidence" / end["evidence_id"] / "outcome.json").read_text())
    assert outcome["failed"]["kind"] == "metadata-endpoint"
    assert [s["kind"] for s in outcome["not_done"]][-1] == "tags"

    back = respond(proxy.url, "restore", "--case", str(case), "--yes", "--json")
    assert back.code == 0, back.stderr
    assert estate.state() == before


def test_a_quarantine_group_left_half_made_is_deleted_again(
    tmp_path: Path, estate: Estate, proxy: FaultProxy
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    proxy.deny("RevokeSecurityGroupEgress")
    result = isolate(proxy.url, case, estate, "--no-snapshot", "--yes")
    assert result.code == 4
    line = one_line(result.stderr)
    assert "missing permission ec2:RevokeSecurityGroupEgress" in line
    assert "was deleted again" in line
    assert estate.state()["vpc_groups"] == before["vpc_groups"]  # no open group left
    assert estate.state()["interfaces"] == before["interfaces"]
    assert respond(proxy.url, "restore", "--case", str(case), "--yes").code == 0
    assert estate.state() == before


def test_a_refused_read_while_planning_names_the_permission(
    tmp_path: Path, estate: Estate, proxy: FaultProxy
) -> None:
    proxy.deny("DescribeAutoScalingInstances")
    result = isolate(proxy.url, tmp_path / "case", estate)
    assert result.code == 4
    assert "missing permission autoscaling:DescribeAutoScalingInstances" in one_line(result.stderr)
    assert not (tmp_path / "case").exists()


def test_restore_leaves_drift_alone_unless_forced(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    assert isolate(moto_url, case, estate, "--no-snapshot", "--yes").code == 0
    primary = sorted(before["interfaces"])[0]
    estate.ec2.modify_network_interface_attribute(NetworkInterfaceId=primary, Groups=[estate.ssh])
    isolated = estate.state()

    refused = respond(moto_url, "restore", "--case", str(case), "--yes")
    assert refused.code == 2
    assert f"security groups of {primary} changed since" in one_line(refused.stderr)
    assert estate.state() == isolated

    forced = respond(moto_url, "restore", "--case", str(case), "--yes", "--force")
    assert forced.code == 0, forced.stderr
    assert estate.state() == before


def test_disable_key_then_restore(tmp_path: Path, moto_url: str) -> None:
    iam = boto_client(moto_url, "iam")
    user = f"ci-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    other = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    case = tmp_path / "case"
    args = ["disable-key", "--case", str(case), "--access-key-id", key, "--revoke-sessions"]

    plan = respond(moto_url, *args, "--json")
    assert plan.code == 0, plan.stderr
    changes = plan.json()["plans"][0]["changes"]
    assert next((c["kind"], c["before"], c["after"]) for c in changes) == (
        "access-key-status",
        "Active",
        "Inactive",
    )
    assert changes[1]["target"] == f"user/{user}"
    assert any(other in n for n in plan.json()["plans"][0]["notes"])

    def status() -> dict[str, str]:
        keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        return {k["AccessKeyId"]: k["Status"] for k in keys}

    assert status() == {key: "Active", other: "Active"}
    done = respond(moto_url, *args, "--yes")
    assert done.code == 0, done.stderr
    assert status() == {key: "Inactive", other: "Active"}
    policy = iam.get_user_policy(UserName=user, PolicyName="AWSRevokeOlderSessions")
    condition = policy["PolicyDocument"]["Statement"][0]["Condition"]
    assert condition["DateLessThan"]["aws:TokenIssueTime"].startswith("20")

    back = respond(moto_url, "restore", "--case", str(case), "--yes")
    assert back.code == 0, back.stderr
    assert status() == {key: "Active", other: "Active"}
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == []


def test_session_key_revokes_its_role_found_in_the_case_cloudtrail(
    tmp_path: Path, moto_url: str
) -> None:
    iam = boto_client(moto_url, "iam")
    role = f"deploy-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    session_key = "ASIA" + uuid.uuid4().hex[:16].upper()
    case = tmp_path / "case"
    args = ["disable-key", "--case", str(case), "--access-key-id", session_key]

    refused = respond(moto_url, *args)
    assert refused.code == 2 and "cannot be made inactive" in one_line(refused.stderr)
    unknown = respond(moto_url, *args, "--revoke-sessions")
    assert unknown.code == 2 and "pass --role" in one_line(unknown.stderr)

    from tests.conftest import ct_event

    event = ct_event(
        "2026-11-20T10:00:00Z",
        "GetCallerIdentity",
        userIdentity={
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::123456789012:assumed-role/{role}/i-1",
            "accountId": "123456789012",
            "accessKeyId": session_key,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "userName": role,
                    "arn": f"arn:aws:iam::123456789012:role/{role}",
                }
            },
        },
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "trail.json.gz").write_bytes(records_gz([event]))
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0

    done = respond(moto_url, *args, "--revoke-sessions", "--yes", "--json")
    assert done.code == 0, done.stderr
    change = done.json()["plans"][0]["changes"][0]
    assert change["target"] == f"role/{role}"
    document = iam.get_role_policy(RoleName=role, PolicyName="AWSRevokeOlderSessions")
    assert document["PolicyDocument"]["Statement"][0]["Effect"] == "Deny"
    back = respond(moto_url, "restore", "--case", str(case), "--yes")
    assert back.code == 0, back.stderr
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []


def test_isolating_again_changes_only_what_is_not_yet_isolated(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    case = tmp_path / "case"
    assert isolate(moto_url, case, estate, "--no-snapshot", "--yes").code == 0
    again = isolate(moto_url, case, estate, "--no-snapshot", "--json")
    assert again.code == 0, again.stderr
    plan = again.json()["plans"][0]
    assert plan["changes"] == []
    notes = " ".join(plan["notes"])
    assert "already tagged as isolated for this case" in notes
    assert "reusing quarantine group" in notes
    assert "already has only the quarantine group" in notes
    assert "termination protection is already on" in notes


def test_two_instances_of_one_group_isolated_then_restored_newest_first(
    tmp_path: Path, moto_url: str, estate: Estate
) -> None:
    """The second isolation lowers the minimum the first one already lowered: restore
    plans the older action only after the newer one is undone, so that is no drift."""
    group = estate.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[estate.group_name])
    other = next(
        i["InstanceId"]
        for i in group["AutoScalingGroups"][0]["Instances"]
        if i["InstanceId"] != estate.instance
    )
    before = estate.state()
    case = tmp_path / "case"
    assert isolate(moto_url, case, estate, "--no-snapshot", "--yes").code == 0
    second = respond(
        moto_url, "isolate", "--case", str(case), "--instance-id", other, "--no-snapshot", "--yes"
    )
    assert second.code == 0, second.stderr
    shrunk = estate.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[estate.group_name])
    assert shrunk["AutoScalingGroups"][0]["MinSize"] == 0

    back = respond(moto_url, "restore", "--case", str(case), "--yes", "--json")
    assert back.code == 0, back.stderr
    assert len(back.json()["outcomes"]) == 2
    after = estate.state()
    assert after == before


def test_instance_credentials_are_cut_and_put_back(tmp_path: Path, moto_url: str) -> None:
    ec2 = boto_client(moto_url, "ec2")
    iam = boto_client(moto_url, "iam")
    name = f"runner-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        IamInstanceProfile={"Arn": profile},
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet}],
    )["Instances"][0]["InstanceId"]

    def credentials() -> tuple[list[str], str]:
        found = ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [instance]}]
        )["IamInstanceProfileAssociations"]
        live = [
            a["IamInstanceProfile"]["Arn"]
            for a in found
            if a["State"] in ("associated", "associating")
        ]
        described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]
        return live, described["Instances"][0]["MetadataOptions"]["HttpEndpoint"]

    assert credentials() == ([profile], "enabled")
    case = tmp_path / "case"
    args = ["isolate", "--case", str(case), "--instance-id", instance, "--no-snapshot"]
    plan = respond(moto_url, *args)
    assert "detach instance profile" in plan.stdout
    assert "role credentials already taken" in plan.stdout
    assert "DNS tunnelling still gets out" in plan.stdout
    assert respond(moto_url, *args, "--yes").code == 0
    assert credentials() == ([], "disabled")
    assert respond(moto_url, "restore", "--case", str(case), "--yes").code == 0
    assert credentials() == ([profile], "enabled")

    kept = tmp_path / "kept"
    result = respond(
        moto_url,
        "isolate",
        "--case",
        str(kept),
        "--instance-id",
        instance,
        "--no-snapshot",
        "--keep-credentials",
        "--json",
    )
    kinds = {c["kind"] for c in result.json()["plans"][0]["changes"]}
    assert not kinds & {"instance-profile", "metadata-endpoint"}


def test_a_role_alone_can_have_its_sessions_revoked(tmp_path: Path, moto_url: str) -> None:
    iam = boto_client(moto_url, "iam")
    role = f"runner-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    case = tmp_path / "case"
    done = respond(
        moto_url, "disable-key", "--case", str(case), "--role", role, "--revoke-sessions", "--yes"
    )
    assert done.code == 0, done.stderr
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["AWSRevokeOlderSessions"]
    alone = respond(moto_url, "disable-key", "--case", str(case), "--role", role)
    assert alone.code == 2 and "--revoke-sessions" in one_line(alone.stderr)


def test_a_deleted_key_does_not_stop_the_rest_of_the_restore(tmp_path: Path, moto_url: str) -> None:
    iam = boto_client(moto_url, "iam")
    user = f"ci-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    case = tmp_path / "case"
    args = ["disable-key", "--case", str(case), "--access-key-id", key, "--revoke-sessions"]
    assert respond(moto_url, *args, "--yes").code == 0
    iam.delete_access_key(UserName=user, AccessKeyId=key)  # the next step of the response
    back = respond(moto_url, "restore", "--case", str(case), "--yes", "--json")
    assert back.code == 0, back.stderr
    notes = " ".join(back.json()["plans"][0]["notes"])
    assert f"status of access key {key}: gone" in notes
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == []


def _isolate_until_stalled(proxy: FaultProxy, case: Path, estate: Estate) -> subprocess.Popen[str]:
    """`isolate --yes` with CreateTags (the last step) hanging; returns once it hangs."""
    proxy.stall("CreateTags")
    command = ["respond", "isolate", "--case", str(case), "--instance-id", estate.instance]
    command += ["--no-snapshot", "--yes", "--endpoint-url", proxy.url, *REGION]
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudir", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # CI runs the tests as a background job, which ignores SIGINT; a responder's
        # terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            entries = custody(case) if (case / "custody.jsonl").exists() else []
        except json.JSONDecodeError:  # a line read while it is being written
            entries = []
        started = [e for e in entries if e["action"] == "respond-change-started"]
        if started and started[-1]["source"]["kind"] == "tags":
            time.sleep(0.3)  # the request is on its way to the stalled proxy
            return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError("isolate never reached its last step")


def test_ctrl_c_mid_action_is_recorded_and_says_how_to_undo(
    tmp_path: Path, moto_url: str, estate: Estate, proxy: FaultProxy
) -> None:
    before = estate.state()
    case = tmp_path / "case"
    process = _isolate_until_stalled(proxy, case, estate)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    line = one_line(stderr)
    assert "interrupted at step 9 of 9" in line and "respond restore" in line
    end = actions(case)[-1]
    assert end["action"] == "respond-incomplete"
    assert end["source"] == {"done": list(range(1, 9)), "failed": 9, "not_done": []}
    back = respond(moto_url, "restore", "--case", str(case), "--yes")
    assert back.code == 0, back.stderr
    assert estate.state() == before


def test_a_killed_action_is_still_restored_from_custody(
    tmp_path: Path, moto_url: str, estate: Estate, proxy: FaultProxy
) -> None:
    """kill -9 while AWS is acting: no end entry at all; restore works from the changes
    custody holds, and checks whether the step cut short landed."""
    before = estate.state()
    case = tmp_path / "case"
    process = _isolate_until_stalled(proxy, case, estate)
    process.kill()
    process.communicate(timeout=30)
    assert not [e for e in actions(case) if e["action"].startswith("respond-incomplete")]
    assert cloudir("timeline", "--case", str(case)).code == 0
    rows = query(case, "SELECT action FROM timeline WHERE source = 'response'")
    assert len(rows) == 8  # every change that landed before the kill
    back = respond(moto_url, "restore", "--case", str(case), "--yes", "--json")
    assert back.code == 0, back.stderr
    notes = " ".join(back.json()["plans"][0]["notes"])
    assert "the step that was cut short did not land" in notes
    assert "did not finish (started)" in notes
    assert estate.state() == before
