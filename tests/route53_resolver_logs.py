"""Route 53 Resolver query logs in AWS's delivery format, for tests.

One record is one JSON object on one line, with the fields and value shapes of AWS's
"Values that appear in VPC Resolver query logs" (version, account_id, region, vpc_id,
query_timestamp, query_name with its trailing dot, query_type, query_class, rcode,
answers, srcaddr, srcport as a string, transport, srcids, and the DNS Firewall fields
when a firewall rule matched). Files are written as S3 delivers them: gzip, named
`<vpc>_vpcdnsquerylogs_<account>_<YYYYMMDDTHHmm>Z_<hash>.log.gz`.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

ACCOUNT = "111122223333"
VPC = "vpc-0a1b2c3d4e5f60718"
INSTANCE = "i-0d15cd0d3c0ffee01"


def resolver_record(**fields: Any) -> dict[str, Any]:
    """One query record; `fields` replace or add top-level keys (None removes one)."""
    record: dict[str, Any] = {
        "version": "1.100000",
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "vpc_id": VPC,
        "query_timestamp": "2026-01-01T10:00:00Z",
        "query_name": "example.com.",
        "query_type": "A",
        "query_class": "IN",
        "rcode": "NOERROR",
        "answers": [{"Rdata": "93.184.215.14", "Type": "A", "Class": "IN"}],
        "srcaddr": "10.0.1.25",
        "srcport": "45123",
        "transport": "UDP",
        "srcids": {"instance": INSTANCE},
    }
    record.update(fields)
    return {key: value for key, value in record.items() if value is not None}


def blocked(record: dict[str, Any], action: str = "BLOCK") -> dict[str, Any]:
    """The record as DNS Firewall writes it when one of its rules matched."""
    return {
        **record,
        "firewall_rule_group_id": "rslvr-frg-01234567890abcdef",
        "firewall_rule_action": action,
        "firewall_domain_list_id": "rslvr-fdl-01234567890abcdef",
    }


def line_of(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def s3_name(when: datetime, vpc: str = VPC, account: str = ACCOUNT, tag: str = "5e1b6a0c") -> str:
    return f"{vpc}_vpcdnsquerylogs_{account}_{when:%Y%m%dT%H%M}Z_{tag}.log.gz"


def write_log(path: Path, records: list[dict[str, Any]] | list[str], gz: bool = True) -> Path:
    """Records (or ready lines) as JSON lines, gzip unless `gz` is False."""
    lines = [r if isinstance(r, str) else line_of(r) for r in records]
    data = "".join(line + "\n" for line in lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
