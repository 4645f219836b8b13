"""DuckDB connections that always speak UTC.

DuckDB renders and converts TIMESTAMPTZ in the process's local zone, and the Python
wheel cannot load the ICU extension offline to change that per connection. A forensic
timeline must read the same on every laptop, so cloudir's processes run in UTC.
"""

from __future__ import annotations

import os
import time
from typing import Any


def connect(config: dict[str, Any] | None = None) -> Any:
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    import duckdb

    return duckdb.connect(config=config or {})
