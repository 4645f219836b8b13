"""`detect --engine spark`: the rules' scan runs on Spark, part by part of the timeline.

Equivalence with the DuckDB path is the contract, so nothing about the rules is written
twice. Spark reads the timeline's Parquet and hands each task its rows as Arrow batches;
the task evaluates the SQL the DuckDB backend compiled, in a DuckDB of its own, sealed as
the DuckDB path's connection is (it reads the rows it was given and the small tables the
driver shipped, nothing else). The regex (RE2), JSON path, CIDR and keyword semantics are
therefore DuckDB's on both paths; a Spark SQL rendering would be a second generator whose
regex is Java's and whose JSON functions answer differently for arrays and case.

What runs where (detect.TimelineParts is the seam):
- on the executors, over each part, in two passes (the scan joins what the first pass's
  results become): the computed fields' facts (sigma/context.py, a `partial` that groups
  again); then the scan into `_hits` (only the matched rows come back) with every
  identity's earliest automation calls (the baseline keeps the matched identities');
- in the driver, over those small results: the computed fields' final grouping, the
  correlations, suppression counts, triage and findings, in the same code as the DuckDB
  path. The matched events are orders of magnitude fewer than the timeline's rows, and
  the correlations' ASOF chains and windows need them in time order in one place.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from cloudir.analyze.detect import DetectResult, Gather
from cloudir.analyze.detect import detect as detect_duckdb
from cloudir.analyze.query import timeline_files
from cloudir.case import Case
from cloudir.engines.spark_parquet import read_parquet
from cloudir.engines.spark_progress import job_group, tasks_shown
from cloudir.engines.spark_session import is_spark_failure, spark_failure
from cloudir.errors import EvidenceError
from cloudir.progress import NO_PROGRESS, Progress

PART_MEMORY_LIMIT: Final = "1GB"  # each task's DuckDB; it spills past that
ROWS_PER_PAYLOAD: Final = 50_000  # matched rows per Arrow IPC message sent to the driver
PAYLOAD_SCHEMA: Final = "gather int, payload binary"  # which Gather, one Arrow IPC stream


def detect_spark(
    case: Case,
    spark: Any,
    extra_rules: list[Path],
    builtin: bool = True,
    suppress: Sequence[Path] = (),
    progress: Progress = NO_PROGRESS,
) -> DetectResult:
    """Run the rules over the case's timeline on `spark`; writes what `detect` writes."""
    parts = SparkTimelineParts(spark, timeline_files(case), progress)
    return detect_duckdb(case, extra_rules, builtin=builtin, suppress=suppress, parts=parts)


class SparkTimelineParts:
    """The timeline as a Spark DataFrame over its Parquet files (detect.TimelineParts).

    Each `gather` is one pass: one Spark job evaluates every SQL of the batch on every part
    at once (the parts in parallel, as many as the executors have cores), keeping what the
    tasks selected on the executors' disks; the driver then fetches it a part at a time
    (`toLocalIterator`: one small job per part, reading those disks, not the timeline), so
    it holds one part's result in the JVM and one Arrow message in Python. Fetching straight
    from the scan would run the scan itself a part at a time, one core busy.

    Its jobs run in the job group `job_group`: the progress line counts their tasks, and
    a test counts the jobs.
    """

    def __init__(
        self, spark: Any, files: Sequence[Path | str], progress: Progress = NO_PROGRESS
    ) -> None:
        self.spark = spark
        self.frame = read_parquet(spark, files)
        self.threads = int(spark.conf.get("spark.task.cpus", "1"))
        self.progress = progress
        self.job_group = f"cloudir-detect-{uuid.uuid4().hex}"
        self.passes = 0

    def gather(self, con: Any, gathers: Sequence[Gather]) -> None:
        if not gathers:
            return
        # The tables' columns come from the driver's own (empty) timeline, so an empty
        # timeline or a part that matched nothing still leaves the table the next SQL reads.
        for gather in gathers:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {gather.table} AS "
                f"SELECT * FROM ({gather.sql}) LIMIT 0"
            ).fetchall()
        shipped = dict.fromkeys(name for gather in gathers for name in gather.shipped)
        tables = {
            name: to_ipc(con.sql(f"SELECT * FROM {name}").to_arrow_table()) for name in shipped
        }
        job = functools.partial(
            evaluate_part, sqls=[g.sql for g in gathers], tables=tables, threads=self.threads
        )
        self.passes += 1
        try:
            with job_group(self.spark, self.job_group, f"cloudir detect: pass {self.passes}"):
                self._run(con, gathers, self.frame.mapInArrow(job, PAYLOAD_SCHEMA))
        except Exception as exc:
            if not is_spark_failure(exc):
                raise
            raise EvidenceError(f"detect on Spark failed: {spark_failure(exc)}") from exc

    def _run(self, con: Any, gathers: Sequence[Gather], results: Any) -> None:
        from pyspark import StorageLevel

        results = results.persist(StorageLevel.DISK_ONLY)  # not the driver's heap in local mode
        try:
            label = f"detect on Spark: pass {self.passes} over the timeline's parts"
            with tasks_shown(self.spark, self.job_group, self.progress, label):
                # the pass: every part evaluated, in parallel
                results.write.format("noop").mode("overwrite").save()
            for row in results.toLocalIterator():  # the driver holds one message at a time
                con.register("_cloudir_part", from_ipc(row.payload))
                table = gathers[row.gather].table
                con.execute(f"INSERT INTO {table} SELECT * FROM _cloudir_part").fetchall()
                con.unregister("_cloudir_part")
        finally:
            results.unpersist()


def evaluate_part(
    batches: Iterator[Any], sqls: Sequence[str], tables: dict[str, bytes], threads: int
) -> Iterator[Any]:
    """In a Spark task: each of `sqls` over this part's rows, the results as Arrow IPC
    messages, each tagged with its SQL's index (`gather`).

    The part is copied into the task's DuckDB once (it spills to a scratch folder past
    PART_MEMORY_LIMIT) and every SQL reads that copy: a stream of batches can be read only
    once, and the computed fields' facts read `timeline` more than once.
    """
    import pyarrow as pa

    from cloudir.analyze.duck import connect, seal, sql_str, timeline_view_sql
    from cloudir.analyze.sigma.runtime import register_functions

    first = next(batches, None)
    if first is None:
        return
    rows = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
    with tempfile.TemporaryDirectory(prefix="cloudir-detect-part-") as scratch:
        con = connect()
        try:
            con.execute(f"SET temp_directory = {sql_str(scratch)}").fetchall()
            con.execute(f"SET memory_limit = '{PART_MEMORY_LIMIT}'").fetchall()
            con.execute(f"SET threads = {max(1, threads)}").fetchall()
            con.execute("SET preserve_insertion_order = false").fetchall()
            register_functions(con)
            con.register("_cloudir_rows", rows)
            rows_sql = timeline_view_sql(con, "_cloudir_rows")
            con.execute(f"CREATE TEMP TABLE timeline AS {rows_sql}").fetchall()
            con.unregister("_cloudir_rows")
            for name, data in tables.items():
                con.register(name, from_ipc(data))
            seal(con)  # the rules' SQL reads the part and the shipped tables, nothing else
            for index, sql in enumerate(sqls):
                tag = pa.array([index], pa.int32())
                for batch in con.sql(sql).to_arrow_reader(ROWS_PER_PAYLOAD):
                    payload = pa.array([to_ipc(batch)], pa.binary())
                    yield pa.RecordBatch.from_arrays([tag, payload], ["gather", "payload"])
        finally:
            con.close()


def to_ipc(data: Any) -> bytes:
    """An Arrow table or batch as one IPC stream (what crosses from driver to task and back)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(data: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
