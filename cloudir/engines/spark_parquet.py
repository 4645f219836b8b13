"""Parquet files as a Spark DataFrame, whatever the case folder is called.

Spark's own reader is used wherever Hadoop can name each file (`hadoop_path`): it prunes
columns and row groups and splits big files. One kind of local path has no name in
Hadoop, a colon and a glob character together (`/cases/2024-07-31T10:00 [prod]/`); those
files are read by pyarrow on the executors instead (`mapInArrow` over the list of
paths), so the Spark engine reads every case the DuckDB engine reads. That reader is
slower (no pruning, a file per task at a time), which only such folders pay.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cloudir.engines.hadoop_path import hadoop_path
from cloudir.errors import UsageError

BATCH_ROWS = 65_536


def read_parquet(spark: Any, files: Sequence[Path | str], schema: Any = None) -> Any:
    """A DataFrame over exactly `files` (`schema`: Spark's StructType, or the files')."""
    try:
        names = [hadoop_path(f) for f in files]
    except UsageError:
        return _read_with_arrow(spark, [os.path.abspath(f) for f in files], schema)
    reader = spark.read if schema is None else spark.read.schema(schema)
    return reader.parquet(*names)


def _read_with_arrow(spark: Any, paths: list[str], schema: Any) -> Any:
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema

    if schema is None:
        schema = from_arrow_schema(pq.read_schema(paths[0]))
    names = list(schema.fieldNames())
    listing = spark.createDataFrame([(p,) for p in paths], "path string")
    tasks = max(1, min(len(paths), spark.sparkContext.defaultParallelism))

    def read(batches: Iterable[Any]) -> Iterator[Any]:
        yield from _batches(batches, names)

    return listing.repartition(tasks).mapInArrow(read, schema)


def _batches(listings: Iterable[Any], names: list[str]) -> Iterator[Any]:
    """Each listed file's rows, its columns in `names`' order (the DataFrame's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for listing in listings:
        for path in listing.column(0).to_pylist():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=names):
                yield pa.RecordBatch.from_arrays([batch.column(n) for n in names], names=names)
