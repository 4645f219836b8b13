"""Benchmark: CloudTrail S3 delivery files into cloudir's timeline, against the I/O floor.

Why it exists: "how long until I can query the logs?" is the first question in an AWS
incident, and the answer is mostly this one step. This script answers it on data that
looks like a real trail bucket (gzipped `{"Records": [...]}` files under
`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/`), so a slowdown or a memory blow-up in
the parser shows as a number, not as a complaint from the field. It compares cloudir with:

- the floor: `zcat <files> | wc -c`, only decompressing (one zcat process), the work
  every reader of these files has to do before it parses anything;
- plaso (`log2timeline` + `psort`), when it is installed. plaso cannot read S3 delivery
  files, so it gets the same events as LookupEvents-shaped JSONL (its
  `aws_cloudtrail_log` JSONL plugin), which the table says.

Each command is timed on the wall clock; its peak memory is read two ways: the largest
single process (wait4's ru_maxrss, through `/usr/bin/time` or a small Python wrapper) and
the sum of PSS over its whole process tree (sampled from /proc), because the timeline
runs one parser process per core. CPU time used by other processes during a measurement
is recorded too, so a timing taken on a busy machine says so. The data is generated first
(seeded, so runs compare), and generation is not measured.

Usage: .venv/bin/python bench/ingest_cloudtrail.py [--events N] [--files F]
           [--out bench/out] [--workers W] [--keep] [--seed S] [--repeat R]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import multiprocessing
import os
import platform
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

GENERATOR_VERSION = 1
ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
BASE_EPOCH = 1722384000  # 2024-07-31T00:00:00Z
SECONDS_PER_FILE = 120
FILE_WINDOW = 300  # events in a file span the 5 minutes before its delivery stamp
REGIONS = (("us-east-1", 6), ("eu-west-1", 3), ("us-west-2", 2))
GLOBAL_SOURCES = ("iam.amazonaws.com", "signin.amazonaws.com")
TARGET_FLOOR_RATIO = 0.5
TARGET_PLASO_RATIO = 50.0
TARGET_RSS_MIB = 1024
TARGET_RSS_AT_EVENTS = 5_000_000
SAMPLE_SECONDS = 0.2  # the sampler costs ~3% of one CPU at this rate
MIB = 1024 * 1024
BUSY_SHARE = 0.2  # warn when other processes used this many CPU seconds per wall second
# gzip files + the case's copy + Parquet measured ~530 bytes per event; keep a margin
DISK_BYTES_PER_EVENT = 1000


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------

Event = dict[str, Any]


@dataclass(frozen=True)
class FileSpec:
    """One delivery file: where it goes, how many events, and the seed that fills it."""

    index: int
    relpath: str
    region: str
    delivered: int  # epoch seconds of the delivery stamp in the name
    events: int
    seed: int


@dataclass(frozen=True)
class Principal:
    identity: Event
    user_agents: tuple[str, ...]
    ips: tuple[str, ...]
    console: bool = False


@dataclass
class World:
    """The fixed cast every file draws from: principals, resources, addresses."""

    principals: list[Principal]
    weights: list[float]
    buckets: list[str]
    instances: list[str]
    volumes: list[str]
    security_groups: list[str]
    kms_keys: list[str]
    roles: list[str]
    users: list[str]
    secrets: list[str]
    functions: list[str]
    cum_weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cum_weights = _accumulate(self.weights)


def _alnum(rng: random.Random, n: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") -> str:
    return "".join(rng.choices(alphabet, k=n))


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def bucket_resource(bucket: str) -> dict[str, str]:
    """The `resources` entry CloudTrail writes for an S3 bucket."""
    return {"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}


def ingress_params(group: str, cidr: str) -> dict[str, Any]:
    """AuthorizeSecurityGroupIngress's requestParameters for ssh from `cidr`."""
    permission = {
        "ipProtocol": "tcp",
        "fromPort": 22,
        "toPort": 22,
        "groups": {},
        "ipRanges": {"items": [{"cidrIp": cidr}]},
        "ipv6Ranges": {},
        "prefixListIds": {},
    }
    return {"groupId": group, "ipPermissions": {"items": [permission]}}


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def build_world(seed: int) -> World:
    rng = random.Random(f"world-{seed}")
    cli = (
        "aws-cli/2.17.18 md/awscrt#0.20.11 ua/2.0 os/linux#6.1.0-21-amd64 md/arch#x86_64 "
        "lang/python#3.11.9 md/pyimpl#CPython cfg/retry-mode#standard md/command#{cmd}"
    )
    boto = (
        "Boto3/1.34.144 md/Botocore#1.34.144 ua/2.0 os/linux#5.10.219-208.866.amzn2.x86_64 "
        "md/arch#x86_64 lang/python#3.12.4 md/pyimpl#CPython cfg/retry-mode#legacy "
        "Botocore/1.34.144"
    )
    terraform = (
        "APN/1.0 HashiCorp/1.0 Terraform/1.9.2 (+https://www.terraform.io) "
        "terraform-provider-aws/5.59.0 aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5"
    )
    console_ua = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
    )

    def ip() -> str:
        return f"{rng.choice((3, 18, 34, 52, 54, 81, 185, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # noqa: E501

    principals: list[Principal] = []
    weights: list[float] = []
    for name, weight, agents, console in (
        ("alice", 3.0, (cli.format(cmd="s3.cp"), cli.format(cmd="ec2.describe-instances")), False),
        ("bob", 1.5, (console_ua,), True),
        ("deploy-bot", 4.0, (terraform,), False),
        ("backup-svc", 2.0, (boto,), False),
        ("ci-runner", 2.5, (boto, cli.format(cmd="sts.get-caller-identity")), False),
    ):
        key = "AKIA" + _alnum(rng, 16)
        identity = {
            "type": "IAMUser",
            "principalId": "AIDA" + _alnum(rng, 17),
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
            "accountId": ACCOUNT,
            "accessKeyId": key,
            "userName": name,
        }
        if console:
            identity["accessKeyId"] = "ASIA" + _alnum(rng, 16)
            identity["sessionContext"] = {
                "sessionIssuer": {},
                "webIdFederationData": {},
                "attributes": {"creationDate": "2024-07-31T06:12:09Z", "mfaAuthenticated": "true"},
            }
        principals.append(Principal(identity, agents, tuple(ip() for _ in range(3)), console))
        weights.append(weight)

    instances = ["i-0" + _hex(rng, 16) for _ in range(40)]
    for role, session, weight, agents, account in (
        ("app-instance-role", "instance", 8.0, (boto,), ACCOUNT),
        ("lambda-orders-exec", "orders-api", 5.0, (boto,), ACCOUNT),
        (
            "AWSReservedSSO_AdministratorAccess_5e4f3a2b1c0d9e8f",
            "carol@example.com",
            2.0,
            (console_ua,),
            ACCOUNT,
        ),
        ("github-actions-deploy", "GitHubActions", 3.0, (terraform,), ACCOUNT),
        ("OrganizationAccountAccessRole", "audit-session", 0.5, (boto,), OTHER_ACCOUNT),
    ):
        role_id = "AROA" + _alnum(rng, 17)
        for n in range(4 if session == "instance" else 1):
            name = instances[n] if session == "instance" else session
            identity = {
                "type": "AssumedRole",
                "principalId": f"{role_id}:{name}",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{name}",
                "accountId": account,
                "accessKeyId": "ASIA" + _alnum(rng, 16),
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": role_id,
                        "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                        "accountId": ACCOUNT,
                        "userName": role,
                    },
                    "webIdFederationData": {},
                    "attributes": {
                        "creationDate": "2024-07-31T05:58:41Z",
                        "mfaAuthenticated": "false",
                    },
                },
            }
            if session == "instance":
                identity["sessionContext"]["ec2RoleDelivery"] = "2.0"
                ips = (f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",)
            else:
                ips = tuple(ip() for _ in range(2))
            principals.append(Principal(identity, agents, ips, console=agents == (console_ua,)))
            weights.append(weight / (4 if session == "instance" else 1))
    for service, weight in (
        ("cloudtrail.amazonaws.com", 1.0),
        ("ec2.amazonaws.com", 1.0),
        ("autoscaling.amazonaws.com", 0.5),
        ("s3.amazonaws.com", 1.5),
    ):
        identity = {"type": "AWSService", "invokedBy": service}
        principals.append(Principal(identity, (service,), (service,)))
        weights.append(weight)
    root = {
        "type": "Root",
        "principalId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:root",
        "accountId": ACCOUNT,
        "accessKeyId": "",
    }
    principals.append(Principal(root, (console_ua,), (ip(),), console=True))
    weights.append(0.05)
    return World(
        principals=principals,
        weights=weights,
        buckets=[
            "acme-prod-assets",
            "acme-backups-111122223333",
            "acme-logs-archive",
            "acme-data-lake-raw",
            "terraform-state-acme",
        ],
        instances=instances,
        volumes=["vol-0" + _hex(rng, 16) for _ in range(30)],
        security_groups=["sg-0" + _hex(rng, 16) for _ in range(12)],
        kms_keys=[_uuid(rng) for _ in range(6)],
        roles=[
            "app-instance-role",
            "lambda-orders-exec",
            "github-actions-deploy",
            "OrganizationAccountAccessRole",
            "AWSServiceRoleForAutoScaling",
        ],
        users=["alice", "bob", "deploy-bot", "backup-svc", "ci-runner"],
        secrets=["prod/orders/db", "prod/payments/stripe", "ci/github-token"],
        functions=["orders-api", "thumbnailer", "nightly-report"],
    )


class EventMaker:
    """Fills one file: each event template returns (source, name, params, response, extras)."""

    def __init__(self, world: World, rng: random.Random, region: str) -> None:
        self.w = world
        self.rng = rng
        self.region = region
        self.templates: list[Callable[[Principal], tuple[str, str, Any, Any, Event]]] = []
        weights: list[float] = []
        for fn, weight in (
            (self.describe_instances, 9),
            (self.describe_security_groups, 3),
            (self.describe_volumes, 3),
            (self.run_instances, 0.6),
            (self.authorize_ingress, 0.4),
            (self.create_snapshot, 0.8),
            (self.s3_get_object, 14),
            (self.s3_put_object, 7),
            (self.s3_list_buckets, 1.5),
            (self.s3_bucket_acl, 1.5),
            (self.assume_role, 9),
            (self.get_caller_identity, 3),
            (self.kms_decrypt, 8),
            (self.kms_generate_data_key, 4),
            (self.iam_read, 3),
            (self.iam_create_access_key, 0.3),
            (self.iam_attach_policy, 0.3),
            (self.iam_create_user, 0.2),
            (self.console_login, 0.8),
            (self.get_secret_value, 2),
            (self.ssm_get_parameter, 2.5),
            (self.lambda_invoke, 3),
            (self.create_log_stream, 3),
            (self.cloudtrail_lookup, 0.5),
            (self.guardduty_list, 0.5),
        ):
            self.templates.append(fn)
            weights.append(weight)
        self.cum = list(_accumulate(weights))

    # -- one event -------------------------------------------------------------------
    def event(self, when: int) -> Event:
        rng = self.rng
        who = rng.choices(self.w.principals, cum_weights=self.w.cum_weights, k=1)[0]
        template = rng.choices(self.templates, cum_weights=self.cum, k=1)[0]
        source, name, params, response, extra = template(who)
        if source in GLOBAL_SOURCES and self.region != "us-east-1":
            source, name, params, response, extra = self.describe_instances(who)
        agent = rng.choice(who.user_agents)
        ip = rng.choice(who.ips)
        if who.console and "sessionCredentialFromConsole" not in extra:
            agent = "AWS Internal" if rng.random() < 0.3 else agent
        request_id = (
            _uuid(rng) if source != "s3.amazonaws.com" else _alnum(rng, 16, "ABCDEF0123456789")
        )
        event: Event = {
            "eventVersion": "1.10" if source == "s3.amazonaws.com" else "1.09",
            "userIdentity": who.identity,
            "eventTime": _stamp(when),
            "eventSource": source,
            "eventName": name,
            "awsRegion": self.region,
            "sourceIPAddress": ip,
            "userAgent": agent,
            "requestParameters": params,
            "responseElements": response,
            "requestID": request_id,
            "eventID": _uuid(rng),
            "readOnly": extra.pop(
                "_readOnly", name.startswith(("Describe", "Get", "List", "Lookup"))
            ),
            "eventType": extra.pop("_eventType", "AwsApiCall"),
            "managementEvent": extra.pop("_management", True),
            "recipientAccountId": ACCOUNT,
        }
        if rng.random() < 0.03 and who.identity["type"] != "AWSService":
            code = (
                "Client.UnauthorizedOperation" if source == "ec2.amazonaws.com" else "AccessDenied"
            )
            event["errorCode"] = code
            event["errorMessage"] = (
                f"User: {who.identity.get('arn', '')} is not authorized to perform: "
                f"{source.split('.')[0]}:{name} because no identity-based policy allows the "
                f"{source.split('.')[0]}:{name} action"
            )
            event["responseElements"] = None
        event.update(extra)
        event["eventCategory"] = "Management" if event["managementEvent"] else "Data"
        if who.identity["type"] != "AWSService":
            host = _host(source, self.region)
            if isinstance(params, dict) and isinstance(params.get("Host"), str):
                host = params["Host"]
            event["tlsDetails"] = {
                "tlsVersion": "TLSv1.3" if rng.random() < 0.7 else "TLSv1.2",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": host,
            }
            if who.console:
                event["sessionCredentialFromConsole"] = "true"
        return event

    # -- EC2 -------------------------------------------------------------------------
    def describe_instances(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        if rng.random() < 0.5:
            ids = rng.sample(self.w.instances, rng.randint(1, 3))
            params: Event = {
                "instancesSet": {"items": [{"instanceId": i} for i in ids]},
                "filterSet": {},
                "includeAllInstances": False,
            }
        else:
            params = {
                "instancesSet": {},
                "filterSet": {
                    "items": [
                        {
                            "name": "tag:Environment",
                            "valueSet": {"items": [{"value": "production"}]},
                        },
                        {
                            "name": "instance-state-name",
                            "valueSet": {"items": [{"value": "running"}]},
                        },
                    ]
                },
            }
        return "ec2.amazonaws.com", "DescribeInstances", params, None, {}

    def describe_security_groups(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        ids = self.rng.sample(self.w.security_groups, 2)
        params = {
            "securityGroupSet": {},
            "securityGroupIdSet": {"items": [{"groupId": g} for g in ids]},
            "filterSet": {},
        }
        return "ec2.amazonaws.com", "DescribeSecurityGroups", params, None, {}

    def describe_volumes(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        params = {
            "volumeSet": {},
            "filterSet": {
                "items": [
                    {
                        "name": "attachment.instance-id",
                        "valueSet": {"items": [{"value": self.rng.choice(self.w.instances)}]},
                    }
                ]
            },
            "maxResults": 500,
        }
        return "ec2.amazonaws.com", "DescribeVolumes", params, None, {}

    def run_instances(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        instance = "i-0" + _hex(rng, 16)
        subnet = "subnet-0" + _hex(rng, 16)
        params = {
            "instancesSet": {
                "items": [
                    {
                        "imageId": "ami-0" + _hex(rng, 16),
                        "minCount": 1,
                        "maxCount": 1,
                        "keyName": "ops-2024",
                    }
                ]
            },
            "instanceType": rng.choice(("t3.micro", "m6i.large", "c7g.xlarge")),
            "blockDeviceMapping": {
                "items": [
                    {
                        "deviceName": "/dev/xvda",
                        "ebs": {"volumeSize": 30, "deleteOnTermination": True, "volumeType": "gp3"},
                    }
                ]
            },
            "monitoring": {"enabled": False},
            "disableApiTermination": False,
            "subnetId": subnet,
            "iamInstanceProfile": {"name": "app-instance-role"},
            "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2},
        }
        response = {
            "requestId": _uuid(rng),
            "reservationId": "r-0" + _hex(rng, 16),
            "ownerId": ACCOUNT,
            "groupSet": {},
            "instancesSet": {
                "items": [
                    {
                        "instanceId": instance,
                        "instanceState": {"code": 0, "name": "pending"},
                        "privateDnsName": (
                            f"ip-10-0-{rng.randrange(256)}-{rng.randrange(256)}.ec2.internal"
                        ),
                        "subnetId": subnet,
                        "architecture": "x86_64",
                        "rootDeviceType": "ebs",
                        "launchTime": 1722400000000,
                        "placement": {"availabilityZone": self.region + "a", "tenancy": "default"},
                    }
                ]
            },
        }
        extra = {
            "resources": [
                {
                    "accountId": ACCOUNT,
                    "type": "AWS::EC2::Instance",
                    "ARN": f"arn:aws:ec2:{self.region}:{ACCOUNT}:instance/{instance}",
                }
            ]
        }
        return "ec2.amazonaws.com", "RunInstances", params, response, extra

    def authorize_ingress(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        group = rng.choice(self.w.security_groups)
        cidr = "0.0.0.0/0" if rng.random() < 0.2 else f"10.{rng.randrange(256)}.0.0/16"
        params = ingress_params(group, cidr)
        response = {
            "requestId": _uuid(rng),
            "_return": True,
            "securityGroupRuleSet": {
                "items": [
                    {
                        "groupOwnerId": ACCOUNT,
                        "groupId": group,
                        "securityGroupRuleId": "sgr-0" + _hex(rng, 16),
                        "isEgress": False,
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "cidrIpv4": cidr,
                    }
                ]
            },
        }
        return "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", params, response, {}

    def create_snapshot(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        volume = rng.choice(self.w.volumes)
        params = {"volumeId": volume, "description": "nightly backup"}
        response = {
            "requestId": _uuid(rng),
            "snapshotId": "snap-0" + _hex(rng, 16),
            "volumeId": volume,
            "status": "pending",
            "startTime": 1722400000000,
            "progress": "",
            "ownerId": ACCOUNT,
            "volumeSize": 30,
            "encrypted": True,
        }
        return "ec2.amazonaws.com", "CreateSnapshot", params, response, {}

    # -- S3 --------------------------------------------------------------------------
    def _s3_object(self, name: str, read_only: bool) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        bucket = rng.choice(self.w.buckets)
        key = (
            f"{rng.choice(('images', 'exports', 'db', 'logs/app'))}/2024/07/31/"
            f"{_hex(rng, 12)}.{rng.choice(('jpg', 'parquet', 'gz', 'json'))}"
        )
        params = {
            "bucketName": bucket,
            "Host": f"{bucket}.s3.{self.region}.amazonaws.com",
            "key": key,
        }
        if not read_only:
            params["x-amz-server-side-encryption"] = "aws:kms"
        response = (
            None
            if read_only
            else {"x-amz-server-side-encryption": "aws:kms", "x-amz-version-id": _alnum(rng, 32)}
        )
        size = rng.randrange(200, 4_000_000)
        extra: Event = {
            "additionalEventData": {
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0 if read_only else size,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": _alnum(rng, 76, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789+/"),
                "bytesTransferredOut": size if read_only else 0,
            },
            "resources": [
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                bucket_resource(bucket),
            ],
            "_readOnly": read_only,
            "_management": False,
        }
        return "s3.amazonaws.com", name, params, response, extra

    def s3_get_object(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        return self._s3_object("GetObject", True)

    def s3_put_object(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        return self._s3_object("PutObject", False)

    def s3_list_buckets(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        params = {"Host": f"s3.{self.region}.amazonaws.com"}
        return (
            "s3.amazonaws.com",
            "ListBuckets",
            params,
            None,
            {
                "additionalEventData": {
                    "SignatureVersion": "SigV4",
                    "AuthenticationMethod": "AuthHeader",
                }
            },
        )

    def s3_bucket_acl(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        bucket = self.rng.choice(self.w.buckets)
        params = {"bucketName": bucket, "Host": f"{bucket}.s3.amazonaws.com", "acl": ""}
        extra = {"resources": [bucket_resource(bucket)]}
        return "s3.amazonaws.com", "GetBucketAcl", params, None, extra

    # -- STS, KMS --------------------------------------------------------------------
    def assume_role(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        role = rng.choice(self.w.roles)
        session = (
            rng.choice(self.w.instances) if role == "app-instance-role" else f"s-{_hex(rng, 8)}"
        )
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        params = {"roleArn": role_arn, "roleSessionName": session, "durationSeconds": 3600}
        response = {
            "credentials": {
                "accessKeyId": "ASIA" + _alnum(rng, 16),
                "sessionToken": _alnum(
                    rng, 120, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+="
                ),
                "expiration": "Jul 31, 2024, 3:05:12 PM",
            },
            "assumedRoleUser": {
                "assumedRoleId": f"AROA{_alnum(rng, 17)}:{session}",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
            },
        }
        extra = {
            "resources": [{"accountId": ACCOUNT, "type": "AWS::IAM::Role", "ARN": role_arn}],
            "sharedEventID": _uuid(rng),
            "_readOnly": True,
        }
        return "sts.amazonaws.com", "AssumeRole", params, response, extra

    def get_caller_identity(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        return "sts.amazonaws.com", "GetCallerIdentity", None, None, {}

    def kms_decrypt(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        key = rng.choice(self.w.kms_keys)
        bucket = rng.choice(self.w.buckets)
        params = {
            "encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{_hex(rng, 12)}"},
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }
        extra = (
            {
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::KMS::Key",
                        "ARN": f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{key}",
                    }
                ],
                "sharedEventID": _uuid(rng),
            }
            if rng.random() < 0.5
            else {
                "resources": [
                    {
                        "accountId": ACCOUNT,
                        "type": "AWS::KMS::Key",
                        "ARN": f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{key}",
                    }
                ]
            }
        )
        return "kms.amazonaws.com", "Decrypt", params, None, extra

    def kms_generate_data_key(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        key = self.rng.choice(self.w.kms_keys)
        arn = f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{key}"
        params = {
            "keyId": arn,
            "keySpec": "AES_256",
            "encryptionContext": {"aws:ebs:id": self.rng.choice(self.w.volumes)},
        }
        extra = {"resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": arn}]}
        return "kms.amazonaws.com", "GenerateDataKey", params, None, extra

    # -- IAM, sign-in ----------------------------------------------------------------
    def iam_read(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0:
            return "iam.amazonaws.com", "ListUsers", {"maxItems": 100}, None, {}
        if choice == 1:
            return "iam.amazonaws.com", "GetUser", {"userName": rng.choice(self.w.users)}, None, {}
        if choice == 2:
            return "iam.amazonaws.com", "GetRole", {"roleName": rng.choice(self.w.roles)}, None, {}
        return (
            "iam.amazonaws.com",
            "ListAttachedRolePolicies",
            {"roleName": rng.choice(self.w.roles)},
            None,
            {},
        )

    def iam_create_access_key(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        user = self.rng.choice(self.w.users)
        response = {
            "accessKey": {
                "userName": user,
                "accessKeyId": "AKIA" + _alnum(self.rng, 16),
                "status": "Active",
                "createDate": "Jul 31, 2024, 1:04:55 PM",
            }
        }
        return "iam.amazonaws.com", "CreateAccessKey", {"userName": user}, response, {}

    def iam_attach_policy(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        params = {
            "userName": self.rng.choice(self.w.users),
            "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
        }
        return "iam.amazonaws.com", "AttachUserPolicy", params, None, {}

    def iam_create_user(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        name = "svc-" + _hex(self.rng, 6)
        params = {"userName": name, "tags": [{"key": "team", "value": "platform"}]}
        response = {
            "user": {
                "path": "/",
                "userName": name,
                "userId": "AIDA" + _alnum(self.rng, 17),
                "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
                "createDate": "Jul 31, 2024, 1:04:51 PM",
                "tags": [{"key": "team", "value": "platform"}],
            }
        }
        return "iam.amazonaws.com", "CreateUser", params, response, {}

    def console_login(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        if not who.console:  # people sign in to the console, programs do not
            return self.describe_instances(who)
        ok = self.rng.random() > 0.1
        extra: Event = {
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home?state=hashArgs%23",
                "MobileVersion": "No",
                "MFAIdentifier": f"arn:aws:iam::{ACCOUNT}:mfa/phone",
                "MFAUsed": "Yes",
            },
            "_eventType": "AwsConsoleSignIn",
            "_readOnly": False,
        }
        if not ok:
            extra["errorMessage"] = "Failed authentication"
        return (
            "signin.amazonaws.com",
            "ConsoleLogin",
            None,
            {"ConsoleLogin": "Success" if ok else "Failure"},
            extra,
        )

    # -- the rest --------------------------------------------------------------------
    def get_secret_value(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        secret = self.rng.choice(self.w.secrets)
        return "secretsmanager.amazonaws.com", "GetSecretValue", {"secretId": secret}, None, {}

    def ssm_get_parameter(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        params = {
            "name": f"/prod/orders/{self.rng.choice(('db_host', 'db_user', 'api_url'))}",
            "withDecryption": self.rng.random() < 0.5,
        }
        return "ssm.amazonaws.com", "GetParameter", params, None, {}

    def lambda_invoke(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        fn = self.rng.choice(self.w.functions)
        arn = f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{fn}"
        params = {"functionName": arn, "invocationType": "RequestResponse", "logType": "None"}
        extra = {
            "additionalEventData": {"functionVersion": f"{arn}:$LATEST"},
            "resources": [{"accountId": ACCOUNT, "type": "AWS::Lambda::Function", "ARN": arn}],
            "_management": False,
            "_readOnly": False,
        }
        return "lambda.amazonaws.com", "Invoke", params, None, extra

    def create_log_stream(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        fn = self.rng.choice(self.w.functions)
        params = {
            "logGroupName": f"/aws/lambda/{fn}",
            "logStreamName": f"2024/07/31/[$LATEST]{_hex(self.rng, 32)}",
        }
        return "logs.amazonaws.com", "CreateLogStream", params, None, {}

    def cloudtrail_lookup(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        params = {
            "lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}],
            "maxResults": 50,
        }
        return "cloudtrail.amazonaws.com", "LookupEvents", params, None, {}

    def guardduty_list(self, who: Principal) -> tuple[str, str, Any, Any, Event]:
        return "guardduty.amazonaws.com", "ListDetectors", {"maxResults": 50}, None, {}


def _accumulate(values: Sequence[float]) -> list[float]:
    total = 0.0
    out = []
    for v in values:
        total += v
        out.append(total)
    return out


def _host(source: str, region: str) -> str:
    service = source.removesuffix(".amazonaws.com")
    if service in ("iam", "signin"):
        return f"{service}.amazonaws.com"
    return f"{service}.{region}.amazonaws.com"


def plan_files(events: int, files: int, seed: int) -> list[FileSpec]:
    """Deterministic layout: which file gets how many events, in which region and minute."""
    rng = random.Random(f"plan-{seed}")
    regions = [r for r, _ in REGIONS]
    region_weights = [w for _, w in REGIONS]
    raw = [rng.uniform(0.3, 1.7) for _ in range(files)]
    total = sum(raw)
    counts = [max(1, int(events * w / total)) for w in raw]
    diff = events - sum(counts)
    i = 0
    while diff != 0:  # hand out (or take back) the rounding remainder one event at a time
        step = 1 if diff > 0 else -1
        if counts[i % files] + step >= 1:
            counts[i % files] += step
            diff -= step
        i += 1
    specs = []
    for index, count in enumerate(counts):
        region = rng.choices(regions, weights=region_weights, k=1)[0]
        delivered = BASE_EPOCH + index * SECONDS_PER_FILE
        delivered -= delivered % 60
        stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(delivered))
        day = time.strftime("%Y/%m/%d", time.gmtime(delivered))
        suffix = _alnum(rng, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        relpath = (
            f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{day}/"
            f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{suffix}.json.gz"
        )
        specs.append(FileSpec(index, relpath, region, delivered, count, rng.getrandbits(63)))
    return specs


_WORLD: World | None = None


def _init_worker(seed: int) -> None:
    global _WORLD
    _WORLD = build_world(seed)


def file_events(spec: FileSpec, world: World) -> list[Event]:
    rng = random.Random(spec.seed)
    maker = EventMaker(world, rng, spec.region)
    times = sorted(spec.delivered - rng.randrange(FILE_WINDOW) for _ in range(spec.events))
    return [maker.event(when) for when in times]


def write_file(job: tuple[FileSpec, str]) -> tuple[int, int]:
    """Runs in a pool worker: build one file's events, write it gzipped; returns sizes."""
    spec, root = job
    assert _WORLD is not None
    body = msgspec.json.encode({"Records": file_events(spec, _WORLD)})
    path = Path(root) / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(body, compresslevel=6, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return len(body), len(data)


def write_plaso_jsonl(gen: Path, specs: list[FileSpec], out_dir: Path) -> int:
    """The same events as LookupEvents JSONL (what plaso's aws_cloudtrail_log plugin reads)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for spec in specs:
        with gzip.open(gen / spec.relpath, "rb") as fh:
            records = msgspec.json.decode(fh.read())["Records"]
        name = Path(spec.relpath).name.removesuffix(".json.gz") + ".jsonl"
        with open(out_dir / name, "wb") as out:
            for record in records:
                when = time.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
                identity = record.get("userIdentity") or {}
                line = {
                    "EventId": record["eventID"],
                    "EventName": record["eventName"],
                    "ReadOnly": "true" if record.get("readOnly") else "false",
                    "AccessKeyId": identity.get("accessKeyId", ""),
                    "EventTime": time.strftime("%Y-%m-%d %H:%M:%S+00:00", when),
                    "EventSource": record["eventSource"],
                    "Username": identity.get("userName")
                    or str(identity.get("arn", "")).rpartition("/")[2],
                    "Resources": [
                        {
                            "ResourceType": r.get("type", ""),
                            "ResourceName": r.get("ARN", "").rpartition(":")[2],
                        }
                        for r in record.get("resources", [])
                    ],
                    "CloudTrailEvent": msgspec.json.encode(record).decode(),
                }
                out.write(msgspec.json.encode(line) + b"\n")
                written += 1
    return written


def generate(root: Path, specs: list[FileSpec], seed: int, workers: int) -> tuple[int, int]:
    """Writes every file under root; returns (decompressed bytes, compressed bytes)."""
    jobs = [(spec, str(root)) for spec in specs]
    raw = gz = 0
    done = 0
    started = time.monotonic()
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(seed,)) as pool:
        for body, data in pool.imap_unordered(write_file, jobs, chunksize=4):
            raw += body
            gz += data
            done += 1
            if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
                _log(
                    f"  generated {done}/{len(jobs)} files "
                    f"({raw / MIB:,.0f} MiB JSON, {time.monotonic() - started:.1f} s)"
                )
    return raw, gz


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------

# Fallback when /usr/bin/time is missing: a fresh Python whose only child is the command,
# so RUSAGE_CHILDREN is that command's own subtree.
_RUSAGE_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    out.write(f"{r.ru_maxrss} {r.ru_utime} {r.ru_stime}\\n")
sys.exit(code)
"""


@dataclass
class Measured:
    seconds: float
    returncode: int
    max_rss_kib: int | None  # the largest single process (wait4 ru_maxrss)
    tree_pss_kib: int | None  # peak of the summed PSS of the whole tree, sampled
    cpu_seconds: float | None  # user + system, the whole subtree
    stdout: str = ""
    stderr: str = ""
    runs_seconds: list[float] = field(default_factory=list)
    other_cpu_seconds: float | None = None  # CPU the rest of the machine used meanwhile


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all CPUs have spent busy since boot (steal included), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _memory_kib(pid: int) -> int:
    """PSS (shared pages split between their users) where the kernel gives it, else RSS."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", b"Pss:"), (f"/proc/{pid}/status", b"VmRSS:")):
        try:
            with open(path, "rb") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


class TreeSampler(threading.Thread):
    """Samples the summed memory of a process tree until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.available = Path("/proc/self/stat").exists()
        self._done = threading.Event()

    def run(self) -> None:
        while self.available and not self._done.is_set():
            total = sum(_memory_kib(pid) for pid in _proc_tree(self.pid))
            self.peak_kib = max(self.peak_kib, total)
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_measured(argv: list[str], cwd: Path | None = None) -> Measured:
    """Run argv; wall time, largest-process and whole-tree peak memory, CPU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".rusage", delete=False) as tmp:
        report = Path(tmp.name)
    time_bin = shutil.which("time", path="/usr/bin:/bin")
    if time_bin:
        wrapped = [time_bin, "-f", "%M %U %S", "-o", str(report), *argv]
    else:
        wrapped = [sys.executable, "-c", _RUSAGE_WRAPPER, str(report), *argv]
    busy_before = _busy_cpu_seconds()
    self_before = _own_cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.Popen(
        wrapped, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    busy_after = _busy_cpu_seconds()
    sampler.stop()
    own = _own_cpu_seconds() - self_before  # this script, its memory sampler included
    max_rss = cpu = None
    try:
        fields = report.read_text().split()[-3:]  # time -o may prefix "Command exited..."
        max_rss = int(fields[0])
        cpu = float(fields[1]) + float(fields[2])
    except (OSError, ValueError, IndexError):
        pass
    report.unlink(missing_ok=True)
    other = None
    if busy_before is not None and busy_after is not None and cpu is not None:
        other = max(0.0, busy_after - busy_before - cpu - own)
    return Measured(
        seconds=seconds,
        returncode=proc.returncode,
        max_rss_kib=max_rss,
        tree_pss_kib=sampler.peak_kib or None,
        cpu_seconds=cpu,
        stdout=out,
        stderr=err,
        other_cpu_seconds=other,
    )


def check(measured: Measured, what: str, argv: list[str]) -> None:
    if measured.returncode != 0:
        _log(f"FAILED ({measured.returncode}): {shlex.join(argv)}")
        _log(measured.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit code {measured.returncode}")


def run_repeated(
    argv: list[str],
    what: str,
    repeat: int,
    cwd: Path | None = None,
    after: Callable[[Measured], None] | None = None,
) -> Measured:
    """The median run by wall time, with the highest memory seen in any run."""
    runs = []
    for n in range(repeat):
        if repeat > 1:
            _log(f"  run {n + 1}/{repeat}")
        m = run_measured(argv, cwd=cwd)
        check(m, what, argv)
        if after:
            after(m)
        runs.append(m)
    median = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    rss = [m.max_rss_kib for m in runs if m.max_rss_kib]
    pss = [m.tree_pss_kib for m in runs if m.tree_pss_kib]
    median.max_rss_kib = max(rss) if rss else None
    median.tree_pss_kib = max(pss) if pss else None
    median.runs_seconds = [m.seconds for m in runs]
    return median


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    tool: str
    command: str
    seconds: float | None = None
    events_per_s: float | None = None
    ratio_to_floor: float | None = None
    max_rss_mib: float | None = None
    tree_pss_mib: float | None = None
    cpu_seconds: float | None = None
    note: str = ""
    runs_seconds: list[float] = field(default_factory=list)
    other_cpu_seconds: float | None = None

    @classmethod
    def of(cls, tool: str, argv: list[str], m: Measured, events: int, note: str = "") -> Row:
        return cls(
            runs_seconds=[round(s, 3) for s in m.runs_seconds],
            other_cpu_seconds=(
                round(m.other_cpu_seconds, 2) if m.other_cpu_seconds is not None else None
            ),
            tool=tool,
            command=shlex.join(argv),
            seconds=round(m.seconds, 3),
            events_per_s=round(events / m.seconds) if m.seconds > 0 else None,
            max_rss_mib=round(m.max_rss_kib / 1024, 1) if m.max_rss_kib else None,
            tree_pss_mib=round(m.tree_pss_kib / 1024, 1) if m.tree_pss_kib else None,
            cpu_seconds=round(m.cpu_seconds, 2) if m.cpu_seconds is not None else None,
            note=note,
        )


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    status: str  # pass, FAIL, n/a


@dataclass
class Report:
    machine: dict[str, Any]
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cloudir_bin() -> str:
    beside = Path(sys.executable).parent / "cloudir"
    if beside.exists():
        return str(beside)
    found = shutil.which("cloudir")
    if not found:
        raise SystemExit("cloudir is not installed; run `make venv` and use .venv/bin/python")
    return found


def machine_info(cloudir: str) -> dict[str, Any]:
    version = subprocess.run([cloudir, "--version"], capture_output=True, text=True).stdout
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_mib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cloudir_version": version.strip().removeprefix("cloudir "),
        "time_wrapper": shutil.which("time", path="/usr/bin:/bin") or "python getrusage",
    }


def ensure_data(out: Path, events: int, files: int, seed: int, workers: int) -> tuple[Path, dict]:
    """The generated tree for these parameters, reused when a kept run left it complete."""
    gen = out / f"gen-{events}-{files}-s{seed}"
    manifest_path = out / f"{gen.name}.manifest.json"
    wanted = {"generator": GENERATOR_VERSION, "events": events, "files": files, "seed": seed}
    if manifest_path.exists() and gen.is_dir():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            _log(f"reusing generated data in {gen}")
            return gen, manifest
    shutil.rmtree(gen, ignore_errors=True)
    manifest_path.unlink(missing_ok=True)
    _log(f"generating {events:,} events in {files:,} files under {gen} ({workers} processes)")
    started = time.monotonic()
    specs = plan_files(events, files, seed)
    raw, gz = generate(gen, specs, seed, workers)
    manifest = dict(
        wanted,
        json_bytes=raw,
        gzip_bytes=gz,
        generation_seconds=round(time.monotonic() - started, 1),
    )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    _log(
        f"generated in {manifest['generation_seconds']} s: {raw / MIB:,.0f} MiB JSON, "
        f"{gz / MIB:,.0f} MiB gzip, {raw / events:,.0f} bytes per event"
    )
    return gen, manifest


def measure_floor(gen: Path, events: int, repeat: int) -> tuple[Row, int]:
    listing = gen.parent / f"{gen.name}.files"
    names = sorted(p.relative_to(gen).as_posix() for p in gen.rglob("*.json.gz"))
    listing.write_bytes(b"".join(n.encode() + b"\0" for n in names))
    pipeline = f"xargs -0 zcat -- < {shlex.quote(str(listing))} | wc -c"
    argv = ["sh", "-c", pipeline]
    try:
        m = run_repeated(argv, "the zcat floor", repeat, cwd=gen)
    finally:
        listing.unlink()
    decompressed = int(m.stdout.split()[0])
    note = f"zcat {len(names)} files | wc -c (xargs splits the list), {decompressed:,} bytes"
    return Row.of("floor: zcat | wc -c", argv, m, events, note), decompressed


def count_rows(cloudir: str, case: Path) -> tuple[int, int, int]:
    summary = json.loads((case / "timeline" / "summary.json").read_text())
    sql = "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM timeline"
    result = subprocess.run(
        [cloudir, "query", "--case", str(case), sql, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    counted = json.loads(result.stdout)[0]
    return int(summary["rows"]), int(counted["n"]), int(counted["ids"])


def measure_plaso(gen: Path, events: int, files: int, seed: int, work: Path) -> list[Row]:
    """log2timeline + psort on the same events, when plaso is installed."""
    l2t = shutil.which("log2timeline.py") or shutil.which("log2timeline")
    psort = shutil.which("psort.py") or shutil.which("psort")
    if not (l2t and psort):
        return [
            Row(tool="plaso", command="", note="not installed (log2timeline/psort not on PATH)")
        ]
    _log("plaso found: writing the events as LookupEvents JSONL for it (not timed)")
    shutil.rmtree(work, ignore_errors=True)  # psort refuses to overwrite an earlier output
    jsonl_dir = work / "jsonl"
    written = write_plaso_jsonl(gen, plan_files(events, files, seed), jsonl_dir)
    if written != events:
        raise SystemExit(f"plaso input has {written} events, expected {events}")
    storage = work / "bench.plaso"
    output = work / "psort.jsonl"
    note = (
        "input: the same events as LookupEvents JSONL (plaso cannot read S3 "
        '{"Records":[...]} files), parser jsonl/aws_cloudtrail_log'
    )
    l2t_argv = [
        l2t,
        "--status_view",
        "none",
        "--unattended",
        "--parsers",
        "jsonl/aws_cloudtrail_log",
        "--storage_file",
        str(storage),
        str(jsonl_dir),
    ]
    m1 = run_measured(l2t_argv)
    check(m1, "log2timeline", l2t_argv)
    psort_argv = [
        psort,
        "--status_view",
        "none",
        "-o",
        "json_line",
        "-w",
        str(output),
        str(storage),
    ]
    m2 = run_measured(psort_argv)
    check(m2, "psort", psort_argv)
    with open(output, "rb") as fh:
        produced = sum(1 for _ in fh)
    total = Measured(
        seconds=m1.seconds + m2.seconds,
        returncode=0,
        max_rss_kib=max(m1.max_rss_kib or 0, m2.max_rss_kib or 0) or None,
        tree_pss_kib=max(m1.tree_pss_kib or 0, m2.tree_pss_kib or 0) or None,
        cpu_seconds=(m1.cpu_seconds or 0) + (m2.cpu_seconds or 0),
    )
    return [
        Row.of("plaso log2timeline", l2t_argv, m1, events, note),
        Row.of("plaso psort", psort_argv, m2, events, f"{produced:,} lines written"),
        Row.of("plaso total", [], total, events, "log2timeline + psort"),
    ]


def evaluate(report: Report, events: int) -> None:
    rows = {r.tool: r for r in report.rows}
    floor = rows["floor: zcat | wc -c"]
    timeline = rows["cloudir timeline"]
    for row in report.rows:
        if row.events_per_s and floor.events_per_s:
            row.ratio_to_floor = round(row.events_per_s / floor.events_per_s, 3)
    ratio = timeline.ratio_to_floor or 0
    report.targets.append(
        Target(
            "cloudir timeline vs floor",
            f">= {TARGET_FLOOR_RATIO}x floor events/s",
            f"{ratio:.2f}x",
            "pass" if ratio >= TARGET_FLOOR_RATIO else "FAIL",
        )
    )
    plaso = rows.get("plaso total")
    if plaso and plaso.events_per_s and timeline.events_per_s:
        speedup = timeline.events_per_s / plaso.events_per_s
        report.targets.append(
            Target(
                "cloudir timeline vs plaso",
                f">= {TARGET_PLASO_RATIO:.0f}x plaso events/s",
                f"{speedup:.1f}x",
                "pass" if speedup >= TARGET_PLASO_RATIO else "FAIL",
            )
        )
    else:
        report.targets.append(
            Target(
                "cloudir timeline vs plaso",
                f">= {TARGET_PLASO_RATIO:.0f}x plaso events/s",
                "plaso not installed",
                "n/a",
            )
        )
    peak = max(timeline.tree_pss_mib or 0, timeline.max_rss_mib or 0)
    at_size = events >= TARGET_RSS_AT_EVENTS
    report.targets.append(
        Target(
            "cloudir timeline peak memory",
            f"< {TARGET_RSS_MIB} MiB at {TARGET_RSS_AT_EVENTS:,} events "
            "(max of largest process RSS, tree PSS)",
            f"{peak:,.0f} MiB at {events:,} events",
            ("pass" if peak < TARGET_RSS_MIB else "FAIL")
            if at_size
            else f"n/a (run --events {TARGET_RSS_AT_EVENTS})",
        )
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: Report) -> None:
    """The results as tables on stdout, then each row's note and exact command line."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=120)
    p = report.params
    title = (
        f"{p['events']:,} CloudTrail events in {p['files']:,} files; "
        f"{p['decompressed_bytes'] / MIB:,.0f} MiB JSON, {p['gzip_bytes'] / MIB:,.0f} MiB "
        f"gzip; {report.machine['nproc']} CPUs"
    )
    table = Table(title=title)
    for name in (
        "tool",
        "seconds",
        "events/s",
        "x floor",
        "peak RSS MiB\n(largest proc)",
        "peak PSS MiB\n(whole tree)",
        "CPU s",
    ):
        table.add_column(name, justify="left" if name == "tool" else "right")
    for n, r in enumerate(report.rows, 1):
        table.add_row(
            Text(f"{r.tool} [{n}]"),
            _fmt(r.seconds, ".2f"),
            _fmt(r.events_per_s, ",.0f"),
            _fmt(r.ratio_to_floor, ".2f"),
            _fmt(r.max_rss_mib, ",.0f"),
            _fmt(r.tree_pss_mib, ",.0f"),
            _fmt(r.cpu_seconds, ".1f"),
        )
    console.print(table)
    for n, r in enumerate(report.rows, 1):
        console.print(Text(f"[{n}] {r.note}"))
        if len(r.runs_seconds) > 1:
            runs = ", ".join(f"{x:.2f}" for x in r.runs_seconds)
            console.print(Text(f"    median of {len(r.runs_seconds)} runs: {runs} s"))
        if r.command:
            console.print(Text(f"    $ {r.command}"), soft_wrap=True)
        other = r.other_cpu_seconds
        if other is not None and r.seconds and other > BUSY_SHARE * r.seconds:
            console.print(
                Text(
                    f"    warning: other processes used {other:.1f} CPU s during these "
                    f"{r.seconds:.1f} s; the timing is noisy (try --repeat 3)"
                )
            )
    targets = Table(title="targets")
    for name in ("target", "goal", "measured", "status"):
        targets.add_column(name)
    for t in report.targets:
        targets.add_row(t.name, t.goal, t.measured, t.status)
    console.print(targets)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=400_000, help="events to generate")
    parser.add_argument("--files", type=int, default=200, help="delivery files to spread them over")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/out"), help="work and result folder"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="passed to `cloudir timeline --workers` (default: cloudir's own)",
    )
    parser.add_argument("--keep", action="store_true", help="keep generated data and the case")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the floor and the timeline this many times; report the median run",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.files < 1 or args.repeat < 1:
        parser.error("--events, --files and --repeat must be positive")
    files = min(args.files, args.events)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cloudir = _cloudir_bin()
    machine = machine_info(cloudir)
    gen_workers = os.cpu_count() or 1

    need = args.events * DISK_BYTES_PER_EVENT
    free = shutil.disk_usage(out).free
    if free < need:
        raise SystemExit(
            f"{out}: {free / 2**30:.1f} GiB free, this run needs about {need / 2**30:.1f} GiB "
            "(generated files, the case's copy of them, and the timeline)"
        )
    gen, manifest = ensure_data(out, args.events, files, args.seed, gen_workers)
    case = out / f"case-{args.events}-{files}"
    plaso_work = out / f"plaso-{args.events}-{files}"
    try:
        report = Report(
            machine=machine,
            params={
                "events": args.events,
                "files": files,
                "seed": args.seed,
                "workers": args.workers or None,
                "repeat": args.repeat,
                "decompressed_bytes": manifest["json_bytes"],
                "gzip_bytes": manifest["gzip_bytes"],
                "bytes_per_event": round(manifest["json_bytes"] / args.events),
                "generator_version": GENERATOR_VERSION,
            },
        )

        _log("measuring the floor: zcat | wc -c")
        floor, decompressed = measure_floor(gen, args.events, args.repeat)
        if decompressed != manifest["json_bytes"]:
            raise SystemExit(
                f"zcat gave {decompressed} bytes, generator wrote {manifest['json_bytes']}"
            )
        report.rows.append(floor)

        shutil.rmtree(case, ignore_errors=True)
        capture_argv = [cloudir, "capture", "files", "--case", str(case), str(gen)]
        _log("measuring cloudir capture files (copies, fsyncs and hashes each file)")
        m = run_measured(capture_argv)
        check(m, "cloudir capture files", capture_argv)
        report.rows.append(
            Row.of(
                "cloudir capture files",
                capture_argv,
                m,
                args.events,
                "copy + SHA-256 + custody entry per file; not in the ratio",
            )
        )

        timeline_argv = [cloudir, "timeline", "--case", str(case)]
        if args.workers:
            timeline_argv += ["--workers", str(args.workers)]
        _log("measuring cloudir timeline")

        def rows_match(_: Measured) -> None:
            summary_rows, counted, distinct = count_rows(cloudir, case)
            if not summary_rows == counted == distinct == args.events:
                raise SystemExit(
                    f"ROW COUNT MISMATCH: generated {args.events} events; timeline summary "
                    f"says {summary_rows}, count(*) {counted}, distinct event_id {distinct}"
                )

        m = run_repeated(timeline_argv, "cloudir timeline", args.repeat, after=rows_match)
        report.rows.append(
            Row.of(
                "cloudir timeline",
                timeline_argv,
                m,
                args.events,
                f"{args.events:,} rows checked after each run "
                "(summary.json rows, count(*), count(DISTINCT event_id))",
            )
        )

        report.rows.extend(measure_plaso(gen, args.events, files, args.seed, plaso_work))
        evaluate(report, args.events)
        print_report(report)
        result_path = out / "ingest_cloudtrail.json"
        result = asdict(report)
        result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result_path.write_text(json.dumps(result, indent=2) + "\n")
        _log(f"results written to {result_path}")
    finally:
        if args.keep:
            _log(f"kept {gen} and {case}")
        else:
            shutil.rmtree(gen, ignore_errors=True)
            (out / f"{gen.name}.manifest.json").unlink(missing_ok=True)
            shutil.rmtree(case, ignore_errors=True)
            shutil.rmtree(plaso_work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
