"""DuckDB connections that always speak UTC, never fetch extensions, and can be sealed.

DuckDB renders and converts TIMESTAMPTZ in the process's local zone, and the Python
wheel cannot load the ICU extension offline to change that per connection. A forensic
timeline must read the same on every laptop, so cloudir's processes run in UTC.

SQL that cloudir did not write (a responder's `query`, a community Sigma rule compiled by
`detect`) runs on a sealed connection: once the views it needs exist, DuckDB's access to
files and the network is switched off except for the exact files named, and the
configuration is locked, so no statement can switch it back on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Never reach for the network (or ~/.duckdb) to fetch an extension a statement names.
OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def sql_str(text: str) -> str:
    """A SQL string literal: DuckDB reads `text` back exactly, quotes and all."""
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A quoted SQL identifier, for column and struct member names taken from data."""
    return '"' + name.replace('"', '""') + '"'


def connect(config: dict[str, Any] | None = None) -> Any:
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    import duckdb

    return duckdb.connect(config={**OFFLINE, **(config or {})})


def seal(con: Any, readable: Iterable[Path] = ()) -> None:
    """From now on `con` reads only `readable` and writes nothing; no SET can undo it.

    DuckDB's own spill files (temp_directory, set before sealing) keep working: they are
    not external access. Views made before sealing keep reading their files as long as
    those files are listed in `readable`.
    """
    paths = ", ".join(sql_str(str(p)) for p in readable)
    con.execute(f"SET allowed_paths = [{paths}]").fetchall()
    con.execute("SET allowed_directories = []").fetchall()
    con.execute("SET enable_external_access = false").fetchall()
    con.execute("SET lock_configuration = true").fetchall()
