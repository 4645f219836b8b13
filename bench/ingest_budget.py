"""Benchmark: where a CloudTrail event's CPU goes in `cloudir timeline`, against its budget.

Each stage of the CloudTrail path, set against the CPU an event may take if the timeline
is to keep issue 20's ingest target, beside other decoders doing part of the same work.

Why it exists: the ingest target is the timeline at the pace of `zcat | wc -c` (1.0x the
floor's wall time) on this machine's cores. With every core parsing the whole time, that
leaves each event `floor seconds x cores / events` of CPU, startup and the duplicate
check included. `ingest_cloudtrail.py` says whether the timeline meets it; this script
says where an event's CPU goes, so the next step starts from numbers: what the libraries
cloudir uses cost for their part (ISA-L's inflate, msgspec, pyarrow, Parquet), what is
left for cloudir's own Python, and what other decoders cost for the decode alone.

Stages, timed on the generated delivery files in as many processes as there are cores at
once (the timeline runs one parser process per core, and a core shared with another
process is slower than an idle one), each process on its share of the files, started as
the timeline starts its parser processes (forked, `timeline._worker_start`), with the
cyclic collector off as in them, each round begun in all processes at once (a barrier);
CPU time per event, the median of --repeat rounds; a file of records the column path
does not take stops the run:
- inflate: the gzip member into the document (`_inflate_single_member`, ISA-L);
- split: the document into each record's bytes (msgspec, `Container`);
- typed decode: the fields the timeline reads, as msgspec structs (`TypedRecords`);
- columns: the timeline's columns as Python lists (`block_columns`: principal, target,
  message, outcome, event id, the promoted fields, `raw` joined);
- Arrow: those lists checked and converted (`columns_to_batch`: times, UTF-8);
- Parquet: the batches written as the timeline writes them (zstd 1, dictionaries,
  statistics);
- a parser process whole: `timeline.parse_chunk` over the same files (partitioning, the
  error log and the row-group buffering are what it adds to the stages).

Decoders beside msgspec, each on the same records (the first DECODER_FILES files, about
100k of the bench's events: each decoder holds its records in memory), one thread, in one
process at a time:
the fields `TypedView` reads (without the target, message and outcome, which need Python
either way) into Arrow columns, and msgspec's decode of the same fields into Python
structs, which then still need the columns built and converted (the stages above):
- DuckDB: `json_transform` of the `raw` column (the records' bytes as Arrow strings);
- Arrow's JSON reader (`pyarrow.json`) over the records one per line, explicit schema;
- Polars' `read_ndjson` with the same schema, when Polars is installed (not a cloudir
  dependency; `pip install polars` into the venv to include it).

Results: a table on stdout, and bench/results/ingest_budget-<events>.{json,md,txt}.

Usage: .venv/bin/python bench/ingest_budget.py [--events N] [--files F] [--out DIR]
           [--seed S] [--repeat R] [--processes P] [--results DIR]
       make bench-budget BENCH_ARGS='--events 1000000 --files 500'
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script
from common import cloudir_bin, log, machine_info, write_results
from ingest_cloudtrail import TARGET_FLOOR_RATIO, ensure_data, measure_floor

POLARS_THREADS = "1"  # set before Polars is imported: one thread, as DuckDB and Arrow here

STAGES = ("inflate", "split", "typed decode", "columns", "Arrow", "Parquet")
LIBRARY_STAGES = ("inflate", "split", "typed decode", "Parquet")
WARM_FILES = 3  # files of an untimed first pass: imports and first allocations
STEP_TIMEOUT = 600  # seconds a process waits at the barrier for the others
# The decoders hold their files' records in memory several times over (the documents, the
# joined lines, DuckDB's table), so they read a sample: about 100k events of the bench's.
DECODER_FILES = 50
NOT_SCALAR = ("userIdentity", "resources", "requestParameters", "responseElements")
NOT_SCALAR += ("CloudTrailEvent", "detail")


def stage_costs(paths: list[str], repeat: int) -> dict[str, Any]:
    """CPU seconds of each stage over `paths` (median of `repeat` passes), and of a whole
    parser process over them. Runs in a pool process."""
    from cloudir.analyze import timeline
    from cloudir.analyze.parsers import ErrorLog, columns_to_batch
    from cloudir.analyze.parsers import cloudtrail as ct

    passes: dict[str, list[float]] = {stage: [] for stage in STAGES}
    events = 0
    tasks = [_task(p) for p in paths]
    whole: list[float] = []
    # The stages, then the whole, in turn: the processes run them in step, so both meet
    # the same neighbour. The first round, over a few files, warms and is not kept.
    for n in range(repeat + 1):
        _in_step()
        gc.disable()  # parse_chunk turns it back on when it ends
        clock = StageClock()
        events = 0
        with tempfile.TemporaryDirectory(prefix="budget-") as scratch:
            row_groups = timeline._RowGroups(str(Path(scratch) / "part.parquet"))
            for path in paths if n else paths[:WARM_FILES]:
                data = Path(path).read_bytes()  # from the page cache, outside the clock
                with clock("inflate"):
                    document = ct._inflate_single_member(data)
                with clock("split"):
                    raws = ct._CONTAINER.decode(document).Records
                with clock("typed decode"):
                    views = ct._TYPED_RECORDS.decode(document).Records
                if not ct._plain_records(views):  # the parser would read it row by row
                    raise RuntimeError("a file of records the column path does not take")
                for start in range(0, len(raws), ct.BATCH_ROWS):
                    some = raws[start : start + ct.BATCH_ROWS]
                    with clock("columns"):
                        columns = ct.block_columns(some, views[start : start + len(some)], "b")
                    numbers = list(range(start + 1, start + 1 + len(some)))
                    with clock("Arrow"):
                        batch = columns_to_batch(columns, numbers, ErrorLog("b", "b"))
                    with clock("Parquet"):
                        row_groups.add(batch)
                events += len(raws)
            with clock("Parquet"):
                row_groups.close()
            _in_step()
            started = time.process_time()
            part = str(Path(scratch) / f"part-0-{n:05d}.parquet")
            result = timeline.parse_chunk(part, tasks if n else tasks[:WARM_FILES])
            spent = time.process_time() - started
        if result.rows != events:
            raise RuntimeError(f"parse_chunk gave {result.rows} rows, the stages {events}")
        if n:
            whole.append(spent)
            for stage in STAGES:
                passes[stage].append(clock.spent[stage])
    gc.enable()
    return {
        "events": events,
        "stages": {stage: statistics.median(values) for stage, values in passes.items()},
        "whole": statistics.median(whole),
    }


_STEP: Any = None  # the pool's barrier: each round starts in all processes at once


def start_worker(parent: int, step: Any) -> None:
    """Pool initializer: what the timeline's parser processes do when they start
    (timeline._worker_start: glibc's heap kept for reuse, no pandas), and the barrier."""
    from cloudir.analyze import timeline

    global _STEP
    timeline._worker_start(parent)
    _STEP = step


def _in_step() -> None:
    if _STEP is not None:
        _STEP.wait(timeout=STEP_TIMEOUT)


class StageClock:
    """CPU seconds spent under `with clock(stage):`, summed per stage."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)
        self.stage = ""
        self.started = 0.0

    def __call__(self, stage: str) -> StageClock:
        self.stage = stage
        return self

    def __enter__(self) -> None:
        self.started = time.process_time()

    def __exit__(self, *_: object) -> None:
        self.spent[self.stage] += time.process_time() - self.started


def _task(path: str) -> Any:
    from cloudir.analyze.timeline import FileTask

    size = os.path.getsize(path)
    return FileTask("bench", "cloudtrail", path, Path(path).name, size, 0)


def decoder_costs(paths: list[str], repeat: int) -> dict[str, Any]:
    """CPU seconds per decoder for the fields TypedView reads over the records of `paths`
    (median of `repeat`): msgspec into Python structs, the others into Arrow columns;
    None for one not installed."""
    from cloudir.analyze.parsers import cloudtrail as ct

    documents = [ct._inflate_single_member(Path(p).read_bytes()) for p in paths]
    records = [ct._CONTAINER.decode(d).Records for d in documents]
    events = sum(len(r) for r in records)
    costs: dict[str, float | None] = {}
    with contextlib.ExitStack() as cleanup:
        decoders: dict[str, Callable[[], Any] | None] = {
            "msgspec (cloudir's decode, no columns)": lambda: [
                ct._TYPED_RECORDS.decode(d) for d in documents
            ],
            "DuckDB json_transform": _duckdb_decoder(records, cleanup),
            "Arrow JSON reader": _arrow_decoder(records),
            "Polars read_ndjson": _polars_decoder(records),
        }
        gc.disable()
        for name, decode in decoders.items():
            if decode is None:
                costs[name] = None
                continue
            decode()  # warm: imports, first allocations
            runs = []
            for _ in range(repeat):
                started = time.process_time()
                decode()
                runs.append(time.process_time() - started)
            costs[name] = statistics.median(runs)
        gc.enable()
    return {"events": events, "decoders": costs}


def _string_fields() -> tuple[list[str], list[str]]:
    """TypedView's scalar fields (readOnly is a boolean) and userIdentity's, in order."""
    from cloudir.analyze.parsers import cloudtrail as ct

    scalars = [name for name in ct.TypedView.__struct_fields__ if name not in NOT_SCALAR]
    identity = [n for n in ct.TypedIdentity.__struct_fields__ if n != "sessionContext"]
    return scalars, identity


def _arrow_schema() -> Any:
    import pyarrow as pa

    text = pa.string()
    scalars, identity = _string_fields()
    context = pa.struct(
        [
            ("attributes", pa.struct([("mfaAuthenticated", text)])),
            ("sessionIssuer", pa.struct([(n, text) for n in ("type", "arn", "userName")])),
        ]
    )
    fields = [(n, pa.bool_() if n == "readOnly" else text) for n in scalars]
    fields.append(
        ("userIdentity", pa.struct([*((n, text) for n in identity), ("sessionContext", context)]))
    )
    fields.append(("resources", pa.list_(pa.struct([("ARN", text)]))))
    return pa.schema(fields)


def _duckdb_decoder(records: list[list[Any]], cleanup: contextlib.ExitStack) -> Callable[[], Any]:
    import duckdb
    import pyarrow as pa

    from cloudir.analyze.parsers import cloudtrail as ct

    scalars, identity = _string_fields()
    shape = {n: "BOOLEAN" if n == "readOnly" else "VARCHAR" for n in scalars}
    shape["userIdentity"] = {
        **dict.fromkeys(identity, "VARCHAR"),
        "sessionContext": {
            "attributes": {"mfaAuthenticated": "VARCHAR"},
            "sessionIssuer": dict.fromkeys(("type", "arn", "userName"), "VARCHAR"),
        },
    }
    shape["resources"] = [{"ARN": "VARCHAR"}]
    con = duckdb.connect(config={"threads": 1})
    cleanup.callback(con.close)
    tables = [pa.table({"raw": ct._joined_text(r)}) for r in records]
    query = f"SELECT unnest(json_transform(raw, '{json.dumps(shape)}')) FROM t"

    def decode() -> None:
        for t in tables:  # noqa: B007 - DuckDB reads the Arrow table `t` by its name
            con.sql(query).to_arrow_table()

    return decode


def _arrow_decoder(records: list[list[Any]]) -> Callable[[], Any]:
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=_arrow_schema(), unexpected_field_behavior="ignore")
    reading = pj.ReadOptions(use_threads=False, block_size=64 << 20)
    lines = [b"\n".join(r) for r in records]

    def decode() -> None:
        for text in lines:
            pj.read_json(io.BytesIO(text), read_options=reading, parse_options=options)

    return decode


def _polars_decoder(records: list[list[Any]]) -> Callable[[], Any] | None:
    os.environ.setdefault("POLARS_MAX_THREADS", POLARS_THREADS)
    try:
        import polars as pl
    except ImportError:
        return None
    schema = pl.Schema(_arrow_schema())
    lines = [b"\n".join(r) for r in records]

    def decode() -> None:
        for text in lines:
            pl.read_ndjson(io.BytesIO(text), schema=schema).to_arrow()

    return decode


def shares(paths: list[str], count: int) -> list[list[str]]:
    """`paths` dealt round-robin into `count` lists of similar size."""
    return [paths[n::count] for n in range(count) if paths[n::count]]


def us(seconds: float, events: int) -> float:
    return round(seconds / events * 1e6, 2)


def report_rows(
    costs: list[dict[str, Any]], decoders: dict[str, Any], budget_us: float
) -> dict[str, Any]:
    events = sum(c["events"] for c in costs)
    stages = {s: us(sum(c["stages"][s] for c in costs), events) for s in STAGES}
    whole = us(sum(c["whole"] for c in costs), events)
    library = round(sum(stages[s] for s in LIBRARY_STAGES), 2)
    python = round(stages["columns"] + stages["Arrow"], 2)
    decoded = decoders["events"]
    alternatives = {
        name: None if seconds is None else us(seconds, decoded)
        for name, seconds in decoders["decoders"].items()
    }
    return {
        "events": events,
        "stages_us": stages,
        "stages_sum_us": round(sum(stages.values()), 2),
        "parser_process_us": whole,
        "library_us": library,
        "python_columns_us": python,
        "budget_us": budget_us,
        "left_for_python_us": round(budget_us - library, 2),
        "decoders_us": alternatives,
    }


def render(
    result: dict[str, Any], floor: dict[str, Any], nproc: int, cores: int
) -> tuple[str, str]:
    """The table for stdout (and .txt) and the Markdown for README."""
    from rich.console import Console
    from rich.table import Table

    budget = result["budget_us"]
    table = Table(
        title=f"CPU per CloudTrail event, {result['events']:,} events in {nproc} processes at once"
    )
    table.add_column("stage")
    table.add_column("µs / event", justify="right")
    table.add_column("share of budget", justify="right")
    lines = ["| stage | µs per event | share of the budget |", "|---|---:|---:|"]
    for stage, value in result["stages_us"].items():
        kind = "library" if stage in LIBRARY_STAGES else "cloudir's Python"
        table.add_row(f"{stage} ({kind})", f"{value:.2f}", f"{value / budget:.0%}")
        lines.append(f"| {stage} ({kind}) | {value:.2f} | {value / budget:.0%} |")
    summed = result["stages_sum_us"]
    table.add_row("the stages summed", f"{summed:.2f}", f"{summed / budget:.0%}")
    lines.append(f"| the stages summed | {summed:.2f} | {summed / budget:.0%} |")
    whole = result["parser_process_us"]
    table.add_row("a parser process, whole", f"{whole:.2f}", f"{whole / budget:.0%}", style="bold")
    lines.append(f"| **a parser process, whole** | **{whole:.2f}** | **{whole / budget:.0%}** |")
    table.add_row("budget at 1.0x the floor", f"{budget:.2f}", "100%", style="bold")
    lines.append(f"| **budget at 1.0x the floor** | **{budget:.2f}** | 100% |")
    decoders = Table(title="the decode alone: TypedView's fields, one thread")
    decoders.add_column("decoder")
    decoders.add_column("µs / event", justify="right")
    lines += ["", "| decoder (TypedView's fields, one thread) | µs per event |", "|---|---:|"]
    for name, value in result["decoders_us"].items():
        shown = "not installed" if value is None else f"{value:.2f}"
        decoders.add_row(name, shown)
        lines.append(f"| {name} | {shown} |")
    notes = [
        f"floor: zcat | wc -c, {floor['seconds']:.2f} s ({floor['cpu_seconds']:.1f} CPU s) for "
        f"{result['events']:,} events; budget = floor seconds x {cores} cores / events",
        f"the libraries' stages (inflate, split, typed decode, Parquet): "
        f"{result['library_us']:.2f} µs; cloudir's Python columns and their conversion: "
        f"{result['python_columns_us']:.2f} µs; left of the budget for them: "
        f"{result['left_for_python_us']:.2f} µs",
        "a parser process, whole: parse_chunk over the same files (partitions, error log, "
        "row groups); the stages are timed one by one, so their sum and the whole differ "
        "by the timer and the machine's noise",
    ]
    buffer = io.StringIO()
    console = Console(file=buffer, width=110, force_terminal=False)
    console.print(table)
    console.print(decoders)
    for note in notes:
        console.print(note)
    lines += ["", *(f"- {note}" for note in notes)]
    return buffer.getvalue(), "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=400_000, help="events to generate")
    parser.add_argument("--files", type=int, default=200, help="delivery files to spread them over")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="work folder")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument("--repeat", type=int, default=3, help="passes per stage; the median")
    parser.add_argument(
        "--processes", type=int, default=0, help="processes at once (default: one per core)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="where results go"
    )
    args = parser.parse_args(argv)
    if min(args.events, args.files, args.repeat) < 1:
        parser.error("--events, --files and --repeat must be positive")
    nproc = args.processes or os.cpu_count() or 1
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(cloudir_bin())
    gen, _ = ensure_data(out, args.events, min(args.files, args.events), args.seed, nproc)
    paths = sorted(str(p) for p in gen.rglob("*.json.gz"))

    log("measuring the floor: zcat | wc -c")
    floor_row, _ = measure_floor(gen, args.events, args.repeat)
    floor = {"seconds": floor_row.seconds, "cpu_seconds": floor_row.cpu_seconds}
    cores = os.cpu_count() or 1  # the budget is the machine's, whatever --processes says
    budget = round(floor_row.seconds * cores / args.events / TARGET_FLOOR_RATIO * 1e6, 2)

    log(f"timing the stages in {nproc} processes at once")
    dealt = shares(paths, nproc)
    step = multiprocessing.Barrier(len(dealt))
    # the timeline's pool (ProcessPoolExecutor) forks its parser processes; so does this one
    with multiprocessing.Pool(len(dealt), start_worker, (os.getpid(), step)) as pool:
        costs = pool.starmap(stage_costs, [(s, args.repeat) for s in dealt])
    log(f"timing the decoders on {min(len(paths), DECODER_FILES)} files, one process")
    decoders = decoder_costs(paths[:DECODER_FILES], args.repeat)

    result = report_rows(costs, decoders, budget)
    text, markdown = render(result, floor, nproc, cores)
    print(text)
    document = {
        "machine": {**machine, **library_versions()},
        "params": {
            "events": args.events,
            "files": len(paths),
            "seed": args.seed,
            "repeat": args.repeat,
            "processes": nproc,
        },
        "floor": floor,
        **result,
    }
    stem = args.results / f"ingest_budget-{_short(args.events)}"
    write_results(stem, document, markdown, text)
    log(f"results written to {stem}.json, .md and .txt")
    return 0


def library_versions() -> dict[str, str | None]:
    """The decoders' and writer's versions (None: not installed), for the JSON."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("msgspec", "isal", "pyarrow", "duckdb", "polars"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _short(events: int) -> str:
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if events >= size and events % size == 0:
            return f"{events // size}{suffix}"
    return str(events)


if __name__ == "__main__":
    sys.exit(main())
