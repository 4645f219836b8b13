"""`cloudir timeline`, `timeline export` and `query`: build the timeline and read it.

`query` is a top-level command: `cli/__init__.py` adds it to the root app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.common import (
    CaseOpt,
    EndpointOpt,
    EngineOpt,
    FsTimelineOpt,
    JsonOpt,
    SparkMasterOpt,
    emit_json,
    engine_choice,
    handled,
    locks_case,
    parse_options,
    say,
    show,
    spark_progress,
)
from cloudir.errors import EXIT_EVIDENCE, EvidenceError, UsageError

timeline_app = typer.Typer(
    help="Parse all evidence into the case's Parquet timeline.\n\n"
    "Example: cloudir timeline --case ./case-42",
    invoke_without_command=True,
)


@timeline_app.callback()
@handled
@locks_case(when=lambda kw: kw["ctx"].invoked_subcommand is None)
def timeline(
    ctx: typer.Context,
    case: Annotated[
        Path | None, typer.Option("--case", envvar="CLOUDIR_CASE", help="Case folder.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parser processes (default: all cores).")] = 0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 3 when any evidence is incomplete, missing or unreadable, or any "
            "file had parse errors (implausible times alone do not count).",
        ),
    ] = False,
    fs_timeline: FsTimelineOpt = None,
    engine: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="AWS profile for S3: the objects a --manifest capture pinned, --parts-uri."
        ),
    ] = None,
    endpoint_url: EndpointOpt = None,
    parts_uri: Annotated[
        str | None,
        typer.Option(
            "--parts-uri",
            metavar="URI",
            help="With --engine spark: write the Parquet parts under this URI (s3://, "
            "s3a://, abfss://, gs://, hdfs://, file://), in a folder of the run's own; "
            "CASE/timeline/parts.json lists them.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse all evidence into CASE/timeline/ (Parquet, by source and day; rebuilt each run).

    Objects a `capture cloudtrail --manifest` pinned are read from S3, exactly the versions
    the manifest names, with the profile and endpoint given here (on Spark, the executors'
    own credentials, as on EMR or Databricks).

    On a cluster, --parts-uri puts the timeline next to the trail while the case folder
    (custody, summary, errors, findings) stays where it is; detect, query and report read
    the parts from there on either engine.

    Example: cloudir timeline --case ./case-42

    Example: cloudir timeline --case ./case-42 --engine spark --parts-uri s3://ir-timelines/case-42
    """
    if ctx.invoked_subcommand is not None:
        return
    if case is None:
        raise UsageError("--case is required (or set CLOUDIR_CASE)")
    from cloudir.aws import AwsOptions
    from cloudir.case import Case

    aws = AwsOptions(profile=profile, endpoint_url=endpoint_url)
    spark = engine_choice(engine, spark_master) == "spark"
    if parts_uri is not None:
        from cloudir.storage_uri import check_reachable, check_uri

        if not spark:
            raise UsageError(
                "--parts-uri is the spark engine's (its executors write the parts); the "
                "duckdb engine writes the timeline into the case folder"
            )
        check_reachable(check_uri(parts_uri), aws)  # a refusal costs no JVM
    previous = _parts_root(case)
    if spark:
        if workers or fs_timeline is not None:
            raise UsageError(
                "--workers and --fs-timeline are the duckdb engine's; on Spark the master "
                "sets the parallelism"
            )
        build_spark = _spark_timeline_builder()
        from cloudir.engines.spark_session import is_spark_failure, spark_failure, spark_session

        the_case = Case.open(case)
        try:
            result = build_spark(
                the_case,
                spark_session(spark_master),
                aws,
                parts_uri=parts_uri,
                progress=spark_progress(as_json),
            )
        except Exception as exc:  # a failed Spark job: one line, the previous timeline kept
            if not is_spark_failure(exc):
                raise
            raise EvidenceError(f"timeline on Spark failed: {spark_failure(exc)}") from exc
    else:
        from cloudir.analyze.timeline import build_timeline
        from cloudir.console import count_progress

        the_case = Case.open(case)
        with count_progress() as bar:
            task = bar.add_task("parsing evidence files", total=None)

            def progress(done: int, total: int, rows: int) -> None:
                bar.update(task, completed=done, total=total, description=f"parsed {rows} events")

            result = build_timeline(
                the_case, workers or None, progress, parse_options(fs_timeline, aws)
            )
    if as_json:
        emit_json(result.as_dict())
    else:
        where = result.path
        if result.parts_root:
            where = f"{result.parts_root} (listed in {result.path}/parts.json)"
        show(
            f"{result.rows} events from {result.files} files into {where} "
            f"({result.duplicates_dropped} duplicates dropped)"
        )
    if previous and previous != result.parts_root:
        say(
            f"the previous timeline's parts at {previous} are no longer listed; cloudir "
            "leaves them in place: remove them when they are no longer needed"
        )
    if result.conflicting_copies["events"]:
        events = result.conflicting_copies["events"]
        say(
            f"{events} {'event has' if events == 1 else 'events have'} copies that disagree, "
            "a sign of tampering: every version is kept; see conflicting_copies in summary.json"
        )
    if result.errors or (result.rows == 0 and result.files):
        say(result.summary_line())
        if strict and result.strict_failures():
            raise typer.Exit(EXIT_EVIDENCE)


SPARK_TIMELINE = "cloudir.analyze.spark_timeline"


def _parts_root(case: Path) -> str | None:
    """Where the case's current timeline keeps its parts, if at a URI (parts.json)."""
    from cloudir.case_folder import CasePaths, read_parts_listing
    from cloudir.errors import CloudirError

    listing = CasePaths(case).timeline_parts_listing
    if not listing.is_file():
        return None
    try:
        return str(read_parts_listing(listing)["root"])
    except CloudirError:  # a damaged list is replaced by this run; nothing to name
        return None


def _spark_timeline_builder() -> Any:
    """`build_timeline_spark`, or one line saying this version has no Spark timeline.

    Imported by name at run time: the Spark timeline is its own module, which a build of
    cloudir may not have yet. Only that module's absence is answered here; a missing
    pyspark gets the install hint, and any other import failure is a bug and surfaces.
    """
    import importlib

    from cloudir.engines.spark_session import INSTALL_HINT

    try:
        module = importlib.import_module(SPARK_TIMELINE)
    except ModuleNotFoundError as exc:
        if exc.name == SPARK_TIMELINE:
            raise UsageError("timeline --engine spark is not available in this version") from exc
        if exc.name and exc.name.split(".")[0] in ("pyspark", "py4j"):
            raise UsageError(
                f"--engine spark needs pyspark, which is not installed: {INSTALL_HINT}"
            ) from exc
        raise
    return module.build_timeline_spark


@timeline_app.command("export")
@handled
def timeline_export(
    case: CaseOpt,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Output file (default CASE/export/).")] = None,
) -> None:
    """Write the timeline in Timesketch's import format (message, datetime, timestamp_desc).

    Example: cloudir timeline export --case ./case-42 --format csv --out case-42.csv
    """
    from cloudir.analyze.query import export
    from cloudir.case import Case

    the_case = Case.open(case)
    if out is None:
        out = the_case.paths.export_file(fmt)
        out.parent.mkdir(exist_ok=True)
    rows = export(the_case, fmt, out)
    show(f"{rows} rows written to {out}")


@handled
def query(
    sql: Annotated[
        str, typer.Argument(help="SQL over the view `timeline` (DuckDB's, or Spark's on Spark).")
    ],
    case: CaseOpt,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
    width: Annotated[int, typer.Option(help="Longest cell shown in the table.")] = 80,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the rows to FILE instead (.csv, .json, .jsonl or .parquet).",
        ),
    ] = None,
    engine: EngineOpt = "duckdb",
    spark_master: SparkMasterOpt = None,
) -> None:
    """Run read-only SQL over the timeline (no other files, no network, no settings).

    Example: cloudir query --case ./case-42 "SELECT user, count(*) FROM timeline GROUP BY 1"
    """
    from cloudir.analyze.query import run_query, write_result
    from cloudir.case import Case

    on_spark = engine_choice(engine, spark_master) == "spark"
    if output is not None and (as_json or as_csv):
        raise UsageError("--output writes a file; leave out --json and --csv")
    if on_spark:
        columns, rows = _spark_query(Case.open(case), sql, output, spark_master)
        if output is not None:
            return
    elif output is not None:
        show(f"{write_result(Case.open(case), sql, output)} rows written to {output}")
        return
    else:
        columns, rows = run_query(Case.open(case), sql)
    if as_json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
    elif as_csv:
        import csv

        from cloudir.console import inert

        writer = csv.writer(sys.stdout)
        if sys.stdout.isatty():  # a terminal gets inert text; a pipe gets the exact values
            columns = [inert(c) for c in columns]
            rows = [tuple(inert(v) for v in row) for row in rows]
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        _print_table(columns, rows, width)


def _spark_query(
    the_case: Any, sql: str, output: Path | None, master: str | None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`query --engine spark`: the rows, or (with --output) the file written and no rows.

    The case, its timeline and the --output target are checked before Spark starts: a
    refusal costs no JVM.
    """
    from cloudir.analyze import spark_query
    from cloudir.analyze.query import output_format, timeline_files
    from cloudir.engines.spark_session import spark_session

    timeline_files(the_case)
    if output is not None:
        output_format(the_case, output)
        rows = spark_query.write_result(spark_session(master), the_case, sql, output)
        show(f"{rows} rows written to {output}")
        return [], []
    return spark_query.run_query(spark_session(master), the_case, sql)


def _print_table(columns: list[str], rows: list[tuple[Any, ...]], width: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from cloudir.console import inert, stdout

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(Text(inert(column, width)))
    for row in rows:
        table.add_row(*[Text(inert(v, width)) for v in row])
    stdout.print(table)
    say(f"{len(rows)} rows")
