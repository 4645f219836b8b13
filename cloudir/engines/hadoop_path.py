"""Local paths as Spark's file readers (Hadoop's) take them: that one file, as named.

`spark.read.parquet(path)` hands each path to Hadoop, which reads two things into it:
`new Path(text)` takes a colon before the first slash for a URI scheme (and refuses a
relative path holding one), and the globber expands `* ? [ ] { }` in every part of the
path, with `\\` as its escape. A case folder is named by a responder (`case[1]`,
`2024-07-31T10:00`), so a timeline file in it reaches Spark through `hadoop_path`.

One combination has no name: the globber rebuilds the path a part at a time, and a part
holding a colon is then read as a scheme, whatever is escaped. A path with a colon and a
glob character is a UsageError here; `spark_parquet.read_parquet` then reads its files
with pyarrow instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from cloudir.errors import UsageError
from cloudir.storage_uri import is_uri

GLOB_CHARACTERS: Final = "*?[]{}\\"  # what makes Spark hand a path to Hadoop's globber
HADOOP_SPECIAL: Final = GLOB_CHARACTERS + ":"  # and a colon, a URI scheme's
_GLOB = re.compile(r"([*?\[\]{}\\])")


def hadoop_path(path: Path | str) -> str:
    """`path` as Hadoop names exactly that local file: absolute, as this process sees it
    (the JVM resolves a relative path against its own working folder, or on a cluster
    against the default file system's home).

    A path holding a special character also has each glob character and backslash
    escaped with a backslash (the globber then matches it literally) and `file:` in
    front: a path with a colon must be a URI, lest the colon be read as a scheme's. A
    path with both a colon and a glob character is a UsageError (see above).
    """
    if is_uri(path):  # a part at a storage URI (parts.json): the cluster's own name for it
        return str(path)
    absolute = os.path.abspath(path)
    if not any(ch in absolute for ch in HADOOP_SPECIAL):
        return absolute
    if ":" in absolute and any(ch in absolute for ch in GLOB_CHARACTERS):
        raise UsageError(
            f"{absolute}: Spark cannot read a file whose path holds a colon and one of "
            f"{' '.join(GLOB_CHARACTERS)}; use --engine duckdb, or move or rename the case folder"
        )
    return "file:" + _GLOB.sub(r"\\\1", absolute)
