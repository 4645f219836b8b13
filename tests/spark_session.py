"""The one SparkSession a test run shares (`spark`), and a small case to run it over.

Starting Spark costs a JVM and seconds, so every Spark test in the run asks for the same
session-scoped fixture: `local[2]` with cloudir's local settings (4 shuffle partitions, no
UI, UTC), made by `cloudir.engines.spark_session`, the code the CLI uses. Without pyspark or
Java the fixture skips with the reason; CI sets CLOUDIR_REQUIRE_SPARK=1 once Java is there
(.ci/run), and then a Spark that cannot start fails the test instead.

Imported into tests/conftest.py, so any test module can ask for `spark` and `spark_case`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TEST_MASTER = "local[2]"


def _why_no_spark() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'cloudir[spark]')"
    from cloudir.engines.spark_session import java_command

    if java_command() is None:
        return "no java for pyspark (JAVA_HOME or the PATH); .ci/run installs openjdk-17"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    why = _why_no_spark()
    if why is not None:
        if os.environ.get("CLOUDIR_REQUIRE_SPARK") == "1":
            pytest.fail(f"CLOUDIR_REQUIRE_SPARK=1 but {why}")
        pytest.skip(why)
    from cloudir.engines.spark_session import spark_session

    session = spark_session(TEST_MASTER)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A case holding the repository's CloudTrail corpus and its (DuckDB-built) timeline."""
    from tests.conftest import CORPUS_COPY, cloudir

    case = tmp_path_factory.mktemp("spark") / "case"
    source = CORPUS_COPY / "cloudtrail"
    captured = cloudir("capture", "files", "--case", str(case), str(source))
    assert captured.code == 0, captured.stderr
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code in (0, 3), built.stderr  # 3: some corpus files are hostile on purpose
    assert built.json()["rows"] > 100
    return case
