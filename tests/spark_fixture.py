"""One SparkSession for the whole test run (`local[2]`), or a skip that says why.

Starting a JVM costs seconds and the machine has two cores, so every Spark test shares
this session-scoped fixture. It is skipped, with the reason, where pyspark or Java is
missing; `.ci/run` installs both, so in CI the Spark tests always run.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.skip("pyspark is not installed (pip install 'cloudir[spark]')")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime on PATH; pyspark needs Java 17 (openjdk-17-jre-headless)")
    # Python workers run this interpreter (its venv: cloudir, pyarrow), not PATH's python3;
    # pyspark reads only the environment variable for that.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cloudir-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()
