"""VPC flow log files in the formats AWS delivers, written by the tests.

`flow_record` fills every field a format names with a plausible value (overridden by
keyword, `-` for "no value"); `write_flow_log` writes records under the header line S3
delivery puts first, plain or gzipped, or without a header as CloudWatch Logs holds them.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloudir.analyze.parsers.vpc_flow import DEFAULT_FIELDS

# A custom format with every field of versions 2 to 5, in the order the console lists them.
V5_FIELDS = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status", "vpc-id",
    "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr", "region",
    "az-id", "sublocation-type", "sublocation-id", "pkt-src-aws-service",
    "pkt-dst-aws-service", "flow-direction", "traffic-path",
)  # fmt: skip
# Versions 7 and 8: the ECS fields and reject-reason, after the v5 ones.
LATEST_FIELDS = (
    *V5_FIELDS,
    "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn",
    "ecs-container-instance-id", "ecs-container-id", "ecs-second-container-id",
    "ecs-service-name", "ecs-task-definition-arn", "ecs-task-arn", "ecs-task-id",
    "reject-reason",
)  # fmt: skip
ACCOUNT = "111122223333"
START = 1767261600  # 2026-01-01T10:00:00Z

BASE: dict[str, Any] = {
    "version": 5, "account-id": ACCOUNT, "interface-id": "eni-0a1b2c3d4e5f60718",
    "srcaddr": "10.0.1.15", "dstaddr": "198.51.100.20", "srcport": 49152, "dstport": 443,
    "protocol": 6, "packets": 10, "bytes": 840, "start": START, "end": START + 60,
    "action": "ACCEPT", "log-status": "OK", "vpc-id": "vpc-0a1b2c3d", "subnet-id":
    "subnet-0a1b2c3d", "instance-id": "i-0a1b2c3d4e5f60718", "tcp-flags": 19, "type": "IPv4",
    "pkt-srcaddr": "10.0.1.15", "pkt-dstaddr": "198.51.100.20", "region": "us-east-1",
    "az-id": "use1-az1", "sublocation-type": "-", "sublocation-id": "-",
    "pkt-src-aws-service": "-", "pkt-dst-aws-service": "-", "flow-direction": "egress",
    "traffic-path": 8, "ecs-cluster-arn": "-", "ecs-cluster-name": "-",
    "ecs-container-instance-arn": "-", "ecs-container-instance-id": "-",
    "ecs-container-id": "-", "ecs-second-container-id": "-", "ecs-service-name": "-",
    "ecs-task-definition-arn": "-", "ecs-task-arn": "-", "ecs-task-id": "-",
    "reject-reason": "-",
}  # fmt: skip


def flow_record(fields: Sequence[str] = DEFAULT_FIELDS, **values: Any) -> str:
    """One record of the format `fields`; keyword names use `_` for `-`
    (`log_status="NODATA"`); a value of None is written `-`."""
    given = {name.replace("_", "-"): value for name, value in values.items()}
    merged = {**BASE, "version": 2 if tuple(fields) == DEFAULT_FIELDS else 5, **given}
    return " ".join("-" if merged.get(f) is None else str(merged.get(f, "-")) for f in fields)


def write_flow_log(
    path: Path,
    records: Sequence[str],
    fields: Sequence[str] = DEFAULT_FIELDS,
    *,
    gz: bool = False,
    header: bool = True,
) -> Path:
    lines = ([" ".join(fields)] if header else []) + list(records)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def delivery_name(when: str = "20260101T1000Z", digest: str = "3f4a9b2c") -> str:
    """A file name as S3 delivery gives it."""
    return f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0a1b2c3d4e5f60718_{when}_{digest}.log.gz"
