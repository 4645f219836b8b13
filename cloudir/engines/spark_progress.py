"""How far a Spark step has got: its tasks done of total, on a `cloudir.progress` bar.

A Spark action blocks the thread that called it for minutes, and Spark, not cloudir, knows
how many of its tasks are done. So a step's jobs run in a job group (`job_group`), and while
the step runs a watcher thread asks Spark's status tracker every POLL_SECONDS how many
tasks of that group's jobs are done, and sets the bar (`tasks_shown`); a last reading after
the step leaves the bar at its end. `detect --engine spark` shows each pass this way,
`timeline --engine spark` each step (`step_shown`). With NO_PROGRESS no thread starts.

Which tasks count is the caller's (`Count`): Spark 3.5's adaptive execution splits one
action into several jobs, and what a responder should see as "the work" differs by step.
Nothing here imports pyspark: the session and the tracker come from the caller.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from cloudir.progress import NO_PROGRESS, Bar, Progress

POLL_SECONDS: Final = 0.5  # how often a bar asks Spark how many tasks are done

Count = Callable[[Any, Sequence[int]], tuple[int, int]]
"""(status tracker, the step's job ids in ascending order) -> (tasks done, tasks in all)."""


def first_job(tracker: Any, jobs: Sequence[int]) -> tuple[int, int]:
    """The tasks of the step's first job: detect's pass, whose first job evaluates the
    parts (Spark 3.5's adaptive execution builds the kept results in one job and runs the
    noop write over them in a second, quick one: counting both would show 3/6, then 6/6);
    a job or stage Spark has already forgotten counts for nothing."""
    job = tracker.getJobInfo(jobs[0]) if jobs else None
    done = total = 0
    for stage_id in job.stageIds if job is not None else ():
        stage = tracker.getStageInfo(stage_id)
        if stage is not None:
            done, total = done + stage.numCompletedTasks, total + stage.numTasks
    return done, total


def every_job(tracker: Any, jobs: Sequence[int]) -> tuple[int, int]:
    """The tasks of every stage that has run in any of the step's jobs.

    Adaptive execution runs an action with a shuffle as several jobs, each later one
    listing the stages its predecessors ran again under new ids and skipping them (no task
    done, none running). Such a stage counts for nothing, nor does one still waiting to
    start, which until it starts looks the same: the total grows as stages start, and once
    the step is over every stage counted is done, so the bar ends at its total. A job or
    stage Spark has forgotten counts for nothing.
    """
    done = total = 0
    for job_id in jobs:
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job is not None else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is None:
                continue
            started = stage.numCompletedTasks + stage.numActiveTasks + stage.numFailedTasks
            if started:
                done, total = done + stage.numCompletedTasks, total + stage.numTasks
    return done, total


def show_tasks(
    tracker: Any, group: str, earlier: set[int], bar: Bar, count: Count = first_job
) -> int:
    """The bar set to `count` over the group's jobs not in `earlier` (those of earlier
    steps); no update while nothing is counted yet (no job started). The total read."""
    jobs = sorted(set(tracker.getJobIdsForGroup(group)) - earlier)
    done, total = count(tracker, jobs)
    if total:
        bar.update(done, total=total)
    return total


@contextlib.contextmanager
def job_group(spark: Any, group: str, description: str) -> Iterator[None]:
    """This thread's jobs in `group` (described so in Spark's UI), and whatever group it
    had before restored."""
    context = spark.sparkContext
    before = {
        key: context.getLocalProperty(key) for key in ("spark.jobGroup.id", "spark.job.description")
    }
    context.setJobGroup(group, description)
    try:
        yield
    finally:
        for key, value in before.items():
            context.setLocalProperty(key, value)


@contextlib.contextmanager
def tasks_shown(
    spark: Any,
    group: str,
    progress: Progress,
    label: str,
    count: Count = first_job,
    settle: bool = False,
) -> Iterator[None]:
    """A bar `label`, tasks done of total of the group's jobs started inside the block,
    read from Spark's status tracker by a thread (the block's own jobs hold this one).
    `settle`: a block that ran no task ends at 0/0, not at a total still unknown."""
    if progress is NO_PROGRESS:
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    earlier = set(tracker.getJobIdsForGroup(group))
    stop = threading.Event()
    with progress.bars("count") as bars:
        bar = bars.add(label)
        watcher = threading.Thread(
            target=_watch, args=(tracker, group, earlier, bar, count, stop), daemon=True
        )
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            if show_tasks(tracker, group, earlier, bar, count) == 0 and settle:
                bar.update(0, total=0)


def _watch(
    tracker: Any, group: str, earlier: set[int], bar: Bar, count: Count, stop: threading.Event
) -> None:
    """Reads until `stop`; a tracker that fails (the JVM gone) ends the watching without
    a thread's traceback: the step's own failure is what the responder is told."""
    try:
        while not stop.wait(POLL_SECONDS):
            show_tasks(tracker, group, earlier, bar, count)
    except Exception:  # a progress bar never fails the step it shows
        return


@contextlib.contextmanager
def step_shown(spark: Any, progress: Progress, label: str) -> Iterator[None]:
    """One step of a longer build: its jobs in a job group of their own, described as
    `label` in Spark's UI, and, with a `progress`, a bar `label` counting every task they
    ran (`every_job`); a step with nothing to do (no rows to write) ends at 0/0."""
    group = f"cloudir-{uuid.uuid4().hex}"
    shown = tasks_shown(spark, group, progress, label, every_job, settle=True)
    with job_group(spark, group, label), shown:
        yield
