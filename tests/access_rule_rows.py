"""Rule cases for the access log rules as the parsers' own rows (tests/test_rule_cases.py).

A case event of an S3 access or ALB rule names log fields (`operation`, `requester`,
`request`, `user_agent`, ...; the names of `raw`). It is written as a log line
(tests/access_log_lines.py) and read back by the parser's own line-to-row code, so a rule
is tested on exactly what the timeline holds for such a line; only the event id is the
case's readable one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudir.analyze.parsers import alb_access, s3_access
from tests.access_log_lines import alb_line, s3_line

# Which case a rule's events go into, by its logsource; each is a fixture `<name>_run`.
S3_RUN, ALB_RUN = "s3_access", "alb_access"
ACCESS_RUNS = (S3_RUN, ALB_RUN)
# Every rule's events come from its own address ({ip}), as the CloudTrail cases do.
OWN_ADDRESS = {S3_RUN: {"remote_ip": "{ip}"}, ALB_RUN: {"client:port": "{ip}:40312"}}


def access_run(logsource: dict[str, Any]) -> str | None:
    """The access log case a logsource's rules are tested in; None for the others."""
    product, service = logsource.get("product"), logsource.get("service")
    if (product, service) == ("aws", "s3"):
        return S3_RUN
    if (product, service) == ("aws", "elb") or logsource.get("category") in ("webserver", "proxy"):
        return ALB_RUN
    return None


def _substitute(value: Any, tokens: dict[str, str]) -> Any:
    if isinstance(value, str):
        for token, text in tokens.items():
            value = value.replace(token, text)
    return value


def access_row(
    run: str,
    cases: dict[str, Any],
    spec: dict[str, Any],
    when: datetime,
    event_id: str,
    tokens: dict[str, str],
) -> dict[str, Any]:
    """The timeline row the parser writes for the case's line, with the case's event id."""
    fields = {**OWN_ADDRESS[run], **(cases.get("defaults") or {}), **spec}
    fields.pop("at", None)
    fields = {name: _substitute(value, tokens) for name, value in fields.items()}
    if run == S3_RUN:
        named = s3_access.fields_of(s3_line(time=when, **fields))
        row = s3_access.to_row(named, s3_access.iso_time(str(named["time"])), "s3-cases", 0)
    else:
        row = alb_access.to_row(alb_access.fields_of(alb_line(time=when, **fields)), "alb-cases", 0)
    return {**row._asdict(), "timestamp": when, "event_id": event_id}
