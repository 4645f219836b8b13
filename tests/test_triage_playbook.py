"""Triage playbooks: the schema's one line per bad field, choosing a playbook for an alert,
the printed collection plan and the containment a playbook names."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.alerts.model import FAMILIES, Alert, AlertResource, Scope
from cloudir.errors import UsageError
from cloudir.triage.collect import plan
from cloudir.triage.containment import plan_containment
from cloudir.triage.playbook import (
    SHIPPED,
    Playbook,
    PlaybookError,
    choose,
    load_file,
    load_playbooks,
    parse,
)

GOOD = """
version: 1
name: leaked-key
description: A key seen on a paste site.
match:
  families: [access-key]
  types: ["UnauthorizedAccess:IAMUser/*"]
collect:
  - kind: cloudtrail
    trail: org-trail
  - kind: lookup-events
    by: [access-key]
    when: always
  - kind: related-findings
    max_findings: 50
contain:
  auto: true
  actions:
    - action: disable-key
      revoke_sessions: false
"""


def alert(family: str = "instance", type_: str = "Backdoor:EC2/C&CActivity.B", **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "source": "guardduty",
        "product": "GuardDuty",
        "id": "f-1",
        "type": type_,
        "title": "t",
        "severity": "high",
        "family": family,
        "account": "123456789012",
        "region": "us-east-1",
        "first_seen": None,
        "last_seen": None,
        "sample": False,
        "resources": (),
    }
    fields.update(kw)
    return Alert(**fields)


def scope(**kw: Any) -> Scope:
    fields: dict[str, Any] = {
        "account": "123456789012",
        "region": "eu-west-1",
        "start": datetime(2024, 7, 31, 9, 0, tzinfo=UTC),
        "end": datetime(2024, 7, 31, 10, 30, tzinfo=UTC),
    }
    fields.update(kw)
    return Scope(**fields)


def errors_of(text: str, label: str = "pb/x.yml") -> list[str]:
    with pytest.raises(PlaybookError) as caught:
        parse(textwrap.dedent(text), label)
    assert str(caught.value) == "\n".join(caught.value.lines)
    return caught.value.lines


# -- good files ------------------------------------------------------------------------------
def test_a_good_file_reads_with_its_defaults_filled_in() -> None:
    book = parse(GOOD, "pb/good.yml", shipped=False)
    assert book.name == "leaked-key"
    assert book.families == ("access-key",)
    assert book.types == ("UnauthorizedAccess:IAMUser/*",)
    assert [(s.kind, s.options) for s in book.steps] == [
        ("cloudtrail", {"trail": "org-trail", "bucket": None, "prefix": "", "workers": 16}),
        ("lookup-events", {"by": ["access-key"], "when": "always"}),
        ("related-findings", {"max_findings": 50}),
    ]
    assert [(a.action, a.options) for a in book.contain] == [
        ("disable-key", {"revoke_sessions": False})
    ]
    assert book.auto_contain is True
    assert book.source == "pb/good.yml" and not book.shipped


def test_auto_is_false_unless_the_file_says_true() -> None:
    text = GOOD.replace("  auto: true\n", "")
    assert parse(text, "x").auto_contain is False
    assert errors_of(GOOD.replace("auto: true", "auto: yes")) == [
        "pb/x.yml: contain.auto: expected true or false, not the string 'yes'"
    ]
    assert errors_of(GOOD.replace("auto: true", "auto: 1")) == [
        "pb/x.yml: contain.auto: expected true or false, not the number 1"
    ]


def test_every_shipped_playbook_is_valid_and_each_family_has_one() -> None:
    shipped = [load_file(p, p.name, shipped=True) for p in sorted(SHIPPED.glob("*.yml"))]
    assert {b.name for b in shipped} == {
        "instance", "access-key", "s3-bucket", "kubernetes", "container", "lambda", "rds",
        "account",
    }  # fmt: skip
    assert {f for b in shipped for f in b.families} == set(FAMILIES)
    assert not any(b.auto_contain for b in shipped)  # nothing contains without a person


# -- bad fields: one line each -----------------------------------------------------------------
BASE = """
name: x
match: {families: [instance]}
collect:
  - kind: cloudtrail
"""


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            BASE + "  - kind: ebs\n  - kind: ebz\n",
            "collect[2].kind: 'ebz' is not one of cloudtrail, lookup-events, ebs, containers, "
            "related-findings",
        ),
        (
            BASE + "  - {download: true}\n",
            "collect[1].kind: missing (one of cloudtrail, "
            "lookup-events, ebs, containers, related-findings)",
        ),
        (
            BASE + "  - kind: ebs\n    download: no\n",
            "collect[1].download: expected true or false, not the string 'no'",
        ),
        (
            BASE + "  - kind: ebs\n    snapshot: true\n",
            "collect[1].snapshot: unknown field; expected download, kind, timeout or workers",
        ),
        (
            BASE + "  - kind: ebs\n    timeout: 0\n",
            "collect[1].timeout: 0 is too small (more than 0)",
        ),
        (BASE + "  - kind: lookup-events\n    by: []\n", "collect[1].by: must not be empty"),
        (
            BASE + "  - kind: lookup-events\n    by: [ip]\n",
            "collect[1].by[0]: 'ip' is not one of access-key, user, resource",
        ),
        (
            BASE + "  - kind: lookup-events\n    by: [user, user]\n",
            "collect[1].by: lists an entry twice",
        ),
        (BASE + "  - kind: cloudtrail\n", "collect[1].kind: 'cloudtrail' is already collect[0]"),
        (
            BASE.replace("- kind: cloudtrail", "- kind: cloudtrail\n    bucket: Bad_Bucket"),
            "collect[0].bucket: 'Bad_Bucket' is not an S3 bucket name",
        ),
        (
            BASE.replace("- kind: cloudtrail", "- kind: cloudtrail\n    bucket: b-1\n    trail: t"),
            "collect[0].trail: give bucket or trail, not both",
        ),
        (
            BASE.replace("- kind: cloudtrail", "- kind: cloudtrail\n    prefix: p"),
            "collect[0].prefix: only with bucket (a trail names its own prefix)",
        ),
        (
            BASE.replace("name: x", "name: Big Name"),
            "name: 'Big Name' must be 1-63 lower-case letters, digits and '-', starting with a "
            "letter or digit",
        ),
        (BASE.replace("name: x", "name: 7"), "name: expected a string, not the number 7"),
        (BASE.replace("name: x\n", ""), "name: missing"),
        (
            BASE.replace("[instance]", "[instanse]"),
            "match.families[0]: 'instanse' is not one of instance, access-key, s3-bucket, "
            "kubernetes, container, lambda, rds, account",
        ),
        (BASE.replace("{families: [instance]}", "{}"), "match: name families, types or both"),
        (
            BASE.replace("{families: [instance]}", "{family: [instance]}"),
            "match.family: unknown field; expected families or types",
        ),
        (
            BASE.replace("{families: [instance]}", '{types: ["a\\tb"]}'),
            "match.types[0]: 'a\\tb' contains a control character (a line break, a tab, ...)",
        ),
        (
            BASE + "owner: me\n",
            "owner: unknown field; expected collect, contain, description, match, name or version",
        ),
        (BASE + "version: 2\n", "version: 2 is not 1"),
        (
            BASE + "contain:\n  actions:\n    - action: isolate-instance\n",
            "contain.actions[0].action: 'isolate-instance' is not one of isolate, disable-key",
        ),
        (
            BASE + "contain:\n  actions:\n    - action: isolate\n      allow_cidrs: [0.0.0.0/0]\n",
            "contain.actions[0].allow_cidrs[0]: '0.0.0.0/0' lets the whole internet in; name your "
            "examiners' range",
        ),
        (
            BASE + "contain:\n  actions:\n    - action: isolate\n      allow_cidrs: [lan]\n",
            "contain.actions[0].allow_cidrs[0]: 'lan' is not an IP network (198.51.100.0/24)",
        ),
        (
            BASE + "contain:\n  actions:\n    - action: disable-key\n      snapshot: true\n",
            "contain.actions[0].snapshot: unknown field; expected action or revoke_sessions",
        ),
        (BASE + "contain:\n  auto: true\n", "contain.auto: true, but no actions to run"),
        (BASE + "name: y\n", "line 6: duplicate key 'name'"),
        (BASE + "base: &b {}\n", "line 6: anchors (&name) are not allowed"),
        (BASE + "1: x\n", "line 6: keys must be text, not the number 1"),
        ("name: [x\n", "line 2: expected ',' or ']', but got '<stream end>'"),
        (
            "- name: x\n",
            "(top): a playbook is a YAML mapping (name, match, collect, ...), not a list",
        ),
        ("", "(top): the file is empty; a playbook is a YAML mapping (name, match, collect)"),
        ("a: 1\n---\nb: 2\n", "line 2: but found another document"),
    ],
)
def test_each_bad_field_is_one_line_naming_the_file_and_the_path(text: str, line: str) -> None:
    assert errors_of(text) == [f"pb/x.yml: {line}"]


def test_several_bad_fields_give_one_line_each_in_path_order() -> None:
    text = """
    name: X
    match: {families: [nope]}
    collect:
      - kind: ebs
        download: maybe
      - kind: what
    """
    assert errors_of(text) == [
        "pb/x.yml: collect[0].download: expected true or false, not the string 'maybe'",
        "pb/x.yml: collect[1].kind: 'what' is not one of cloudtrail, lookup-events, ebs, "
        "containers, related-findings",
        "pb/x.yml: match.families[0]: 'nope' is not one of instance, access-key, s3-bucket, "
        "kubernetes, container, lambda, rds, account",
        "pb/x.yml: name: 'X' must be 1-63 lower-case letters, digits and '-', starting with a "
        "letter or digit",
    ]


def test_hostile_text_in_a_field_is_shown_inert_and_short() -> None:
    [line] = errors_of(BASE.replace("name: x", 'name: "\\e[31mred' + "A" * 500 + '"'))
    assert "\x1b" not in line and "\\x1b[31mred" in line
    assert len(line) < 200


def test_a_file_that_is_not_text_or_too_big_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"name: \xff\xfe\n")
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(PlaybookError) as caught:
        load_playbooks([binary, big, tmp_path / "missing.yml"])
    assert caught.value.lines == [
        f"{binary}: not UTF-8 text (byte 6)",
        f"{big}: larger than 1048576 bytes; not a playbook",
        f"{tmp_path / 'missing.yml'}: no such playbook file or folder",
    ]
    assert isinstance(caught.value, UsageError)  # exit 2


def test_nesting_too_deep_is_one_line() -> None:
    assert errors_of("[" * 5000 + "]" * 5000) == ["pb/x.yml: nested too deeply to be a playbook"]


# Random YAML: whatever its shape, a PlaybookError or a playbook, never anything else.
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["ebs", "cloudtrail", "instance", "isolate", "*"]),
)  # fmt: skip
_KEYS = st.one_of(
    st.sampled_from(["name", "match", "collect", "contain", "kind", "families", "types",
                     "by", "action", "auto", "actions", "download", "bucket", "trail"]),
    st.text(max_size=8),
)  # fmt: skip
_SHAPES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


def _check_outcome(text: str) -> None:
    try:
        book = parse(text, "r.yml")
    except PlaybookError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line.startswith("r.yml: ") and "\n" not in line
            assert "Traceback" not in line
    else:
        assert isinstance(book, Playbook)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SHAPES)
def test_random_yaml_shapes_give_a_playbook_or_playbook_errors_only(shape: Any) -> None:
    _check_outcome(yaml.safe_dump(shape))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["name", "match", "collect", "contain"]), _SHAPES)
def test_a_good_file_with_one_field_replaced_gives_lines_for_that_field(
    field: str, value: Any
) -> None:
    document = yaml.safe_load(GOOD)
    document[field] = value
    _check_outcome(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_a_playbook_or_playbook_errors_only(text: str) -> None:
    _check_outcome(text)


# -- loading and choosing ----------------------------------------------------------------------
def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("family", "expected"),
    [(f, f) for f in FAMILIES],
)
def test_choose_gives_each_family_its_shipped_playbook(family: str, expected: str) -> None:
    assert choose(alert(family, type_="Custom:Thing/X"), load_playbooks([])).name == expected


@pytest.mark.parametrize(
    ("family", "type_", "expected"),
    [
        # A type pattern wins over another playbook's family.
        ("account", "UnauthorizedAccess:IAMUser/TorIPCaller", "access-key"),
        ("account", "Exfiltration:S3/AnomalousBehavior", "s3-bucket"),
        ("instance", "CredentialAccess:RDS/AnomalousBehavior.SuccessfulLogin", "rds"),
        ("account", "Backdoor:Lambda/C&CActivity.B", "lambda"),
        ("account", "Policy:Kubernetes/AnonymousAccessGranted", "kubernetes"),
        ("instance", "Backdoor:EC2/C&CActivity.B", "instance"),
    ],
)
def test_choose_by_type_pattern(family: str, type_: str, expected: str) -> None:
    assert choose(alert(family, type_), load_playbooks([])).name == expected


def test_user_playbooks_override_by_name_and_are_tried_first(tmp_path: Path) -> None:
    own = write(tmp_path / "books", "mine.yml", """
        name: instance
        description: ours
        match: {families: [instance]}
        collect: [{kind: ebs, download: true}]
    """)  # fmt: skip
    write(tmp_path / "books", "crypto.yml", """
        name: crypto
        match: {families: [instance]}
        collect: [{kind: ebs}]
    """)  # fmt: skip
    books = load_playbooks([tmp_path / "books"])
    assert [b.name for b in books][:2] == ["crypto", "instance"]  # the folder's files by name
    assert [b.name for b in books].count("instance") == 1  # the shipped one is replaced
    # A user family match comes before the shipped type match of another playbook.
    assert choose(alert("instance", "UnauthorizedAccess:IAMUser/X"), books).name == "crypto"
    books = load_playbooks([own])
    chosen = choose(alert("instance"), books)
    assert chosen.description == "ours" and not chosen.shipped
    assert chosen.steps[0].options["download"] is True


def test_a_user_type_pattern_beats_a_user_family_and_falls_back_to_account(
    tmp_path: Path,
) -> None:
    family = write(tmp_path, "a.yml", "name: by-family\nmatch: {families: [instance]}\n"
                   "collect: []\n")  # fmt: skip
    typed = write(tmp_path, "b.yml", "name: by-type\nmatch: {types: ['CryptoCurrency:EC2/*']}\n"
                  "collect: []\n")  # fmt: skip
    books = load_playbooks([family, typed])
    assert choose(alert("instance", "CryptoCurrency:EC2/BitcoinTool.B"), books).name == "by-type"
    assert choose(alert("instance", "Backdoor:EC2/X"), books).name == "by-family"
    assert choose(alert("account", "Nothing/Matches"), books).name == "account"


def test_two_user_playbooks_of_one_name_are_refused(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "name: same\nmatch: {families: [rds]}\ncollect: []\n")
    b = write(tmp_path, "b.yml", "name: same\nmatch: {families: [lambda]}\ncollect: []\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks([a, b])
    assert caught.value.lines == [
        f"{b}: name: 'same' is also the name of {a}; a name chooses one playbook"
    ]


def test_every_bad_user_file_is_reported_together(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yml", "name: a\nmatch: {families: [rds]}\ncollect: [{kind: x}]\n")
    b = write(tmp_path, "b.yml", "name: b\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks([a, b])
    assert caught.value.lines == [
        f"{a}: collect[0].kind: 'x' is not one of cloudtrail, lookup-events, ebs, containers, "
        "related-findings",
        f"{b}: collect: missing",
        f"{b}: match: missing",
    ]


def test_no_match_and_no_fallback_is_one_line() -> None:
    only = parse("name: x\nmatch: {families: [rds]}\ncollect: []\n", "x.yml")
    with pytest.raises(PlaybookError) as caught:
        choose(alert("instance", "A/B"), [only])
    assert str(caught.value) == (
        "no playbook matches family 'instance' or type 'A/B', and there is no 'account' "
        "playbook to fall back on"
    )


# -- the printed plan --------------------------------------------------------------------------
def test_plan_says_what_each_step_collects_for_the_scope() -> None:
    book = parse(
        """
        name: full
        match: {families: [instance]}
        collect:
          - kind: cloudtrail
          - kind: lookup-events
            by: [access-key, user, resource]
          - kind: ebs
          - kind: containers
          - kind: related-findings
        """.replace("\n        ", "\n"),
        "x",
    )
    the_scope = scope(
        access_keys=("AKIAEXAMPLEKEY000001",), users=("alice",), instances=("i-0abc",),
        buckets=("loot",),
    )  # fmt: skip
    lines = [p.line() for p in plan(the_scope, book)]
    window = "2024-07-31T09:00:00Z to 2024-07-31T10:30:00Z"
    assert lines == [
        "cloudtrail: CloudTrail from the account's first trail that logs to S3, account "
        f"123456789012, region eu-west-1, {window}",
        f"lookup-events: LookupEvents in eu-west-1, {window}, one lookup per value if no trail "
        "bucket is read [AccessKeyId=AKIAEXAMPLEKEY000001, Username=alice, ResourceName=i-0abc, "
        "ResourceName=loot]",
        "ebs: describe each instance and snapshot its EBS volumes (no download) [i-0abc]",
        "containers: skipped: the scope names no container",
        "related-findings: the alert source's other findings on the same resources (at most 200)",
    ]
    overridden = plan(the_scope, book, bucket="s3://org-logs/team")
    assert overridden[0].what.startswith("CloudTrail from s3://org-logs/team, ")


def test_plan_names_a_lookup_with_nothing_to_filter_by_as_a_skip() -> None:
    book = parse("name: x\nmatch: {families: [rds]}\ncollect: [{kind: lookup-events}]\n", "x")
    [step] = plan(scope(), book)
    assert step.line() == (
        "lookup-events: skipped: the scope names no access key or user name to filter by"
    )


# -- the containment plan ----------------------------------------------------------------------
def test_containment_plan_for_keys_roles_and_instances() -> None:
    book = parse(GOOD.replace("revoke_sessions: false", "revoke_sessions: true"), "x")
    the_scope = scope(
        access_keys=("AKIAEXAMPLEKEY000001", "ASIAEXAMPLEKEY000002"), roles=("ci-runner",)
    )
    planned = plan_containment(the_scope, book)
    assert [(p.action, p.target, p.arguments, p.auto) for p in planned] == [
        ("disable-key", "AKIAEXAMPLEKEY000001",
         {"access_key_id": "AKIAEXAMPLEKEY000001", "revoke_sessions": True, "role": None}, True),
        ("disable-key", "ASIAEXAMPLEKEY000002",
         {"access_key_id": "ASIAEXAMPLEKEY000002", "revoke_sessions": True, "role": "ci-runner"},
         True),
    ]  # fmt: skip
    assert planned[1].command("./case") == (
        "cloudir respond disable-key --case ./case --region eu-west-1 --access-key-id "
        "ASIAEXAMPLEKEY000002 --role ci-runner --revoke-sessions"
    )
    roles_only = plan_containment(scope(roles=("app",)), book)
    assert [(p.target, p.arguments) for p in roles_only] == [
        ("role/app", {"access_key_id": None, "revoke_sessions": True, "role": "app"})
    ]


def test_containment_plan_says_why_an_action_has_nothing_to_act_on() -> None:
    book = parse(GOOD, "x")  # revoke_sessions: false
    planned = plan_containment(scope(access_keys=("ASIAEXAMPLEKEY000002",)), book)
    assert [p.line() for p in planned] == [
        "disable-key: nothing to contain: ASIAEXAMPLEKEY000002 is a session key: it cannot "
        "be made inactive, and the playbook says revoke_sessions: false"
    ]
    isolate = load_playbooks([])
    instance_book = next(b for b in isolate if b.name == "instance")
    assert [p.line() for p in plan_containment(scope(), instance_book)] == [
        "isolate: nothing to contain: the scope names no EC2 instance"
    ]
    [planned_isolation] = plan_containment(scope(instances=("i-0abc",)), instance_book)
    assert planned_isolation.line() == (
        "isolate i-0abc: only with --contain; by hand: cloudir respond isolate --case CASE "
        "--region eu-west-1 --instance-id i-0abc"
    )
    assert planned_isolation.arguments == {
        "instance_id": "i-0abc", "allow_cidrs": [], "snapshot": True, "replace": False,
        "keep_credentials": False,
    }  # fmt: skip


def test_a_crafted_key_id_is_never_planned() -> None:
    book = parse(GOOD, "x")
    [planned] = plan_containment(scope(access_keys=("AKIA; rm -rf /\x1b[2J",)), book)
    assert not planned.runnable and planned.command() == ""
    assert "\x1b" not in planned.line()


def test_resources_do_not_matter_to_choosing() -> None:
    with_resources = alert(
        "access-key", "X/Y", resources=(AlertResource("access-key", "AKIAEXAMPLEKEY000001"),)
    )
    assert choose(with_resources, load_playbooks([])).name == "access-key"


# -- the documentation -------------------------------------------------------------------------
def _playbook_doc() -> str:
    """docs/triage.md, whose "Playbooks" section holds the schema and the example."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "triage.md").read_text()
    assert "<!-- playbook-schema -->" in text, "docs/triage.md lacks the playbook schema"
    return text


def test_the_documented_schema_is_the_schema_and_the_documented_example_is_valid() -> None:
    import json

    from cloudir.triage.playbook import SCHEMA

    text = _playbook_doc()
    block = text.split("<!-- playbook-schema -->\n```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == SCHEMA
    example = text.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    book = parse(example, "docs example")
    assert book.name == "access-key" and not book.auto_contain
