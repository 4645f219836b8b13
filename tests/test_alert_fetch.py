"""Fetching a finding from GuardDuty and Security Hub over HTTP from a real moto server.

Security Hub: moto's own BatchImportFindings and GetFindings. GuardDuty: moto keeps
detectors but no findings, so tests/guardduty_server.py adds GetFindings to moto's
server. The body returned must be the one the server sent, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudir.alerts.fetch import fetch_guardduty, fetch_securityhub
from cloudir.alerts.read import read_alert
from cloudir.alerts.scope import scope_of
from cloudir.aws import Aws, AwsOptions
from cloudir.errors import CloudError, UsageError
from tests.conftest import boto_client
from tests.guardduty_server import GuardDutyServer

DATA = Path(__file__).parent / "data" / "findings"


def aws(url: str, region: str = "us-east-1") -> Aws:
    return Aws(AwsOptions(region=region, endpoint_url=url, max_attempts=1))


def ec2_finding() -> dict[str, Any]:
    """The corpus's GuardDuty finding, as the API holds it (EventBridge's `detail`)."""
    return json.loads((DATA / "cloud-custodian" / "ec2-duty-event.json").read_text())["detail"]


# -- GuardDuty ----------------------------------------------------------------------------------
def test_guardduty_finding_is_fetched_as_sent(guardduty_server: GuardDutyServer) -> None:
    detector = guardduty_server.detector()
    finding = ec2_finding()
    guardduty_server.add(detector, finding)
    body = fetch_guardduty(aws(guardduty_server.url), detector, finding["id"])
    assert body == guardduty_server.bodies[-1]
    assert json.loads(body) == {"findings": [finding]}
    alert = read_alert(body, finding["id"])
    assert (alert.id, alert.family, alert.sample) == (finding["id"], "instance", True)
    assert scope_of(alert).instances == ("i-99999999",)


def test_guardduty_unknown_finding_is_one_line(guardduty_server: GuardDutyServer) -> None:
    detector = guardduty_server.detector()
    with pytest.raises(CloudError) as caught:
        fetch_guardduty(aws(guardduty_server.url), detector, "0" * 32)
    assert str(caught.value) == (
        f"guardduty:GetFindings: no finding {'0' * 32} in detector {detector} (us-east-1)"
    )


def test_guardduty_unknown_detector_is_refused_as_aws_refuses_it(
    guardduty_server: GuardDutyServer,
) -> None:
    with pytest.raises(CloudError) as caught:
        fetch_guardduty(aws(guardduty_server.url), "f" * 32, "0" * 32)
    message = str(caught.value)
    assert message.startswith("guardduty:GetFindings failed: ")
    assert "not owned by the current account" in message and "\n" not in message


@pytest.mark.parametrize(
    ("detector", "finding"), [("../x", "a" * 32), ("d" * 32, ""), ("d" * 32, "a\nb")]
)
def test_guardduty_ids_that_cannot_be_ids_are_usage_errors(detector: str, finding: str) -> None:
    with pytest.raises(UsageError, match=r"^--guardduty: .* is not a GuardDuty"):
        fetch_guardduty(aws("http://127.0.0.1:9"), detector, finding)


# -- Security Hub -------------------------------------------------------------------------------
def asff_findings() -> list[dict[str, Any]]:
    event = json.loads((DATA / "documented" / "securityhub-from-guardduty.json").read_text())
    return list(event["detail"]["findings"])


def test_securityhub_finding_is_fetched_as_sent(moto_url: str) -> None:
    region = "eu-north-1"  # this test's own: the session's server is shared
    findings = asff_findings()
    for finding in findings:
        finding["Region"] = region
        for resource in finding["Resources"]:
            resource["Region"] = region
    wanted = findings[0]
    wanted["Id"] = wanted["Id"].replace("us-east-1", region)
    hub = boto_client(moto_url, "securityhub", region)
    imported = hub.batch_import_findings(Findings=findings)
    assert imported["FailedCount"] == 0
    body = fetch_securityhub(aws(moto_url), wanted["Id"])
    sent = json.loads(body)
    assert wanted["Id"] in [f["Id"] for f in sent["Findings"]]
    alert = read_alert(body, wanted["Id"])
    assert (alert.product, alert.family, alert.region) == ("GuardDuty", "access-key", region)
    assert scope_of(alert).access_keys == ("ASIAIOSFODNN7EXAMPLE",)


def test_securityhub_body_is_the_bytes_received(moto_url: str) -> None:
    """What moto sent, not boto3's parse re-encoded: moto writes `"NextToken": null`,
    which boto3 drops when it parses."""
    region = "eu-south-1"
    finding = asff_findings()[1]
    finding["Id"] = finding["Id"].replace("us-east-1", region)
    boto_client(moto_url, "securityhub", region).batch_import_findings(Findings=[finding])
    body = fetch_securityhub(aws(moto_url), finding["Id"])
    assert b'"NextToken": null' in body


def test_securityhub_unknown_finding_is_one_line(moto_url: str) -> None:
    arn = "arn:aws:guardduty:ap-south-2:123456789012:detector/d/finding/none"
    with pytest.raises(CloudError) as caught:
        fetch_securityhub(aws(moto_url), arn)
    assert str(caught.value) == f"securityhub:GetFindings: no finding {arn} in ap-south-2"


def test_securityhub_id_that_cannot_be_an_id_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^--securityhub: "):
        fetch_securityhub(aws("http://127.0.0.1:9"), "arn:aws:x\x1b[2J")


def test_an_unreachable_endpoint_is_one_line() -> None:
    with pytest.raises(CloudError) as caught:
        fetch_securityhub(aws("http://127.0.0.1:9"), "arn:aws:securityhub:us-east-1:1:x")
    assert str(caught.value).startswith("securityhub:GetFindings failed: ")
    assert "\n" not in str(caught.value)
