"""The network side of the demo's story: the runner's VPC flow log and DNS queries.

The intruder came in over SSH from the address that later used the leaked key; the
runner then resolved a mining pool's name and connected out to it. The VPC's flow log and
its Route 53 Resolver query log deliver to S3 as AWS delivers them (gzipped, in the day
folders); the demo finds them the way a responder does, `capture logs --vpc-flow VPC
--dns VPC`, from their own configuration, so the report shows one incident across
CloudTrail, host, container and network.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

NETWORK_BUCKET = "acme-network-logs"
MINING_POOL = "192.0.2.66"  # a documentation address standing in for the pool
POOL_NAME = "pool.supportxmr.com."  # the name the miner resolves first
FLOW_FIELDS = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
    "start end action log-status instance-id"
)


def capture_network(
    case: Any,
    aws: Any,
    identity: dict[str, str],
    runner: str | None,
    intrusion: datetime,
    attacker_ip: str,
    say: Callable[[str], None],
) -> None:
    """Seed the runner VPC's flow log in the emulator, then capture it as a responder."""
    from cloudir.capture.log_sources import flow_logs, resolver_query_logs
    from cloudir.capture.s3_logs import capture_log_folders
    from cloudir.timewindow import Window

    account, region = identity["Account"], aws.region
    ec2, s3 = aws.client("ec2"), aws.client("s3")
    host, address, interface, vpc = _runner_address(ec2, runner)
    s3.create_bucket(Bucket=NETWORK_BUCKET)
    made = ec2.create_flow_logs(
        ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL",
        LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{NETWORK_BUCKET}",
    )  # fmt: skip
    flow_id = made["FlowLogIds"][0]
    records = _records(account, interface, host, address, intrusion, attacker_ip)
    slot = intrusion.replace(minute=0, second=0)
    key = (
        f"AWSLogs/{account}/vpcflowlogs/{region}/{slot:%Y/%m/%d}/"
        f"{account}_vpcflowlogs_{region}_{flow_id}_{slot:%Y%m%dT%H%M}Z_{uuid.uuid4().hex[:8]}.log.gz"
    )
    s3.put_object(Bucket=NETWORK_BUCKET, Key=key, Body=gzip.compress(records.encode()))
    resolver = aws.client("route53resolver")
    config = resolver.create_resolver_query_log_config(
        Name="runner-dns", DestinationArn=f"arn:aws:s3:::{NETWORK_BUCKET}/dns",
        CreatorRequestId=uuid.uuid4().hex,
    )["ResolverQueryLogConfig"]  # fmt: skip
    resolver.associate_resolver_query_log_config(
        ResolverQueryLogConfigId=config["Id"], ResourceId=vpc
    )
    queries = _queries(account, region, vpc, host, address, intrusion)
    dns_key = (
        f"dns/AWSLogs/{account}/vpcdnsquerylogs/{vpc}/{slot:%Y/%m/%d}/"
        f"{account}_vpcdnsquerylogs_{vpc}_{slot:%Y%m%dT%H%M}Z_{uuid.uuid4().hex[:8]}.log.gz"
    )
    s3.put_object(Bucket=NETWORK_BUCKET, Key=dns_key, Body=gzip.compress(queries.encode()))
    say(f"seeded s3://{NETWORK_BUCKET} with the flow log and DNS queries of {vpc}")
    found = flow_logs(aws, [vpc], account, region)
    found.add(resolver_query_logs(aws, [vpc], account, region))
    window = Window.parse("3d", None)
    items = capture_log_folders(case, aws, found.folders, window, 4, identity, say)
    say(f"captured {sum(i.captured for i in items)} network log files of {vpc}")


def _runner_address(ec2: Any, runner: str | None) -> tuple[str, str, str, str]:
    """The runner's instance id, private address, interface and VPC (made up when there is
    no runner: the demo's machine could not build its disk)."""
    if runner:
        [reservation] = ec2.describe_instances(InstanceIds=[runner])["Reservations"]
        [instance] = reservation["Instances"]
        interfaces = instance.get("NetworkInterfaces") or [{}]
        interface = interfaces[0].get("NetworkInterfaceId") or "eni-0demo000000000001"
        return runner, instance["PrivateIpAddress"], interface, instance["VpcId"]
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    return "i-0demo000000000001", "172.31.16.25", "eni-0demo000000000001", vpc


def _records(
    account: str, interface: str, host: str, address: str, intrusion: datetime, attacker: str
) -> str:
    """The runner's traffic around the intrusion: CI's usual calls, the SSH way in, and
    the miner calling its pool."""

    def record(minutes: float, src: str, dst: str, sport: int, dport: int, proto: int,
               size: int, action: str = "ACCEPT") -> str:  # fmt: skip
        start = int((intrusion + timedelta(minutes=minutes)).timestamp())
        return (
            f"2 {account} {interface} {src} {dst} {sport} {dport} {proto} {max(1, size // 900)} "
            f"{size} {start} {start + 60} {action} OK {host}"
        )

    lines = [
        FLOW_FIELDS,
        record(-40, address, "140.82.112.3", 44012, 443, 6, 182_000),  # CI fetching code
        record(-12, "198.51.100.200", address, 51000, 3389, 6, 120, "REJECT"),  # noise
        record(-2, attacker, address, 50522, 22, 6, 48_300),  # the SSH session in
        record(-2, address, attacker, 22, 50522, 6, 611_000),
        record(9, address, "172.31.0.2", 40123, 53, 17, 310),  # the resolver
        record(10, address, MINING_POOL, 38811, 3333, 6, 2_400_000),  # the miner's pool
        record(40, address, MINING_POOL, 38811, 3333, 6, 9_800_000),
    ]
    return "\n".join(lines) + "\n"


def _queries(
    account: str, region: str, vpc: str, host: str, address: str, intrusion: datetime
) -> str:
    """The runner's DNS questions: CI's usual names, then the miner's pool."""

    def query(minutes: float, name: str, answer: str) -> str:
        when = intrusion + timedelta(minutes=minutes)
        record = {
            "version": "1.100000", "account_id": account, "region": region, "vpc_id": vpc,
            "query_timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "query_name": name,
            "query_type": "A", "query_class": "IN", "rcode": "NOERROR",
            "answers": [{"Rdata": answer, "Type": "A", "Class": "IN"}],
            "srcaddr": address, "srcport": "53311", "transport": "UDP",
            "srcids": {"instance": host},
        }  # fmt: skip
        return json.dumps(record, separators=(",", ":"))

    lines = [
        query(-41, "github.com.", "140.82.112.3"),
        query(-41, "objects.githubusercontent.com.", "185.199.108.133"),
        query(9, POOL_NAME, MINING_POOL),
    ]
    return "\n".join(lines) + "\n"
