"""`cloudir report` and `cloudir analyze` (timeline, detect and report in one go).

Both are added to the root app by `cli/__init__.py`, in the order help lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.common import (
    CaseOpt,
    FsTimelineOpt,
    JsonOpt,
    emit_json,
    handled,
    locks_case,
    parse_options,
    say,
    show,
)
from cloudir.cli.detect import (
    FailOnOpt,
    NoBuiltinOpt,
    RulesOpt,
    SuppressOpt,
    print_findings,
    reaches,
    say_detection,
)
from cloudir.errors import EXIT_FINDINGS, UsageError

FormatOpt = Annotated[
    str, typer.Option("--format", help="Comma-separated: html, md, json (default all three).")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Folder for the report (default CASE/report).")
]


@handled
@locks_case()
def report(
    case: CaseOpt, fmt: FormatOpt = "html,md,json", out: OutOpt = None, as_json: JsonOpt = False
) -> None:
    """Write the incident report (HTML, Markdown, JSON) from the case's findings.

    Example: cloudir report --case ./case-42 --format html,md --out ./handover
    """
    from cloudir.case import Case
    from cloudir.report.write import parse_formats, write_report

    written = write_report(Case.open(case), parse_formats(fmt), out)
    _report_written(written, as_json)


def _report_written(written: dict[str, Path], as_json: bool) -> None:
    if as_json:
        emit_json({fmt: str(path) for fmt, path in written.items()})
    else:
        for path in written.values():
            show(str(path))


@handled
@locks_case()
def analyze(
    case: CaseOpt,
    rules: RulesOpt = None,
    no_builtin: NoBuiltinOpt = False,
    fail_on: FailOnOpt = "high",
    fmt: FormatOpt = "html,md,json",
    out: OutOpt = None,
    workers: Annotated[int, typer.Option(help="Parser processes (default: all cores).")] = 0,
    fs_timeline: FsTimelineOpt = None,
    suppress: SuppressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Timeline, detect and report in one go; exits like detect (1 at --fail-on).

    Example: cloudir analyze --case ./case-42 --fail-on medium
    """
    from cloudir.analyze import detect as engine
    from cloudir.analyze.suppress import filter_files
    from cloudir.analyze.timeline import build_timeline
    from cloudir.case import Case
    from cloudir.console import count_progress
    from cloudir.report.write import parse_formats, write_report

    if fail_on not in engine.LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(engine.LEVELS)}")
    formats = parse_formats(fmt)
    filter_files(suppress or [])  # a wrong --suppress folder fails before the timeline
    the_case = Case.open(case)
    with count_progress() as bar:
        task = bar.add_task("timeline: parsing evidence", total=3)

        def progress(done: int, total: int, rows: int) -> None:
            bar.update(task, description=f"timeline: {rows} events from {done}/{total} files")

        timeline = build_timeline(the_case, workers or None, progress, parse_options(fs_timeline))
        bar.update(task, completed=1, description="detect: running rules")
        detection = engine.detect(
            the_case, rules or [], builtin=not no_builtin, suppress=suppress or []
        )
        bar.update(task, completed=2, description="report: writing")
        written = write_report(the_case, formats, out)
        bar.update(task, completed=3, description="done")
    say(f"timeline: {timeline.rows} events, {len(timeline.errors)} evidence problems skipped")
    if not as_json:
        print_findings(detection.findings)
    say_detection(detection)
    _report_written(written, as_json)
    if reaches(detection.findings, fail_on):
        raise typer.Exit(EXIT_FINDINGS)
