"""The case's timeline built on Apache Spark: the DuckDB path's rows, errors and summary.

`build_timeline_spark(case, spark)` writes what `timeline.build_timeline` writes (Parquet
parts in the timeline schema, errors.jsonl, summary.json, built in `timeline.building/`
and swapped in) from the same evidence, so either engine's timeline is the case's
timeline. Equivalence is the contract (tests/test_spark_timeline.py):

- CloudTrail files are read by Spark (`binaryFile`, one row per file) and parsed on the
  executors by the DuckDB path's own parser (`parsers.cloudtrail.parse_bytes`, the same
  record-to-row code as `parse`, only fed bytes instead of a path). Not Spark SQL's JSON
  functions: the conversion has many small rules (four envelope shapes, the target's
  priority list, EC2's `items`, the ConsoleLogin failure, odd field types, the record
  number an error names, `raw` kept byte for byte) and a second copy of them in SQL would
  drift from the first. One source of truth, so the rows match by construction.
- Evidence of every other kind (disk images, containers, Linux logs, alerts) is parsed in
  the driver by the same local parsers (`timeline.parse_chunk`) and its rows handed to
  Spark, so the Spark timeline of any case equals the DuckDB one, not only of CloudTrail
  cases. So are CloudTrail files Spark's reader cannot take: empty ones (Spark's file
  splitting drops them), over 2 GB (a binaryFile row is one byte array) or with a name
  Hadoop's listing hides (starting with `_` or `.`). A file Spark was given and still did
  not read is named in errors.jsonl, never silently missing.
- De-duplication is `duplicates.py`'s rule in Spark: copies of an `event_id` with the
  same SHA-256 (or, where the bytes differ, the same canonical-form digest, computed by
  `duplicates.canonical_digest`) collapse to the first copy in the DuckDB path's order
  (S3 before LookupEvents, then file order, then record order); copies that disagree are
  all kept, and each such event is described by `duplicates`' own code.
- Implausible times, rows by evidence item and the summary use the DuckDB path's rules
  and its functions for the entries they write.

Times travel through Spark as epoch microseconds (a long), never as Spark timestamps, so
no session time zone or Python datetime can move them; the Parquet parts are written by
the executors with `timeline._parquet_writer` (the same Arrow schema, metadata and
compression). The case folder, and so `timeline.building/`, must be on storage the
executors can write: in `local[*]` that is the case folder itself. pyspark is imported
only here, and this module only when the Spark engine runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudir.analyze.completeness import KINDS as PROBLEM_KINDS
from cloudir.analyze.schema import COLUMN_NAMES
from cloudir.analyze.timeline import (
    CLOUDTRAIL_EARLIEST,
    HOST_EARLIEST,
    IMPLAUSIBLE_EXAMPLES,
    ROW_GROUP_ROWS,
    FileTask,
    TimelineResult,
    _ceiling_us,
    _epoch_us,
    _implausible_errors,
    _iso_us,
    _parquet_writer,
    _swap_in,
    _write_lines,
    parse_chunk,
    start_build,
)
from cloudir.aws import AwsOptions
from cloudir.case import Case
from cloudir.case_folder import ERRORS_FILE, PARTS_FILE, PARTS_FORMAT, SUMMARY_FILE
from cloudir.engines.hadoop_path import HADOOP_SPECIAL
from cloudir.engines.spark_parquet import read_parquet
from cloudir.engines.spark_progress import step_shown
from cloudir.progress import NO_PROGRESS, Progress
from cloudir.storage_uri import check_reachable, check_uri, join, open_uri

if TYPE_CHECKING:
    from cloudir.analyze.parsers import ErrorLog
    from cloudir.s3_manifest import PinnedObject

SPARK_PARSER = "cloudtrail"  # the parser whose files Spark reads; the rest run in the driver
BINARY_FILE_LIMIT = (1 << 31) - 1  # Spark's binaryFile: one file is one byte array
KEYS = ["_priority", "_task", "_row"]  # the DuckDB path's order: S3 first, file, record
VALUE_COLUMNS = COLUMN_NAMES[1:]  # every column after the time, all strings
STAGING_DIR = ".spark-staging"
# The steps whose Spark jobs do the work, each a bar of their tasks done of total.
PARSING = "timeline on Spark: parsing the CloudTrail files"
DEDUPLICATING = "timeline on Spark: dropping duplicate events"
WRITING = "timeline on Spark: writing the Parquet parts"


def build_timeline_spark(
    case: Case,
    spark: Any,
    aws: AwsOptions | None = None,
    parts_uri: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> TimelineResult:
    """Rebuild `timeline/` with Spark; the same result, files and swap as `build_timeline`.

    `aws` is how the executors reach S3 for the objects a manifest pins and for
    `parts_uri` (default: the environment's credentials and endpoint, as on an EMR or
    Databricks cluster). With `parts_uri`, the executors write the Parquet parts under a
    folder of this run's own there, and `timeline/` lists them in parts.json.
    `progress` gets a bar per step that works on the executors (PARSING, DEDUPLICATING,
    WRITING): Spark's tasks done of total (engines/spark_progress.py).
    """
    run_uri = None
    if parts_uri:
        check_reachable(check_uri(parts_uri), aws)
        run_uri = join(check_uri(parts_uri), run_folder())
    tasks, building, result = start_build(case)
    ceiling_us = _ceiling_us()

    by_spark = [_spark_reads(case, t) for t in tasks]
    remote = [(n, t) for n, t in enumerate(tasks) if by_spark[n]]
    pinned = [(n, t) for n, t in enumerate(tasks) if t.pinned is not None]
    local = [(n, t) for n, t in enumerate(tasks) if not by_spark[n] and t.pinned is None]
    parsed = _cloudtrail_frame(spark, case, remote)
    if pinned:
        parsed = parsed.unionByName(_pinned_frame(spark, pinned, aws))
    local_frame, local_errors = _local_frame(spark, building, local, ceiling_us)
    if local_frame is not None:
        parsed = parsed.unionByName(local_frame)
    parsed = parsed.persist()
    target = PartsTarget(building, run_uri, aws)
    try:
        _finish(result, parsed, remote + pinned, local_errors, tasks, ceiling_us, target, progress)
    except BaseException:
        target.discard()
        raise
    finally:
        parsed.unpersist()
    result.parts_root = run_uri
    shutil.rmtree(building / STAGING_DIR, ignore_errors=True)
    final = case.paths.timeline
    result.path = str(final)
    _write_lines(building / ERRORS_FILE, result.errors)
    (building / SUMMARY_FILE).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    _swap_in(building, final, case.paths.timeline_old)
    return result


def _finish(
    result: TimelineResult,
    parsed: Any,
    remote: list[tuple[int, FileTask]],
    local_errors: list[tuple[int, dict[str, Any]]],
    tasks: list[FileTask],
    ceiling_us: int,
    target: PartsTarget,
    progress: Progress = NO_PROGRESS,
) -> None:
    """Errors, de-duplication, implausible times and the Parquet parts, all from `parsed`."""
    from pyspark.sql import functions as F

    spark = parsed.sparkSession
    with step_shown(spark, progress, PARSING):  # the first action: the parsers run, kept
        seen = {r[0] for r in parsed.select("_task").distinct().collect()}
    errors = _spark_errors(parsed) + local_errors
    for n, task in remote:
        if n not in seen:  # Spark's listing missed a file it was given: said, never silent
            errors.append((n, _unread(task)))
    errors.sort(key=lambda ne: (tasks[ne[0]].priority, ne[0]))
    result.errors.extend(entry for _, entry in errors)
    result.evidence_problems += [e for _, e in errors if e.get("kind") in PROBLEM_KINDS]

    rows = parsed.filter(F.col("_error").isNull()).drop("_error")
    examples = _implausible_examples(rows, tasks, ceiling_us)
    with step_shown(spark, progress, DEDUPLICATING):
        kept, outcome = _drop_duplicates(rows, tasks)
    result.duplicates_dropped = outcome.dropped
    result.errors.extend(outcome.errors)
    result.conflicting_copies = outcome.summary()
    counts = kept.groupBy("evidence_id").count().orderBy("evidence_id").collect()
    result.rows_by_evidence = {str(r[0]): int(r[1]) for r in counts}
    result.rows = sum(result.rows_by_evidence.values())
    result.implausible_times = _implausible_times(kept, ceiling_us, examples)
    result.errors.extend(_implausible_errors(result.implausible_times, ceiling_us))
    with step_shown(spark, progress, WRITING):
        target.write(kept)
    kept.unpersist()


# -- reading and parsing --------------------------------------------------------------------
def _spark_reads(case: Case, task: FileTask) -> bool:
    """CloudTrail files Spark's binaryFile reader lists, reads and can hold in one row."""
    from cloudir.analyze.parsers import parser_for

    if task.pinned is not None:
        return False  # read from S3 by the executors (_pinned_frame), not from the case
    parser = parser_for(task.kind, Path(task.path))
    if parser is None or parser.name != SPARK_PARSER or not 0 < task.size <= BINARY_FILE_LIMIT:
        return False  # Spark's file splitting drops empty files; one row holds 2 GB
    folder = _absolute(case.evidence_dir(task.evidence_id))
    if any(c in folder for c in HADOOP_SPECIAL):
        return False  # Hadoop would read the folder's name as a glob or a URI scheme
    inside = Path(task.path).relative_to(case.evidence_dir(task.evidence_id))
    return not any(part.startswith(("_", ".")) for part in inside.parts)


def _absolute(path: Path | str) -> str:
    """As Hadoop names a local file: absolute, symlinks not resolved."""
    return os.path.abspath(path)


def _row_schema() -> Any:
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField("_priority", IntegerType(), False),
            StructField("_task", IntegerType(), False),
            StructField("_row", LongType(), False),
            StructField("_error", StringType(), True),
            StructField("timestamp", LongType(), True),  # epoch microseconds, UTC
            *(StructField(name, StringType(), True) for name in VALUE_COLUMNS),
        ]
    )


def _cloudtrail_frame(spark: Any, case: Case, remote: list[tuple[int, FileTask]]) -> Any:
    """One row per record (or per error) of every CloudTrail file Spark reads."""
    schema = _row_schema()
    if not remote:
        return spark.createDataFrame([], schema)
    by_path = {_absolute(t.path): (t.priority, n, t.evidence_id, t.relpath) for n, t in remote}
    folders = sorted({_absolute(case.evidence_dir(t.evidence_id)) for _, t in remote})
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(folders)
        .select("path", "content")
    )
    wanted = spark.sparkContext.broadcast(by_path)

    def parse_partition(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        return _parse_files(rows, wanted.value)

    return spark.createDataFrame(files.rdd.mapPartitions(parse_partition), schema)


def _local_path(uri: str) -> str:
    """binaryFile's `path` (`file:/a/b`, not escaped) as the driver names the file."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri.removeprefix("file:")


def _parse_files(
    rows: Iterable[Any], by_path: dict[str, tuple[int, int, str, str]]
) -> Iterator[tuple[Any, ...]]:
    """On an executor: each file through the DuckDB path's CloudTrail parser.

    A parser failure costs the file, logged as `timeline.parse_chunk` logs it.
    """
    from cloudir.analyze.parsers import ErrorLog

    for file in rows:
        key = by_path.get(_local_path(file.path))
        if key is None:
            continue  # meta.json and files the timeline does not read
        priority, task, evidence_id, relpath = key
        yield from _file_rows(priority, task, ErrorLog(evidence_id, relpath), bytes(file.content))


def _file_rows(
    priority: int, task: int, log: ErrorLog, data: bytes | None
) -> Iterator[tuple[Any, ...]]:
    """One file's keyed rows, then its errors.jsonl entries as rows of their own; a file
    read that gave neither still leaves one row, so it is seen. `data` None: the read
    failed and `log` already says why."""
    from cloudir.analyze.parsers.cloudtrail import parse_bytes

    empty = (None,) * (1 + len(VALUE_COLUMNS))
    number = 0
    if data is not None:
        try:
            for batch in parse_bytes(data, log.evidence_id, log):
                for values in _batch_rows(batch):
                    yield (priority, task, number, None, *values)
                    number += 1
        except Exception as exc:  # as parse_chunk: a parser bug costs one file
            log.add(f"parser {SPARK_PARSER} failed: {type(exc).__name__}: {exc}")
    for seq, entry in enumerate(log.entries):
        yield (priority, task, seq, json.dumps(entry, sort_keys=True), *empty)
    if not log.entries and number == 0:  # read, no rows, no errors: still seen
        yield (priority, task, 0, "", *empty)


def _pinned_frame(spark: Any, pinned: list[tuple[int, FileTask]], aws: AwsOptions | None) -> Any:
    """The objects manifests pin, each read from S3 and parsed on an executor."""
    jobs = [(t.priority, n, t.evidence_id, t.relpath, t.pinned) for n, t in pinned]
    slices = max(1, min(len(jobs), spark.sparkContext.defaultParallelism * 4))

    def read_partition(part: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        return _read_pinned_files(part, aws)

    rdd = spark.sparkContext.parallelize(jobs, slices).mapPartitions(read_partition)
    return spark.createDataFrame(rdd, _row_schema())


def _read_pinned_files(
    jobs: Iterable[tuple[int, int, str, str, PinnedObject]], aws: AwsOptions | None
) -> Iterator[tuple[Any, ...]]:
    """On an executor: each pinned version read as the DuckDB path reads it, then parsed."""
    from cloudir.analyze.error_entries import error_entry
    from cloudir.analyze.parsers import ErrorLog
    from cloudir.s3_manifest import PinnedReadError, read_ahead

    mine = list(jobs)  # one slice of the manifest: small tuples
    reads = read_ahead((job[4] for job in mine), aws)
    for (priority, task, evidence_id, relpath, _), data in zip(mine, reads, strict=True):
        log = ErrorLog(evidence_id, relpath)
        if isinstance(data, PinnedReadError):
            log.entries.append(error_entry(evidence_id, relpath, str(data), kind=data.kind))
            yield from _file_rows(priority, task, log, None)
        else:
            yield from _file_rows(priority, task, log, data)


def _batch_rows(batch: Any) -> Iterator[tuple[Any, ...]]:
    """An Arrow batch in the timeline schema as tuples, the time as epoch microseconds."""
    import pyarrow as pa

    stamps = batch.column("timestamp").cast(pa.int64()).to_pylist()
    columns = [batch.column(name).to_pylist() for name in VALUE_COLUMNS]
    return zip(stamps, *columns, strict=True)


def _spark_errors(parsed: Any) -> list[tuple[int, dict[str, Any]]]:
    """The executors' errors.jsonl entries, in file order then the parser's order."""
    from pyspark.sql import functions as F

    found = (
        parsed.filter(F.col("_error").isNotNull() & (F.col("_error") != ""))
        .select("_task", "_row", "_error")
        .orderBy("_task", "_row")
        .collect()
    )
    return [(int(r[0]), json.loads(r[2])) for r in found]


def _unread(task: FileTask) -> dict[str, Any]:
    from cloudir.analyze.error_entries import error_entry

    return error_entry(task.evidence_id, task.relpath, "not listed by Spark's file reader")


def _local_frame(
    spark: Any, building: Path, local: list[tuple[int, FileTask]], ceiling_us: int
) -> tuple[Any, list[tuple[int, dict[str, Any]]]]:
    """Other evidence, parsed in the driver by `timeline.parse_chunk`, keyed for Spark."""
    if not local:
        return None, []
    import pyarrow as pa
    import pyarrow.parquet as pq

    staging = building / STAGING_DIR
    staging.mkdir()
    plain = staging / "local.parquet"
    chunk = parse_chunk(str(plain), [t for _, t in local], None, ceiling_us, partitioned=False)
    task_of = {(t.evidence_id, t.relpath): n for n, t in local}
    first = local[0][0]
    errors = [(task_of.get((e["evidence_id"], e["path"]), first), e) for e in chunk.errors]
    if not chunk.parts:
        return None, errors
    owners: list[int] = []  # the task of each row of the staging file, file by file
    for (n, _), (_, count) in zip(local, chunk.file_rows, strict=True):
        owners.extend([n] * count)
    numbers: list[int] = []  # each row's number within its own file
    for _, count in chunk.file_rows:
        numbers.extend(range(count))
    priorities = {n: t.priority for n, t in local}
    keyed = staging / "keyed.parquet"
    offset = 0
    with pq.ParquetWriter(keyed, _keyed_arrow_schema()) as writer:
        for batch in pq.ParquetFile(plain).iter_batches(batch_size=ROW_GROUP_ROWS):
            size = batch.num_rows
            mine = owners[offset : offset + size]
            columns = {
                "_priority": pa.array([priorities[n] for n in mine], pa.int32()),
                "_task": pa.array(mine, pa.int32()),
                "_row": pa.array(numbers[offset : offset + size], pa.int64()),
                "_error": pa.nulls(size, pa.string()),
                "timestamp": batch.column("timestamp").cast(pa.int64()),
                **{name: batch.column(name) for name in VALUE_COLUMNS},
            }
            writer.write_table(pa.table(columns, schema=_keyed_arrow_schema()))
            offset += size
    return read_parquet(spark, [keyed], _row_schema()), errors


def _keyed_arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("_priority", pa.int32(), False),
            pa.field("_task", pa.int32(), False),
            pa.field("_row", pa.int64(), False),
            pa.field("_error", pa.string()),
            pa.field("timestamp", pa.int64()),
            *(pa.field(name, pa.string()) for name in VALUE_COLUMNS),
        ]
    )


# -- de-duplication -------------------------------------------------------------------------
def _drop_duplicates(rows: Any, tasks: list[FileTask]) -> tuple[Any, Any]:
    """`duplicates.find`'s rule in Spark: identical copies collapse to the first, copies
    that disagree all stay and are described by `duplicates`' own code."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    from cloudir.analyze.duplicates import CONFLICT_EXAMPLES, Outcome, _error_entry, _Group
    from cloudir.analyze.duplicates import canonical_digest as digest_of

    repeated = (
        rows.filter(F.col("event_id").isNotNull())
        .groupBy("event_id")
        .count()
        .filter(F.col("count") > 1)
        .select("event_id")
    )
    if repeated.limit(1).count() == 0:
        return rows.persist(), Outcome()
    copies = rows.join(repeated, "event_id").select(
        "event_id",
        *KEYS,
        "evidence_id",
        "raw",
        F.coalesce(F.unhex(F.sha2(F.col("raw"), 256)), F.lit("").cast("binary")).alias("sha"),
    )
    uneven = (
        copies.groupBy("event_id")
        .agg(F.countDistinct("sha").alias("shas"))
        .filter(F.col("shas") > 1)
        .select("event_id", F.lit(True).alias("uneven"))
    )
    canonical = F.udf(lambda raw: None if raw is None else digest_of(raw), BinaryType())
    copies = (
        copies.join(uneven, "event_id", "left")
        .withColumn(
            "digest",
            F.when(
                F.col("uneven"), F.coalesce(canonical("raw"), F.lit("").cast("binary"))
            ).otherwise(F.col("sha")),
        )
        .drop("sha", "uneven")
        .persist()
    )
    try:
        order = Window.partitionBy("event_id", "digest").orderBy(*KEYS)
        drop = copies.withColumn("n", F.row_number().over(order)).filter(F.col("n") > 1)
        drop = drop.select(*KEYS).persist()
        outcome = Outcome(dropped=drop.count())
        versions = copies.groupBy("event_id").agg(F.countDistinct("digest").alias("v"))
        conflicted = versions.filter(F.col("v") > 1).select("event_id")
        described = (
            copies.join(conflicted, "event_id")
            .select("event_id", *KEYS, "evidence_id", "digest", "raw")
            .orderBy("event_id", *KEYS)
            .toLocalIterator()
        )
        group: _Group | None = None
        for row in described:
            if group is None or group.event_id != row["event_id"]:
                if group is not None:
                    _describe(outcome, group, CONFLICT_EXAMPLES, _error_entry)
                group = _Group(row["event_id"])
            path = tasks[row["_task"]].relpath
            group.add(row["evidence_id"], path, bytes(row["digest"]), row["raw"])
        if group is not None:
            _describe(outcome, group, CONFLICT_EXAMPLES, _error_entry)
        kept = rows.join(F.broadcast(drop), KEYS, "left_anti") if outcome.dropped else rows
        kept = kept.persist()
        kept.count()
    finally:
        copies.unpersist()
    return kept, outcome


def _describe(outcome: Any, group: Any, limit: int, entry: Any) -> None:
    """As `duplicates.find` does for each event whose copies disagree."""
    conflict = group.describe()
    outcome.events += 1
    if len(outcome.examples) < limit:
        outcome.examples.append({k: v for k, v in conflict.items() if k != "versions"})
    outcome.errors.append(entry(conflict))


# -- implausible times ----------------------------------------------------------------------
def _implausible(rows: Any, ceiling_us: int) -> Any:
    from pyspark.sql import functions as F

    earliest = F.when(
        F.col("source") == "cloudtrail", F.lit(_epoch_us(CLOUDTRAIL_EARLIEST))
    ).otherwise(F.lit(_epoch_us(HOST_EARLIEST)))
    return rows.filter((F.col("timestamp") > ceiling_us) | (F.col("timestamp") < earliest))


def _implausible_examples(
    rows: Any, tasks: list[FileTask], ceiling_us: int
) -> list[dict[str, Any]]:
    """The first few, in the DuckDB path's parse order, before de-duplication, as it does."""
    found = (
        _implausible(rows, ceiling_us)
        .select(*KEYS, "evidence_id", "event_id", "timestamp")
        .orderBy(*KEYS)
        .limit(IMPLAUSIBLE_EXAMPLES)
        .collect()
    )
    return [
        {
            "evidence_id": r["evidence_id"],
            "path": tasks[r["_task"]].relpath,
            "event_id": r["event_id"],
            "timestamp": _iso_us(r["timestamp"]),
        }
        for r in found
    ]


def _implausible_times(
    kept: Any, ceiling_us: int, examples: list[dict[str, Any]]
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    rows, earliest, latest = (
        _implausible(kept, ceiling_us)
        .agg(F.count(F.lit(1)), F.min("timestamp"), F.max("timestamp"))
        .collect()[0]
    )
    return {
        "rows": int(rows),
        "earliest": _iso_us(earliest) if earliest is not None else None,
        "latest": _iso_us(latest) if latest is not None else None,
        "examples": examples if rows else [],
    }


# -- writing --------------------------------------------------------------------------------
class PartsTarget:
    """Where the executors write the timeline's parts: into `building/` (the case folder),
    or under `run_uri`, this run's own folder at a storage URI, listed in parts.json.

    A run writes into a folder no earlier run used, so a failed run leaves the case's
    timeline whole: the parts it wrote are removed (`discard`), and the previous
    parts.json, still in place, names only the previous run's parts. cloudir never
    removes a previous run's parts at the URI itself (parts.json is read from the case,
    which may have been edited); the CLI names them for the responder to remove.
    """

    def __init__(self, building: Path, run_uri: str | None, aws: AwsOptions | None) -> None:
        self.building = building
        self.run_uri = run_uri
        self.aws = aws

    def write(self, kept: Any) -> None:
        """Each Spark partition written by an executor, by the DuckDB path's writer: one
        part per timeline partition (source, event date; layout.py) its rows fall in."""
        folder, run_uri, aws = str(self.building), self.run_uri, self.aws

        def write_partition(index: int, rows: Iterable[Any]) -> Iterator[tuple[str, int]]:
            name = f"part-{index:05d}.parquet"
            if run_uri is None:
                yield from _write_part(folder, name, rows).items()
                return
            filesystem, root = open_uri(run_uri, aws)
            for path, count in _write_part(root, name, rows, filesystem).items():
                yield run_uri + path[len(root) :], count

        columns = kept.select("timestamp", *VALUE_COLUMNS)
        written = sorted(columns.rdd.mapPartitionsWithIndex(write_partition).collect())
        if run_uri is None:
            if not written:  # no rows at all is still a timeline, as in the DuckDB path
                _parquet_writer(self.building / "part-0-empty.parquet").close()
            return
        filesystem, root = open_uri(run_uri, aws)
        if not written:
            _parquet_writer(f"{root}/part-0-empty.parquet", filesystem).close()
            written = [(join(run_uri, "part-0-empty.parquet"), 0)]
        paths = [root + uri[len(run_uri) :] for uri, _ in written]
        sizes = [info.size for info in filesystem.get_file_info(paths)]
        listing = {
            "format": PARTS_FORMAT,
            "root": run_uri,
            "parts": [
                {"uri": uri, "rows": rows, "bytes": size}
                for (uri, rows), size in zip(written, sizes, strict=True)
            ],
        }
        (self.building / PARTS_FILE).write_text(json.dumps(listing, indent=1) + "\n")

    def discard(self) -> None:
        """Remove what this run wrote at the URI (its own folder, named by this run)."""
        if self.run_uri is None:
            return
        with contextlib.suppress(Exception):  # the run's failure is the error to report
            filesystem, root = open_uri(self.run_uri, self.aws)
            filesystem.delete_dir(root)


def run_folder() -> str:
    """A folder name no other run of any case takes: the UTC time, then random hex."""
    moment = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"timeline-{moment}-{secrets.token_hex(4)}"


def _write_part(
    folder: str, name: str, rows: Iterable[Any], filesystem: Any = None
) -> dict[str, int]:
    """Rows (time in epoch microseconds) to Parquet parts named `name`, one per timeline
    partition; no file for no rows. Returns each file written with its rows."""
    import pyarrow as pa

    from cloudir.analyze.layout import PartitionedParts
    from cloudir.analyze.schema import TIMELINE_SCHEMA

    out = PartitionedParts(folder, name, filesystem=filesystem)
    pending: list[Any] = []

    def flush() -> None:
        columns = list(zip(*pending, strict=True))
        arrays = [pa.array(columns[0], pa.int64()).cast(TIMELINE_SCHEMA.field(0).type)]
        arrays += [pa.array(c, pa.string()) for c in columns[1:]]
        for batch in pa.Table.from_arrays(arrays, schema=TIMELINE_SCHEMA).to_batches():
            out.add(batch)
        pending.clear()

    for row in rows:
        pending.append(tuple(row))
        if len(pending) >= ROW_GROUP_ROWS:
            flush()
    if pending:
        flush()
    return {path: sum(n for _, n in runs) for path, runs in out.close().items()}
