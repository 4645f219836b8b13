"""The intrusion of issue 16, end to end: every step of the story found, the owner's work not.

A leaked long-term IAM user key is used from an address its owner never worked from: it
asks who it is, enumerates (many calls denied), finds a permission that works, puts a
`*:*` inline policy on its own user and issues itself a second access key. The same case
holds the owner's own week of work with that key from the office, and the account owner's
root console session, which reads many Describe/List APIs from a browser in ten minutes.

The case goes through the real commands (`capture files`, `timeline`, `detect`), and the
reference evaluator must agree with the engine on it (computed fields included).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir
from tests.sigma_reference import evaluate, load_rules, read_timeline
from tests.test_detect_reference import assert_agreement
from tests.timeline_rows import timeline_row, write_timeline

ACCOUNT = "111122223333"
OFFICE, ATTACKER, OWNER_HOME = "198.51.100.10", "203.0.113.66", "192.0.2.44"
ALICE_KEY, SECOND_KEY = "AKIAALICEEXAMPLE0001", "AKIAALICEEXAMPLE0002"
CLI = "aws-cli/2.22.4 md/awscrt#0.22.0 ua/2.0 os/linux#6.8.0 lang/python#3.12.6 command/api"
BOTO = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1.0 lang/python#3.11.2"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
ALICE = {
    "type": "IAMUser",
    "principalId": "AIDAALICEEXAMPLE0001",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
    "accountId": ACCOUNT,
    "accessKeyId": ALICE_KEY,
    "userName": "alice",
}
ROOT = {
    "type": "Root",
    "principalId": ACCOUNT,
    "arn": f"arn:aws:iam::{ACCOUNT}:root",
    "accountId": ACCOUNT,
    "accessKeyId": "ASIAROOTCONSOLE00001",
    "sessionContext": {"attributes": {"creationDate": "2026-03-05T09:00:00Z"}},
}
POLICY_ALL = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; the intrusion is on Thursday

# Enumeration as enumerate-iam or Pacu run it: the attacker's calls, in order.
RECON = [
    ("sts", "GetCallerIdentity", None),
    ("iam", "ListUsers", "AccessDenied"),
    ("iam", "ListRoles", "AccessDenied"),
    ("iam", "ListPolicies", "AccessDenied"),
    ("iam", "ListGroups", "AccessDenied"),
    ("iam", "ListAttachedUserPolicies", None),  # the permission it finds
    ("iam", "ListUserPolicies", None),
    ("iam", "GetUser", None),
    ("s3", "ListBuckets", None),
    ("ec2", "DescribeInstances", "Client.UnauthorizedOperation"),
    ("ec2", "DescribeSecurityGroups", "Client.UnauthorizedOperation"),
    ("ec2", "DescribeVpcs", "Client.UnauthorizedOperation"),
    ("ec2", "DescribeSnapshots", "Client.UnauthorizedOperation"),
    ("lambda", "ListFunctions20150331", "AccessDeniedException"),
    ("secretsmanager", "ListSecrets", "AccessDeniedException"),
    ("ssm", "DescribeParameters", "AccessDeniedException"),
    ("rds", "DescribeDBInstances", "AccessDenied"),
    ("cloudtrail", "DescribeTrails", "AccessDenied"),
    ("guardduty", "ListDetectors", "AccessDenied"),
    ("kms", "ListKeys", "AccessDeniedException"),
    ("dynamodb", "ListTables", "AccessDeniedException"),
    ("organizations", "DescribeOrganization", "AccessDeniedException"),
]
OWNER_CONSOLE = [
    ("ec2", "DescribeInstances"), ("ec2", "DescribeVolumes"), ("ec2", "DescribeSnapshots"),
    ("ec2", "DescribeSecurityGroups"), ("ec2", "DescribeVpcs"), ("ec2", "DescribeSubnets"),
    ("ec2", "DescribeAddresses"), ("ec2", "DescribeKeyPairs"), ("ec2", "DescribeImages"),
    ("ec2", "DescribeRegions"), ("iam", "ListUsers"), ("iam", "ListRoles"),
    ("iam", "GetAccountSummary"), ("iam", "ListPolicies"), ("iam", "ListGroups"),
    ("s3", "ListBuckets"), ("s3", "GetBucketLocation"), ("s3", "GetBucketPolicy"),
    ("cloudtrail", "DescribeTrails"), ("cloudtrail", "GetTrailStatus"),
    ("guardduty", "ListDetectors"), ("kms", "ListKeys"), ("kms", "ListAliases"),
    ("rds", "DescribeDBInstances"), ("lambda", "ListFunctions20150331"),
]  # fmt: skip


class Records:
    """CloudTrail records with readable event ids: `<step>-NN`."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.steps: dict[str, list[str]] = {}

    def add(self, step: str, when: datetime, source: str, name: str, **fields: Any) -> None:
        ids = self.steps.setdefault(step, [])
        event_id = f"{step}-{len(ids) + 1:02d}"
        ids.append(event_id)
        read_only = name.startswith(("List", "Describe", "Get"))
        record = {
            "eventVersion": "1.09",
            "userIdentity": ALICE,
            "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": f"{source}.amazonaws.com",
            "eventName": name,
            "awsRegion": "eu-west-1",
            "sourceIPAddress": OFFICE,
            "userAgent": CLI,
            "requestParameters": None,
            "responseElements": None,
            "eventID": event_id,
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": ACCOUNT,
            **fields,
        }
        self.records.append(record)


def intrusion() -> Records:
    out = Records()
    # Alice's own work with her key, from the office, Monday to Thursday morning.
    for day in range(4):
        for hour in (9, 11, 15, 17):
            when = DAY0 + timedelta(days=day, hours=hour)
            out.add("owner", when, "s3", "ListBuckets")
            out.add(
                "owner",
                when + timedelta(minutes=2),
                "s3",
                "GetObject",
                requestParameters={"bucketName": "reports", "key": f"d{day}-{hour}.csv"},
            )
    # The account owner's root console session, Thursday 09:00, from home.
    console = DAY0 + timedelta(days=3, hours=9)
    out.add(
        "root",
        console,
        "signin",
        "ConsoleLogin",
        userIdentity=ROOT,
        userAgent=BROWSER,
        sourceIPAddress=OWNER_HOME,
        eventType="AwsConsoleSignIn",
        responseElements={"ConsoleLogin": "Success"},
        additionalEventData={"MFAUsed": "Yes", "MobileVersion": "No"},
    )
    for n, (source, name) in enumerate(OWNER_CONSOLE):
        out.add(
            "root",
            console + timedelta(seconds=20 + 20 * n),
            source,
            name,
            userIdentity=ROOT,
            userAgent=BROWSER,
            sourceIPAddress=OWNER_HOME,
        )
    # The leaked key, Thursday 14:00, from an address Alice never used.
    start = DAY0 + timedelta(days=3, hours=14)
    for n, (source, name, error) in enumerate(RECON):
        fields: dict[str, Any] = {"sourceIPAddress": ATTACKER, "userAgent": BOTO}
        if error:
            fields |= {"errorCode": error, "errorMessage": "not authorized"}
        out.add("recon", start + timedelta(seconds=15 * n), source, name, **fields)
    out.add(
        "grant",
        start + timedelta(minutes=9),
        "iam",
        "PutUserPolicy",
        sourceIPAddress=ATTACKER,
        userAgent=BOTO,
        requestParameters={
            "userName": "alice",
            "policyName": "backup",
            "policyDocument": POLICY_ALL,
        },
    )
    out.add(
        "key",
        start + timedelta(minutes=12),
        "iam",
        "CreateAccessKey",
        sourceIPAddress=ATTACKER,
        userAgent=BOTO,
        responseElements={
            "accessKey": {"accessKeyId": SECOND_KEY, "status": "Active", "userName": "alice"}
        },
    )
    return out  # fmt: skip


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Records, dict[str, Any]]:
    records = intrusion()
    root = tmp_path_factory.mktemp("sequences")
    folder = root / "cloudtrail"
    folder.mkdir()
    (folder / "trail.json").write_text(json.dumps({"Records": records.records}))
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    detected = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert detected.code == 0, detected.stderr
    return case, records, detected.json()


SELF_GRANT_THEN_KEY = "5f395679-1a9d-47de-aa22-f08e5660b01b"
NEW_ADDRESS_THEN_DISCOVERY = "3f8c34d9-d30f-441b-a440-e6a280c8e56c"
DENIED_THEN_SUCCESS = "a2096b03-76be-4549-a8dd-eff650a51565"
RELATIVE_DISCOVERY_BURST = "5306e316-36ee-4a9c-996d-b6b09b623c4d"


def finding(document: dict[str, Any], rule_id: str) -> dict[str, Any]:
    found = [f for f in document["findings"] if f["rule_id"] == rule_id]
    assert len(found) == 1, f"{rule_id}: {len(found)} findings"
    return found[0]


def test_every_step_of_the_intrusion_is_found(story: tuple[Path, Records, dict]) -> None:
    _, records, document = story
    recon, grant, key = (set(records.steps[s]) for s in ("recon", "grant", "key"))
    entry = finding(document, NEW_ADDRESS_THEN_DISCOVERY)
    assert set(entry["event_ids"]) == recon  # the first call from there, then the enumeration
    assert entry["entities"]["source_ips"] == [ATTACKER]
    persistence = finding(document, SELF_GRANT_THEN_KEY)
    assert set(persistence["event_ids"]) == grant | key
    assert persistence["level"] == "high"
    burst = finding(document, RELATIVE_DISCOVERY_BURST)
    assert set(burst["event_ids"]) <= recon and len(burst["event_ids"]) >= 20
    found_permission = finding(document, DENIED_THEN_SUCCESS)
    assert "recon-06" in found_permission["event_ids"]  # ListAttachedUserPolicies worked
    assert set(found_permission["event_ids"]) <= recon


def test_tags_give_the_tactics_of_the_steps_in_order(story: tuple[Path, Records, dict]) -> None:
    _, _, document = story

    def tactics(rule_id: str) -> list[str]:
        tags = finding(document, rule_id)["tags"]
        return [t for t in tags if t.startswith("attack.") and not t.startswith("attack.t")]

    assert tactics(NEW_ADDRESS_THEN_DISCOVERY) == ["attack.initial-access", "attack.discovery"]
    assert tactics(SELF_GRANT_THEN_KEY) == ["attack.privilege-escalation", "attack.persistence"]


def test_the_owners_work_is_no_sequence_or_relative_burst(
    story: tuple[Path, Records, dict],
) -> None:
    """Alice's office work and the root console session are in no sequence finding."""
    _, records, document = story
    owner = set(records.steps["owner"]) | set(records.steps["root"])
    sequences = {
        SELF_GRANT_THEN_KEY, NEW_ADDRESS_THEN_DISCOVERY, DENIED_THEN_SUCCESS,
        RELATIVE_DISCOVERY_BURST,
    }  # fmt: skip
    for entry in document["findings"]:
        if entry["rule_id"] in sequences:
            assert not owner & set(entry["event_ids"]), entry["title"]


def test_reference_agrees_on_the_intrusion(story: tuple[Path, Records, dict]) -> None:
    """Computed fields included: the plain-Python reference finds the same events."""
    case, _, _ = story
    reference = assert_agreement(case)
    assert reference[SELF_GRANT_THEN_KEY].event_ids


# -- the computed fields, value by value (docs/detection.md "Computed fields") ---------------

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def call(
    event_id: str, minutes: float, name: str, ip: str | None, identity: dict[str, Any], **raw: Any
) -> dict[str, Any]:
    """A CloudTrail row with the columns the parser would give it (user, src_ip, host)."""
    source = raw.pop("eventSource", "s3.amazonaws.com")
    record = {"eventSource": source, "eventName": name, "sourceIPAddress": ip,
              "userIdentity": identity, **raw}  # fmt: skip
    session = str(identity.get("principalId", "")).rpartition(":")[2]
    return timeline_row(
        "aws:cloudtrail", T0 + timedelta(minutes=minutes), record, event_id=event_id,
        action=f"{source}:{name}", user=identity.get("arn"), src_ip=ip,
        host=session if session.startswith("i-") else None,
        outcome=raw.get("errorCode") or "success",
    )  # fmt: skip


def user(name: str, key: str) -> dict[str, Any]:
    arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
    return {"type": "IAMUser", "arn": arn, "accessKeyId": key, "userName": name}


def instance(instance_id: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAWEB:{instance_id}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/web/{instance_id}",
        "accessKeyId": "ASIAWEB",
        **more,
    }


BOB, CAROL, DAVE = user("bob", "AKIABOB"), user("carol", "ASIACAROL"), user("dave", "AKIADAVE")
LAUNCH = {
    "instancesSet": {
        "items": [
            {
                "instanceId": "i-0aaa",
                "privateIpAddress": "10.0.1.5",
                "networkInterfaceSet": {"items": [{"association": {"publicIp": "198.51.100.5"}}]},
            }
        ]
    }
}
AGENT = "aws-sdk-go/1.44.260 (go1.20.6; linux; amd64) amazon-ssm-agent/3.2.1377.0"
ERIN, FRANK = user("erin", "AKIAERIN"), user("frank", "AKIAFRANK")
ADMIN = user("root-ops", "AKIAOPS")
SCANNER = "python-requests/2.32.3"
DEPLOY = {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci",
          "accessKeyId": "ASIADEPLOY", "principalId": "AROADEPLOY:ci"}  # fmt: skip


DEPLOY_2 = {**DEPLOY, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci-2",
            "principalId": "AROADEPLOY:ci-2"}  # fmt: skip
GUS, HANK = user("gus", "AKIAGUS"), user("hank", "AKIAHANK")


def deploy(event_id: str, minutes: float, name: str, who: dict[str, Any], function: str,
           **raw: Any) -> dict[str, Any]:  # fmt: skip
    """A Lambda call naming a function, from the office, in us-east-1 unless `raw` says."""
    return call(event_id, minutes, name, OFFICE, who, eventSource="lambda.amazonaws.com",
                recipientAccountId=ACCOUNT, awsRegion=raw.pop("awsRegion", "us-east-1"),
                requestParameters={"functionName": function}, **raw)  # fmt: skip


def erin(event_id: str, minutes: float, agent: str | None) -> dict[str, Any]:
    """Erin's key, always from the office, with one client or another."""
    return call(event_id, minutes, "PutObject", OFFICE, ERIN, userAgent=agent)


def iam_group(event_id: str, minutes: float, name: str, who: dict[str, Any], group: str,
              **raw: Any) -> dict[str, Any]:  # fmt: skip
    parameters = {"groupName": group, **raw.pop("requestParameters", {})}
    return call(event_id, minutes, name, OFFICE, who, eventSource="iam.amazonaws.com",
                recipientAccountId=ACCOUNT, requestParameters=parameters, **raw)  # fmt: skip


def member(event_id: str, minutes: float, name: str, group: str, **raw: Any) -> dict[str, Any]:
    """The administrator adds frank to, or removes him from, a group."""
    return iam_group(event_id, minutes, name, ADMIN, group,
                     requestParameters={"userName": "frank"}, **raw)  # fmt: skip


def field_rows() -> list[dict[str, Any]]:
    quiet = [call(f"quiet-{n}", 20 * n, "ListBuckets", OFFICE, CAROL) for n in range(5)]
    return [
        # key_new_address: bob's key at the office, then from two new addresses
        call("bob-1", 0, "ListBuckets", OFFICE, BOB),
        call("bob-2", 1, "GetObject", OFFICE, BOB),
        call("bob-3", 2, "ListBuckets", "203.0.113.7", BOB),
        call("bob-4", 3, "ListBuckets", "203.0.113.7", BOB),
        call("bob-5", 4, "ListBuckets", "203.0.113.8", BOB),
        call("bob-6", 5, "ListBuckets", OFFICE, BOB),
        call("bob-7", 63, "GetObject", "203.0.113.7", BOB),  # more than an hour after bob-3
        # family_failing: two of dave's three iam List calls refused in one bucket
        call("dave-1", 30, "ListUsers", OFFICE, DAVE, eventSource="iam.amazonaws.com",
             errorCode="AccessDenied"),
        call("dave-2", 31, "ListRoles", OFFICE, DAVE, eventSource="iam.amazonaws.com",
             errorCode="AccessDenied"),
        call("dave-3", 32, "ListGroups", OFFICE, DAVE, eventSource="iam.amazonaws.com"),
        call("dave-4", 90, "ListPolicies", OFFICE, DAVE, eventSource="iam.amazonaws.com"),
        call("dave-5", 91, "GetUser", OFFICE, DAVE, eventSource="iam.amazonaws.com"),
        # instance_address
        call("launch", 0, "RunInstances", OFFICE, BOB, eventSource="ec2.amazonaws.com",
             responseElements=LAUNCH),
        call("eip", 0, "AssociateAddress", OFFICE, BOB, eventSource="ec2.amazonaws.com",
             requestParameters={"instanceId": "i-0aaa", "publicIp": "198.51.100.6"}),
        call("agent", 1, "UpdateInstanceInformation", "198.51.100.77", instance("i-0aaa"),
             eventSource="ssm.amazonaws.com", userAgent=AGENT),
        call("private-own", 2, "ListBuckets", "10.0.1.5", instance("i-0aaa")),
        call("public-own", 3, "ListBuckets", "198.51.100.5", instance("i-0aaa")),
        call("eip-own", 3, "GetObject", "198.51.100.6", instance("i-0aaa")),
        call("nat-own", 4, "ListBuckets", "198.51.100.77", instance("i-0aaa")),
        call("private-outside", 5, "ListBuckets", "10.0.9.9", instance("i-0aaa")),
        call("public-outside", 6, "ListBuckets", "203.0.113.9", instance("i-0aaa")),
        call("service", 7, "ListBuckets", "ec2.amazonaws.com", instance("i-0aaa")),
        call("invoked", 7, "GetObject", "203.0.113.9",
             instance("i-0aaa", invokedBy="ec2.amazonaws.com")),
        call("unknown", 8, "ListBuckets", "203.0.113.9", instance("i-0bbb")),
        # key_new_agent_family: erin's key with the aws-cli, then two new clients
        erin("erin-1", 0, CLI),
        erin("erin-2", 1, CLI.replace("2.22.4", "2.23.0")),  # a new version: same family
        erin("erin-3", 2, SCANNER),
        erin("erin-4", 3, BOTO),
        erin("erin-5", 4, CLI),
        erin("erin-6", 63, SCANNER),  # more than an hour after erin-3
        erin("erin-7", 5, "AWS Internal"),  # AWS on the key's behalf: no family
        erin("erin-8", 6, None),
        # caller_in_group: frank's memberships, as the administrator changes them
        member("add-devs", 0, "AddUserToGroup", "Devs"),
        iam_group("grant-devs", 1, "PutGroupPolicy", FRANK, "devs"),  # names: any case
        iam_group("grant-ops", 1, "AttachGroupPolicy", FRANK, "ops"),
        member("add-ops-denied", 2, "AddUserToGroup", "ops", errorCode="AccessDenied"),
        iam_group("grant-ops-2", 3, "PutGroupPolicy", FRANK, "ops"),
        member("remove-devs", 4, "RemoveUserFromGroup", "devs"),
        iam_group("grant-devs-2", 5, "PutGroupPolicy", FRANK, "devs"),
        member("add-qa", 6, "AddUserToGroup", "qa"),
        iam_group("grant-qa-same-second", 6, "PutGroupPolicy", FRANK, "qa"),
        iam_group("grant-qa", 7, "PutGroupPolicy", FRANK, "qa"),
        iam_group("role-grant", 8, "PutGroupPolicy", DEPLOY, "qa"),  # no user: no value
        # lambda_new_deployer: the deploy role's sessions build "api"; gus replaces its code
        deploy("create-api", 0, "CreateFunction20150331", DEPLOY, "api"),
        deploy("ci-update", 30, "UpdateFunctionCode20150331v2", DEPLOY_2, "api"),
        deploy("gus-1", 40, "UpdateFunctionCode20150331v2", GUS, "api"),
        deploy("gus-arn", 45, "UpdateFunctionCode20150331v2", GUS,
               f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:api"),
        deploy("hank-denied", 50, "UpdateFunctionCode20150331v2", HANK, "api",
               errorCode="AccessDeniedException"),
        deploy("gus-late", 101, "UpdateFunctionCode20150331v2", GUS, "api"),
        deploy("gus-url", 41, "CreateFunctionUrlConfig20211031", GUS, "api"),  # no value
        deploy("gus-west", 42, "UpdateFunctionCode20150331v2", GUS, "api", awsRegion="us-west-2"),
        deploy("gus-own", 10, "CreateFunction20150331", GUS, "worker"),
        deploy("gus-own-update", 20, "UpdateFunctionCode20150331v2", GUS, "worker"),
        # discovery_unusual: carol's quiet buckets, then 12 different calls in one bucket
        *quiet,
        *(call(f"burst-{n}", 200 + n / 6, name, OFFICE, CAROL,
               eventSource=f"{source}.amazonaws.com")
          for n, (source, name) in enumerate(OWNER_CONSOLE[:12])),
    ]  # fmt: skip


GROUP_CALLS = (
    "add-devs", "grant-devs", "grant-ops", "add-ops-denied", "grant-ops-2", "remove-devs",
    "grant-devs-2", "add-qa", "grant-qa-same-second", "grant-qa",
)  # fmt: skip
# the Lambda calls above made with a long-term key (gus's and hank's)
KEY_DEPLOYS = ("gus-1", "gus-arn", "hank-denied", "gus-late", "gus-url", "gus-west", "gus-own",
               "gus-own-update")  # fmt: skip
FIELD_VALUES = {
    # from an address the key first used at most an hour before, the key being older
    ("cloudir.key_new_address", "true"): {"bob-3", "bob-4", "bob-5"},
    ("cloudir.key_new_address", "false"): {"bob-1", "bob-2", "bob-6", "bob-7", "launch",
                                           "eip", *(f"dave-{n}" for n in range(1, 6)),
                                           *(f"erin-{n}" for n in range(1, 9)), *GROUP_CALLS,
                                           *KEY_DEPLOYS},
    # with a client family the key first used at most an hour before, the key being older
    ("cloudir.key_new_agent_family", "true"): {"erin-3", "erin-4"},
    ("cloudir.key_new_agent_family", "false"): {"erin-1", "erin-2", "erin-5", "erin-6"},
    # the last successful membership change strictly before the call added the caller
    ("cloudir.caller_in_group", "true"): {"grant-devs", "grant-qa"},
    ("cloudir.caller_in_group", "false"): set(GROUP_CALLS) - {"grant-devs", "grant-qa"},
    # the first hour of a principal deploying a function someone else deployed before
    ("cloudir.lambda_new_deployer", "true"): {"gus-1", "gus-arn"},
    ("cloudir.lambda_new_deployer", "false"): {"create-api", "ci-update", "hank-denied",
                                               "gus-late", "gus-west", "gus-own",
                                               "gus-own-update"},
    ("cloudir.family_failing", "bucket"): {"dave-1", "dave-2", "dave-3", "hank-denied"},
    ("cloudir.family_failing", "case"): {"dave-4"},
    ("cloudir.instance_address", "own"): {"agent", "private-own", "public-own", "eip-own",
                                           "nat-own"},
    ("cloudir.instance_address", "outside"): {"private-outside", "public-outside"},
    ("cloudir.instance_address", "service"): {"service", "invoked"},
    ("cloudir.instance_address", "unknown"): {"unknown"},
    # carol's burst, and every discovery call of principals without a baseline (< 4 buckets)
    ("cloudir.discovery_unusual", "true"): {
        *(f"burst-{n}" for n in range(12)), *(f"bob-{n}" for n in range(1, 8)),
        *(f"dave-{n}" for n in range(1, 6)),
        "private-own", "public-own", "eip-own", "nat-own", "private-outside",
        "public-outside", "service", "invoked", "unknown"},
    ("cloudir.discovery_unusual", "false"): {f"quiet-{n}" for n in range(5)},
    ("cloudir.api_family", "s3.amazonaws.com:list"): {
        "bob-1", "bob-3", "bob-4", "bob-5", "bob-6", *(f"quiet-{n}" for n in range(5)),
        "private-own", "public-own", "nat-own", "private-outside", "public-outside",
        "service", "unknown"},
    ("cloudir.api_family", "iam.amazonaws.com:list"): {"burst-10", "burst-11", "dave-1",
                                                       "dave-2", "dave-3", "dave-4"},
    ("cloudir.api_family", "ec2.amazonaws.com:run"): {"launch"},
}  # fmt: skip


def test_computed_fields_take_the_documented_values(tmp_path: Path) -> None:
    case = tmp_path / "case"
    write_timeline(case, field_rows())
    rules = tmp_path / "rules"
    rules.mkdir()
    for n, ((name, value), _) in enumerate(FIELD_VALUES.items()):
        (rules / f"r{n}.yml").write_text(
            f"title: {name} is {value}\nid: 00000000-0000-4000-8000-{n:012d}\n"
            "logsource: {product: aws, service: cloudtrail}\n"
            f"detection:\n  selection:\n    {name}: '{value}'\n  condition: selection\n"
            "level: low\n"
        )
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json",
        "--fail-on", "critical",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    found = {f["title"]: set(f["event_ids"]) for f in result.json()["findings"]}
    for (name, value), expected in FIELD_VALUES.items():
        assert found.get(f"{name} is {value}", set()) == expected, (name, value)
    reference = evaluate(load_rules([rules]), read_timeline(case))
    assert {f.title: f.event_ids for f in reference.values() if f.event_ids} == found
