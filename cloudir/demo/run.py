"""`cloudir demo`: the whole job against an AWS emulator started in this process.

The story: an access key leaked from a CI system is used from a new address to look
around, read a backup, create a backdoor user with its own key, and stop the trail; the
runner it leaked from was entered over SSH from that address and calls a mining pool
(its VPC flow log).
Everything runs through the real capture and timeline code; only AWS is emulated.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloudir.errors import UsageError

ACCOUNT = "111122223333"
REGION = "us-east-1"
BUCKET = "acme-org-cloudtrail"
LEAKED_KEY = "AKIAIOSFODNN7EXAMPLE"
ATTACKER_IP = "203.0.113.77"
CI_IP = "198.51.100.10"
USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/ci-deployer"


def _event(when: datetime, source: str, name: str, ip: str, **extra: Any) -> dict[str, Any]:
    event = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEDEPLOYER01",
            "arn": USER_ARN,
            "accountId": ACCOUNT,
            "accessKeyId": LEAKED_KEY,
            "userName": "ci-deployer",
        },
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64",
        "requestParameters": None,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": name.startswith(("Get", "List", "Describe")),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    event.update(extra)
    return event


def story(start: datetime) -> list[dict[str, Any]]:
    """The intrusion, minute by minute, after an hour of ordinary CI activity."""
    t = start
    events = [
        _event(t + timedelta(minutes=m), "s3.amazonaws.com", "ListBuckets", CI_IP)
        for m in range(0, 60, 20)
    ]
    t += timedelta(hours=2)
    events += _enumeration(t - timedelta(minutes=8))
    events += [
        _event(t, "sts.amazonaws.com", "GetCallerIdentity", ATTACKER_IP),
        _event(t + timedelta(minutes=1), "s3.amazonaws.com", "ListBuckets", ATTACKER_IP),
        _event(
            t + timedelta(minutes=3),
            "s3.amazonaws.com",
            "GetObject",
            ATTACKER_IP,
            requestParameters={"bucketName": "acme-db-backups", "key": "prod/customers.sql.gz"},
            resources=[
                {
                    "type": "AWS::S3::Object",
                    "ARN": "arn:aws:s3:::acme-db-backups/prod/customers.sql.gz",
                }
            ],
            eventCategory="Data",
            managementEvent=False,
        ),
        _event(
            t + timedelta(minutes=6),
            "iam.amazonaws.com",
            "CreateUser",
            ATTACKER_IP,
            requestParameters={"userName": "svc-backup"},
        ),
        _event(
            t + timedelta(minutes=7),
            "iam.amazonaws.com",
            "CreateAccessKey",
            ATTACKER_IP,
            requestParameters={"userName": "svc-backup"},
            responseElements={
                "accessKey": {
                    "userName": "svc-backup",
                    "accessKeyId": "AKIAI44QH8DHBEXAMPLE",
                    "status": "Active",
                }
            },
        ),
        _event(
            t + timedelta(minutes=8),
            "iam.amazonaws.com",
            "AttachUserPolicy",
            ATTACKER_IP,
            requestParameters={
                "userName": "svc-backup",
                "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
            },
        ),
        _event(
            t + timedelta(minutes=9),
            "cloudtrail.amazonaws.com",
            "StopLogging",
            ATTACKER_IP,
            requestParameters={"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/org-trail"},
        ),
    ]
    return events


# What a stolen-key enumeration tool tries first: many services, many refused.
_ENUMERATED = [
    ("iam", "ListUsers"), ("iam", "ListRoles"), ("iam", "ListPolicies"),
    ("iam", "GetAccountSummary"), ("iam", "ListAccessKeys"), ("iam", "ListGroups"),
    ("s3", "ListBuckets"), ("s3", "GetBucketPolicy"), ("ec2", "DescribeInstances"),
    ("ec2", "DescribeSecurityGroups"), ("ec2", "DescribeVpcs"), ("ec2", "DescribeSnapshots"),
    ("ec2", "DescribeVolumes"), ("lambda", "ListFunctions"), ("rds", "DescribeDBInstances"),
    ("secretsmanager", "ListSecrets"), ("ssm", "DescribeParameters"), ("kms", "ListKeys"),
    ("dynamodb", "ListTables"), ("sns", "ListTopics"), ("sqs", "ListQueues"),
    ("cloudtrail", "DescribeTrails"), ("guardduty", "ListDetectors"), ("eks", "ListClusters"),
]  # fmt: skip
_REFUSED = {"ListRoles", "ListPolicies", "GetAccountSummary", "ListGroups", "DescribeSnapshots",
            "DescribeVolumes", "DescribeDBInstances", "ListSecrets", "DescribeParameters",
            "ListKeys", "ListClusters"}  # fmt: skip


def _enumeration(start: datetime) -> list[dict[str, Any]]:
    events = []
    for n, (service, name) in enumerate(_ENUMERATED):
        refused = {"errorCode": "AccessDenied"} if name in _REFUSED else {}
        when = start + timedelta(seconds=15 * n)
        events.append(_event(when, f"{service}.amazonaws.com", name, ATTACKER_IP, **refused))
    return events


def seed_bucket(s3: Any, events: list[dict[str, Any]]) -> int:
    """Deliver the events as CloudTrail does: gzipped Records files per 5 minutes."""
    s3.create_bucket(Bucket=BUCKET)
    files: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        when = datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
        slot = when.replace(minute=when.minute - when.minute % 5, second=0) + timedelta(minutes=5)
        key = (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{slot:%Y/%m/%d}/"
            f"{ACCOUNT}_CloudTrail_{REGION}_{slot:%Y%m%dT%H%M}Z_{uuid.uuid4().hex[:16]}.json.gz"
        )
        files.setdefault(key, []).append(event)
    for key, records in files.items():
        body = gzip.compress(json.dumps({"Records": records}).encode())
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    digest = f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/{REGION}/digest.json.gz"
    s3.put_object(Bucket=BUCKET, Key=digest, Body=gzip.compress(b"{}"))
    return len(files)


DEMO_TITLE = "Demo: leaked CI access key"
DEMO_MARKER = ".cloudir-demo"  # written only by the demo; --force deletes nothing without it


def capture_runner(
    case: Any, aws: Any, identity: dict[str, str], intrusion: datetime, say: Callable[[str], None]
) -> str | None:
    """The CI runner the key leaked from: launched, then captured as a responder would,
    with `capture ebs --instance-id I --download`."""
    from cloudir.capture.ebs import EbsRequest, capture_ebs
    from cloudir.console import TERMINAL
    from cloudir.demo.instance import HOSTNAME, VolumeContents, build_disk, launch_instance

    with tempfile.TemporaryDirectory(prefix="cloudir-demo-disk-") as tmp:
        image = build_disk(Path(tmp), intrusion, ATTACKER_IP, LEAKED_KEY)
        if image is None:
            say("mkfs.ext4 not found (install e2fsprogs): no compromised instance in this demo")
            return None
        instance_id, volume_id = launch_instance(aws)
        say(f"launched {instance_id} ({HOSTNAME}); its disk holds the intruder's traces")
        request = EbsRequest(instance_id=instance_id, download=True, workers=8)
        with VolumeContents(identity["Account"], REGION, volume_id, image):
            result = capture_ebs(case, aws, request, identity, say, TERMINAL)
    for snap in result.snapshots:
        if snap.image:
            say(
                f"{snap.snapshot_id} of {snap.volume_id}: {snap.image['blocks_listed']} blocks "
                f"into {case.relpath(Path(snap.image['path']))}, "
                f"sha256 {snap.image['sha256'][:16]}..."
            )
    return instance_id


def show_isolation_plan(case: Any, aws: Any, instance_id: str, say: Callable[[str], None]) -> None:
    """What `cloudir respond isolate` would do to the runner: the plan only, nothing changed."""
    from cloudir.respond.changes import Context
    from cloudir.respond.isolate import plan_isolation

    plan = plan_isolation(Context(aws, say), case.info["id"], instance_id, [])
    say(
        f"containment, plan only (nothing changed; `cloudir respond isolate --instance-id "
        f"{instance_id} --yes` would act):"
    )
    for line in plan.lines():
        say(line)


def _is_demo_case(case: Path) -> bool:
    """Only a case the demo made may be replaced: --force never deletes real evidence."""
    return (case / DEMO_MARKER).is_file()


def run_demo(
    case: Path,
    say: Callable[[str], None],
    show_findings: Callable[[list[dict[str, Any]]], None],
    replace: bool = False,
) -> None:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise UsageError("the demo needs moto: pip install 'cloudir[demo]'") from exc

    from cloudir.analyze.detect import detect
    from cloudir.analyze.timeline import build_timeline
    from cloudir.aws import Aws, AwsOptions
    from cloudir.capture.cloudtrail import capture_s3
    from cloudir.case import Case
    from cloudir.case_lock import clear_folder_keeping_lock
    from cloudir.demo.alert import stop_logging_finding, triage_demo_alert
    from cloudir.demo.container import capture_compromised_container
    from cloudir.demo.network import capture_network
    from cloudir.report.write import FORMATS, write_report
    from cloudir.timewindow import Window

    if (case / "case.json").exists():
        if not (replace and _is_demo_case(case)):
            raise UsageError(f"{case} already exists; remove it or pick another --case")
        clear_folder_keeping_lock(case)  # the CLI holds the case lock in it
    for name, value in {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        say(f"AWS emulator (moto) listening on {endpoint}")
        aws = Aws(AwsOptions(region=REGION, endpoint_url=endpoint))
        start = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
        files = seed_bucket(aws.client("s3"), story(start))
        say(f"seeded s3://{BUCKET} with {files} CloudTrail files (a leaked-key intrusion)")
        the_case = Case.create(case, title=DEMO_TITLE, examiner="demo")
        (case / DEMO_MARKER).write_text("made by `cloudir demo`; safe to delete\n")
        identity = aws.caller_identity()
        the_case.actor = identity.get("Arn", the_case.actor)
        window = Window.parse("3d", None)
        items = capture_s3(the_case, aws, BUCKET, "", [], [], window, 8, identity, say)
        captured = sum(i.captured for i in items)
        say(f"captured {captured} files into {case}/evidence with custody in {case}/custody.jsonl")
        intrusion = start + timedelta(minutes=80)  # on the host, before the key's first use
        runner = capture_runner(the_case, aws, identity, intrusion, say)
        if runner:
            show_isolation_plan(the_case, aws, runner, say)
        capture_network(the_case, aws, identity, runner, intrusion, ATTACKER_IP, say)
    finally:
        server.stop()
    # The same intruder's shell in a web container, when a Docker engine is reachable.
    capture_compromised_container(the_case, say)
    result = build_timeline(the_case)
    say(f"timeline: {result.rows} events in {result.path}")
    if result.unparsed:
        say(f"timeline: {len(result.unparsed)} file(s) no parser reads yet, listed in the report")
    detection = detect(the_case, [])
    say(f"detect: {len(detection.findings)} findings in {detection.path}")
    show_findings(detection.findings)
    # GuardDuty's alert for the intruder's StopLogging, triaged against what was captured
    stopped = start + timedelta(hours=2, minutes=9)
    event = stop_logging_finding(
        stopped, ACCOUNT, REGION, "ci-deployer", LEAKED_KEY, ATTACKER_IP, "org-trail"
    )
    verdict = triage_demo_alert(case, event, say)
    say(f"triage: GuardDuty's {event['detail']['type']} is {verdict.get('verdict')}")
    for reason in verdict.get("reasons", [])[:3]:
        say(f"  - {reason}")
    written = write_report(the_case, list(FORMATS))
    print(
        "\nNext:\n"
        f"  cloudir verify --case {case}\n"
        f'  cloudir query --case {case} "SELECT timestamp, src_ip, message FROM timeline '
        f"WHERE src_ip = '{ATTACKER_IP}' ORDER BY timestamp\"\n"
        f"  cloudir detect --case {case} --fail-on medium\n"
        f"  cloudir timeline export --case {case} --format csv\n"
    )
    print(f"Report: {written['html']}  (also {written['md'].name}, {written['json'].name})")
