"""Benchmark: many small CloudTrail files into the timeline (issue 14, item 12).

Why it exists: a trail bucket for a quiet account, or one split by a log shipper, holds
tens of thousands of files of one or two records each. The timeline once wrote one
Parquet row group per file and kept per-file state for the whole run: 50,000 small files
gave 180 MB of Parquet for 11 MB of JSON, a 940 MB peak and a slow count(*). This script
measures what grows with the number of files, the previous code beside the current one
in the same run, on the same case:

- peak memory: the largest single process (wait4's ru_maxrss) and the sum of RSS over
  the whole process tree (sampled from /proc every 0.1 s), because the timeline runs one
  parser process per core;
- the Parquet the run wrote: bytes and row groups;
- `SELECT count(*)` over the timeline in a fresh DuckDB process, the median of 3.

The case is made directly (files written into one evidence item, hashed and recorded in
custody in blocks of 1,000), because 50,000 `capture files` copies with an fsync each
measure the disk, not the timeline. Generation is seeded and not timed.

Usage: .venv/bin/python bench/small_files.py [--files 50000] [--workers W]
           [--baseline-rev a65c9ec] [--no-baseline] [--out bench/out-small-files]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudir.case_folder import timeline_files

REPO = Path(__file__).resolve().parent.parent
BASELINE_REV = "a65c9ec"  # the commit before issue 14's fixes
SAMPLE_SECONDS = 0.1
MIB = 1024 * 1024
NAMES = ("GetObject", "PutObject", "AssumeRole", "DescribeInstances", "Decrypt")


@dataclass
class Run:
    code: str
    seconds: float
    peak_rss_mib_single: float
    peak_rss_mib_tree: float
    rows: int
    parquet_bytes: int
    parquet_files: int
    row_groups: int
    count_seconds: float
    exit_code: int


def event(rng: random.Random, when: int) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "arn": f"arn:aws:iam::111122223333:user/u{rng.randrange(50)}",
            "accountId": "111122223333",
        },
        "eventTime": stamp,
        "eventSource": "s3.amazonaws.com",
        "eventName": rng.choice(NAMES),
        "awsRegion": "us-east-1",
        "sourceIPAddress": f"198.51.100.{rng.randrange(1, 255)}",
        "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
    }


def build_case(case: Path, files: int, seed: int) -> tuple[int, int]:
    """`files` gzipped delivery files of 1-3 records in one recorded item."""
    sys.path.insert(0, str(REPO))
    from cloudir.case import Case, FileRecord, sha256_file

    if case.exists():
        shutil.rmtree(case)
    the_case = Case.create(case, title="small files bench")
    evidence_id = "cloudtrail-small-files"
    the_case.open_item(evidence_id, {"kind": "cloudtrail", "source": {"type": "bench"}})
    folder = the_case.evidence_dir(evidence_id)
    rng = random.Random(seed)
    records, total_bytes, events = [], 0, 0
    for n in range(files):
        day = folder / f"2024/07/{1 + n % 28:02d}"
        day.mkdir(parents=True, exist_ok=True)
        batch = [event(rng, 1722384000 + n * 7 + k) for k in range(rng.randint(1, 3))]
        events += len(batch)
        path = day / f"111122223333_CloudTrail_us-east-1_{n:06d}.json.gz"
        path.write_bytes(gzip.compress(json.dumps({"Records": batch}).encode(), 6))
        digest, size = sha256_file(path)
        total_bytes += size
        records.append(FileRecord(the_case.relpath(path), digest, size))
        if len(records) == 1000:
            the_case.record("capture", evidence_id, records)
            records = []
    if records:
        the_case.record("capture", evidence_id, records)
    the_case.record("capture-complete", evidence_id, [], note=f"{files} files (bench)")
    return events, total_bytes


def tree_rss(root: int) -> int:
    """Sum of RSS in bytes over `root` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Wall seconds, largest single RSS, largest tree RSS (MiB), exit code.

    `argv` runs under a wrapper that prints its children's ru_maxrss (the largest of the
    whole waited-for tree) as its last stderr line.
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    lines = stderr.decode(errors="replace").strip().splitlines() or ["0"]
    if proc.returncode:
        print("\n".join(lines[-20:]), file=sys.stderr)
    single_kib = int(lines[-1]) if lines[-1].isdigit() else 0
    return seconds, single_kib / 1024, peak[0] / MIB, proc.returncode


def parquet_stats(timeline: Path) -> tuple[int, int, int, int]:
    import pyarrow.parquet as pq

    files = timeline_files(timeline)
    groups = rows = 0
    for path in files:
        meta = pq.ParquetFile(path).metadata
        groups += meta.num_row_groups
        rows += meta.num_rows
    return sum(p.stat().st_size for p in files), len(files), groups, rows


def count_seconds(timeline: Path, python: str) -> float:
    code = (
        "import duckdb, sys, time; con = duckdb.connect(); "
        'con.execute("SET enable_progress_bar = false"); t = time.perf_counter(); '
        'con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning=false)", '
        "[sys.argv[1]]).fetchall(); "
        "print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(3):
        out = subprocess.run(
            [python, "-c", code, str(timeline / "**" / "*.parquet")],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.split()[-1]))
    return statistics.median(times)


def baseline_module(rev: str, folder: Path) -> Path:
    """The timeline module as it was at `rev`, importable as `baseline_timeline`."""
    text = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:cloudir/analyze/timeline.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (folder / "baseline_timeline.py").write_text(text)
    return folder


def run_one(label: str, module: str, case: Path, workers: int, extra_path: str) -> Run:
    """One timeline build in its own interpreter, so its memory is its own."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        f"import {module} as t; from cloudir.case import Case; "
        "r = t.build_timeline(Case.open(__import__('pathlib').Path(sys.argv[2])), "
        "int(sys.argv[3]) or None); print(r.rows)"
    )
    wrapper = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(p.returncode)"
    )
    argv = [sys.executable, "-c", wrapper, sys.executable, "-c", code]
    argv += [extra_path, str(case), str(workers)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seconds, single, tree, rc = measured(argv, env)
    size, files, groups, rows = parquet_stats(case / "timeline")
    counted = count_seconds(case / "timeline", sys.executable) if files else 0.0
    return Run(label, seconds, single, tree, rows, size, files, groups, counted, rc)


def table(runs: list[Run], meta: dict[str, Any]) -> str:
    head = (
        f"{meta['files']} files, {meta['events']} events, {meta['evidence_bytes'] / MIB:.1f} MiB "
        f"of gzipped JSON; workers={meta['workers'] or 'all cores'}; {meta['cpus']} CPUs\n\n"
        "| code | seconds | peak RSS, one process (MiB) | peak RSS, process tree (MiB) "
        "| rows | Parquet (MiB) | Parquet files | row groups | count(*) (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.code} | {r.seconds:.1f} | {r.peak_rss_mib_single:.0f} | {r.peak_rss_mib_tree:.0f} "
        f"| {r.rows} | {r.parquet_bytes / MIB:.1f} | {r.parquet_files} | {r.row_groups} "
        f"| {r.count_seconds:.3f} |"
        for r in runs
    ]
    return head + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out-small-files")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    case = args.out / "case"
    print(f"generating {args.files} files into {case} ...", file=sys.stderr)
    events, evidence_bytes = build_case(case, args.files, args.seed)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_baseline:
            baseline_module(args.baseline_rev, Path(tmp))
            print(f"timeline at {args.baseline_rev} ...", file=sys.stderr)
            label = f"before ({args.baseline_rev})"
            runs.append(run_one(label, "baseline_timeline", case, args.workers, tmp))
        print("timeline now ...", file=sys.stderr)
        runs.append(run_one("now", "cloudir.analyze.timeline", case, args.workers, tmp))
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "files": args.files,
        "events": events,
        "evidence_bytes": evidence_bytes,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "commit": commit,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = table(runs, meta)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"small_files-{args.files // 1000}k"
    (args.results / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2) + "\n"
    )
    (args.results / f"{stem}.md").write_text(f"# small files ({meta['date']})\n\n{text}")
    bad = [r for r in runs if r.exit_code or r.rows != events]
    for r in bad:
        print(f"{r.code}: exit {r.exit_code}, {r.rows} rows of {events}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
