"""Synthetic timeline rows written straight to a case's Parquet timeline.

For tests that need artifacts no parser produces yet (Linux hosts) or edge cases no corpus
file holds: rows follow `TIMELINE_SCHEMA`, so every reader sees them as a parser's output.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudir.analyze.schema import COLUMN_NAMES, TIMELINE_SCHEMA
from cloudir.case import CASE_FILE, Case
from cloudir.case_folder import CasePaths

SOURCES = {"aws": "cloudtrail", "linux": "host"}


def timeline_row(
    artifact: str, timestamp: datetime | str, raw: dict[str, Any], **columns: Any
) -> dict[str, Any]:
    """One row; `event_id` is derived from the content, so equal rows would collide.

    `timestamp` may be ISO text ("2026-01-01T10:00:00Z"); keyword arguments set any other
    column (`host`, `src_ip`, `user`, ...) and a misspelt column name is an error.
    """
    unknown = set(columns) - set(COLUMN_NAMES)
    if unknown:
        raise ValueError(f"not timeline columns: {sorted(unknown)}")
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    text = json.dumps(raw)
    digest = hashlib.sha256(f"{artifact}\0{timestamp.isoformat()}\0{text}".encode()).hexdigest()
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(
        timestamp=timestamp,
        timestamp_desc="Event Time",
        source=SOURCES.get(artifact.split(":")[0], "host"),
        artifact=artifact,
        message=raw.get("message") if isinstance(raw.get("message"), str) else None,
        evidence_id="synthetic",
        event_id=digest[:32],
        raw=text,
    )
    row.update(columns)
    return row


def write_timeline(case_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write `rows` as the case's timeline (creating the case if needed); returns the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not (case_dir / CASE_FILE).exists():
        Case.create(case_dir, title="synthetic timeline")
    ids = [r["event_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("two rows share an event_id; make them differ")
    folder = CasePaths(case_dir).timeline
    folder.mkdir(exist_ok=True)
    path = folder / "part-0-synthetic.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=TIMELINE_SCHEMA), path)
    return path
