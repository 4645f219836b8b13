"""The command line: parse options, call one function, print, map errors to exit codes.

One module per command group; this one holds the root `app` and puts the groups on it
in the order `cloudir --help` lists them. Heavy libraries (boto3, pyarrow, duckdb) are
imported inside the commands that need them so `cloudir --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cloudir import __version__
from cloudir.cli import capture, demo, detect, report, respond, timeline, triage, verify
from cloudir.cli.common import handled, state
from cloudir.errors import EXIT_USAGE

__all__ = ["app", "handled", "main"]

app = typer.Typer(
    help="Incident response for AWS: capture evidence with chain of custody, "
    "build one timeline, query it.\n\n"
    "Example: cloudir capture cloudtrail --case ./case-42 --trail main --start 7d",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Help lists the commands in the order they are added here, then the groups in theirs.
app.add_typer(capture.capture_app, name="capture")
app.add_typer(timeline.timeline_app, name="timeline")
app.add_typer(respond.respond_app, name="respond")
app.add_typer(detect.rules_app, name="rules")
app.command()(timeline.query)
app.command()(detect.detect)
app.command()(report.report)
app.command()(report.analyze)
app.command()(triage.triage)
app.command()(verify.verify)
app.command()(demo.demo)


def _version(value: bool) -> None:
    if value:
        print(f"cloudir {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            envvar="CLOUDIR_WAIT",
            help="When another command is changing the case, wait up to SECONDS for it "
            "(default 0: exit 2 at once, naming it).",
        ),
    ] = 0,
) -> None:
    """Incident response for AWS."""
    state["debug"] = debug
    state["wait"] = wait


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # typer/click failures outside any command
        if os.environ.get("CLOUDIR_DEBUG") or "--debug" in sys.argv:
            raise
        from cloudir.console import inert

        print(f"error: {inert(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
