"""Time windows from the command line: ISO 8601 or relative to now (`7d`, `36h`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from cloudir.errors import UsageError

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """`7d` means seven days before now; naive ISO times are taken as UTC."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(
            f"cannot read time {text!r}: use ISO 8601 (2024-07-31T13:00:00Z) "
            "or a relative age (7d, 36h, 90m)"
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, start: str | None, end: str | None, default_start: str = "7d") -> Window:
        now = datetime.now(UTC)
        window = cls(parse_time(start or default_start, now), parse_time(end, now) if end else now)
        if window.start > window.end:
            raise UsageError(f"--start {window.start:%Y-%m-%dT%H:%M:%SZ} is after --end")
        return window

    def days(self, before: timedelta = timedelta(0), after: timedelta = timedelta(0)) -> list[date]:
        """Every UTC day the window touches once widened by `before` and `after`."""
        first = (self.start - before).date()
        last = (self.end + after).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def contains(
        self, moment: datetime, before: timedelta = timedelta(0), after: timedelta = timedelta(0)
    ) -> bool:
        return self.start - before <= moment <= self.end + after

    def label(self) -> str:
        return self.start.strftime("%Y%m%d")

    def as_dict(self) -> dict[str, str]:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return {"start": self.start.strftime(fmt), "end": self.end.strftime(fmt)}
