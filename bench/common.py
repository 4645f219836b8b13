"""What the benchmarks share: a synthetic AWS account's CloudTrail events, and the way a
command is run and measured.

`ingest_cloudtrail.py` writes these events as S3 delivery files and `detect.py` turns them
into timeline rows, so both measure cloudir on the same account; every benchmark runs its
commands through `run_measured`, so their wall times and peak memory are counted alike.
bench/ is on sys.path when a benchmark runs as a script, so they `import common`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
BASE_EPOCH = 1722384000  # 2024-07-31T00:00:00Z
REGIONS = (("us-east-1", 6), ("eu-west-1", 3), ("us-west-2", 2))
GLOBAL_SOURCES = ("iam.amazonaws.com", "signin.amazonaws.com")
SAMPLE_SECONDS = 0.2  # the sampler costs ~3% of one CPU at this rate
# Reading a process's PSS makes the kernel walk its page tables: ~1 ms for cloudir's
# parsers, ~80 ms for a Spark JVM. The PSS sum is taken less often when it costs more than
# this share of one CPU, so measuring a JVM does not take a core's third away from it.
PSS_CPU_SHARE = 0.02
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Generation: the account and its events
# --------------------------------------------------------------------------------------

Event = dict[str, Any]


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
        self.cum_weights = cumulative(self.weights)


def random_alnum(
    rng: random.Random, n: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
) -> str:
    return "".join(rng.choices(alphabet, k=n))


def random_hex(rng: random.Random, n: int) -> str:
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


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso_stamp(epoch: int) -> str:
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
        key = "AKIA" + random_alnum(rng, 16)
        identity = {
            "type": "IAMUser",
            "principalId": "AIDA" + random_alnum(rng, 17),
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
            "accountId": ACCOUNT,
            "accessKeyId": key,
            "userName": name,
        }
        if console:
            identity["accessKeyId"] = "ASIA" + random_alnum(rng, 16)
            identity["sessionContext"] = {
                "sessionIssuer": {},
                "webIdFederationData": {},
                "attributes": {"creationDate": "2024-07-31T06:12:09Z", "mfaAuthenticated": "true"},
            }
        principals.append(Principal(identity, agents, tuple(ip() for _ in range(3)), console))
        weights.append(weight)

    instances = ["i-0" + random_hex(rng, 16) for _ in range(40)]
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
        role_id = "AROA" + random_alnum(rng, 17)
        for n in range(4 if session == "instance" else 1):
            name = instances[n] if session == "instance" else session
            identity = {
                "type": "AssumedRole",
                "principalId": f"{role_id}:{name}",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{name}",
                "accountId": account,
                "accessKeyId": "ASIA" + random_alnum(rng, 16),
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
        volumes=["vol-0" + random_hex(rng, 16) for _ in range(30)],
        security_groups=["sg-0" + random_hex(rng, 16) for _ in range(12)],
        kms_keys=[random_uuid(rng) for _ in range(6)],
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
        self.cum = list(cumulative(weights))

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
            random_uuid(rng)
            if source != "s3.amazonaws.com"
            else random_alnum(rng, 16, "ABCDEF0123456789")
        )
        event: Event = {
            "eventVersion": "1.10" if source == "s3.amazonaws.com" else "1.09",
            "userIdentity": who.identity,
            "eventTime": iso_stamp(when),
            "eventSource": source,
            "eventName": name,
            "awsRegion": self.region,
            "sourceIPAddress": ip,
            "userAgent": agent,
            "requestParameters": params,
            "responseElements": response,
            "requestID": request_id,
            "eventID": random_uuid(rng),
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
            host = service_host(source, self.region)
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
        instance = "i-0" + random_hex(rng, 16)
        subnet = "subnet-0" + random_hex(rng, 16)
        params = {
            "instancesSet": {
                "items": [
                    {
                        "imageId": "ami-0" + random_hex(rng, 16),
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
            "requestId": random_uuid(rng),
            "reservationId": "r-0" + random_hex(rng, 16),
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
            "requestId": random_uuid(rng),
            "_return": True,
            "securityGroupRuleSet": {
                "items": [
                    {
                        "groupOwnerId": ACCOUNT,
                        "groupId": group,
                        "securityGroupRuleId": "sgr-0" + random_hex(rng, 16),
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
            "requestId": random_uuid(rng),
            "snapshotId": "snap-0" + random_hex(rng, 16),
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
            f"{random_hex(rng, 12)}.{rng.choice(('jpg', 'parquet', 'gz', 'json'))}"
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
            else {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-version-id": random_alnum(rng, 32),
            }
        )
        size = rng.randrange(200, 4_000_000)
        extra: Event = {
            "additionalEventData": {
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0 if read_only else size,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": random_alnum(
                    rng, 76, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789+/"
                ),
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
            rng.choice(self.w.instances)
            if role == "app-instance-role"
            else f"s-{random_hex(rng, 8)}"
        )
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/{role}"
        params = {"roleArn": role_arn, "roleSessionName": session, "durationSeconds": 3600}
        response = {
            "credentials": {
                "accessKeyId": "ASIA" + random_alnum(rng, 16),
                "sessionToken": random_alnum(
                    rng, 120, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+="
                ),
                "expiration": "Jul 31, 2024, 3:05:12 PM",
            },
            "assumedRoleUser": {
                "assumedRoleId": f"AROA{random_alnum(rng, 17)}:{session}",
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
            },
        }
        extra = {
            "resources": [{"accountId": ACCOUNT, "type": "AWS::IAM::Role", "ARN": role_arn}],
            "sharedEventID": random_uuid(rng),
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
            "encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{random_hex(rng, 12)}"},
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
                "sharedEventID": random_uuid(rng),
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
                "accessKeyId": "AKIA" + random_alnum(self.rng, 16),
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
        name = "svc-" + random_hex(self.rng, 6)
        params = {"userName": name, "tags": [{"key": "team", "value": "platform"}]}
        response = {
            "user": {
                "path": "/",
                "userName": name,
                "userId": "AIDA" + random_alnum(self.rng, 17),
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
            "logStreamName": f"2024/07/31/[$LATEST]{random_hex(self.rng, 32)}",
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


def cumulative(values: Sequence[float]) -> list[float]:
    total = 0.0
    out = []
    for v in values:
        total += v
        out.append(total)
    return out


def service_host(source: str, region: str) -> str:
    service = source.removesuffix(".amazonaws.com")
    if service in ("iam", "signin"):
        return f"{service}.amazonaws.com"
    return f"{service}.{region}.amazonaws.com"


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
    max_rss_kib: int | None  # the largest single process (wait4 ru_maxrss, or sampled)
    tree_pss_kib: int | None  # peak of the summed PSS of the whole tree, sampled
    cpu_seconds: float | None  # user + system, the whole subtree (wait4, or sampled)
    stdout: str = ""
    stderr: str = ""
    runs_seconds: list[float] = field(default_factory=list)
    other_cpu_seconds: float | None = None  # CPU the rest of the machine used meanwhile
    # What /proc said while the tree ran, including processes nobody waits for (see
    # TreeSampler); max_rss_kib and cpu_seconds are the larger of these and wait4's.
    sampled_max_rss_kib: int | None = None
    sampled_cpu_seconds: float | None = None


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


def process_tree(root: int) -> list[int]:
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


def rss_kib(pid: int) -> int:
    """Resident memory from /proc/<pid>/status: cheap, but shared pages count in each user."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(b"VmRSS:")), 0)
    except (OSError, ValueError):
        return 0


def memory_kib(pid: int) -> int:
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


def cpu_and_peak(pid: int) -> tuple[tuple[int, int], int, int] | None:
    """((pid, start time), CPU ticks so far, peak RSS KiB) of one process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2 :].split()  # fields from the 3rd (state) on
        with open(f"/proc/{pid}/status", "rb") as fh:
            hwm = next((int(line.split()[1]) for line in fh if line.startswith(b"VmHWM:")), 0)
    except (OSError, ValueError, IndexError):
        return None
    return (pid, int(fields[19])), int(fields[11]) + int(fields[12]), hwm


class TreeSampler(threading.Thread):
    """Samples a process tree until stopped: the peak of its summed memory, and each
    process's CPU time and peak RSS.

    wait4's numbers (`time -f`) cover only processes that their parent waits for. A JVM
    that pyspark starts is not: when cloudir exits the JVM sees its stdin close, exits
    after it and is reaped by init, so its CPU and RSS never reach the command's rusage.
    Sampling /proc counts it (less the last sample interval of each process).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.available = Path("/proc/self/stat").exists()
        self._done = threading.Event()
        self._cpu_ticks: dict[tuple[int, int], int] = {}
        self.max_rss_kib = 0

    def run(self) -> None:
        next_pss = 0.0
        while self.available and not self._done.is_set():
            tree = process_tree(self.pid)
            now = time.perf_counter()
            if now >= next_pss:
                total = sum(memory_kib(pid) for pid in tree)
                self.peak_kib = max(self.peak_kib, total)
                cost = time.perf_counter() - now
                next_pss = now + max(SAMPLE_SECONDS, cost / PSS_CPU_SHARE) - SAMPLE_SECONDS / 2
            for pid in tree:
                sample = cpu_and_peak(pid)
                if sample is not None:
                    key, ticks, hwm = sample
                    self._cpu_ticks[key] = max(self._cpu_ticks.get(key, 0), ticks)
                    self.max_rss_kib = max(self.max_rss_kib, hwm)
            self._done.wait(SAMPLE_SECONDS)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

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
    sampled_cpu = sampler.cpu_seconds if sampler.available else None
    sampled_rss = sampler.max_rss_kib or None
    if sampled_cpu is not None:
        cpu = max(cpu or 0.0, sampled_cpu)
    if sampled_rss is not None:
        max_rss = max(max_rss or 0, sampled_rss)
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
        sampled_max_rss_kib=sampled_rss,
        sampled_cpu_seconds=round(sampled_cpu, 2) if sampled_cpu is not None else None,
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cloudir_bin() -> str:
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


def write_results(
    stem: Path, document: dict[str, Any], markdown: str, text: str | None = None
) -> None:
    """A bench's results as `<stem>.json` (stamped when it finished), `.md` and, given
    `text`, `.txt`: the files bench/results keeps for every benchmark."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    document = {**document, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    if text is not None:
        stem.with_suffix(".txt").write_text(text)
