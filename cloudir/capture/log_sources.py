"""Where AWS delivers the logs `capture logs` asks for, read from their configuration.

A responder names what they investigate (a VPC, a load balancer, a bucket), not where its
logs land; the configuration says that: a flow log's destination, a Resolver query log
config and the VPCs associated with it, a load balancer's `access_logs.s3.*` attributes,
a bucket's logging target. Each source found is a `Found`: S3 folders (copied by
`capture/s3_logs.py`), CloudWatch Logs groups (captured by `capture/log_group.py`), and
notes for what is off or cannot be captured (logging disabled, delivery to Kinesis Data
Firehose), said rather than passed over: a missing log is itself a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from cloudir.aws import Aws, call
from cloudir.capture.s3_logs import DATED_NAMES, DAY_FOLDERS, HIVE_DAY_FOLDERS, LogFolder
from cloudir.errors import UsageError

ALL: Final = "all"
FLOW_KIND: Final = "vpc-flow"
DNS_KIND: Final = "route53-resolver"
ALB_KIND: Final = "alb-access"
S3_ACCESS_KIND: Final = "s3-access"


@dataclass(frozen=True)
class DeliveredGroup:
    """A CloudWatch Logs group a service delivers to, and how its events are to be read:
    `kind` the evidence kind of its pages (the source's own parser reads them), `meta`
    what that parser needs to know (a flow log's field format)."""

    name: str
    holds: str  # "flow log fl-... of vpc-...": said when it is captured
    kind: str = "cloudwatch-logs"
    meta: tuple[tuple[str, Any], ...] = ()


@dataclass
class Found:
    """What a source's configuration points at."""

    folders: list[LogFolder] = field(default_factory=list)
    log_groups: list[DeliveredGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: Found) -> None:
        for folder in other.folders:  # two flow logs into one folder: one item
            if all((f.bucket, f.prefix) != (folder.bucket, folder.prefix) for f in self.folders):
                self.folders.append(folder)
        self.log_groups += [g for g in other.log_groups if g not in self.log_groups]
        self.notes += other.notes


def _s3_destination(arn: str) -> tuple[str, str]:
    """`arn:aws:s3:::bucket/optional/folder` -> (bucket, `optional/folder/` or "")."""
    path = arn.split(":::", 1)[-1]
    bucket, _, folder = path.partition("/")
    return bucket, (folder.strip("/") + "/") if folder.strip("/") else ""


def _group_of(arn: str) -> str:
    """`arn:aws:logs:region:account:log-group:NAME[:*]` -> NAME."""
    name = arn.split(":log-group:", 1)[-1]
    return name.removesuffix(":*")


# -- VPC flow logs -------------------------------------------------------------------------
def flow_logs(aws: Aws, wanted: list[str], account: str, region: str) -> Found:
    """Flow logs of the VPCs, subnets or interfaces named (or their `fl-` ids; `all`)."""
    ec2 = aws.client("ec2", region)
    kwargs: dict[str, Any] = {}
    ids = [w for w in wanted if w != ALL]
    if ids and all(w.startswith("fl-") for w in ids):
        kwargs["FlowLogIds"] = ids
    elif ids:
        kwargs["Filters"] = [{"Name": "resource-id", "Values": ids}]
    pages = call(
        "ec2:DescribeFlowLogs",
        lambda: list(ec2.get_paginator("describe_flow_logs").paginate(**kwargs)),
    )
    described = [f for page in pages for f in page.get("FlowLogs", [])]
    found = Found()
    if not described:
        raise UsageError(
            f"no flow logs for {', '.join(wanted)} in {region}: nothing records "
            "this network's traffic"
        )
    for flow in described:
        found.add(_flow_destination(flow, account, region))
    return found


def _flow_destination(flow: dict[str, Any], account: str, region: str) -> Found:
    found = Found()
    flow_id, resource = flow.get("FlowLogId", "?"), flow.get("ResourceId", "?")
    kind = flow.get("LogDestinationType", "cloud-watch-logs")
    if flow.get("FlowLogStatus") not in (None, "ACTIVE"):
        found.notes.append(f"flow log {flow_id} of {resource} is {flow.get('FlowLogStatus')}")
    if kind == "s3":
        bucket, folder = _s3_destination(str(flow.get("LogDestination", "")))
        options = flow.get("DestinationOptions") or {}
        if options.get("HiveCompatiblePartitions"):
            prefix = (
                f"{folder}AWSLogs/aws-account-id={account}/aws-service=vpcflowlogs/"
                f"aws-region={region}/"
            )
            day_format = HIVE_DAY_FOLDERS
        else:
            prefix, day_format = f"{folder}AWSLogs/{account}/vpcflowlogs/{region}/", DAY_FOLDERS
        found.folders.append(
            LogFolder(
                FLOW_KIND,
                bucket,
                prefix,
                day_format,
                f"vpc-flow-{account}-{region}",
                account,
                region,
                {
                    "flow_logs": [flow_id],
                    "resources": [resource],
                    "log_format": flow.get("LogFormat"),
                },
            )
        )
    elif kind == "cloud-watch-logs":
        group = flow.get("LogGroupName") or _group_of(str(flow.get("LogDestination", "")))
        found.log_groups.append(
            DeliveredGroup(
                group, f"flow log {flow_id} of {resource}", FLOW_KIND,
                (("log_format", flow.get("LogFormat")),),
            )
        )  # fmt: skip
    else:
        found.notes.append(
            f"flow log {flow_id} of {resource} delivers to {kind} "
            f"({flow.get('LogDestination')}): capture it from there"
        )
    return found


# -- Route 53 Resolver query logs ----------------------------------------------------------
def resolver_query_logs(aws: Aws, wanted: list[str], account: str, region: str) -> Found:
    """Query log configs associated with the VPCs named (or their `rqlc-` ids; `all`)."""
    resolver = aws.client("route53resolver", region)
    configs = call(
        "route53resolver:ListResolverQueryLogConfigs",
        lambda: [
            c
            for page in resolver.get_paginator("list_resolver_query_log_configs").paginate()
            for c in page.get("ResolverQueryLogConfigs", [])
        ],
    )
    associations = call(
        "route53resolver:ListResolverQueryLogConfigAssociations",
        lambda: [
            a
            for page in resolver.get_paginator(
                "list_resolver_query_log_config_associations"
            ).paginate()
            for a in page.get("ResolverQueryLogConfigAssociations", [])
        ],
    )
    ids = set(wanted) - {ALL}
    found = Found()
    for config in configs:
        vpcs = [
            a.get("ResourceId")
            for a in associations
            if a.get("ResolverQueryLogConfigId") == config.get("Id")
        ]
        chosen = [v for v in vpcs if not ids or v in ids or config.get("Id") in ids]
        if not chosen:
            continue
        destination = str(config.get("DestinationArn", ""))
        if destination.startswith("arn:aws:s3:::"):
            bucket, folder = _s3_destination(destination)
            for vpc in chosen:
                prefix = f"{folder}AWSLogs/{account}/vpcdnsquerylogs/{vpc}/"
                found.add(
                    Found(
                        folders=[
                            LogFolder(
                                DNS_KIND,
                                bucket,
                                prefix,
                                DAY_FOLDERS,
                                f"dns-{account}-{vpc}",
                                account,
                                region,
                                {"resolver_query_log_config": config.get("Id"), "vpc": vpc},
                            )
                        ]
                    )
                )
        elif ":log-group:" in destination:
            found.log_groups.append(
                DeliveredGroup(
                    _group_of(destination), f"Resolver query logs of {', '.join(chosen)}", DNS_KIND
                )
            )
        else:
            found.notes.append(
                f"Resolver query log config {config.get('Id')} delivers to "
                f"{destination}: capture it from there"
            )
    if not (found.folders or found.log_groups or found.notes):
        raise UsageError(
            f"no Resolver query logging for {', '.join(wanted)} in {region}: "
            "no DNS query is recorded for it"
        )
    return found


# -- load balancer access logs -------------------------------------------------------------
def load_balancer_logs(aws: Aws, wanted: list[str], account: str, region: str) -> Found:
    """Access logs of the Application or Network Load Balancers named (name or ARN)."""
    elbv2 = aws.client("elbv2", region)
    arns = [w for w in wanted if w.startswith("arn:")]
    names = [w for w in wanted if not w.startswith("arn:")]
    balancers: list[dict[str, Any]] = []
    for key, values in (("LoadBalancerArns", arns), ("Names", names)):
        if values:
            answer = call(
                "elasticloadbalancing:DescribeLoadBalancers",
                elbv2.describe_load_balancers,
                **{key: values},
            )
            balancers += answer.get("LoadBalancers", [])
    found = Found()
    for balancer in balancers:
        arn, name = balancer["LoadBalancerArn"], balancer.get("LoadBalancerName", "?")
        answer = call(
            "elasticloadbalancing:DescribeLoadBalancerAttributes",
            elbv2.describe_load_balancer_attributes,
            LoadBalancerArn=arn,
        )
        attributes = {a["Key"]: a.get("Value", "") for a in answer.get("Attributes", [])}
        if attributes.get("access_logs.s3.enabled") != "true":
            found.notes.append(
                f"access logging is off for load balancer {name}: its requests are not recorded"
            )
            continue
        bucket = attributes.get("access_logs.s3.bucket", "")
        folder = attributes.get("access_logs.s3.prefix", "").strip("/")
        prefix = (f"{folder}/" if folder else "") + (
            f"AWSLogs/{account}/elasticloadbalancing/{region}/"
        )
        found.add(
            Found(
                folders=[
                    LogFolder(
                        ALB_KIND,
                        bucket,
                        prefix,
                        DAY_FOLDERS,
                        f"alb-{name}",
                        account,
                        region,
                        {"load_balancers": [arn]},
                    )
                ]
            )
        )
    return found


# -- S3 server access logs -----------------------------------------------------------------
def s3_access_logs(aws: Aws, buckets: list[str], account: str, region: str) -> Found:
    """Server access logs of the buckets named, from each bucket's logging target."""
    s3 = aws.client("s3")
    found = Found()
    for bucket in buckets:
        answer = call(f"s3:GetBucketLogging {bucket}", s3.get_bucket_logging, Bucket=bucket)
        enabled = answer.get("LoggingEnabled")
        if not enabled:
            found.notes.append(
                f"server access logging is off for s3://{bucket}: its requests "
                "are recorded only where CloudTrail data events are on"
            )
            continue
        target, folder = enabled["TargetBucket"], enabled.get("TargetPrefix", "")
        key_format = enabled.get("TargetObjectKeyFormat") or {}
        if "PartitionedPrefix" in key_format:
            prefix, day_format = f"{folder}{account}/{region}/{bucket}/", DAY_FOLDERS
        else:
            prefix, day_format = folder, DATED_NAMES
            found.notes.append(
                f"s3://{bucket} logs to s3://{target}/{folder} by date only: "
                "other buckets logging there are captured too"
            )
        found.add(
            Found(
                folders=[
                    LogFolder(
                        S3_ACCESS_KIND,
                        target,
                        prefix,
                        day_format,
                        f"s3-access-{bucket}",
                        account,
                        region,
                        {"source_buckets": [bucket]},
                    )
                ]
            )
        )
    return found
