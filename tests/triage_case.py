"""A small real case for the alert-validation tests: CloudTrail records of five principals,
captured, timelined and detected by the cloudir CLI (with one suppression filter).

    leaky  (AKIALEAKED0001): recon, StopLogging, CreateUser + CreateAccessKey, and hours
           later DeleteDetector: the leaked key's story (high findings);
    bob    (AKIABOBBOB0001): two ListBuckets calls, nothing a rule names;
    carol  (AKIACAROL00001): a key for another user (a medium finding);
    terraform-deployer (a role, Terraform's agent): a user and its key (automation);
    erin   (AKIAERINERIN01): a key for another user, suppressed by the user's filter;
    mallory (AKIAMALLORY0001): a ListBuckets call with Terraform's user agent, by hand.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import cloudir, ct_event, records_gz

ACCOUNT = "111111111111"
HOSTILE_AGENT = "<img src=x onerror=alert(1)> aws-cli/2 ](javascript:alert(1)) | col |"
TERRAFORM_AGENT = "APN/1.0 HashiCorp/1.0 Terraform/1.5.7 (+https://www.terraform.io)"
ERIN_FILTER = """title: Erin rotates the partner keys
id: 5b7e2c1a-1111-4c52-9d38-7c2e4b1a9f60
status: experimental
logsource:
    product: aws
    service: cloudtrail
filter:
    rules:
        - 7a3072ad-e7fd-45a4-a254-886e7b5858e9
    selection:
        userIdentity.userName: erin
    condition: not selection
"""


def user(name: str, key: str) -> dict[str, Any]:
    return {
        "type": "IAMUser",
        "principalId": f"AIDA{name.upper()}",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "userName": name,
    }


TERRAFORM = {
    "type": "AssumedRole",
    "principalId": "AROATERRAFORM:ci-1",
    "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/terraform-deployer/ci-1",
    "accountId": ACCOUNT,
    "accessKeyId": "ASIATERRAFORM01",
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "arn": f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer",
            "userName": "terraform-deployer",
        }
    },
}


def event(when: str, name: str, source: str, identity: dict[str, Any], **extra: Any) -> dict:
    return ct_event(
        f"2026-11-20T{when}Z",
        name,
        eventSource=f"{source}.amazonaws.com",
        userIdentity=identity,
        eventID=str(uuid.uuid4()),
        **extra,
    )


def events() -> list[dict[str, Any]]:
    leaky = user("leaky", "AKIALEAKED0001")
    out = {"sourceIPAddress": "203.0.113.9", "userAgent": "Boto3/1.34.0 Botocore/1.34.0"}
    bob, carol, erin = (
        user("bob", "AKIABOBBOB0001"),
        user("carol", "AKIACAROL00001"),
        user("erin", "AKIAERINERIN01"),
    )
    tf = {"sourceIPAddress": "192.0.2.10", "userAgent": TERRAFORM_AGENT}
    return [
        event("10:00:00", "GetCallerIdentity", "sts", leaky, sourceIPAddress="203.0.113.9",
              userAgent=HOSTILE_AGENT),
        event("10:02:00", "ListBuckets", "s3", leaky, **out),
        event("10:05:00", "StopLogging", "cloudtrail", leaky, requestParameters={"name": "main"},
              **out),
        event("10:06:00", "CreateUser", "iam", leaky, requestParameters={"userName": "backdoor"},
              **out),
        event("10:07:00", "CreateAccessKey", "iam", leaky,
              requestParameters={"userName": "backdoor"}, **out),
        event("13:00:00", "DeleteDetector", "guardduty", leaky,
              requestParameters={"detectorId": "12abc34d567e8fa901bc2d34e56789f0"}, **out),
        event("10:10:00", "ListBuckets", "s3", bob, sourceIPAddress="198.51.100.20"),
        event("10:12:00", "ListBuckets", "s3", bob, sourceIPAddress="198.51.100.20"),
        event("10:20:00", "CreateAccessKey", "iam", carol, requestParameters={"userName": "dave"},
              sourceIPAddress="198.51.100.30"),
        event("10:30:00", "CreateUser", "iam", TERRAFORM, requestParameters={"userName": "svc-x"},
              **tf),
        event("10:31:00", "CreateAccessKey", "iam", TERRAFORM,
              requestParameters={"userName": "svc-x"}, **tf),
        event("10:40:00", "CreateAccessKey", "iam", erin, requestParameters={"userName": "frank"},
              sourceIPAddress="198.51.100.40"),
        event("10:50:00", "ListBuckets", "s3", user("mallory", "AKIAMALLORY0001"),
              sourceIPAddress="203.0.113.66", userAgent=TERRAFORM_AGENT),
    ]  # fmt: skip


def build_case(root: Path) -> Path:
    """CASE with the events above captured, timelined and detected; returns the case."""
    logs = root / "logs"
    logs.mkdir(parents=True)
    (logs / "trail.json.gz").write_bytes(records_gz(events()))
    suppress = root / "suppress"
    suppress.mkdir()
    (suppress / "erin.yml").write_text(ERIN_FILTER)
    case = root / "case"
    for args in (
        ("capture", "files", "--case", str(case), str(logs)),
        ("analyze", "--case", str(case), "--suppress", str(suppress)),
    ):
        result = cloudir(*args)
        assert result.code in (0, 1), result.stderr  # 1: findings at or above --fail-on
    return case


def findings(case: Path) -> dict[str, dict[str, Any]]:
    """findings.json's findings by title."""
    doc = json.loads((case / "findings" / "findings.json").read_text())
    return {f["title"]: f for f in doc["findings"]}


def event_ids(case: Path, user_name: str, action: str) -> list[str]:
    """The event ids of one principal's calls, read from the captured records."""
    return [
        e["eventID"]
        for e in json.loads(_records(case))["Records"]
        if e["userIdentity"].get("userName", "").endswith(user_name)
        or e["userIdentity"]["arn"].endswith(f"/{user_name}")
        if e["eventName"] == action
    ]


def _records(case: Path) -> str:
    import gzip

    [path] = list((case / "evidence").rglob("trail.json.gz"))
    return gzip.decompress(path.read_bytes()).decode()
