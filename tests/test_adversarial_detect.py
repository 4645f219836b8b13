"""Rule files as an adversary (or an unlucky download of community rules) makes them.

A broken document costs that document only: every valid rule in the same file still
loads and runs, and the broken one is named in findings.json `rules.skipped` with its
file, document number, line and reason. Values and titles are data, never SQL: a rule
looking for `' OR 1=1 --` matches the rows holding that text and no other. A rules
path none of whose rules can run is a usage error (exit 2), never a quiet "no findings".
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.conftest import cloudir
from tests.timeline_rows import timeline_row, write_timeline

HOSTILE = [
    "' OR 1=1 --",
    "'; DROP VIEW timeline; --",
    "100%",
    "a_b",
    "back\\slash",
    "\\%",
    "/* open",
    "x */ OR true /*",
    '"double"',
    "it''s",
    "ünïcödé ✓",
    "\u202eevil",
    "$.eventName",
    "[*]",
    "\x00_l0\x00",  # the marker the compiler uses for shared lower() columns
    "ListBuckets",
]

MODIFIERS = {
    "": lambda row, value: row.lower() == value.lower(),
    "|contains": lambda row, value: value.lower() in row.lower(),
    "|startswith": lambda row, value: row.lower().startswith(value.lower()),
    "|endswith": lambda row, value: row.lower().endswith(value.lower()),
}


@pytest.fixture(scope="module")
def hostile_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One CloudTrail row per hostile value (in eventName and userAgent), plus decoys."""
    values = [*HOSTILE, "an ' OR 1=1 -- inside", "1000", "aXb", "DeleteTrail"]
    rows = [
        timeline_row(
            "aws:cloudtrail",
            f"2026-01-01T10:{n // 60:02d}:{n % 60:02d}Z",
            {"eventName": value, "userAgent": value, "weird'key": value},
        )
        for n, value in enumerate(values)
    ]
    case = tmp_path_factory.mktemp("hostile-rules") / "case"
    write_timeline(case, rows)
    return case, {row["event_id"]: value for row, value in zip(rows, values, strict=True)}


def sigma_literal(text: str) -> str:
    """`text` as a Sigma string that means exactly itself (wildcards escaped)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def rule_doc(title: str, field: str, modifier: str, value: str, **extra: Any) -> dict[str, Any]:
    pattern = value if modifier == "|re" else sigma_literal(value)
    return {
        "title": title,
        "logsource": {"product": "aws", "service": "cloudtrail"},
        "detection": {"s": {f"{field}{modifier}": pattern}, "condition": "s"},
        "level": "low",
        **extra,
    }


BROKEN = {
    "yaml": "title: broken yaml\ndetection: [unclosed\n",
    "tab yaml": "title: tabbed\n\tdetection: x\n",
    "modifier": yaml.safe_dump(rule_doc("bad modifier", "eventName", "|nosuchmod", "x")),
    "condition": yaml.safe_dump(
        {
            **rule_doc("bad condition", "eventName", "", "x"),
            "detection": {"s": {"a": 1}, "condition": "s and and"},
        }
    ),
    "no detection": "title: no detection\nlogsource: {product: aws, service: cloudtrail}\n",
    "list": "- a list\n- not a rule\n",
    "scalar": "just a sentence\n",
    "missing ref": yaml.safe_dump(
        {
            "title": "dangling correlation",
            "name": "dangling",
            "correlation": {
                "type": "event_count",
                "rules": ["no_such_rule"],
                "group-by": ["user"],
                "timespan": "5m",
                "condition": {"gte": 2},
            },
        }
    ),
    "action": "action: no-such-action\n",
    "bad regex": yaml.safe_dump(rule_doc("lookbehind", "eventName", "|re", "(?<=x)y")),
}


def write_stream(path: Path, documents: list[str]) -> None:
    path.write_text("".join(f"---\n{doc}" for doc in documents))


def detect_doc(case: Path, rules: Path) -> tuple[int, dict[str, Any], str]:
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json",
        "--fail-on", "critical",
    )  # fmt: skip
    document = json.loads(result.stdout) if result.code == 0 else {}
    return result.code, document, result.stderr


GOOD_BEFORE = yaml.safe_dump(rule_doc("good before", "eventName", "", "ListBuckets"))
GOOD_AFTER = yaml.safe_dump(rule_doc("good after", "eventName", "|contains", "100%"))
BROKEN_LINE = 1 + len(f"---\n{GOOD_BEFORE}".splitlines())  # where document 2 starts


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_one_broken_document_costs_only_itself(
    hostile_case: tuple[Path, dict[str, str]], tmp_path: Path, kind: str
) -> None:
    from cloudir.analyze import detect as engine
    from cloudir.case import Case

    case, _ = hostile_case
    rules = tmp_path / "mixed.yml"
    write_stream(rules, [GOOD_BEFORE, BROKEN[kind], GOOD_AFTER])
    engine.detect(Case.open(case), [rules], builtin=False)
    doc = json.loads((case / "findings/findings.json").read_text())
    found = {f["title"]: f["count"] for f in doc["findings"]}
    assert found == {"good before": 1, "good after": 1}
    assert doc["rules"]["loaded"] == 2
    [skipped] = doc["rules"]["skipped"]
    assert skipped["path"] == str(rules)
    assert (skipped["document"], skipped["line"]) == (2, BROKEN_LINE)
    assert skipped["reason"]


def test_detect_and_validate_name_each_broken_document(
    hostile_case: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The same files through the command line: exit codes, and where each skip is."""
    case, _ = hostile_case
    for kind in BROKEN:
        write_stream(tmp_path / f"{kind}.yml", [GOOD_BEFORE, BROKEN[kind], GOOD_AFTER])
    code, doc, stderr = detect_doc(case, tmp_path)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert doc["rules"]["loaded"] == 2 * len(BROKEN)
    assert len(doc["rules"]["skipped"]) == len(BROKEN)
    listed = cloudir("rules", "validate", str(tmp_path))
    assert listed.code == 3
    for kind in BROKEN:
        assert f"({tmp_path / kind}.yml, document 2, line {BROKEN_LINE}):" in listed.stdout
        assert f"({tmp_path / kind}.yml, document 2, line {BROKEN_LINE}):" in stderr
    assert listed.stdout.count("ok ") == 2 * len(BROKEN)


def test_broken_yaml_keeps_every_readable_document(tmp_path: Path) -> None:
    """The parser fails mid-stream twice; the documents around both failures still load."""
    good = [
        yaml.safe_dump(rule_doc(f"good {n}", "eventName", "", f"e{n}", id=_uuid(n)))
        for n in range(4)
    ]
    rules = tmp_path / "stream.yml"
    write_stream(
        rules,
        [good[0], "title: bad one\nid: " + _uuid(8) + "\nx: [\n", good[1], good[2],
         "title: 'unterminated\n", good[3]],
    )  # fmt: skip
    result = cloudir("rules", "list", "--rules", str(rules), "--no-builtin", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert sorted(r["title"] for r in doc["loaded"]) == [f"good {n}" for n in range(4)]
    skipped = {s["document"]: s for s in doc["skipped"]}
    assert sorted(skipped) == [2, 5]
    assert skipped[2]["title"] == "bad one" and skipped[2]["id"] == _uuid(8)
    assert "YAML" in skipped[2]["reason"] and "line" in skipped[2]["reason"]


def test_a_broken_global_action_does_not_leave_its_followers_half_made(tmp_path: Path) -> None:
    rules = tmp_path / "actions.yml"
    write_stream(
        rules,
        [
            "action: global\nlogsource: {product: aws, service: cloudtrail\n",  # broken
            "title: needs global\ndetection: {s: {eventName: x}, condition: s}\n",
            "action: reset\n",
            yaml.safe_dump(rule_doc("independent", "eventName", "", "y")),
        ],
    )
    result = cloudir("rules", "list", "--rules", str(rules), "--no-builtin", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert [r["title"] for r in doc["loaded"]] == ["independent"]
    reasons = {s["document"]: s["reason"] for s in doc["skipped"]}
    assert sorted(reasons) == [1, 2]
    assert "document 1" in reasons[2]


def test_rules_path_with_nothing_runnable_is_a_usage_error(
    hostile_case: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    case, _ = hostile_case
    broken = tmp_path / "broken"
    broken.mkdir()
    write_stream(broken / "a.yml", [BROKEN["yaml"], BROKEN["modifier"]])
    good = tmp_path / "good.yml"
    write_stream(good, [yaml.safe_dump(rule_doc("fine", "eventName", "", "ListBuckets"))])
    result = cloudir("detect", "--case", str(case), "--rules", str(broken), "--no-builtin")
    assert result.code == 2, result.stderr
    assert f"{broken}: none of its rules can run" in result.stderr
    assert "cloudir rules validate" in result.stderr
    with_good = cloudir(
        "detect", "--case", str(case), "--rules", str(good), "--rules", str(broken),
        "--no-builtin",
    )  # fmt: skip
    assert with_good.code == 2, "each path given must contribute a rule"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cloudir("detect", "--case", str(case), "--rules", str(empty), "--no-builtin")
    assert result.code == 2
    assert "no rule files" in result.stderr
    assert cloudir("detect", "--case", str(case), "--no-builtin").code == 2


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


valid_rules = st.tuples(
    st.sampled_from(HOSTILE),
    st.sampled_from(sorted(MODIFIERS)),
    st.sampled_from(["eventName", "userAgent", "weird'key"]),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12),  # title
)
documents = st.lists(
    st.one_of(valid_rules, st.sampled_from(sorted(BROKEN))), min_size=1, max_size=6
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(documents=documents)
def test_generated_rule_files_load_what_is_valid_and_match_literally(
    hostile_case: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory,
    documents: list[Any],
) -> None:  # fmt: skip
    from cloudir.analyze import detect as engine
    from cloudir.case import Case
    from cloudir.errors import UsageError

    case, value_of = hostile_case
    texts, expected, broken = [], {}, []
    for index, item in enumerate(documents, 1):
        if isinstance(item, str):
            texts.append(BROKEN[item])
            broken.append(index)
            continue
        value, modifier, field, title_text = item
        title = f"r{index} {title_text}"
        doc = rule_doc(title, field, modifier, value)
        text = yaml.safe_dump(doc, allow_unicode=True)
        # PyYAML writes NEL (U+0085) unescaped inside single quotes and then reads it back
        # as a space: such a file says something else than the test meant, so skip it.
        assume(yaml.safe_load(text) == doc)
        texts.append(text)
        matches = MODIFIERS[modifier]
        expected[title] = {e for e, v in value_of.items() if matches(v, value)}
    rules = tmp_path_factory.mktemp("generated") / "rules.yml"
    write_stream(rules, texts)
    if not expected:
        with pytest.raises(UsageError, match="none of its rules can run"):
            engine.detect(Case.open(case), [rules], builtin=False)
        return
    result = engine.detect(Case.open(case), [rules], builtin=False)
    assert sorted(r.title for r in result.rules.rules) == sorted(expected)
    assert sorted(s["document"] for s in result.rules.skipped) == broken
    assert all(s["reason"] and s["path"] == str(rules) for s in result.rules.skipped)
    found = {f["title"]: set(f["event_ids"]) for f in result.findings}
    assert found == {title: ids for title, ids in expected.items() if ids}


def test_every_hostile_value_matches_itself_only(
    hostile_case: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """One file, a rule per hostile value and modifier: each finds exactly its rows."""
    from cloudir.analyze import detect as engine
    from cloudir.case import Case

    case, value_of = hostile_case
    texts, expected = [], {}
    for n, value in enumerate(HOSTILE):
        for modifier, matches in MODIFIERS.items():
            for field in ("eventName", "userAgent", "weird'key"):
                title = f"{n}{modifier}{field} {value}"
                texts.append(yaml.safe_dump(rule_doc(title, field, modifier, value)))
                expected[title] = {e for e, v in value_of.items() if matches(v, value)}
    rules = tmp_path / "hostile.yml"
    write_stream(rules, texts)
    result = engine.detect(Case.open(case), [rules], builtin=False)
    assert result.rules.skipped == []
    found = {f["title"]: set(f["event_ids"]) for f in result.findings}
    assert found == {title: ids for title, ids in expected.items() if ids}
    injection = found["0|containseventName ' OR 1=1 --"]
    assert {value_of[e] for e in injection} == {"' OR 1=1 --", "an ' OR 1=1 -- inside"}


def test_rule_files_that_are_not_files_cost_themselves_only(
    hostile_case: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A downloaded rules repository can carry links (git keeps them): a FIFO would hang
    the read, /dev/zero would fill memory, a huge file is no rule. Each is one skip."""
    import os

    case, _ = hostile_case
    rules = tmp_path / "repo"
    rules.mkdir()
    write_stream(rules / "good.yml", [GOOD_BEFORE])
    os.mkfifo(rules / "fifo.yml")
    (rules / "zero.yml").symlink_to("/dev/zero")
    (rules / "huge.yml").write_text("# padding\n" * 2_000_000)
    (rules / "latin1.yml").write_bytes("title: caf\xe9\n".encode("latin-1"))
    result = cloudir(
        "detect", "--case", str(case), "--rules", str(rules), "--no-builtin", "--json",
        "--fail-on", "critical", timeout=120,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    doc = result.json()
    assert [f["title"] for f in doc["findings"]] == ["good before"]
    reasons = {Path(s["path"]).name: s["reason"] for s in doc["rules"]["skipped"]}
    assert set(reasons) == {"fifo.yml", "zero.yml", "huge.yml", "latin1.yml"}
    assert "not a regular file" in reasons["fifo.yml"]
    assert "not a regular file" in reasons["zero.yml"]
    assert "larger than" in reasons["huge.yml"]
    assert "UTF-8" in reasons["latin1.yml"]


def _spelled(key: str, ways: list[str]) -> str:
    """`key` as a JSON string, each character written as itself (with JSON's own escape
    where it needs one), as `\\uXXXX` (surrogate pairs above the BMP) or, for `/`, as
    `\\/`, as `ways` says."""
    out = []
    for char, way in zip(key, ways + ["plain"] * len(key), strict=False):
        if way == "u":
            data = char.encode("utf-16-be")
            out += [f"\\u{data[i : i + 2].hex()}" for i in range(0, len(data), 2)]
        elif way == "short" and char == "/":
            out.append("\\/")
        else:
            out.append(json.dumps(char, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(["URI", "x-amz-acl", "userName", "a/b", 'q"k']) | st.text(min_size=1),
    ways=st.lists(st.sampled_from(["plain", "u", "short"]), max_size=12),
    value=st.text() | st.integers() | st.lists(st.integers(), max_size=2),
)
def test_may_hold_key_is_never_false_where_duckdb_finds_the_key(
    key: str, ways: list[str], value: Any
) -> None:
    """The substring test that spares a parse (sigma/fields.may_hold_key) is a necessary
    condition: wherever DuckDB's JSON reader finds the key, however the record spells it,
    the test holds. A key that needs no two-character escape is only respelled with
    `\\u`, which is all the test looks for then besides the key itself."""
    import duckdb

    from cloudir.analyze.sigma.fields import json_path, may_hold_key

    assume("\x00" not in key)
    record = "{" + f'"other": "x\\"y", {_spelled(key, ways)}: {json.dumps(value)}' + "}"
    found, held = (
        duckdb.connect()
        .execute(
            f"SELECT json_exists(raw, ?), {may_hold_key(key)} FROM (SELECT ?::VARCHAR AS raw)",
            [json_path((key,)), record],
        )
        .fetchall()[0]
    )
    assert found, record  # the record does hold the key: the test means something
    assert held, record


@settings(max_examples=300, deadline=None)
@given(
    literal=st.text()
    | st.sampled_from(
        [
            '(CASE WHEN promoted_from IS NULL THEN _f."eventSource" ELSE "raw_eventSource" END)',
            'x\' OR (CASE WHEN promoted_from IS NULL THEN _f."eventSource" ELSE '
            '"raw_eventSource" END) = \'',
        ]
    ),
    identifier=st.text(min_size=1),
)
def test_promoted_reads_never_touch_a_rules_values(literal: str, identifier: str) -> None:
    """A CloudTrail rule reads promoted fields from their columns when every CloudTrail row
    has them (FieldPlan.promoted_reads): the field's value SQL becomes its column, but a
    rule's value (a quoted literal) or a field name (a quoted identifier) that holds the
    very same text, quotes included, stays as the rule wrote it."""
    from cloudir.analyze.duck import quote_ident, sql_str
    from cloudir.analyze.sigma.fields import FieldPlan

    plan = FieldPlan()
    value = plan.value_sql(("eventSource",))
    column = plan.promoted_values[value]
    written = f"{value} = {sql_str(literal)} AND {quote_ident(identifier)} IS NULL OR {value}"
    expected = f"{column} = {sql_str(literal)} AND {quote_ident(identifier)} IS NULL OR {column}"
    assert plan.promoted_reads(written) == expected


_OCTET_TEXT = st.integers(0, 255).map(str) | st.integers(0, 255).map(lambda v: f"0{v}")
_ADDRESS_TEXT = (
    st.ip_addresses(v=4).map(str)
    | st.lists(_OCTET_TEXT, min_size=3, max_size=5).map(".".join)
    | st.text(alphabet="0123456789. :x\t", max_size=18)
)


@settings(max_examples=400, deadline=None)
@given(
    text=st.none()
    | st.tuples(st.sampled_from(["", " ", "  "]), _ADDRESS_TEXT, st.sampled_from(["", " "])).map(
        "".join
    ),
    address=st.ip_addresses(v=4),
    prefix=st.integers(0, 32),
    inside=st.none() | st.sampled_from([-1, 0, 1, 2]) | st.integers(0, 2**32 - 1),
)
@example(text="1.2.3.4", address=IPv4Address("1.2.3.4"), prefix=32, inside=None)
@example(text=" 10.9.8.7 ", address=IPv4Address("10.0.0.0"), prefix=8, inside=None)
@example(text="010.9.8.7", address=IPv4Address("10.0.0.0"), prefix=8, inside=None)
@example(text="172.31.255.255", address=IPv4Address("172.16.0.0"), prefix=12, inside=None)
@example(text="172.32.0.0", address=IPv4Address("172.16.0.0"), prefix=12, inside=None)
@example(text="ec2.amazonaws.com", address=IPv4Address("0.0.0.0"), prefix=0, inside=None)
def test_ipv4_network_test_takes_exactly_the_addresses_the_macro_takes(
    text: str | None, address: Any, prefix: int, inside: int | None
) -> None:
    """`field|cidr` on IPv4 (sigma/runtime.ipv4_network_sql: the network as one regular
    expression behind a substring test) holds exactly where cloudir_ipv4 BETWEEN the
    network's ends held, NULL read as false as every rule reads it; and, for a plain
    address, exactly where Python's ipaddress says it is in the network."""
    import ipaddress

    import duckdb

    from cloudir.analyze.sigma.runtime import IPV4_MACRO, ipv4_network_sql

    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    low, high = int(network.network_address), int(network.broadcast_address)
    if inside is not None:  # an address of the network: its ends, just outside, any
        edges = {-1: low - 1, 0: low, 1: high, 2: high + 1}
        picked = edges.get(inside, low + inside % (high - low + 1))
        text = str(ipaddress.ip_address(picked % 2**32))
    con = duckdb.connect()
    con.execute(IPV4_MACRO)
    new, old = con.execute(
        f"SELECT COALESCE({ipv4_network_sql('v', network)}, false), "
        f"COALESCE(cloudir_ipv4(v) BETWEEN {low} AND {high}, false) FROM (SELECT ?::VARCHAR AS v)",
        [text],
    ).fetchall()[0]
    assert new == old, (text, str(network))
    try:
        parsed = ipaddress.ip_address(text or "")
    except ValueError:
        return
    assert new == (parsed in network), (text, str(network))
