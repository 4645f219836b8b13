"""Benchmark: cloudir's Spark engine at one core and two, beside its DuckDB engine, in one run.

Why it exists: issue 18 puts cloudir on Spark so that a case too big for one machine can run
on a cluster. Whether that can pay off shows first on one machine: does the Spark path's
time fall as it is given cores (local[1] -> local[2]), and how far is it from DuckDB on the
same data? Measured in one run, on one case, so the machine and its page cache are the same
for every engine.

What it does:
1. Generates N CloudTrail events in F gzipped delivery files with `ingest_cloudtrail.py`'s
   generator (the same seeded account, cached and reused under --out) and captures them
   into a case with `cloudir capture files`, as a responder would (not timed; reused with
   --keep).
2. `cloudir timeline` with DuckDB (its default workers), then with `--engine spark
   --spark-master local[1]` and `local[2]`. Before each run the case's timeline output
   (timeline/, timeline.building/, timeline.old/) is removed, so every engine builds from
   nothing and no run can reuse another's files. After each run: summary.json rows,
   count(*) and count(DISTINCT event_id) must all be N (`ingest_cloudtrail.count_rows`),
   and a Spark timeline must hold DuckDB's rows: the same count, the same MD5 of the sorted
   event_ids and the same sum of a hash over every column of every row. The DuckDB
   timeline is moved aside for that comparison.
3. `cloudir detect --json` with every shipped rule, with each engine, over N timeline rows:
   by default `detect.py`'s generated timeline of that size (cached in --detect-out, the
   one `make bench-detect` measures), with --detect-timeline built the DuckDB timeline of
   step 2. Not step 2's by default because the ingest generator draws principal, API and
   address independently, which no account does: every key is "new" from many addresses
   and the sequence rules match a quarter of the rows, and detect over it grows faster
   than the rows (20,000 rows: 34 s; 200,000: over 15 minutes); detect.py's generator gives
   each principal its own APIs. findings/ is removed before each run. Spark's findings must
   be DuckDB's: the same rule ids, counts and event_ids. While `detect --engine spark` is
   not built (it exits 2 saying so) its rows read "not built" and the bench goes on.
4. Prints a table (step, engine, seconds, rows/s, x DuckDB, peak memory, CPU) and writes
   bench/results/spark_scale-<size>.{json,md}.

Every command is a fresh process measured by `common.run_measured` (wall, CPU of the whole
tree, largest process's RSS, the tree's PSS) through `detect.repeat_measured`'s timeout
and memory guard; --repeat runs each and keeps the median. A Spark run's time includes
starting the JVM and the Python workers, as a user waits for them.

Usage: .venv/bin/python bench/spark_scale.py [--events N] [--files F] [--repeat R]
           [--spark-master local[1] --spark-master local[2]] [--keep] [--out DIR]
           [--detect-timeline generated|built] [--driver-memory 4g] [--timeout S]
       make bench-spark BENCH_ARGS='--events 200000 --files 100'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script: the generator, the capture's row
# checks and the measuring are the other benchmarks' own, so the numbers count alike.
from common import (
    MIB,
    Measured,
    _busy_cpu_seconds,
    cloudir_bin,
    log,
    machine_info,
    run_measured,
    write_results,
)
from detect import (
    EXIT_FINDINGS,
    BenchRow,
    Run,
    _fmt,
    _label,
    detect_summary,
    ensure_case,
    repeat_measured,
)
from ingest_cloudtrail import count_rows, ensure_data

from cloudir.analyze.schema import COLUMNS
from cloudir.case_folder import CasePaths, timeline_files

DEFAULT_EVENTS = 5_000_000
DEFAULT_FILES = 2_500
DEFAULT_MASTERS = ("local[1]", "local[2]")
DEFAULT_TIMEOUT = 3600  # Spark at 5M rows on one core takes minutes, not an hour
EXIT_USAGE = 2
NOT_BUILT_TEXT = "not available in this version"  # what cloudir says for an engine it lacks
BUSY_SHARE = 0.2  # warn when other processes used this many CPU seconds per wall second
# gzip files + the case's copy + two timelines (DuckDB's kept aside, the one being built)
DISK_BYTES_PER_EVENT = 1500
CAPTURE_VERSION = 1

GENERATED = "generated"  # --detect-timeline: detect.py's timeline
BUILT = "built"  # --detect-timeline: the one this run built from the CloudTrail files

OK = "ok"
NOT_BUILT = "not built"
FAILED = "FAILED"
MISMATCH = "MISMATCH"


@dataclass(frozen=True)
class Engine:
    """One way to run a stage: its name in the table and the options that choose it."""

    name: str
    options: tuple[str, ...]

    @property
    def is_duckdb(self) -> bool:
        return not self.options


def engines(masters: Sequence[str]) -> list[Engine]:
    spark = [Engine(f"spark {m}", ("--engine", "spark", "--spark-master", m)) for m in masters]
    return [Engine("duckdb", ()), *spark]


@dataclass
class ScaleRow:
    """One stage on one engine: how long it took, and whether its output was DuckDB's."""

    step: str
    engine: str
    status: str  # ok, not built, FAILED, MISMATCH
    measured: BenchRow
    x_duckdb: float | None = None  # this row's seconds over DuckDB's for the step
    check: str = ""


# --------------------------------------------------------------------------------------
# The case
# --------------------------------------------------------------------------------------


def ensure_captured(
    cloudir: str, out: Path, gen: Path, events: int, files: int, seed: int
) -> tuple[Path, float | None]:
    """A case holding the generated files as one evidence item, reused when complete.

    Captured once and kept apart from `ingest_cloudtrail.py`'s case (which that bench
    deletes): the capture copies and hashes every file, minutes at 5M events, and is not
    what this benchmark measures. Returns the case and the capture's seconds (None when
    an earlier run's case was reused).
    """
    case = out / f"spark-case-{events}-{files}-s{seed}"
    marker = out / f"{case.name}.captured.json"
    wanted = {"capture": CAPTURE_VERSION, "events": events, "files": files, "seed": seed}
    if marker.exists() and case.is_dir() and json.loads(marker.read_text()) == wanted:
        log(f"reusing the captured case {case}")
        return case, None
    shutil.rmtree(case, ignore_errors=True)
    marker.unlink(missing_ok=True)
    argv = [cloudir, "capture", "files", "--case", str(case), str(gen)]
    log("capturing the generated files into a case (not timed)")
    m = run_measured(argv)
    if m.returncode != 0:
        log(m.stderr[-4000:])
        raise SystemExit(f"cloudir capture files failed with exit code {m.returncode}")
    marker.write_text(json.dumps(wanted) + "\n")
    log(f"captured in {m.seconds:.1f} s")
    return case, m.seconds


def clear_outputs(case: Path) -> None:
    """Remove every folder a timeline or detect run writes, so the next run starts bare."""
    paths = CasePaths(case)
    for folder in (paths.timeline, paths.timeline_building, paths.timeline_old, paths.findings):
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Comparing outputs
# --------------------------------------------------------------------------------------


def timeline_fingerprint(folder: Path) -> dict[str, Any]:
    """What two timelines must share to hold the same rows, whatever their file layout.

    Spark and DuckDB write different part files in different row orders, so the files
    cannot be compared; their rows can: the count, the distinct event_ids, an MD5 over the
    sorted event_ids, and a sum over the rows of a hash of every column (order-free, and a
    row that differs in any column changes it).
    """
    import duckdb

    columns = ", ".join(f'"{name}"' for name, _, _ in COLUMNS)
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        row = con.execute(
            f"""SELECT count(*), count(DISTINCT event_id),
                       md5(string_agg(event_id, ',' ORDER BY event_id)),
                       sum(hash({columns})::HUGEINT)::VARCHAR
                FROM read_parquet(?, hive_partitioning=false)""",
            [[str(path) for path in timeline_files(folder)]],
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    rows, ids, id_md5, row_hash = row
    return {"rows": rows, "event_ids": ids, "event_ids_md5": id_md5, "row_hash_sum": row_hash}


def findings_fingerprint(findings_json: Path) -> dict[str, Any]:
    """Per rule: how many events its findings hold and an MD5 of their sorted event_ids.

    Titles, levels and ranks follow from the rule and the events; the event_ids are what an
    engine computes, so they are what is compared.
    """
    document = json.loads(findings_json.read_text())
    rules: dict[str, dict[str, Any]] = {}
    for finding in document.get("findings") or []:
        ids = sorted(str(e) for e in finding.get("event_ids") or [])
        entry = rules.setdefault(str(finding.get("rule_id")), {"findings": 0, "events": []})
        entry["findings"] += 1
        entry["events"].extend(ids)
    return {
        rule: {
            "findings": entry["findings"],
            "count": len(entry["events"]),
            "event_ids_md5": hashlib.md5("\n".join(sorted(entry["events"])).encode()).hexdigest(),
        }
        for rule, entry in sorted(rules.items())
    }


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """The keys whose values differ, named for the report."""
    keys = sorted(set(expected) | set(got))
    return [f"{k}: duckdb {expected.get(k)!r}, this {got.get(k)!r}" for k in keys
            if expected.get(k) != got.get(k)]  # fmt: skip


# --------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------


@dataclass
class Limits:
    repeat: int
    timeout: int
    max_memory_mib: int
    quiet_wait: int = 0  # seconds to wait for other processes to calm down before a run


QUIET_WINDOW = 5.0  # seconds the machine's CPU use is averaged over


def wait_for_quiet(max_wait: int) -> float | None:
    """Wait until other processes use under BUSY_SHARE of a CPU, for at most max_wait s.

    On a shared 2-core machine a test run next door takes a core from the engine being
    measured, and local[2] against local[1] then measures the neighbour, not Spark. A run
    still starts after max_wait; its other-CPU warning says what happened. Returns the
    last window's busy CPUs.
    """
    busy: float | None = None
    deadline = time.monotonic() + max_wait
    while max_wait > 0:
        before = _busy_cpu_seconds()
        time.sleep(QUIET_WINDOW)
        after = _busy_cpu_seconds()
        if before is None or after is None:
            return None
        busy = (after - before) / QUIET_WINDOW
        if busy < BUSY_SHARE:
            return busy
        if time.monotonic() >= deadline:
            log(f"  the machine is still busy ({busy:.1f} CPUs); measuring anyway")
            return busy
        log(f"  waiting for a quiet machine ({busy:.1f} CPUs busy)")
    return busy


def not_built(run: Run) -> bool:
    """True when cloudir refused the engine as not in this version (exit 2 saying so)."""
    m = run.measured
    return m is not None and m.returncode == EXIT_USAGE and NOT_BUILT_TEXT in (m.stderr or "")


def measured_row(
    step: str, engine: Engine, argv: list[str], run: Run, events: int, note: str
) -> ScaleRow:
    row = BenchRow.of(f"{step} ({engine.name})", argv, run, events, note)
    if not_built(run):
        return ScaleRow(step, engine.name, NOT_BUILT, row, check="cloudir says: not built yet")
    return ScaleRow(step, engine.name, FAILED if run.failure else OK, row)


def measure_timelines(
    cloudir: str, case: Path, reference: Path, events: int, engine_list: list[Engine], lim: Limits
) -> list[ScaleRow]:
    """`cloudir timeline` on each engine from a bare case; DuckDB's timeline ends in reference."""
    rows: list[ScaleRow] = []
    expected: dict[str, Any] | None = None
    shutil.rmtree(reference, ignore_errors=True)
    for engine in engine_list:
        argv = [cloudir, "timeline", "--case", str(case), *engine.options]
        log(f"timeline on {engine.name}")
        runs: list[Measured] = []
        checks: list[str] = []
        run = Run(None, [])
        for n in range(lim.repeat):
            clear_outputs(case)
            wait_for_quiet(lim.quiet_wait)
            run = repeat_measured(
                argv, f"timeline {engine.name}", 1, (0,), lim.timeout, lim.max_memory_mib
            )
            if run.failure or run.measured is None:
                break
            runs.append(run.measured)
            checks.append(check_timeline(cloudir, case, events, expected, engine))
            if engine.is_duckdb and n == lim.repeat - 1:
                expected = timeline_fingerprint(CasePaths(case).timeline)
                CasePaths(case).timeline.rename(reference)
        if runs and not run.failure:
            run = median_run(runs)
        note = f"{events:,} rows expected; options: {' '.join(engine.options) or '(default)'}"
        row = measured_row("timeline", engine, argv, run, events, note)
        bad = [c for c in checks if c != OK]
        if row.status == OK:
            row.check = bad[0] if bad else checks[-1] if checks else ""
            if bad:
                row.status = MISMATCH
            elif not engine.is_duckdb and expected is None:
                row.check = "rows counted; DuckDB's timeline missing, not compared"
            elif not engine.is_duckdb:
                row.check = "rows = DuckDB's (count, event_ids MD5, hash of every column)"
        rows.append(row)
    clear_outputs(case)
    return rows


def median_run(runs: list[Measured]) -> Run:
    """The median run by wall time, with the highest memory seen in any (as repeat_measured)."""
    median = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    median.max_rss_kib = max((m.max_rss_kib or 0 for m in runs), default=0) or None
    median.tree_pss_kib = max((m.tree_pss_kib or 0 for m in runs), default=0) or None
    return Run(median, [round(m.seconds, 3) for m in runs])


def check_timeline(
    cloudir: str, case: Path, events: int, expected: dict[str, Any] | None, engine: Engine
) -> str:
    """OK, or what is wrong with the timeline this run left in the case."""
    summary_rows, counted, distinct = count_rows(cloudir, case)
    if not summary_rows == counted == distinct == events:
        return (
            f"ROW COUNT: generated {events}; summary.json {summary_rows}, count(*) {counted}, "
            f"distinct event_id {distinct}"
        )
    if engine.is_duckdb or expected is None:
        return OK
    got = timeline_fingerprint(CasePaths(case).timeline)
    diff = differences(expected, got)
    return "ROWS DIFFER from DuckDB's: " + "; ".join(diff) if diff else OK


def measure_detects(
    cloudir: str, case: Path, events: int, engine_list: list[Engine], lim: Limits
) -> tuple[list[ScaleRow], dict[str, Any]]:
    """`cloudir detect` on the case's timeline with each engine; findings compared with
    DuckDB's. Only findings/ is removed, before each run and at the end: the timeline is
    the input, the same for every engine."""
    rows: list[ScaleRow] = []
    info: dict[str, Any] = {}
    findings = CasePaths(case)
    if not findings.timeline_parts():
        for engine in engine_list:
            empty = BenchRow(tool=f"detect ({engine.name})", command="", status=FAILED)
            rows.append(ScaleRow("detect", engine.name, FAILED, empty, check="no timeline"))
        return rows, info
    expected: dict[str, Any] | None = None
    try:
        for engine in engine_list:
            argv = [cloudir, "detect", "--case", str(case), "--json", *engine.options]
            log(f"detect on {engine.name}")
            shutil.rmtree(findings.findings, ignore_errors=True)
            wait_for_quiet(lim.quiet_wait)
            run = repeat_measured(
                argv,
                f"detect {engine.name}",
                lim.repeat,
                (0, EXIT_FINDINGS),
                lim.timeout,
                lim.max_memory_mib,
            )
            summary = detect_summary(run)
            note = (
                f"{summary.get('rules_run', '?')} rules run, {summary.get('findings', '?')} "
                f"findings over {summary.get('matched_events', '?')} events"
            )
            row = measured_row("detect", engine, argv, run, events, note)
            if row.status == OK and findings.findings_json.exists():
                got = findings_fingerprint(findings.findings_json)
                if engine.is_duckdb:
                    expected = got
                    info = summary
                    row.check = f"{len(got)} rules with findings"
                elif expected is None:
                    row.check = "DuckDB's findings missing, not compared"
                else:
                    diff = differences(expected, got)
                    row.check = (
                        f"findings = DuckDB's ({len(got)} rules: ids, counts, event_ids)"
                        if not diff
                        else f"FINDINGS DIFFER from DuckDB's ({len(diff)} rules): {diff[0]}"
                    )
                    row.status = MISMATCH if diff else OK
            elif row.status == OK:
                row.status = FAILED
                row.check = "no findings.json written"
            rows.append(row)
    finally:
        shutil.rmtree(findings.findings, ignore_errors=True)
    return rows, info


def add_ratios(rows: list[ScaleRow]) -> None:
    """x DuckDB: each measured row's seconds over DuckDB's for the same step."""
    duckdb = {r.step: r.measured.seconds for r in rows if r.engine == "duckdb" and r.status == OK}
    for r in rows:
        base = duckdb.get(r.step)
        if r.status in (OK, MISMATCH) and base and r.measured.seconds:
            r.x_duckdb = round(r.measured.seconds / base, 2)


def scaling(rows: list[ScaleRow], masters: Sequence[str]) -> list[str]:
    """Per step: how much faster the last Spark master ran than the first (the per-core line)."""
    if len(masters) < 2:
        return []
    lines = []
    first, last = f"spark {masters[0]}", f"spark {masters[-1]}"
    for step in dict.fromkeys(r.step for r in rows):
        by = {r.engine: r.measured.seconds for r in rows if r.step == step and r.status == OK}
        slow, fast = by.get(first), by.get(last)
        if slow and fast:
            lines.append(f"{step}: {last} is {slow / fast:.2f}x as fast as {first}")
    return lines


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _peak(r: BenchRow) -> float | None:
    return max(r.max_rss_mib or 0, r.tree_pss_mib or 0) or None


def _seconds(r: ScaleRow) -> str:
    if r.status == NOT_BUILT:
        return NOT_BUILT
    if r.status == FAILED:
        return FAILED
    return _fmt(r.measured.seconds, ".2f")


def busy_warnings(rows: list[ScaleRow]) -> list[str]:
    warnings = []
    for r in rows:
        other, seconds = r.measured.other_cpu_seconds, r.measured.seconds
        if other is not None and seconds and other > BUSY_SHARE * seconds:
            warnings.append(
                f"{r.step} ({r.engine}): other processes used {other:.1f} CPU s during its "
                f"{seconds:.1f} s; noisy"
            )
    return warnings


def render(rows: list[ScaleRow], params: dict[str, Any], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)
    table = Table(title=title(params))
    for name in (
        "step",
        "engine",
        "seconds",
        "rows/s",
        "x DuckDB\n(time)",
        "peak RSS MiB\n(largest proc)",
        "peak PSS MiB\n(whole tree)",
        "CPU s",
        "check",
    ):
        table.add_column(name, justify="left" if name in ("step", "engine", "check") else "right")
    for r in rows:
        m = r.measured
        measured = r.status in (OK, MISMATCH)
        table.add_row(
            r.step,
            r.engine,
            _seconds(r),
            _fmt(m.rows_per_s, ",.0f") if measured else "-",
            _fmt(r.x_duckdb, ".2f"),
            _fmt(m.max_rss_mib, ",.0f") if measured else "-",
            _fmt(m.tree_pss_mib, ",.0f") if measured else "-",
            _fmt(m.cpu_seconds, ".1f") if measured else "-",
            Text("ok" if r.status == OK and not r.check else r.check or r.status),
        )
    console.print(table)
    for r in rows:
        if r.status == FAILED:
            console.print(Text(f"{r.step} ({r.engine}): {r.measured.note}"))
        if len(r.measured.runs_seconds) > 1:
            runs = ", ".join(f"{x:.2f}" for x in r.measured.runs_seconds)
            console.print(Text(f"{r.step} ({r.engine}) runs: {runs} s"))
    for line in notes:
        console.print(Text(line))


def title(params: dict[str, Any]) -> str:
    return (
        f"{params['events']:,} CloudTrail events in {params['files']:,} files "
        f"({params['gzip_bytes'] / MIB:,.0f} MiB gzip) -> timeline -> detect; "
        f"{params['nproc']} CPUs, median of {params['repeat']}"
    )


def markdown(rows: list[ScaleRow], params: dict[str, Any], notes: list[str]) -> str:
    lines = [
        title(params) + ":",
        "",
        "| step | engine | seconds | rows/s | x DuckDB (time) | peak MiB | CPU s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.measured
        measured = r.status in (OK, MISMATCH)
        lines.append(
            f"| {r.step} | {r.engine} | {_seconds(r)} | "
            f"{_fmt(m.rows_per_s, ',.0f') if measured else '-'} | {_fmt(r.x_duckdb, '.2f')} | "
            f"{_fmt(_peak(m), ',.0f') if measured else '-'} | "
            f"{_fmt(m.cpu_seconds, '.1f') if measured else '-'} |"
        )
    lines.append("")
    lines.append(
        "peak MiB: the larger of the largest process's RSS and the whole tree's PSS; "
        "x DuckDB: seconds over DuckDB's for the step (above 1 is slower)."
    )
    lines.extend(f"- {line}" for line in notes)
    return "\n".join(lines) + "\n"


def spark_facts() -> dict[str, Any]:
    """The Spark side of the machine: pyspark, Java, and the memory settings passed."""
    facts: dict[str, Any] = {}
    try:
        import pyspark

        facts["pyspark"] = pyspark.__version__
    except ImportError:
        facts["pyspark"] = None
    java = shutil.which("java")
    if java:
        version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        facts["java"] = version.splitlines()[0] if version else java
    for name in ("SPARK_DRIVER_MEMORY", "PYSPARK_SUBMIT_ARGS", "SPARK_MASTER", "JAVA_HOME"):
        if os.environ.get(name):
            facts[name] = os.environ[name]
    import cloudir

    facts["cloudir_module"] = str(Path(cloudir.__file__).parent)
    return facts


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events to generate")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES, help="delivery files")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument("--repeat", type=int, default=1, help="runs per command; median kept")
    parser.add_argument(
        "--spark-master",
        action="append",
        dest="masters",
        metavar="MASTER",
        help="Spark master to measure (repeatable; default local[1] and local[2])",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench/out"), help="generated files and the case"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="where results go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files and case")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only generate and capture the inputs (kept), measure nothing: a later run "
        "on a quiet machine reuses them (5M events take many minutes to make)",
    )
    parser.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds before a run is stopped"
    )
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    parser.add_argument(
        "--max-memory",
        type=int,
        default=int(total_mib * 0.6),
        help="MiB a measured process tree may use before it is killed (default 60%% of RAM)",
    )
    parser.add_argument(
        "--detect-timeline",
        choices=(GENERATED, BUILT),
        default=GENERATED,
        help="detect over detect.py's generated timeline of the same size (default), or over "
        "the timeline this run built from the CloudTrail files",
    )
    parser.add_argument(
        "--detect-out",
        type=Path,
        default=Path("bench/out-detect"),
        help="detect.py's cache of generated timelines (shared with make bench-detect)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=int,
        default=0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for other processes to use under "
        f"{BUSY_SHARE} of a CPU (a shared machine)",
    )
    parser.add_argument(
        "--driver-memory",
        metavar="SIZE",
        help="Spark driver JVM heap, e.g. 4g (sets SPARK_DRIVER_MEMORY; default Spark's 1g)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.files < 1 or args.repeat < 1:
        parser.error("--events, --files and --repeat must be positive")
    masters: list[str] = args.masters or list(DEFAULT_MASTERS)
    if args.driver_memory:
        # local mode runs every executor in the driver's JVM; spark-submit's launcher reads
        # this variable when no spark.driver.memory is set
        os.environ["SPARK_DRIVER_MEMORY"] = args.driver_memory
    files = min(args.files, args.events)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cloudir = cloudir_bin()
    machine = machine_info(cloudir) | spark_facts()

    need = args.events * DISK_BYTES_PER_EVENT
    free = shutil.disk_usage(out).free
    if free < need:
        raise SystemExit(
            f"{out}: {free / 2**30:.1f} GiB free, this run needs about {need / 2**30:.1f} GiB"
        )
    gen, manifest = ensure_data(out, args.events, files, args.seed, os.cpu_count() or 1)
    case, capture_seconds = ensure_captured(cloudir, out, gen, args.events, files, args.seed)
    reference = out / f"{case.name}.duckdb-timeline"
    limits = Limits(args.repeat, args.timeout, args.max_memory, args.wait_quiet)
    engine_list = engines(masters)
    params = {
        "events": args.events,
        "files": files,
        "seed": args.seed,
        "repeat": args.repeat,
        "masters": masters,
        "nproc": machine["nproc"],
        "json_bytes": manifest["json_bytes"],
        "gzip_bytes": manifest["gzip_bytes"],
        "capture_seconds": round(capture_seconds, 1) if capture_seconds else None,
        "timeout": args.timeout,
        "max_memory_mib": args.max_memory,
        "driver_memory": args.driver_memory,
        "wait_quiet": args.wait_quiet,
    }
    detect_case = case
    if args.detect_timeline == GENERATED:
        detect_out: Path = args.detect_out.resolve()
        detect_out.mkdir(parents=True, exist_ok=True)
        detect_case, detect_manifest = ensure_case(
            detect_out, args.events, args.seed, os.cpu_count() or 1
        )
        params["detect_case"] = str(detect_case)
        params["detect_parquet_bytes"] = detect_manifest["parquet_bytes"]
    params["detect_timeline"] = args.detect_timeline
    if args.prepare:
        log(f"prepared {gen}, {case} and the detect timeline; measured nothing")
        return 0
    try:
        started = time.monotonic()
        rows = measure_timelines(cloudir, case, reference, args.events, engine_list, limits)
        if args.detect_timeline == BUILT and reference.is_dir():
            reference.rename(CasePaths(case).timeline)
        detect_rows, detect_info = measure_detects(
            cloudir, detect_case, args.events, engine_list, limits
        )
        rows += detect_rows
        params["measuring_seconds"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(reference, ignore_errors=True)
        clear_outputs(case)
        if args.keep:
            log(f"kept {gen} and {case}")
        else:
            shutil.rmtree(gen, ignore_errors=True)
            (out / f"{gen.name}.manifest.json").unlink(missing_ok=True)
            shutil.rmtree(case, ignore_errors=True)
            (out / f"{case.name}.captured.json").unlink(missing_ok=True)
    add_ratios(rows)
    notes = [*scaling(rows, masters), *busy_warnings(rows)]
    if any(r.status == NOT_BUILT for r in rows):
        notes.append("not built: cloudir refused the engine for this step (exit 2)")
    if args.detect_timeline == GENERATED:
        notes.append(
            f"detect ran over detect.py's generated timeline of {args.events:,} rows "
            "(CloudTrail with per-principal API mixes, 5% Linux, 0.1% attacks), as "
            "make bench-detect does"
        )
    render(rows, params, notes)

    stem = args.results.resolve() / f"spark_scale-{_label(args.events)}"
    snippet = markdown(rows, params, notes)
    document = {
        "machine": machine,
        "params": params,
        "rows": [asdict(r) for r in rows],
        "detect": detect_info,
        "notes": notes,
        "markdown": snippet,
    }
    write_results(stem, document, snippet)
    log(f"results written to {stem}.json and .md")
    # "not built" is this version's answer, not a failure; a crash or a difference is
    return 0 if all(r.status in (OK, NOT_BUILT) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
