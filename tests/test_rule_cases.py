"""Every shipped Sigma rule fires on its positive cases and stays quiet on its near misses.

The cases are data (tests/data/rule_cases.yml; its header says how an event is built).
Stratus logs (test_detect.py) show that a rule catches one real attack; these cases pin
down the boundary: the same event with the one thing the rule is about changed must not
fire, so a rule that silently widens (or an engine that matches too much) fails here.

All CloudTrail cases go through the real `capture files` and `timeline` commands into one
case; all Linux cases are written as timeline rows into a second case (no host parser
yet). `cloudir detect` runs once per case, and each rule is then its own test id.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.access_rule_rows import ACCESS_RUNS, access_row, access_run
from tests.conftest import REPO, cloudir, query
from tests.route53_resolver_logs import resolver_record, s3_name, write_log
from tests.timeline_rows import timeline_row, write_timeline
from tests.vpc_flow_lines import LATEST_FIELDS, flow_record

RULES_DIR = REPO / "cloudir" / "analyze" / "rules"
CASES_FILE = Path(__file__).parent / "data" / "rule_cases.yml"
# More cases, one file per group of rules: each holds a `rules:` mapping like CASES_FILE's
# (the defaults stay in CASES_FILE), so rule sets added together keep their cases together.
CASES_DIR = Path(__file__).parent / "data" / "rule_cases"
POLARITIES = ("positive", "negative")
# `setup:` events go on the positives' day and are neither required nor forbidden in the
# finding: what a sequence needs to have happened first (a key's earlier history).
SETUP = "setup"
FIRST_DAY = date(2026, 1, 1)
DEFAULT_START = time(10, 0, 0)
# Artifacts whose `raw` is a syslog line; the host parsers add its time and host to `raw`.
SYSLOG_ARTIFACTS = {"linux:auth", "linux:syslog", "linux:cron", "linux:journal"}
# Logsources whose events are rows a parser writes from a record given in the cases (not
# CloudTrail), and the group (fixture `<group>_run`) their rules' events go into.
ROW_PRODUCTS = {("aws", "vpcflowlogs"): "vpcflow", ("aws", "route53"): "route53"}


@dataclass(frozen=True)
class ShippedRule:
    rule_id: str
    title: str
    path: Path
    product: str  # "aws", "linux", "kubernetes", "vpcflow", "aws_lambda", ...: its case

    def describe(self) -> str:
        return f"{self.path.name}: {self.title} ({self.rule_id})"


@functools.cache
def shipped_rules() -> dict[str, ShippedRule]:
    """Rules that produce findings, read from the rule files themselves.

    Read from the files rather than from `cloudir rules list`, so that a rule the engine
    skips is still required to have cases. A rule named by a correlation only feeds it
    (Sigma's `generate` is false unless the correlation says otherwise).
    """
    docs = [
        (path, doc)
        for path in sorted(RULES_DIR.rglob("*.yml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    by_name = {doc["name"]: doc for _, doc in docs if doc.get("name")}
    feeding: set[str] = set()
    for _, doc in docs:
        correlation = doc.get("correlation")
        if correlation and not correlation.get("generate", False):
            feeding.update(correlation["rules"])

    def product(doc: dict[str, Any]) -> str:
        if "correlation" in doc:
            return product(by_name[doc["correlation"]["rules"][0]])
        source = doc["logsource"]
        routed = access_run(source) or ROW_PRODUCTS.get(
            (source.get("product"), source.get("service"))
        )
        if routed:
            return routed
        if source["product"] == "aws" and source.get("service", "cloudtrail") != "cloudtrail":
            return f"aws_{source['service']}"  # rows of another AWS source, not CloudTrail
        return str(source["product"])

    return {
        str(doc["id"]): ShippedRule(str(doc["id"]), doc["title"], path, product(doc))
        for path, doc in docs
        if doc.get("name") not in feeding
    }


@functools.cache
def case_file() -> dict[str, Any]:
    """CASES_FILE with the `rules:` of every file in CASES_DIR added; a rule id given
    cases in two files is an error, not a silent override."""
    cases: dict[str, Any] = yaml.safe_load(CASES_FILE.read_text())
    rules = cases.setdefault("rules", {})
    for path in sorted(CASES_DIR.glob("*.yml")):
        more = (yaml.safe_load(path.read_text()) or {}).get("rules") or {}
        twice = sorted(set(rules) & set(more))
        if twice:
            raise ValueError(f"{path.name}: cases for {twice} are given in another file too")
        rules.update(more)
    return cases


@dataclass
class RuleEvents:
    """One rule's events, built: records (CloudTrail) or rows (Linux), and their ids."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in POLARITIES})


def substitute(value: Any, tokens: dict[str, str]) -> Any:
    """Placeholders in every string, at any depth (policy JSON keeps its own braces)."""
    if isinstance(value, str):
        for token, text in tokens.items():
            value = value.replace(token, text)
        return value
    if isinstance(value, dict):
        return {key: substitute(item, tokens) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, tokens) for item in value]
    return value


def event_time(day: date, at: Any, index: int) -> datetime:
    """`at` on the polarity's own day; without it, one second apart so order is stable."""
    if at is None:
        start = datetime.combine(day, DEFAULT_START, UTC)
        return start + timedelta(seconds=index)
    assert isinstance(at, str), f"`at: {at!r}` must be quoted, YAML reads 10:00:00 as a number"
    return datetime.combine(day, time.fromisoformat(at), UTC)


@functools.cache
def built_events() -> dict[str, RuleEvents]:
    """Every rule's cases as CloudTrail records or timeline rows, with readable unique ids.

    Rule number n (its place in the file) has days 2n and 2n+1 after FIRST_DAY for its
    positives and negatives and the address 203.0.113.n: no correlation (at most one hour
    long) can mix two rules' events or one rule's two polarities.
    """
    doc = case_file()
    defaults = doc["defaults"]
    rules = shipped_rules()
    built: dict[str, RuleEvents] = {}
    for number, (rule_id, cases) in enumerate(doc["rules"].items(), start=1):
        assert number < 255, "out of addresses in 203.0.113.0/24 for one per rule"
        rule = rules.get(rule_id)
        if rule is None:
            continue  # reported by test_every_rule_that_produces_findings_has_cases
        tag = rule_id[:8]
        tokens = {"{tag}": tag, "{TAG}": tag.upper(), "{ip}": f"203.0.113.{number}"}
        events = RuleEvents()
        for offset, polarity in ((0, SETUP), (0, "positive"), (1, "negative")):
            day = FIRST_DAY + timedelta(days=2 * number + offset)
            for index, spec in enumerate((cases or {}).get(polarity) or []):
                event_id = f"{tag}-{polarity[:3]}-{index + 1:02d}"
                when = event_time(day, spec.get("at"), index)
                if rule.product == "vpcflow":
                    events.records.append(flow_case_row(cases, spec, when, event_id, tokens))
                elif rule.product == "aws":
                    record = cloudtrail_record(defaults["cloudtrail"], cases, spec)
                    record.update(eventTime=when.strftime("%Y-%m-%dT%H:%M:%SZ"), eventID=event_id)
                    events.records.append(substitute(record, tokens))
                elif rule.product == "route53":
                    record = resolver_case_record(cases, spec, when, event_id)
                    events.records.append(substitute(record, tokens))
                elif rule.product in ACCESS_RUNS:  # log lines, read by the parser
                    row = access_row(rule.product, cases, spec, when, event_id, tokens)
                    events.records.append(row)
                else:
                    row = linux_row(defaults["linux"], cases, spec, when, event_id, tokens)
                    events.records.append(row)
                events.ids.setdefault(polarity, []).append(event_id)
        built[rule_id] = events
    return built


def cloudtrail_record(
    base: dict[str, Any], cases: dict[str, Any], spec: dict[str, Any]
) -> dict[str, Any]:
    """Defaults, then the rule's defaults, then the event; top-level keys replace whole."""
    assert not {"eventID", "eventTime"} & set(spec), "the test sets eventID and eventTime"
    event = {key: value for key, value in spec.items() if key != "at"}
    return {**base, **(cases.get("defaults") or {}), **event}


def linux_row(
    base: dict[str, Any],
    cases: dict[str, Any],
    spec: dict[str, Any],
    when: datetime,
    event_id: str,
    tokens: dict[str, str],
) -> dict[str, Any]:
    """A timeline row as a host parser would write it; `raw` merges key by key."""
    layers = [base, cases.get("defaults") or {}, spec]
    columns: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for layer in layers:
        columns.update({k: v for k, v in layer.items() if k not in ("at", "raw")})
        raw.update(layer.get("raw") or {})
    columns, raw = substitute(columns, tokens), substitute(raw, tokens)
    artifact = columns.pop("artifact")
    if artifact in SYSLOG_ARTIFACTS:
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        raw = {"timestamp": stamp, "host": columns.get("host"), **raw}
    columns.setdefault("message", raw.get("message") or raw.get("CommandLine"))
    return timeline_row(
        artifact, when, raw, event_id=event_id, evidence_id="linux-rule-cases", **columns
    )


def flow_case_row(
    cases: dict[str, Any],
    spec: dict[str, Any],
    when: datetime,
    event_id: str,
    tokens: dict[str, str],
) -> dict[str, Any]:
    """A flow record of every field (the rule's defaults, then the event's fields by their
    flow log names) starting at `when`, as the vpc-flow parser reads it into a row."""
    from cloudir.analyze.parsers import vpc_flow

    fields = substitute({**(cases.get("defaults") or {}), **spec}, tokens)
    fields.pop("at", None)
    start = int(when.timestamp())
    line = flow_record(LATEST_FIELDS, **{"start": start, "end": start + 60, **fields})
    record = vpc_flow.parse_record(vpc_flow.Format(LATEST_FIELDS), line.split())
    row = vpc_flow.flow_row(record, "vpcflow-rule-cases", 1)
    assert row is not None
    return {**row._asdict(), "timestamp": when, "event_id": event_id}


def resolver_case_record(
    cases: dict[str, Any], spec: dict[str, Any], when: datetime, event_id: str
) -> dict[str, Any]:
    """A Route 53 Resolver query record: the generator's, the rule's defaults, the event
    (top-level keys replace whole). The log has no event id of its own, so the case's id
    rides in an extra key, `cloudir_case`, that no rule reads."""
    fields = {**(cases.get("defaults") or {}), **{k: v for k, v in spec.items() if k != "at"}}
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return resolver_record(**fields, query_timestamp=stamp, cloudir_case=event_id)


def rules_of(product: str) -> Iterator[tuple[ShippedRule, RuleEvents]]:
    shipped = shipped_rules()
    for rule_id, events in built_events().items():
        if shipped[rule_id].product == product:
            yield shipped[rule_id], events


@dataclass
class DetectRun:
    fired: dict[str, set[str]]  # rule id -> event ids in its finding(s)
    skipped: dict[str, str]  # rule id -> why the engine did not run it
    case: Path | None = None


def run_detect(case: Path) -> DetectRun:
    result = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert result.code == 0, result.stderr
    doc = json.loads((case / "findings" / "findings.json").read_text())
    fired: dict[str, set[str]] = {}
    for finding in doc["findings"]:
        fired.setdefault(finding["rule_id"], set()).update(finding["event_ids"])
    skipped = {s["id"]: s["reason"] for s in doc["rules"]["skipped"] if s.get("id")}
    return DetectRun(fired, skipped, case)


def assert_unique_ids() -> None:
    ids = [i for events in built_events().values() for p in events.ids for i in events.ids[p]]
    assert len(ids) == len(set(ids)), "two rules share the first 8 characters of their id"


@pytest.fixture(scope="module")
def aws_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    """One case with every CloudTrail case, one delivery-style file per rule."""
    assert_unique_ids()
    root = tmp_path_factory.mktemp("rule-cases-aws")
    folder = root / "cloudtrail"
    folder.mkdir()
    total = 0
    for rule, events in rules_of("aws"):
        (folder / f"{rule.path.stem}.json").write_text(
            json.dumps({"Records": events.records}, indent=1)
        )
        total += len(events.records)
    case = root / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(folder))
    assert captured.code == 0, captured.stderr
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    summary = timeline.json()
    assert (summary["rows"], summary["errors"]) == (total, 0), "every case event is one row"
    return run_detect(case)


@pytest.fixture(scope="module")
def route53_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    """One case with every Resolver query log case, one gzip log per rule under AWS's
    own file name, recognised by `capture files` and read by the parser; the findings'
    event ids are translated back to the cases' ids through `raw.cloudir_case`."""
    assert_unique_ids()
    root = tmp_path_factory.mktemp("rule-cases-route53")
    total = 0
    for number, (_, events) in enumerate(rules_of("route53")):
        write_log(root / "logs" / s3_name(datetime(2026, 1, 1, tzinfo=UTC), tag=f"{number:08x}"),
                  events.records)  # fmt: skip
        total += len(events.records)
    case = root / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(root / "logs"), "--json")
    assert captured.code == 0, captured.stderr
    assert [i["kind"] for i in captured.json()["items"]] == ["route53-resolver"]
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    assert (timeline.json()["rows"], timeline.json()["errors"]) == (total, 0)
    ids = query(case, "SELECT event_id, raw->>'cloudir_case' AS case_id FROM timeline")
    case_id = {row["event_id"]: row["case_id"] for row in ids}
    run = run_detect(case)
    fired = {rule: {case_id[e] for e in events} for rule, events in run.fired.items()}
    return DetectRun(fired, run.skipped)


def _rows_run(tmp_path_factory: pytest.TempPathFactory, product: str) -> DetectRun:
    """One case whose timeline is every case row of the product's rules, as its parser
    writes them."""
    assert_unique_ids()
    case = tmp_path_factory.mktemp(f"rule-cases-{product}") / "case"
    rows = [row for _, events in rules_of(product) for row in events.records]
    write_timeline(case, rows)
    return run_detect(case)


@pytest.fixture(scope="module")
def linux_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "linux")


@pytest.fixture(scope="module")
def vpcflow_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "vpcflow")


@pytest.fixture(scope="module")
def docker_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "docker")


@pytest.fixture(scope="module")
def kubernetes_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "kubernetes")


@pytest.fixture(scope="module")
def s3_access_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "s3_access")


@pytest.fixture(scope="module")
def alb_access_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "alb_access")


@pytest.fixture(scope="module")
def aws_lambda_run(tmp_path_factory: pytest.TempPathFactory) -> DetectRun:
    return _rows_run(tmp_path_factory, "aws_lambda")


def rule_params() -> list[Any]:
    rules = sorted(shipped_rules().values(), key=lambda r: (r.product, r.path.name))
    stems = [r.path.stem for r in rules]
    return [
        pytest.param(r.rule_id, id=r.path.stem if stems.count(r.path.stem) == 1 else r.rule_id)
        for r in rules
    ]


def run_for(rule_id: str, request: pytest.FixtureRequest) -> tuple[ShippedRule, DetectRun]:
    rule = shipped_rules()[rule_id]
    if rule_id not in built_events():
        pytest.fail(f"{rule.describe()}: no cases in {CASES_FILE.name}")
    return rule, request.getfixturevalue(f"{rule.product}_run")


def test_every_rule_that_produces_findings_has_cases() -> None:
    """A new rule without cases, or cases for a rule that is gone, fails here."""
    shipped = shipped_rules()
    cases = case_file()["rules"]
    missing = [
        shipped[rule_id].describe()
        for rule_id in shipped
        if not all((cases.get(rule_id) or {}).get(p) for p in POLARITIES)
    ]
    assert not missing, "rules without a positive and a negative case:\n" + "\n".join(missing)
    unknown = sorted(set(cases) - set(shipped))
    assert not unknown, f"cases for rules that do not exist or do not alert: {unknown}"


@pytest.mark.parametrize("rule_id", rule_params())
def test_positive_cases_fire(rule_id: str, request: pytest.FixtureRequest) -> None:
    rule, run = run_for(rule_id, request)
    if rule_id in run.skipped:
        pytest.fail(f"{rule.describe()}: not run: {run.skipped[rule_id]}")
    missed = sorted(set(built_events()[rule_id].ids["positive"]) - run.fired.get(rule_id, set()))
    assert not missed, f"{rule.describe()}: did not fire on {missed}"


@pytest.mark.parametrize("rule_id", rule_params())
def test_negative_cases_do_not_fire(rule_id: str, request: pytest.FixtureRequest) -> None:
    rule, run = run_for(rule_id, request)
    if rule_id in run.skipped:  # a rule that never ran proves nothing about near misses
        pytest.fail(f"{rule.describe()}: not run: {run.skipped[rule_id]}")
    hit = sorted(set(built_events()[rule_id].ids["negative"]) & run.fired.get(rule_id, set()))
    assert not hit, f"{rule.describe()}: fired on near misses {hit}"


def test_promoted_columns_change_no_finding(
    aws_run: DetectRun, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every CloudTrail case without its promoted columns (a timeline written before
    schema 2; a record of another shape has them NULL, which reads the same) fires the
    same rules on the same events: the columns are where rules read those fields faster,
    never a different answer."""
    import shutil

    import pyarrow.parquet as pq

    from cloudir.analyze.schema import PROMOTED_COLUMNS

    assert aws_run.case is not None
    case = tmp_path_factory.mktemp("rule-cases-unpromoted") / "case"
    shutil.copytree(aws_run.case, case)
    shutil.rmtree(case / "findings")
    parts = sorted((case / "timeline").rglob("*.parquet"))
    filled = 0
    for part in parts:
        table = pq.read_table(part)
        filled += table.num_rows - table.column("promoted_from").null_count
        pq.write_table(table.drop_columns(PROMOTED_COLUMNS), part)
    assert filled > 500  # the cases did fill them: the comparison means something
    unpromoted = run_detect(case)
    assert unpromoted.skipped == aws_run.skipped
    assert unpromoted.fired == aws_run.fired


def test_context_tables_equal_the_aggregates_over_the_timeline(aws_run: DetectRun) -> None:
    """The computed fields' tables detect makes before its scan (one read of the rare
    rows' `raw` into `_rare`, the promoted columns elsewhere) hold exactly the aggregates
    each field's statement gives over the whole timeline, the way Spark's parts and the
    fields' first version read it."""
    from cloudir.analyze import detect
    from cloudir.analyze.query import connect
    from cloudir.analyze.sigma.context import CONTEXTS
    from cloudir.case import Case

    assert aws_run.case is not None
    con = connect(Case.open(aws_run.case))
    detect.register_functions(con)
    rules = detect.load_rules(detect.rule_files([], True), con)
    plan = rules.backend.fields
    assert set(plan.context) == set(CONTEXTS)  # the shipped rules read every field

    def rows(sql: str) -> list[tuple[Any, ...]]:
        found = con.execute(sql).fetchall()
        return sorted(
            (tuple(sorted(v, key=repr) if isinstance(v, list) else v for v in r) for r in found),
            key=repr,
        )

    tables = detect.context_tables(con, plan, detect.all_promoted(con))
    assert con.execute("SELECT count(*) FROM _rare").fetchall()[0][0] > 0
    filled = 0
    for name, context in CONTEXTS.items():
        made = rows(f"SELECT * FROM {tables[name]}")
        assert made == rows(context.table_sql()), name
        filled += bool(made)
    assert filled == len(CONTEXTS)  # each field's cases gave it facts: the check means something


def test_unchained_correlations_find_the_same_events(aws_run: DetectRun) -> None:
    """A correlation no other one reads finds its events by a semi-join of the events to
    its alerts, not by listing each alert's events: the same events and the same number
    of alerts, for every shipped correlation over every CloudTrail case."""
    from cloudir.analyze import detect
    from cloudir.analyze.query import connect
    from cloudir.analyze.sigma import correlation
    from cloudir.case import Case

    assert aws_run.case is not None
    con = connect(Case.open(aws_run.case))
    detect.register_functions(con)
    rules = detect.load_rules(detect.rule_files([], True), con)
    detect.run_rules(con, rules)
    compared = 0
    for n, rule in enumerate(rules.rules):
        if rule.correlation is None:
            continue
        unchained = correlation.run(con, n, rule.correlation, chained=False)
        alerts = correlation.alert_count(con, n)
        # listed last: a correlation reading this one's alerts finds their events' lists
        assert correlation.run(con, n, rule.correlation, chained=True) == unchained, rule.title
        assert correlation.alert_count(con, n) == alerts, rule.title
        compared += bool(unchained)
    assert compared >= 20  # most correlations fire on their cases: the comparison means something


def test_matched_event_ids_are_each_rules_own_rows(aws_run: DetectRun) -> None:
    """The reported rules' events come from one statement over the packed flags: for every
    detection rule, the same ids in the same order (one per matched row) as reading its
    flag from `_hits`; base rules, which no finding reports, are left out."""
    from cloudir.analyze import detect
    from cloudir.analyze.query import connect
    from cloudir.case import Case

    assert aws_run.case is not None
    con = connect(Case.open(aws_run.case))
    detect.register_functions(con)
    rules = detect.load_rules(detect.rule_files([], True), con)
    detect.run_rules(con, rules)
    detections = [n for n, rule in enumerate(rules.rules) if not rule.is_correlation]
    batched = detect.matched_event_ids(con, detect.flag_columns(rules), detections)
    matched = 0
    for n in detections:
        own = con.execute(f"SELECT event_id FROM _hits WHERE h{n} ORDER BY timestamp, event_id")
        ids = [row[0] for row in own.fetchall()]
        assert batched.get(n, []) == ids, rules.rules[n].title
        matched += bool(ids)
    assert matched >= 100  # most rules match on their cases: the comparison means something
    reported = [n for n in detections if rules.rules[n].output]
    assert set(detect.matched_event_ids(con, detect.flag_columns(rules), reported)) <= set(reported)


def test_promoted_reads_give_the_same_hits(aws_run: DetectRun) -> None:
    """Where every CloudTrail row has promoted columns, CloudTrail rules and triage columns
    read them directly (detect.hits_sql `promoted`): the same `_hits` rows, flags, keys
    and triage columns as reading each field through the CASE that picks column or `_f`."""
    from cloudir.analyze import detect
    from cloudir.analyze.query import connect
    from cloudir.case import Case

    assert aws_run.case is not None
    con = connect(Case.open(aws_run.case))
    detect.register_functions(con)
    assert detect.all_promoted(con)
    rules = detect.load_rules(detect.rule_files([], True), con)
    tables = detect.context_tables(con, rules.backend.fields, promoted=True)
    for promoted in (False, True):
        select = detect.hits_sql(rules, [], {}, tables, promoted)
        con.execute(f"CREATE TEMP TABLE hits_{promoted} AS {select}").fetchall()
    differ = "SELECT count(*) FROM (SELECT * FROM hits_{} EXCEPT ALL SELECT * FROM hits_{})"
    assert con.execute(differ.format(True, False)).fetchall() == [(0,)]
    assert con.execute(differ.format(False, True)).fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM hits_True").fetchall()[0][0] >= 500


def test_joined_actor_classes_give_the_same_hits(
    aws_run: DetectRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """triage.actor_class_table classes each distinct tuple of the fields the actor class
    reads once, and the scan joins matched rows to it: the same `_hits` rows and columns,
    in the same order, as the chains evaluated on each row, over rows of three actor
    classes (so the comparison means something). With about one row per tuple, as in the
    cases, no table is made."""
    from cloudir.analyze import detect, triage
    from cloudir.analyze.query import connect
    from cloudir.case import Case

    assert aws_run.case is not None
    con = connect(Case.open(aws_run.case))
    detect.register_functions(con)
    rules = detect.load_rules(detect.rule_files([], True), con)
    tables = detect.context_tables(con, rules.backend.fields, promoted=True)
    assert triage.actor_class_table(con) is None  # the cases: about one row per tuple
    monkeypatch.setattr(triage, "ROWS_PER_ACTOR_TUPLE", 0)
    keys = triage.actor_class_table(con)
    assert keys is not None and "raw_userAgent" in keys
    for joined, actor_keys in ((False, None), (True, keys)):
        select = detect.hits_sql(rules, [], {}, tables, True, actor_keys)
        con.execute(f"CREATE TEMP TABLE hits_{joined} AS {select}").fetchall()
    columns = [
        [row[0] for row in con.execute(f"DESCRIBE hits_{j}").fetchall()] for j in (False, True)
    ]
    assert columns[0] == columns[1]
    differ = "SELECT count(*) FROM (SELECT * FROM hits_{} EXCEPT ALL SELECT * FROM hits_{})"
    assert con.execute(differ.format(True, False)).fetchall() == [(0,)]
    assert con.execute(differ.format(False, True)).fetchall() == [(0,)]
    classes = {row[0] for row in con.execute("SELECT DISTINCT t_actor FROM hits_True").fetchall()}
    assert {"human-console", "cli-sdk", "aws-service"} <= classes
