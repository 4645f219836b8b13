"""Detection quality: recall and false-positive rate per behaviour on a labelled set.

The evaluation set (tests/data/detection_eval/, described in its README.md) is the Stratus
Red Team detonations of the corpus, labelled per technique in stratus-labels.yml, plus
intrusions and benign look-alikes written for it (bench/make_detection_eval.py), each
record labelled with a behaviour and whether it is malicious. This script builds one case
from all of it the way a user would (`cloudir capture files`, `cloudir timeline`, `cloudir
detect`), then asks of every labelled event: is it in ANY finding? Attack events that are
give the recall; benign look-alikes that are give the false-positive rate.

The baseline runs in the same run over the same timeline: the rule set as shipped at the
start of issue 16 (git revision 641d500's cloudir/analyze/rules, extracted to a temporary
folder and passed with `--no-builtin --rules`), so both columns come from the same engine
and data and differ only in the rules.

An event counts as flagged when it is in a finding of level low or above (`--min-level`):
Sigma's level `informational` means "enrichment, no case or alerting", and cloudir's
informational rules (a single secret read, one Session Manager session, the owner's root
console session signed in with MFA) are the context a story shows around the alerts. The
table says how many more events are in informational findings only.

Targets (issue 16): at least 90% of attack events flagged, at most 10% of benign
look-alikes flagged. A missed target is a result, not a failure of the run; the bench
fails only when a command does not complete.

Run: python bench/detection_quality.py   (or make bench-detection-quality)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import log

REPO = Path(__file__).resolve().parent.parent
EVAL_DIR = REPO / "tests" / "data" / "detection_eval"
STRATUS_DIR = (
    REPO / "tests" / "data" / "corpus" / "cloudtrail" / "stratus-red-team" / "detonation-logs"
)
BASELINE_REVISION = "641d500"  # main when issue 16 started: the rules as shipped then
RULES_PATH = "cloudir/analyze/rules"
TARGET_RECALL = 0.90
TARGET_FP_RATE = 0.10
LEVELS = ("informational", "low", "medium", "high", "critical")
LABEL_KEY = "evalLabel"


# --------------------------------------------------------------------------------------
# The evaluation set
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    """One labelled CloudTrail event: where it comes from and what it is."""

    event_id: str
    event_name: str
    behaviour: str
    malicious: bool
    origin: str  # "stratus:<technique>" or "<scenario file stem>"


@dataclass
class EvalSet:
    events: list[Labelled]
    tooling: list[Labelled]  # Stratus helper calls: counted on neither side
    files: list[tuple[Path, list[dict[str, Any]]]]  # (source, records without labels)
    behaviours: dict[str, dict[str, Any]]


def load_behaviours(root: Path = EVAL_DIR) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((root / "behaviours.yml").read_text())
    return dict(data["behaviours"])


def stratus_records(path: Path) -> list[dict[str, Any]]:
    """A detonation file: a JSON list of records (or a CloudTrail {"Records": [...]})."""
    data = json.loads(path.read_text())
    return list(data["Records"] if isinstance(data, dict) else data)


def load_eval_set(root: Path = EVAL_DIR, stratus: Path = STRATUS_DIR) -> EvalSet:
    """Read and check the set; a label that points nowhere or an unlabelled event is an
    error here, so the bench never measures a set that silently lost events."""
    behaviours = load_behaviours(root)
    labels = yaml.safe_load((root / "stratus-labels.yml").read_text())["techniques"]
    events: list[Labelled] = []
    tooling: list[Labelled] = []
    files: list[tuple[Path, list[dict[str, Any]]]] = []
    problems: list[str] = []
    detonations = sorted(stratus.glob("*.json"))
    if {p.stem for p in detonations} != set(labels):
        problems.append(
            "stratus-labels.yml and the detonation files differ: "
            f"{sorted({p.stem for p in detonations} ^ set(labels))}"
        )
    for path in detonations:
        label = labels.get(path.stem)
        if label is None:
            continue
        records = stratus_records(path)
        files.append((path, records))
        attack, helper = set(label["attack"]), set(label.get("tooling") or {})
        names = {r["eventName"] for r in records}
        for name in sorted((attack | helper) - names):
            problems.append(f"{path.stem}: label {name!r} matches no event")
        for name in sorted(names - attack - helper):
            problems.append(f"{path.stem}: event {name!r} has no label")
        for name in sorted(attack & helper):
            problems.append(f"{path.stem}: {name!r} is both attack and tooling")
        if label["behaviour"] not in behaviours:
            problems.append(f"{path.stem}: unknown behaviour {label['behaviour']!r}")
        for record in records:
            item = Labelled(
                record["eventID"],
                record["eventName"],
                label["behaviour"],
                True,
                f"stratus:{path.stem}",
            )
            (events if record["eventName"] in attack else tooling).append(item)
    for path in sorted(root.glob("*/*.json")):
        document = json.loads(path.read_text())
        clean = []
        for n, record in enumerate(document["Records"]):
            label = record.get(LABEL_KEY)
            if not isinstance(label, dict) or label.get("behaviour") not in behaviours:
                problems.append(f"{path.name} record {n}: missing or unknown {LABEL_KEY}")
                continue
            if label.get("malicious") is not behaviours[label["behaviour"]]["malicious"]:
                problems.append(f"{path.name} record {n}: malicious disagrees with behaviour")
            events.append(
                Labelled(
                    record["eventID"],
                    record["eventName"],
                    label["behaviour"],
                    bool(label["malicious"]),
                    path.stem,
                )
            )
            clean.append({k: v for k, v in record.items() if k != LABEL_KEY})
        files.append((path, clean))
    ids = Counter(e.event_id for e in [*events, *tooling])
    problems.extend(f"eventID {i} appears {c} times" for i, c in ids.items() if c > 1)
    if problems:
        raise ValueError("the evaluation set is inconsistent:\n  " + "\n  ".join(problems))
    return EvalSet(events, tooling, files, behaviours)


def write_capture_input(eval_set: EvalSet, folder: Path) -> None:
    """The set as CloudTrail files without labels: what cloudir is given."""
    folder.mkdir(parents=True)
    for path, records in eval_set.files:
        name = f"{path.parent.name}-{path.stem}.json"
        (folder / name).write_text(json.dumps({"Records": records}))


# --------------------------------------------------------------------------------------
# Running cloudir
# --------------------------------------------------------------------------------------


def cloudir(*args: str, ok: Iterable[int] = (0,)) -> dict[str, Any]:
    """Run this repository's cloudir (not whatever is installed) and read its --json."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "cloudir", *args, "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode not in set(ok):
        raise RuntimeError(
            f"`cloudir {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return dict(json.loads(proc.stdout))


def extract_rules(revision: str, dest: Path) -> Path:
    """The rules folder at `revision`, from git (the baseline rule set)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, RULES_PATH],
        capture_output=True,
    )
    if archive.returncode != 0:
        raise RuntimeError(
            f"git archive {revision} {RULES_PATH} failed: {archive.stderr.decode().strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / RULES_PATH


@dataclass
class RuleSetRun:
    name: str
    seconds: float
    rules_loaded: int
    rules_skipped: int
    findings: int
    flagged: dict[str, list[str]]  # event id -> titles of the findings holding it
    error: str | None = None
    context: set[str] = field(default_factory=set)  # ids only in findings below the floor


def run_detect(case: Path, name: str, extra: Sequence[str], min_level: str) -> RuleSetRun:
    started = time.perf_counter()
    try:
        # detect exits 1 when a finding reaches --fail-on; that is a result here
        result = cloudir("detect", "--case", str(case), "--fail-on", "critical", *extra, ok=(0, 1))
    except (RuntimeError, json.JSONDecodeError) as exc:
        return RuleSetRun(name, time.perf_counter() - started, 0, 0, 0, {}, str(exc))
    seconds = time.perf_counter() - started
    floor = LEVELS.index(min_level)
    flagged: dict[str, list[str]] = defaultdict(list)
    context: set[str] = set()
    for finding in result["findings"]:
        if LEVELS.index(finding["level"]) < floor:
            context.update(finding["event_ids"])
            continue
        for event_id in finding["event_ids"]:
            flagged[event_id].append(finding["title"])
    rules = result.get("rules", {})
    return RuleSetRun(
        name,
        round(seconds, 2),
        int(rules.get("loaded", 0)),
        len(rules.get("skipped", [])),
        len(result["findings"]),
        dict(flagged),
        context=context - set(flagged),
    )


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


@dataclass
class Score:
    events: int = 0
    flagged: dict[str, int] = field(default_factory=dict)  # rule set -> flagged events

    def rate(self, run: str) -> float | None:
        return None if not self.events else self.flagged.get(run, 0) / self.events


def score(
    eval_set: EvalSet, runs: list[RuleSetRun]
) -> tuple[dict[str, Score], dict[str, Score], dict[str, Any]]:
    """Per behaviour, per slice (overall and by origin), and the misses and false alarms."""
    by_behaviour: dict[str, Score] = {b: Score() for b in eval_set.behaviours}
    slices: dict[str, Score] = defaultdict(Score)
    details: dict[str, Any] = {}
    for event in eval_set.events:
        keys = [
            "attack events (all)" if event.malicious else "benign look-alikes (all)",
            (
                "attack events: Stratus detonations"
                if event.origin.startswith("stratus:")
                else ("attack events: written intrusions" if event.malicious else "")
            ),
        ]
        targets = [by_behaviour[event.behaviour], *(slices[k] for k in keys if k)]
        for target in targets:
            target.events += 1
        for run in runs:
            if run.error is None and event.event_id in run.flagged:
                for target in targets:
                    target.flagged[run.name] = target.flagged.get(run.name, 0) + 1
    for run in runs:
        missed = [
            f"{e.origin}: {e.event_name} ({e.behaviour})"
            for e in eval_set.events
            if e.malicious and e.event_id not in run.flagged
        ]
        false_alarms = [
            f"{e.origin}: {e.event_name} ({e.behaviour}) <- "
            + "; ".join(sorted(set(run.flagged[e.event_id])))
            for e in eval_set.events
            if not e.malicious and e.event_id in run.flagged
        ]
        details[run.name] = {
            "context_only": {
                kind: sum(
                    1
                    for e in eval_set.events
                    if e.malicious == malicious and e.event_id in run.context
                )
                for kind, malicious in (("attack", True), ("benign", False))
            },
            "missed_attack_events": sorted(Counter(missed).items()),
            "flagged_benign_events": sorted(Counter(false_alarms).items()),
        }
    return {b: s for b, s in by_behaviour.items() if s.events}, dict(slices), details


def _precise_pct(rate: float | None) -> str:
    """One decimal, so 89.6% is not shown as a 90% that fails a 90% goal."""
    return "n/a" if rate is None else f"{rate:.1%}"


def targets(slices: dict[str, Score], run: str) -> list[dict[str, str]]:
    recall = slices["attack events (all)"].rate(run)
    fp = slices["benign look-alikes (all)"].rate(run)
    return [
        {
            "target": "attack events flagged (recall)",
            "goal": f">= {TARGET_RECALL:.0%}",
            "measured": _precise_pct(recall),
            "status": "pass" if recall is not None and recall >= TARGET_RECALL else "FAIL",
        },
        {
            "target": "benign look-alikes flagged (false-positive rate)",
            "goal": f"<= {TARGET_FP_RATE:.0%}",
            "measured": _precise_pct(fp),
            "status": "pass" if fp is not None and fp <= TARGET_FP_RATE else "FAIL",
        },
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def markdown(
    by_behaviour: dict[str, Score],
    slices: dict[str, Score],
    runs: list[RuleSetRun],
    goals: list[dict[str, str]],
    behaviours: dict[str, dict[str, Any]],
    details: dict[str, Any],
    min_level: str,
) -> str:
    names = [r.name for r in runs]
    head = "| behaviour | kind | events | " + " | ".join(f"flagged: {n}" for n in names) + " |"
    lines = [
        "Detection quality on the labelled evaluation set (tests/data/detection_eval/): share "
        f"of events in any finding of level {min_level} or above. For attack behaviours "
        "higher is better (recall); for benign look-alikes lower is better (false-positive "
        "rate).",
        "",
        head,
        "|---|---|---:|" + "---:|" * len(names),
    ]

    def cells(s: Score) -> str:
        return " | ".join(f"{s.flagged.get(n, 0)} ({_pct(s.rate(n))})" for n in names)

    ordered = sorted(by_behaviour, key=lambda b: (not behaviours[b]["malicious"], b))
    for b in ordered:
        kind = "attack" if behaviours[b]["malicious"] else "benign"
        lines.append(f"| {b} | {kind} | {by_behaviour[b].events} | {cells(by_behaviour[b])} |")
    for key in sorted(slices):
        lines.append(f"| **{key}** | | {slices[key].events} | {cells(slices[key])} |")
    lines.append("")
    for run in runs:
        note = (
            f"error: {run.error}"
            if run.error
            else (
                f"{run.rules_loaded} rules loaded, {run.rules_skipped} skipped, "
                f"{run.findings} findings, {run.seconds:.1f} s"
            )
        )
        lines.append(f"- {run.name}: {note}")
        if run.error is None and min_level != LEVELS[0]:
            extra = details[run.name]["context_only"]
            lines.append(
                f"  - in informational findings only (context, not counted as flagged): "
                f"{extra['attack']} attack events, {extra['benign']} benign look-alikes"
            )
    for goal in goals:
        lines.append(
            f"- {goal['target']} ({names[-1]}): {goal['measured']} (goal {goal['goal']}): "
            f"**{goal['status']}**"
        )
    return "\n".join(lines) + "\n"


def print_table(text: str, details: dict[str, Any], runs: list[RuleSetRun], limit: int) -> None:
    print(text)
    for run in runs:
        d = details[run.name]
        for key, title in (
            ("missed_attack_events", "attack events in no finding"),
            ("flagged_benign_events", "benign look-alikes flagged"),
        ):
            items = d[key]
            total = sum(c for _, c in items)
            print(f"{run.name}: {title}: {total}")
            for what, count in items[:limit]:
                print(f"  {count:3d} x {what}")
            if len(items) > limit:
                print(f"  ... {len(items) - limit} more kinds in the JSON result")


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--baseline",
        default=BASELINE_REVISION,
        help="git revision whose rules are the baseline (default: issue 16's start)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="measure only the current rules")
    parser.add_argument(
        "--min-level",
        choices=LEVELS,
        default="low",
        help="count an event as flagged only in findings of this level or above (default low: "
        "Sigma's informational level is context that raises no alert)",
    )
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results", help="where results go"
    )
    parser.add_argument("--keep", type=Path, help="build the case in this new folder and keep it")
    parser.add_argument("--show", type=int, default=25, help="misses / false alarms listed")
    args = parser.parse_args(argv)

    if args.keep and args.keep.exists():
        parser.error(f"--keep {args.keep}: already exists; give a new folder")
    try:
        eval_set = load_eval_set()
    except (ValueError, OSError, KeyError) as exc:
        raise SystemExit(f"detection_quality: {exc}") from None
    attack = sum(e.malicious for e in eval_set.events)
    log(
        f"evaluation set: {attack} attack events, {len(eval_set.events) - attack} benign "
        f"look-alikes, {len(eval_set.tooling)} Stratus tooling events not counted, "
        f"{len(eval_set.files)} files"
    )
    with tempfile.TemporaryDirectory(prefix="cloudir-detection-quality-") as tmp:
        work = Path(tmp)
        case = args.keep.resolve() if args.keep else work / "case"
        write_capture_input(eval_set, work / "cloudtrail")
        started = time.perf_counter()
        title = "detection quality evaluation set"
        try:
            cloudir("capture", "files", "--case", str(case), "--kind", "cloudtrail",
                    "--title", title, str(work / "cloudtrail"))  # fmt: skip
            timeline = cloudir("timeline", "--case", str(case))
        except (RuntimeError, json.JSONDecodeError) as exc:
            raise SystemExit(f"detection_quality: building the case failed: {exc}") from None
        build_seconds = round(time.perf_counter() - started, 2)
        expected = sum(len(records) for _, records in eval_set.files)
        if timeline.get("rows") != expected or timeline.get("errors"):
            raise SystemExit(
                f"the timeline holds {timeline.get('rows')} rows for {expected} records "
                f"({timeline.get('errors')} errors): the set did not load whole"
            )
        runs: list[RuleSetRun] = []
        if not args.no_baseline:
            try:
                rules = extract_rules(args.baseline, work / "baseline")
                runs.append(
                    run_detect(
                        case,
                        f"baseline {args.baseline}",
                        ["--no-builtin", "--rules", str(rules)],
                        args.min_level,
                    )
                )
            except RuntimeError as exc:
                runs.append(RuleSetRun(f"baseline {args.baseline}", 0, 0, 0, 0, {}, str(exc)))
        runs.append(run_detect(case, "current rules", [], args.min_level))
    by_behaviour, slices, details = score(eval_set, runs)
    goals = targets(slices, runs[-1].name)
    text = markdown(by_behaviour, slices, runs, goals, eval_set.behaviours, details, args.min_level)
    print_table(text, details, runs, args.show)

    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    document = {
        "params": {
            "baseline": None if args.no_baseline else args.baseline,
            "min_level": args.min_level,
            "git_head": head,
            "case_build_seconds": build_seconds,
            "timeline_rows": expected,
            "attack_events": attack,
            "benign_events": len(eval_set.events) - attack,
            "tooling_events_not_counted": len(eval_set.tooling),
        },
        "runs": [
            {k: v for k, v in asdict(r).items() if k not in ("flagged", "context")} for r in runs
        ],
        "behaviours": {
            b: {
                "malicious": eval_set.behaviours[b]["malicious"],
                "events": s.events,
                "flagged": s.flagged,
                "rate": {r.name: s.rate(r.name) for r in runs},
            }
            for b, s in by_behaviour.items()
        },
        "slices": {
            k: {
                "events": s.events,
                "flagged": s.flagged,
                "rate": {r.name: s.rate(r.name) for r in runs},
            }
            for k, s in slices.items()
        },
        "targets": goals,
        "details": details,
        "markdown": text,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (results / "detection_quality.json").write_text(json.dumps(document, indent=2) + "\n")
    (results / "detection_quality.md").write_text(text)
    log(f"results written to {results}/detection_quality.json and .md")
    return 0 if all(r.error is None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
