"""Benchmark: cloudir's file system timeline beside dissect's walkfs and os.walk.

Why it exists: the file system timeline reads every inode of a disk image, so on a real
server (hundreds of thousands of entries) its cost per entry decides whether it can run
by default. dissect's own `walkfs` resolves each entry's path again from the root, looking
each name up in its directory, so an entry costs more the bigger its directory is
(quadratic within one large directory); cloudir walks dissect's directory entries instead
(`cloudir/analyze/host/fs_timeline.py`). This shows both, and the floor.

For each size, a tree of small files in nested directories (100 files per directory,
10 directories per parent, a fifth of them under `home/user` where every 20th file is
executable, so the SHA-256 path is exercised) is generated and made into an ext4 image
with `mkfs.ext4 -d` (neither is timed). Then, each in a fresh process and timed with
`run_measured` (wall time, largest-process peak RSS):

- **cloudir**: `fs_rows` over the image, every row consumed, entries counted: ext read
  natively (`host/tsk_walk.py`: struct and The Sleuth Kit) when pytsk3 is installed;
- **cloudir (dissect)**: the same with `native=False`, every entry read by dissect (the
  reference the native walker is tested against, and what runs without pytsk3);
- **walkfs**: `.venv/bin/target-query -f walkfs IMAGE`, its record stream counted as it
  comes by a small reader (nothing kept), and stopped after `--timeout` seconds;
- **os.walk**: `os.walk` over the source directory with `os.lstat` on each entry: the
  host kernel's floor for the same tree, from the page cache.

The image is read once before the runs, so every contender starts with it in the page
cache. Target (issue 20): cloudir at least 20,000 entries/s on ext4, and its time
growing linearly with the entry count (seconds(50k)/seconds(10k) near 5).

    .venv/bin/python bench/fs_timeline.py [--sizes 10000,25000,50000] [--timeout 120]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script (as for bench/detect.py)
from common import Measured, machine_info, run_measured

REPO = Path(__file__).resolve().parent.parent
TARGET_QUERY = REPO / ".venv/bin/target-query"
FILES_PER_DIR = 100
DIRS_PER_PARENT = 10
TARGET_RATE = 20_000
MIB = 1024 * 1024
BLOCK = 4096


# -- the data ------------------------------------------------------------------------------
def make_tree(root: Path, files: int) -> int:
    """`files` small files in nested directories; returns the entries made (dirs too)."""
    made: set[Path] = set()
    for i in range(files):
        leaf_index = i // FILES_PER_DIR
        parent_index = leaf_index // DIRS_PER_PARENT
        top = "home/user" if parent_index % 5 == 4 else "srv"
        leaf = root / top / f"d{parent_index:04d}" / f"s{leaf_index % DIRS_PER_PARENT}"
        if leaf not in made:
            leaf.mkdir(parents=True, exist_ok=True)
            made.add(leaf)
        path = leaf / f"f{i:07d}"
        path.write_bytes(f"file {i}\n".encode())
        if i % 20 == 0:
            path.chmod(0o755)
    return sum(1 for _ in _all_entries(root))


def _all_entries(root: Path) -> Any:
    for _, dirnames, filenames in os.walk(root):
        yield from dirnames
        yield from filenames


def make_image(root: Path, image: Path, entries: int) -> int:
    """An ext4 image just big enough: a 4 KiB block per entry plus room for the journal
    and metadata, and an inode for each entry. Returns its size in MiB."""
    size_mib = math.ceil(entries * BLOCK * 1.3 / MIB) + 64
    argv = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-N", str(entries + 1024)]
    subprocess.run(
        [*argv, "-d", str(root), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return size_mib


def warm(image: Path) -> None:
    with open(image, "rb") as fh:
        while fh.read(8 * MIB):
            pass


# -- the contenders (each runs in its own process) ---------------------------------------
def run_cloudir(image: Path, native: bool = True) -> None:
    from dissect.target import Target

    from cloudir.analyze.host.fs_timeline import fs_rows
    from cloudir.analyze.host.target import quiet_dissect
    from cloudir.analyze.parsers import ErrorLog

    quiet_dissect()
    started = time.perf_counter()
    target = Target.open(image)
    opened = time.perf_counter()
    errors = ErrorLog()
    entries = rows = 0
    last = None
    digest = hashlib.sha256()
    for row in fs_rows(target, None, "bench", errors, native=native):
        rows += 1
        digest.update(row.event_id.encode())
        if row.target != last:  # an entry's rows come together
            entries += 1
            last = row.target
    done = time.perf_counter()
    report = {"entries": entries, "rows": rows, "errors": len(errors.entries)}
    report["digest"] = digest.hexdigest()
    report |= {"open_seconds": opened - started, "walk_seconds": done - opened}
    print(json.dumps(report))


def run_walkfs(image: Path, timeout: float) -> None:
    """target-query's record stream counted frame by frame; stopped after `timeout`."""
    import msgpack

    proc = subprocess.Popen(
        [str(TARGET_QUERY), "-q", "-f", "walkfs", str(image)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    records = 0
    assert proc.stdout is not None
    read = proc.stdout.read
    while len(head := read(4)) == 4:
        size = struct.unpack(">I", head)[0]
        blob = read(size)
        if len(blob) < size:  # cut off when it was stopped
            break
        # a record is ExtType(code, msgpack [type, payload]): 0x92, then the type
        frame = msgpack.unpackb(blob)
        if isinstance(frame, msgpack.ExtType) and frame.data[1:2] == b"\x01":
            records += 1
    timer.cancel()
    returncode = proc.wait()
    print(json.dumps({"records": records, "stopped": stopped.is_set(), "rc": returncode}))


def run_oswalk(tree: Path) -> None:
    entries = 1
    os.lstat(tree)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            entries += 1
    print(json.dumps({"entries": entries}))


# -- measuring ---------------------------------------------------------------------------
def measure(argv: list[str]) -> tuple[Measured, dict[str, Any]]:
    measured = run_measured(argv)
    if measured.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{measured.stderr[-2000:]}")
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def bench_size(files: int, timeout: float, work: Path) -> dict[str, Any]:
    tree = work / f"tree-{files}"
    image = work / f"ext4-{files}.img"
    print(f"{files:,} files: generating the tree and the image", file=sys.stderr)
    made = make_tree(tree, files)
    image_mib = make_image(tree, image, made)
    warm(image)
    me = [sys.executable, __file__]
    runs: dict[str, dict[str, Any]] = {}
    for name, argv in (
        ("cloudir", [*me, "--run", "cloudir", "--image", str(image)]),
        ("cloudir-dissect", [*me, "--run", "cloudir-dissect", "--image", str(image)]),
        ("os.walk", [*me, "--run", "oswalk", "--tree", str(tree)]),
        ("walkfs", [*me, "--run", "walkfs", "--image", str(image), "--timeout", str(timeout)]),
    ):
        print(f"{files:,} files: {name}", file=sys.stderr)
        measured, report = measure(argv)
        entries = report.get("entries", report.get("records"))
        runs[name] = {
            **report,
            "entries": entries,
            "seconds": measured.seconds,
            "entries_per_s": entries / measured.seconds,
            "max_rss_kib": measured.max_rss_kib,
            "cpu_seconds": measured.cpu_seconds,
            "other_cpu_seconds": measured.other_cpu_seconds,
        }
    subprocess.run(["rm", "-rf", str(tree), str(image)], check=True)
    return {"files": files, "tree_entries": made + 1, "image_mib": image_mib, "runs": runs}


# -- reporting ---------------------------------------------------------------------------
def table(results: list[dict[str, Any]], timeout: float) -> str:
    lines = [
        "File system timeline of an ext4 image (small files, 100 per directory), each tool "
        "in a fresh process, image in the page cache. `seconds` is the whole process "
        "(imports and dissect's `Target.open`, about 1.2 s, included); `walk s` is "
        "cloudir's walk alone, after the open the host parser has already paid for the "
        "artifacts.",
        "",
        "| files | tool | entries | seconds | entries/s | walk s | walk entries/s "
        "| peak RSS MiB | other CPU s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "cloudir": "cloudir fs_rows (native ext)",
        "cloudir-dissect": "cloudir fs_rows (dissect)",
        "walkfs": "dissect target-query -f walkfs",
        "os.walk": "os.walk + lstat on the source dir",
    }
    for r in results:
        for name in ("cloudir", "cloudir-dissect", "walkfs", "os.walk"):
            m = r["runs"][name]
            seconds = f"{m['seconds']:.2f}"
            if m.get("stopped"):
                seconds = f"stopped at {timeout:.0f} s"
            walk = rate = ""
            if "walk_seconds" in m:
                walk = f"{m['walk_seconds']:.2f}"
                rate = f"{m['entries'] / m['walk_seconds']:,.0f}"
            rss = f"{m['max_rss_kib'] / 1024:,.0f}" if m["max_rss_kib"] else "?"
            other = m["other_cpu_seconds"]
            lines.append(
                f"| {r['files']:,} | {labels[name]} | {m['entries']:,} | {seconds} | "
                f"{m['entries_per_s']:,.0f} | {walk} | {rate} | {rss} | "
                f"{'?' if other is None else f'{other:.1f}'} |"
            )
    lines.append("")
    for r in results:
        c, w, o = (r["runs"][k] for k in ("cloudir", "walkfs", "os.walk"))
        d = r["runs"]["cloudir-dissect"]
        walk_rate = c["entries"] / c["walk_seconds"]
        dissect_rate = d["entries"] / d["walk_seconds"]
        walkfs = (
            f"walkfs had {w['entries']:,} records when stopped"
            if w.get("stopped")
            else f"walkfs took {w['seconds']:.1f} s"
        )
        lines.append(
            f"- {r['files']:,} files: cloudir {walk_rate:,.0f} entries/s walking, "
            f"{c['entries_per_s']:,.0f} with the process start (target >= {TARGET_RATE:,} on "
            f"the walk: {'met' if walk_rate >= TARGET_RATE else 'not met'}); "
            f"{walk_rate / dissect_rate:.1f}x the dissect walk's {dissect_rate:,.0f}/s "
            f"(same rows: {'yes' if c['digest'] == d['digest'] else 'NO'}); "
            f"{c['entries_per_s'] / w['entries_per_s']:,.0f}x walkfs's rate ({walkfs}); "
            f"{c['entries_per_s'] / o['entries_per_s']:.2f}x os.walk's; "
            f"{c['rows']:,} rows, {c['errors']} errors"
        )
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        c_lo, c_hi = lo["runs"]["cloudir"], hi["runs"]["cloudir"]
        grew = c_hi["entries"] / c_lo["entries"]
        lines.append(
            f"- growth from {lo['files']:,} to {hi['files']:,} files ({grew:.2f}x the "
            f"entries, so linear = {grew:.2f}): cloudir's walk took "
            f"{c_hi['walk_seconds'] / c_lo['walk_seconds']:.2f}x the time, the whole process "
            f"{c_hi['seconds'] / c_lo['seconds']:.2f}x (the fixed start makes that one smaller)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,25000,50000", help="files per image")
    parser.add_argument("--timeout", type=float, default=120, help="stop walkfs after (s)")
    parser.add_argument("--results", type=Path, default=REPO / "bench/results")
    parser.add_argument("--work", type=Path, help="where trees and images go (a temp dir)")
    parser.add_argument(
        "--run", choices=["cloudir", "cloudir-dissect", "walkfs", "oswalk"], help=argparse.SUPPRESS
    )
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run == "cloudir":
        return run_cloudir(args.image)
    if args.run == "cloudir-dissect":
        return run_cloudir(args.image, native=False)
    if args.run == "walkfs":
        return run_walkfs(args.image, args.timeout)
    if args.run == "oswalk":
        return run_oswalk(args.tree)

    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cloudir-fs-bench-", dir=args.work) as tmp:
        for files in sizes:
            results.append(bench_size(files, args.timeout, Path(tmp)))
    text = table(results, args.timeout)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "fs_timeline.md").write_text(text + "\n")
    document = {
        "sizes": sizes,
        "timeout": args.timeout,
        "machine": machine_info(str(REPO / ".venv/bin/cloudir")),
        "results": results,
    }
    (args.results / "fs_timeline.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
