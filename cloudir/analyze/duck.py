"""DuckDB connections that always speak UTC, never fetch extensions, and can be sealed.

DuckDB renders and converts TIMESTAMPTZ in the process's local zone, and the Python
wheel cannot load the ICU extension offline to change that per connection. A forensic
timeline must read the same on every laptop, so cloudir's processes run in UTC.

SQL that cloudir did not write (a responder's `query`, a community Sigma rule compiled by
`detect`) runs on a sealed connection: once the views it needs exist, DuckDB's access to
files and the network is switched off except for the exact files named, and the
configuration is locked, so no statement can switch it back on.

DuckDB's file readers expand `* ? [` anywhere in a path they are given, a case folder's
name included (`/cases/case[1]/` reads `/cases/case1/`), so every read of the timeline's
Parquet goes through `parquet_source` here, which names each file so that it matches
itself and nothing else. A timeline whose parts live at a storage URI (parts.json) is
read through `timeline_source`: an Arrow dataset over pyarrow's file systems, since
DuckDB's own (httpfs, azure) are extensions it would have to download.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from cloudir.errors import UsageError
from cloudir.storage_uri import is_uri, open_uri

# Never reach for the network (or ~/.duckdb) to fetch an extension a statement names.
OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def sql_str(text: str) -> str:
    """A SQL string literal: DuckDB reads `text` back exactly, quotes and all."""
    return "'" + text.replace("'", "''") + "'"


GLOB_CHARACTERS: Final = "*?["
"""What DuckDB's readers expand in a path; `]`, `{` and `}` alone are read as written."""


def literal_path(path: Path | str) -> str:
    """`path` written so that DuckDB's readers take it as this one file, never a pattern.

    Each glob character becomes a one-character class (`[` is written `[[]`), which
    matches only itself; a path without them is returned as it is, so DuckDB reads it
    as before and names it as before (`filename`). DuckDB splits a pattern at `\\` as
    well as `/`, so a path holding both cannot be named at all: a one-line UsageError.
    """
    text = str(path)
    if not any(ch in text for ch in GLOB_CHARACTERS):
        return text
    if "\\" in text:
        raise UsageError(
            f"{text}: DuckDB cannot read a file whose path holds a backslash and one of "
            f"{' '.join(GLOB_CHARACTERS)}; move or rename the case folder"
        )
    return "".join(f"[{ch}]" if ch in GLOB_CHARACTERS else ch for ch in text)


def parquet_source(files: Iterable[Path | str], *, row_ids: bool = False) -> str:
    """`read_parquet(...)` over exactly `files`, without the folders' partition keys.

    With `row_ids`, each row also has the `filename` (as given) and `file_row_number` it
    was read from. DuckDB's own reader reads the files, so its pruning (row groups by
    their statistics, columns the query does not name) is what it was for plain paths.
    """
    names = ", ".join(sql_str(literal_path(f)) for f in files)
    ids = ", filename=true, file_row_number=true" if row_ids else ""
    return f"read_parquet([{names}]{ids}, hive_partitioning=false)"


REMOTE_PARTS: Final = "cloudir_timeline_parts"  # the Arrow dataset's name on a connection


def timeline_source(con: Any, files: Sequence[Path | str]) -> str:
    """SQL naming the timeline's rows on `con`, whichever storage holds its parts.

    Local files: `parquet_source`. Parts at a storage URI: an Arrow dataset over exactly
    those files, registered on `con`; DuckDB pushes its column choice and filters into
    the scan, and a sealed connection still reads it (the reads are pyarrow's, not
    DuckDB's external access, and go only to the files listed).
    """
    remote = [str(f) for f in files if is_uri(f)]
    if not remote:
        return parquet_source(files)
    if len(remote) != len(files):
        raise UsageError("a timeline is either in the case folder or at a URI, not both")
    con.register(REMOTE_PARTS, remote_dataset(remote))
    return REMOTE_PARTS


def remote_dataset(uris: Sequence[str]) -> Any:
    """The parts at `uris` as one Arrow dataset in the timeline's schema. The file system
    is opened once, at the folder the parts share: S3 resolves a bucket's region then,
    not once per part."""
    import pyarrow.dataset as ds

    from cloudir.analyze.schema import TIMELINE_SCHEMA

    root = _shared_folder(uris)
    filesystem, root_path = open_uri(root)
    paths = [root_path + uri[len(root) :] for uri in uris]
    return ds.dataset(paths, schema=TIMELINE_SCHEMA, format="parquet", filesystem=filesystem)


def _shared_folder(uris: Sequence[str]) -> str:
    """The longest folder (whole `/` steps) that holds every one of `uris`."""
    steps = uris[0].split("/")[:-1]
    for uri in uris[1:]:
        other = uri.split("/")[:-1]
        keep = 0
        while keep < min(len(steps), len(other)) and steps[keep] == other[keep]:
            keep += 1
        steps = steps[:keep]
    return "/".join(steps)


def timeline_view_sql(con: Any, source: str, promoted: bool = True) -> str:
    """SELECT over a timeline's rows with every column of the current schema: a timeline
    written before the promoted columns (schema 1), or before some of them, reads them all
    as NULL (`promoted_from` too), which sends rules to `raw` as for any row without them,
    so an older case still runs and finds the same.

    Without `promoted`: the event's own columns only, as `cloudir query` shows them. The
    promoted ones are copies of fields in `raw` for the rules; 37 columns made `SELECT *`
    unreadable in a terminal, and `raw->>'userAgent'` reads the same value."""
    from cloudir.analyze.schema import PROMOTED_COLUMNS, PROMOTED_FROM

    names = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if not promoted:
        present = [quote_ident(c) for c in PROMOTED_COLUMNS if c in names]
        hidden = f" EXCLUDE ({', '.join(present)})" if present else ""
        return f"SELECT *{hidden} FROM {source}"
    missing = [c for c in PROMOTED_COLUMNS if c not in names]
    if not missing:
        return f"SELECT * FROM {source}"
    unset = f" REPLACE (NULL::VARCHAR AS {PROMOTED_FROM})" if PROMOTED_FROM in names else ""
    added = "".join(f", NULL::VARCHAR AS {quote_ident(c)}" for c in missing)
    return f"SELECT *{unset}{added} FROM {source}"


def quote_ident(name: str) -> str:
    """A quoted SQL identifier, for column and struct member names taken from data."""
    return '"' + name.replace('"', '""') + '"'


def bind(con: Any, select: str) -> None:
    """Raise DuckDB's error if `select` cannot be bound on `con` (an unknown column, a
    function or type that does not fit); nothing is run.

    A prepared statement, dropped at once: EXPLAIN binds the same way, then optimizes,
    plans and renders the plan as text, which for every shipped rule in one statement
    took 1.1 s of detect's start against PREPARE's 0.3 s.
    """
    con.execute(f"PREPARE _cloudir_bind AS {select}")
    con.execute("DEALLOCATE _cloudir_bind")


def connect(config: dict[str, Any] | None = None) -> Any:
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    import duckdb

    return duckdb.connect(config={**OFFLINE, **(config or {})})


def seal(con: Any, readable: Iterable[Path | str] = ()) -> None:
    """From now on `con` reads only `readable` and writes nothing; no SET can undo it.

    DuckDB's own spill files (temp_directory, set before sealing) keep working: they are
    not external access. Views made before sealing keep reading their files as long as
    those files are listed in `readable` (as named and as `parquet_source` names them).
    """
    local = [p for p in readable if not is_uri(p)]  # parts at a URI are pyarrow's reads
    names = dict.fromkeys(n for p in local for n in (str(p), literal_path(p)))
    paths = ", ".join(sql_str(name) for name in names)
    con.execute(f"SET allowed_paths = [{paths}]").fetchall()
    con.execute("SET allowed_directories = []").fetchall()
    con.execute("SET enable_external_access = false").fetchall()
    con.execute("SET lock_configuration = true").fetchall()
