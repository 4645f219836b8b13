"""A Security Hub finding (AWS Security Finding Format, ASFF) as an `Alert`.

ASFF is one format for every product that reports to Security Hub: GuardDuty, Inspector,
Macie, Config, Security Hub's own controls, partners. A finding must hold the fields
Security Hub itself requires of an imported finding (`REQUIRED`); one without them is
not a finding Security Hub sent, and is refused with the field's path.

Findings Security Hub forwards from GuardDuty keep GuardDuty's facts in two places: the
typed `Resources[]` (`AwsIamAccessKey`, `AwsEc2Instance`, ...) and the flat
`ProductFields` (`aws/guardduty/service/action/awsApiCallAction/remoteIpDetails/
ipAddressV4`, or the older spelling without the `aws/guardduty/service/` prefix). Both
are read into the same resource facts the GuardDuty reader produces, so such a finding
scopes exactly as the native one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cloudir.alerts.document import MAX_ID, MAX_TITLE, Node, check_text
from cloudir.alerts.guardduty import (
    address,
    affected_resources,
    execution_role,
    ordered_resources,
    read_action,
)
from cloudir.alerts.identity import arn_tail, identity_resources
from cloudir.alerts.model import SEVERITIES, Alert, AlertError, AlertResource

SOURCE = "securityhub"

# What Security Hub's BatchImportFindings requires of every finding (ASFF reference).
REQUIRED = (
    "SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "Types",
    "CreatedAt", "UpdatedAt", "Severity", "Title", "Description", "Resources",
)  # fmt: skip

# `product/<company>/<product>` in ProductArn, for findings that do not name their product.
PRODUCTS = {
    "aws/guardduty": "GuardDuty",
    "aws/inspector": "Inspector",
    "aws/macie": "Macie",
    "aws/config": "Config",
    "aws/securityhub": "Security Hub",
    "aws/access-analyzer": "IAM Access Analyzer",
    "aws/health": "Health",
    "aws/firewall-manager": "Firewall Manager",
    "aws/ssm-patch-manager": "Systems Manager Patch Manager",
}

# Resource kind -> family; the first resource (in the finding's order) with a family wins.
FAMILY_OF_KIND = {
    "instance": "instance",
    "access-key": "access-key",
    "iam-user": "access-key",
    "iam-role": "access-key",
    "s3-bucket": "s3-bucket",
    "eks-cluster": "kubernetes",
    "container": "container",
    "ecs-cluster": "container",
    "ecs-task": "container",
    "lambda": "lambda",
    "rds": "rds",
}

_GUARDDUTY_PREFIX = "aws/guardduty/service/"
_S3_TYPE = re.compile(r":S3[/-]")  # GuardDuty's "<purpose>:S3/<name>" (ASFF: "S3-")


def looks_like_finding(value: Any) -> bool:
    """An ASFF finding by shape: a SchemaVersion and a ProductArn or AwsAccountId."""
    return (
        isinstance(value, dict)
        and "SchemaVersion" in value
        and ("ProductArn" in value or "AwsAccountId" in value)
    )


def read_finding(node: Node, *, region: str | None = None) -> Alert:
    """`region` is the envelope's (EventBridge), used when the finding names none."""
    for name in REQUIRED:
        if node.get(name) is None:
            raise AlertError(f"{node.path}.{name}: missing (Security Hub requires it)")
    finding_id = node.need_text("Id", limit=MAX_ID)
    types = node.texts("Types", limit=512)
    if not types:
        raise AlertError(f"{node.path}.Types: empty (Security Hub requires a type)")
    node.need_text("GeneratorId")
    product_arn = node.need_text("ProductArn")
    account = node.need_text("AwsAccountId", limit=64)
    fields = _product_fields(node)
    title = node.need_text("Title", limit=1 << 20)
    title = _clip(title)
    resources_nodes = list(node.nodes("Resources", required=True))
    first = resources_nodes[0]
    region = (
        node.text("Region", limit=64) or first.text("Region", limit=64)
        or _arn_region(product_arn) or region
    )  # fmt: skip
    partition = first.text("Partition", limit=32) or "aws"
    resources: list[AlertResource] = []
    for item in resources_nodes:
        resources += _resource(item, partition, account)
    action = _action(node, fields)
    resources += affected_resources(action.pop("affected_resources", {}))
    family = _family(resources, types[0])
    first_seen = node.time("FirstObservedAt") or node.time("CreatedAt", required=True)
    last_seen = node.time("LastObservedAt") or node.time("UpdatedAt") or first_seen
    return Alert(
        source=SOURCE,
        product=_product(node, fields, product_arn),
        id=finding_id,
        type=types[0],
        title=title,
        severity=_severity(node, fields),
        family=family,
        account=account,
        region=region,
        first_seen=first_seen,
        last_seen=last_seen,
        sample=_sample(node, fields) or title.startswith("[SAMPLE]"),
        resources=tuple(ordered_resources(resources, family)),
        action=action,
        raw=node.value,
    )


def _clip(title: str) -> str:
    return title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…"


def _arn_region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] or None if len(parts) > 4 and parts[0] == "arn" else None


def _product_fields(node: Node) -> dict[str, str]:
    """ProductFields' text values, GuardDuty's keys without their `aws/guardduty/service/`
    prefix (older findings spell them without it)."""
    fields = node.node("ProductFields")
    if fields is None:
        return {}
    found: dict[str, str] = {}
    for key, value in fields.value.items():
        if isinstance(value, str):
            found[key.removeprefix(_GUARDDUTY_PREFIX)] = value
    return found


def _field_text(fields: dict[str, str], key: str, limit: int = 2048) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    return check_text(value, f"ProductFields[{key!r}]", limit=limit)


def _product(node: Node, fields: dict[str, str], product_arn: str) -> str:
    named = node.text("ProductName", limit=256) or _field_text(
        fields, "aws/securityhub/ProductName"
    )
    if named:
        return named
    _, _, tail = product_arn.partition(":product/")
    return PRODUCTS.get(tail, tail or "Security Hub")


def _severity(node: Node, fields: dict[str, str]) -> str:
    """Severity.Label; else Severity.Normalized mapped as Security Hub maps it (0
    informational, 1-39 low, 40-69 medium, 70-89 high, 90-100 critical)."""
    severity = node.need_node("Severity")
    label = severity.text("Label", limit=32)
    if label is None:
        provider = node.node("FindingProviderFields")
        provided = provider.node("Severity") if provider else None
        label = provided.text("Label", limit=32) if provided else None
    if label is not None:
        if label.lower() not in SEVERITIES:
            raise AlertError(
                f"{severity.at('Label')}: {label[:40]!r} is not an ASFF severity label"
            )
        return label.lower()
    normalized = severity.number("Normalized")
    if normalized is None:
        label = _field_text(fields, "aws/securityhub/SeverityLabel", limit=32)
        if label and label.lower() in SEVERITIES:
            return label.lower()
        raise AlertError(f"{severity.path}: neither Label nor Normalized")
    if not 0 <= normalized <= 100:
        raise AlertError(f"{severity.at('Normalized')}: {normalized:g} is outside 0-100")
    for floor, name in ((90, "critical"), (70, "high"), (40, "medium"), (1, "low")):
        if normalized >= floor:
            return name
    return "informational"


def _sample(node: Node, fields: dict[str, str]) -> bool:
    """ASFF `Sample: true`, or GuardDuty's sample flag in ProductFields: the key
    `additionalInfo/sample`, or inside the older `additionalInfo` JSON text."""
    if node.flag("Sample"):
        return True
    if fields.get("additionalInfo/sample", "").strip().lower() == "true":
        return True
    info = fields.get("additionalInfo")
    if info and len(info) <= 1 << 20:
        try:
            inner = json.loads(info)
        except (ValueError, RecursionError):
            return False
        return isinstance(inner, dict) and inner.get("sample") is True
    return False


def _family(resources: list[AlertResource], finding_type: str) -> str:
    """The first resource's family. A GuardDuty S3 finding names the access key and the
    bucket; GuardDuty files it under the bucket, and so does this."""
    for item in resources:
        family = FAMILY_OF_KIND.get(item.kind)
        if family:
            s3 = family == "access-key" and _S3_TYPE.search(finding_type)
            if s3 and any(r.kind == "s3-bucket" for r in resources):
                return "s3-bucket"
            return family
    return "account"


# -- the resources ----------------------------------------------------------------------
def _resource(item: Node, partition: str, account: str) -> list[AlertResource]:
    kind = item.need_text("Type", limit=256)
    resource_id = item.need_text("Id")
    details_all = item.node("Details")
    details = details_all.node(kind) if details_all and kind != "Other" else None
    reader = _READERS.get(kind)
    if reader is not None:
        return reader(resource_id, details, partition, account)
    return _by_arn(resource_id, kind)


# (resource id, Details.<Type> node or None, partition, account) -> resources
Reader = Callable[[str, "Node | None", str, str], list[AlertResource]]


def _instance(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    instance_id = arn_tail(rid, ":instance/") or rid
    facts: dict[str, Any] = {}
    if d:
        facts["image_id"] = d.text("ImageId")
        facts["instance_profile"] = d.text("IamInstanceProfileArn")
    facts = {k: v for k, v in facts.items() if v}
    return [AlertResource("instance", instance_id, facts)]


def _access_key(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    key_id: str | None = (d.text("AccessKeyId") if d else None) or rid.removeprefix(
        "AWS::IAM::AccessKey:"
    )
    if key_id == rid and not rid.startswith(("AKIA", "ASIA")):
        key_id = None  # an Id that is not a key id (an ARN, a made-up name)
    return identity_resources(
        partition=partition,
        account=(d.text("AccountId", limit=64) if d else None) or account,
        key_id=key_id,
        user_type=d.text("PrincipalType", limit=64) if d else None,
        user_name=(d.text("PrincipalName") or d.text("UserName")) if d else None,
        principal_id=d.text("PrincipalId") if d else None,
    )


def _iam_user(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("UserName") if d else None) or _last(arn_tail(rid, ":user/")) or rid
    principal = rid if rid.startswith("arn:") else f"arn:{partition}:iam::{account}:user/{name}"
    return [AlertResource("iam-user", name, {"user_type": "IAMUser", "principal": principal})]


def _iam_role(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("RoleName") if d else None) or _last(arn_tail(rid, ":role/")) or rid
    facts = {"user_type": "Role", "role_arn": rid} if rid.startswith("arn:") else {}
    return [AlertResource("iam-role", name, facts)]


def _bucket(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = rid.split(":s3:::", 1)[1].split("/")[0] if ":s3:::" in rid else rid
    return [AlertResource("s3-bucket", name, {"arn": rid} if rid.startswith("arn:") else {})]


def _eks(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("Name") if d else None) or arn_tail(rid, ":cluster/") or rid
    return [AlertResource("eks-cluster", name, {"arn": rid} if rid.startswith("arn:") else {})]


def _ecs_cluster(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("ClusterName") if d else None) or arn_tail(rid, ":cluster/") or rid
    return [AlertResource("ecs-cluster", name, {"arn": rid} if rid.startswith("arn:") else {})]


def _ecs_task(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    found = [AlertResource("ecs-task", rid)]
    if d:
        found += [_container_of(c) for c in d.nodes("Containers") if c.text("Name")]
    return found


def _container(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = d.text("Name") if d else None
    image = (d.text("ImageName") or d.text("ImageId") or d.text("Image")) if d else None
    container_id = rid if not rid.startswith("arn:") else (name or rid)
    facts = {k: v for k, v in (("name", name), ("image", image)) if v}
    return [AlertResource("container", container_id, facts)]


def _container_of(node: Node) -> AlertResource:
    name = node.need_text("Name")
    image = node.text("Image")
    return AlertResource("container", name, {"name": name, **({"image": image} if image else {})})


def _lambda(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("FunctionName") if d else None) or arn_tail(rid, ":function:") or rid
    found = [AlertResource("lambda", name, {"arn": rid} if rid.startswith("arn:") else {})]
    return found + execution_role(d.text("Role") if d else None, name)


def _rds(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("DbInstanceIdentifier") if d else None) or arn_tail(rid, ":db:") or rid
    cluster = d.text("DbClusterIdentifier") if d else None
    facts = {"cluster": cluster} if cluster and cluster != name else {}
    return [AlertResource("rds", name, facts)]


def _rds_cluster(rid: str, d: Node | None, partition: str, account: str) -> list[AlertResource]:
    name = (d.text("DbClusterIdentifier") if d else None) or arn_tail(rid, ":cluster:") or rid
    return [AlertResource("rds", name)]


def _last(path: str | None) -> str | None:
    return path.rsplit("/", 1)[-1] if path else None


def _by_arn(rid: str, kind: str) -> list[AlertResource]:
    """A resource of a type without a reader here (`Other`, `AwsAccount`, a trail...):
    what its ARN says it is, when that is a kind cloudir scopes by."""
    facts = {"type": kind}
    if rid.startswith("arn:"):
        if name := arn_tail(rid, ":function:"):
            return [AlertResource("lambda", name, {**facts, "arn": rid})]
        if name := arn_tail(rid, ":instance/"):
            return [AlertResource("instance", name, facts)]
        if ":s3:::" in rid:
            return [AlertResource("s3-bucket", rid.split(":s3:::", 1)[1].split("/")[0], facts)]
        if name := _last(arn_tail(rid, ":user/")):
            return [AlertResource("iam-user", name, {**facts, "principal": rid})]
    return [AlertResource("other", rid, facts)]


_READERS: dict[str, Reader] = {
    "AwsEc2Instance": _instance,
    "AwsIamAccessKey": _access_key,
    "AwsIamUser": _iam_user,
    "AwsIamRole": _iam_role,
    "AwsS3Bucket": _bucket,
    "AwsEksCluster": _eks,
    "Container": _container,
    "AwsEcsCluster": _ecs_cluster,
    "AwsEcsTask": _ecs_task,
    "AwsEcsContainer": _container,
    "AwsLambdaFunction": _lambda,
    "AwsRdsDbInstance": _rds,
    "AwsRdsDbCluster": _rds_cluster,
}


# -- what the actor did -----------------------------------------------------------------
_REMOTE_KEY = re.compile(r"^action/.*remoteIpDetails/ipAddressV[46]$")
_SOURCE_IPS_KEY = re.compile(r"^action/kubernetesApiCallAction/sourceIPs[.:]\d+_?$")
_ACTION_KEYS = {
    "type": "action/actionType",
    "api": "action/awsApiCallAction/api",
    "service": "action/awsApiCallAction/serviceName",
    "caller_type": "action/awsApiCallAction/callerType",
    "error_code": "action/awsApiCallAction/errorCode",
    "direction": "action/networkConnectionAction/connectionDirection",
    "verb": "action/kubernetesApiCallAction/verb",
}
_AFFECTED = "action/awsApiCallAction/affectedResources/"


def _action(node: Node, fields: dict[str, str]) -> dict[str, Any]:
    """The typed `Action` (newer ASFF) and GuardDuty's flattened action in ProductFields;
    the remote address also from `Network` (the source of an inbound connection, the
    destination of an outbound one)."""
    facts = read_action(node.node("Action"))
    addresses = list(facts.pop("remote_addresses", []))
    for name, key in _ACTION_KEYS.items():
        if name not in facts and (value := _field_text(fields, key, limit=256)):
            facts[name] = value
    domain = fields.get("action/dnsRequestAction/domain")
    if domain and "domain" not in facts:
        facts["domain"] = _field_text(fields, "action/dnsRequestAction/domain")
    affected = dict(facts.get("affected_resources", {}))
    for key in sorted(fields, key=_key_order):
        if _REMOTE_KEY.match(key) or _SOURCE_IPS_KEY.match(key):
            value = _field_text(fields, key, limit=64)
            if value:
                addresses.append(address(value, f"ProductFields[{key!r}]"))
        elif key.startswith(_AFFECTED) and (value := _field_text(fields, key)):
            affected.setdefault(key.removeprefix(_AFFECTED), value)
    network = node.node("Network")
    if network:
        ends = ("DestinationIpV4", "DestinationIpV6") if (
            (network.text("Direction", limit=16) or "").upper() == "OUT"
        ) else ("SourceIpV4", "SourceIpV6")  # fmt: skip
        for name in ends:
            value = network.text(name, limit=64)
            if value:
                addresses.append(address(value, network.at(name)))
    if affected:
        facts["affected_resources"] = affected
    if addresses:
        facts["remote_addresses"] = list(dict.fromkeys(addresses))
    return facts


def _key_order(key: str) -> tuple[str, ...]:
    """ProductFields keys in the order of the finding's lists (`portProbeDetails.10_`
    after `.2_`), so addresses keep GuardDuty's order."""
    return tuple(part.zfill(8) if part.isdigit() else part for part in re.split(r"(\d+)", key))
