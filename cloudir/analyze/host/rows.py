"""One timeline row from a host artifact: the shape every host mapper returns.

dissect's values (datetimes, addresses, paths, digests, bytes) are turned into JSON text
here once, so a mapper only says which value goes to which column.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from cloudir.analyze.parsers import Row

SOURCE = "host"
# Times a tar export or a zeroed inode gives for "no time": kept as no time, not 1970.
_NO_TIME_BEFORE = datetime(1970, 1, 2, tzinfo=UTC)


def iso_time(value: Any) -> str | None:
    """UTC ISO 8601 text, or None for a missing, zero or 1970-01-01 time, or one past
    year 9999 in UTC (9999-12-31T23:59-01:00)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < _NO_TIME_BEFORE:
        return None
    try:
        return value.astimezone(UTC).isoformat()
    except OverflowError:
        return None


def epoch_time(seconds: float) -> str | None:
    """`iso_time` of seconds since 1970 (a tar member's or an image's time), None for one
    no datetime holds: an archive's times are whatever its maker wrote."""
    try:
        return iso_time(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        return None


def json_value(value: Any) -> Any:
    """A dissect field value as JSON: times in ISO 8601, bytes as hex, the rest as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return iso_time(value) if value.tzinfo or value.year > 1970 else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    digest = {k: getattr(value, k, None) for k in ("md5", "sha1", "sha256")}
    if any(digest.values()):
        return digest
    return str(value)


def raw_json(fields: dict[str, Any]) -> str:
    return json.dumps({k: json_value(v) for k, v in fields.items()}, ensure_ascii=False)


def host_row(
    *,
    when: str | None,
    desc: str,
    artifact: str,
    host: str | None,
    evidence_id: str,
    raw: str,
    message: str,
    user: str | None = None,
    src_ip: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    occurrence: int = 0,
    source: str = SOURCE,
) -> Row:
    """The row, column by name. The event id is stable across runs; two identical
    records (the same log line twice in one second) differ by `occurrence`, their
    position in the evidence, so de-duplication never merges them."""
    # "surrogatepass": a file name that is not UTF-8 (tarfile's surrogateescape) or a lone
    # surrogate escape in evidence JSON must not cost the file; the text columns show it
    key = f"{evidence_id}\x00{artifact}\x00{desc}\x00{when}\x00{raw}\x00{occurrence}".encode(
        "utf-8", "surrogatepass"
    )
    return Row(
        timestamp=when,
        timestamp_desc=desc,
        source=source,
        artifact=artifact,
        host=host,
        user=user,
        src_ip=src_ip,
        action=action,
        target=target,
        outcome=outcome,
        message=message,
        evidence_id=evidence_id,
        event_id=hashlib.sha256(key).hexdigest()[:32],
        raw=raw,
    )
