"""Fetch one finding from GuardDuty or Security Hub, as the bytes AWS sent.

The alert is evidence: what is stored (and hashed into custody) must be what AWS said,
not boto3's parse of it re-encoded. A botocore hook keeps the HTTP response body before
parsing, as `capture cloudtrail --lookup` does for LookupEvents, and that body is what
these functions return; `read_alert(body, finding_id)` reads it.

- GuardDuty: `GetFindings` on the detector, for the one finding id. The body is the
  API's own JSON, `{"findings": [{...camelCase...}]}`.
- Security Hub: `GetFindings` filtered on the finding's `Id` (the finding's ARN; for
  findings from GuardDuty, the GuardDuty finding ARN), in the region the ARN names.
  The body is `{"Findings": [{...ASFF...}], ...}`.

An unknown finding, detector or region, a refusal and a network failure are one-line
`CloudError`s (exit 4); an id that cannot be one is a `UsageError` (exit 2).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from cloudir.aws import Aws, call, keep_body
from cloudir.errors import CloudError, UsageError

# GuardDuty ids are [a-z0-9] today (detectors 32, findings 32 characters); the API allows
# up to 300 characters. Anything with a "/" or a control character is not an id.
_GUARDDUTY_ID = re.compile(r"^[A-Za-z0-9_-]{1,300}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def fetch_guardduty(
    aws: Aws, detector_id: str, finding_id: str, *, region: str | None = None
) -> bytes:
    """GetFindings' response body for one finding (`region`: the session's when None)."""
    for name, value in (("detector id", detector_id), ("finding id", finding_id)):
        if not _GUARDDUTY_ID.match(value or ""):
            raise UsageError(f"--guardduty: {value[:80]!r} is not a GuardDuty {name}")
    where = region or aws.region
    client = aws.client("guardduty", where)
    bodies = _keep_bodies(client, "guardduty.GetFindings")
    response = call(
        "guardduty:GetFindings",
        client.get_findings,
        DetectorId=detector_id,
        FindingIds=[finding_id],
    )
    found = response.get("Findings") or []
    if not any(isinstance(f, dict) and f.get("Id") == finding_id for f in found):
        raise CloudError(
            f"guardduty:GetFindings: no finding {finding_id} in detector {detector_id} ({where})"
        )
    return _body(bodies, "guardduty:GetFindings")


def fetch_securityhub(aws: Aws, finding_arn: str, *, region: str | None = None) -> bytes:
    """GetFindings' response body for the finding whose Id is `finding_arn`. The region is
    the ARN's, else `region`, else the session's."""
    if not finding_arn or len(finding_arn) > 512 or not finding_arn.isprintable():
        raise UsageError(f"--securityhub: {finding_arn[:80]!r} is not a Security Hub finding id")
    where = _arn_region(finding_arn) or region or aws.region
    client = aws.client("securityhub", where)
    bodies = _keep_bodies(client, "securityhub.GetFindings")
    response = call(
        "securityhub:GetFindings",
        client.get_findings,
        Filters={"Id": [{"Value": finding_arn, "Comparison": "EQUALS"}]},
    )
    found = response.get("Findings") or []
    if not any(isinstance(f, dict) and f.get("Id") == finding_arn for f in found):
        raise CloudError(f"securityhub:GetFindings: no finding {finding_arn} in {where}")
    return _body(bodies, "securityhub:GetFindings")


def _arn_region(arn: str) -> str | None:
    parts = arn.split(":")
    if len(parts) > 4 and parts[0] == "arn" and _REGION.match(parts[3]):
        return parts[3]
    return None


def _keep_bodies(client: Any, event: str) -> list[bytes]:
    """Register the hook that keeps each response body of `event` as received."""
    bodies: list[bytes] = []
    client.meta.events.register(f"before-parse.{event}", functools.partial(keep_body, bodies))
    return bodies


def _body(bodies: list[bytes], what: str) -> bytes:
    """The last body (botocore retries keep one each; the last is the answer parsed)."""
    if not bodies:
        raise CloudError(f"{what}: the response body was not available to keep as evidence")
    body = bodies[-1]
    try:
        json.loads(body)
    except ValueError:
        raise CloudError(f"{what}: the response is not JSON") from None
    return body
