"""`cloudir detect` and `cloudir rules list|validate`: run Sigma rules, show what loads.

Top-level commands here carry no `@app.command()`: `cli/__init__.py` adds them to the
root app, in the order help lists them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.common import (
    CaseOpt,
    EngineOpt,
    JsonOpt,
    SparkMasterOpt,
    emit_json,
    engine_choice,
    handled,
    locks_case,
    say,
    show,
    spark_progress,
)
from cloudir.errors import EXIT_EVIDENCE, EXIT_FINDINGS, UsageError

WHO_SHOWN = 2  # principals per finding in the terminal table; findings.json lists them all

rules_app = typer.Typer(help="Inspect Sigma rules: what loads, what is skipped and why.")

RulesOpt = Annotated[
    list[Path] | None,
    typer.Option("--rules", metavar="PATH", help="Extra Sigma rule file or folder (repeatable)."),
]

NoBuiltinOpt = Annotated[
    bool, typer.Option("--no-builtin", help="Run only the rules given with --rules.")
]
FailOnOpt = Annotated[str, typer.Option(help="Exit 1 when a finding reaches this level.")]
SuppressOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--suppress",
        metavar="DIR",
        help="Folder of Sigma filter rules that suppress known-good matches (repeatable); "
        "suppressed matches are counted in findings.json.",
    ),
]


@handled
@locks_case()
def detect(
    case: CaseOpt,
    rules: RulesOpt = None,
    no_builtin: NoBuiltinOpt = False,
    fail_on: FailOnOpt = "high",
    suppress: SuppressOpt = None,
    as_json: JsonOpt = False,
    engine_name: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = None,
) -> None:
    """Run Sigma rules over the timeline; write findings/findings.{json,parquet}.

    With --engine spark the scan runs on a Spark cluster (--spark-master, SPARK_MASTER or
    the spark-submit session) and gives the same findings.

    Example: cloudir detect --case ./case-42 --rules ./my-rules --suppress ./known-good

    Example: cloudir detect --case ./case-42 --engine spark --spark-master local[2]
    """
    from cloudir.analyze import detect as engine
    from cloudir.case import Case

    on_spark = engine_choice(engine_name, spark_master) == "spark"
    if fail_on not in engine.LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(engine.LEVELS)}")
    the_case = Case.open(case)
    if on_spark:
        from cloudir.analyze.spark_detect import detect_spark
        from cloudir.engines.spark_session import spark_session

        spark = spark_session(spark_master)
        result = detect_spark(
            the_case,
            spark,
            rules or [],
            builtin=not no_builtin,
            suppress=suppress or [],
            progress=spark_progress(as_json),
        )
    else:
        result = engine.detect(
            the_case, rules or [], builtin=not no_builtin, suppress=suppress or []
        )
    if as_json:
        sys.stdout.write(the_case.paths.findings_json.read_text())
    else:
        print_findings(result.findings)
    say_detection(result)
    if reaches(result.findings, fail_on):
        raise typer.Exit(EXIT_FINDINGS)


def say_detection(result: Any) -> None:
    from cloudir.analyze import detect as engine

    builtin_root = str(engine.BUILTIN_RULES)
    own = [s for s in result.rules.skipped if not s["path"].startswith(builtin_root)]
    for skipped in own:  # the user's own rules: each one named; built-ins: see `rules list`
        say(f"skipped rule {_skipped_where(skipped)}: {skipped['reason']}")
    if len(own) < len(result.rules.skipped):
        say(
            f"{len(result.rules.skipped) - len(own)} built-in rules not run; "
            "`cloudir rules list` says why"
        )
    for warning in result.warnings:
        say(f"warning: {warning}")
    if result.suppressions:
        removed = sum(s["suppressed"] for s in result.suppressions)
        filters = len(result.suppressions)
        say(
            f"{removed} {'match' if removed == 1 else 'matches'} suppressed by {filters} "
            f"{'filter' if filters == 1 else 'filters'} "
            '(findings.json "suppressions" counts each)'
        )
    reported = result.rules.reported
    correlations = sum(1 for r in reported if r.is_correlation)
    say(
        f"{len(reported)} rules run ({correlations} correlations), "
        f"{len(result.rules.skipped)} skipped, {len(result.findings)} findings in {result.path}"
    )


def reaches(findings: list[dict[str, Any]], fail_on: str) -> bool:
    from cloudir.analyze.detect import LEVELS

    return any(LEVELS.index(f["level"]) >= LEVELS.index(fail_on) for f in findings)


def print_findings(findings: list[dict[str, Any]]) -> None:
    """The findings in reading order (`rank`); automation and AWS services' own activity
    below a line, apart from people's. An attempt whose level dropped says so after its
    title. "who" shortens a principal (`user/alice`) unless another one in the table
    shortens alike: `user/christophe` in two accounts reads `<account>:user/christophe`."""
    from rich.table import Table
    from rich.text import Text

    from cloudir.analyze.messages import reader_names
    from cloudir.analyze.triage import ranks_as_human
    from cloudir.console import inert, stdout

    table = Table(show_lines=False, pad_edge=False)
    table.add_column("level", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("outcome", no_wrap=True)
    table.add_column("actor", ratio=1)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("first seen (UTC)", no_wrap=True)
    table.add_column("who", ratio=1)
    table.add_column("from", ratio=1)
    human = [f for f in findings if ranks_as_human(f)]
    shown = {id(f): list(dict.fromkeys(f["entities"]["principals"]))[:WHO_SHOWN] for f in findings}
    names = reader_names(p for listed in shown.values() for p in listed)
    for n, f in enumerate(human + [f for f in findings if not ranks_as_human(f)]):
        entities = f["entities"]
        who = [names[p] for p in shown[id(f)] if p]
        title = f["title"] + (" (attempted)" if f.get("level_note") else "")
        table.add_row(
            Text(f["level"]),
            Text(inert(title, 92)),
            Text(f.get("outcome") or "-"),
            Text(inert(_actor_cell(f), 40)),
            Text(str(f["count"])),
            Text(f["first_seen"][:19].replace("T", " ")),
            Text(inert(", ".join(who), 50)),
            Text(inert(", ".join(entities["source_ips"][:3]), 50)),
            end_section=n == len(human) - 1 and len(human) < len(findings),
        )
    stdout.print(table)


def _actor_cell(finding: dict[str, Any]) -> str:
    """`automation (terraform)`; `!` marks automation whose identity was misused."""
    actor = finding.get("actor")
    if not actor:
        return "-"
    detail = finding.get("actor_detail")
    cell = f"{actor} ({detail})" if detail else actor
    return cell + (" !" if finding.get("automation_misused") else "")


@rules_app.command("list")
@handled
def rules_list(
    rules: RulesOpt = None,
    no_builtin: Annotated[bool, typer.Option("--no-builtin", help="Only --rules.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the rules that load and those skipped, with reasons.

    Example: cloudir rules list --rules ./sigma/rules/cloud/aws
    """
    _rules_report(rules or [], not no_builtin, as_json)


@rules_app.command("validate")
@handled
def rules_validate(
    paths: Annotated[list[Path], typer.Argument(help="Rule files or folders.")],
    as_json: JsonOpt = False,
) -> None:
    """Check that rules load and compile; exit 3 if any is skipped.

    Example: cloudir rules validate ./my-rules
    """
    if _rules_report(paths, False, as_json):
        raise typer.Exit(EXIT_EVIDENCE)


def _rule_kind(rule: Any) -> str:
    """`rule`, a correlation's type, or `feeds-only` for a base that only feeds one."""
    if rule.correlation is not None:
        return str(rule.correlation.kind)
    return "rule" if rule.output else "feeds-only"


def _skipped_where(skipped: dict[str, Any]) -> str:
    """`title (file, document 2, line 14)`: enough to find one document in a long file."""
    where = [skipped["path"]]
    if skipped.get("document"):
        where.append(f"document {skipped['document']}, line {skipped['line']}")
    return f"{skipped['title'] or '-'} ({', '.join(where)})"


def _rules_report(paths: list[Path], builtin: bool, as_json: bool) -> int:
    from cloudir.analyze import detect as engine

    ruleset = engine.validate(paths, builtin)
    if as_json:
        emit_json(
            {
                "loaded": [
                    {
                        "id": r.rule_id,
                        "title": r.title,
                        "level": r.level,
                        "path": r.path,
                        "kind": _rule_kind(r),
                    }
                    for r in ruleset.rules
                ],
                "skipped": ruleset.skipped,
            }
        )
    else:
        for r in ruleset.rules:
            show(f"ok       {r.level:<13} {_rule_kind(r):<12} {r.title} ({r.path})")
        for skipped in ruleset.skipped:
            show(f"SKIPPED  {_skipped_where(skipped)}: {skipped['reason']}")
    say(f"{len(ruleset.rules)} rules load, {len(ruleset.skipped)} skipped")
    return len(ruleset.skipped)
