"""`cloudir triage` end to end, as a SOAR or a responder runs it, against moto over HTTP.

Each test starts the `guardduty_server` fixture (moto with GuardDuty's GetFindings and
ListFindings added, tests/guardduty_server.py), seeds the account there (an IAM user and
its real access key, a trail and its bucket holding the window's CloudTrail, an SNS topic
with an SQS queue on it), and runs the CLI in a child process with AWS_ENDPOINT_URL on the
server. Nothing in boto3 is patched. The outcomes asserted are the issue's: a finding
about a leaked key scopes to that key, collects the window's CloudTrail, fires the
matching rules and is "corroborated"; a sample finding is "explained"; a finding whose
principal did nothing in the window is "not corroborated"; a broken document exits 2
with one line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, custody, query
from tests.guardduty_server import GuardDutyServer

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
INTRUDER = "203.0.113.77"
SEEN = datetime(2026, 11, 20, 3, 10, tzinfo=UTC)  # the alert's first and last seen


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(
    when: datetime, key: str, user: str, source: str, name: str, **extra: Any
) -> dict[str, Any]:
    event = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDA" + hashlib.sha1(user.encode()).hexdigest()[:16].upper(),
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
            "accountId": ACCOUNT,
            "accessKeyId": key,
            "userName": user,
        },
        "eventTime": _iso(when),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": INTRUDER,
        "userAgent": "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.8.0 lang/python#3.12.3",
        "requestParameters": None,
        "responseElements": None,
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "eventCategory": "Management",
        "eventID": str(uuid.uuid4()),
        "recipientAccountId": ACCOUNT,
    }
    event.update(extra)
    return event


def enumeration(key: str, user: str) -> list[dict[str, Any]]:
    """A leaked key's first minutes: who am I, then a sweep of reads, most of them refused."""
    calls = [
        ("sts.amazonaws.com", "GetCallerIdentity", None),
        ("iam.amazonaws.com", "ListUsers", None),
        ("iam.amazonaws.com", "ListRoles", "AccessDenied"),
        ("iam.amazonaws.com", "ListPolicies", "AccessDenied"),
        ("iam.amazonaws.com", "GetAccountAuthorizationDetails", "AccessDenied"),
        ("s3.amazonaws.com", "ListBuckets", "AccessDenied"),
        ("ec2.amazonaws.com", "DescribeInstances", "Client.UnauthorizedOperation"),
        ("ec2.amazonaws.com", "DescribeSecurityGroups", "Client.UnauthorizedOperation"),
        ("lambda.amazonaws.com", "ListFunctions20150331", "AccessDeniedException"),
        ("rds.amazonaws.com", "DescribeDBInstances", "AccessDenied"),
        ("secretsmanager.amazonaws.com", "ListSecrets", "AccessDeniedException"),
        ("kms.amazonaws.com", "ListKeys", "AccessDeniedException"),
        ("dynamodb.amazonaws.com", "ListTables", "AccessDeniedException"),
        ("sns.amazonaws.com", "ListTopics", "AuthorizationError"),
    ]
    events = []
    for n, (source, name, error) in enumerate(calls):
        extra = {"errorCode": error, "errorMessage": "not authorized"} if error else {}
        events.append(_event(SEEN + timedelta(seconds=5 * n), key, user, source, name, **extra))
    return events


def guardduty_finding(
    detector: str, key: str, user: str, *, sample: bool = False, address: str = INTRUDER
) -> dict[str, Any]:
    """An AccessKey finding as GuardDuty's API spells it (camelCase)."""
    finding_id = uuid.uuid4().hex
    return {
        "accountId": ACCOUNT,
        "arn": f"arn:aws:guardduty:{REGION}:{ACCOUNT}:detector/{detector}/finding/{finding_id}",
        "createdAt": _iso(SEEN + timedelta(minutes=5)),
        "updatedAt": _iso(SEEN + timedelta(minutes=5)),
        "id": finding_id,
        "partition": "aws",
        "region": REGION,
        "schemaVersion": "2.0",
        "severity": 5,
        "title": f"Unusual discovery calls by {user}.",
        "description": "APIs commonly used in discovery tactics were invoked by a user.",
        "type": "Discovery:IAMUser/AnomalousBehavior",
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {
                "accessKeyId": key,
                "principalId": "AIDA" + hashlib.sha1(user.encode()).hexdigest()[:16].upper(),
                "userName": user,
                "userType": "IAMUser",
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": detector,
            "action": {
                "actionType": "AWS_API_CALL",
                "awsApiCallAction": {
                    "api": "ListUsers",
                    "serviceName": "iam.amazonaws.com",
                    "callerType": "Remote IP",
                    "remoteIpDetails": {"ipAddressV4": address},
                },
            },
            "additionalInfo": {"sample": sample},
            "archived": False,
            "count": 14,
            "eventFirstSeen": _iso(SEEN),
            "eventLastSeen": _iso(SEEN + timedelta(minutes=1)),
            "resourceRole": "TARGET",
        },
    }


def seed_trail(server: GuardDutyServer, events: list[dict[str, Any]]) -> str:
    """A trail and its bucket holding the window's events; returns the trail's name.
    moto's accounts live for the whole test process, so every name is the test's own."""
    import boto3

    trail = f"main-{uuid.uuid4().hex[:8]}"
    bucket = f"org-trail-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=server.url)
    s3.create_bucket(Bucket=bucket)
    day = f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{SEEN:%Y/%m/%d}"
    body = gzip.compress(json.dumps({"Records": events}).encode())
    name = f"{ACCOUNT}_CloudTrail_{REGION}_{SEEN:%Y%m%dT%H%M}Z_leak.json.gz"
    s3.put_object(Bucket=bucket, Key=f"{day}/{name}", Body=body)
    # a day long before the window: never collected
    old = f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/10/01/{ACCOUNT}_CloudTrail_old.json.gz"
    s3.put_object(Bucket=bucket, Key=old, Body=gzip.compress(b'{"Records": []}'))
    trails = boto3.client("cloudtrail", region_name=REGION, endpoint_url=server.url)
    trails.create_trail(Name=trail, S3BucketName=bucket)
    return trail


def leaked_user(server: GuardDutyServer, user: str) -> str:
    """A user (a name of this test's own) and its real moto access key."""
    import boto3

    iam = boto3.client("iam", region_name=REGION, endpoint_url=server.url)
    iam.create_user(UserName=user)
    return str(iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"])


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def triage(server: GuardDutyServer, case: Path, *args: str, stdin: bytes | None = None) -> Any:
    env = {"AWS_ENDPOINT_URL": server.url}
    if stdin is None:
        return cloudir("triage", "--case", str(case), *args, env=env, timeout=600)
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "cloudir", "triage", "--case", str(case), *args],
        input=stdin, capture_output=True, env=dict(os.environ, **env), timeout=600, check=False,
    )  # fmt: skip
    return proc


def test_a_leaked_key_finding_is_scoped_collected_and_corroborated(
    guardduty_server: GuardDutyServer, tmp_path: Path
) -> None:
    import boto3

    user, other = fresh("svc-reporting"), fresh("alice")
    key = leaked_user(guardduty_server, user)
    bystander = leaked_user(guardduty_server, other)
    events = enumeration(key, user)
    events.append(_event(SEEN, bystander, other, "s3.amazonaws.com", "ListBuckets",
                         sourceIPAddress="198.51.100.24"))  # fmt: skip
    trail = seed_trail(guardduty_server, events)
    detector = guardduty_server.detector()
    finding = guardduty_finding(detector, key, user)
    guardduty_server.add(detector, finding)
    sns = boto3.client("sns", region_name=REGION, endpoint_url=guardduty_server.url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=guardduty_server.url)
    topic = sns.create_topic(Name=fresh("ir"))["TopicArn"]
    queue = sqs.create_queue(QueueName=fresh("soar"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                  Attributes={"RawMessageDelivery": "true"})  # fmt: skip
    cases_bucket = fresh("ir-cases")
    boto3.client("s3", region_name=REGION, endpoint_url=guardduty_server.url).create_bucket(
        Bucket=cases_bucket
    )
    case = tmp_path / "case"

    result = triage(
        guardduty_server, case, "--guardduty", f"{detector}:{finding['id']}",
        "--region", REGION, "--trail", trail, "--fail-on", "critical", "--json",
        "--upload", f"s3://{cases_bucket}/triage", "--notify", f"sns:{topic}",
    )  # fmt: skip

    assert result.code == 0, result.stderr
    document = result.json()
    # scoped to that key and user, the window widened around the alert
    assert document["scope"]["access_keys"] == [key]
    assert document["scope"]["users"] == [user]
    assert document["scope"]["start"] == _iso(SEEN - timedelta(hours=24))
    assert document["scope"]["end"] == _iso(SEEN + timedelta(minutes=1, hours=1))
    assert document["playbook"]["name"] == "access-key"
    # the window's CloudTrail collected, the old day not
    trail_step = next(s for s in document["collection"] if s["kind"] == "cloudtrail")
    assert trail_step["status"] == "done" and trail_step["captured"] == 1
    rows = query(case, "SELECT count(*) AS n FROM timeline WHERE artifact = 'aws:cloudtrail'")
    assert rows == [{"n": len(events)}]
    # cloudir's own rules fire on the key's enumeration
    titles = {f["title"] for f in document["findings"]["top"]}
    assert "Many Different API Calls Denied for One Principal" in titles
    assert document["verdict"]["verdict"] == "corroborated"
    assert any("ListUsers" in reason for reason in document["verdict"]["reasons"])
    # the alert is evidence: stored as GuardDuty sent it, hashed into custody
    stored = case / "evidence" / document["alert"]["evidence_id"] / "alert.json"
    assert json.loads(stored.read_bytes())["findings"][0]["id"] == finding["id"]
    recorded = {f["path"]: f["sha256"] for entry in custody(case) for f in entry.get("files", [])}
    assert any(
        path.endswith("alert.json") and digest == hashlib.sha256(stored.read_bytes()).hexdigest()
        for path, digest in recorded.items()
    )
    # the report leads with the verdict
    markdown = (case / "report" / "report.md").read_text()
    assert markdown.index("Alert validation") < markdown.index("## Summary")
    assert "**Verdict: CORROBORATED.**" in markdown
    # handed off: the case in S3, the result on the topic
    assert document["upload"]["complete"] is True and document["upload"]["refused"] == []
    assert document["upload"]["uploaded"] > 0
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=guardduty_server.url)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=cases_bucket)["Contents"]]
    assert f"triage/case/evidence/{document['alert']['evidence_id']}/alert.json" in keys
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)["Messages"]
    published = json.loads(messages[0]["Body"])
    assert published["verdict"]["verdict"] == "corroborated"
    assert published["alert"]["id"] == finding["id"]


def test_contain_disables_the_leaked_key(guardduty_server: GuardDutyServer, tmp_path: Path) -> None:
    import boto3

    user = fresh("svc-reporting")
    key = leaked_user(guardduty_server, user)
    trail = seed_trail(guardduty_server, enumeration(key, user))
    finding = guardduty_finding("detector-1", key, user)
    alert = tmp_path / "finding.json"
    alert.write_text(json.dumps({"detail-type": "GuardDuty Finding", "source": "aws.guardduty",
                                 "detail": finding}))  # fmt: skip

    plan_only = triage(guardduty_server, tmp_path / "plan", str(alert), "--plan", "--trail", trail)
    assert plan_only.code == 0, plan_only.stderr
    assert f"disable-key {key}: only with --contain" in plan_only.stderr
    iam = boto3.client("iam", region_name=REGION, endpoint_url=guardduty_server.url)
    [listed] = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    assert listed["Status"] == "Active"  # --plan changed nothing

    result = triage(guardduty_server, tmp_path / "case", str(alert), "--contain", "--json",
                    "--trail", trail, "--fail-on", "critical")  # fmt: skip

    assert result.code == 0, result.stderr
    containment = result.json()["containment"]
    assert containment["status"] == "done"
    assert [a["action"] for a in containment["actions"]] == ["disable-key"]
    [listed] = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    assert listed["Status"] == "Inactive"


def test_a_sample_finding_is_explained(guardduty_server: GuardDutyServer, tmp_path: Path) -> None:
    finding = guardduty_finding("detector-1", "AKIAIOSFODNN7EXAMPLE", "svc-x", sample=True)
    event = json.dumps({"detail-type": "GuardDuty Finding", "detail": finding}).encode()

    proc = triage(guardduty_server, tmp_path / "case", "-", "--no-collect", "--json",
                  stdin=event)  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["verdict"]["verdict"] == "explained"
    assert document["alert"]["sample"] is True
    assert "sample" in document["verdict"]["reasons"][0]


def test_a_principal_that_did_nothing_is_not_corroborated(
    guardduty_server: GuardDutyServer, tmp_path: Path
) -> None:
    busy_user, quiet_user = fresh("svc-reporting"), fresh("svc-quiet")
    busy = leaked_user(guardduty_server, busy_user)
    quiet = leaked_user(guardduty_server, quiet_user)
    trail = seed_trail(guardduty_server, enumeration(busy, busy_user))
    # from an address of its own: the scope's address names nobody else's calls
    finding = guardduty_finding("detector-1", quiet, quiet_user, address="192.0.2.200")
    alert = tmp_path / "finding.json"
    alert.write_text(json.dumps(finding))

    result = triage(guardduty_server, tmp_path / "case", str(alert), "--json", "--trail", trail)

    assert result.code == 0, result.stderr
    document = result.json()
    assert document["scope"]["access_keys"] == [quiet]
    assert document["verdict"]["verdict"] == "not corroborated"
    assert document["findings"]["total"] >= 1  # the busy key's findings exist, on others


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (b"{not json", "alert:"),
        (b'{"detail-type": "GuardDuty Finding", "detail": {"id": 7}}', "alert: $.detail"),
        (b'{"Records": []}', "alert:"),
    ],
)
def test_a_broken_finding_document_exits_2_with_one_line(
    guardduty_server: GuardDutyServer, tmp_path: Path, document: bytes, says: str
) -> None:
    alert = tmp_path / "finding.json"
    alert.write_bytes(document)

    result = triage(guardduty_server, tmp_path / "case", str(alert), "--plan")

    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "case").exists()  # nothing written for a document that is not one


def test_a_security_hub_finding_is_read_by_its_arn_and_planned(
    moto_url: str, tmp_path: Path
) -> None:
    """--securityhub ARN reads the finding from Security Hub (moto's own import and get);
    --plan keeps it as evidence, prints scope and plan, and asks AWS for nothing else."""
    import boto3

    event = json.loads(
        (Path(__file__).parent / "data/findings/cloud-custodian/"
         "event-securityhub-iamkey-finding-action.json").read_text()
    )  # fmt: skip
    # the EventBridge copy carries two keys of its own that BatchImportFindings refuses
    finding = {
        k: v
        for k, v in event["detail"]["findings"][0].items()
        if k not in ("approximateArrivalTimestamp", "updatedAt")
    }
    hub = boto3.client("securityhub", region_name=REGION, endpoint_url=moto_url)
    imported = hub.batch_import_findings(Findings=[finding])
    assert imported["FailedCount"] == 0
    case = tmp_path / "case"

    result = cloudir(
        "triage", "--case", str(case), "--securityhub", finding["Id"], "--plan", "--json",
        env={"AWS_ENDPOINT_URL": moto_url},
    )  # fmt: skip

    assert result.code == 0, result.stderr
    document = result.json()
    assert document["status"] == "planned"
    assert document["alert"]["product"] == "GuardDuty"  # forwarded through Security Hub
    assert document["alert"]["id"] == finding["Id"]
    assert "208.115.85.104" in document["scope"]["addresses"]
    assert "scope: account 644160558196" in result.stderr
    stored = case / "evidence" / document["alert"]["evidence_id"] / "alert.json"
    assert any(f["Id"] == finding["Id"] for f in json.loads(stored.read_bytes())["Findings"])
    assert not (case / "timeline").exists()  # --plan analyses nothing
