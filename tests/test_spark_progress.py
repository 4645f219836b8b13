"""`timeline --engine spark` shows each step's Spark tasks done of total (spark_progress).

The timeline's steps that work on the executors (parsing, de-duplication, writing) each
get a bar counting the tasks of every job the step ran: a recording Progress receives
Spark's own counts, and each step's last reading is all of its tasks done. The bars'
timing is Spark's and the poll's, so no test asserts on it; detect's pass counting is
tested in tests/test_spark_detect.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest

from cloudir.analyze import spark_timeline
from cloudir.analyze.spark_timeline import build_timeline_spark
from cloudir.case import Case
from cloudir.engines.spark_progress import every_job, first_job, step_shown
from cloudir.progress import Unit
from tests.conftest import ct_event


class RecordingBar:
    def __init__(self, label: str) -> None:
        self.label = label
        self.readings: list[tuple[float, float | None]] = []

    def update(
        self, completed: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        self.readings.append((completed, total))


class RecordingBars:
    def __init__(self, shown: list[RecordingBar]) -> None:
        self.shown = shown

    def __enter__(self) -> RecordingBars:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def add(self, label: str, total: float | None = None) -> RecordingBar:
        bar = RecordingBar(label)
        self.shown.append(bar)
        return bar


class RecordingProgress:
    """Every bar any step opened, in order, with every reading it was given."""

    def __init__(self) -> None:
        self.shown: list[RecordingBar] = []
        self.units: list[Unit] = []

    def bars(self, unit: Unit) -> RecordingBars:
        self.units.append(unit)
        return RecordingBars(self.shown)


class Tracker:
    """Spark's status tracker as `every_job` reads it: jobs' stage ids, stages' counts."""

    def __init__(self, jobs: dict[int, list[int] | None], stages: dict[int, Any]) -> None:
        self.jobs, self.stages = jobs, stages

    def getJobInfo(self, job: int) -> Any:
        stages = self.jobs[job]
        return None if stages is None else SimpleNamespace(stageIds=stages)

    def getStageInfo(self, stage: int) -> Any:
        return self.stages.get(stage)


def stage(done: int, of: int, active: int = 0, failed: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        numCompletedTasks=done, numTasks=of, numActiveTasks=active, numFailedTasks=failed
    )


def test_a_step_counts_the_stages_that_ran_in_every_job() -> None:
    """Adaptive execution's later jobs list the stages already run under new ids, skipped
    (none done, none running): they count for nothing, so a step over ends at its total."""
    stages = {
        1: stage(6, 6),  # job 1: the shuffle's map side, over the 6 parts
        2: stage(0, 6),  # job 2 lists it again, skipped
        3: stage(0, 2, active=1, failed=1),  # and reduces in 2 tasks, one running
        5: stage(0, 4),  # job 3: not started yet
    }
    tracker = Tracker({1: [1], 2: [2, 3], 3: [4, 5], 4: None}, stages)
    assert every_job(tracker, [1, 2, 3, 4]) == (6, 8)  # stage 4 forgotten, job 4 too
    stages[3] = stage(2, 2)
    stages[5] = stage(4, 4)
    assert every_job(tracker, [1, 2, 3]) == (12, 12)
    assert every_job(tracker, []) == (0, 0)
    assert first_job(tracker, [1, 2, 3]) == (6, 6)  # detect's rule reads only job 1


def add_item(case: Case, evidence_id: str, files: dict[str, bytes]) -> None:
    case.open_item(
        evidence_id, {"kind": "cloudtrail", "source": {"type": "files", "path": evidence_id}}
    )
    for name, data in files.items():
        case.record("capture", evidence_id, [case.store_bytes(evidence_id, name, data)])
    case.record("capture-complete", evidence_id, [])


def test_the_spark_timeline_shows_each_step_to_its_last_task(
    tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing, de-duplication and writing, each one bar, in that order; every reading is
    Spark's count of the step's tasks (done never more than the total), and the last one
    is all of them done. The writing step's tasks are the written frame's partitions."""
    case = Case.create(tmp_path / "case", title="progress")
    shared = ct_event("2024-07-31T10:00:00Z", "GetObject")
    conflict = ct_event("2024-07-31T10:05:00Z", "PutBucketPolicy")
    add_item(
        case,
        "s3",
        {
            f"AWSLogs/{n}.json": json.dumps(
                {"Records": [shared, ct_event(f"2024-07-31T11:0{n}:00Z")]}
            ).encode()
            for n in range(6)
        }
        | {
            "AWSLogs/conflict-a.json": json.dumps({"Records": [conflict]}).encode(),
            "AWSLogs/conflict-b.json": json.dumps(
                {"Records": [dict(conflict, sourceIPAddress="203.0.113.66")]}
            ).encode(),
        },
    )
    partitions: list[int] = []
    write = spark_timeline.PartsTarget.write

    def counted(target: Any, kept: Any) -> None:
        partitions.append(kept.rdd.getNumPartitions())
        write(target, kept)

    monkeypatch.setattr(spark_timeline.PartsTarget, "write", counted)
    progress = RecordingProgress()
    result = build_timeline_spark(Case.open(case.root), spark, progress=progress)

    assert (result.rows, result.duplicates_dropped) == (6 + 1 + 2, 5)  # the build as ever
    assert result.conflicting_copies["events"] == 1
    assert [bar.label for bar in progress.shown] == [
        spark_timeline.PARSING,
        spark_timeline.DEDUPLICATING,
        spark_timeline.WRITING,
    ]
    assert set(progress.units) == {"count"}
    for bar in progress.shown:
        assert bar.readings, bar.label
        assert all(total and 0 <= done <= total for done, total in bar.readings), bar.label
        done, total = bar.readings[-1]
        assert done == total, bar.label
    parsing, deduplicating, writing = (bar.readings[-1][1] for bar in progress.shown)
    assert writing == partitions[0]  # one task per partition written, nothing else counted
    assert parsing is not None and parsing > 1  # the parsers' tasks, then the reduce side
    assert deduplicating is not None and deduplicating > 1
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None  # restored


def test_a_step_runs_its_jobs_in_a_group_of_its_own(spark: Any) -> None:
    """Spark's UI names the step; the tracker finds the step's jobs (and no others) by
    its group, and the caller's group is back afterwards."""
    context = spark.sparkContext
    context.setJobGroup("caller", "the caller's own")
    seen: list[Sequence[int]] = []
    try:
        with step_shown(spark, RecordingProgress(), "a step"):
            group = context.getLocalProperty("spark.jobGroup.id")
            assert context.getLocalProperty("spark.job.description") == "a step"
            assert spark.range(0, 10, numPartitions=3).count() == 10
            seen.append(context.statusTracker().getJobIdsForGroup(group))
        assert context.getLocalProperty("spark.jobGroup.id") == "caller"
        assert context.getLocalProperty("spark.job.description") == "the caller's own"
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
    assert seen[0]  # the count's jobs, in the step's group
    assert group != "caller" and group.startswith("cloudir-")


def test_a_step_with_nothing_to_do_ends_at_zero_of_zero(tmp_path: Path, spark: Any) -> None:
    """A case without evidence: no rows to write, no task; the bar says 0/0 rather than
    leaving its total unknown (a bar that never ended)."""
    case = Case.create(tmp_path / "case", title="empty")
    progress = RecordingProgress()
    assert build_timeline_spark(case, spark, progress=progress).rows == 0
    writing = progress.shown[-1]
    assert (writing.label, writing.readings) == (spark_timeline.WRITING, [(0, 0)])
    assert all(bar.readings[-1][0] == bar.readings[-1][1] for bar in progress.shown)
