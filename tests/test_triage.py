"""Triage of findings: outcome, actor class, rank, and Sigma-filter suppressions.

One case of real CloudTrail records, captured and parsed as a responder would, holds a
scenario per question: calls that all failed, some failed, all worked; the same calls by a
person at the console, the aws-cli, Terraform (by agent and by role), CloudFormation and
an AWS service; an automation role used by hand and from a new address.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import cloudir, ct_event

ACCOUNT = "111111111111"
TERRAFORM_UA = (
    "APN/1.0 HashiCorp/1.0 Terraform/1.5.7 (+https://www.terraform.io) "
    "terraform-provider-aws/5.31.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5"
)
CONSOLE_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CI_ADDRESS, HOME_ADDRESS, NEW_ADDRESS = "192.0.2.10", "198.51.100.7", "203.0.113.99"


def at(minute: int) -> str:
    return f"2026-03-01T10:{minute:02d}:00Z"


def role(name: str, session: str = "session") -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROATEST:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIATEST",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROATEST",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
                "accountId": ACCOUNT,
                "userName": name,
            },
            "attributes": {"creationDate": at(0), "mfaAuthenticated": "false"},
        },
    }


DENIED = {"errorCode": "AccessDenied", "errorMessage": "not authorized"}
TF_ROLE = role("terraform-ci")

EVENTS = [
    # outcome: every call failed / some failed / all worked
    ct_event(at(1), "PutUserPolicy", eventSource="iam.amazonaws.com", **DENIED),
    ct_event(at(2), "PutUserPolicy", eventSource="iam.amazonaws.com", **DENIED),
    ct_event(at(3), "CreateLoginProfile", eventSource="iam.amazonaws.com"),
    ct_event(at(4), "CreateLoginProfile", eventSource="iam.amazonaws.com", **DENIED),
    ct_event(at(5), "AttachUserPolicy", eventSource="iam.amazonaws.com"),
    ct_event(at(6), "DeleteTrail", eventSource="cloudtrail.amazonaws.com", **DENIED),
    # actors, one eventName each
    ct_event(at(7), "CreateUser", userAgent=CONSOLE_UA, sessionCredentialFromConsole="true"),
    ct_event(at(8), "CreateGroup", userAgent="aws-cli/2.15.0 Python/3.11.6 Linux/6.5"),
    ct_event(at(9), "CreateRole", userAgent=TERRAFORM_UA, sourceIPAddress=CI_ADDRESS),
    ct_event(
        at(10),
        "CreateInstanceProfile",
        userIdentity=TF_ROLE,
        sourceIPAddress=CI_ADDRESS,
        userAgent="aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5",
    ),
    ct_event(
        at(11),
        "CreateStack",
        userIdentity={
            **role("app-deploy", "AWSCloudFormation"),
            "invokedBy": "cloudformation.amazonaws.com",
        },
        sourceIPAddress="cloudformation.amazonaws.com",
        userAgent="cloudformation.amazonaws.com",
    ),
    ct_event(
        at(12),
        "AssumeRole",
        eventSource="sts.amazonaws.com",
        userIdentity={"type": "AWSService", "invokedBy": "ec2.amazonaws.com"},
        sourceIPAddress="ec2.amazonaws.com",
        userAgent="ec2.amazonaws.com",
    ),
    # ranking: the Terraform role applies from CI, then is used by hand and from elsewhere
    ct_event(
        at(20),
        "CreatePolicy",
        userIdentity=TF_ROLE,
        userAgent=TERRAFORM_UA,
        sourceIPAddress=CI_ADDRESS,
    ),
    ct_event(
        at(21),
        "CreateAccessKey",
        userIdentity=TF_ROLE,
        userAgent=TERRAFORM_UA,
        sourceIPAddress=CI_ADDRESS,
    ),
    ct_event(
        at(30),
        "UpdateAssumeRolePolicy",
        userIdentity=TF_ROLE,
        userAgent="aws-cli/2.15.0 Python/3.11.6",
        sourceIPAddress=HOME_ADDRESS,
    ),
    ct_event(
        at(31),
        "PutRolePolicy",
        userIdentity=TF_ROLE,
        userAgent=TERRAFORM_UA,
        sourceIPAddress=NEW_ADDRESS,
    ),
    ct_event(at(32), "ListUsers", eventSource="iam.amazonaws.com"),
]

RULES = {
    # name: (eventName, level, extra selection)
    "attempted": ("PutUserPolicy", "high", ""),
    "mixed": ("CreateLoginProfile", "high", ""),
    "succeeded": ("AttachUserPolicy", "high", ""),
    "denied_by_design": ("DeleteTrail", "high", "    errorCode: AccessDenied\n"),
    "console": ("CreateUser", "low", ""),
    "cli": ("CreateGroup", "low", ""),
    "terraform_ua": ("CreateRole", "low", ""),
    "terraform_role": ("CreateInstanceProfile", "low", ""),
    "cloudformation": ("CreateStack", "low", ""),
    "aws_service": ("AssumeRole", "low", ""),
    "tf_policy": ("CreatePolicy", "high", ""),
    "tf_key": ("CreateAccessKey", "critical", ""),
    "tf_by_hand": ("UpdateAssumeRolePolicy", "medium", ""),
    "tf_new_address": ("PutRolePolicy", "medium", ""),
    "discovery": ("ListUsers", "low", ""),
    "tf_mixed": ("[CreatePolicy, UpdateAssumeRolePolicy]", "high", ""),
}


def rule_id(name: str) -> str:
    return f"00000000-0000-4000-8000-{sorted(RULES).index(name):012d}"


def write_rules(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (event, level, extra) in RULES.items():
        (folder / f"{name}.yml").write_text(
            f"title: {name}\nid: {rule_id(name)}\nname: cloudir_test_{name}\n"
            f"status: test\nlogsource: {{product: aws, service: cloudtrail}}\nlevel: {level}\n"
            f"detection:\n  selection:\n    eventName: {event}\n{extra}  condition: selection\n"
        )
    return folder


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triage")
    logs = root / "logs"
    logs.mkdir()
    (logs / "trail.json").write_text(json.dumps({"Records": EVENTS}))
    case = root / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(logs))
    assert captured.code == 0, captured.stderr
    timeline = cloudir("timeline", "--case", str(case))
    assert timeline.code == 0, timeline.stderr
    return case


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rules(tmp_path_factory.mktemp("triage-rules") / "rules")


def detect(case: Path, rules: Path, *suppress: Path) -> tuple[dict[str, Any], Any]:
    from cloudir.analyze import detect as engine
    from cloudir.case import Case

    result = engine.detect(Case.open(case), [rules], builtin=False, suppress=list(suppress))
    document = json.loads((case / "findings/findings.json").read_text())
    return document, result


@pytest.fixture(scope="module")
def findings(case: Path, rules: Path) -> dict[str, dict[str, Any]]:
    document, _ = detect(case, rules)
    assert document["suppressions"] == []
    return {f["title"]: f for f in document["findings"]}


def test_outcome_of_every_failed_call_is_attempted_and_drops_one_level(
    findings: dict[str, dict[str, Any]],
) -> None:
    attempted = findings["attempted"]
    assert attempted["outcome"] == "attempted"
    assert (attempted["rule_level"], attempted["level"]) == ("high", "medium")
    assert attempted["level_note"] == (
        "attempted: every matched call failed, level lowered from high"
    )


def test_mixed_and_succeeded_keep_their_level(findings: dict[str, dict[str, Any]]) -> None:
    for title, outcome in (("mixed", "mixed"), ("succeeded", "succeeded")):
        finding = findings[title]
        assert finding["outcome"] == outcome
        assert finding["level"] == finding["rule_level"] == "high"
        assert finding["level_note"] is None


def test_a_rule_looking_for_failures_keeps_its_level(findings: dict[str, dict[str, Any]]) -> None:
    finding = findings["denied_by_design"]
    assert finding["outcome"] == "attempted"
    assert finding["level"] == "high"
    assert finding["level_note"] is None


@pytest.mark.parametrize(
    ("title", "actor", "detail"),
    [
        ("console", "human-console", "console"),
        ("cli", "cli-sdk", "aws-cli"),
        ("terraform_ua", "automation", "terraform"),
        ("terraform_role", "automation", "terraform"),
        ("cloudformation", "automation", "cloudformation"),
        ("aws_service", "aws-service", "ec2.amazonaws.com"),
    ],
)
def test_actor_classes(
    findings: dict[str, dict[str, Any]], title: str, actor: str, detail: str
) -> None:
    finding = findings[title]
    assert (finding["actor"], finding["actor_detail"]) == (actor, detail)
    assert finding["actors"] == {actor: 1}
    assert finding["automation_misused"] is False


def test_automation_ranks_below_people_unless_its_identity_is_misused(
    findings: dict[str, dict[str, Any]],
) -> None:
    by_rank = sorted(findings.values(), key=lambda f: f["rank"])
    assert [f["rank"] for f in by_rank] == list(range(1, len(findings) + 1))
    order = [f["title"] for f in by_rank]
    # the Terraform apply's own critical key and high policy rank below a low aws-cli call
    assert order.index("cli") < order.index("tf_key") < order.index("tf_policy")
    assert findings["tf_key"]["actor"] == "automation"
    by_hand = findings["tf_by_hand"]
    assert (by_hand["actor"], by_hand["automation_misused"]) == ("cli-sdk", True)
    assert "used by hand" in by_hand["actor_note"]
    moved = findings["tf_new_address"]
    assert (moved["actor"], moved["automation_misused"]) == ("automation", True)
    assert NEW_ADDRESS in moved["actor_note"]
    # misused automation ranks with people: above every automation finding
    for misused in ("tf_by_hand", "tf_new_address"):
        assert order.index(misused) < order.index("tf_key")
    assert order[-1] in ("terraform_ua", "terraform_role", "cloudformation", "aws_service")


def test_python_and_sql_classifiers_agree() -> None:
    import duckdb

    from cloudir.analyze.actors import actor_sql, classify
    from cloudir.analyze.sigma.fields import json_path

    sql = actor_sql(lambda p: f"json_extract_string(raw, '{json_path(tuple(p.split('.')))}')")
    con = duckdb.connect()
    samples = [*EVENTS, ct_event(at(40), userAgent=None), ct_event(at(41), userAgent="curl/8")]
    samples.append(ct_event(at(42), userIdentity=role("cdk-hnb659fds-cfn-exec-role-1-eu"),
                            userAgent="Boto3/1.34 md/Botocore#1.34"))  # fmt: skip
    for event in samples:
        kind, detail, named = con.execute(
            f"SELECT {sql.kind}, {sql.detail}, {sql.automation_identity} "
            "FROM (SELECT ?::VARCHAR AS raw)",
            [json.dumps(event)],
        ).fetchall()[0]
        expected = classify(event)
        assert (kind, detail, named) == (
            expected.kind,
            expected.detail,
            expected.automation_identity,
        ), event["eventName"]
    assert classify(samples[-1]).detail == "cdk"
    assert classify(samples[-2]).detail == "other"
    assert classify(samples[-3]).kind is None


AGENT_FAMILIES = {
    "aws-cli/2.22.4 md/awscrt#0.22.0 ua/2.0 os/linux#6.8.0 lang/python#3.12.6": "aws-cli",
    "aws-cli/1.18.69 Python/3.8.10 Linux/5.4.0 botocore/1.17.42": "aws-cli",
    "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1.0 lang/python#3.11.2": "boto3",
    "Botocore/1.29.0 Python/3.9.16 Linux/5.10": "boto3",  # one family with Boto3
    "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux api/sts#1.30.3": "aws-sdk-go",
    "aws-sdk-java/1.12.600 Linux/5.10 OpenJDK_64-Bit_Server_VM/17": "aws-sdk-java",
    "aws-sdk-js/3.600.0 ua/2.0 os/linux#5.10 lang/js md/nodejs#20.15.0": "aws-sdk-js",
    "APN/1.0 HashiCorp/1.0 Terraform/1.9.2 aws-sdk-go-v2/1.30.3": "terraform",
    "pulumi-resource-aws/6.45.0 aws-sdk-go/1.50.36 (go1.22.5; linux; amd64)": "pulumi",
    "cloudformation.amazonaws.com": "cloudformation",
    "TruffleHog": "secret-scanner",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0": "console",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.750]": "console",
    "python-requests/2.32.3": "python-requests",
    "curl/8.5.0": "curl",
    "AWS Internal": "aws-service",
    "athena.amazonaws.com": "aws-service",
    "enumerate-iam/1.0": "other",
    "": None,
}


def test_python_and_sql_agent_families_agree() -> None:
    """`cloudir.key_new_agent_family` reads the SQL; the reference evaluator the Python."""
    import duckdb

    from cloudir.analyze.actors import agent_family, agent_family_sql

    con = duckdb.connect()
    for agent, family in AGENT_FAMILIES.items():
        query = f"SELECT {agent_family_sql('ua')} FROM (SELECT ?::VARCHAR AS ua)"
        (sql,) = con.execute(query, [agent]).fetchall()[0]
        assert (agent_family(agent), sql) == (family, family), agent
    assert agent_family(None) is None


FILTER = """title: Terraform CI role
id: 5b0c7a4e-0d7e-4a7e-9a55-2f3f6a0c1e01
status: test
logsource:
    product: aws
    service: cloudtrail
filter:
    rules:
        - {rules}
    selection:
        userIdentity.sessionContext.sessionIssuer.userName: terraform-ci
        userAgent|contains: Terraform/
    condition: not selection
"""


def test_suppression_filters_are_counted_never_hidden(
    case: Path, rules: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "suppress"
    folder.mkdir()
    names = "\n        - ".join([rule_id("tf_key"), "cloudir_test_tf_mixed"])  # id, name
    (folder / "terraform-ci.yml").write_text(FILTER.format(rules=names))
    unknown = FILTER.replace("5b0c7a4e", "6b0c7a4e").replace("Terraform CI role", "Typo")
    (folder / "typo.yml").write_text(unknown.format(rules="no-such-rule"))
    document, result = detect(case, rules, folder)
    titles = {f["title"]: f for f in document["findings"]}
    assert "tf_key" not in titles  # every match suppressed: gone from findings, but counted
    mixed = titles["tf_mixed"]  # the Terraform apply suppressed, the use by hand kept
    assert (mixed["count"], mixed["suppressed"], mixed["actor"]) == (1, 1, "cli-sdk")
    entries = {s["title"]: s for s in document["suppressions"]}
    terraform = entries["Terraform CI role"]
    assert terraform["suppressed"] == 2
    assert sorted(terraform["rules"]) == sorted([rule_id("tf_key"), rule_id("tf_mixed")])
    assert terraform["path"] == str(folder / "terraform-ci.yml")
    assert terraform["filter_id"] == "5b0c7a4e-0d7e-4a7e-9a55-2f3f6a0c1e01"
    assert len(terraform["event_ids_sample"]) == 2
    typo = entries["Typo"]
    assert (typo["suppressed"], typo["rules"], typo["event_ids_sample"]) == (0, [], [])
    assert typo["not_applied"] == [
        {"rule": "no-such-rule", "reason": "no loaded rule has this id or name"}
    ]
    assert any("no-such-rule" in w for w in result.warnings)
    assert titles["tf_policy"]["suppressed"] == 0  # not named: untouched
    assert titles["tf_policy"]["count"] == 1


def test_suppressing_every_match_of_a_finding_leaves_it_counted(
    case: Path, rules: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "suppress"
    folder.mkdir()
    (folder / "f.yml").write_text(FILTER.format(rules=rule_id("tf_new_address")))
    document, _ = detect(case, rules, folder)
    assert "tf_new_address" not in {f["title"] for f in document["findings"]}
    [entry] = document["suppressions"]
    assert entry["suppressed"] == 1


def test_a_filter_for_any_rule_and_one_outside_its_logsource(
    case: Path, rules: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "suppress"
    folder.mkdir()
    (folder / "ci.yml").write_text(
        "title: CI runners\nlogsource: {product: aws}\nfilter:\n  rules: any\n"
        f"  runners:\n    sourceIPAddress|cidr: {CI_ADDRESS}/32\n  condition: not runners\n"
    )
    (folder / "linux.yml").write_text(
        "title: Linux only\nlogsource: {product: linux}\nfilter:\n"
        f"  rules: [{rule_id('cli')}]\n  s: {{program: cron}}\n  condition: not s\n"
    )
    document, _ = detect(case, rules, folder)
    entries = {s["title"]: s for s in document["suppressions"]}
    # CreateRole, CreateInstanceProfile, CreateAccessKey, and CreatePolicy for two rules
    assert entries["CI runners"]["suppressed"] == 5
    assert len(entries["CI runners"]["rules"]) == len(RULES)
    assert len(entries["CI runners"]["event_ids_sample"]) == 4  # distinct events
    titles = {f["title"] for f in document["findings"]}
    assert not titles & {"terraform_ua", "terraform_role", "tf_key", "tf_policy"}
    assert entries["Linux only"]["suppressed"] == 0
    assert entries["Linux only"]["not_applied"][0]["reason"].startswith("the rule's logsource")
    assert "cli" in titles


def test_detect_cli_shows_outcome_actor_and_the_suppressed_count(
    case: Path, rules: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "suppress"
    folder.mkdir()
    (folder / "terraform-ci.yml").write_text(FILTER.format(rules=rule_id("tf_key")))
    (folder / "typo.yml").write_text(FILTER.replace("5b0c", "7b0c").format(rules="nope"))
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin",
        "--suppress", str(folder), "--fail-on", "critical",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    header = result.stdout.splitlines()[1]
    assert "outcome" in header and "actor" in header
    assert "attempted (attempted)" in result.stdout  # the title line says it dropped
    assert "denied_by_design (attempted)" not in result.stdout
    assert "attempted" in result.stdout and "automation (terraform)" in result.stdout
    assert "1 match suppressed by 2 filters" in result.stderr
    assert "warning: suppression" in result.stderr and "'nope'" in result.stderr
    as_json = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json",
        "--suppress", str(folder), "--fail-on", "critical",
    )  # fmt: skip
    document = as_json.json()
    assert {"outcome", "actor", "actors", "rank", "rule_level", "suppressed"} <= set(
        document["findings"][0]
    )
    assert len(document["suppressions"]) == 2


@pytest.mark.parametrize(
    "text",
    [
        "title: [unclosed\n",
        "title: a rule, not a filter\nlogsource: {product: aws}\n"
        "detection: {s: {eventName: x}, condition: s}\n",
        "title: no condition\nlogsource: {product: aws}\nfilter:\n  rules: any\n"
        "  selection: {eventName: x}\n",
        "title: bad modifier\nlogsource: {product: aws}\nfilter:\n  rules: any\n"
        "  selection: {eventName|nosuch: x}\n  condition: not selection\n",
    ],
)
def test_a_bad_filter_file_is_one_line_and_exit_2(
    case: Path, rules: Path, tmp_path: Path, text: str
) -> None:
    folder = tmp_path / "suppress"
    folder.mkdir()
    (folder / "bad.yml").write_text(text)
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin",
        "--suppress", str(folder),
    )  # fmt: skip
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(folder / "bad.yml") in lines[0]
    assert "Traceback" not in result.stderr


def test_a_suppress_folder_that_is_not_there_is_exit_2(
    case: Path, rules: Path, tmp_path: Path
) -> None:
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin",
        "--suppress", str(tmp_path / "missing"),
    )  # fmt: skip
    assert result.code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_documented_example_filter_loads() -> None:
    from sigma.filters import SigmaFilter

    example = Path(__file__).parent.parent / "docs/examples/suppress/terraform-ci.yml"
    import yaml

    parsed = SigmaFilter.from_dict(yaml.safe_load(example.read_text()))
    assert parsed.filter.rules != "any"


def _table_finding(title: str, *principals: str) -> dict[str, Any]:
    """A finding as findings.json holds it, with what the terminal table shows."""
    return {
        "title": title, "level": "high", "outcome": "succeeded", "actor": "cli-sdk",
        "actor_detail": "aws-cli", "count": 1, "first_seen": "2024-07-31T12:36:48.000000Z",
        "entities": {"principals": list(principals), "source_ips": ["203.0.113.9"]},
    }  # fmt: skip


def _who_cells(capsys: pytest.CaptureFixture[str], findings: list[dict[str, Any]]) -> list[str]:
    """The "who" cell of each row of the table `cloudir detect` and `analyze` print."""
    from cloudir.cli.detect import print_findings

    print_findings(findings)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if " who " in line)
    start, end = header.index(" who ") + 1, header.index(" from ")
    return [line[start:end].strip(" │|") for line in lines if "Secrets read" in line]


def test_the_table_names_the_account_where_one_user_name_is_in_two(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`user/christophe` in two accounts (the Stratus corpus has five) reads with its
    account; a name no other principal in the table shares stays short."""
    from cloudir.console import stdout

    monkeypatch.setattr(stdout, "width", 240)  # one line per row, whatever the terminal
    first = "arn:aws:iam::111122223333:user/christophe"
    second = "arn:aws:iam::444455556666:user/christophe"
    alice = "arn:aws:iam::111122223333:user/alice"
    two = [_table_finding("Secrets read 1", first), _table_finding("Secrets read 2", second, alice)]
    assert _who_cells(capsys, two) == [
        "111122223333:user/christophe",
        "444455556666:user/christophe, user/alice",
    ]
    assert _who_cells(capsys, [_table_finding("Secrets read", first)]) == ["user/christophe"]


_AGENT_BITS = ("Terraform/1.5", "aws-CDK", "Mozilla/5.0", "S3CONSOLE", "%", "_", "\\", "İ", "ß")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text() | st.sampled_from(_AGENT_BITS), min_size=1, max_size=12))
def test_lowered_like_is_ilike(values: list[str]) -> None:
    """The classifier's SQL writes `x ILIKE p` as `lower(x) LIKE lower(p)` (faster; the
    optimizer makes contains/prefix tests of it): the same answer for any text, odd
    case mappings and the pattern's own escapes included."""
    import duckdb

    from cloudir.analyze import actors

    tables = [v for v in vars(actors).values() if isinstance(v, tuple) and v]
    signals = [s for t in tables if all(isinstance(s, actors.Signal) for s in t) for s in t]
    patterns = sorted({actors._like(s.pattern)[1:-1].replace("''", "'") for s in signals})
    assert len(patterns) > 20
    pairs = (
        duckdb.connect()
        .execute(
            r"""SELECT v, p, v ILIKE p ESCAPE '\', lower(v) LIKE lower(p) ESCAPE '\'
            FROM unnest(?::VARCHAR[]) t(v), unnest(?::VARCHAR[]) s(p)""",
            [["".join(values), *values], patterns],
        )
        .fetchall()
    )
    assert [(v, p) for v, p, a, b in pairs if a != b] == []


def test_the_automation_baseline_reads_the_same_from_promoted_columns(case: Path) -> None:
    """Over a timeline whose CloudTrail rows all have promoted columns, the baseline of
    automation calls reads the fields from those columns and never `raw`: the same rows
    as from the parsed records, and some of them automation (the comparison means
    something)."""
    from cloudir.analyze.detect import all_promoted, register_functions
    from cloudir.analyze.query import connect
    from cloudir.analyze.triage import _earliest_automation_sql
    from cloudir.case import Case

    con = connect(Case.open(case))
    register_functions(con)
    assert all_promoted(con)
    rows = "(SELECT * FROM timeline WHERE artifact = 'aws:cloudtrail')"
    typed = con.execute(f"{_earliest_automation_sql(rows, typed=True)} ORDER BY ALL").fetchall()
    parsed = con.execute(f"{_earliest_automation_sql(rows)} ORDER BY ALL").fetchall()
    assert typed == parsed
    assert len(typed) >= 3
    assert "raw" not in _earliest_automation_sql("timeline", typed=True).replace("raw_", "")


def test_findings_are_the_same_with_the_actor_classes_joined(
    case: Path, rules: Path, findings: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the actor columns joined from triage.actor_class_table's table (made here
    whatever the rows per tuple), every finding's outcome, actor, detail and misuse are
    those of the chains evaluated on each row; automation among them."""
    from cloudir.analyze import detect as engine
    from cloudir.analyze import triage

    made: list[tuple[str, ...] | None] = []

    def recorded(con: Any) -> tuple[str, ...] | None:
        made.append(triage.actor_class_table(con))
        return made[-1]

    monkeypatch.setattr(triage, "ROWS_PER_ACTOR_TUPLE", 0)
    monkeypatch.setattr(engine, "actor_class_table", recorded)
    document, _ = detect(case, rules)
    assert made and made[0] is not None  # the joined path ran
    joined = {f["title"]: f for f in document["findings"]}
    assert joined == findings
    assert {f["actor"] for f in joined.values()} >= {"automation", "human-console", "cli-sdk"}
