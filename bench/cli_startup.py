"""How long `cloudir --help` and the commands' `--help` take, beside the interpreter's start.

A responder types `cloudir --help` and `cloudir capture cloudtrail --help` in the middle of
an incident; scripts call `cloudir --version`. None of these needs boto3, pyarrow or duckdb,
so each should cost little more than starting Python (issue 20's target: `cloudir --help`
under 0.2 s). Every command runs in a fresh process, the commands interleaved run after
run so a busy moment of the machine hits them alike, and the median is reported with the
CPU seconds beside it.

    .venv/bin/python bench/cli_startup.py                # 9 runs of each
    .venv/bin/python bench/cli_startup.py --repeat 21

Floors, in the same run: `python -c pass` (the interpreter alone, site-packages and the
venv's .pth files included) and `python -c "import typer"` (the CLI library cloudir's
commands are built with). Results go to bench/results/cli_startup.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from common import cloudir_bin, log, machine_info, run_measured, write_results

TARGET_SECONDS = 0.2
ROOT_HELP = "cloudir --help"
FLOORS = (
    ("python -c pass", ["-c", "pass"]),
    ("python -c 'import typer'", ["-c", "import typer"]),
)
COMMANDS = (
    ("cloudir --version", ["--version"]),
    (ROOT_HELP, ["--help"]),
    ("cloudir capture --help", ["capture", "--help"]),
    ("cloudir capture cloudtrail --help", ["capture", "cloudtrail", "--help"]),
    ("cloudir timeline --help", ["timeline", "--help"]),
    ("cloudir detect --help", ["detect", "--help"]),
    ("cloudir report --help", ["report", "--help"]),
)


def measure(repeat: int) -> list[dict[str, Any]]:
    cloudir = cloudir_bin()
    runs: list[tuple[str, list[str], str]] = [
        *((name, [sys.executable, *argv], "floor") for name, argv in FLOORS),
        *((name, [cloudir, *argv], "cloudir") for name, argv in COMMANDS),
    ]
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for n in range(repeat):
        log(f"run {n + 1} of {repeat}")
        for name, argv, _ in runs:
            got = run_measured(argv)
            if got.returncode != 0:
                raise SystemExit(f"{name} exited {got.returncode}: {got.stderr.strip()[:200]}")
            seconds[name].append(got.seconds)
            cpu[name].append(got.cpu_seconds or 0.0)
    floor = statistics.median(seconds[FLOORS[0][0]])
    return [
        {
            "command": name,
            "kind": kind,
            "seconds": round(statistics.median(seconds[name]), 4),
            "cpu_seconds": round(statistics.median(cpu[name]), 4),
            "x_interpreter": round(statistics.median(seconds[name]) / floor, 2),
            "runs_seconds": [round(s, 4) for s in seconds[name]],
        }
        for name, _, kind in runs
    ]


def markdown(rows: list[dict[str, Any]], repeat: int, machine: dict[str, Any]) -> str:
    lines = [
        f"CLI start-up, each command in a fresh process, median of {repeat} interleaved runs, "
        f"{machine['nproc']} CPUs:",
        "",
        "| command | seconds | CPU s | x `python -c pass` |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['command']} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} "
        f"| {r['x_interpreter']:.2f} |"
        for r in rows
    ]
    root = next(r for r in rows if r["command"] == ROOT_HELP)
    met = "met" if root["seconds"] < TARGET_SECONDS else "**not met**"
    lines += [
        "",
        f"- `{ROOT_HELP}`: {root['seconds']:.3f} s (target < {TARGET_SECONDS} s): {met}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs of each command")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).parent / "results" / "cli_startup",
        help="where the .json and .md go (stem)",
    )
    args = parser.parse_args()
    machine = machine_info(cloudir_bin())
    rows = measure(args.repeat)
    text = markdown(rows, args.repeat, machine)
    print(text)
    document = {"benchmark": "cli_startup", "machine": machine, "repeat": args.repeat,
                "target_seconds": TARGET_SECONDS, "rows": rows}  # fmt: skip
    write_results(args.results, document, text)


if __name__ == "__main__":
    main()
