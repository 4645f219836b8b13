"""`capture logs --vpc-flow/--dns/--alb/--s3-access`: logs found from the configuration.

moto over HTTP holds a VPC with a flow log, a Resolver query log config associated with it,
a load balancer with access logging, and a bucket that logs its requests, all delivering
to one log bucket laid out as AWS lays it out. Each capture finds its folder from the
resource's configuration, copies the window's days (not the day outside it) into an item
of the right kind with custody, and says what is off.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloudir.capture.log_sources import _s3_destination
from tests.conftest import boto_client, cloudir, custody, query

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
WINDOW = ("--start", "2024-07-31T00:00:00Z", "--end", "2024-07-31T23:59:00Z")
FLOW_LINES = (
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
    "start end action log-status\n"
    f"2 {ACCOUNT} eni-0a1b2c3d 198.51.100.7 10.0.1.5 51515 22 6 10 840 1722420000 1722420060 "
    "ACCEPT OK\n"
)


@pytest.fixture
def estate(moto_url: str) -> dict[str, Any]:
    """A VPC, its flow log, DNS query logging, a load balancer and a bucket, all logging."""
    tag = uuid.uuid4().hex[:8]
    s3 = boto_client(moto_url, "s3")
    logs_bucket, source_bucket = f"logs-{tag}", f"payroll-{tag}"
    s3.create_bucket(Bucket=logs_bucket)
    s3.create_bucket(Bucket=source_bucket)
    ec2 = boto_client(moto_url, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for n, z in ((1, "a"), (2, "b"))
    ]
    made = ec2.create_flow_logs(
        ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL",
        LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{logs_bucket}",
    )  # fmt: skip
    assert made["FlowLogIds"], made["Unsuccessful"]
    resolver = boto_client(moto_url, "route53resolver")
    config = resolver.create_resolver_query_log_config(
        Name=f"q-{tag}", DestinationArn=f"arn:aws:s3:::{logs_bucket}/dns", CreatorRequestId=tag
    )["ResolverQueryLogConfig"]
    resolver.associate_resolver_query_log_config(
        ResolverQueryLogConfigId=config["Id"], ResourceId=vpc
    )
    elbv2 = boto_client(moto_url, "elbv2")
    balancer = elbv2.create_load_balancer(Name=f"web-{tag}", Subnets=subnets)["LoadBalancers"][0]
    elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Attributes=[
            {"Key": "access_logs.s3.enabled", "Value": "true"},
            {"Key": "access_logs.s3.bucket", "Value": logs_bucket},
            {"Key": "access_logs.s3.prefix", "Value": "alb"},
        ],
    )
    quiet = elbv2.create_load_balancer(Name=f"quiet-{tag}", Subnets=subnets)["LoadBalancers"][0]
    s3.put_bucket_acl(Bucket=logs_bucket, ACL="log-delivery-write")
    s3.put_bucket_logging(
        Bucket=source_bucket,
        BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": logs_bucket, "TargetPrefix": "s3/"}
        },
    )

    def put(key: str, body: bytes) -> str:
        s3.put_object(Bucket=logs_bucket, Key=key, Body=body)
        return key

    flows = f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}"
    stamp = f"{ACCOUNT}_vpcflowlogs_{REGION}_{made['FlowLogIds'][0]}"
    keys = {
        "vpc-flow": [
            put(f"{flows}/2024/07/31/{stamp}_20240731T1000Z_ab12.log.gz",
                gzip.compress(FLOW_LINES.encode())),
        ],
        "route53-resolver": [
            put(f"dns/AWSLogs/{ACCOUNT}/vpcdnsquerylogs/{vpc}/2024/07/31/"
                f"{ACCOUNT}_vpcdnsquerylogs_{vpc}_20240731T1000Z_cd34.log.gz",
                gzip.compress(b'{"version":"1.100000","query_name":"example.com."}\n')),
        ],
        "alb-access": [
            put(f"alb/AWSLogs/{ACCOUNT}/elasticloadbalancing/{REGION}/2024/07/31/"
                f"{ACCOUNT}_elasticloadbalancing_{REGION}_app.web.1_20240731T1000Z_10.0.1.9_x.log.gz",
                gzip.compress(b"h2 2024-07-31T10:00:00.000000Z app/web/1 ...\n")),
        ],
        "s3-access": [put("s3/2024-07-31-10-00-00-ABCDEF0123456789", b"owner payroll ...\n")],
    }  # fmt: skip
    put(f"{flows}/2024/07/20/{stamp}_20240720T1000Z_ef56.log.gz", b"another day")  # outside
    put("s3/2024-07-20-10-00-00-0123456789ABCDEF", b"another day")  # outside
    return {
        "url": moto_url, "vpc": vpc, "logs_bucket": logs_bucket, "source_bucket": source_bucket,
        "balancer": balancer["LoadBalancerName"], "quiet": quiet["LoadBalancerName"],
        "keys": keys, "flow_log": made["FlowLogIds"][0],
    }  # fmt: skip


def _capture(case: Path, url: str, *args: str) -> Any:
    return cloudir(
        "capture", "logs", "--case", str(case), "--endpoint-url", url, "--region", REGION,
        *WINDOW, "--json", *args,
    )  # fmt: skip


def test_each_source_is_found_from_its_configuration_and_copied_as_listed(
    estate: dict[str, Any], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    run = _capture(
        case, estate["url"], "--vpc-flow", estate["vpc"], "--dns", estate["vpc"],
        "--alb", estate["balancer"], "--s3-access", estate["source_bucket"],
    )  # fmt: skip
    assert run.code == 0, run.stderr
    items = run.json()["items"]
    assert len(items) == 4
    entries = custody(case)
    for item in items:
        meta_kind = (case / "evidence" / item["evidence_id"] / "meta.json").read_text()
        kind = next(k for k in estate["keys"] if f'"kind": "{k}"' in meta_kind)
        sources = [
            e["source"]["key"]
            for e in entries
            if e.get("evidence_id") == item["evidence_id"] and e["action"] == "capture"
        ]
        assert sorted(sources) == sorted(estate["keys"][kind]), kind  # the day outside left
        closing = [e for e in entries if e.get("evidence_id") == item["evidence_id"]][-1]
        assert closing["action"] == "capture-complete"
    assert "other buckets logging there are captured too" in run.stderr

    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code in (0, 3), built.stderr  # the other kinds' stand-in files are not logs
    [flow] = query(case, "SELECT src_ip, target, action, host FROM timeline "
                         "WHERE artifact = 'aws:vpc-flow'")  # fmt: skip
    assert flow == {"src_ip": "198.51.100.7", "target": "10.0.1.5:22/tcp", "action": "ACCEPT",
                    "host": "eni-0a1b2c3d"}  # fmt: skip

    again = _capture(case, estate["url"], "--vpc-flow", estate["flow_log"])
    assert again.code == 0, again.stderr
    [resumed] = again.json()["items"]
    assert (resumed["captured"], resumed["skipped"], resumed["resumed"]) == (0, 1, True)


def test_flow_logs_delivered_to_cloudwatch_are_read_in_their_own_format(
    moto_url: str, tmp_path: Path
) -> None:
    ec2, logs = boto_client(moto_url, "ec2"), boto_client(moto_url, "logs")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    group = f"/vpc/flows-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=group)
    made = ec2.create_flow_logs(
        ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL",
        LogDestinationType="cloud-watch-logs", LogGroupName=group,
        DeliverLogsPermissionArn=f"arn:aws:iam::{ACCOUNT}:role/flow-logs",
        LogFormat="${srcaddr} ${dstaddr} ${dstport} ${protocol} ${action} ${start} ${end}",
    )  # fmt: skip
    assert made["FlowLogIds"], made["Unsuccessful"]
    logs.create_log_stream(logGroupName=group, logStreamName="eni-0ff1-all")
    now = int(time.time())  # CloudWatch Logs takes no events older than 14 days
    logs.put_log_events(
        logGroupName=group, logStreamName="eni-0ff1-all",
        logEvents=[
            {"timestamp": (now - 600) * 1000,
             "message": f"10.7.1.9 203.0.113.50 3333 6 ACCEPT {now - 600} {now - 540}"},
            {"timestamp": (now - 590) * 1000, "message": "not a flow record"},
        ],
    )  # fmt: skip
    case = tmp_path / "case"
    run = cloudir(
        "capture", "logs", "--case", str(case), "--endpoint-url", moto_url, "--region", REGION,
        "--start", "1h", "--json", "--vpc-flow", vpc,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert f"is delivered to the log group {group}" in run.stderr
    [item] = run.json()["items"]
    meta = json.loads((case / "evidence" / item["evidence_id"] / "meta.json").read_text())
    assert meta["kind"] == "vpc-flow" and meta["log_format"].startswith("${srcaddr}")
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code == 0 and built.json()["errors"] == 1, built.stdout
    [flow] = query(case, "SELECT src_ip, target, action FROM timeline")
    assert flow == {"src_ip": "10.7.1.9", "target": "203.0.113.50:3333/tcp", "action": "ACCEPT"}


def test_logging_that_is_off_is_said(estate: dict[str, Any], tmp_path: Path) -> None:
    bare = f"bare-{uuid.uuid4().hex[:8]}"
    boto_client(estate["url"], "s3").create_bucket(Bucket=bare)
    run = _capture(tmp_path / "case", estate["url"], "--alb", estate["quiet"], "--s3-access", bare)
    assert run.code == 0, run.stderr
    assert f"access logging is off for load balancer {estate['quiet']}" in run.stderr
    assert f"server access logging is off for s3://{bare}" in run.stderr
    assert run.json()["items"] == []


def test_a_vpc_without_flow_logs_is_one_line_before_the_case_is_made(
    estate: dict[str, Any], tmp_path: Path
) -> None:
    other = boto_client(estate["url"], "ec2").create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    run = _capture(tmp_path / "case", estate["url"], "--vpc-flow", other)
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        f"error: no flow logs for {other} in {REGION}: nothing records this network's traffic"
    ]
    assert not (tmp_path / "case").exists()


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        ("arn:aws:s3:::logs", ("logs", "")),
        ("arn:aws:s3:::logs/", ("logs", "")),
        ("arn:aws:s3:::logs/flows", ("logs", "flows/")),
        ("arn:aws:s3:::logs/a/b/", ("logs", "a/b/")),
    ],
)
def test_an_s3_destination_names_its_bucket_and_folder(arn: str, expected: tuple[str, str]) -> None:
    assert _s3_destination(arn) == expected
