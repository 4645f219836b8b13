"""Benchmark: cloudir's EBS snapshot download beside a bare GetSnapshotBlock loop.

One local moto server holds a snapshot written through the EBS direct APIs (random data,
so nothing compresses or dedups). In the same run, each in a fresh process and with the
same worker count:

- **bare loop**: threaded `get_snapshot_block` calls that write each block at its offset
  and check nothing: the ceiling the API and the server allow;
- **cloudir**: `download_snapshot`, with every check on (per-block SHA-256 against the
  API's checksum, sparse image, checkpoints, streamed whole-image SHA-256, custody).

Target (issue 5): cloudir at least 0.9x the bare loop's MB/s, and memory that does not
grow with the volume size (compare peak RSS at two sizes with `--mib`).

    .venv/bin/python bench/ebs_download.py [--mib 256] [--workers 32] [--repeat 3]
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
from ingest_cloudtrail import Measured, machine_info, run_measured

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parent.parent
BLOCK = 512 * 1024
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process, so its CPU is not the measured process's."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
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


def make_snapshot(url: str, mib: int) -> str:
    """Write `mib` MiB of random blocks into a snapshot through the EBS direct APIs."""
    ebs = ebs_client(url)
    volume_gib = max(1, -(-mib // 1024))
    snapshot = ebs.start_snapshot(VolumeSize=volume_gib)["SnapshotId"]
    blocks = mib * 1024 * 1024 // BLOCK

    def put(index: int) -> None:
        data = os.urandom(BLOCK)
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index,
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
    from cloudir.capture.aws import Aws, AwsOptions
    from cloudir.capture.ebs_download import download_snapshot
    from cloudir.case import Case

    case = Case.create(case_dir, title="bench")
    aws = Aws(AwsOptions(region=REGION, endpoint_url=url))
    result = download_snapshot(case, aws, snapshot, f"ebs-{snapshot}", workers=workers)
    print(json.dumps({"sha256": result.sha256, "blocks": result.blocks_listed}))


def measure(argvs: list[list[str]]) -> Measured:
    """Each argv once, in a fresh process; the median run, with all runs' times."""
    runs = [run_measured(argv) for argv in argvs]
    for argv, m in zip(argvs, runs, strict=True):
        if m.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}\n{m.stderr[-2000:]}")
    best = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    best.runs_seconds = [m.seconds for m in runs]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="snapshot size in MiB")
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
    server, moto_url = start_moto()
    # moto lists BlockSize 512 whatever was written; AWS lists 524288. A pass-through proxy
    # (the test suite's) corrects the listing; both contenders go through it alike.
    proxy = FaultProxy(moto_url)
    proxy.block_size = BLOCK
    proxy.__enter__()
    url = proxy.url
    try:
        snapshot = make_snapshot(moto_url, args.mib)
        with tempfile.TemporaryDirectory(prefix="cloudir-ebs-bench-") as tmp:
            work = Path(tmp)
            me = [sys.executable, __file__, "--url", url, "--snapshot", snapshot]
            me += ["--workers", str(args.workers)]
            bare = measure(
                [[*me, "--run", "bare", "--target", str(work / "bare.raw")]] * args.repeat
            )
            cloudir = measure(
                [[*me, "--run", "cloudir", "--target", str(work / f"case-{n}")]
                 for n in range(args.repeat)]
            )  # fmt: skip
    finally:
        proxy.__exit__(None, None, None)
        server.terminate()
        server.wait(timeout=10)
    mib = args.mib
    rows = [
        ("bare GetSnapshotBlock loop, no checks", bare),
        ("cloudir download_snapshot, all checks", cloudir),
    ]
    ratio = (mib / cloudir.seconds) / (mib / bare.seconds)
    lines = [
        f"EBS download, {mib} MiB snapshot, {args.workers} workers, local moto server "
        "(behind a pass-through proxy that lists AWS's 512 KiB block size), "
        f"median of {args.repeat}:",
        "",
        "| tool | seconds | MB/s | x bare | peak RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in rows:
        rss = f"{m.max_rss_kib / 1024:,.0f}" if m.max_rss_kib else "?"
        lines.append(
            f"| {name} | {m.seconds:.2f} | {mib * 1.048576 / m.seconds:,.1f} | "
            f"{bare.seconds / m.seconds:.2f} | {rss} |"
        )
    verdict = "met" if ratio >= 0.9 else "not met"
    lines += ["", f"- cloudir at {ratio:.2f}x the bare loop's MB/s (target >= 0.9x): {verdict}"]
    text = "\n".join(lines)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"ebs_download-{mib}m.md").write_text(text + "\n")
    document = {
        "mib": mib,
        "workers": args.workers,
        "repeat": args.repeat,
        "machine": machine_info(str(REPO / ".venv/bin/cloudir")),
        "runs": {
            name: {
                "seconds": m.seconds,
                "runs_seconds": m.runs_seconds,
                "mb_per_s": mib * 1.048576 / m.seconds,
                "max_rss_kib": m.max_rss_kib,
                "cpu_seconds": m.cpu_seconds,
                "other_cpu_seconds": m.other_cpu_seconds,
            }
            for name, m in rows
        },
        "ratio_vs_bare": ratio,
    }
    (args.results / f"ebs_download-{mib}m.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
