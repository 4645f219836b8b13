"""Triage of findings: did it work, who did it, and which finding to read first.

A finding that only ever failed (every matched call was denied) is an attempt, worth
knowing but less urgent than the same call succeeding, so its shown level drops one step
(the rule's own level stays in `rule_level`). A finding's actor is the most human actor
among its events (`actors.py` classifies each event): automation and AWS services rank
below people unless the automation identity itself was misused. The contract is in
docs/DESIGN.md ("findings.json") and docs/detection.md ("Triage").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cloudir.analyze.actors import (
    ACTOR_CLASSES,
    AUTOMATION,
    AWS_SERVICE,
    HUMAN_CONSOLE,
    INTERACTIVE_AGENTS,
    FieldSql,
    actor_sql,
    identity_sql,
    is_address_sql,
)
from cloudir.analyze.duck import quote_ident, sql_str
from cloudir.analyze.schema import PROMOTED_COLUMNS, promoted_column

LEVELS = ["informational", "low", "medium", "high", "critical"]
SUCCEEDED, ATTEMPTED, MIXED = "succeeded", "attempted", "mixed"
OUTCOME_ORDER = {SUCCEEDED: 0, None: 0, MIXED: 1, ATTEMPTED: 2}  # unknown: not demoted

# The timeline's `outcome` column: "success", or a failure ("failure", an errorCode).
SUCCESS_SQL = "COALESCE(lower(trim(t_outcome)) = 'success', false)"
FAILURE_SQL = "COALESCE(trim(t_outcome) <> '' AND lower(trim(t_outcome)) <> 'success', false)"


def event_outcome(value: str | None) -> bool | None:
    """True: the event succeeded; False: it failed; None: the row does not say."""
    if value is None or not value.strip():
        return None
    return value.strip().lower() == "success"


def outcome_of(succeeded: int, failed: int) -> str | None:
    """Of a finding, from how many matched events succeeded and failed."""
    if failed and succeeded:
        return MIXED
    if failed:
        return ATTEMPTED
    return SUCCEEDED if succeeded else None


def shown_level(
    rule_level: str, outcome: str | None, about_failure: bool = False
) -> tuple[str, str | None]:
    """The level to show, and why it differs from the rule's; attempts drop one step,
    unless failing is what the rule looks for (a burst of denied calls, password guessing):
    its author set the level for the attempt."""
    if outcome != ATTEMPTED or about_failure or rule_level not in LEVELS:
        return rule_level, None
    if rule_level == LEVELS[0]:
        return rule_level, None
    lower = LEVELS[LEVELS.index(rule_level) - 1]
    return lower, f"attempted: every matched call failed, level lowered from {rule_level}"


# Fields that say whether a call worked: a rule testing them is about the outcome itself.
OUTCOME_FIELDS = frozenset(
    {"errorcode", "errormessage", "outcome", "responseelements.consolelogin"}
)
FAILURE_WORDS = ("fail", "invalid", "denied")


def tests_outcome(rule: Any) -> bool:
    """Does a pySigma rule's own detection test the outcome (an outcome field, or a
    keyword naming a failure such as sshd's 'Failed password for')? Then its matches are
    failures by design and `shown_level` keeps its level."""

    def items(detection: Any) -> Any:
        for item in getattr(detection, "detection_items", []):
            if hasattr(item, "detection_items"):
                yield from items(item)
            else:
                yield item

    detections = getattr(getattr(rule, "detection", None), "detections", {}) or {}
    for detection in detections.values():
        for item in items(detection):
            name = getattr(item, "field", None)
            if name is not None and str(name).lower() in OUTCOME_FIELDS:
                return True
            if name is None:
                values = " ".join(str(v) for v in getattr(item, "value", [])).lower()
                if any(word in values for word in FAILURE_WORDS):
                    return True
    return False


def finding_actor(
    counts: dict[tuple[str, str | None], int],
) -> tuple[str | None, str | None, dict[str, int]]:
    """(actor, actor_detail, actors) from matched events counted by (class, detail).

    The actor is the most human class present (a person among automation is the story);
    its detail the commonest among that class's events (ties: alphabetical).
    """
    actors: Counter[str] = Counter()
    for (kind, _), n in counts.items():
        actors[kind] += n
    actor = next((k for k in ACTOR_CLASSES if actors.get(k)), None)
    if actor is None:
        return None, None, {}
    details = [(n, d) for (k, d), n in counts.items() if k == actor and d]
    detail = min(details, key=lambda pair: (-pair[0], pair[1]))[1] if details else None
    ordered = {k: actors[k] for k in ACTOR_CLASSES if actors.get(k)}
    return actor, detail, ordered


def ranks_as_human(finding: dict[str, Any]) -> bool:
    """Automation and AWS services rank below people, unless the automation was misused."""
    return finding.get("actor") not in (AUTOMATION, AWS_SERVICE) or bool(
        finding.get("automation_misused")
    )


def rank_key(finding: dict[str, Any]) -> tuple[Any, ...]:
    level = finding["level"]
    return (
        0 if ranks_as_human(finding) else 1,
        -LEVELS.index(level) if level in LEVELS else 0,
        OUTCOME_ORDER.get(finding.get("outcome"), 0),
        str(finding["first_seen"]),
        finding["title"],
    )


def rank(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings in reading order, each with its `rank` (1 = read first)."""
    ordered = sorted(findings, key=rank_key)
    for position, finding in enumerate(ordered, 1):
        finding["rank"] = position
    return ordered


# --- in DuckDB, over the matched events detect keeps in `_hits` ------------------------

CLOUDTRAIL = "artifact = 'aws:cloudtrail'"


def event_columns(field: FieldSql) -> list[str]:
    """The per-event triage columns of `_hits`: outcome, actor class and detail, and the
    automation a role's or user's name declares. Only matched rows compute them."""
    return ["outcome AS t_outcome"] + [
        f"CASE WHEN {CLOUDTRAIL} THEN {value} END AS {name}"
        for name, value in _cloudtrail_columns(field).items()
    ]


# event_columns' columns that read a CloudTrail row's fields, and only those rows'
CLOUDTRAIL_COLUMNS = frozenset({"t_actor", "t_detail", "t_named"})


def _cloudtrail_columns(field: FieldSql) -> dict[str, str]:
    """CLOUDTRAIL_COLUMNS' SQL over one CloudTrail row's fields, as `field` reads them."""
    sql = actor_sql(field)
    columns = {"t_actor": sql.kind, "t_detail": sql.detail, "t_named": sql.automation_identity}
    assert set(columns) == CLOUDTRAIL_COLUMNS
    return columns


ACTOR_CLASSES_TABLE = "_actor_classes"  # actor_class_table's table
# The table is made only when the timeline's CloudTrail rows hold at least this many rows
# per distinct tuple of the fields the actor class reads: with fewer, classing each
# tuple saves too little over classing each matched row.
ROWS_PER_ACTOR_TUPLE = 8


def actor_class_table(con: Any) -> tuple[str, ...] | None:
    """ACTOR_CLASSES_TABLE: CLOUDTRAIL_COLUMNS for each distinct tuple of the promoted
    columns the actor class reads, over the timeline's CloudTrail rows; returns those
    columns (actor_joined_sql's keys), or None when no table was made.

    For detect where every CloudTrail row has promoted columns (detect.all_promoted):
    its scan joins each matched row to its tuple's class (actor_joined_sql) instead of
    evaluating the two chains of about 50 LIKEs on each of them (at 5M rows, 2.9M matched
    rows, about 7 CPU-s). The class is a function of those fields alone, so the columns
    are the same; an account with few rows per tuple keeps the chains
    (ROWS_PER_ACTOR_TUPLE).
    """
    paths: dict[str, str] = {}
    classes = _cloudtrail_columns(lambda path: paths.setdefault(path, _actor_key(len(paths))))
    columns = tuple(promoted_column(path) for path in paths)
    if not set(columns) <= set(PROMOTED_COLUMNS):
        return None  # a field the class reads has no column: the chains read it
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _actor_keys AS "
        f"SELECT DISTINCT {', '.join(_actor_key_columns(columns))} FROM timeline "
        f"WHERE {CLOUDTRAIL}"
    ).fetchall()
    [(tuples, rows)] = con.execute(
        f"SELECT (SELECT count(*) FROM _actor_keys), "
        f"(SELECT count(*) FROM timeline WHERE {CLOUDTRAIL})"
    ).fetchall()
    made = bool(tuples) and tuples * ROWS_PER_ACTOR_TUPLE <= rows
    if made:
        values = ", ".join(f"{value} AS {name}" for name, value in classes.items())
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {ACTOR_CLASSES_TABLE} AS "
            f"SELECT *, {values} FROM _actor_keys"
        ).fetchall()
    con.execute("DROP TABLE _actor_keys").fetchall()
    return columns if made else None


def actor_key_columns(keys: Sequence[str]) -> list[str]:
    """What a matched row carries for actor_joined_sql: whether it is a CloudTrail row,
    and the `keys` columns under the table's names for them."""
    return [f"{CLOUDTRAIL} AS _ct", *_actor_key_columns(keys)]


def actor_joined_sql(matched: str, keys: Sequence[str]) -> str:
    """`matched` (rows with actor_key_columns(keys)) with CLOUDTRAIL_COLUMNS from
    ACTOR_CLASSES_TABLE, each CloudTrail row joined to its tuple, and without the
    carried key columns.

    A tuple is in the table at most once, so no row is doubled; NULL matches NULL (IS NOT
    DISTINCT FROM), as the classes' own inputs would; a row of another artifact gets
    NULL, as event_columns' CASE gives it.
    """
    aliases = [_actor_key(n) for n in range(len(keys))]
    on = " AND ".join(f"m.{a} IS NOT DISTINCT FROM c.{a}" for a in aliases)
    actor = ", ".join(
        f"CASE WHEN m._ct THEN c.{name} END AS {name}" for name in sorted(CLOUDTRAIL_COLUMNS)
    )
    return f"""SELECT m.* EXCLUDE (_ct, {", ".join(aliases)}), {actor}
            FROM ({matched}) m LEFT JOIN {ACTOR_CLASSES_TABLE} c ON {on}"""


def _actor_key(n: int) -> str:
    return f"_a{n}"


def _actor_key_columns(keys: Sequence[str]) -> list[str]:
    return [f"{quote_ident(key)} AS {_actor_key(n)}" for n, key in enumerate(keys)]


AUTOMATION_CALLS = "_automation_calls"  # detect's table of automation_calls_sql's rows


def automation_baseline(con: Any, calls: str | None, matched: str, typed: bool = False) -> None:
    """`_automation`: for each identity seen in a CloudTrail event of `matched`, the addresses
    it made automation calls from anywhere in the case, and when it first did.

    One pass over the timeline rows of those identities only (their `user` column is
    compared before any JSON is parsed); what tells a new address from a known one.
    With `calls` (a table of automation_calls_sql's rows: detect on Spark gathered them from
    the timeline's parts while it scanned), the matched identities' rows are taken from it,
    each (identity, address)'s minimum of the parts' minimums, which is the same table.
    `typed`: every CloudTrail row of the timeline has promoted columns, so `raw` is not read.
    """
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _automation_wanted AS
            SELECT DISTINCT {identity_sql("e_principals")} AS ident FROM {matched}
            WHERE t_actor IS NOT NULL AND e_principals IS NOT NULL"""
    ).fetchall()
    empty = (
        "CREATE OR REPLACE TEMP TABLE _automation "
        "(ident VARCHAR, src_ip VARCHAR, first_seen TIMESTAMPTZ)"
    )
    if not con.execute("SELECT count(*) FROM _automation_wanted").fetchall()[0][0]:
        con.execute(empty).fetchall()  # no CloudTrail event matched: nothing to compare with
        return
    if calls is not None:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _automation AS SELECT ident, src_ip,
                min(first_seen) AS first_seen FROM {calls}
                WHERE ident IN (SELECT ident FROM _automation_wanted) GROUP BY ALL"""
        ).fetchall()
        return
    user = identity_sql('"user"')
    rows = (
        f"(SELECT * FROM timeline WHERE {CLOUDTRAIL} "
        f"AND {user} IN (SELECT ident FROM _automation_wanted) AND {is_address_sql('src_ip')})"
    )
    earliest = _earliest_automation_sql(rows, typed)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _automation AS {earliest}").fetchall()


def automation_calls_sql() -> str:
    """Every identity's earliest automation call from each address, over `timeline`.

    automation_baseline's statement without its filter on the matched identities: a scan
    over parts of the timeline does not know them yet (they are `_hits`' own), so it takes
    every identity's and the baseline keeps the matched ones. A row-level selection grouped
    by (identity, address) with a minimum: over parts, the parts' minimums.
    """
    rows = (
        f"(SELECT * FROM timeline WHERE {CLOUDTRAIL} "
        f"""AND "user" IS NOT NULL AND {is_address_sql("src_ip")})"""
    )
    return _earliest_automation_sql(rows)


def _earliest_automation_sql(rows: str, typed: bool = False) -> str:
    """Classified once per distinct (identity, address, fields the class reads), not per
    row: the class is a function of those fields alone, and its two dozen ILIKEs over the
    user agent cost more than the rest of the statement (an identity makes its calls with
    a handful of agents). With `typed` (every row has promoted columns, which hold every
    field the class reads) nothing reads `raw`, so DuckDB does not decompress it."""
    from cloudir.analyze.sigma.fields import FieldPlan

    plan = FieldPlan()
    paths: dict[str, str] = {}
    kind = actor_sql(lambda path: paths.setdefault(path, f"_a{len(paths)}")).kind
    if typed:
        read = {path: quote_ident(promoted_column(path)) for path in paths}
    else:
        read = {path: plan.value_sql(tuple(path.split("."))) for path in paths}
        rows = f"({plan.scan_sql(rows)})"
    values = ", ".join(f"{read[path]} AS {name}" for path, name in paths.items())
    return f"""SELECT ident, src_ip, min(first_seen) AS first_seen FROM (
            SELECT {identity_sql('"user"')} AS ident, src_ip, {", ".join(paths.values())},
                min(timestamp) AS first_seen
            FROM (SELECT *, {values} FROM {rows}) GROUP BY ALL
        ) WHERE ({kind}) = {sql_str(AUTOMATION)} GROUP BY ALL"""


def finding_triage(con: Any, where: str, matched: str) -> dict[str, Any]:
    """Outcome, actor and misuse of one finding, whose events are the rows `where` selects
    of `matched` (`_hits`, or detect's `_found`: the rows of the findings' events).

    Misuse of an automation identity, which makes automation rank with people:
    - by hand: a role or user NAMED as automation (`actors.AUTOMATION_IDENTITIES`) used
      from the console or an interactive CLI (not an SDK: that may be its own code);
    - new address: an automation call (by agent or name) from an IP address the identity
      first made automation calls from after it had made them from another one. CI
      runners with changing addresses trip it; a suppression by their network quiets it.
    An identity that merely once ran Terraform is not "automation" for the first test: a
    person's own console work stays a person's.
    """
    ident = identity_sql("r.e_principals")
    by_hand = ", ".join(sql_str(s.detail) for s in INTERACTIVE_AGENTS)
    marked = f"""SELECT r.timestamp, r.t_actor, r.t_detail, r.t_outcome, r.t_named,
        r.e_source_ips AS ip, {ident} AS ident,
        COALESCE((r.t_actor = {sql_str(HUMAN_CONSOLE)} OR r.t_detail IN ({by_hand}))
            AND r.t_named IS NOT NULL, false) AS by_hand,
        COALESCE(r.t_actor = {sql_str(AUTOMATION)}
            AND (SELECT min(first_seen) FROM _automation a
                 WHERE a.ident = {ident} AND a.src_ip = r.e_source_ips)
              > (SELECT min(first_seen) FROM _automation a WHERE a.ident = {ident}),
            false) AS new_address
        FROM {matched} r WHERE {where}"""
    groups = con.execute(
        f"""SELECT t_actor, t_detail, count(*), count(*) FILTER (WHERE {SUCCESS_SQL}),
                count(*) FILTER (WHERE {FAILURE_SQL}),
                count(*) FILTER (WHERE t_actor = {sql_str(AUTOMATION)} OR t_named IS NOT NULL)
            FROM {matched} WHERE {where} GROUP BY ALL"""
    ).fetchall()
    succeeded = sum(g[3] for g in groups)
    failed = sum(g[4] for g in groups)
    counts = {(kind, detail): n for kind, detail, n, *_ in groups if kind is not None}
    misuse = []
    if any(g[5] for g in groups):  # only then is there an automation identity to judge
        misuse = con.execute(
            f"SELECT ident, ip, t_actor, t_detail, t_named, by_hand FROM ({marked}) "
            "WHERE by_hand OR new_address ORDER BY timestamp LIMIT 1"
        ).fetchall()
    outcome = outcome_of(succeeded, failed)
    actor, detail, actors = finding_actor(counts)
    return {
        "outcome": outcome,
        "actor": actor,
        "actor_detail": detail,
        "actors": actors,
        "automation_misused": bool(misuse),
        "actor_note": _misuse_note(*misuse[0]) if misuse else None,
    }


def _misuse_note(
    ident: str | None, ip: str | None, kind: str, detail: str | None, named: str | None,
    by_hand: bool,
) -> str:  # fmt: skip
    who = f"automation identity {ident or '?'}" + (f" ({named})" if named else "")
    if by_hand:
        return f"{who} used by hand: {kind}, {detail or 'unknown agent'}"
    return f"{who} called from {ip}, an address it had not used for automation before"
