"""`--engine` and `--spark-master` on timeline, detect and query; what the Spark engine
refuses before any JVM starts (no pyspark, no Java, parts not built in this version)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudir.engines import check_engine
from cloudir.engines.spark_session import (
    java_major,
    local_cores,
    local_driver_memory,
    new_session_conf,
    spark_failure,
)
from cloudir.errors import UsageError
from tests.conftest import REPO, cloudir

INSTALL = "pip install 'cloudir[spark]'"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("command", ["timeline", "detect", "query"])
def test_an_unknown_engine_is_refused_in_one_line(command: str, spark_case: Path) -> None:
    args = [command, "--case", str(spark_case), "--engine", "flink"]
    result = cloudir(*args, *(["SELECT 1"] if command == "query" else []))
    assert result.code == 2
    assert "--engine must be one of duckdb, spark, not 'flink'" in _one_line(result.stderr)


@pytest.mark.parametrize("command", ["timeline", "detect", "query"])
def test_spark_master_without_the_spark_engine_is_refused(command: str, spark_case: Path) -> None:
    args = [command, "--case", str(spark_case), "--spark-master", "local[2]"]
    result = cloudir(*args, *(["SELECT 1"] if command == "query" else []))
    assert result.code == 2
    assert "--spark-master goes with --engine spark" in _one_line(result.stderr)


def test_engine_names_are_checked_and_lower_cased() -> None:
    assert check_engine("Spark") == "spark"
    assert check_engine("duckdb") == "duckdb"
    with pytest.raises(UsageError, match="one of duckdb, spark"):
        check_engine("sparkk")


@pytest.mark.parametrize(
    ("master", "cores"),
    [("local", 1), ("local[2]", 2), ("local[3, 4]", 3), ("spark://h:7077", None), ("yarn", None)],
)
def test_local_masters_are_told_from_clusters(master: str, cores: int | None) -> None:
    assert local_cores(master) == cores


def test_local_star_uses_every_core() -> None:
    assert local_cores("local[*]") == (os.cpu_count() or 1)


def test_a_session_cloudir_starts_speaks_utc_with_small_shuffles_locally() -> None:
    local = new_session_conf("local[2]")
    assert local["spark.sql.session.timeZone"] == "UTC"
    assert local["spark.sql.shuffle.partitions"] == "4"
    assert local["spark.ui.enabled"] == "false"
    cluster = new_session_conf("spark://master:7077")
    assert cluster["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in cluster  # the cluster's own choice stands
    assert "spark.driver.host" not in cluster
    assert "spark.driver.memory" not in cluster


def test_a_local_session_gets_a_quarter_of_the_memory_within_1_to_8_gb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gib = 1 << 30
    assert [local_driver_memory(n * gib) for n in (2, 8, 23, 64, 256)] == [
        "1g", "2g", "5g", "8g", "8g",
    ]  # fmt: skip
    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    assert new_session_conf("local[2]")["spark.driver.memory"] == local_driver_memory()
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "3g")  # the user's choice, which Spark reads
    assert "spark.driver.memory" not in new_session_conf("local[2]")


def test_a_driver_out_of_memory_names_the_java_error() -> None:
    message = (
        "An error occurred while calling o155.collectToPython.\n"
        ": java.lang.OutOfMemoryError: Java heap space\n"
        "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)\n"
    )
    assert spark_failure(RuntimeError(message)) == "java.lang.OutOfMemoryError: Java heap space"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_371"', 8),
        ('openjdk version "11" 2018-09-25', 11),
        ('java version "1.7.0_80"', 7),
        ("no version here", None),
    ],
)
def test_the_java_version_is_read_as_java_reports_it(output: str, major: int | None) -> None:
    assert java_major(output) == major


def _shadowed_pyspark(tmp_path: Path) -> dict[str, str]:
    """An environment whose `import pyspark` fails as it does where pyspark is absent."""
    shim = tmp_path / "shim" / "pyspark"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyspark'\", name='pyspark')\n"
    )
    path = [str(tmp_path / "shim"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}


def test_query_on_spark_without_pyspark_says_how_to_install_it(
    spark_case: Path, tmp_path: Path
) -> None:
    env = _shadowed_pyspark(tmp_path)
    result = cloudir("query", "--case", str(spark_case), "--engine", "spark", "SELECT 1", env=env)
    assert result.code == 2
    line = _one_line(result.stderr)
    assert "--engine spark needs pyspark, which is not installed" in line
    assert INSTALL in line


def test_spark_without_java_is_refused_before_a_jvm_starts(spark_case: Path) -> None:
    pytest.importorskip("pyspark", reason="pyspark is not installed")
    env = {"JAVA_HOME": str(spark_case / "no-such-jdk")}
    result = cloudir("query", "--case", str(spark_case), "--engine", "spark", "SELECT 1", env=env)
    assert result.code == 2
    assert "--engine spark needs Java 8 or later and there is no java on JAVA_HOME" in _one_line(
        result.stderr
    )


def test_timeline_on_spark_without_its_module_is_refused_in_one_line(spark_case: Path) -> None:
    """A build without cloudir.analyze.spark_timeline answers in one line, exit 2."""
    parts = sorted((spark_case / "timeline").rglob("*.parquet"))
    program = (
        "import sys\n"
        "sys.modules['cloudir.analyze.spark_timeline'] = None  # this build lacks it\n"
        "from cloudir.cli import main\n"
        "sys.argv = ['cloudir', 'timeline', '--case', sys.argv[1], '--engine', 'spark']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", program, str(spark_case)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "timeline --engine spark is not available in this version" in _one_line(proc.stderr)
    assert sorted((spark_case / "timeline").rglob("*.parquet")) == parts  # left as it was


def test_duckdb_only_options_are_refused_on_the_spark_timeline(spark_case: Path) -> None:
    result = cloudir("timeline", "--case", str(spark_case), "--engine", "spark", "--workers", "2")
    assert result.code == 2
    assert "--workers and --fs-timeline are the duckdb engine's" in _one_line(result.stderr)


def test_the_duckdb_path_never_imports_pyspark(spark_case: Path, tmp_path: Path) -> None:
    """With an `import pyspark` that fails, help and the default engine work as before."""
    env = _shadowed_pyspark(tmp_path)
    assert cloudir("query", "--help", env=env).code == 0
    result = cloudir(
        "query", "--case", str(spark_case), "SELECT count(*) AS n FROM timeline", "--json", env=env
    )
    assert result.code == 0, result.stderr
    assert result.json()[0]["n"] > 100


def test_query_on_spark_without_a_timeline_says_what_to_run(tmp_path: Path) -> None:
    source = tmp_path / "x.json"
    source.write_text('{"Records": []}')
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    env = {"JAVA_HOME": str(tmp_path / "no-such-jdk")}  # answered before Spark is asked
    result = cloudir("query", "--case", str(case), "--engine", "spark", "SELECT 1", env=env)
    assert result.code == 3
    assert "run `cloudir timeline" in _one_line(result.stderr)
