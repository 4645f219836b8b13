"""What every command shares: the options, printing evidence inert, the error net that
maps exceptions to the contract's exit codes, and the case lock a changing command holds.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cloudir.errors import EXIT_EVIDENCE, CloudirError, UsageError

if TYPE_CHECKING:
    from cloudir.aws import Aws

F = TypeVar("F", bound=Callable[..., Any])

state: dict[str, Any] = {"debug": False, "wait": 0.0}

CaseOpt = Annotated[
    Path, typer.Option("--case", envvar="CLOUDIR_CASE", help="Case folder (or CLOUDIR_CASE).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
ProfileOpt = Annotated[str | None, typer.Option(help="AWS profile name.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="AWS endpoint (emulators, VPC endpoints)."
    ),
]
RetryOpt = Annotated[
    str, typer.Option("--retry-mode", help="botocore retry mode: standard or adaptive.")
]

StartOpt = Annotated[str, typer.Option(help="Window start: ISO 8601 or age (7d, 36h).")]
EndOpt = Annotated[str | None, typer.Option(help="Window end (default now).")]
TitleOpt = Annotated[str | None, typer.Option(help="Case title when creating it.")]
ExaminerOpt = Annotated[str | None, typer.Option(help="Examiner when creating the case.")]
AdoptOpt = Annotated[
    bool,
    typer.Option(
        "--adopt-folder",
        help="Make the case in a folder that already holds other files (they stay as "
        "they are and are not evidence); without it such a folder is refused.",
    ),
]
FsTimelineOpt = Annotated[
    bool | None,
    typer.Option(
        "--fs-timeline/--no-fs-timeline",
        help="MACB rows for every file in disk images (default: images under 64 GiB).",
        show_default=False,
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        metavar="duckdb|spark",
        help="duckdb (built in) or spark (pip install 'cloudir[spark]'; see docs/spark.md).",
    ),
]
SparkMasterOpt = Annotated[
    str | None,
    typer.Option(
        "--spark-master",
        metavar="URL",
        help="Spark master for --engine spark (default: SPARK_MASTER, else local[*]; "
        "under spark-submit, its own).",
    ),
]


def engine_choice(engine: str, spark_master: str | None) -> str:
    """The engine asked for; --spark-master without --engine spark is a mistake, said so."""
    from cloudir.engines import SPARK, check_engine

    chosen = check_engine(engine)
    if spark_master is not None and chosen != SPARK:
        raise UsageError("--spark-master goes with --engine spark")
    return chosen


def spark_progress(as_json: bool) -> Any:
    """Spark's tasks done of total, on a terminal only: a Spark timeline or detect runs
    minutes where DuckDB's runs seconds; --json and a piped stderr get no bars."""
    from cloudir.console import TERMINAL, stderr
    from cloudir.progress import NO_PROGRESS

    return TERMINAL if stderr.is_terminal and not as_json else NO_PROGRESS


def say(message: str) -> None:
    """Messages often quote evidence (keys, paths, errors): always printed inert."""
    from cloudir.console import inert, stderr

    stderr.print(inert(message), markup=False)


def show(message: str) -> None:
    """A result line on stdout; it may name evidence, so it is printed inert too."""
    from cloudir.console import inert

    print(inert(message))


def _space_problem(exc: BaseException) -> str | None:
    """A write that failed for lack of space, named with its file where one is known.

    The case's own writes already raise NoSpaceError; this catches the other stages'
    writes, through causes too, and the text of errors from libraries (DuckDB, Arrow)
    that report a full disk without an errno.
    """
    from cloudir.case import SPACE_REASONS

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in SPACE_REASONS:
            where = f" while writing {current.filename}" if current.filename else ""
            return SPACE_REASONS[current.errno] + where
        text = str(current)
        if "No space left on device" in text:
            return f"no space left on device ({text.strip().splitlines()[0][:300]})"
        current = current.__cause__ or current.__context__
    return None


def handled(fn: F) -> F:
    """One line on stderr and the contract's exit code; a traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CloudirError as exc:
            if state["debug"]:
                raise
            say(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            say("interrupted: only complete, hashed files were recorded; run it again to resume")
            raise typer.Exit(130) from None
        except Exception as exc:
            if state["debug"]:
                raise
            space = _space_problem(exc)
            if space:
                say(f"error: {space}")
            else:
                say(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
            raise typer.Exit(EXIT_EVIDENCE) from None

    return wrapper  # type: ignore[return-value]


def locks_case(
    creates: bool = False,
    when: Callable[[dict[str, Any]], bool] | None = None,
    adoptable: bool = True,
) -> Callable[[F], F]:
    """A command that changes the case holds its lock for its whole run (exit 2 naming
    the holder when another has it); `when` limits that to e.g. `--yes`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            case = kwargs.get("case")
            if case is None or (when is not None and not when(kwargs)):
                return fn(*args, **kwargs)
            from cloudir.case_lock import for_command

            with for_command(
                case,
                creates=creates,
                adopt_folder=kwargs.get("adopt_folder", False),
                adoptable=adoptable,
                title=kwargs.get("title"),
                examiner=kwargs.get("examiner"),
                wait=state["wait"],
                say=say,
            ):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def open_aws(
    profile: str | None, region: str | None, endpoint: str | None, retry: str, pool: int
) -> Aws:
    from cloudir.aws import Aws, AwsOptions

    if retry not in ("standard", "adaptive"):
        raise UsageError("--retry-mode must be standard or adaptive")
    return Aws(AwsOptions(profile, region, endpoint, retry_mode=retry, pool_size=pool))


def parse_options(fs_timeline: bool | None, aws: Any = None) -> Any:
    from cloudir.analyze.parsers import ParseOptions

    return ParseOptions(fs_timeline=fs_timeline, aws=aws)
