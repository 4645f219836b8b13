"""The settings containment changes, each as a pair: read what is there, write a value.

A `Change` is "set KIND of TARGET from BEFORE to AFTER". Keeping reads and writes side
by side per kind is what makes restore exact: undoing a change is the same write with
the recorded BEFORE, after a read that shows nobody else has changed it since.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudir.aws import Aws, call, request_id, tag_list
from cloudir.errors import CloudError, CloudirError, UsageError

Reporter = Callable[[str], None]

QUARANTINE_GROUP = "$quarantine-group:"
"""Placeholder prefix (+ VPC id) for a quarantine group's id, known once it is created."""

GONE_MARKERS = ("NotFound", "NoSuchEntity", "not found", "is not a key of user")
"""Words in an error that mean the resource is gone (terminated, deleted), not refused."""


def is_gone(exc: CloudError) -> bool:
    return any(marker in str(exc) for marker in GONE_MARKERS)


@dataclass
class Change:
    """One setting to change; `detail` holds what the write needs besides the value."""

    kind: str
    target: str
    before: Any
    after: Any
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    undoable: bool = True
    step: int = 0  # its place in the action that made it, once recorded

    @property
    def permission(self) -> str:
        """The IAM action this write needs, which differs when it undoes (after is None)."""
        undoing = self.after is None
        if self.kind == "inline-policy":
            verb = "Delete" if undoing else "Put"
            return f"iam:{verb}{'User' if self.target.startswith('user/') else 'Role'}Policy"
        if self.kind == "security-group" and undoing:
            return "ec2:DeleteSecurityGroup"
        if self.kind == "asg-membership" and not undoing:
            return "autoscaling:AttachInstances"
        if self.kind == "instance-profile" and not undoing:
            return "ec2:AssociateIamInstanceProfile, iam:PassRole"
        if self.kind == "tags" and isinstance(self.after, dict):
            verbs = {
                "ec2:DeleteTags" if v is None else "ec2:CreateTags" for v in self.after.values()
            }
            return ", ".join(sorted(verbs))
        return KINDS[self.kind].permission

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "summary": self.summary,
            "detail": self.detail,
            "undoable": self.undoable,
            "permission": self.permission,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        if data.get("kind") not in KINDS:
            raise UsageError(f"recorded change of unknown kind {data.get('kind')!r}")
        return cls(
            kind=data["kind"],
            target=data["target"],
            before=data.get("before"),
            after=data.get("after"),
            summary=data.get("summary", ""),
            detail=data.get("detail") or {},
            undoable=bool(data.get("undoable", True)),
            step=int(data.get("step") or 0),
        )


@dataclass
class Context:
    """What a read or write may use: clients, the case (for snapshots), placeholders."""

    aws: Aws
    report: Reporter
    case: Any = None  # cloudir.case.Case when acting; None while planning
    identity: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.aws.client(service)
        return self._clients[service]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.resolved.get(value, value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value


Read = Callable[[Context, Change], Any]
Write = Callable[[Context, Change, Any], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class Kind:
    """How to read and write one kind of setting, and the IAM action the write needs."""

    permission: str
    read: Read
    write: Write


def _done(value: Any, resp: dict[str, Any], **extra: Any) -> tuple[Any, dict[str, Any]]:
    return value, {"request_id": request_id(resp), **extra}


# -- snapshots (never undone: they are evidence) ---------------------------------------
def _read_nothing(ctx: Context, change: Change) -> Any:
    return None


def _write_snapshot(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    from cloudir.capture.ebs import capture_instance, take_snapshots

    if ctx.case is None:
        raise UsageError("a snapshot needs a case to record it in")
    ec2 = ctx.client("ec2")
    item, volumes = capture_instance(ctx.case, ec2, ctx.aws.region, change.target, ctx.identity)
    taken = take_snapshots(ctx.case, ec2, ctx.aws.region, volumes, change.target, ctx.report)
    ids = [s.snapshot_id for s in taken]
    return ids, {
        "instance_evidence_id": item.evidence_id,
        "snapshots": [
            {"snapshot_id": s.snapshot_id, "volume_id": s.volume_id, "evidence_id": s.evidence_id}
            for s in taken
        ],
    }


# -- the quarantine security group ----------------------------------------------------
def _read_group(ctx: Context, change: Change) -> Any:
    ec2 = ctx.client("ec2")
    found = call(
        "ec2:DescribeSecurityGroups",
        ec2.describe_security_groups,
        Filters=[
            {"Name": "vpc-id", "Values": [change.target]},
            {"Name": "group-name", "Values": [change.detail["name"]]},
        ],
    )["SecurityGroups"]
    return found[0]["GroupId"] if found else None


def _write_group(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    if value is None:  # undo: delete the group this action created
        group_id = change.before
        try:
            resp = call("ec2:DeleteSecurityGroup", ec2.delete_security_group, GroupId=group_id)
        except CloudError as exc:
            if "DependencyViolation" not in str(exc):
                raise
            ctx.report(f"{group_id} is still used by other interfaces; left in place")
            return group_id, {"kept": "still in use"}
        return None, {"request_id": request_id(resp), "deleted": group_id}
    created = call(
        "ec2:CreateSecurityGroup",
        ec2.create_security_group,
        GroupName=change.detail["name"],
        Description=change.detail["description"],
        VpcId=change.target,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": tag_list(change.detail.get("tags", {}))}
        ],
    )
    group_id = created["GroupId"]
    try:
        egress, cidrs = _seal_group(ec2, group_id, change.detail.get("allow_cidrs") or [])
    except (CloudirError, KeyboardInterrupt) as exc:
        # One recorded step is several calls: a group left half-made (open egress) would
        # be neither isolation nor on the record, so it goes again before the error does.
        try:
            call("ec2:DeleteSecurityGroup", ec2.delete_security_group, GroupId=group_id)
            fate = f"the half-made group {group_id} was deleted again"
        except CloudError as gone:
            fate = f"the half-made group {group_id} could NOT be deleted ({gone}): delete it"
        if isinstance(exc, KeyboardInterrupt):
            ctx.report(fate)
            raise
        raise CloudError(f"{exc}; {fate}") from exc
    ctx.resolved[QUARANTINE_GROUP + change.target] = group_id
    return _done(group_id, created, egress_revoked=len(egress), ingress_cidrs=cidrs)


def _seal_group(ec2: Any, group_id: str, cidrs: list[str]) -> tuple[list[Any], list[str]]:
    """No egress, and ingress only from the examiners' ranges."""
    described: dict[str, Any] = {}
    for attempt in range(5):  # a new group can take a moment to be visible (eventual)
        try:
            described = call(
                "ec2:DescribeSecurityGroups", ec2.describe_security_groups, GroupIds=[group_id]
            )["SecurityGroups"][0]
            break
        except CloudError as exc:
            if "InvalidGroup.NotFound" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.5 * 2**attempt)
    egress = described.get("IpPermissionsEgress") or []
    if egress:  # a new group allows all egress until told otherwise
        call(
            "ec2:RevokeSecurityGroupEgress",
            ec2.revoke_security_group_egress,
            GroupId=group_id,
            IpPermissions=egress,
        )
    if cidrs:
        call(
            "ec2:AuthorizeSecurityGroupIngress",
            ec2.authorize_security_group_ingress,
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "-1",
                    "IpRanges": [
                        {"CidrIp": c, "Description": "cloudir examiners"}
                        for c in cidrs
                        if ":" not in c
                    ],
                    "Ipv6Ranges": [
                        {"CidrIpv6": c, "Description": "cloudir examiners"}
                        for c in cidrs
                        if ":" in c
                    ],
                }
            ],
        )
    return egress, cidrs


# -- network interfaces ----------------------------------------------------------------
def _read_eni_groups(ctx: Context, change: Change) -> Any:
    ec2 = ctx.client("ec2")
    eni = call(
        "ec2:DescribeNetworkInterfaces",
        ec2.describe_network_interfaces,
        NetworkInterfaceIds=[change.target],
    )["NetworkInterfaces"][0]
    return sorted(g["GroupId"] for g in eni.get("Groups", []))


def _write_eni_groups(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    groups = sorted(ctx.resolve(value))
    resp = call(
        "ec2:ModifyNetworkInterfaceAttribute",
        ec2.modify_network_interface_attribute,
        NetworkInterfaceId=change.target,
        Groups=groups,
    )
    return _done(groups, resp)


# -- auto scaling ------------------------------------------------------------------------
def _read_asg_membership(ctx: Context, change: Change) -> Any:
    asg = ctx.client("autoscaling")
    found = call(
        "autoscaling:DescribeAutoScalingInstances",
        asg.describe_auto_scaling_instances,
        InstanceIds=[change.target],
    )["AutoScalingInstances"]
    return found[0]["AutoScalingGroupName"] if found else None


def _write_asg_membership(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    asg = ctx.client("autoscaling")
    group = change.detail["group"]
    if value is None:
        resp = call(
            "autoscaling:DetachInstances",
            asg.detach_instances,
            InstanceIds=[change.target],
            AutoScalingGroupName=group,
            ShouldDecrementDesiredCapacity=bool(change.detail.get("decrement", True)),
        )
        return _done(
            None, resp, activities=[a.get("ActivityId") for a in resp.get("Activities", [])]
        )
    resp = call(
        "autoscaling:AttachInstances",
        asg.attach_instances,
        InstanceIds=[change.target],
        AutoScalingGroupName=group,
    )
    return _done(group, resp)


def asg_group(ctx: Context, name: str) -> dict[str, Any]:
    asg = ctx.client("autoscaling")
    groups = call(
        "autoscaling:DescribeAutoScalingGroups",
        asg.describe_auto_scaling_groups,
        AutoScalingGroupNames=[name],
    )["AutoScalingGroups"]
    if not groups:
        raise CloudError(f"auto-scaling group {name} not found")
    return groups[0]


def _read_asg_min(ctx: Context, change: Change) -> Any:
    return asg_group(ctx, change.target)["MinSize"]


def _write_asg_min(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    asg = ctx.client("autoscaling")
    resp = call(
        "autoscaling:UpdateAutoScalingGroup",
        asg.update_auto_scaling_group,
        AutoScalingGroupName=change.target,
        MinSize=int(value),
    )
    return _done(int(value), resp)


# -- instance attributes and tags ------------------------------------------------------
ATTRIBUTE_PARAMS = {
    "disableApiTermination": "DisableApiTermination",
    "disableApiStop": "DisableApiStop",
    "instanceInitiatedShutdownBehavior": "InstanceInitiatedShutdownBehavior",
}
TEXT_ATTRIBUTES = {"instanceInitiatedShutdownBehavior"}


def _read_attribute(ctx: Context, change: Change) -> Any:
    ec2 = ctx.client("ec2")
    name = change.detail["attribute"]
    resp = call(
        "ec2:DescribeInstanceAttribute",
        ec2.describe_instance_attribute,
        InstanceId=change.target,
        Attribute=name,
    )
    value = resp.get(ATTRIBUTE_PARAMS[name], {}).get("Value")
    return value if name in TEXT_ATTRIBUTES else bool(value)


def _write_attribute(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    param = ATTRIBUTE_PARAMS[change.detail["attribute"]]
    resp = call(
        "ec2:ModifyInstanceAttribute",
        ec2.modify_instance_attribute,
        InstanceId=change.target,
        **{
            param: {
                "Value": value if change.detail["attribute"] in TEXT_ATTRIBUTES else bool(value)
            }
        },
    )
    return _done(value, resp)


def _read_tags(ctx: Context, change: Change) -> Any:
    ec2 = ctx.client("ec2")
    keys = list(change.detail["keys"])
    found = call(
        "ec2:DescribeTags",
        ec2.describe_tags,
        Filters=[
            {"Name": "resource-id", "Values": [change.target]},
            {"Name": "key", "Values": keys},
        ],
    )["Tags"]
    current = {t["Key"]: t["Value"] for t in found}
    return {k: current.get(k) for k in keys}


def _write_tags(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    put = {k: v for k, v in value.items() if v is not None}
    gone = [k for k, v in value.items() if v is None]
    details: dict[str, Any] = {}
    if put:
        resp = call(
            "ec2:CreateTags", ec2.create_tags, Resources=[change.target], Tags=tag_list(put)
        )
        details["request_id"] = request_id(resp)
    if gone:
        resp = call(
            "ec2:DeleteTags",
            ec2.delete_tags,
            Resources=[change.target],
            Tags=[{"Key": k} for k in gone],
        )
        details["delete_request_id"] = request_id(resp)
    return dict(value), details


# -- credentials on the instance: its profile and the metadata service --------------------
def _profile_association(ctx: Context, instance_id: str) -> dict[str, Any] | None:
    ec2 = ctx.client("ec2")
    found = call(
        "ec2:DescribeIamInstanceProfileAssociations",
        ec2.describe_iam_instance_profile_associations,
        Filters=[{"Name": "instance-id", "Values": [instance_id]}],
    )["IamInstanceProfileAssociations"]
    live = [a for a in found if a.get("State") in ("associated", "associating")]
    return live[0] if live else None


def _read_profile(ctx: Context, change: Change) -> Any:
    association = _profile_association(ctx, change.target)
    return association["IamInstanceProfile"]["Arn"] if association else None


def _write_profile(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    if value is None:
        association = _profile_association(ctx, change.target)
        if association is None:
            return None, {"note": "no profile was associated"}
        resp = call(
            "ec2:DisassociateIamInstanceProfile",
            ec2.disassociate_iam_instance_profile,
            AssociationId=association["AssociationId"],
        )
        return _done(None, resp, association_id=association["AssociationId"])
    resp = call(
        "ec2:AssociateIamInstanceProfile",
        ec2.associate_iam_instance_profile,
        IamInstanceProfile={"Arn": value},
        InstanceId=change.target,
    )
    return _done(value, resp)


def _read_metadata_endpoint(ctx: Context, change: Change) -> Any:
    ec2 = ctx.client("ec2")
    found = call("ec2:DescribeInstances", ec2.describe_instances, InstanceIds=[change.target])
    instance = found["Reservations"][0]["Instances"][0]
    return instance.get("MetadataOptions", {}).get("HttpEndpoint", "enabled")


def _write_metadata_endpoint(
    ctx: Context, change: Change, value: Any
) -> tuple[Any, dict[str, Any]]:
    ec2 = ctx.client("ec2")
    resp = call(
        "ec2:ModifyInstanceMetadataOptions",
        ec2.modify_instance_metadata_options,
        InstanceId=change.target,
        HttpEndpoint=value,
    )
    return _done(value, resp)


# -- IAM ----------------------------------------------------------------------------------
def _read_key_status(ctx: Context, change: Change) -> Any:
    iam = ctx.client("iam")
    keys = call("iam:ListAccessKeys", iam.list_access_keys, UserName=change.detail["user"])[
        "AccessKeyMetadata"
    ]
    for key in keys:
        if key["AccessKeyId"] == change.target:
            return key["Status"]
    raise CloudError(f"access key {change.target} is not a key of user {change.detail['user']}")


def _write_key_status(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    iam = ctx.client("iam")
    resp = call(
        "iam:UpdateAccessKey",
        iam.update_access_key,
        UserName=change.detail["user"],
        AccessKeyId=change.target,
        Status=value,
    )
    return _done(value, resp)


def principal(target: str) -> tuple[str, str]:
    """'role/NAME' or 'user/NAME' → ('role', NAME)."""
    kind, _, name = target.partition("/")
    if kind not in ("role", "user") or not name:
        raise UsageError(f"{target!r} is not role/NAME or user/NAME")
    return kind, name


def _read_inline_policy(ctx: Context, change: Change) -> Any:
    iam = ctx.client("iam")
    kind, name = principal(change.target)
    policy = change.detail["policy"]
    get = iam.get_role_policy if kind == "role" else iam.get_user_policy
    what = "iam:GetRolePolicy" if kind == "role" else "iam:GetUserPolicy"
    try:
        resp = call(what, get, **{f"{kind.title()}Name": name, "PolicyName": policy})
    except CloudError as exc:
        if "NoSuchEntity" in str(exc):
            return None
        raise
    document = resp["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _write_inline_policy(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    iam = ctx.client("iam")
    kind, name = principal(change.target)
    who = {f"{kind.title()}Name": name, "PolicyName": change.detail["policy"]}
    if value is None:
        delete = iam.delete_role_policy if kind == "role" else iam.delete_user_policy
        what = "iam:DeleteRolePolicy" if kind == "role" else "iam:DeleteUserPolicy"
        return _done(None, call(what, delete, **who))
    put = iam.put_role_policy if kind == "role" else iam.put_user_policy
    what = "iam:PutRolePolicy" if kind == "role" else "iam:PutUserPolicy"
    return _done(value, call(what, put, PolicyDocument=json.dumps(value), **who))


KINDS: dict[str, Kind] = {
    "snapshot": Kind("ec2:CreateSnapshots", _read_nothing, _write_snapshot),
    "security-group": Kind("ec2:CreateSecurityGroup", _read_group, _write_group),
    "eni-security-groups": Kind(
        "ec2:ModifyNetworkInterfaceAttribute", _read_eni_groups, _write_eni_groups
    ),
    "asg-min-size": Kind("autoscaling:UpdateAutoScalingGroup", _read_asg_min, _write_asg_min),
    "asg-membership": Kind(
        "autoscaling:DetachInstances", _read_asg_membership, _write_asg_membership
    ),
    "instance-attribute": Kind("ec2:ModifyInstanceAttribute", _read_attribute, _write_attribute),
    "tags": Kind("ec2:CreateTags", _read_tags, _write_tags),
    "instance-profile": Kind("ec2:DisassociateIamInstanceProfile", _read_profile, _write_profile),
    "metadata-endpoint": Kind(
        "ec2:ModifyInstanceMetadataOptions", _read_metadata_endpoint, _write_metadata_endpoint
    ),
    "access-key-status": Kind("iam:UpdateAccessKey", _read_key_status, _write_key_status),
    "inline-policy": Kind("iam:PutRolePolicy", _read_inline_policy, _write_inline_policy),
}


def read(ctx: Context, change: Change) -> Any:
    return KINDS[change.kind].read(ctx, change)


def write(ctx: Context, change: Change, value: Any) -> tuple[Any, dict[str, Any]]:
    return KINDS[change.kind].write(ctx, change, value)


def same(kind: str, a: Any, b: Any) -> bool:
    """Equal as settings: group lists compare as sets; a group "to create" (its spec) is
    matched by any group of that name existing."""
    if kind == "eni-security-groups" and isinstance(a, list) and isinstance(b, list):
        return sorted(a) == sorted(b)
    if kind == "security-group" and isinstance(b, dict):
        return a is not None
    return a == b
