"""Where a timeline's Parquet may live outside the case folder: a storage URI.

An organization's timeline belongs next to its trail (`s3://` on EMR, `abfss://` on
Databricks), written by the cluster's executors, while the case folder (custody log, lock,
findings) stays on the responder's disk. Every reader and writer opens such a URI here,
through pyarrow's file systems, so the Spark executors, the DuckDB engine and a laptop
reading the cluster's result all name the same files the same way.

A URI is text as written, as Hadoop reads it (`s3://b/org trail/` is a folder with a
space in its name), never percent-decoded. The schemes are the ones pyarrow opens and
Spark reads: `s3://` (EMRFS's name) and `s3a://` (Hadoop's, on Spark outside EMR) are one
store to pyarrow; `abfs(s)://` Azure Data Lake; `gs://` Google Cloud Storage; `hdfs://`;
and `file://` for a shared mount (`/dbfs`, EFS) named as a URI. A bare path is not a URI:
the case folder already is one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from cloudir.errors import CloudError, UsageError

if TYPE_CHECKING:
    from cloudir.aws import AwsOptions

SCHEMES: Final = ("s3", "s3a", "abfs", "abfss", "gs", "hdfs", "file")
HADOOP_SPECIAL: Final = "*?[]{}\\:"  # engines/hadoop_path.py: globbed, or read as a scheme
_AS_IS: Final = "/@:=+,;~!$&'()*"  # what a path keeps unquoted when handed to pyarrow
_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")


def is_uri(name: object) -> bool:
    """True for `scheme://...` text; a local Path or a plain path is not a URI."""
    return isinstance(name, str) and _URI.match(name) is not None


def check_uri(uri: str) -> str:
    """`uri` without a trailing slash, or a UsageError naming what is wrong with it."""
    found = _URI.match(uri)
    if found is None:
        raise UsageError(f"{uri}: not a storage URI; give one like s3://bucket/prefix")
    scheme, rest = found.groups()
    if scheme not in SCHEMES:
        raise UsageError(f"{uri}: cloudir cannot write {scheme}://; use one of {_named()}")
    rest = rest.rstrip("/")
    if scheme == "file" and not rest.startswith("/"):
        raise UsageError(f"{uri}: a file:// URI names an absolute path (file:///mnt/shared/...)")
    if scheme != "file" and not rest.split("/", 1)[0]:
        raise UsageError(f"{uri}: no bucket, container or host after {scheme}://")
    if any(part in (".", "..") for part in rest.split("/")):
        raise UsageError(f"{uri}: `.` and `..` are not allowed in a storage URI")
    path = rest if scheme == "file" else rest.partition("/")[2]
    if any(ch in path for ch in HADOOP_SPECIAL):
        raise UsageError(
            f"{uri}: Spark's reader takes {' '.join(HADOOP_SPECIAL)} in a path for a pattern "
            "or a scheme; choose a folder without them"
        )
    return f"{scheme}://{rest}"


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def open_uri(uri: str, aws: AwsOptions | None = None) -> tuple[Any, str]:
    """pyarrow's file system for `uri` and the path within it.

    S3 takes its credentials and endpoint from the machine that does the reading or
    writing (on a cluster, the executor's role): `aws` (`--profile`, `--endpoint-url`)
    names them, and is resolved there, so no secret travels in a Spark task. Without it,
    the AWS SDK's own chain applies (AWS_PROFILE, AWS_ENDPOINT_URL, instance roles).
    """
    from pyarrow import fs as pafs

    scheme, _, rest = uri.partition("://")
    if scheme in ("s3", "s3a"):
        if aws is not None and (aws.profile or aws.endpoint_url or aws.region):
            return _s3(aws), rest
        scheme = "s3"
    try:  # pyarrow parses a URI (`%20`); cloudir's, like Hadoop's, are text as written
        filesystem, path = pafs.FileSystem.from_uri(f"{scheme}://{quote(rest, safe=_AS_IS)}")
    except (ValueError, OSError) as exc:
        raise UsageError(f"{uri}: cannot open: {_first_line(exc)}") from exc
    return filesystem, path


def check_reachable(uri: str, aws: AwsOptions | None = None) -> None:
    """Fail in one line, before any work, when `uri` cannot be written: its bucket (or
    container) missing or refused, or a file:// folder that does not exist.

    A file:// folder must exist already: a shared mount that is not mounted would
    otherwise be created, empty, on the driver's own disk.
    """
    from pyarrow import fs as pafs

    filesystem, path = open_uri(uri, aws)
    scheme = uri.partition("://")[0]
    where = path if scheme == "file" else path.split("/", 1)[0]
    try:
        found = filesystem.get_file_info(where).type
    except OSError as exc:
        raise CloudError(f"{uri}: cannot be reached: {_first_line(exc)}") from exc
    if found != pafs.FileType.Directory:
        what = "folder" if scheme == "file" else "bucket or container"
        error = UsageError if scheme == "file" else CloudError
        raise error(f"{uri}: the {what} {where} does not exist")


def _s3(aws: AwsOptions) -> Any:
    import os

    from pyarrow import fs as pafs

    from cloudir.aws import Aws

    session = Aws(aws)
    credentials = session.session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    endpoint = session.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    options: dict[str, Any] = {"region": session.region}
    if endpoint:
        options["endpoint_override"] = endpoint
        options["scheme"] = "https" if endpoint.startswith("https") else "http"
    if frozen is not None:
        options.update(
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token,
        )
    return pafs.S3FileSystem(**options)


def _named() -> str:
    return ", ".join(f"{scheme}://" for scheme in SCHEMES)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
