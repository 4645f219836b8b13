"""Plan the isolation of an EC2 instance: evidence first, then cut it off, then pin it.

The order matters. The snapshot comes first so the disk is kept as the intruder left
it; the quarantine group replaces every interface's groups at once; the instance leaves
its auto-scaling group so the group does not terminate an "unhealthy" instance (and its
disk with it); protection stops anyone terminating or stopping it by mistake.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime
from typing import Any

from cloudir.aws import call
from cloudir.errors import CloudError, UsageError
from cloudir.respond.changes import (
    QUARANTINE_GROUP,
    Change,
    Context,
    asg_group,
    read,
)
from cloudir.respond.plan import Plan

CASE_TAG = "cloudir:case"
ISOLATED_TAG = "cloudir:isolated"

ESTABLISHED_NOTE = (
    "connections already established may survive: security groups track connections, "
    "and a tracked flow (an open SSH or reverse shell session) can keep working after the "
    "rule that allowed it is gone. To cut those, stop the instance (memory is lost) or "
    "deny the attacker's address in the subnet's network ACL (that affects every "
    "instance in the subnet)"
)


UNFILTERED_NOTE = (
    "security groups do not filter the VPC's DNS resolver, the instance metadata service "
    "or Time Sync: DNS tunnelling still gets out. Route 53 Resolver DNS Firewall on the "
    "VPC closes that"
)

LIVE_DATA_NOTE = (
    "isolation ends live response: with no egress the SSM agent loses contact. Acquire "
    "memory and live data first, or let your examiners' range in with --allow-cidr"
)


def check_cidrs(cidrs: list[str]) -> list[str]:
    """Examiner ranges, normalised; a range that lets everyone in defeats the isolation."""
    out = []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise UsageError(f"--allow-cidr {text!r}: {exc}") from exc
        if net.prefixlen == 0:
            raise UsageError(f"--allow-cidr {text}: lets the whole internet in; name your range")
        out.append(str(net))
    return sorted(set(out))


def quarantine_group_name(case_id: str, cidrs: list[str]) -> str:
    """One group per case and examiner ranges, so a second isolation reuses it."""
    name = f"cloudir-quarantine-{case_id}"[:200]
    if cidrs:
        name += "-" + hashlib.sha256(",".join(cidrs).encode()).hexdigest()[:8]
    return name


def plan_isolation(
    ctx: Context,
    case_id: str,
    instance_id: str,
    allow_cidrs: list[str],
    snapshot: bool = True,
    replace: bool = False,
    keep_credentials: bool = False,
) -> Plan:
    """Read the instance, its interfaces, group and protection; list what would change."""
    ec2 = ctx.client("ec2")
    try:
        described = call("ec2:DescribeInstances", ec2.describe_instances, InstanceIds=[instance_id])
    except CloudError as exc:
        raise CloudError(f"{exc} (looked in {ctx.aws.region}; pass --region)") from exc
    instance = described["Reservations"][0]["Instances"][0]
    vpc_id = instance.get("VpcId")
    if not vpc_id:
        raise CloudError(f"{instance_id} is not in a VPC: security groups cannot isolate it")
    name = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), None)
    cidrs = check_cidrs(allow_cidrs)
    changes: list[Change] = []
    notes: list[str] = []
    facts: dict[str, Any] = {
        "instance_id": instance_id,
        "name": name,
        "state": instance.get("State", {}).get("Name"),
        "vpc_id": vpc_id,
        "iam_instance_profile": instance.get("IamInstanceProfile", {}).get("Arn"),
        "account": described["Reservations"][0].get("OwnerId"),
    }

    if snapshot:
        volumes = [
            m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m
        ]
        if volumes:
            changes.append(
                Change(
                    "snapshot",
                    instance_id,
                    None,
                    volumes,
                    f"snapshot every EBS volume of {instance_id} first, at one instant, tagged "
                    f"with the case ({', '.join(volumes)}); snapshots are evidence and are kept",
                    undoable=False,
                )
            )
        else:
            notes.append(f"{instance_id} has no EBS volumes: nothing to snapshot")
    else:
        notes.append("no snapshot (--no-snapshot): the disk is not preserved before isolation")

    # Out of its auto-scaling group before its network is cut: a quarantined instance
    # fails its health checks, and the group would terminate it with its disk.
    changes.extend(_asg_changes(ctx, instance_id, replace, notes))
    changes.extend(_protection_changes(ctx, instance, notes))
    if keep_credentials:
        notes.append(
            "credentials left on the instance (--keep-credentials): its metadata service "
            "still hands out the role's credentials"
        )
    else:
        changes.extend(_credential_changes(ctx, instance, notes))
    changes.extend(_quarantine_changes(ctx, case_id, instance, vpc_id, cidrs, notes))

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    wanted = {CASE_TAG: case_id, ISOLATED_TAG: stamp}
    tags = Change("tags", instance_id, None, wanted, "", detail={"keys": sorted(wanted)})
    tags.before = read(ctx, tags)
    if tags.before.get(CASE_TAG) == case_id and tags.before.get(ISOLATED_TAG):
        notes.append(f"already tagged as isolated for this case at {tags.before[ISOLATED_TAG]}")
    else:
        tags.summary = f"tag {instance_id} with {CASE_TAG}={case_id} and {ISOLATED_TAG}={stamp}"
        changes.append(tags)

    notes.append(ESTABLISHED_NOTE)
    notes.append(UNFILTERED_NOTE)
    notes.append(LIVE_DATA_NOTE)
    label = f"{instance_id} ({name})" if name else instance_id
    return Plan("isolate", label, ctx.aws.region, changes, notes, facts)


def _protection_changes(ctx: Context, instance: dict[str, Any], notes: list[str]) -> list[Change]:
    """Nobody terminates or stops it by mistake, and a shutdown from inside keeps it."""
    instance_id = instance["InstanceId"]
    changes = []
    wanted: list[tuple[str, Any, str]] = [("disableApiTermination", True, "termination protection")]
    if instance.get("InstanceLifecycle") == "spot" or instance.get("RootDeviceType") == (
        "instance-store"
    ):
        notes.append("stop protection is not available for spot or instance-store instances")
    else:
        wanted.append(("disableApiStop", True, "stop protection"))
    wanted.append(("instanceInitiatedShutdownBehavior", "stop", "shutdown from inside"))
    for attribute, value, label in wanted:
        change = Change(
            "instance-attribute", instance_id, None, value, "", detail={"attribute": attribute}
        )
        change.before = read(ctx, change)
        if change.before == value:
            if attribute != "instanceInitiatedShutdownBehavior":
                notes.append(f"{label} is already on")
            continue
        if attribute == "instanceInitiatedShutdownBehavior":
            change.summary = (
                f"{label} of {instance_id}: {change.before} → stop, so a shutdown by the "
                "intruder does not terminate it"
            )
        else:
            change.summary = f"{label} of {instance_id}: off → on"
        changes.append(change)
    if any(c.detail.get("attribute") == "disableApiStop" for c in changes):
        notes.append(
            "to stop the instance later (its memory is lost), turn stop protection off "
            "first: cloudir respond restore puts it back, or ModifyInstanceAttribute"
        )
    return changes


def _credential_changes(ctx: Context, instance: dict[str, Any], notes: list[str]) -> list[Change]:
    """No new role credentials for the intruder: profile detached, metadata service off."""
    instance_id = instance["InstanceId"]
    changes = []
    profile = Change("instance-profile", instance_id, None, None, "")
    profile.before = read(ctx, profile)
    if profile.before:
        profile.summary = (
            f"detach instance profile {profile.before} from {instance_id}: no new role "
            "credentials on the instance"
        )
        changes.append(profile)
        notes.append(
            f"role credentials already taken through {profile.before} keep working from "
            "anywhere until they expire: revoke them with cloudir respond disable-key "
            "--role NAME --revoke-sessions (it stops every session of that role, on every "
            "instance that uses it)"
        )
    endpoint = Change("metadata-endpoint", instance_id, None, "disabled", "")
    endpoint.before = read(ctx, endpoint)
    if endpoint.before != "disabled":
        endpoint.summary = f"instance metadata service of {instance_id}: enabled → disabled"
        changes.append(endpoint)
    return changes


def _quarantine_changes(
    ctx: Context,
    case_id: str,
    instance: dict[str, Any],
    vpc_id: str,
    cidrs: list[str],
    notes: list[str],
) -> list[Change]:
    """One quarantine group per VPC the interfaces are in, alone on every interface."""
    interfaces = sorted(
        instance.get("NetworkInterfaces", []),
        key=lambda n: n.get("Attachment", {}).get("DeviceIndex", 0),
    )
    if not interfaces:
        raise CloudError(f"{instance['InstanceId']} has no network interfaces to isolate")
    group_name = quarantine_group_name(case_id, cidrs)
    rules = f"ingress only from {', '.join(cidrs)}" if cidrs else "no ingress"
    groups: list[Change] = []
    quarantine: dict[str, str] = {}
    eni_changes: list[Change] = []
    for eni in interfaces:
        vpc = eni.get("VpcId") or vpc_id
        if vpc not in quarantine:
            group = Change(
                "security-group",
                vpc,
                None,
                {"name": group_name, "ingress": cidrs, "egress": []},
                f"create security group {group_name} in {vpc}: {rules}, no egress",
                detail={
                    "name": group_name,
                    "description": f"cloudir quarantine for case {case_id}: {rules}, no egress",
                    "allow_cidrs": cidrs,
                    "tags": {CASE_TAG: case_id, "Name": group_name},
                },
            )
            existing = read(ctx, group)
            if existing:
                _check_existing_group(ctx, existing, cidrs)
                quarantine[vpc] = existing
                notes.append(f"reusing quarantine group {existing} ({group_name}) in {vpc}")
            else:
                groups.append(group)
                quarantine[vpc] = QUARANTINE_GROUP + vpc
        before = sorted(g["GroupId"] for g in eni.get("Groups", []))
        if before == [quarantine[vpc]]:
            notes.append(f"{eni['NetworkInterfaceId']} already has only the quarantine group")
            continue
        names = ", ".join(
            f"{g['GroupId']} ({g.get('GroupName', '?')})" for g in eni.get("Groups", [])
        )
        device = eni.get("Attachment", {}).get("DeviceIndex", "?")
        eni_changes.append(
            Change(
                "eni-security-groups",
                eni["NetworkInterfaceId"],
                before,
                [quarantine[vpc]],
                f"interface {eni['NetworkInterfaceId']} (device {device}): security groups "
                f"{names or 'none'} → the quarantine group only",
            )
        )
    tag_keys = [t.get("Key", "") for t in instance.get("Tags", [])]
    if any(k == "eks:cluster-name" or k.startswith("kubernetes.io/cluster/") for k in tag_keys):
        notes.append(
            "this is a Kubernetes node: pod branch interfaces (security groups for pods) "
            "are not listed on the instance and keep their network"
        )
    return groups + eni_changes


def _check_existing_group(ctx: Context, group_id: str, cidrs: list[str]) -> None:
    ec2 = ctx.client("ec2")
    group = call("ec2:DescribeSecurityGroups", ec2.describe_security_groups, GroupIds=[group_id])[
        "SecurityGroups"
    ][0]
    allowed = sorted(
        [r["CidrIp"] for p in group.get("IpPermissions", []) for r in p.get("IpRanges", [])]
        + [r["CidrIpv6"] for p in group.get("IpPermissions", []) for r in p.get("Ipv6Ranges", [])]
    )
    other = any(
        p.get("UserIdGroupPairs") or p.get("PrefixListIds") for p in group.get("IpPermissions", [])
    )
    if group.get("IpPermissionsEgress") or allowed != cidrs or other:
        raise UsageError(
            f"security group {group_id} ({group['GroupName']}) exists but its rules are not "
            "the quarantine's (someone changed them): delete or fix it, then re-run"
        )


def _asg_changes(ctx: Context, instance_id: str, replace: bool, notes: list[str]) -> list[Change]:
    membership = Change("asg-membership", instance_id, None, None, "")
    group_name = read(ctx, membership)
    if not group_name:
        return []
    group = asg_group(ctx, group_name)
    desired, minimum = group["DesiredCapacity"], group["MinSize"]
    changes: list[Change] = []
    membership.before = group_name
    membership.detail = {"group": group_name, "decrement": not replace}
    if replace:
        membership.summary = (
            f"detach {instance_id} from auto-scaling group {group_name}: desired capacity "
            f"stays {desired}, so the group launches a replacement instance"
        )
    else:
        if desired - 1 < minimum:
            changes.append(
                Change(
                    "asg-min-size",
                    group_name,
                    minimum,
                    minimum - 1,
                    f"auto-scaling group {group_name}: minimum size {minimum} → {minimum - 1}, "
                    "so the instance can leave without a replacement",
                )
            )
        membership.summary = (
            f"detach {instance_id} from auto-scaling group {group_name}: desired capacity "
            f"{desired} → {desired - 1}, no replacement is launched"
        )
        notes.append(
            f"{group_name} runs one instance fewer until you raise its capacity "
            "(or isolate with --replace to have it launch a replacement now)"
        )
    if group.get("LoadBalancerNames") or group.get("TargetGroupARNs"):
        notes.append(
            f"leaving {group_name} also takes {instance_id} out of the group's load "
            "balancers and target groups"
        )
    changes.append(membership)
    return changes
