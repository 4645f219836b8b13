"""Write the hand-built part of the detection evaluation set (tests/data/detection_eval/).

The Stratus Red Team detonations in the corpus are the set's real attack data; this script
writes what the corpus lacks: benign look-alikes (Terraform, CI, admins at work, failing
applications, retention lifecycles, key rotation, backups shared inside the organisation)
and a few whole intrusions (a leaked IAM user key, an S3 ransomware run, a KMS lockout, log
destruction, console credential abuse). Each scenario is code rather than hand-typed JSON
so that the records stay consistent (one identity per actor, realistic user agents, times
in order) and the files can be regenerated after a change; the generated JSON is committed
and is what the bench and tests read. Deterministic: event ids are UUIDv5 of the scenario
and the record's position, so regenerating changes nothing unless a scenario changed.

Every record carries `evalLabel: {behaviour, malicious}`; the bench strips it before
cloudir sees the record. Run: python bench/make_detection_eval.py
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "detection_eval"
NAMESPACE = uuid.UUID("6f1c2a3e-9d5b-4c7e-8a1f-0b2c3d4e5f60")

ACCOUNT = "111122223333"
BACKUP_ACCOUNT = "111122224444"  # the organisation's own backup account
ORG_ID = "o-acme7x2k9q"
OUTSIDE_ACCOUNT = "999988887777"  # the intruder's account

Event = dict[str, Any]

TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) "
    "terraform-provider-aws/5.76.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.32.4 ua/2.1 os/linux lang/go#1.23.2 md/GOOS#linux md/GOARCH#amd64 "
    "api/{api}#1.40.0"
)
CLI_UA = (
    "aws-cli/2.22.4 md/awscrt#0.22.0 ua/2.0 os/macos#23.6.0 md/arch#arm64 lang/python#3.12.6 "
    "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/prompt#off "
    "md/command#{command}"
)
BOTO_UA = (
    "Boto3/1.35.54 md/Botocore#1.35.54 ua/2.0 os/linux#5.10.227-219.884.amzn2.x86_64 "
    "md/arch#x86_64 lang/python#3.12.7 md/pyimpl#CPython cfg/retry-mode#legacy "
    "Botocore/1.35.54"
)
GO_SDK_UA = "aws-sdk-go-v2/1.32.4 ua/2.1 os/linux lang/go#1.23.2 md/GOOS#linux md/GOARCH#amd64"
CONSOLE_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
TRUFFLEHOG_UA = "TruffleHog"
S3_CONSOLE_UA = "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.750]"

OIDC_PROVIDER = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
OFFICE_IP = "198.51.100.24"  # the company's egress address
RUNNER_IP = "20.57.41.108"  # a GitHub-hosted runner
INTRUDER_IP = "185.220.101.47"
INTRUDER_IP2 = "45.155.205.233"


# --------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------


def iam_user(name: str, key: str, *, console: bool = False, mfa: bool = False) -> Event:
    identity: Event = {
        "type": "IAMUser",
        "principalId": "AIDA" + _tag(name, 17),
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "userName": name,
    }
    if console:
        identity["sessionContext"] = {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {
                "creationDate": "2026-11-16T07:58:02Z",
                "mfaAuthenticated": "true" if mfa else "false",
            },
        }
    return identity


def assumed_role(role: str, session: str, key: str, *, web_identity: Event | None = None) -> Event:
    role_id = "AROA" + _tag(role, 17)
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                "accountId": ACCOUNT,
                "userName": role,
            },
            "webIdFederationData": web_identity or {},
            "attributes": {"creationDate": "2026-11-16T09:00:00Z", "mfaAuthenticated": "false"},
        },
    }


def root(*, mfa: bool = True) -> Event:
    return {
        "type": "Root",
        "principalId": ACCOUNT,
        "arn": f"arn:aws:iam::{ACCOUNT}:root",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIA" + _tag("root-console", 16),
        "sessionContext": {
            "sessionIssuer": {},
            "webIdFederationData": {},
            "attributes": {
                "creationDate": "2026-11-17T07:41:12Z",
                "mfaAuthenticated": "true" if mfa else "false",
            },
        },
    }


def sign_in_identity(who: Event) -> Event:
    """ConsoleLogin names the user, not a session: no session key, no sessionContext."""
    identity = {k: v for k, v in who.items() if k not in ("sessionContext", "accessKeyId")}
    if who.get("type") == "Root":
        identity["accessKeyId"] = ""
    return identity


def aws_service(service: str) -> Event:
    return {"type": "AWSService", "invokedBy": service}


def _tag(seed: str, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    number = uuid.uuid5(NAMESPACE, seed).int
    out = []
    for _ in range(n):
        number, digit = divmod(number, len(alphabet))
        out.append(alphabet[digit])
    return "".join(out)


def key_of(name: str) -> str:
    return "AKIA" + _tag(name, 16)


def session_key(name: str) -> str:
    return "ASIA" + _tag(name, 16)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One file: records in time order, each labelled."""

    name: str
    description: str
    start: datetime
    records: list[Event] = field(default_factory=list)
    clock: datetime | None = None

    def at(self, seconds: float) -> Scenario:
        """Move the clock `seconds` past the previous record (or the start)."""
        self.clock = (self.clock or self.start) + timedelta(seconds=seconds)
        return self

    def add(
        self,
        who: Event,
        source: str,
        name: str,
        *,
        behaviour: str,
        malicious: bool,
        params: Any = None,
        response: Any = None,
        ip: str = OFFICE_IP,
        ua: str = CLI_UA,
        region: str = "us-east-1",
        error: tuple[str, str] | None = None,
        read_only: bool | None = None,
        data_event: bool = False,
        extra: Event | None = None,
        after: float = 1,
    ) -> Event:
        self.at(after)
        assert self.clock is not None
        if name == "ConsoleLogin":
            who = sign_in_identity(who)
        n = len(self.records)
        service = source.split(".")[0]
        if "{command}" in ua:
            command = name[0].lower() + "".join(
                "-" + c.lower() if c.isupper() else c for c in name[1:]
            )
            ua = ua.format(command=f"{service}.{command}")
        if "{api}" in ua:
            ua = ua.format(api=service)
        record: Event = {
            "eventVersion": "1.10" if data_event else "1.09",
            "userIdentity": who,
            "eventTime": self.clock.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": ip,
            "userAgent": ua,
        }
        if error:
            record["errorCode"], record["errorMessage"] = error
        record["requestParameters"] = params
        record["responseElements"] = None if error else response
        record["requestID"] = str(uuid.uuid5(NAMESPACE, f"{self.name}/request/{n}"))
        record["eventID"] = str(uuid.uuid5(NAMESPACE, f"{self.name}/{n}"))
        if read_only is None:
            read_only = name.startswith(("Describe", "Get", "List", "Head", "Lookup"))
        record["readOnly"] = read_only
        record["eventType"] = "AwsApiCall"
        record["managementEvent"] = not data_event
        record["recipientAccountId"] = ACCOUNT
        record["eventCategory"] = "Data" if data_event else "Management"
        if who.get("type") != "AWSService":
            record["tlsDetails"] = {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": f"{service}.{region}.amazonaws.com",
            }
        if ua == CONSOLE_UA and who.get("type") != "AWSService":
            record["sessionCredentialFromConsole"] = "true"
        if extra:
            extra = dict(extra)
            # CloudTrail records the service acting for a principal inside userIdentity
            if "invokedBy" in extra:
                record["userIdentity"] = {
                    **record["userIdentity"],
                    "invokedBy": extra.pop("invokedBy"),
                }
            record.update(extra)
        record["evalLabel"] = {"behaviour": behaviour, "malicious": malicious}
        self.records.append(record)
        return record

    def document(self) -> Event:
        return {"description": self.description, "Records": self.records}


def denied(who: Event, source: str, name: str) -> tuple[str, str]:
    service = source.split(".")[0]
    code = "Client.UnauthorizedOperation" if service == "ec2" else "AccessDenied"
    if service in {"secretsmanager", "kms", "lambda", "ssm", "dynamodb"}:
        code = "AccessDeniedException"
    return code, (
        f"User: {who['arn']} is not authorized to perform: {service}:{name} because no "
        f"identity-based policy allows the {service}:{name} action"
    )


def policy(*statements: Event) -> str:
    """A policy document as CloudTrail records it: a JSON string."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def s3_params(bucket: str, key: str | None = None, **more: Any) -> Event:
    params: Event = {"bucketName": bucket, "Host": f"{bucket}.s3.us-east-1.amazonaws.com"}
    if key is not None:
        params["key"] = key
    params.update(more)
    return params


def s3_data_extra(bucket: str, key: str | None, *, sse: str | None = None) -> Event:
    resources: list[Event] = [
        {"type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}", "accountId": ACCOUNT}
    ]
    if key is not None:
        resources.insert(0, {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"})
    extra: Event = {
        "resources": resources,
        "additionalEventData": {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "x-amz-id-2": "b3Jp" + _tag(f"{bucket}/{key}", 40),
            "bytesTransferredOut": 0,
        },
    }
    if sse:
        extra["additionalEventData"]["SSEApplied"] = sse
    return extra


# --------------------------------------------------------------------------------------
# Benign look-alikes
# --------------------------------------------------------------------------------------


def terraform_apply_destroy() -> Scenario:
    s = Scenario(
        "benign-terraform-apply-destroy",
        "A GitHub Actions workflow assumes its OIDC deploy role and runs terraform apply for "
        "a new service stack (bucket, key, roles, Lambda, security group, logs), then a week "
        "later terraform destroy of the preview environment. Every call is automation.",
        datetime(2026, 11, 16, 9, 0, tzinfo=UTC),
    )
    web = {
        "federatedProvider": OIDC_PROVIDER,
        "attributes": {},
    }
    ci = assumed_role(
        "github-actions-terraform", "GitHubActions", session_key("tf"), web_identity=web
    )
    b, m = "benign-terraform", False
    s.add(
        {
            "type": "WebIdentityUser",
            "principalId": "token.actions.githubusercontent.com:sts.amazonaws.com:repo:acme/platform:ref:refs/heads/main",  # noqa: E501
            "userName": "repo:acme/platform:ref:refs/heads/main",
            "identityProvider": "token.actions.githubusercontent.com",
        },
        "sts.amazonaws.com",
        "AssumeRoleWithWebIdentity",
        behaviour="benign-ci",
        malicious=m,
        params={
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/github-actions-terraform",
            "roleSessionName": "GitHubActions",
            "durationSeconds": 3600,
        },
        response={"assumedRoleUser": {"arn": ci["arn"]}, "provider": web["federatedProvider"]},
        ip=RUNNER_IP,
        ua="aws-sdk-js/3.692.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.18.0 "
        "api/sts#3.692.0 m/E",
    )
    tf = dict(ip=RUNNER_IP, ua=TERRAFORM_UA, behaviour=b, malicious=m)
    bucket = "acme-orders-exports-prod"
    key_id = "4f8e2c1a-77b3-4d0e-9a61-2b5c8d9e0f13"
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"
    s.add(ci, "sts.amazonaws.com", "GetCallerIdentity", **tf)
    s.add(
        ci,
        "kms.amazonaws.com",
        "CreateKey",
        params={
            "description": "orders exports",
            "keyUsage": "ENCRYPT_DECRYPT",
            "keySpec": "SYMMETRIC_DEFAULT",
            "bypassPolicyLockoutSafetyCheck": False,
            "policy": policy(
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ),
        },
        response={"keyMetadata": {"keyId": key_id, "arn": key_arn, "keyState": "Enabled"}},
        **tf,
    )
    s.add(ci, "kms.amazonaws.com", "EnableKeyRotation", params={"keyId": key_id}, **tf)
    s.add(
        ci,
        "kms.amazonaws.com",
        "CreateAlias",
        params={"aliasName": "alias/orders-exports", "targetKeyId": key_id},
        **tf,
    )
    s.add(ci, "s3.amazonaws.com", "CreateBucket", params=s3_params(bucket), **tf)
    s.add(
        ci,
        "s3.amazonaws.com",
        "PutBucketVersioning",
        params=s3_params(
            bucket,
            VersioningConfiguration={
                "Status": "Enabled",
                "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/",
            },
            versioning="",
        ),
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "PutBucketEncryption",
        params=s3_params(
            bucket,
            encryption="",
            ServerSideEncryptionConfiguration={
                "Rule": {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key_arn,
                    },
                    "BucketKeyEnabled": True,
                }
            },
        ),
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "PutBucketPublicAccessBlock",
        params=s3_params(
            bucket,
            publicAccessBlock="",
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        ),
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "PutBucketPolicy",
        params=s3_params(
            bucket,
            policy="",
            bucketPolicy={
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "OrgRead",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                        "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG_ID}},
                    }
                ],
            },
        ),
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "PutBucketLifecycle",
        params=s3_params(
            bucket,
            lifecycle="",
            LifecycleConfiguration={
                "Rule": [
                    {
                        "ID": "expire-old-exports",
                        "Status": "Enabled",
                        "Filter": {"Prefix": "exports/"},
                        "Expiration": {"Days": 365},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                    }
                ]
            },
        ),
        **tf,
    )
    trust = policy(
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "CreateRole",
        params={
            "roleName": "orders-exporter",
            "assumeRolePolicyDocument": trust,
            "maxSessionDuration": 3600,
        },
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "PutRolePolicy",
        params={
            "roleName": "orders-exporter",
            "policyName": "exports-write",
            "policyDocument": policy(
                {
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "kms:GenerateDataKey"],
                    "Resource": [f"arn:aws:s3:::{bucket}/*", key_arn],
                }
            ),
        },
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "AttachRolePolicy",
        params={
            "roleName": "orders-exporter",
            "policyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        },
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "CreateRole",
        params={
            "roleName": "ops-break-glass",
            "assumeRolePolicyDocument": policy(
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
                }
            ),
        },
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "AttachRolePolicy",
        params={
            "roleName": "ops-break-glass",
            "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
        },
        **tf,
    )
    s.add(
        ci,
        "logs.amazonaws.com",
        "CreateLogGroup",
        params={"logGroupName": "/aws/lambda/orders-exporter"},
        **tf,
    )
    s.add(
        ci,
        "logs.amazonaws.com",
        "PutRetentionPolicy",
        params={"logGroupName": "/aws/lambda/orders-exporter", "retentionInDays": 30},
        **tf,
    )
    s.add(
        ci,
        "lambda.amazonaws.com",
        "CreateFunction20150331",
        params={
            "functionName": "orders-exporter",
            "runtime": "python3.12",
            "role": f"arn:aws:iam::{ACCOUNT}:role/orders-exporter",
            "handler": "app.handler",
            "code": {},
            "timeout": 60,
            "memorySize": 256,
            "publish": False,
        },
        **tf,
    )
    s.add(
        ci,
        "lambda.amazonaws.com",
        "AddPermission20150331v2",
        params={
            "functionName": "orders-exporter",
            "statementId": "AllowEventBridge",
            "action": "lambda:InvokeFunction",
            "principal": "events.amazonaws.com",
            "sourceArn": f"arn:aws:events:us-east-1:{ACCOUNT}:rule/orders-nightly",
        },
        response={
            "statement": json.dumps(
                {
                    "Sid": "AllowEventBridge",
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "lambda:InvokeFunction",
                    "Resource": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders-exporter",
                    "Condition": {
                        "ArnLike": {
                            "AWS:SourceArn": f"arn:aws:events:us-east-1:{ACCOUNT}:rule/orders-nightly"  # noqa: E501
                        }
                    },
                }
            )
        },
        **tf,
    )
    s.add(
        ci,
        "ec2.amazonaws.com",
        "CreateSecurityGroup",
        params={
            "groupName": "orders-alb",
            "groupDescription": "public load balancer",
            "vpcId": "vpc-0a1b2c3d4e5f60718",
        },
        response={"_return": True, "groupId": "sg-0d3c2b1a098f7e6d5"},
        **tf,
    )
    s.add(
        ci,
        "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress",
        params={
            "groupId": "sg-0d3c2b1a098f7e6d5",
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 443,
                        "toPort": 443,
                        "groups": {},
                        "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0", "description": "HTTPS"}]},
                        "ipv6Ranges": {},
                        "prefixListIds": {},
                    }
                ]
            },
        },
        **tf,
    )
    s.add(
        ci,
        "ec2.amazonaws.com",
        "AuthorizeSecurityGroupIngress",
        params={
            "groupId": "sg-0d3c2b1a098f7e6d5",
            "ipPermissions": {
                "items": [
                    {
                        "ipProtocol": "tcp",
                        "fromPort": 22,
                        "toPort": 22,
                        "groups": {},
                        "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8", "description": "bastion"}]},
                        "ipv6Ranges": {},
                        "prefixListIds": {},
                    }
                ]
            },
        },
        **tf,
    )
    # a week later: terraform destroy of the preview stack
    s.clock = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    preview_key = "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
    s.add(
        ci,
        "lambda.amazonaws.com",
        "DeleteFunction20150331",
        params={"functionName": "orders-exporter-preview"},
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "DetachRolePolicy",
        params={
            "roleName": "orders-exporter-preview",
            "policyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        },
        **tf,
    )
    s.add(
        ci,
        "iam.amazonaws.com",
        "DeleteRolePolicy",
        params={"roleName": "orders-exporter-preview", "policyName": "exports-write"},
        **tf,
    )
    s.add(
        ci, "iam.amazonaws.com", "DeleteRole", params={"roleName": "orders-exporter-preview"}, **tf
    )
    s.add(
        ci,
        "logs.amazonaws.com",
        "DeleteLogGroup",
        params={"logGroupName": "/aws/lambda/orders-exporter-preview"},
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "DeleteBucketPolicy",
        params=s3_params("acme-orders-exports-preview", policy=""),
        **tf,
    )
    s.add(
        ci,
        "s3.amazonaws.com",
        "DeleteBucket",
        params=s3_params("acme-orders-exports-preview"),
        **tf,
    )
    s.add(
        ci,
        "kms.amazonaws.com",
        "ScheduleKeyDeletion",
        params={"keyId": preview_key, "pendingWindowInDays": 30},
        response={
            "keyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{preview_key}",
            "deletionDate": "Dec 23, 2026, 3:30:09 PM",
            "keyState": "PendingDeletion",
            "pendingWindowInDays": 30,
        },
        **tf,
    )
    s.add(
        ci,
        "ec2.amazonaws.com",
        "DeleteFlowLogs",
        params={
            "DeleteFlowLogsRequest": {"FlowLogId": {"content": "fl-0f1e2d3c4b5a69788", "tag": 1}}
        },
        **tf,
    )
    s.add(
        ci,
        "ec2.amazonaws.com",
        "DeleteSecurityGroup",
        params={"groupId": "sg-0e4d3c2b1a0f9e8d7"},
        **tf,
    )
    return s


def ci_deploys() -> Scenario:
    s = Scenario(
        "benign-ci-deploys",
        "CI deploying: a GitHub Actions role pushes an image and updates a Lambda's code; "
        "CodeBuild builds and updates another function; CloudFormation creates a stack's "
        "role on the pipeline's behalf.",
        datetime(2026, 11, 18, 13, 0, tzinfo=UTC),
    )
    web = {
        "federatedProvider": OIDC_PROVIDER,
        "attributes": {},
    }
    gha = assumed_role(
        "github-actions-deploy", "GitHubActions", session_key("gha"), web_identity=web
    )
    build = assumed_role(
        "codebuild-orders-service-role",
        "AWSCodeBuild-8c1f0e2d-4b3a-4e5f-9a7b-6c5d4e3f2a1b",
        session_key("codebuild"),
    )
    b, m = "benign-ci", False
    js = (
        "aws-sdk-js/3.692.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.18.0 "
        "api/{api}#3.692.0 m/E"
    )
    g = dict(ip=RUNNER_IP, behaviour=b, malicious=m)
    s.add(gha, "ecr.amazonaws.com", "GetAuthorizationToken", ua=js, **g)
    for op in ("InitiateLayerUpload", "UploadLayerPart", "CompleteLayerUpload", "PutImage"):
        s.add(
            gha,
            "ecr.amazonaws.com",
            op,
            ua=js,
            params={"repositoryName": "orders-api", "registryId": ACCOUNT},
            **g,
        )
    s.add(
        gha,
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        ua=js,
        params={
            "functionName": "orders-api",
            "imageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/orders-api:3f9c2e1",
            "publish": True,
            "dryRun": False,
        },
        **g,
    )
    s.add(
        gha,
        "lambda.amazonaws.com",
        "PublishVersion20150331",
        ua=js,
        params={"functionName": "orders-api"},
        **g,
    )
    s.add(
        gha,
        "lambda.amazonaws.com",
        "UpdateAlias20150331",
        ua=js,
        params={"functionName": "orders-api", "name": "live", "functionVersion": "42"},
        **g,
    )
    c = dict(ip="52.23.190.12", behaviour=b, malicious=m, ua=BOTO_UA)
    s.add(
        build,
        "s3.amazonaws.com",
        "PutObject",
        params=s3_params("acme-build-artifacts", "thumbnailer/build-1187.zip"),
        data_event=True,
        extra=s3_data_extra("acme-build-artifacts", "thumbnailer/build-1187.zip"),
        **c,
    )
    s.add(
        build,
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        params={
            "functionName": "thumbnailer",
            "s3Bucket": "acme-build-artifacts",
            "s3Key": "thumbnailer/build-1187.zip",
            "publish": False,
            "dryRun": False,
        },
        **c,
    )
    s.add(
        build,
        "cloudformation.amazonaws.com",
        "CreateChangeSet",
        params={
            "stackName": "orders-worker",
            "changeSetName": "build-1187",
            "changeSetType": "UPDATE",
            "capabilities": ["CAPABILITY_IAM"],
        },
        **c,
    )
    s.add(
        build,
        "cloudformation.amazonaws.com",
        "ExecuteChangeSet",
        params={"stackName": "orders-worker", "changeSetName": "build-1187"},
        **c,
    )
    cfn = assumed_role("cfn-exec-orders", "AWSCloudFormation", session_key("cfn"))
    cf = dict(
        ip="cloudformation.amazonaws.com",
        ua="cloudformation.amazonaws.com",
        behaviour=b,
        malicious=m,
        extra={"invokedBy": "cloudformation.amazonaws.com"},
    )
    s.add(
        cfn,
        "iam.amazonaws.com",
        "CreateRole",
        params={
            "roleName": "orders-worker-TaskRole-1X2Y3Z4W5V6U",
            "assumeRolePolicyDocument": policy(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ),
        },
        **cf,
    )
    s.add(
        cfn,
        "iam.amazonaws.com",
        "PutRolePolicy",
        params={
            "roleName": "orders-worker-TaskRole-1X2Y3Z4W5V6U",
            "policyName": "queue",
            "policyDocument": policy(
                {
                    "Effect": "Allow",
                    "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                    "Resource": f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders",
                }
            ),
        },
        **cf,
    )
    s.add(
        cfn,
        "ecs.amazonaws.com",
        "UpdateService",
        params={
            "cluster": "prod",
            "service": "orders-worker",
            "taskDefinition": "orders-worker:88",
        },
        **cf,
    )
    return s


def admins_at_work() -> Scenario:
    s = Scenario(
        "benign-admin-at-work",
        "Administrators doing their job from the office: onboarding a new engineer (user, "
        "console password that must be reset, group), a service user's access key created "
        "and handed over, a read-only policy attached to an auditor, a forgotten password "
        "reset, one rotation of the admin's own key, a Session Manager session and a patch "
        "run, a secret read to debug a database connection.",
        datetime(2026, 11, 17, 9, 15, tzinfo=UTC),
    )
    b, m = "benign-admin", False
    alice_console = iam_user("alice.admin", session_key("alice-console"), console=True, mfa=True)
    alice_cli = iam_user("alice.admin", key_of("alice-old"))
    con = dict(ua=CONSOLE_UA, behaviour=b, malicious=m)
    s.add(
        alice_console,
        "signin.amazonaws.com",
        "ConsoleLogin",
        response={"ConsoleLogin": "Success"},
        extra={
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home",
                "MobileVersion": "No",
                "MFAUsed": "Yes",
            }
        },
        **con,
    )
    s.add(
        alice_console,
        "iam.amazonaws.com",
        "CreateUser",
        params={"userName": "dan.nguyen"},
        response={
            "user": {"userName": "dan.nguyen", "arn": f"arn:aws:iam::{ACCOUNT}:user/dan.nguyen"}
        },
        after=40,
        **con,
    )
    s.add(
        alice_console,
        "iam.amazonaws.com",
        "CreateLoginProfile",
        params={"userName": "dan.nguyen", "passwordResetRequired": True},
        response={"loginProfile": {"userName": "dan.nguyen", "passwordResetRequired": True}},
        after=20,
        **con,
    )
    s.add(
        alice_console,
        "iam.amazonaws.com",
        "AddUserToGroup",
        params={"groupName": "developers", "userName": "dan.nguyen"},
        after=15,
        **con,
    )
    s.add(
        alice_console,
        "iam.amazonaws.com",
        "AttachUserPolicy",
        params={"userName": "erin.audit", "policyArn": "arn:aws:iam::aws:policy/SecurityAudit"},
        after=300,
        **con,
    )
    s.add(
        alice_console,
        "iam.amazonaws.com",
        "UpdateLoginProfile",
        params={"userName": "frank.ops", "passwordResetRequired": True},
        after=600,
        **con,
    )
    cli = dict(ua=CLI_UA, behaviour=b, malicious=m)
    s.add(
        alice_cli,
        "iam.amazonaws.com",
        "CreateUser",
        params={"userName": "svc-invoice-sync", "path": "/service/"},
        after=900,
        **cli,
    )
    s.add(
        alice_cli,
        "iam.amazonaws.com",
        "AttachUserPolicy",
        params={
            "userName": "svc-invoice-sync",
            "policyArn": f"arn:aws:iam::{ACCOUNT}:policy/invoice-sync-write",
        },
        **cli,
    )
    s.add(
        alice_cli,
        "iam.amazonaws.com",
        "CreateAccessKey",
        params={"userName": "svc-invoice-sync"},
        response={
            "accessKey": {
                "accessKeyId": key_of("svc-invoice-sync"),
                "status": "Active",
                "userName": "svc-invoice-sync",
            }
        },
        after=30,
        **cli,
    )
    # rotating her own key once: new key, old key inactive, then deleted
    s.add(
        alice_cli,
        "iam.amazonaws.com",
        "CreateAccessKey",
        params=None,
        response={
            "accessKey": {
                "accessKeyId": key_of("alice-new"),
                "status": "Active",
                "userName": "alice.admin",
            }
        },
        after=3600,
        **cli,
    )
    alice_new = iam_user("alice.admin", key_of("alice-new"))
    s.add(alice_new, "sts.amazonaws.com", "GetCallerIdentity", after=60, **cli)
    s.add(
        alice_new,
        "iam.amazonaws.com",
        "UpdateAccessKey",
        params={"accessKeyId": key_of("alice-old"), "status": "Inactive"},
        after=20,
        **cli,
    )
    s.add(
        alice_new,
        "iam.amazonaws.com",
        "DeleteAccessKey",
        params={"accessKeyId": key_of("alice-old")},
        after=40,
        **cli,
    )
    s.add(
        alice_new,
        "ssm.amazonaws.com",
        "StartSession",
        params={"target": "i-0a1b2c3d4e5f60718"},
        response={
            "sessionId": "alice.admin-0f1e2d3c4b5a69788",
            "streamUrl": "wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/alice.admin-0f1e2d3c4b5a69788?role=publish_subscribe",
            "tokenValue": "Value hidden due to security reasons.",
        },
        after=1200,
        **cli,
    )
    s.add(
        alice_new,
        "ssm.amazonaws.com",
        "SendCommand",
        params={
            "documentName": "AWS-RunPatchBaseline",
            "instanceIds": ["i-0a1b2c3d4e5f60718", "i-0b2c3d4e5f6071829"],
            "interactive": False,
            "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS",
        },
        after=600,
        **cli,
    )
    s.add(
        alice_new,
        "secretsmanager.amazonaws.com",
        "GetSecretValue",
        params={"secretId": "prod/orders/db"},
        after=900,
        **cli,
    )
    s.add(
        alice_new,
        "ec2.amazonaws.com",
        "GetPasswordData",
        params={"instanceId": "i-0c3d4e5f607182930"},
        after=400,
        **cli,
    )
    return s


def root_morning() -> Scenario:
    s = Scenario(
        "benign-root-console-morning",
        "The account owner signs in as root with MFA in the morning to look at billing and "
        "the account's security settings, as they do once a month.",
        datetime(2026, 11, 17, 7, 41, tzinfo=UTC),
    )
    r = root(mfa=True)
    k = dict(ua=CONSOLE_UA, behaviour="benign-root-console", malicious=False)
    s.add(
        r,
        "signin.amazonaws.com",
        "ConsoleLogin",
        response={"ConsoleLogin": "Success"},
        extra={
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home",
                "MobileVersion": "No",
                "MFAUsed": "Yes",
            }
        },
        **k,
    )
    for source, name in (
        ("iam.amazonaws.com", "GetAccountSummary"),
        ("iam.amazonaws.com", "ListMFADevices"),
        ("iam.amazonaws.com", "ListAccessKeys"),
        ("billingconsole.amazonaws.com", "GetBillingPreferences"),
        ("ce.amazonaws.com", "GetCostAndUsage"),
        ("ce.amazonaws.com", "GetCostForecast"),
        ("account.amazonaws.com", "GetContactInformation"),
        ("account.amazonaws.com", "GetAlternateContact"),
        ("health.amazonaws.com", "DescribeEventAggregates"),
        ("securityhub.amazonaws.com", "GetFindings"),
    ):
        s.add(r, source, name, read_only=True, after=25, **k)
    return s


def failing_app() -> Scenario:
    s = Scenario(
        "benign-failed-attempts",
        "A misconfigured application (its instance role lacks the new bucket and key) retries "
        "the same denied calls for ten minutes; a developer mistypes their console password "
        "once and then signs in with MFA.",
        datetime(2026, 11, 19, 11, 0, tzinfo=UTC),
    )
    app = assumed_role("orders-app-instance", "i-0d4e5f60718293a4b", session_key("orders-app"))
    app["sessionContext"]["ec2RoleDelivery"] = "2.0"
    k = dict(ip="10.20.3.41", ua=BOTO_UA, behaviour="benign-failed-attempt", malicious=False)
    for n in range(8):
        s.add(
            app,
            "s3.amazonaws.com",
            "GetObject",
            data_event=True,
            params=s3_params("acme-orders-config-v2", "settings/prod.json"),
            error=("AccessDenied", "Access Denied"),
            extra=s3_data_extra("acme-orders-config-v2", "settings/prod.json"),
            after=45,
            **k,
        )
        s.add(
            app,
            "kms.amazonaws.com",
            "Decrypt",
            params={"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
            error=denied(app, "kms.amazonaws.com", "Decrypt"),
            after=2,
            **k,
        )
        if n % 2 == 0:
            s.add(
                app,
                "secretsmanager.amazonaws.com",
                "GetSecretValue",
                params={"secretId": "prod/orders/db-v2"},
                error=denied(app, "secretsmanager.amazonaws.com", "GetSecretValue"),
                after=2,
                **k,
            )
    dev = iam_user("grace.dev", session_key("grace"), console=True, mfa=True)
    d = dict(ua=CONSOLE_UA, behaviour="benign-failed-attempt", malicious=False)
    s.add(
        {
            "type": "IAMUser",
            "principalId": "AIDA" + _tag("grace.dev", 17),
            "accountId": ACCOUNT,
            "accessKeyId": "",
            "userName": "grace.dev",
        },
        "signin.amazonaws.com",
        "ConsoleLogin",
        # a failed console sign-in has an errorMessage but no errorCode
        extra={
            "errorMessage": "Failed authentication",
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home",
                "MobileVersion": "No",
                "MFAUsed": "No",
            },
            "responseElements": {"ConsoleLogin": "Failure"},
        },
        after=1800,
        **d,
    )
    s.add(
        dev,
        "signin.amazonaws.com",
        "ConsoleLogin",
        response={"ConsoleLogin": "Success"},
        extra={
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home",
                "MobileVersion": "No",
                "MFAUsed": "Yes",
            }
        },
        after=20,
        **d,
    )
    return s


def retention_and_rotation() -> Scenario:
    s = Scenario(
        "benign-retention-rotation",
        "Storage and key hygiene: the platform team sets a 365-day retention on the trail "
        "bucket and a 7-day expiry on Athena's scratch results, aborts incomplete uploads; "
        "KMS rotates keys (on schedule and once on demand); EBS is granted use of a key by "
        "the EC2 service inside the account.",
        datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )
    ops = iam_user("platform-ops", key_of("platform-ops"))
    k = dict(behaviour="benign-s3-lifecycle", malicious=False)
    s.add(
        ops,
        "s3.amazonaws.com",
        "PutBucketLifecycle",
        params=s3_params(
            "acme-cloudtrail-logs-111122223333",
            lifecycle="",
            LifecycleConfiguration={
                "Rule": [
                    {
                        "ID": "retain-1y",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}],
                        "Expiration": {"Days": 365},
                    }
                ]
            },
        ),
        **k,
    )
    s.add(
        ops,
        "s3.amazonaws.com",
        "PutBucketLifecycle",
        params=s3_params(
            "acme-athena-results",
            lifecycle="",
            LifecycleConfiguration={
                "Rule": [
                    {
                        "ID": "scratch",
                        "Status": "Enabled",
                        "Filter": {"Prefix": "query-results/"},
                        "Expiration": {"Days": 7},
                    },
                    {
                        "ID": "multipart",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    },
                ]
            },
        ),
        after=60,
        **k,
    )
    s.add(
        ops,
        "s3.amazonaws.com",
        "GetBucketLifecycle",
        params=s3_params("acme-cloudtrail-logs-111122223333", lifecycle=""),
        after=10,
        **k,
    )
    key_id = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    rot = dict(behaviour="benign-kms-rotation", malicious=False)
    s.add(
        ops,
        "kms.amazonaws.com",
        "EnableKeyRotation",
        params={"keyId": key_id, "rotationPeriodInDays": 365},
        after=120,
        **rot,
    )
    s.add(ops, "kms.amazonaws.com", "RotateKeyOnDemand", params={"keyId": key_id}, after=30, **rot)
    service = aws_service("kms.amazonaws.com")
    s.add(
        service,
        "kms.amazonaws.com",
        "RotateKey",
        ip="kms.amazonaws.com",
        ua="kms.amazonaws.com",
        read_only=False,
        extra={
            "eventType": "AwsServiceEvent",
            "additionalEventData": {"keyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"},
            "resources": [
                {
                    "accountId": ACCOUNT,
                    "type": "AWS::KMS::Key",
                    "ARN": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}",
                }
            ],
        },
        after=86400,
        **rot,
    )
    app = assumed_role("orders-app-instance", "i-0d4e5f60718293a4b", session_key("orders-app-2"))
    s.add(
        app,
        "kms.amazonaws.com",
        "CreateGrant",
        ip="ec2.amazonaws.com",
        ua="ec2.amazonaws.com",
        params={
            "keyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}",
            "granteePrincipal": f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-0d4e5f60718293a4b",  # noqa: E501
            "operations": ["Decrypt"],
            "constraints": {"encryptionContextSubset": {"aws:ebs:id": "vol-0e5f60718293a4b5c"}},
            "retiringPrincipal": "ec2.us-east-1.amazonaws.com",
        },
        extra={"invokedBy": "ec2.amazonaws.com"},
        after=600,
        **rot,
    )
    return s


def backups_to_org_account() -> Scenario:
    s = Scenario(
        "benign-backup-share",
        "AWS Backup copies to the organisation's own backup account: an EBS snapshot and an "
        "RDS snapshot shared with that account (cross-account, but inside the organisation), "
        "the backup key's policy letting the backup account decrypt, and a share call that "
        "adds nobody (an empty valuesToAdd list).",
        datetime(2026, 11, 21, 2, 0, tzinfo=UTC),
    )
    backup = assumed_role(
        "AWSBackupDefaultServiceRole",
        "AWSBackup-AWSBackupDefaultServiceRole",
        session_key("backup"),
    )
    k = dict(
        ip="backup.amazonaws.com",
        ua="backup.amazonaws.com",
        behaviour="benign-backup-share",
        malicious=False,
        extra={"invokedBy": "backup.amazonaws.com"},
    )
    s.add(
        backup,
        "ec2.amazonaws.com",
        "ModifySnapshotAttribute",
        params={
            "snapshotId": "snap-0a1b2c3d4e5f60718",
            "createVolumePermission": {"add": {"items": [{"userId": BACKUP_ACCOUNT}]}},
            "attributeType": "CREATE_VOLUME_PERMISSION",
        },
        response={"_return": True},
        **k,
    )
    s.add(
        backup,
        "rds.amazonaws.com",
        "ModifyDBSnapshotAttribute",
        params={
            "dBSnapshotIdentifier": "awsbackup:job-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "attributeName": "restore",
            "valuesToAdd": [BACKUP_ACCOUNT],
        },
        after=120,
        **k,
    )
    ops = iam_user("platform-ops", key_of("platform-ops"))
    s.add(
        ops,
        "kms.amazonaws.com",
        "PutKeyPolicy",
        params={
            "keyId": "1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b",
            "policyName": "default",
            "bypassPolicyLockoutSafetyCheck": False,
            "policy": policy(
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "BackupAccountDecrypt",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{BACKUP_ACCOUNT}:root"},
                    "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG_ID}},
                },
            ),
        },
        ua=CLI_UA,
        behaviour="benign-backup-share",
        malicious=False,
        after=300,
    )
    s.add(
        ops,
        "rds.amazonaws.com",
        "ModifyDBSnapshotAttribute",
        params={
            "dBSnapshotIdentifier": "orders-db-manual-2026-11-20",
            "attributeName": "restore",
            "valuesToAdd": [],
            "valuesToRemove": [],
        },
        ua=CLI_UA,
        behaviour="benign-backup-share",
        malicious=False,
        after=60,
    )
    return s


def data_jobs() -> Scenario:
    s = Scenario(
        "benign-s3-data-jobs",
        "Everyday S3 work that looks like ransomware from afar: CI publishing a static site "
        "with `aws s3 sync --delete` (DeleteObjects), a nightly Lambda removing expired "
        "exports one by one, the platform team re-encrypting objects in place with the "
        "account's own KMS key, a README uploaded to a shared bucket; and developers' "
        "session tokens from the office with MFA.",
        datetime(2026, 11, 28, 1, 0, tzinfo=UTC),
    )
    web = {"federatedProvider": OIDC_PROVIDER, "attributes": {}}
    gha = assumed_role(
        "github-actions-site", "GitHubActions", session_key("site"), web_identity=web
    )
    site = "acme-www-site"
    ci = dict(ip=RUNNER_IP, ua=CLI_UA, behaviour="benign-ci", malicious=False)
    s.add(
        gha,
        "s3.amazonaws.com",
        "ListObjects",
        data_event=True,
        params=s3_params(site, **{"list-type": "2", "prefix": ""}),
        extra=s3_data_extra(site, None),
        **ci,
    )
    for page in ("index.html", "pricing.html", "assets/app.3f9c2e1.js"):
        s.add(
            gha,
            "s3.amazonaws.com",
            "PutObject",
            data_event=True,
            params=s3_params(site, page),
            extra=s3_data_extra(site, page),
            **ci,
        )
    s.add(
        gha,
        "s3.amazonaws.com",
        "DeleteObjects",
        data_event=True,
        params=s3_params(site, delete=""),
        extra=s3_data_extra(site, None),
        **ci,
    )
    cleaner = assumed_role("exports-cleanup-exec", "exports-cleanup", session_key("cleanup"))
    job = dict(ip="3.91.44.17", ua=BOTO_UA, behaviour="benign-data-job", malicious=False)
    for n in range(10):
        key = f"exports/2025/11/export-{n:04d}.csv.gz"
        s.add(
            cleaner,
            "s3.amazonaws.com",
            "DeleteObject",
            data_event=True,
            params=s3_params("acme-orders-exports-prod", key),
            extra=s3_data_extra("acme-orders-exports-prod", key),
            after=0.5,
            **job,
        )
    ops = iam_user("platform-ops", key_of("platform-ops"))
    own_key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/4f8e2c1a-77b3-4d0e-9a61-2b5c8d9e0f13"
    admin = dict(ip=OFFICE_IP, ua=CLI_UA, behaviour="benign-admin", malicious=False)
    for n in range(4):
        key = f"reports/2026/q{n + 1}.parquet"
        s.add(
            ops,
            "s3.amazonaws.com",
            "CopyObject",
            data_event=True,
            params=s3_params(
                "acme-finance-reports",
                key,
                **{
                    "x-amz-copy-source": f"acme-finance-reports/{key}",
                    "x-amz-server-side-encryption": "aws:kms",
                    "x-amz-server-side-encryption-aws-kms-key-id": own_key,
                    "x-amz-metadata-directive": "COPY",
                },
            ),
            extra=s3_data_extra("acme-finance-reports", key, sse="SSE_KMS"),
            after=2,
            **admin,
        )
    s.add(
        ops,
        "s3.amazonaws.com",
        "PutObject",
        data_event=True,
        params=s3_params("acme-shared-datasets", "README.txt"),
        extra=s3_data_extra("acme-shared-datasets", "README.txt"),
        after=300,
        **admin,
    )
    dev = iam_user("grace.dev", key_of("grace.dev"))
    s.add(
        dev,
        "sts.amazonaws.com",
        "GetSessionToken",
        params={
            "durationSeconds": 43200,
            "serialNumber": f"arn:aws:iam::{ACCOUNT}:mfa/grace.dev",
            "tokenCode": "HIDDEN_DUE_TO_SECURITY_REASONS",
        },
        response={
            "credentials": {
                "accessKeyId": session_key("grace-session"),
                "expiration": "Nov 28, 2026, 9:00:00 PM",
            }
        },
        ip=OFFICE_IP,
        ua=CLI_UA,
        behaviour="benign-admin",
        malicious=False,
        after=28000,
    )
    s.add(gha, "sts.amazonaws.com", "GetCallerIdentity", after=600, **ci)
    return s


def reporting_history() -> Scenario:
    s = Scenario(
        "benign-reporting-history",
        "The reporting service user's usual work on the nights before its key leaks: the "
        "same job, from the same server and SDK, at the same hour. What the leaked-key "
        "story's new address and user agent differ from.",
        datetime(2026, 11, 19, 2, 0, tzinfo=UTC),
    )
    user = iam_user("svc-reporting", key_of("svc-reporting"))
    k = dict(ip="52.4.120.33", ua=BOTO_UA, behaviour="benign-data-job", malicious=False)
    for night in range(3):
        s.clock = datetime(2026, 11, 19 + night, 2, 0, tzinfo=UTC)
        s.add(user, "sts.amazonaws.com", "GetCallerIdentity", **k)
        s.add(
            user,
            "athena.amazonaws.com",
            "StartQueryExecution",
            params={
                "queryString": "SELECT date, sum(total) FROM orders GROUP BY 1",
                "workGroup": "reporting",
                "resultConfiguration": {
                    "outputLocation": "s3://acme-athena-results/query-results/"
                },
            },
            response={"queryExecutionId": str(uuid.uuid5(NAMESPACE, f"report-{night}"))},
            after=2,
            **k,
        )
        s.add(
            user,
            "athena.amazonaws.com",
            "GetQueryExecution",
            params={"queryExecutionId": str(uuid.uuid5(NAMESPACE, f"report-{night}"))},
            after=20,
            **k,
        )
        report = f"daily/2026-11-{19 + night}.csv"
        s.add(
            user,
            "s3.amazonaws.com",
            "PutObject",
            data_event=True,
            params=s3_params("acme-reports", report),
            extra=s3_data_extra("acme-reports", report),
            after=5,
            **k,
        )
    return s


# --------------------------------------------------------------------------------------
# Intrusions
# --------------------------------------------------------------------------------------


def leaked_user_key() -> Scenario:
    s = Scenario(
        "attack-leaked-iam-user-key",
        "The issue's story: a long-term key of the reporting service user leaks from a public "
        "repository. A secret scanner validates it, the intruder enumerates (many calls "
        "denied), grants the user `*:*` with an inline policy, issues itself a second key and "
        "uses it.",
        datetime(2026, 11, 22, 3, 12, tzinfo=UTC),
    )
    user = iam_user("svc-reporting", key_of("svc-reporting"))
    s.add(
        user,
        "sts.amazonaws.com",
        "GetCallerIdentity",
        ip=INTRUDER_IP,
        ua=TRUFFLEHOG_UA,
        behaviour="credential-abuse",
        malicious=True,
    )
    recon_ua = BOTO_UA.replace(
        "os/linux#5.10.227-219.884.amzn2.x86_64", "os/linux#6.8.0-48-generic"
    )
    k = dict(ip=INTRUDER_IP2, ua=recon_ua, behaviour="discovery", malicious=True)
    for source, name, ok in (
        ("sts.amazonaws.com", "GetCallerIdentity", True),
        ("iam.amazonaws.com", "GetUser", True),
        ("iam.amazonaws.com", "ListAttachedUserPolicies", True),
        ("iam.amazonaws.com", "ListUserPolicies", True),
        ("iam.amazonaws.com", "ListUsers", False),
        ("iam.amazonaws.com", "ListRoles", False),
        ("iam.amazonaws.com", "GetAccountAuthorizationDetails", False),
        ("s3.amazonaws.com", "ListBuckets", True),
        ("ec2.amazonaws.com", "DescribeInstances", False),
        ("ec2.amazonaws.com", "DescribeRegions", True),
        ("secretsmanager.amazonaws.com", "ListSecrets", False),
        ("lambda.amazonaws.com", "ListFunctions20150331", False),
        ("rds.amazonaws.com", "DescribeDBInstances", False),
        ("organizations.amazonaws.com", "DescribeOrganization", False),
        ("kms.amazonaws.com", "ListKeys", False),
        ("dynamodb.amazonaws.com", "ListTables", False),
    ):
        params = {"userName": "svc-reporting"} if "User" in name and name != "ListUsers" else None
        s.add(
            user,
            source,
            name,
            params=params,
            error=None if ok else denied(user, source, name),
            read_only=True,
            after=4,
            **k,
        )
    s.add(
        user,
        "iam.amazonaws.com",
        "PutUserPolicy",
        params={
            "userName": "svc-reporting",
            "policyName": "reporting-maintenance",
            "policyDocument": policy({"Effect": "Allow", "Action": "*", "Resource": "*"}),
        },
        ip=INTRUDER_IP2,
        ua=recon_ua,
        behaviour="privilege-escalation",
        malicious=True,
        after=95,
    )
    s.add(
        user,
        "iam.amazonaws.com",
        "CreateAccessKey",
        params={"userName": "svc-reporting"},
        response={
            "accessKey": {
                "accessKeyId": key_of("svc-reporting-2"),
                "status": "Active",
                "userName": "svc-reporting",
            }
        },
        ip=INTRUDER_IP2,
        ua=recon_ua,
        behaviour="persistence",
        malicious=True,
        after=30,
    )
    second = iam_user("svc-reporting", key_of("svc-reporting-2"))
    for source, name, params in (
        ("iam.amazonaws.com", "ListUsers", None),
        ("iam.amazonaws.com", "ListRoles", None),
        ("secretsmanager.amazonaws.com", "ListSecrets", None),
        ("secretsmanager.amazonaws.com", "GetSecretValue", {"secretId": "prod/payments/stripe"}),
        ("secretsmanager.amazonaws.com", "GetSecretValue", {"secretId": "prod/orders/db"}),
    ):
        behaviour = "credential-access" if name == "GetSecretValue" else "discovery"
        s.add(
            second,
            source,
            name,
            params=params,
            ip=INTRUDER_IP,
            ua=recon_ua,
            behaviour=behaviour,
            malicious=True,
            after=20,
        )
    return s


def s3_ransomware() -> Scenario:
    s = Scenario(
        "attack-s3-ransomware",
        "S3 ransomware with a stolen deploy key: list the bucket, suspend versioning, "
        "re-encrypt every object in place with a customer-provided key (SSE-C), bulk delete "
        "the old versions, upload a ransom note, and remove the bucket's access logging.",
        datetime(2026, 11, 24, 1, 5, tzinfo=UTC),
    )
    who = iam_user("deploy-legacy", key_of("deploy-legacy"))
    bucket = "acme-customer-documents"
    k = dict(ip=INTRUDER_IP, ua=CLI_UA, behaviour="s3-ransomware", malicious=True)
    s.add(
        who,
        "s3.amazonaws.com",
        "ListBuckets",
        params={"Host": "s3.amazonaws.com"},
        read_only=True,
        **k,
    )
    s.add(
        who, "s3.amazonaws.com", "GetBucketVersioning", params=s3_params(bucket, versioning=""), **k
    )
    s.add(
        who,
        "s3.amazonaws.com",
        "PutBucketVersioning",
        params=s3_params(
            bucket,
            versioning="",
            VersioningConfiguration={
                "Status": "Suspended",
                "xmlns": "http://s3.amazonaws.com/doc/2006-03-01/",
            },
        ),
        **k,
    )
    s.add(
        who,
        "s3.amazonaws.com",
        "ListObjects",
        data_event=True,
        params=s3_params(bucket, **{"list-type": "2", "max-keys": "1000", "prefix": ""}),
        extra=s3_data_extra(bucket, None),
        **k,
    )
    keys = [f"contracts/2026/{n:04d}.pdf" for n in range(1, 13)]
    for key in keys:
        s.add(
            who,
            "s3.amazonaws.com",
            "CopyObject",
            data_event=True,
            params=s3_params(
                bucket,
                key,
                **{
                    "x-amz-copy-source": f"{bucket}/{key}",
                    "x-amz-server-side-encryption-customer-algorithm": "AES256",
                    "x-amz-metadata-directive": "REPLACE",
                },
            ),
            extra=s3_data_extra(bucket, key, sse="SSE_C"),
            after=1,
            **k,
        )
    for _batch in range(3):
        s.add(
            who,
            "s3.amazonaws.com",
            "DeleteObjects",
            data_event=True,
            params=s3_params(bucket, delete=""),
            extra=s3_data_extra(bucket, None),
            after=3,
            **k,
        )
    s.add(
        who,
        "s3.amazonaws.com",
        "PutObject",
        data_event=True,
        params=s3_params(bucket, "README-HOW-TO-RECOVER-YOUR-FILES.txt"),
        extra=s3_data_extra(bucket, "README-HOW-TO-RECOVER-YOUR-FILES.txt"),
        after=5,
        **k,
    )
    s.add(
        who,
        "s3.amazonaws.com",
        "PutBucketLogging",
        params=s3_params(
            bucket,
            logging="",
            BucketLoggingStatus={"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"},
        ),
        ip=INTRUDER_IP,
        ua=CLI_UA,
        behaviour="defense-evasion",
        malicious=True,
        after=10,
    )
    for n in range(6):
        key = f"invoices/2026/11/inv-{n:05d}.pdf"
        s.add(
            who,
            "s3.amazonaws.com",
            "DeleteObject",
            data_event=True,
            params=s3_params("acme-invoices", key),
            extra=s3_data_extra("acme-invoices", key),
            after=1,
            **k,
        )
    return s


def kms_lockout() -> Scenario:
    s = Scenario(
        "attack-kms-lockout",
        "KMS destruction by an intruder holding an admin role: the key policy is replaced so "
        "that only the intruder's account can use the key, a grant is given to an outside "
        "principal, a bucket's default encryption is switched to the intruder's key, then the "
        "key is disabled and scheduled for deletion after the minimum 7 days.",
        datetime(2026, 11, 25, 4, 0, tzinfo=UTC),
    )
    who = assumed_role("ops-admin", "ops-admin-session", session_key("ops-admin-stolen"))
    key_id = "7b8c9d0e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"
    k = dict(ip=INTRUDER_IP2, ua=GO_SDK_UA, behaviour="kms-destruction", malicious=True)
    s.add(who, "kms.amazonaws.com", "ListKeys", read_only=True, **k)
    s.add(who, "kms.amazonaws.com", "DescribeKey", params={"keyId": key_id}, **k)
    s.add(
        who,
        "kms.amazonaws.com",
        "PutKeyPolicy",
        params={
            "keyId": key_id,
            "policyName": "default",
            "bypassPolicyLockoutSafetyCheck": True,
            "policy": policy(
                {
                    "Sid": "owner",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{OUTSIDE_ACCOUNT}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ),
        },
        after=20,
        **k,
    )
    s.add(
        who,
        "kms.amazonaws.com",
        "CreateGrant",
        params={
            "keyId": key_arn,
            "granteePrincipal": f"arn:aws:iam::{OUTSIDE_ACCOUNT}:role/ops",
            "operations": ["Decrypt", "Encrypt", "GenerateDataKey", "ReEncryptFrom"],
        },
        response={"grantId": "a" * 64},
        after=10,
        **k,
    )
    s.add(
        who,
        "s3.amazonaws.com",
        "PutBucketEncryption",
        params=s3_params(
            "acme-finance-reports",
            encryption="",
            ServerSideEncryptionConfiguration={
                "Rule": {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": f"arn:aws:kms:us-east-1:{OUTSIDE_ACCOUNT}:key/2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a",  # noqa: E501
                    },
                    "BucketKeyEnabled": False,
                }
            },
        ),
        ip=INTRUDER_IP2,
        ua=GO_SDK_UA,
        behaviour="s3-ransomware",
        malicious=True,
        after=30,
    )
    s.add(who, "kms.amazonaws.com", "DisableKey", params={"keyId": key_id}, after=40, **k)
    s.add(
        who,
        "kms.amazonaws.com",
        "ScheduleKeyDeletion",
        params={"keyId": key_id, "pendingWindowInDays": 7},
        response={
            "keyId": key_arn,
            "deletionDate": "Dec 2, 2026, 4:01:42 AM",
            "keyState": "PendingDeletion",
            "pendingWindowInDays": 7,
        },
        after=5,
        **k,
    )
    return s


def log_destruction() -> Scenario:
    s = Scenario(
        "attack-log-destruction",
        "Defence evasion across the account's detectors, then the logs: CloudTrail log file "
        "validation off, GuardDuty auto-archiving everything, Security Hub, Macie, Config, "
        "Access Analyzer and Bedrock invocation logging off, WAF removed from the load "
        "balancer, a 1-day expiry on the trail's own bucket and the trail's log group deleted.",
        datetime(2026, 11, 26, 2, 30, tzinfo=UTC),
    )
    who = assumed_role("ops-admin", "ops-admin-session", session_key("ops-admin-stolen-2"))
    k = dict(ip=INTRUDER_IP, ua=GO_SDK_UA, behaviour="defense-evasion", malicious=True)
    s.add(
        who,
        "cloudtrail.amazonaws.com",
        "UpdateTrail",
        params={"name": "org-trail", "enableLogFileValidation": False},
        **k,
    )
    s.add(
        who,
        "guardduty.amazonaws.com",
        "CreateFilter",
        params={
            "detectorId": "b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9",
            "name": "noise",
            "action": "ARCHIVE",
            "rank": 1,
            "findingCriteria": {"criterion": {"severity": {"gte": 0}}},
        },
        after=20,
        **k,
    )
    s.add(
        who,
        "guardduty.amazonaws.com",
        "ArchiveFindings",
        params={
            "detectorId": "b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9",
            "findingIds": ["12c4a1b2c3d4e5f6a7b8c9d0e1f2a3b4"],
        },
        after=10,
        **k,
    )
    s.add(who, "securityhub.amazonaws.com", "DisableSecurityHub", after=15, **k)
    s.add(who, "macie2.amazonaws.com", "DisableMacie", after=10, **k)
    s.add(
        who,
        "config.amazonaws.com",
        "DeleteConfigurationRecorder",
        params={"configurationRecorderName": "default"},
        after=10,
        **k,
    )
    s.add(
        who,
        "access-analyzer.amazonaws.com",
        "DeleteAnalyzer",
        params={"analyzerName": "org-analyzer"},
        after=10,
        **k,
    )
    s.add(who, "bedrock.amazonaws.com", "DeleteModelInvocationLoggingConfiguration", after=10, **k)
    s.add(
        who,
        "wafv2.amazonaws.com",
        "DisassociateWebACL",
        params={
            "resourceArn": f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:loadbalancer/app/orders/50dc6c495c0c9188"  # noqa: E501
        },
        after=10,
        **k,
    )
    s.add(
        who,
        "s3.amazonaws.com",
        "PutBucketLifecycle",
        params=s3_params(
            "acme-cloudtrail-logs-111122223333",
            lifecycle="",
            LifecycleConfiguration={
                "Rule": [
                    {
                        "ID": "cleanup",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "Expiration": {"Days": 1},
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                    }
                ]
            },
        ),
        after=20,
        **k,
    )
    s.add(
        who,
        "logs.amazonaws.com",
        "DeleteLogGroup",
        params={"logGroupName": "aws-cloudtrail-logs-111122223333-org-trail"},
        after=10,
        **k,
    )
    return s


def console_credential_abuse() -> Scenario:
    s = Scenario(
        "attack-console-credential-abuse",
        "Credential abuse against the console and STS: a password spray then a sign-in "
        "without MFA, failed MFA checks on another user, and a stolen key turned into a "
        "console session (GetFederationToken then GetSigninToken, as aws_consoler does) and "
        "into a session token from a new place.",
        datetime(2026, 11, 27, 22, 10, tzinfo=UTC),
    )
    k = dict(ip=INTRUDER_IP, ua=CONSOLE_UA, behaviour="credential-abuse", malicious=True)
    login = {
        "LoginTo": "https://console.aws.amazon.com/console/home",
        "MobileVersion": "No",
        "MFAUsed": "No",
    }
    victim = "henry.sales"
    for _ in range(7):
        s.add(
            {
                "type": "IAMUser",
                "principalId": "AIDA" + _tag(victim, 17),
                "accountId": ACCOUNT,
                "accessKeyId": "",
                "userName": victim,
            },
            "signin.amazonaws.com",
            "ConsoleLogin",
            extra={
                "errorMessage": "Failed authentication",
                "additionalEventData": login,
                "responseElements": {"ConsoleLogin": "Failure"},
            },
            after=6,
            **k,
        )
    s.add(
        iam_user(victim, session_key(victim), console=True, mfa=False),
        "signin.amazonaws.com",
        "ConsoleLogin",
        response={"ConsoleLogin": "Success"},
        extra={"additionalEventData": login},
        after=6,
        **k,
    )
    other = {
        "type": "IAMUser",
        "principalId": "AIDA" + _tag("ivy.finance", 17),
        "accountId": ACCOUNT,
        "accessKeyId": "",
        "userName": "ivy.finance",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/ivy.finance",
    }
    for _ in range(4):
        s.add(
            other,
            "signin.amazonaws.com",
            "CheckMfa",
            response={"CheckMfa": "Failure"},
            extra={"additionalEventData": {"MfaType": "Virtual MFA"}},
            after=9,
            **k,
        )
    user = iam_user("svc-reporting", key_of("svc-reporting"))
    c = dict(ip=INTRUDER_IP2, ua=BOTO_UA, behaviour="credential-abuse", malicious=True)
    s.add(
        user,
        "sts.amazonaws.com",
        "GetFederationToken",
        params={
            "name": "consoler",
            "durationSeconds": 43200,
            "policy": policy({"Effect": "Allow", "Action": "*", "Resource": "*"}),
        },
        response={
            "federatedUser": {
                "federatedUserId": f"{ACCOUNT}:consoler",
                "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/consoler",
            }
        },
        after=600,
        **c,
    )
    fed = {
        "type": "FederatedUser",
        "principalId": f"{ACCOUNT}:consoler",
        "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/consoler",
        "accountId": ACCOUNT,
        "accessKeyId": session_key("consoler"),
        "sessionContext": {
            "sessionIssuer": {
                "type": "IAMUser",
                "principalId": "AIDA" + _tag("svc-reporting", 17),
                "arn": f"arn:aws:iam::{ACCOUNT}:user/svc-reporting",
                "accountId": ACCOUNT,
                "userName": "svc-reporting",
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": "2026-11-27T22:21:00Z", "mfaAuthenticated": "false"},
        },
    }
    s.add(
        fed,
        "signin.amazonaws.com",
        "GetSigninToken",
        ip=INTRUDER_IP2,
        ua="python-requests/2.32.3",
        behaviour="credential-abuse",
        malicious=True,
        response={"GetSigninToken": "Success"},
        extra={"additionalEventData": {"MobileVersion": "No"}},
        after=3,
    )
    s.add(
        user,
        "sts.amazonaws.com",
        "GetSessionToken",
        params={"durationSeconds": 129600},
        response={
            "credentials": {
                "accessKeyId": session_key("svc-reporting-session"),
                "expiration": "Nov 29, 2026, 10:21:00 AM",
            }
        },
        after=30,
        **c,
    )
    return s


SCENARIOS: tuple[Callable[[], Scenario], ...] = (
    terraform_apply_destroy,
    ci_deploys,
    admins_at_work,
    root_morning,
    failing_app,
    retention_and_rotation,
    backups_to_org_account,
    data_jobs,
    reporting_history,
    leaked_user_key,
    s3_ransomware,
    kms_lockout,
    log_destruction,
    console_credential_abuse,
)


def main() -> int:
    for make in SCENARIOS:
        scenario = make()
        folder = OUT / ("attacks" if scenario.name.startswith("attack-") else "benign")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{scenario.name}.json"
        path.write_text(json.dumps(scenario.document(), indent=1) + "\n")
        print(f"{path.relative_to(OUT.parent.parent.parent)}: {len(scenario.records)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
