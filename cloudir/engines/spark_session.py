"""The one SparkSession a cloudir process works with, and the checks before it starts.

Which session, in this order:
1. the active one, when cloudir runs inside a Spark application that already made it
   (a Databricks job, a notebook): its cluster, its configuration;
2. under `spark-submit` (the JVM is already up, PYSPARK_GATEWAY_PORT names it), the one
   that spark-submit's `--master` and `--conf` describe; `--spark-master` overrides the master;
3. else a new one that pyspark starts (a JVM child process), with the master from
   `--spark-master`, else the environment's SPARK_MASTER, else `local[*]`.

Only in the last case does cloudir choose settings beyond the time zone, for a laptop:
no web UI (a port nobody looks at, and a second cloudir would fight over it), few shuffle
partitions (Spark's default of 200 makes hundreds of tiny tasks on a few cores), the driver
bound to 127.0.0.1 (a sandbox's hostname often does not resolve) and the JVM's logging at
ERROR (its warnings are noise in a CLI whose stderr is for the responder).

The session time zone is always UTC. The timeline's timestamps are instants stored as UTC
(`timestamp[us, tz=UTC]`); Spark renders them, casts them to strings and dates, and takes
hour() and date_trunc() in the session's zone, which defaults to the JVM's (the cluster
machine's) zone. In UTC, Spark answers what DuckDB answers (cloudir runs DuckDB in UTC too,
see `analyze.duck`), and a timeline reads the same on every cluster.

pyspark and Java are checked before anything starts, so a machine without them gets one
line (exit 2) instead of a JVM's stack trace: pyspark by importing it, Java by asking
`java -version` where pyspark's launcher would find it (JAVA_HOME, else the PATH).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloudir.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER: Final = "local[*]"
MASTER_ENV: Final = "SPARK_MASTER"
SESSION_TIME_ZONE: Final = "UTC"
INSTALL_HINT: Final = "pip install 'cloudir[spark]'"
OLDEST_JAVA: Final = 8  # pyspark 3.5 runs on Java 8, 11 and 17
LOG4J_CONFIG: Final = Path(__file__).with_name("log4j2.properties")

_LOCAL = re.compile(r"^local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')

_session: SparkSession | None = None


def spark_session(master: str | None = None) -> SparkSession:
    """The process's SparkSession, made on the first call (see the module's docstring)."""
    global _session
    if _session is not None:
        return _session
    pyspark_sql = _import_pyspark()
    active = pyspark_sql.SparkSession.getActiveSession()
    if active is not None:
        session = active
    elif os.environ.get("PYSPARK_GATEWAY_PORT"):  # under spark-submit: its JVM, its conf
        builder = pyspark_sql.SparkSession.builder.appName("cloudir")
        session = (builder.master(master) if master else builder).getOrCreate()
    else:
        chosen = master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER
        check_java()
        # Python workers (the timeline's parse runs in them) must be this interpreter, whose
        # environment holds cloudir and pyarrow, not the PATH's python3; pyspark reads only
        # the environment variable for that.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = pyspark_sql.SparkSession.builder.appName("cloudir").master(chosen)
        for key, value in new_session_conf(chosen).items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
    session.conf.set("spark.sql.session.timeZone", SESSION_TIME_ZONE)
    _session = session
    return session


def new_session_conf(master: str) -> dict[str, str]:
    """The settings cloudir gives a session it starts itself; local masters get laptop ones."""
    conf = {
        "spark.sql.session.timeZone": SESSION_TIME_ZONE,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG}",
    }
    cores = local_cores(master)
    if cores is not None and not os.environ.get("SPARK_DRIVER_MEMORY"):
        # local mode runs every task in the driver's JVM, whose heap is 1 GB unless told:
        # two tasks parsing CloudTrail files and de-duplicating a million rows exceed it
        conf["spark.driver.memory"] = local_driver_memory()
    if cores is not None:
        conf["spark.sql.shuffle.partitions"] = str(max(2, 2 * cores))
        conf["spark.default.parallelism"] = str(max(2, 2 * cores))
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    return conf


def local_driver_memory(total_bytes: int | None = None) -> str:
    """The heap of a local session's JVM: a quarter of the machine's memory, 1-8 GB."""
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total_bytes = 4 << 30
    gigabytes = max(1, min(8, (total_bytes // 4) >> 30))
    return f"{gigabytes}g"


def local_cores(master: str) -> int | None:
    """How many cores a `local`, `local[N]` or `local[*]` master uses; None for a cluster."""
    match = _LOCAL.match(master.strip())
    if match is None:
        return None
    if match.group(1) in (None, ""):
        return 1
    if match.group(1) == "*":
        return os.cpu_count() or 1
    return max(1, int(match.group(1)))


def _import_pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError as exc:
        raise UsageError(
            f"--engine spark needs pyspark, which is not installed ({exc.name or exc}): "
            f"{INSTALL_HINT}"
        ) from exc
    return pyspark.sql


def java_command() -> str | None:
    """The `java` pyspark's launcher would run: JAVA_HOME's, else the first on the PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() else None
    return shutil.which("java")


def java_major(version_output: str) -> int | None:
    """The major version `java -version` reports (`1.8.0_371` is 8, `17.0.15` is 17)."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def check_java() -> None:
    """A UsageError unless a Java that pyspark 3.5 runs on is where it will look."""
    java = java_command()
    where = "JAVA_HOME" if os.environ.get("JAVA_HOME") else "the PATH"
    if java is None:
        raise UsageError(
            f"--engine spark needs Java {OLDEST_JAVA} or later and there is no java on {where}: "
            "install a JRE (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--engine spark: {java} -version failed: {exc}") from exc
    major = java_major(done.stderr + done.stdout)
    if major is None:
        raise UsageError(f"--engine spark: cannot tell the version of {java} (`java -version`)")
    if major < OLDEST_JAVA:
        raise UsageError(
            f"--engine spark needs Java {OLDEST_JAVA} or later; {java} is Java {major}: "
            "install a newer JRE (Debian: openjdk-17-jre-headless) or set JAVA_HOME"
        )


def is_spark_failure(exc: BaseException) -> bool:
    """A failed Spark job or task (py4j's or pyspark's exception), not a bug of cloudir's."""
    return type(exc).__module__.split(".")[0] in ("py4j", "pyspark")


_LOST_TASK = re.compile(r"most recent failure: .*?\): (\S.*)$")


def spark_failure(exc: BaseException) -> str:
    """One line for a failed Spark job, never the JVM's stack trace: the Python exception a
    task raised (the last line of the Python traceback inside the JVM's message), else why
    the task was lost, else the deepest `Caused by:`, else the Java exception py4j names,
    else the message's first line."""
    lines = str(exc).splitlines()
    raised = None
    for start, line in enumerate(lines):
        if line.rstrip().endswith("Traceback (most recent call last):"):
            for later in lines[start + 1 :]:
                if later.startswith("\tat ") or not later.strip():
                    break
                if not later.startswith((" ", "\t")):
                    raised = later.strip()
    lost = next((m[1] for line in lines if (m := _LOST_TASK.search(line))), None)
    causes = [
        line.removeprefix("Caused by: ").strip() for line in lines if line.startswith("Caused by: ")
    ]
    # py4j puts the Java exception on the line after "An error occurred while calling ...",
    # as ": java.lang.OutOfMemoryError: Java heap space"
    thrown = next((line[2:].strip() for line in lines if line.startswith(": ")), None)
    first = next((line.strip() for line in lines if line.strip()), "")
    chosen = raised or lost or (causes[-1] if causes else None) or thrown or first
    return chosen[:500] or type(exc).__name__
