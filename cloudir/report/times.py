"""Times as the report handles them: any instant the timeline can hold, never an exception.

The timeline accepts every time a parser accepts, from year 1 to year 9999 (an intruder
can write either into an eventTime). Python's datetime covers exactly that range, so a
bucket start a step before year 1, or an axis end a step after 9999, is clamped rather
than computed; and text such as "1-01-01T00:00:00Z" (strftime does not pad %Y) is read.

Implausible times (the timeline's rule, `Window`) are kept everywhere, flagged in the
report's "Suspicious times" section, and left out of the chart's scale so that one
forged year-9999 event cannot flatten a two-hour incident into a single bar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
FIRST_SECONDS = (FIRST - EPOCH).total_seconds()
LAST_SECONDS = (LAST - EPOCH).total_seconds()

# The timeline's rule (cloudir/analyze/timeline.py), read from there so the two agree:
# CloudTrail rows before 2006, other rows before 1980, any row more than a day after
# the timeline was built. These values are the fallback if it ever stops naming them.
_RULE_FALLBACK = {
    "CLOUDTRAIL_EARLIEST": "2006-01-01T00:00:00Z",
    "HOST_EARLIEST": "1980-01-01T00:00:00Z",
    "FUTURE_SLACK_SECONDS": 86_400,
}


@dataclass(frozen=True)
class Window:
    """When a row's time is plausible: from `cloudtrail_from` (CloudTrail rows) or
    `other_from` (every other source), until `until`."""

    cloudtrail_from: datetime
    other_from: datetime
    until: datetime

    def params(self) -> dict[str, str | None]:
        """Named parameters for PLAUSIBLE_SQL."""
        return {
            "ct_from": iso(self.cloudtrail_from),
            "other_from": iso(self.other_from),
            "until": iso(self.until),
        }


# A row's time is plausible: the SQL form of Window, with its params().
PLAUSIBLE_SQL = (
    "(timestamp <= $until::TIMESTAMPTZ AND timestamp >= CASE WHEN source = 'cloudtrail' "
    "THEN $ct_from::TIMESTAMPTZ ELSE $other_from::TIMESTAMPTZ END)"
)


_ISO = re.compile(
    r"\s*(?P<year>\d{1,4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
    r"(?:[T ](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<frac>\d{1,9}))?)?)?"
    r"\s*(?P<zone>Z|UTC|[+-]\d{2}:?\d{2})?\s*$",
    re.I,
)


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO-like text (1 to 4 digit years), or None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value is None:
        return None
    match = _ISO.match(str(value))
    if not match:
        return None
    g = match.groupdict()
    try:
        moment = datetime(
            int(g["year"]),
            int(g["month"]),
            int(g["day"]),
            int(g["hour"] or 0),
            int(g["minute"] or 0),
            int(g["second"] or 0),
            int((g["frac"] or "0")[:6].ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    zone = (g["zone"] or "Z").upper()
    if zone not in ("Z", "UTC"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        seconds = to_seconds(moment) - sign * offset.total_seconds()
        return from_seconds(seconds)
    return moment


def to_seconds(moment: datetime) -> float:
    """Seconds since 1970 (negative before), without the platform's timestamp limits."""
    return (moment - EPOCH).total_seconds()


def from_seconds(seconds: float) -> datetime:
    """The instant `seconds` after 1970, clamped to year 1 .. year 9999."""
    if seconds != seconds or seconds <= FIRST_SECONDS:  # NaN too
        return FIRST
    if seconds >= LAST_SECONDS:
        return LAST
    return EPOCH + timedelta(seconds=seconds)


def iso(moment: datetime | None) -> str | None:
    """`0001-01-01T00:00:00.000000Z`: four-digit year always (strftime may not pad)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond:06d}Z"


def iso_text(value: Any) -> Any:
    """A time string rewritten in the report's ISO form; other values as they are."""
    moment = parse_time(value) if isinstance(value, str) else None
    return iso(moment) if moment else value


def display(value: Any) -> str:
    """`2026-11-27 03:43:31 UTC` for a reader; text that is no time stays as it is."""
    moment = parse_time(value)
    if moment is None:
        return str(value)
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S} UTC"


def duration(first: Any, last: Any) -> str:
    """How long from first to last, for 'when' lines: `17 min`, `2 h 9 min`, `3 days`."""
    a, b = parse_time(first), parse_time(last)
    if a is None or b is None:
        return ""
    seconds = int((b - a).total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days = hours // 24
    return f"{days:,} days" if days < 3 * 365 else f"{days // 365:,} years"


def display_seconds(seconds: float) -> str:
    return display(from_seconds(seconds))


def plausible_window(summary: dict[str, Any], now: datetime) -> Window:
    """The timeline's window; its ceiling is the build time plus the slack when summary.json
    names it (`implausible_times.ceiling`), else the report's time plus the slack."""
    from cloudir.analyze import timeline

    rule: dict[str, Any] = {n: getattr(timeline, n, value) for n, value in _RULE_FALLBACK.items()}
    given = summary.get("implausible_times")
    ceiling = parse_time(given.get("ceiling")) if isinstance(given, dict) else None
    slack = timedelta(seconds=rule["FUTURE_SLACK_SECONDS"])
    return Window(
        cloudtrail_from=parse_time(rule["CLOUDTRAIL_EARLIEST"]) or FIRST,
        other_from=parse_time(rule["HOST_EARLIEST"]) or FIRST,
        until=ceiling or min(now + slack, LAST).replace(microsecond=0),
    )
