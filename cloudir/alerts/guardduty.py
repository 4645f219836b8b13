"""A GuardDuty finding (API, CLI or EventBridge shape) as an `Alert`.

The finding model is GuardDuty's `Finding` (API reference): `id`, `type`, `severity` (a
number), `resource` (a `resourceType` and one `...Details` block per resource involved)
and `service` (the action the actor took, when it was first and last seen, and
`additionalInfo`). The API's wire format, EventBridge and console exports spell it in
camelCase, boto3 and the AWS CLI in PascalCase; `Node` reads both.

Every resource block present is read whatever the `resourceType`: an S3 finding carries
the bucket and the access key that touched it, an IAM finding the instance whose
credentials were used. The `resourceType` picks the family (and so the playbook) and
the first resource.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from cloudir.alerts.document import MAX_ID, MAX_TITLE, Node
from cloudir.alerts.identity import arn_tail, identity_resources, role_name
from cloudir.alerts.model import Alert, AlertError, AlertResource

SOURCE = "guardduty"
PRODUCT = "GuardDuty"

# resource.resourceType -> family. Types GuardDuty adds later (malware scans of snapshots,
# images, recovery points, Bedrock guardrails) fall to "account": the account as a whole.
FAMILY_OF_RESOURCE = {
    "Instance": "instance",
    "AccessKey": "access-key",
    "S3Bucket": "s3-bucket",
    "S3Object": "s3-bucket",
    "EKSCluster": "kubernetes",
    "KubernetesCluster": "kubernetes",
    "Container": "container",
    "ECSCluster": "container",
    "Lambda": "lambda",
    "RDSDBInstance": "rds",
    "RDSLimitlessDB": "rds",
}

# The resource kind that comes first for each family (the one the alert is about).
_MAIN_KIND = {
    "instance": "instance",
    "access-key": "access-key",
    "s3-bucket": "s3-bucket",
    "kubernetes": "eks-cluster",
    "container": "container",
    "lambda": "lambda",
    "rds": "rds",
}


def severity_label(value: float, path: str) -> str:
    """GuardDuty's 0-10 scale as cloudir's level (GuardDuty user guide, "Severity levels"):
    9.0-10.0 critical, 7.0-8.9 high, 4.0-6.9 medium, below 4.0 low; 0 is reserved by
    GuardDuty and read as informational."""
    if not 0 <= value <= 10:
        raise AlertError(f"{path}: {value:g} is outside GuardDuty's severity scale 0-10")
    if value >= 9:
        return "critical"
    if value >= 7:
        return "high"
    if value >= 4:
        return "medium"
    return "low" if value > 0 else "informational"


def looks_like_finding(value: Any) -> bool:
    """A GuardDuty finding by shape: an id, a text `type` and a `resource` object."""
    if not isinstance(value, dict):
        return False
    node = Node(value, "$")
    return (
        node.has("id")
        and isinstance(node.get("type"), str)
        and isinstance(node.get("resource"), dict)
    )


def read_finding(node: Node, *, account: str | None = None, region: str | None = None) -> Alert:
    """`account` and `region` are the envelope's (EventBridge), used when the finding
    does not name its own."""
    finding_id = node.need_text("id", limit=MAX_ID)
    finding_type = node.need_text("type", limit=256)
    severity = severity_label(node.need_number("severity"), node.at("severity"))
    resource = node.need_node("resource")
    resource_type = resource.need_text("resourceType", limit=64)
    title = _title(node) or finding_type
    account = node.text("accountId", limit=64) or account
    region = node.text("region", limit=64) or region
    partition = node.text("partition", limit=32) or "aws"
    service = node.node("service")
    first_seen = (service.time("eventFirstSeen") if service else None) or node.time("createdAt")
    last_seen = (
        (service.time("eventLastSeen") if service else None) or node.time("updatedAt") or first_seen
    )
    family = FAMILY_OF_RESOURCE.get(resource_type, "account")
    action = read_action(service.node("action") if service else None)
    resources = _resources(resource, partition, account)
    resources += affected_resources(action.pop("affected_resources", {}))
    return Alert(
        source=SOURCE,
        product=PRODUCT,
        id=finding_id,
        type=finding_type,
        title=title,
        severity=severity,
        family=family,
        account=account,
        region=region,
        first_seen=first_seen,
        last_seen=last_seen,
        sample=_sample(service) or title.startswith("[SAMPLE]"),
        resources=tuple(ordered_resources(resources, family)),
        action=action,
        raw=node.value,
    )


def _title(node: Node) -> str | None:
    title = node.text("title", limit=1 << 20, identifier=False)
    if title and len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1] + "…"
    return title


def _sample(service: Node | None) -> bool:
    """`service.additionalInfo.sample`: an object in EventBridge events and console
    exports; in the API's own response `additionalInfo` is `{"value": "<JSON text>",
    "type": "default"}`, and the flag is inside that text."""
    info = service.node("additionalInfo") if service else None
    if info is None:
        return False
    if info.flag("sample"):
        return True
    value = info.get("value")
    if isinstance(value, str) and len(value) <= 1 << 20:
        try:
            inner = json.loads(value)
        except (ValueError, RecursionError):
            return False
        return isinstance(inner, dict) and inner.get("sample") is True
    return False


# -- the resources ----------------------------------------------------------------------
def _resources(resource: Node, partition: str, account: str | None) -> list[AlertResource]:
    found: list[AlertResource] = []
    key = resource.node("accessKeyDetails")
    if key:
        found += identity_resources(
            partition=partition,
            account=account,
            key_id=key.text("accessKeyId"),
            user_type=key.text("userType", limit=64),
            user_name=key.text("userName"),
            principal_id=key.text("principalId"),
        )
    instance = resource.node("instanceDetails")
    if instance and instance.text("instanceId"):
        profile = instance.node("iamInstanceProfile")
        found.append(
            AlertResource(
                "instance",
                instance.text("instanceId") or "",
                _facts(
                    image_id=instance.text("imageId"),
                    instance_profile=profile.text("arn") if profile else None,
                ),
            )
        )
    for bucket in resource.nodes("s3BucketDetails"):
        name = bucket.text("name") or _bucket_from_arn(bucket.text("arn"))
        if name:
            found.append(AlertResource("s3-bucket", name, _facts(arn=bucket.text("arn"))))
    eks = resource.node("eksClusterDetails")
    if eks:
        name = eks.text("name") or arn_tail(eks.text("arn") or "", ":cluster/")
        if name:
            found.append(AlertResource("eks-cluster", name, _facts(arn=eks.text("arn"))))
    kubernetes = resource.node("kubernetesDetails")
    workload = kubernetes.node("kubernetesWorkloadDetails") if kubernetes else None
    if workload:
        found += [_container(c) for c in workload.nodes("containers") if _container_id(c)]
    ecs = resource.node("ecsClusterDetails")
    if ecs:
        name = ecs.text("name") or arn_tail(ecs.text("arn") or "", ":cluster/")
        if name:
            found.append(AlertResource("ecs-cluster", name, _facts(arn=ecs.text("arn"))))
        task = ecs.node("taskDetails")
        if task:
            if task.text("arn"):
                found.append(AlertResource("ecs-task", task.text("arn") or ""))
            found += [_container(c) for c in task.nodes("containers") if _container_id(c)]
    container = resource.node("containerDetails")
    if container and _container_id(container):
        found.append(_container(container))
    found += _lambda(resource.node("lambdaDetails"))
    found += _databases(resource)
    return found


def _facts(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _bucket_from_arn(arn: str | None) -> str | None:
    if arn and arn.startswith("arn:") and ":s3:::" in arn:
        return arn.split(":s3:::", 1)[1].split("/")[0] or None
    return None


def _container_id(node: Node) -> str | None:
    return node.text("id") or node.text("name")


def _container(node: Node) -> AlertResource:
    return AlertResource(
        "container",
        _container_id(node) or "",
        _facts(name=node.text("name"), image=node.text("image")),
    )


def _lambda(node: Node | None) -> list[AlertResource]:
    if node is None:
        return []
    arn = node.text("functionArn")
    name = node.text("functionName") or (arn_tail(arn, ":function:") if arn else None)
    if not name:
        return []
    found = [AlertResource("lambda", name, _facts(arn=arn))]
    role = node.text("role")
    found += execution_role(role, name)
    return found


def execution_role(role_arn: str | None, function_name: str) -> list[AlertResource]:
    """A function's execution role; its calls are the session `<role>/<function name>`."""
    role = role_name(role_arn) if role_arn else None
    if not role or not role_arn:
        return []
    parts = role_arn.split(":")
    partition, account = parts[1], parts[4]
    session = f"arn:{partition}:sts::{account}:assumed-role/{role}/{function_name}"
    facts = {"user_type": "AssumedRole", "user_name": role, "session": function_name,
             "principal": session, "role_arn": role_arn}  # fmt: skip
    return [AlertResource("iam-role", role, facts)]


def _databases(resource: Node) -> list[AlertResource]:
    found: list[AlertResource] = []
    instance = resource.node("rdsDbInstanceDetails")
    if instance:
        name = instance.text("dbInstanceIdentifier") or instance.text("dbClusterIdentifier")
        if name:
            cluster = instance.text("dbClusterIdentifier")
            facts = _facts(
                cluster=cluster if cluster != name else None,
                engine=instance.text("engine"),
                arn=instance.text("dbInstanceArn"),
            )
            found.append(AlertResource("rds", name, facts))
    limitless = resource.node("rdsLimitlessDbDetails")
    if limitless:
        name = limitless.text("dbShardGroupIdentifier") or limitless.text("dbClusterIdentifier")
        if name:
            cluster = limitless.text("dbClusterIdentifier")
            facts = _facts(
                cluster=cluster if cluster != name else None,
                engine=limitless.text("engine"),
                arn=limitless.text("dbShardGroupArn"),
            )
            found.append(AlertResource("rds", name, facts))
    return found


def affected_resources(affected: dict[str, str]) -> list[AlertResource]:
    """`awsApiCallAction.affectedResources`: what the actor's calls touched."""
    kinds = {"AWS::EC2::Instance": "instance", "AWS::S3::Bucket": "s3-bucket"}
    return [
        AlertResource(kinds[kind], name, {"affected": True})
        for kind, name in affected.items()
        if kind in kinds
    ]


def ordered_resources(resources: list[AlertResource], family: str) -> list[AlertResource]:
    """The family's own resource first; each (kind, id) once, in the order read."""
    main = _MAIN_KIND.get(family)
    seen: set[tuple[str, str]] = set()
    unique = []
    for item in resources:
        if (item.kind, item.id) not in seen:
            seen.add((item.kind, item.id))
            unique.append(item)
    return sorted(unique, key=lambda r: (r.kind != main, "affected" in r.details))


# -- what the actor did -----------------------------------------------------------------
def read_action(action: Node | None) -> dict[str, Any]:
    """`service.action` as cloudir's action facts: what was called or connected, and every
    remote address named (`remote_addresses`, the actor's side)."""
    if action is None:
        return {}
    facts: dict[str, Any] = {"type": action.text("actionType", limit=64)}
    addresses: list[str] = []
    api = action.node("awsApiCallAction")
    if api:
        facts.update(
            api=api.text("api", limit=256),
            service=api.text("serviceName", limit=256),
            caller_type=api.text("callerType", limit=256, identifier=False),
            error_code=api.text("errorCode", limit=256, identifier=False),
            user_agent=api.text("userAgent", limit=4096, identifier=False),
        )
        domain = api.node("domainDetails")
        facts["domain"] = domain.text("domain") if domain else None
        remote_account = api.node("remoteAccountDetails")
        facts["remote_account"] = remote_account.text("accountId") if remote_account else None
        addresses += _remote(api)
        facts["affected_resources"] = _affected_map(api)
    network = action.node("networkConnectionAction")
    if network:
        facts.update(
            direction=network.text("connectionDirection", limit=64),
            protocol=network.text("protocol", limit=64),
        )
        addresses += _remote(network)
    probe = action.node("portProbeAction")
    if probe:
        for detail in probe.nodes("portProbeDetails"):
            addresses += _remote(detail)
    dns = action.node("dnsRequestAction")
    if dns:
        facts.update(domain=dns.text("domain"), protocol=dns.text("protocol", limit=64))
    kubernetes = action.node("kubernetesApiCallAction")
    if kubernetes:
        facts.update(
            verb=kubernetes.text("verb", limit=64),
            request_uri=kubernetes.text("requestUri", limit=4096, identifier=False),
            user_agent=kubernetes.text("userAgent", limit=4096, identifier=False),
        )
        addresses += _remote(kubernetes)
        path = kubernetes.at("sourceIPs")
        ips = kubernetes.texts("sourceIPs", "sourceIps", limit=64)
        addresses += [address(ip, f"{path}[{n}]") for n, ip in enumerate(ips)]
    rds = action.node("rdsLoginAttemptAction")
    if rds:
        addresses += _remote(rds)
        users = [a.text("user") for a in rds.nodes("loginAttributes", "LoginAttributes")]
        facts["database_users"] = [u for u in users if u] or None
    facts["remote_addresses"] = list(dict.fromkeys(addresses)) or None
    return {k: v for k, v in facts.items() if v is not None and v != {}}


def _remote(node: Node) -> list[str]:
    details = node.node("remoteIpDetails")
    if details is None:
        return []
    found = []
    for name in ("ipAddressV4", "ipAddressV6"):
        value = details.text(name, limit=64)
        if value:
            found.append(address(value, details.at(name)))
    return found


def address(value: str, path: str) -> str:
    """An IP address as the alert gives it; AlertError for anything else."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise AlertError(f"{path}: not an IP address: {value[:60]!r}") from None


def _affected_map(api: Node) -> dict[str, str]:
    affected = api.node("affectedResources")
    if affected is None:
        return {}
    found = {}
    for kind in affected.value:
        value = affected.text(kind) if isinstance(kind, str) else None
        if value:
            found[kind] = value
    return found
