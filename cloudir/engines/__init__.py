"""The engines cloudir's analysis runs on: DuckDB (built in, the default) and Apache Spark.

DuckDB needs nothing set up, so it has no module here; Spark needs a session, made once per
process by `spark_session`. Nothing in this package imports pyspark at import time: the
DuckDB path and `cloudir --help` never load it.
"""

from __future__ import annotations

from typing import Final

DUCKDB: Final = "duckdb"
SPARK: Final = "spark"
ENGINES: Final = (DUCKDB, SPARK)


def check_engine(name: str) -> str:
    """`name` lower-cased when it is an engine cloudir has, else a UsageError naming them."""
    from cloudir.errors import UsageError

    engine = name.strip().lower()
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not {name!r}")
    return engine
