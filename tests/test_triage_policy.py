"""The minimum IAM policies for `cloudir triage` (docs/examples/triage-policy.json, and
triage-contain-policy.json for `--contain`) list exactly the AWS actions the triage path
makes, read from the source: every `call("service:Action", ...)` and action name the code
spells, every boto3 operation it invokes on a client (mapped to its IAM action), and the
permission each containment change declares. A call added to the triage path without its
permission fails here, and so does a permission no code needs any more."""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import pytest

from cloudir.respond.changes import KINDS, Change

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "cloudir"
EXAMPLES = REPO / "docs" / "examples"
ACTION = re.compile(r"\b([a-z0-9-]+):([A-Z][A-Za-z0-9]+)\b")

# The code that runs for `cloudir triage` (alert reading, collection by the existing
# capture code, analysis, hand-off), and what `--contain` adds (the respond code).
TRIAGE_PATH = ("aws.py", "capture", "alerts", "triage")
CONTAIN_PATH = ("respond",)
NOT_CONTAIN = {
    "respond/restore.py": "`cloudir respond restore` undoes a containment; triage never runs it"
}

NO_PERMISSION = {"sts:GetCallerIdentity": "every principal may call it; no policy grants it"}
OPTIONS_TRIAGE_DOES_NOT_USE = {
    "ec2:ModifySnapshotAttribute": "capture ebs --share-with only",
    "ec2:CopySnapshot": "capture ebs --copy-to-region only",
    "s3:ListBucketVersions": "capture cloudtrail --manifest only",
    "s3:GetBucketVersioning": "capture cloudtrail --manifest only",
    "s3:GetBucketLocation": "capture cloudtrail --manifest only",
    "logs:DescribeLogGroups": "capture logs only",
    "logs:FilterLogEvents": "capture logs only",
    "logs:CreateExportTask": "capture logs --export-to only",
    "logs:DescribeExportTasks": "capture logs --export-to only",
    "eks:DescribeCluster": "capture eks only",
    "ec2:DescribeFlowLogs": "capture logs --vpc-flow only",
    "route53resolver:ListResolverQueryLogConfigs": "capture logs --dns only",
    "route53resolver:ListResolverQueryLogConfigAssociations": "capture logs --dns only",
    "elasticloadbalancing:DescribeLoadBalancers": "capture logs --alb only",
    "elasticloadbalancing:DescribeLoadBalancerAttributes": "capture logs --alb only",
    "s3:GetBucketLogging": "capture logs --s3-access only",
    "lambda:ListFunctions": "capture lambda only",
    "lambda:GetFunction": "capture lambda only",
    "lambda:ListVersionsByFunction": "capture lambda only",
    "lambda:ListAliases": "capture lambda only",
    "lambda:GetPolicy": "capture lambda only",
    "lambda:GetFunctionUrlConfig": "capture lambda only",
    "lambda:ListEventSourceMappings": "capture lambda only",
    "lambda:GetLayerVersion": "capture lambda only",
}
RESTORE_ONLY = {
    "ec2:DeleteTags": "undoes the tags isolate added",
    "autoscaling:AttachInstances": "puts a detached instance back in its group",
    "ec2:AssociateIamInstanceProfile": "gives the instance its profile back",
    "iam:PassRole": "needed by AssociateIamInstanceProfile",
    "iam:DeleteUserPolicy": "removes the deny policy disable-key put on a user",
    "iam:DeleteRolePolicy": "removes the session-revoking policy put on a role",
}
IMPLIED = {
    "kms:Decrypt": "S3 GetObject of an SSE-KMS trail log (only via S3: kms:ViaService)",
    "kms:GenerateDataKey": "S3 PutObject into an SSE-KMS case bucket (only via S3)",
}
"""Permissions AWS checks on the caller for a call the code makes to another service."""
# boto3 operations whose IAM action is not service:OperationName
OPERATION_ACTIONS = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectVersions"): "s3:ListBucketVersions",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "GetObjectAttributes"): "s3:GetObjectAttributes",
}


def _files(roots: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        path = PACKAGE / root
        found.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [p for p in found if p.relative_to(PACKAGE).as_posix() not in NOT_CONTAIN]


@cache
def _operations(service: str) -> dict[str, str]:
    """boto3 method name -> IAM action, for every operation of a service."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    prefix = model.metadata.get("signingName") or model.endpoint_prefix
    return {
        xform_name(op): OPERATION_ACTIONS.get((service, op), f"{prefix}:{op}")
        for op in model.operation_names
    }


def _named(text: str, service_of_label: bool = False) -> set[str]:
    """The actions a string names: the whole string is an action or a comma-separated
    list of them ("ec2:AssociateIamInstanceProfile, iam:PassRole"); a `call` label may
    go on after a space ("s3:ListObjectsV2 s3://bucket/prefix"). An API name used as a
    label becomes its IAM action (s3:ListObjectsV2 -> s3:ListBucket)."""
    if service_of_label:
        text = text.split(" ", 1)[0]
    found = set()
    for part in text.split(", "):
        match = ACTION.fullmatch(part)
        if match is None:
            return set()
        service, operation = match.groups()
        found.add(OPERATION_ACTIONS.get((service, operation), part))
    return {a for a in found if not a.startswith("aws:")}  # aws: is a condition key


def _client_service(node: ast.AST) -> str | None:
    """ "ec2" for `<anything>.client("ec2", ...)`."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def actions_in(path: Path) -> set[str]:
    """The IAM actions one module's code names or invokes."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    bound: dict[str, set[str]] = {}  # variable name -> services of the clients it holds
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= _named(node.value)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "call"
            and node.args
        ):
            label = node.args[0]
            if isinstance(label, ast.JoinedStr) and label.values:
                label = label.values[0]
            if isinstance(label, ast.Constant) and isinstance(label.value, str):
                found |= _named(label.value, service_of_label=True)
        if isinstance(node, ast.Assign) and (service := _client_service(node.value)):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound.setdefault(target.id, set()).add(service)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        for service in bound.get(node.value.id, ()):
            operations = _operations(service)
            if node.attr in operations:  # ec2.describe_instances
                found.add(operations[node.attr])
    for node in ast.walk(tree):  # s3.get_paginator("list_objects_v2")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get_paginator"
            and isinstance(node.func.value, ast.Name)
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            for service in bound.get(node.func.value.id, ()):
                operations = _operations(service)
                if node.args[0].value in operations:
                    found.add(operations[node.args[0].value])
    return found


def _made(roots: tuple[str, ...]) -> dict[str, set[str]]:
    made: dict[str, set[str]] = {}
    for path in _files(roots):
        for action in actions_in(path):
            made.setdefault(action, set()).add(path.relative_to(PACKAGE).as_posix())
    return made


def _change_permissions() -> set[str]:
    """Every permission a containment change may declare (`Change.permission`), for any
    value it sets: the writes isolate and disable-key make, and the ones restore makes."""
    found: set[str] = set()
    for kind in KINDS:
        for after in (None, {"k": "v"}, {"k": None}, "x", True):
            for target in ("user/u", "role/r", "i-0"):
                change = Change(kind, target, None, after, "", detail={})
                found |= set(change.permission.split(", "))
    return found


def triage_actions() -> set[str]:
    return set(_made(TRIAGE_PATH)) - set(NO_PERMISSION) - set(OPTIONS_TRIAGE_DOES_NOT_USE)


def contain_actions() -> set[str]:
    made = set(_made(CONTAIN_PATH)) | _change_permissions()
    return (made | triage_actions()) - set(NO_PERMISSION) - set(RESTORE_ONLY)


def policy_actions(name: str) -> set[str]:
    policy = json.loads((EXAMPLES / name).read_text())
    assert policy["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and statement.get("Sid")
        listed = statement["Action"]
        assert isinstance(listed, list) and len(listed) == len(set(listed)), statement["Sid"]
        actions |= set(listed)
    return actions


def test_the_scan_sees_the_calls_it_must() -> None:
    """An empty or half-blind scan would pass anything: it must find calls made through
    `call(...)`, through a paginator, by a bare client method, and declared permissions."""
    triage = triage_actions()
    assert {"cloudtrail:LookupEvents", "s3:ListBucket", "s3:GetObject"} <= triage
    assert {"ebs:GetSnapshotBlock", "ec2:CreateSnapshots", "sns:Publish"} <= triage
    assert {"s3:PutObject", "s3:AbortMultipartUpload"} <= triage
    contain = contain_actions()
    assert {"iam:UpdateAccessKey", "iam:PutUserPolicy", "ec2:ModifyInstanceAttribute"} <= contain
    assert not set(RESTORE_ONLY) & contain


def test_what_contain_leaves_out_is_what_the_readme_calls_restore() -> None:
    """The actions left out of the contain policy are the README's "Restore" statement
    (the respond policy's undo writes), except ec2:DeleteSecurityGroup: isolate itself
    deletes a quarantine group it left half-made, so --contain needs it."""
    text = (REPO / "README.md").read_text()
    start = text.index("The minimum IAM policy for the responder's role")
    block = text[
        text.index("```json", start) + 7 : text.index("```", text.index("```json", start) + 7)
    ]
    restore = next(s for s in json.loads(block)["Statement"] if s["Sid"] == "Restore")
    assert set(RESTORE_ONLY) == set(restore["Action"]) - {"ec2:DeleteSecurityGroup"}
    assert set(RESTORE_ONLY) <= _change_permissions() | set(_made(CONTAIN_PATH))
    assert "ec2:DeleteSecurityGroup" in contain_actions()


@pytest.mark.parametrize(
    ("policy", "needed"),
    [("triage-policy.json", triage_actions), ("triage-contain-policy.json", contain_actions)],
)
def test_every_action_the_path_makes_is_in_the_policy(policy: str, needed: object) -> None:
    assert callable(needed)
    missing = needed() - policy_actions(policy)
    assert not missing, f"{policy} lacks {sorted(missing)}"


def _pending(action: str) -> str | None:
    """Why an action no code on this checkout makes is still listed: the alert readers
    that fetch findings by id (`--guardduty`, `--securityhub`) live in modules another
    branch of issue 17 adds. None once those modules exist: then the code must make it."""
    if action.startswith(("guardduty:", "securityhub:")) and not (
        (PACKAGE / "alerts" / "fetch.py").exists()
    ):
        return "cloudir/alerts/fetch.py is not on this checkout"
    return None


@pytest.mark.parametrize(
    ("policy", "needed"),
    [("triage-policy.json", triage_actions), ("triage-contain-policy.json", contain_actions)],
)
def test_the_policy_grants_nothing_the_path_does_not_make(policy: str, needed: object) -> None:
    assert callable(needed)
    extra = policy_actions(policy) - needed() - set(IMPLIED)
    unexplained = {a for a in extra if _pending(a) is None}
    assert not unexplained, f"{policy} grants {sorted(unexplained)}, which no triage code calls"


def test_the_contain_policy_is_the_triage_policy_plus_containment() -> None:
    base, contain = (
        policy_actions("triage-policy.json"),
        policy_actions("triage-contain-policy.json"),
    )
    assert base < contain
    assert contain - base == contain_actions() - triage_actions()


def test_kms_is_granted_only_through_s3() -> None:
    for name in ("triage-policy.json", "triage-contain-policy.json"):
        policy = json.loads((EXAMPLES / name).read_text())
        for statement in policy["Statement"]:
            if any(a.startswith("kms:") for a in statement["Action"]):
                assert all(a.startswith("kms:") for a in statement["Action"])
                via = statement["Condition"]["StringLike"]["kms:ViaService"]
                assert via == "s3.*.amazonaws.com"


def test_the_doc_lists_both_policies_as_the_files_hold_them() -> None:
    doc = (REPO / "docs" / "triage.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", doc, re.S)]
    for name in ("triage-policy.json", "triage-contain-policy.json"):
        assert json.loads((EXAMPLES / name).read_text()) in blocks, name
