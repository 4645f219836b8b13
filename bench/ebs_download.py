"""Benchmark: cloudir's EBS snapshot download beside a bare GetSnapshotBlock loop.

One local moto server holds a snapshot written through the EBS direct APIs (random data,
so nothing compresses or dedups). In the same run, each in a fresh process and with the
same worker count:

- **bare loop**: threaded `get_snapshot_block` calls that write each block at its offset
  and check nothing: the ceiling the API and the server allow;
- **cloudir**: `download_snapshot`, with every check on (per-block SHA-256 against the
  API's checksum, sparse image, checkpoints, streamed whole-image SHA-256, custody).

Two layouts of the same data: `packed` at the start of the volume (the rest is one hole,
which the whole-image hash can only reach after the last block: the worst case) and
`spread` evenly over it, as ext4 spreads its block groups. Runs alternate and the page
cache is synced between them.

Target (issue 5): cloudir at least 0.9x the bare loop's MB/s, and memory that does not
grow with the volume size (give two sizes: `--mib 256 --mib 1024`).

    .venv/bin/python bench/ebs_download.py [--mib 256 ...] [--layout both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script (as for bench/detect.py)
from common import Measured, machine_info, run_measured

REPO = Path(__file__).resolve().parent.parent
BLOCK = 512 * 1024
REGION = "us-east-1"


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
    for _ in range(100):
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


def run_cloudir(url: str, snapshot: str, workers: int, case_dir: Path) -> None:
    from cloudir.aws import Aws, AwsOptions
    from cloudir.capture.ebs_download import download_snapshot
    from cloudir.case import Case

    case = Case.create(case_dir, title="bench")
    aws = Aws(AwsOptions(region=REGION, endpoint_url=url))
    result = download_snapshot(case, aws, snapshot, f"ebs-{snapshot}", workers=workers)
    print(json.dumps({"sha256": result.sha256, "blocks": result.blocks_listed}))


def measure_pair(bare: list[str], cloudir: list[str], repeat: int) -> tuple[Measured, Measured]:
    """Both contenders `repeat` times, interleaved, each in a fresh process after `sync`:
    otherwise one run's unwritten pages are flushed during the next one's clock."""
    runs: dict[str, list[Measured]] = {"bare": [], "cloudir": []}
    for n in range(repeat):
        for name, argv in (("bare", bare), ("cloudir", cloudir)):
            target = Path(argv[argv.index("--target") + 1] + f"-{n}")
            os.sync()
            measured = run_measured([*argv[:-1], str(target)])
            if measured.returncode != 0:
                raise SystemExit(f"failed: {' '.join(argv)}\n{measured.stderr[-2000:]}")
            runs[name].append(measured)
            subprocess.run(["rm", "-rf", str(target)], check=True)
    return _median(runs["bare"]), _median(runs["cloudir"])


def _median(runs: list[Measured]) -> Measured:
    best = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    best.runs_seconds = [m.seconds for m in runs]
    return best


def bench_one(
    url: str, mib: int, layout: str, workers: int, repeat: int, work: Path
) -> dict[str, Any]:
    snapshot = make_snapshot(url, mib, layout)
    me = [sys.executable, __file__, "--url", url, "--snapshot", snapshot]
    me += ["--workers", str(workers)]
    bare, cloudir = measure_pair(
        [*me, "--run", "bare", "--target", str(work / "bare.raw")],
        [*me, "--run", "cloudir", "--target", str(work / "case")],
        repeat,
    )
    return {
        "mib": mib,
        "layout": layout,
        "ratio_vs_bare": bare.seconds / cloudir.seconds,
        "runs": {
            name: {
                "seconds": m.seconds,
                "runs_seconds": m.runs_seconds,
                "mb_per_s": mib * 1.048576 / m.seconds,
                "max_rss_kib": m.max_rss_kib,
                "cpu_seconds": m.cpu_seconds,
                "other_cpu_seconds": m.other_cpu_seconds,
            }
            for name, m in (("bare", bare), ("cloudir", cloudir))
        },
    }


def table(results: list[dict[str, Any]], workers: int, repeat: int) -> str:
    lines = [
        f"EBS download, {workers} workers, local moto server listing AWS's 512 KiB blocks, "
        f"median of {repeat} interleaved runs:",
        "",
        "| snapshot | blocks laid out | tool | seconds | MB/s | x bare | peak RSS MiB |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        bare = r["runs"]["bare"]["seconds"]
        for name, label in (("bare", "bare loop, no checks"), ("cloudir", "cloudir, all checks")):
            m = r["runs"][name]
            rss = f"{m['max_rss_kib'] / 1024:,.0f}" if m["max_rss_kib"] else "?"
            lines.append(
                f"| {r['mib']} MiB | {r['layout']} | {label} | {m['seconds']:.2f} | "
                f"{m['mb_per_s']:,.1f} | {bare / m['seconds']:.2f} | {rss} |"
            )
    lines.append("")
    for r in results:
        verdict = "met" if r["ratio_vs_bare"] >= 0.9 else "not met"
        lines.append(
            f"- {r['mib']} MiB {r['layout']}: cloudir at {r['ratio_vs_bare']:.2f}x the bare "
            f"loop's MB/s (target >= 0.9x): {verdict}"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mib", type=int, action="append", help="snapshot size in MiB (repeatable; 256)"
    )
    parser.add_argument("--layout", choices=["packed", "spread", "both"], default="both")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "bench/results")
    parser.add_argument("--run", choices=["bare", "cloudir"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run == "bare":
        return run_bare(args.url, args.snapshot, args.workers, args.target)
    if args.run == "cloudir":
        return run_cloudir(args.url, args.snapshot, args.workers, args.target)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    sizes = args.mib or [256]
    layouts = ["packed", "spread"] if args.layout == "both" else [args.layout]
    server, url = start_moto()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="cloudir-ebs-bench-") as tmp:
            for mib in sizes:
                for layout in layouts:
                    results.append(
                        bench_one(url, mib, layout, args.workers, args.repeat, Path(tmp))
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)
    text = table(results, args.workers, args.repeat)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "ebs_download-" + "-".join(f"{mib}m" for mib in sizes)
    (args.results / f"{stem}.md").write_text(text + "\n")
    document = {
        "workers": args.workers,
        "repeat": args.repeat,
        "machine": machine_info(str(REPO / ".venv/bin/cloudir")),
        "results": results,
    }
    (args.results / f"{stem}.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
