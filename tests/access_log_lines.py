"""S3 server access log and ALB access log lines, written from fields by name.

For tests that need lines of a given shape (one field changed, a burst of reads, an attack
string in the request): the fields and their order are the parsers' own declaration
(`s3_access.FIELDS`, `alb_access.ALB_FIELDS`), and each field is written the way AWS
writes it (quoted, bracketed or bare), so a line read back gives the same fields.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.analyze.parsers.alb_access import ALB_FIELDS
from cloudir.analyze.parsers.s3_access import FIELDS as S3_FIELDS

S3_QUOTED = {"request_uri", "referer", "user_agent"}
ALB_QUOTED = {
    "request", "user_agent", "trace_id", "domain_name", "chosen_cert_arn", "actions_executed",
    "redirect_url", "error_reason", "target:port_list", "target_status_code_list",
    "classification", "classification_reason",
}  # fmt: skip

OWNER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
S3_DEFAULTS: dict[str, str] = {
    "bucket_owner": OWNER,
    "bucket": "amzn-s3-demo-bucket1",
    "time": "2026-01-05T10:00:00Z",
    "remote_ip": "192.0.2.3",
    "requester": "arn:aws:iam::111122223333:user/reader",
    "request_id": "3E57427F3EXAMPLE",
    "operation": "REST.GET.OBJECT",
    "key": "reports/q1.pdf",
    "request_uri": "GET /amzn-s3-demo-bucket1/reports/q1.pdf HTTP/1.1",
    "http_status": "200",
    "error_code": "-",
    "bytes_sent": "2662992",
    "object_size": "3462992",
    "total_time": "70",
    "turn_around_time": "10",
    "referer": "-",
    "user_agent": "aws-cli/2.22.4 md/awscrt#0.22.0 ua/2.0 os/linux#6.8.0",
    "version_id": "-",
    "host_id": "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234=",
    "signature_version": "SigV4",
    "cipher_suite": "ECDHE-RSA-AES128-GCM-SHA256",
    "authentication_type": "AuthHeader",
    "host_header": "amzn-s3-demo-bucket1.s3.us-west-1.amazonaws.com",
    "tls_version": "TLSv1.2",
    "access_point_arn": "-",
    "acl_required": "-",
}
ALB_DEFAULTS: dict[str, str] = {
    "type": "https",
    "time": "2026-01-05T10:00:00.000000Z",
    "elb": "app/web/50dc6c495c0c9188",
    "client:port": "198.51.100.7:40312",
    "target:port": "10.0.0.1:80",
    "request_processing_time": "0.000",
    "target_processing_time": "0.001",
    "response_processing_time": "0.000",
    "elb_status_code": "200",
    "target_status_code": "200",
    "received_bytes": "34",
    "sent_bytes": "366",
    "request": "GET https://shop.example.com:443/index.html HTTP/1.1",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "ssl_cipher": "ECDHE-RSA-AES128-GCM-SHA256",
    "ssl_protocol": "TLSv1.2",
    "target_group_arn": (
        "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/web/73e2d6bc24d8a067"
    ),
    "trace_id": "Root=1-58337262-36d228ad5d99923122bbe354",
    "domain_name": "shop.example.com",
    "chosen_cert_arn": "-",
    "matched_rule_priority": "0",
    "request_creation_time": "2026-01-05T09:59:59.990000Z",
    "actions_executed": "forward",
    "redirect_url": "-",
    "error_reason": "-",
    "target:port_list": "10.0.0.1:80",
    "target_status_code_list": "200",
    "classification": "-",
    "classification_reason": "-",
    "conn_trace_id": "TID_1234abcd5678ef90",
}  # fmt: skip


def s3_time(when: datetime | str) -> str:
    """S3's `06/Feb/2019:00:00:38 +0000` for a time (ISO text or datetime, UTC)."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return when.astimezone(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def alb_time(when: datetime | str) -> str:
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write(names: tuple[str, ...], quoted: set[str], values: dict[str, Any]) -> list[str]:
    out = []
    for name in names:
        value = str(values[name])
        out.append(f'"{value}"' if name in quoted else value)
    return out


def s3_line(fields: int | None = None, **changes: Any) -> str:
    """One S3 access log line: the defaults with `changes` (field names as in `raw`);
    `time` may be ISO text. `fields` cuts the line to that many fields (older formats)."""
    values = {**S3_DEFAULTS, **changes}
    values["time"] = f"[{s3_time(values['time'])}]"
    return " ".join(_write(S3_FIELDS, S3_QUOTED, values)[:fields])


def alb_line(**changes: Any) -> str:
    """One ALB access log line: the defaults with `changes` (documented field names, as
    `client:port`); `time` may be any ISO text."""
    values = {**ALB_DEFAULTS, **changes}
    values["time"] = alb_time(values["time"])
    return " ".join(_write(ALB_FIELDS, ALB_QUOTED, values))


def write_log(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(f"{line}\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path
