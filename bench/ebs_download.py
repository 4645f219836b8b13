"""Benchmark: cloudir's EBS snapshot download beside a bare GetSnapshotBlock loop.

One local moto server holds a snapshot written through the EBS direct APIs (random data,
so nothing compresses or dedups). In the same run, each in a fresh process and with the
same worker count:

- **bare loop**: threaded `get_snapshot_block` calls that write each block at its offset
  and check nothing: the ceiling the API and the server allow;
- **cloudir**: `download_snapshot`, with every check on (per-block SHA-256 against the
  API's checksum, sparse image, checkpoints, streamed whole-image SHA-256, custody);
- **dsnap** (Rhino Security Labs' EBS direct-API downloader, on PyPI), when it is
  installed: its `LocalSnapshot.fetch`, pointed at the same server through
  AWS_ENDPOINT_URL, with its thread count set to the same number of workers (its default
  is 50). It checks each block's SHA-256 but keeps no checkpoint, no whole-image hash and
  no fsync. It pins urllib3<2, so install it with `pip install --no-deps dsnap==1.0.1`
  (it runs with urllib3 2); without it the table says it was skipped.

Two layouts of the same data: `packed` at the start of the volume (the rest is one hole,
which the whole-image hash can only reach after the last block: the worst case) and
`spread` evenly over it, as ext4 spreads its block groups. Runs alternate and the page
cache is synced between them.

Targets (issue 20): cloudir at least 0.95x the bare loop's MB/s and faster than dsnap,
and (issue 5) memory that does not grow with the volume size (give two sizes:
`--mib 256 --mib 1024`).

    .venv/bin/python bench/ebs_download.py [--mib 256 ...] [--layout both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script (as for bench/detect.py)
from common import Measured, cloudir_bin, machine_info, run_measured

REPO = Path(__file__).resolve().parent.parent
BLOCK = 512 * 1024
REGION = "us-east-1"
TARGET_VS_BARE = 0.95
NEIGHBOUR_CPU_SHARE = 0.2  # CPU-s per second others may use before the table warns
DSNAP_TIMEOUT = 1800.0  # dsnap waits on its queue forever when a worker thread dies
TOOLS = {
    "bare": "bare loop, no checks",
    "cloudir": "cloudir, all checks",
    "dsnap": "dsnap, block checks",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process, so its CPU is not the measured process's.

    moto lists a BlockSize of 512 whatever was written; AWS lists 524288. The server runs
    with AWS's value (`moto_aws_blocks.py`) rather than behind a rewriting proxy, whose
    relaying would take CPU from both contenders on a small machine.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_aws_blocks.py")), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # up to a minute: moto's imports are slow on a busy machine
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def ebs_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ebs", region_name=REGION, endpoint_url=url, config=Config(max_pool_connections=64)
    )


def make_snapshot(url: str, mib: int, layout: str = "packed") -> str:
    """Write `mib` MiB of random blocks into a snapshot through the EBS direct APIs.

    `packed` puts them at the start of the volume (the rest one hole, hashed last);
    `spread` lays them evenly over it, as a filesystem spreads its block groups.
    """
    ebs = ebs_client(url)
    volume_gib = max(1, -(-mib // 1024))
    snapshot = ebs.start_snapshot(VolumeSize=volume_gib)["SnapshotId"]
    blocks = mib * 1024 * 1024 // BLOCK
    stride = (volume_gib << 30) // BLOCK // blocks if layout == "spread" else 1

    def put(index: int) -> None:
        data = os.urandom(BLOCK)
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index * stride,
            BlockData=data,
            DataLength=BLOCK,
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(blocks)))
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=blocks)
    return snapshot


def run_bare(url: str, snapshot: str, workers: int, out: Path) -> None:
    """The ceiling: list, fetch in parallel, write at offset; no checks, no checkpoint."""
    ebs = ebs_client(url)
    listing = ebs.list_snapshot_blocks(SnapshotId=snapshot)
    size = listing["VolumeSize"] * 1024**3
    block_size = listing["BlockSize"]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)

    def fetch(block: dict[str, Any]) -> None:
        reply = ebs.get_snapshot_block(
            SnapshotId=snapshot, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
        )
        os.pwrite(fd, reply["BlockData"].read(), block["BlockIndex"] * block_size)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fetch, listing["Blocks"]))
    os.close(fd)


def run_dsnap(url: str, snapshot: str, workers: int, out_dir: Path) -> None:
    """dsnap's own download, at the same server and with the same number of threads.

    dsnap builds its client from a boto3 session without an endpoint, so the endpoint
    comes from AWS_ENDPOINT_URL (boto3 >= 1.28). Its threads give up on an error and its
    queue is then joined forever: the fetch runs in a thread waited on with a timeout, and
    a run that did not write every listed block fails.
    """
    os.environ["AWS_ENDPOINT_URL"] = url
    import boto3
    import dsnap.snapshot as dsnap

    dsnap.RUN_THREADS = workers  # read at client creation and in run(); 50 by default
    out_dir.mkdir(parents=True, exist_ok=True)
    snap = dsnap.LocalSnapshot(
        str(out_dir), snapshot, boto3_session=boto3.session.Session(region_name=REGION)
    )
    fetch = threading.Thread(target=snap.fetch, daemon=True)
    fetch.start()
    fetch.join(DSNAP_TIMEOUT)
    if fetch.is_alive() or snap.total_blocks == 0 or snap.blocks_written != snap.total_blocks:
        raise SystemExit(f"dsnap wrote {snap.blocks_written} of {snap.total_blocks} blocks")


def dsnap_installed() -> bool:
    return importlib.util.find_spec("dsnap") is not None


def run_cloudir(url: str, snapshot: str, workers: int, case_dir: Path) -> None:
    from cloudir.aws import Aws, AwsOptions
    from cloudir.capture.ebs_download import download_snapshot
    from cloudir.case import Case

    case = Case.create(case_dir, title="bench")
    aws = Aws(AwsOptions(region=REGION, endpoint_url=url))
    result = download_snapshot(case, aws, snapshot, f"ebs-{snapshot}", workers=workers)
    print(json.dumps({"sha256": result.sha256, "blocks": result.blocks_listed}))


def measure_all(
    argvs: dict[str, list[str]], repeat: int, server_pid: int
) -> dict[str, tuple[Measured, float | None]]:
    """Every contender `repeat` times, interleaved, each in a fresh process after `sync`:
    otherwise one run's unwritten pages are flushed during the next one's clock. Beside
    each run, the CPU the moto server spent answering it: on 2 cores the server needs one,
    so what a client spends beyond that comes out of the server's share."""
    runs: dict[str, list[tuple[Measured, float | None]]] = {name: [] for name in argvs}
    for n in range(repeat):
        for name, argv in argvs.items():
            target = Path(argv[argv.index("--target") + 1] + f"-{n}")
            os.sync()
            before = _process_cpu(server_pid)
            measured = run_measured([*argv[:-1], str(target)])
            after = _process_cpu(server_pid)
            if measured.returncode != 0:
                raise SystemExit(f"failed: {' '.join(argv)}\n{measured.stderr[-2000:]}")
            server = after - before if before is not None and after is not None else None
            runs[name].append((measured, server))
            subprocess.run(["rm", "-rf", str(target)], check=True)
    return {name: _median(measured) for name, measured in runs.items()}


def _median(runs: list[tuple[Measured, float | None]]) -> tuple[Measured, float | None]:
    best = sorted(runs, key=lambda run: run[0].seconds)[len(runs) // 2]
    best[0].runs_seconds = [m.seconds for m, _ in runs]
    return best


def _process_cpu(pid: int) -> float | None:
    """User + system seconds of one process so far, from /proc (None off Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_one(
    url: str,
    server_pid: int,
    mib: int,
    layout: str,
    workers: int,
    repeat: int,
    work: Path,
    dsnap: bool,
) -> dict[str, Any]:
    snapshot = make_snapshot(url, mib, layout)
    me = [sys.executable, __file__, "--url", url, "--snapshot", snapshot]
    me += ["--workers", str(workers)]
    argvs = {
        "bare": [*me, "--run", "bare", "--target", str(work / "bare.raw")],
        "cloudir": [*me, "--run", "cloudir", "--target", str(work / "case")],
    }
    if dsnap:
        argvs["dsnap"] = [*me, "--run", "dsnap", "--target", str(work / "dsnap")]
    measured = measure_all(argvs, repeat, server_pid)
    bare, cloudir = measured["bare"][0], measured["cloudir"][0]
    return {
        "mib": mib,
        "layout": layout,
        "ratio_vs_bare": bare.seconds / cloudir.seconds,
        "ratio_vs_dsnap": measured["dsnap"][0].seconds / cloudir.seconds if dsnap else None,
        "runs": {
            name: {
                "seconds": m.seconds,
                "runs_seconds": m.runs_seconds,
                "mb_per_s": mib * 1.048576 / m.seconds,
                "max_rss_kib": m.max_rss_kib,
                "cpu_seconds": m.cpu_seconds,
                "other_cpu_seconds": m.other_cpu_seconds,
                "server_cpu_seconds": server,
            }
            for name, (m, server) in measured.items()
        },
    }


def table(results: list[dict[str, Any]], workers: int, repeat: int, dsnap_note: str) -> str:
    lines = [
        f"EBS download, {workers} workers, local moto server listing AWS's 512 KiB blocks, "
        f"median of {repeat} interleaved runs:",
        "",
        "| snapshot | blocks laid out | tool | seconds | MB/s | x bare | CPU s | "
        "moto CPU s | peak RSS MiB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        bare = r["runs"]["bare"]["seconds"]
        for name, m in r["runs"].items():
            rss = f"{m['max_rss_kib'] / 1024:,.0f}" if m["max_rss_kib"] else "?"
            cpu = f"{m['cpu_seconds']:.2f}" if m["cpu_seconds"] is not None else "?"
            server = m.get("server_cpu_seconds")
            moto = f"{server:.2f}" if server is not None else "?"
            lines.append(
                f"| {r['mib']} MiB | {r['layout']} | {TOOLS[name]} | {m['seconds']:.2f} | "
                f"{m['mb_per_s']:,.1f} | {bare / m['seconds']:.2f} | {cpu} | {moto} | {rss} |"
            )
    lines.append("")
    for r in results:
        verdict = "met" if r["ratio_vs_bare"] >= TARGET_VS_BARE else "not met"
        line = (
            f"- {r['mib']} MiB {r['layout']}: cloudir at {r['ratio_vs_bare']:.2f}x the bare "
            f"loop's MB/s (target >= {TARGET_VS_BARE}x): {verdict}"
        )
        if r.get("ratio_vs_dsnap") is not None:
            faster = "met" if r["ratio_vs_dsnap"] > 1.0 else "not met"
            line += f"; {r['ratio_vs_dsnap']:.2f}x dsnap's (target > 1.0x): {faster}"
        lines.append(line)
    if dsnap_note:
        lines.append(f"- {dsnap_note}")
    busy = _busiest_neighbour(results)
    if busy > NEIGHBOUR_CPU_SHARE:
        lines.append(
            f"- warning: other processes (not the tool, not the server) used up to {busy:.2f} "
            "CPU-s per second during a run: these timings are not of a quiet machine"
        )
    sizes = sorted({r["mib"] for r in results})
    if len(sizes) > 1:
        peak = {
            mib: max(r["runs"]["cloudir"]["max_rss_kib"] or 0 for r in results if r["mib"] == mib)
            for mib in sizes
        }
        lo, hi = sizes[0], sizes[-1]
        lines.append(
            f"- cloudir peak RSS: {peak[lo] / 1024:,.0f} MiB at {lo} MiB, "
            f"{peak[hi] / 1024:,.0f} MiB at {hi} MiB ({hi // lo}x the data)"
        )
    return "\n".join(lines)


def _busiest_neighbour(results: list[dict[str, Any]]) -> float:
    """The largest CPU share the rest of the machine took during one run: the server's
    own CPU is taken out, since it is part of the measurement."""
    shares = [0.0]
    for r in results:
        for m in r["runs"].values():
            other, server = m["other_cpu_seconds"], m.get("server_cpu_seconds")
            if other is not None and m["seconds"] > 0:
                shares.append(max(0.0, other - (server or 0.0)) / m["seconds"])
    return max(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mib", type=int, action="append", help="snapshot size in MiB (repeatable; 256)"
    )
    parser.add_argument("--layout", choices=["packed", "spread", "both"], default="both")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "bench/results")
    parser.add_argument("--run", choices=list(TOOLS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run == "bare":
        return run_bare(args.url, args.snapshot, args.workers, args.target)
    if args.run == "cloudir":
        return run_cloudir(args.url, args.snapshot, args.workers, args.target)
    if args.run == "dsnap":
        return run_dsnap(args.url, args.snapshot, args.workers, args.target)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    sizes = args.mib or [256]
    layouts = ["packed", "spread"] if args.layout == "both" else [args.layout]
    dsnap = dsnap_installed()
    dsnap_note = (
        ""
        if dsnap
        else "dsnap: not installed, skipped (pip install --no-deps dsnap==1.0.1 to compare)"
    )
    server, url = start_moto()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="cloudir-ebs-bench-") as tmp:
            for mib in sizes:
                for layout in layouts:
                    results.append(
                        bench_one(
                            url,
                            server.pid,
                            mib,
                            layout,
                            args.workers,
                            args.repeat,
                            Path(tmp),
                            dsnap,
                        )
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)
    text = table(results, args.workers, args.repeat, dsnap_note)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "ebs_download-" + "-".join(f"{mib}m" for mib in sizes)
    (args.results / f"{stem}.md").write_text(text + "\n")
    document = {
        "workers": args.workers,
        "repeat": args.repeat,
        "machine": machine_info(cloudir_bin()),
        "results": results,
    }
    (args.results / f"{stem}.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
