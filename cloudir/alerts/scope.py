"""What an alert points at: the entities and the time window triage collects and checks.

The readers have already put every entity the alert names into `Alert.resources` under
cloudir's resource kinds (and the actor's addresses into `Alert.action`), whatever the
alert's source; this module only sorts them into a `Scope` and sets the window, so a new
alert source never touches it.

The window is `[first_seen - before, last_seen + after]`:
- 24 hours before (DEFAULT_BEFORE): GuardDuty's first seen is the first event of the
  pattern it names, not the start of the intrusion. The reconnaissance, the credential
  theft or the first use of a leaked key comes earlier, and most of it is ordinary API
  calls no detector names on its own; a day catches the usual gap between first access
  and the behaviour that trips a finding while keeping a LookupEvents query (2 requests
  a second, 50 events a page) to minutes.
- 1 hour after (DEFAULT_AFTER): GuardDuty aggregates repeats of a finding and updates
  `eventLastSeen` late (every 6 hours by default for exports), CloudTrail delivers
  within about 15 minutes, and the actor's next steps follow the last one GuardDuty saw.
- An alert with no times at all is scoped around `now`; no part of a window lies after
  `now` (a time in the future is clock skew or a crafted alert, and there is no
  evidence from the future to collect).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudir.alerts.model import Alert, Scope

DEFAULT_BEFORE = timedelta(hours=24)
DEFAULT_AFTER = timedelta(hours=1)

# Resource kind -> the Scope field its id goes to.
_FIELD_OF_KIND = {
    "access-key": "access_keys",
    "iam-user": "users",
    "iam-role": "roles",
    "instance": "instances",
    "container": "containers",
    "s3-bucket": "buckets",
    "eks-cluster": "clusters",
    "ecs-cluster": "clusters",
    "lambda": "functions",
    "rds": "databases",
}


def scope_of(
    alert: Alert,
    *,
    before: timedelta = DEFAULT_BEFORE,
    after: timedelta = DEFAULT_AFTER,
    now: datetime | None = None,
) -> Scope:
    """The alert's scope. `before`/`after` widen the window (they may not be negative);
    `now` (default: the clock) caps it."""
    if before < timedelta(0) or after < timedelta(0):
        raise ValueError("the window's margins may not be negative")
    now = _utc(now or datetime.now(UTC))
    start, end = window(alert, before=before, after=after, now=now)
    found: dict[str, list[str]] = {name: [] for name in _FIELD_OF_KIND.values()}
    found.update(principals=[], images=[], addresses=[])
    for resource in alert.resources:
        field = _FIELD_OF_KIND.get(resource.kind)
        facts = resource.details
        if field == "users" and facts.get("user_type") == "Root":
            field = None  # the root user has no user name to filter by; its ARN is below
        if field:
            found[field].append(resource.id)
        for key, name in (("principal", "principals"), ("image", "images"),
                          ("cluster", "databases")):  # fmt: skip
            value = facts.get(key)
            if isinstance(value, str) and value:
                found[name].append(value)
    remote = alert.action.get("remote_addresses") or []
    found["addresses"] += [a for a in remote if isinstance(a, str)]
    return Scope(
        account=alert.account,
        region=alert.region,
        start=start,
        end=end,
        **{name: tuple(dict.fromkeys(values)) for name, values in found.items()},
    )


def window(
    alert: Alert, *, before: timedelta, after: timedelta, now: datetime
) -> tuple[datetime, datetime]:
    """`[first_seen - before, last_seen + after]`, never reaching past `now`."""
    first = alert.first_seen or alert.last_seen or now
    last = alert.last_seen or first
    first, last = min(first, last), max(first, last)  # a crafted alert may swap them
    first, last = min(_utc(first), now), min(_utc(last), now)
    try:
        start = first - before
    except OverflowError:  # a first seen in year 1
        start = datetime.min.replace(tzinfo=UTC)
    return _floor(start), min(_ceil(last + after), now)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _floor(moment: datetime) -> datetime:
    """Whole seconds (`_ceil` for the end): CloudTrail's times are, and a window edge
    inside a second would drop that second's events from a LookupEvents query."""
    return moment.replace(microsecond=0)


def _ceil(moment: datetime) -> datetime:
    if not moment.microsecond:
        return moment
    try:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    except OverflowError:
        return moment
