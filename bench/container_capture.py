"""Benchmark: `cloudir capture container` beside `docker export` of the same container.

Why it exists: a container is captured while it runs (or while it is paused, with its
service down), so the capture's speed is how long the evidence, or the outage, lasts.
`docker export NAME > file` is what a responder would otherwise type: the engine's own
tar of the file system written to disk, nothing checked. cloudir streams the same export
into the case while hashing it (SHA-256, custody line), and also stores inspect, top,
diff, logs, the image and its history: the table shows what all of that costs.

One container from the offline test image (`cloudir-test/busybox:1`, made by
`scripts/dockerd.sh image`) runs `sleep` with no network; a generated tar of about
20,000 files (about 200 MB of random bytes in nested folders, seeded, so runs compare)
is put into it with `put_archive`: its writable layer then holds them, as an intruder's
or an application's files would be. Then, alternating, each in a fresh process timed by
`run_measured` (wall time, largest-process peak RSS), after `os.sync()`, outputs deleted
after each run, `--repeat` times (the median is reported):

- **docker export**: `docker export NAME > FILE` (the docker CLI; skipped, with a note,
  when it is not installed);
- **cloudir**: `cloudir capture container --case TMP NAME` (hashing is always on).

Four more rows are for reading the result, not compared: `docker export` followed by
`sync FILE` (cloudir fsyncs every file it stores before custody records it; a plain
`docker export` stops its clock with the tar still in the page cache), fs.tar's own work
in a bare Python process (`bench/container_core.py`: the export read through the SDK in
cloudir's chunk sizes, hashed, written with cloudir's write-behind flushes and fsynced,
no case and no other API call) and that process's start alone (its imports), and
cloudir's start alone (the interpreter and the imports the command needs), which every
run pays once whatever the container's size.

The engine is the one DOCKER_HOST names (`eval $(bash scripts/dockerd.sh env)`). The
engine's own CPU (it builds the tar) is in neither contender's RSS or CPU column: both
pay it alike. Both outputs are hashed after the timed run, outside the clock, to check
that cloudir's fs.tar is byte for byte the tar docker export wrote.

Target (issue 7): cloudir at least 0.8x docker export's MB/s, hashing on.

    .venv/bin/python bench/container_capture.py [--files 20000] [--mb 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script (as for bench/detect.py)
from common import Measured, machine_info, run_measured

REPO = Path(__file__).resolve().parent.parent
CLOUDIR = REPO / ".venv/bin/cloudir"
IMAGE = "cloudir-test/busybox:1"
FILES_PER_DIR = 100
DIRS_PER_PARENT = 10
TARGET_RATIO = 0.8
MB = 1_000_000
READ_CHUNK = 1 << 20


def _log(text: str) -> None:
    print(f"[container-bench] {text}", file=sys.stderr, flush=True)


# -- the data ------------------------------------------------------------------------------
def make_tar(path: Path, files: int, total_bytes: int, seed: int) -> int:
    """A tar of `files` random files under srv/data/, sizes spread around the mean (from
    a few hundred bytes to three times the mean, as real trees mix small and large), 100
    per folder and 10 folders per parent. Returns the bytes of file data written."""
    rng = random.Random(seed)
    mean = total_bytes // files
    sizes = [rng.randint(mean // 16, 2 * mean - mean // 16) for _ in range(files)]
    written = 0
    mtime = 1_722_384_000  # fixed, so the tar is the same for the same seed
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        made: set[str] = set()
        for i, size in enumerate(sizes):
            leaf_index = i // FILES_PER_DIR
            parent = f"srv/data/p{leaf_index // DIRS_PER_PARENT:03d}"
            leaf = f"{parent}/d{leaf_index % DIRS_PER_PARENT}"
            for folder in ("srv", "srv/data", parent, leaf):
                if folder not in made:
                    made.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tar.addfile(info)
            info = tarfile.TarInfo(f"{leaf}/f{i:06d}.bin")
            info.size, info.mode, info.mtime = size, 0o644, mtime
            tar.addfile(info, io.BytesIO(rng.randbytes(size)))
            written += size
    return written


def start_container(client: Any, name: str, data_tar: Path) -> Any:
    """The container under test: running (so top and pause have something to act on),
    no network, the generated files in its writable layer."""
    container = client.containers.run(
        IMAGE, ["sleep", "86400"], name=name, detach=True, network_mode="none"
    )
    with open(data_tar, "rb") as fh:
        if not container.put_archive("/", fh):
            raise SystemExit(f"put_archive into {name} failed")
    return container


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- the contenders ------------------------------------------------------------------------
def docker_export_argv(name: str, target: Path) -> list[str]:
    """`docker export NAME > FILE` as a responder types it; `exec`, so the measured
    process is the docker CLI itself and not a shell waiting for it."""
    return ["sh", "-c", 'exec docker export "$1" > "$2"', "sh", name, str(target)]


def docker_export_synced_argv(name: str, target: Path) -> list[str]:
    """The same, then the file flushed to disk: cloudir fsyncs what it stores before it
    records it, `docker export` leaves it in the page cache. Shown, not the baseline."""
    script = 'docker export "$1" > "$2" && sync "$2"'
    return ["sh", "-c", script, "sh", name, str(target)]


def cloudir_argv(name: str, target: Path) -> list[str]:
    return [str(CLOUDIR), "capture", "container", "--case", str(target), name, "--json"]


def capture_core_argv(name: str, target: Path) -> list[str]:
    """fs.tar's own work alone (bench/container_core.py): the export read through the SDK
    in cloudir's chunk sizes, hashed, written with its write-behind flushes and fsynced,
    in a bare Python process. Shown, not compared: what is left of the gap is cloudir's
    start and the metadata calls and custody around it."""
    return [
        str(REPO / ".venv/bin/python"),
        str(REPO / "bench/container_core.py"),
        name,
        str(target),
    ]


def core_start_argv(_target: Path) -> list[str]:
    """The bare process's start (bench/container_core.py's imports), to take from its time."""
    code = "import docker, cloudir.capture.containers, cloudir.write_behind"
    return [str(REPO / ".venv/bin/python"), "-c", code]


def cloudir_start_argv(_target: Path) -> list[str]:
    """What every cloudir run pays before it talks to the engine: the interpreter and the
    imports `capture container` needs. Shown, not compared."""
    code = "import cloudir.cli, cloudir.case, cloudir.capture.containers, rich.progress"
    return [str(REPO / ".venv/bin/python"), "-c", code]


def cloudir_fs_tar(case: Path) -> tuple[Path, str]:
    """The fs.tar the run stored and the SHA-256 custody recorded for it while writing."""
    for line in (case / "custody.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for record in entry.get("files", []):
            if record["path"].endswith("/fs.tar"):
                return case / record["path"], record["sha256"]
    raise SystemExit(f"no fs.tar in {case}/custody.jsonl")


def measure(
    contenders: dict[str, Any], repeat: int, work: Path
) -> tuple[dict[str, Measured], dict[str, dict[str, Any]]]:
    """Each contender `repeat` times, alternating, each in a fresh process after a sync
    (so one run's dirty pages are not flushed on the next one's clock); outputs deleted."""
    runs: dict[str, list[Measured]] = {name: [] for name in contenders}
    checks: dict[str, dict[str, Any]] = {name: {} for name in contenders}
    for n in range(repeat):
        for name, make_argv in contenders.items():
            target = work / f"{name.replace(' ', '-')}-{n}"
            os.sync()
            _log(f"run {n + 1}/{repeat}: {name}")
            measured = run_measured(make_argv(target))
            if measured.returncode != 0:
                raise SystemExit(f"{name} failed:\n{measured.stderr[-2000:]}")
            runs[name].append(measured)
            if name == "cloudir":
                tar, recorded = cloudir_fs_tar(target)
                checks[name] = {"bytes": tar.stat().st_size, "sha256": sha256_of(tar)}
                checks[name]["custody_sha256_matches"] = recorded == checks[name]["sha256"]
            elif target.exists():
                checks[name] = {"bytes": target.stat().st_size, "sha256": sha256_of(target)}
            subprocess.run(["rm", "-rf", str(target)], check=True)
    return {name: _median(r) for name, r in runs.items()}, checks


def _median(runs: list[Measured]) -> Measured:
    best = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    best.runs_seconds = [m.seconds for m in runs]
    return best


# -- reporting -----------------------------------------------------------------------------
def table(document: dict[str, Any]) -> str:
    runs = document["runs"]
    size = document["export_bytes"]
    lines = [
        f"Container capture: {document['files']:,} files, {document['data_bytes'] / MB:,.0f} MB "
        f"of random data put into a running `{IMAGE}` container (export tar "
        f"{size / MB:,.1f} MB), engine {document['engine']['Version']} "
        f"(storage driver {document['storage_driver']}), median of {document['repeat']} "
        "alternating runs, each a fresh process. MB/s is the export tar's size over the "
        "whole process's wall time; cloudir's time also covers inspect, top, diff, logs, "
        "image and history. Peak RSS is the client's; the engine's work is in neither.",
        "",
        "| tool | seconds | MB/s | x docker export | peak RSS MiB | runs s |",
        "|---|---:|---:|---:|---:|---|",
    ]
    labels = {
        "docker export": "`docker export NAME > FILE`",
        "cloudir": "`cloudir capture container` (SHA-256 on)",
        "docker export + sync": "for reference: `docker export NAME > FILE && sync FILE`",
        "capture core": "for reference: fs.tar's own work in a bare process (SDK read, "
        "SHA-256, write-behind, fsync)",
        "core start": "for reference: the bare process's start alone (its imports)",
        "cloudir start": "for reference: cloudir's start alone (interpreter + imports)",
    }
    base = runs.get("docker export", {}).get("seconds")
    for name, m in runs.items():
        rss = f"{m['max_rss_kib'] / 1024:,.0f}" if m["max_rss_kib"] else "?"
        ratio = f"{base / m['seconds']:.2f}" if base else "n/a"
        rate = f"{size / MB / m['seconds']:,.1f}"
        if name in ("cloudir start", "core start"):
            ratio = rate = "-"
        each = ", ".join(f"{s:.2f}" for s in m["runs_seconds"])
        lines.append(f"| {labels[name]} | {m['seconds']:.2f} | {rate} | {ratio} | {rss} | {each} |")
    lines.append("")
    if document.get("note"):
        lines.append(f"- {document['note']}")
    if base:
        ratio = base / runs["cloudir"]["seconds"]
        verdict = "met" if ratio >= TARGET_RATIO else "not met"
        lines.append(
            f"- cloudir at {ratio:.2f}x docker export's MB/s with hashing on "
            f"(target >= {TARGET_RATIO}x): {verdict}"
        )
    checks = document["checks"]
    if base and "capture core" in runs:
        core = runs["capture core"]["seconds"]
        started = runs.get("core start", {}).get("seconds", 0.0)
        same = checks["capture core"]["sha256"] == checks["cloudir"]["sha256"]
        lines.append(
            f"- fs.tar's own work alone (read, hash, write, fsync): {core:.2f} s, "
            f"{base / core:.2f}x docker export's MB/s; less its {started:.2f} s start, "
            f"{core - started:.2f} s, {base / (core - started):.2f}x"
            + ("" if same else " (ITS TAR DIFFERS FROM CLOUDIR'S)")
        )
    if "docker export" in checks:
        same = checks["cloudir"]["sha256"] == checks["docker export"]["sha256"]
        lines.append(
            "- cloudir's fs.tar is "
            + ("byte for byte" if same else "NOT byte for byte")
            + " the tar docker export wrote; its custody SHA-256 "
            + ("matches" if checks["cloudir"]["custody_sha256_matches"] else "DOES NOT match")
            + " the file"
        )
    if base and "cloudir start" in runs:
        start = runs["cloudir start"]["seconds"]
        rest = runs["cloudir"]["seconds"] - start
        lines.append(
            f"- without its {start:.2f} s start, cloudir's capture took {rest:.2f} s: "
            f"{base / rest:.2f}x docker export's MB/s (the start is paid once per run, so "
            "it weighs less on bigger containers)"
        )
    other = max((m["other_cpu_seconds"] or 0) for m in runs.values())
    lines.append(
        f"- at most {other:.1f} CPU s used by other processes (the engine included) per run"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mb", type=int, default=200, help="total MB (10^6 bytes) of files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, default=REPO / "bench/results")
    parser.add_argument("--work", type=Path, help="where outputs go (a temp dir)")
    args = parser.parse_args()

    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{IMAGE} is missing: run `bash scripts/dockerd.sh image`") from None
    except Exception as exc:
        raise SystemExit(
            f"no Docker engine at DOCKER_HOST={os.environ.get('DOCKER_HOST', '(unset)')}: "
            f"{exc}; run `bash scripts/dockerd.sh start` and "
            "`eval $(bash scripts/dockerd.sh env)`"
        ) from None
    info = client.info()
    name = f"cloudir-bench-{uuid.uuid4().hex[:8]}"
    contenders: dict[str, Any] = {}
    note = ""
    if shutil.which("docker"):
        contenders["docker export"] = lambda target: docker_export_argv(name, target)
    else:
        note = "docker export not measured: the docker CLI is not on PATH"
    contenders["cloudir"] = lambda target: cloudir_argv(name, target)
    if "docker export" in contenders:
        contenders["docker export + sync"] = lambda t: docker_export_synced_argv(name, t)
    contenders["capture core"] = lambda target: capture_core_argv(name, target)
    contenders["core start"] = core_start_argv
    contenders["cloudir start"] = cloudir_start_argv

    container = None
    with tempfile.TemporaryDirectory(prefix="cloudir-container-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        try:
            data_tar = work / "data.tar"
            _log(f"generating {args.files:,} files, {args.mb} MB")
            data_bytes = make_tar(data_tar, args.files, args.mb * MB, args.seed)
            started = time.perf_counter()
            container = start_container(client, name, data_tar)
            _log(f"put into {name} in {time.perf_counter() - started:.1f} s")
            data_tar.unlink()
            measured, checks = measure(contenders, args.repeat, work)
        finally:
            if container is not None:
                container.remove(force=True)
                _log(f"removed {name}")
    document = {
        "files": args.files,
        "data_bytes": data_bytes,
        "export_bytes": checks["cloudir"]["bytes"],
        "repeat": args.repeat,
        "seed": args.seed,
        "engine": client.version(),
        "storage_driver": info.get("Driver"),
        "note": note,
        "checks": checks,
        "runs": {
            n: {
                "seconds": m.seconds,
                "runs_seconds": m.runs_seconds,
                "mb_per_s": (
                    None
                    if n in ("cloudir start", "core start")
                    else checks["cloudir"]["bytes"] / MB / m.seconds
                ),
                "max_rss_kib": m.max_rss_kib,
                "cpu_seconds": m.cpu_seconds,
                "other_cpu_seconds": m.other_cpu_seconds,
            }
            for n, m in measured.items()
        },
        "machine": machine_info(str(CLOUDIR)),
    }
    client.close()
    text = table(document)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "container_capture.md").write_text(text + "\n")
    (args.results / "container_capture.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
