"""The demo's triage step: the GuardDuty finding the demo's intrusion would raise.

GuardDuty raises Stealth:IAMUser/CloudTrailLoggingDisabled when a trail stops logging; the
demo writes that finding for its own StopLogging call (the leaked key, the intruder's
address, the minute it happened) as the EventBridge event GuardDuty sends, and runs
`cloudir triage` on it against the case the demo just built. The finding is the demo's
invention, so it says so in its own description; the verdict is cloudir's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

DETECTOR = "12abc34d567e8fa901bc2d34e56789f0"  # a made-up detector id


def stop_logging_finding(
    when: datetime, account: str, region: str, user: str, key: str, address: str, trail: str
) -> dict[str, Any]:
    """The EventBridge event GuardDuty would send for the demo's StopLogging."""
    finding_id = uuid.uuid5(uuid.NAMESPACE_URL, f"cloudir-demo:{when.isoformat()}").hex
    seen = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    finding = {
        "schemaVersion": "2.0",
        "accountId": account,
        "region": region,
        "partition": "aws",
        "id": finding_id,
        "arn": f"arn:aws:guardduty:{region}:{account}:detector/{DETECTOR}/finding/{finding_id}",
        "type": "Stealth:IAMUser/CloudTrailLoggingDisabled",
        "title": f"AWS CloudTrail trail {trail} was disabled.",
        "description": "Written by `cloudir demo` for its own story: the finding GuardDuty "
        "raises when a trail stops logging.",
        "severity": 2,
        "createdAt": seen,
        "updatedAt": seen,
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {
                "accessKeyId": key,
                "principalId": "AIDADEMOCIDEPLOYER01",
                "userName": user,
                "userType": "IAMUser",
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": DETECTOR,
            "action": {
                "actionType": "AWS_API_CALL",
                "awsApiCallAction": {
                    "api": "StopLogging",
                    "serviceName": "cloudtrail.amazonaws.com",
                    "callerType": "Remote IP",
                    "remoteIpDetails": {"ipAddressV4": address},
                    "affectedResources": {"AWS::CloudTrail::Trail": trail},
                },
            },
            "additionalInfo": {"sample": False},
            "archived": False,
            "count": 1,
            "eventFirstSeen": seen,
            "eventLastSeen": seen,
            "resourceRole": "TARGET",
        },
    }
    return {
        "version": "0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cloudir-demo-event:{finding_id}")),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": account,
        "time": seen,
        "region": region,
        "resources": [],
        "detail": finding,
    }


def triage_demo_alert(
    case: Path, event: dict[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """`cloudir triage --no-collect` on the demo's case: the demo already captured the
    trail, so triage keeps the alert as evidence, analyses and judges it."""
    from cloudir.triage.run import AlertInput, TriageOptions, triage

    data = json.dumps(event, indent=1).encode()
    source = AlertInput(data, {"type": "demo", "name": "guardduty-finding.json"})
    result = triage(case, source, TriageOptions(collect=False), None, say, say)
    return result.verdict
