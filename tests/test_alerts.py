"""Reading alerts and scoping them: the corpus's real-shaped findings, the documented
shapes of the GuardDuty resource types the corpus lacks, and hostile documents.

Every expected value below can be checked by hand in the files under
tests/data/findings/ (see its README.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.alerts.document import MAX_BYTES
from cloudir.alerts.model import FAMILIES, SEVERITIES, Alert, AlertError
from cloudir.alerts.read import read_alert, read_alerts, read_each
from cloudir.alerts.scope import DEFAULT_AFTER, DEFAULT_BEFORE, scope_of

DATA = Path(__file__).parent / "data" / "findings"
CUSTODIAN = DATA / "cloud-custodian"
AFO = DATA / "automated-forensic-orchestrator"
DOCUMENTED = DATA / "documented"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def alert(path: Path, index: int = 0) -> Alert:
    return read_alerts(path.read_bytes())[index]


def scope(path: Path, index: int = 0) -> dict[str, Any]:
    """The scope's non-empty fields."""
    found = scope_of(alert(path, index), now=NOW).as_dict()
    return {k: v for k, v in found.items() if v}


# -- the corpus ---------------------------------------------------------------------------
READABLE = {
    # file: (source, product, family, severity, findings in the document)
    CUSTODIAN / "ec2-duty-event.json": ("guardduty", "GuardDuty", "instance", "medium", 1),
    CUSTODIAN / "iam-duty-event.json": ("guardduty", "GuardDuty", "access-key", "medium", 1),
    CUSTODIAN / "event-securityhub-iamkey-finding-action.json": (
        "securityhub", "GuardDuty", "access-key", "medium", 1,
    ),
    CUSTODIAN / "event-securityhub-cloudtrail-finding-action.json": (
        "securityhub", "Security Hub", "account", "informational", 1,
    ),
    CUSTODIAN / "event-securityhub-lambda-cross.json": (
        "securityhub", "Default", "lambda", "low", 1,
    ),
    AFO / "CIS-1.3.json": ("securityhub", "Security Hub", "account", "medium", 1),
    AFO / "CIS-1.4.json": ("securityhub", "Security Hub", "account", "medium", 1),
    AFO / "CIS_1-6.json": ("securityhub", "Security Hub", "account", "informational", 1),
    AFO / "CIS_1-6-multi-select.json": ("securityhub", "Security Hub", "account", "medium", 2),
    AFO / "CIS_unsupversion.json": ("securityhub", "Security Hub", "account", "informational", 1),
    AFO / "afsbp-ec2.7.json": ("securityhub", "Security Hub", "account", "informational", 1),
    # A finding sent by a custom action named for other controls: AFO refuses to remediate
    # it, but it is a well-formed finding, and triage reads what it was sent.
    AFO / "custom-action-mismatch.json": ("securityhub", "Security Hub", "account", "high", 1),
}  # fmt: skip

REFUSED = {
    AFO / "CIS-bad.json": "$.detail.findings[0].GeneratorId: missing (Security Hub requires it)",
    CUSTODIAN / "event-securityhub-insight-2.json": (
        "$.detail-type: 'Security Hub Insight Results' carries an insight's result counts, "
        "not a finding; send the findings themselves (a Security Hub Findings event, or "
        "--securityhub ARN)"
    ),
}


def test_every_corpus_document_is_read_or_refused_as_expected() -> None:
    corpus = {p for p in DATA.rglob("*.json") if "documented" not in p.parts}
    assert corpus == set(READABLE) | set(REFUSED)


@pytest.mark.parametrize("path", sorted(READABLE), ids=lambda p: p.name)
def test_corpus_documents_read(path: Path) -> None:
    source, product, family, severity, count = READABLE[path]
    alerts = read_alerts(path.read_bytes())
    assert len(alerts) == count
    first = alerts[0]
    assert (first.source, first.product, first.family, first.severity) == (
        source, product, family, severity,
    )  # fmt: skip
    assert first.family in FAMILIES and first.severity in SEVERITIES
    assert read_alert(path.read_bytes()) == first


@pytest.mark.parametrize("path", sorted(REFUSED), ids=lambda p: p.name)
def test_corpus_documents_refused_with_one_line(path: Path) -> None:
    with pytest.raises(AlertError) as caught:
        read_alert(path.read_bytes())
    assert str(caught.value) == REFUSED[path]
    assert "\n" not in str(caught.value)


def test_ec2_finding_scopes_to_its_instance_account_and_window() -> None:
    found = alert(CUSTODIAN / "ec2-duty-event.json")
    assert found.id == "b4b01b60fc24a199139f8f5f490edd81"
    assert found.type == "Backdoor:EC2/C&CActivity.B!DNS"
    assert (
        found.title == "Command and Control server domain name queried by EC2 instance i-99999999."
    )
    assert found.sample is True  # service.additionalInfo.sample
    # The finding's own account, not the EventBridge envelope's (101010101111).
    assert (found.account, found.region) == ("883606788610", "us-east-1")
    assert found.first_seen == found.last_seen == utc("2017-12-08T15:32:49Z")
    assert found.action == {"type": "DNS_REQUEST", "domain": "example.com", "protocol": "TCP"}
    assert scope(CUSTODIAN / "ec2-duty-event.json") == {
        "account": "883606788610",
        "region": "us-east-1",
        "start": "2017-12-07T15:32:49Z",  # first seen - 24 h
        "end": "2017-12-08T16:32:49Z",  # last seen + 1 h
        "instances": ["i-99999999"],
    }


def test_iam_finding_scopes_to_user_key_address_and_touched_instance() -> None:
    assert scope(CUSTODIAN / "iam-duty-event.json") == {
        "account": "883606788610",
        "region": "us-east-1",
        "start": "2017-12-07T15:32:49Z",
        "end": "2017-12-08T16:32:49Z",
        "principals": ["arn:aws:iam::883606788610:user/GeneratedFindingUserName"],
        "users": ["GeneratedFindingUserName"],
        "access_keys": ["GeneratedFindingAccessKeyId"],
        "instances": ["i-99999999"],  # awsApiCallAction.affectedResources
        "addresses": ["198.51.100.0"],
    }
    found = alert(CUSTODIAN / "iam-duty-event.json")
    assert found.sample is True
    assert found.resources[0].kind == "access-key"
    assert found.action["api"] == "GeneratedFindingAPIName"


def test_securityhub_forwarded_guardduty_console_login() -> None:
    found = alert(CUSTODIAN / "event-securityhub-iamkey-finding-action.json")
    assert found.type == "Unusual Behaviors/User/UnauthorizedAccess:IAMUser-ConsoleLogin"
    assert found.sample is False
    assert found.action["api"] == "ConsoleLogin"
    # The access key id is "AWS::IAM::AccessKey:null": no key to scope by, the user only.
    assert scope(CUSTODIAN / "event-securityhub-iamkey-finding-action.json") == {
        "account": "644160558196",
        "region": "us-east-1",
        "start": "2019-06-11T15:11:20Z",
        "end": "2019-06-12T16:12:40Z",
        "principals": ["arn:aws:iam::644160558196:user/kapil"],
        "users": ["kapil"],
        "addresses": ["208.115.85.104"],  # ProductFields action/.../ipAddressV4
    }


def test_an_other_resource_with_a_lambda_arn_is_the_function() -> None:
    assert scope(CUSTODIAN / "event-securityhub-lambda-cross.json") == {
        "account": "644160558196",
        "region": "us-east-1",
        "start": "2020-01-14T15:55:49Z",
        "end": "2020-01-15T16:55:50Z",  # rounded up to the whole second
        "functions": ["custodian-enterprise-ec2-instances-no-elastic-ip-isolate"],
    }


def test_a_control_finding_scopes_to_the_account_with_no_entities() -> None:
    found = scope_of(alert(AFO / "CIS-1.3.json"), now=NOW)
    assert found.is_empty()
    assert (found.account, found.start, found.end) == (
        "111111111111", utc("2020-05-07T03:41:48Z"), utc("2020-05-27T04:37:38Z"),
    )  # fmt: skip


def test_read_alert_picks_a_finding_by_id() -> None:
    data = (AFO / "CIS_1-6-multi-select.json").read_bytes()
    second = read_alerts(data)[1]
    assert read_alert(data, second.id) == second
    with pytest.raises(AlertError, match=r"^\$: no finding with id 'nope' in the document"):
        read_alert(data, "nope")


# -- the documented shapes -----------------------------------------------------------------
DOCUMENTED_SCOPES: dict[str, tuple[str, dict[str, Any]]] = {
    "guardduty-s3bucket.json": ("s3-bucket", {
        "principals": ["arn:aws:iam::123456789012:user/data-reader"],
        "users": ["data-reader"],
        "access_keys": ["AKIAIOSFODNN7EXAMPLE"],
        "buckets": ["example-finance-reports"],
        "addresses": ["198.51.100.23"],
    }),
    "guardduty-eks.json": ("kubernetes", {
        "containers": ["frontend"],
        "images": ["123456789012.dkr.ecr.us-east-1.amazonaws.com/frontend:1.4"],
        "clusters": ["prod-cluster"],
        "addresses": ["198.51.100.41"],
    }),
    "guardduty-kubernetescluster.json": ("kubernetes", {
        "containers": ["runner"],
        "images": ["public.ecr.aws/example/runner:2.1"],
        "clusters": ["build-cluster"],
        "addresses": ["203.0.113.77"],
    }),
    "guardduty-container.json": ("container", {
        "instances": ["i-0abcdef1234567890"],
        "containers": ["3f2b9c1d7e6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c"],
        "images": ["example/worker:3.2"],
    }),
    "guardduty-ecs.json": ("container", {
        "containers": ["api"],
        "images": ["123456789012.dkr.ecr.us-east-1.amazonaws.com/api:7"],
        "clusters": ["payments"],
    }),
    "guardduty-lambda.json": ("lambda", {
        "principals": ["arn:aws:sts::123456789012:assumed-role/thumbnailer-role/thumbnailer"],
        "roles": ["thumbnailer-role"],
        "functions": ["thumbnailer"],
        "addresses": ["203.0.113.12"],
    }),
    "guardduty-rds.json": ("rds", {
        "databases": ["orders-db-1", "orders-cluster"],
        "addresses": ["198.51.100.88"],
    }),
    "guardduty-rds-limitless.json": ("rds", {
        "databases": ["ledger-shards", "ledger-cluster"],
        "addresses": ["203.0.113.200"],
    }),
    "guardduty-api-getfindings.json": ("access-key", {
        "principals": ["arn:aws:sts::123456789012:assumed-role/ec2-app-role/i-0abcdef1234567890"],
        "roles": ["ec2-app-role"],
        "access_keys": ["ASIAIOSFODNN7EXAMPLE"],
        "addresses": ["198.51.100.7"],
    }),
    "guardduty-cli-getfindings.json": ("instance", {
        "instances": ["i-0abcdef1234567890"],
        "addresses": ["198.51.100.99"],
    }),
    "securityhub-inspector.json": ("instance", {"instances": ["i-0fedcba9876543210"]}),
    "securityhub-macie.json": ("s3-bucket", {"buckets": ["example-hr-exports"]}),
}  # fmt: skip


def test_every_guardduty_resource_type_has_a_documented_shape() -> None:
    types = set()
    for path in DOCUMENTED.glob("guardduty-*.json"):
        for found in read_alerts(path.read_bytes()):
            resource = found.raw.get("resource") or found.raw.get("Resource")
            types.add(resource.get("resourceType") or resource.get("ResourceType"))
    types |= {"Instance", "AccessKey"}  # the corpus's own
    assert types >= {
        "Instance", "AccessKey", "S3Bucket", "EKSCluster", "KubernetesCluster", "Container",
        "ECSCluster", "Lambda", "RDSDBInstance", "RDSLimitlessDB",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(DOCUMENTED_SCOPES))
def test_documented_shapes_scope_exactly(name: str) -> None:
    family, entities = DOCUMENTED_SCOPES[name]
    found = alert(DOCUMENTED / name)
    assert found.family == family
    got = scope(DOCUMENTED / name)
    assert {k: v for k, v in got.items() if k not in ("account", "region", "start", "end")} == (
        entities
    )
    assert (got["account"], got["region"]) == ("123456789012", "us-east-1")
    assert utc(got["start"]) == found.first_seen.replace(microsecond=0) - DEFAULT_BEFORE  # type: ignore[union-attr]
    assert utc(got["end"]) == found.last_seen + DEFAULT_AFTER  # type: ignore[operator]


@pytest.mark.parametrize(
    ("native", "index"),
    [("guardduty-api-getfindings.json", 0), ("guardduty-cli-getfindings.json", 1)],
)
def test_asff_forwarded_from_guardduty_scopes_as_the_native_finding(
    native: str, index: int
) -> None:
    direct = alert(DOCUMENTED / native)
    forwarded = alert(DOCUMENTED / "securityhub-from-guardduty.json", index)
    assert (direct.source, forwarded.source) == ("guardduty", "securityhub")
    assert forwarded.product == "GuardDuty"
    assert forwarded.family == direct.family
    assert forwarded.severity == direct.severity
    assert forwarded.sample == direct.sample
    assert scope_of(forwarded, now=NOW) == scope_of(direct, now=NOW)


def test_samples_are_recognised_in_every_spelling() -> None:
    # EventBridge object, the API's {"value": "<JSON>"} text, ASFF ProductFields, ASFF Sample.
    assert alert(CUSTODIAN / "ec2-duty-event.json").sample
    assert alert(DOCUMENTED / "guardduty-api-getfindings.json").sample
    assert alert(DOCUMENTED / "securityhub-from-guardduty.json", 0).sample
    assert alert(DOCUMENTED / "securityhub-macie.json").sample
    assert not alert(DOCUMENTED / "guardduty-cli-getfindings.json").sample
    assert not alert(AFO / "CIS-1.3.json").sample
    titled = _gd_finding(title="[SAMPLE] Unusual API call")
    assert read_alert(_doc(titled)).sample


def test_products_are_named() -> None:
    assert alert(DOCUMENTED / "securityhub-inspector.json").product == "Inspector"
    assert alert(DOCUMENTED / "securityhub-macie.json").product == "Macie"
    finding = json.loads((DOCUMENTED / "securityhub-macie.json").read_text())
    del finding["ProductFields"]
    assert read_alert(_doc(finding)).product == "Macie"  # from ProductArn
    finding["ProductArn"] = "arn:aws:securityhub:us-east-1::product/aws/config"
    assert read_alert(_doc(finding)).product == "Config"


# -- severity --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "label"),
    [(0, "informational"), (0.1, "low"), (3.9, "low"), (4, "medium"), (6.9, "medium"),
     (7, "high"), (8.9, "high"), (9, "critical"), (10, "critical")],
)  # fmt: skip
def test_guardduty_severity_scale(value: float, label: str) -> None:
    assert read_alert(_doc(_gd_finding(severity=value))).severity == label


@pytest.mark.parametrize("value", [-1, 10.5, 1e308])
def test_guardduty_severity_outside_the_scale_is_refused(value: float) -> None:
    with pytest.raises(AlertError, match=r"^\$\.severity: .* outside GuardDuty's severity scale"):
        read_alert(_doc(_gd_finding(severity=value)))


@pytest.mark.parametrize(
    ("severity", "label"),
    [({"Label": "CRITICAL"}, "critical"), ({"Normalized": 0}, "informational"),
     ({"Normalized": 39}, "low"), ({"Normalized": 40}, "medium"), ({"Normalized": 89}, "high"),
     ({"Normalized": 90}, "critical")],
)  # fmt: skip
def test_asff_severity(severity: dict[str, Any], label: str) -> None:
    finding = json.loads((DOCUMENTED / "securityhub-macie.json").read_text())
    finding["Severity"] = severity
    assert read_alert(_doc(finding)).severity == label


# -- the window ---------------------------------------------------------------------------------
def test_window_margins_and_never_in_the_future() -> None:
    found = alert(CUSTODIAN / "ec2-duty-event.json")
    wide = scope_of(found, before=timedelta(days=3), after=timedelta(0), now=NOW)
    assert (wide.start, wide.end) == (utc("2017-12-05T15:32:49Z"), utc("2017-12-08T15:32:49Z"))
    soon = scope_of(found, now=utc("2017-12-08T15:40:00Z"))  # an hour after is not yet
    assert soon.end == utc("2017-12-08T15:40:00Z")
    early = scope_of(found, now=utc("2017-12-01T00:00:00Z"))  # the alert claims a future
    assert early.end == utc("2017-12-01T00:00:00Z") and early.start < early.end
    with pytest.raises(ValueError, match="negative"):
        scope_of(found, before=timedelta(hours=-1))


def test_a_finding_without_event_times_uses_created_and_updated() -> None:
    finding = _gd_finding()
    del finding["service"]
    found = read_alert(_doc(finding))
    assert found.first_seen == utc("2024-05-01T10:00:00Z")
    assert found.last_seen == utc("2024-05-01T11:00:00Z")
    del finding["createdAt"], finding["updatedAt"]
    timeless = read_alert(_doc(finding))
    assert timeless.first_seen is None
    assert (scope_of(timeless, now=NOW).start, scope_of(timeless, now=NOW).end) == (
        NOW - DEFAULT_BEFORE, NOW,
    )  # fmt: skip


# -- hostile documents -------------------------------------------------------------------------
BAD: list[tuple[bytes, str]] = [
    (b"", "$: the document is empty"),
    (b"not json", "$: not JSON: Expecting value (line 1 column 1)"),
    (b"{\"a\": \"\xff\"}", "$: not UTF-8 text"),
    (b'{"a": NaN}', "$: not JSON: NaN is not a JSON number"),
    (b"[]", "$: empty; no finding in the document"),
    (b"42", "$: not a GuardDuty or Security Hub finding (a JSON number)"),
    (b'{"hello": "world"}', "$: not a GuardDuty or Security Hub finding, nor an EventBridge"),
    (b'{"detail-type": "EC2 Instance State-change Notification", "detail": {}}',
     "$.detail-type: 'EC2 Instance State-change Notification' is not an alert event"),
    (b'{"detail-type": "GuardDuty Finding"}', "$.detail: missing"),
    (b'{"detail-type": "GuardDuty Finding", "detail": []}',
     "$.detail: expected an object, found a list"),
    (b'{"Findings": {}}', "$.Findings: expected a list of findings, found a JSON object"),
    (b'{"Findings": [7]}', "$.Findings[0]: expected an object, found a number"),
    (b'{"findings": [{"type": "X", "resource": {}}]}',
     "$.findings[0].id: missing (a GuardDuty finding has id, type and resource"),
    (b'{"id": 5, "type": "X", "severity": 2, "resource": {"resourceType": "Instance"}}',
     "$.id: expected text, found a number"),
    (b'{"id": "a", "type": "X", "severity": "2", "resource": {"resourceType": "Instance"}}',
     "$.severity: expected a number, found text"),
    (b'{"id": "a", "type": "X", "severity": 2, "resource": {"resourceType": 3}}',
     "$.resource.resourceType: expected text, found a number"),
    (b'{"id": "a", "type": "X", "severity": 2, "resource": {}}',
     "$.resource.resourceType: missing"),
    (b'{"id": "a\\u001b[2J", "type": "X", "severity": 2, "resource": {"resourceType": "I"}}',
     "$.id: holds control characters; not an AWS name or id"),
    (b'{"id": "a", "type": "X", "severity": 2, "resource": {"resourceType": "I"},'
     b' "service": {"eventFirstSeen": "yesterday"}}',
     "$.service.eventFirstSeen: not an ISO 8601 time: 'yesterday'"),
    (b'{"id": "a", "type": "X", "severity": 2, "resource": {"resourceType": "I"},'
     b' "service": {"action": {"awsApiCallAction": {"remoteIpDetails":'
     b' {"ipAddressV4": "1.2.3"}}}}}',
     "$.service.action.awsApiCallAction.remoteIpDetails.ipAddressV4: not an IP address: '1.2.3'"),
    (b'{"SchemaVersion": "2018-10-08", "ProductArn": "p"}',
     "$.Id: missing (Security Hub requires it)"),
    (b"[" * 100 + b"]" * 100, "$: nested deeper than 64 levels; not an alert"),
    (b"[" * 100_000 + b"]" * 100_000, "$: nested deeper than 64 levels; not an alert"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BAD, ids=range(len(BAD)))
def test_broken_documents_are_one_line_naming_the_path(data: bytes, message: str) -> None:
    with pytest.raises(AlertError) as caught:
        read_alerts(data)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_document_over_the_limit_is_refused_before_parsing() -> None:
    data = b'{"x": "' + b"a" * MAX_BYTES + b'"}'
    with pytest.raises(AlertError, match=r"^\$: the document is \d+ bytes; alert documents are"):
        read_alerts(data)


def test_huge_and_strange_text_is_kept_out_of_identifiers() -> None:
    finding = _gd_finding()
    finding["resource"]["instanceDetails"] = {"instanceId": "i-" + "f" * 5000}
    with pytest.raises(AlertError, match=r"instanceId: 5002 characters, longer than 2048"):
        read_alert(_doc(finding))
    finding = _gd_finding(title="\u202eevil\x1b[31m " + "t" * 5000)
    found = read_alert(_doc(finding))  # a title is shown through inert(); it is only shortened
    assert len(found.title) == 1024 and found.title.startswith("\u202eevil")


def test_one_bad_finding_spoils_read_alerts_but_not_read_each() -> None:
    good = _gd_finding()
    bad = dict(_gd_finding(), id=7)
    data = json.dumps({"findings": [good, bad]}).encode()
    with pytest.raises(AlertError, match=r"^\$\.findings\[1\]\.id: expected text"):
        read_alerts(data)
    first, second = read_each(data)
    assert isinstance(first, Alert) and isinstance(second, AlertError)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from([
    "id", "Id", "type", "Type", "severity", "resource", "resourceType", "service", "action",
    "awsApiCallAction", "remoteIpDetails", "ipAddressV4", "accessKeyDetails", "userName",
    "eventFirstSeen", "SchemaVersion", "ProductArn", "GeneratorId", "AwsAccountId", "Types",
    "CreatedAt", "UpdatedAt", "Severity", "Label", "Title", "Description", "Resources",
    "Details", "AwsIamAccessKey", "ProductFields", "findings", "Findings", "detail",
    "detail-type", "Sample", "additionalInfo", "sample", "instanceDetails", "instanceId",
])  # fmt: skip
SHAPED = st.recursive(
    JSON,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=8),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPED)
def test_any_json_is_an_alert_or_one_alert_error(document: Any) -> None:
    try:
        alerts = read_alerts(json.dumps(document).encode())
    except AlertError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("$")
        return
    for found in alerts:
        assert found.family in FAMILIES and found.severity in SEVERITIES
        json.dumps(found.as_dict())
        json.dumps(scope_of(found, now=NOW).as_dict())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corpus_findings_with_a_field_replaced_read_or_fail_cleanly(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(READABLE) + sorted(DOCUMENTED.glob("*.json"))))
    document = json.loads(path.read_text())
    node = document
    for _ in range(data.draw(st.integers(1, 6))):  # walk down to some field and replace it
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node)))
            if data.draw(st.booleans()) or not isinstance(node[key], dict | list):
                node[key] = data.draw(JSON)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            index = data.draw(st.integers(0, len(node) - 1))
            if not isinstance(node[index], dict | list):
                node[index] = data.draw(JSON)
                break
            node = node[index]
        else:
            break
    try:
        alerts = read_alerts(json.dumps(document).encode())
    except AlertError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("$")
        return
    for found in alerts:
        json.dumps(scope_of(found, now=NOW).as_dict())


# -- helpers ----------------------------------------------------------------------------------
def _doc(finding: dict[str, Any]) -> bytes:
    return json.dumps(finding).encode()


def _gd_finding(**changes: Any) -> dict[str, Any]:
    finding: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "type": "Recon:IAMUser/MaliciousIPCaller",
        "severity": 5,
        "title": "API invoked from a known malicious IP address.",
        "accountId": "123456789012",
        "region": "eu-west-1",
        "createdAt": "2024-05-01T10:00:00.000Z",
        "updatedAt": "2024-05-01T11:00:00.000Z",
        "resource": {
            "resourceType": "AccessKey",
            "accessKeyDetails": {
                "accessKeyId": "AKIAEXAMPLE",
                "userName": "bob",
                "userType": "IAMUser",
            },
        },
        "service": {
            "eventFirstSeen": "2024-05-01T09:55:00Z",
            "eventLastSeen": "2024-05-01T10:55:00Z",
        },
    }
    finding.update(changes)
    return finding
