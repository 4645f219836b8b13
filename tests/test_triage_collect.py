"""`collect()` runs a playbook's steps against a real moto server over HTTP.

This module starts its own `ThreadedMotoServer` and adds what moto lacks to its response
classes (as tests/test_capture_lookup.py does): a LookupEvents handler that answers per
LookupAttributes filter and records what was sent, a recorder around Security Hub's
GetFindings (moto ignores its Filters, so the test checks the filters cloudir sends and
that cloudir counts only the findings on the alert's resources), and GuardDuty's
ListFindings/GetFindings. boto3 itself is not patched.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudir.alerts.model import Alert, AlertResource, Scope
from cloudir.aws import Aws, AwsOptions
from cloudir.case import Case
from cloudir.triage.collect import StepResult, collect
from cloudir.triage.playbook import Playbook, parse
from tests.conftest import boto_client, ct_event, records_gz
from tests.test_capture_lookup import lookup_record

ACCOUNT = "123456789012"  # moto's account
START = datetime(2024, 7, 31, 9, 0, tzinfo=UTC)
END = datetime(2024, 7, 31, 10, 30, tzinfo=UTC)
KEY_1, KEY_2 = "AKIAEXAMPLEKEY000001", "AKIAEXAMPLEKEY000002"


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.guardduty import urls as guardduty_urls
    from moto.guardduty.responses import GuardDutyResponse
    from moto.securityhub.responses import SecurityHubResponse
    from moto.server import ThreadedMotoServer

    state: dict[str, Any] = {"lookups": [], "lookup_bodies": [], "hub_filters": [],
                             "hub_bodies": [], "gd_criteria": [], "gd_bodies": [],
                             "gd_findings": {}}  # fmt: skip

    def lookup_events(self: CloudTrailResponse) -> str:
        attributes = self._get_param("LookupAttributes")
        state["lookups"].append(attributes)
        [wanted] = attributes
        event = ct_event("2024-07-31T09:30:00Z", name="GetCallerIdentity")
        event["userIdentity"]["accessKeyId"] = wanted["AttributeValue"]
        body = json.dumps({"Events": [lookup_record(event), lookup_record(event)]})
        state["lookup_bodies"].append(body.encode())
        return body

    original_hub = SecurityHubResponse.get_findings

    def hub_get_findings(self: SecurityHubResponse) -> str:
        state["hub_filters"].append(self._get_param("Filters"))
        body: str = original_hub(self)
        state["hub_bodies"].append(body.encode())
        return body

    def gd_list_findings(self: GuardDutyResponse) -> str:
        criteria = json.loads(self.body)["findingCriteria"]["criterion"]
        state["gd_criteria"].append(criteria)
        [(_field, condition)] = [(k, v) for k, v in criteria.items() if k != "id"]
        ids = [
            i
            for i, f in state["gd_findings"].items()
            if f["_key"] in condition["equals"] and i not in criteria["id"]["notEquals"]
        ]
        return json.dumps({"findingIds": ids})

    def gd_get_findings(self: GuardDutyResponse) -> str:
        ids = json.loads(self.body)["findingIds"]
        found = [{k: v for k, v in state["gd_findings"][i].items() if k != "_key"} for i in ids]
        body = json.dumps({"findings": found})
        state["gd_bodies"].append(body.encode())
        return body

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CloudTrailResponse, "lookup_events", lookup_events, raising=False)
        patch.setattr(SecurityHubResponse, "get_findings", hub_get_findings)
        patch.setattr(GuardDutyResponse, "list_findings", gd_list_findings, raising=False)
        patch.setattr(GuardDutyResponse, "get_findings", gd_get_findings, raising=False)
        paths = dict(guardduty_urls.url_paths)
        paths["{0}/detector/(?P<detector_id>[^/]+)/findings$"] = GuardDutyResponse.dispatch
        paths["{0}/detector/(?P<detector_id>[^/]+)/findings/get$"] = GuardDutyResponse.dispatch
        patch.setattr(guardduty_urls, "url_paths", paths)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        state["url"] = f"http://{host}:{port}"
        yield state
        moto.stop()


def aws(url: str) -> Aws:
    return Aws(AwsOptions(region="us-east-1", endpoint_url=url))


def scope(region: str = "us-east-1", **kw: Any) -> Scope:
    return Scope(account=ACCOUNT, region=region, start=START, end=END, **kw)


def alert(source: str = "guardduty", **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "source": source, "product": "GuardDuty", "id": "alert-1", "type": "X:Y/Z",
        "title": "t", "severity": "high", "family": "instance", "account": ACCOUNT,
        "region": "us-east-1", "first_seen": START, "last_seen": END, "sample": False,
        "resources": (),
    }  # fmt: skip
    fields.update(kw)
    return Alert(**fields)


def book(steps: str) -> Playbook:
    return parse(f"name: t\nmatch: {{families: [instance]}}\ncollect:\n{steps}", "t.yml")


def run(
    tmp_path: Path, url: str, the_scope: Scope, playbook: Playbook, **kw: Any
) -> tuple[Case, list[StepResult], list[str]]:
    case = Case.create(tmp_path / "case")
    said: list[str] = []
    kw.setdefault("alert", alert())
    results = collect(case, aws(url), the_scope, playbook, {"Account": ACCOUNT}, said.append, **kw)
    return case, results, said


def entries(case: Case, action: str) -> list[dict[str, Any]]:
    return [e for e in case.custody_entries() if e["action"] == action]


def log_key(stamp: str, region: str = "us-east-1") -> str:
    day = f"{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}"
    return (
        f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{day}/"
        f"{ACCOUNT}_CloudTrail_{region}_{stamp}Z_{uuid.uuid4().hex[:16]}.json.gz"
    )


# -- cloudtrail ----------------------------------------------------------------------------
def test_cloudtrail_step_takes_the_windows_objects_from_the_first_trail_with_custody(
    server: dict[str, Any], tmp_path: Path
) -> None:
    url = server["url"]
    # a region no other test puts a trail in: moto's accounts live for the whole test
    # process, and "the first trail" must be this test's own
    region = "ap-southeast-4"
    s3 = boto_client(url, "s3")
    bucket = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    inside = [log_key("20240731T0905", region), log_key("20240731T1025", region)]
    outside = [log_key(stamp, region) for stamp in ("20240731T0100", "20240729T0905",
                                                    "20240802T0905")]  # fmt: skip
    for key in inside + outside:
        s3.put_object(Bucket=bucket, Key=key, Body=records_gz([ct_event("2024-07-31T09:01:00Z")]))
    boto_client(url, "cloudtrail", region).create_trail(Name="org", S3BucketName=bucket)

    playbook = book("  - kind: cloudtrail\n  - kind: lookup-events\n    by: [access-key]\n")
    the_scope = scope(region=region, access_keys=(KEY_1,))
    case, [trail, lookup], said = run(tmp_path, url, the_scope, playbook)

    assert (trail.kind, trail.status, trail.captured, trail.failed) == ("cloudtrail", "done", 2, 0)
    [evidence_id] = trail.evidence_ids
    captured = [e["source"]["key"] for e in entries(case, "capture")]
    assert sorted(captured) == sorted(inside)
    for entry in entries(case, "capture"):
        assert entry["evidence_id"] == evidence_id and entry["files"][0]["sha256"]
        assert entry["source"]["bucket"] == bucket
    [done] = entries(case, "capture-complete")
    assert done["evidence_id"] == evidence_id
    assert f"cloudtrail: trail org delivers to s3://{bucket}/" in said
    # The trail was read, so the LookupEvents fallback rests, on the record.
    assert (lookup.status, lookup.reason) == (
        "skipped",
        "the trail bucket was read (when: no-trail)",
    )
    [skip] = entries(case, "capture-skipped")
    assert skip["evidence_id"] is None
    assert skip["note"] == (
        "triage playbook t: lookup-events step skipped: the trail bucket was read (when: no-trail)"
    )
    assert skip["source"]["kind"] == "lookup-events" and skip["source"]["step"] == 1
    assert server["lookups"] == []


def test_a_bucket_given_to_collect_overrides_the_playbook_and_a_missing_one_fails_the_step_only(
    server: dict[str, Any], tmp_path: Path
) -> None:
    playbook = book(
        "  - kind: cloudtrail\n    trail: no-such-trail\n  - kind: ebs\n  - kind: containers\n"
    )
    missing = f"gone-{uuid.uuid4().hex[:12]}"
    case, results, said = run(
        tmp_path, server["url"], scope(), playbook, bucket=f"s3://{missing}/team"
    )
    assert [(r.kind, r.status) for r in results] == [
        ("cloudtrail", "failed"), ("ebs", "skipped"), ("containers", "skipped"),
    ]  # fmt: skip
    assert results[0].failed == 1
    assert f"s3://{missing}/team/AWSLogs/" in (results[0].reason or "")
    assert "NoSuchBucket" in (results[0].reason or "")
    assert results[1].reason == "the scope names no EC2 instance"
    notes = [e["note"] for e in entries(case, "capture-skipped")]
    assert [n.split(":")[1].strip() for n in notes] == [
        "cloudtrail step failed", "ebs step skipped", "containers step skipped",
    ]  # fmt: skip
    assert any(line.startswith("cloudtrail: failed: ") for line in said)


# -- lookup-events -------------------------------------------------------------------------
def test_lookup_events_runs_one_filtered_lookup_per_key_each_its_own_item(
    server: dict[str, Any], tmp_path: Path
) -> None:
    before = len(server["lookups"])
    playbook = book("  - kind: lookup-events\n    by: [access-key]\n")
    the_scope = scope(access_keys=(KEY_1, KEY_2), users=("alice",))
    case, [result], _ = run(tmp_path, server["url"], the_scope, playbook)

    assert server["lookups"][before:] == [
        [{"AttributeKey": "AccessKeyId", "AttributeValue": KEY_1}],
        [{"AttributeKey": "AccessKeyId", "AttributeValue": KEY_2}],
    ]
    assert (result.status, result.captured, len(result.evidence_ids)) == ("done", 4, 2)
    for evidence_id, key, body in zip(
        result.evidence_ids, (KEY_1, KEY_2), server["lookup_bodies"][before:], strict=True
    ):
        meta = case.read_meta(evidence_id)
        assert meta["source"]["filter"] == {"AttributeKey": "AccessKeyId", "AttributeValue": key}
        assert meta["kind"] == "cloudtrail"
        page = case.evidence_dir(evidence_id) / "pages" / "page-00001.json"
        assert page.read_bytes() == body  # as received
        [entry] = [e for e in entries(case, "capture") if e["evidence_id"] == evidence_id]
        assert entry["source"]["filter"]["AttributeValue"] == key
        assert entry["source"]["events"] == 2 and entry["source"]["as_received"] is True


def test_lookup_events_with_nothing_to_filter_by_is_a_recorded_skip(
    server: dict[str, Any], tmp_path: Path
) -> None:
    playbook = book("  - kind: lookup-events\n    by: [user]\n")
    case, [result], _ = run(tmp_path, server["url"], scope(access_keys=(KEY_1,)), playbook)
    assert (result.status, result.reason) == (
        "skipped", "the scope names no user name to filter by",
    )  # fmt: skip
    assert len(entries(case, "capture-skipped")) == 1


# -- ebs -------------------------------------------------------------------------------------
def test_ebs_step_describes_and_snapshots_the_instance_without_downloading(
    server: dict[str, Any], tmp_path: Path
) -> None:
    ec2 = boto_client(server["url"], "ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    volumes = sorted(m["Ebs"]["VolumeId"] for m in described["BlockDeviceMappings"])

    case, [result], _ = run(tmp_path, server["url"], scope(instances=(instance,)), book(
        "  - kind: ebs\n"))  # fmt: skip

    assert (result.status, result.captured) == ("done", len(volumes))
    assert result.evidence_ids[0] == f"ec2-{instance}"
    snapshot_items = result.evidence_ids[1:]
    assert len(snapshot_items) == len(volumes)
    assert sorted(case.read_meta(e)["snapshot"]["VolumeId"] for e in snapshot_items) == volumes
    assert {case.read_meta(e)["instance_id"] for e in snapshot_items} == {instance}
    taken = entries(case, "snapshot")
    assert sorted(e["source"]["volume_id"] for e in taken) == volumes
    assert not list(case.root.glob("evidence/*/image.raw"))
    assert entries(case, "capture-ebs-image") == []


# -- containers ------------------------------------------------------------------------------
def test_containers_without_an_engine_are_a_counted_skip_with_the_reason(
    server: dict[str, Any], tmp_path: Path
) -> None:
    host = f"unix://{tmp_path}/no-engine.sock"
    case, [result], _ = run(
        tmp_path, server["url"], scope(containers=("web-1", "3f2a9c1e7b4d")),
        book("  - kind: containers\n"), docker_host=host,
    )  # fmt: skip
    assert (result.status, result.skipped, result.captured, result.failed) == ("skipped", 2, 0, 0)
    assert (result.reason or "").startswith(f"no Docker engine at {host}: ")
    [entry] = entries(case, "capture-skipped")
    assert entry["source"]["skipped"] == 2 and entry["source"]["outcome"] == "skipped"
    assert entry["note"].startswith("triage playbook t: containers step skipped: no Docker engine")


# -- related findings ------------------------------------------------------------------------
def asff(finding_id: str, resource: str) -> dict[str, Any]:
    return {
        "SchemaVersion": "2018-10-08",
        "Id": finding_id,
        "ProductArn": f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default",
        "GeneratorId": "test",
        "AwsAccountId": ACCOUNT,
        "Types": ["TTPs/Initial Access"],
        "CreatedAt": "2024-07-31T09:10:00Z",
        "UpdatedAt": "2024-07-31T09:10:00Z",
        "Severity": {"Label": "HIGH"},
        "Title": finding_id,
        "Description": "test finding",
        "Resources": [{"Type": "AwsEc2Instance", "Id": resource}],
    }


def test_related_findings_from_security_hub_are_stored_as_received_as_alert_evidence(
    server: dict[str, Any], tmp_path: Path
) -> None:
    hub = boto_client(server["url"], "securityhub")
    target = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0{uuid.uuid4().hex[:16]}"
    other = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0{uuid.uuid4().hex[:16]}"
    the_alert = asff(f"alert-{uuid.uuid4().hex[:8]}", target)
    related = asff(f"related-{uuid.uuid4().hex[:8]}", target)
    hub.batch_import_findings(Findings=[the_alert, related, asff("unrelated", other)])

    hub_alert = alert(
        "securityhub", id=the_alert["Id"], raw=the_alert,
        resources=(AlertResource("instance", target.rsplit("/", 1)[1]),),
    )  # fmt: skip
    before = len(server["hub_filters"])
    case, [result], _ = run(
        tmp_path, server["url"], scope(), book("  - kind: related-findings\n"), alert=hub_alert
    )

    filters = {
        "ResourceId": [
            {"Value": target, "Comparison": "EQUALS"},
            {"Value": target.rsplit("/", 1)[1], "Comparison": "EQUALS"},
        ],
        "Id": [{"Value": the_alert["Id"], "Comparison": "NOT_EQUALS"}],
    }
    assert server["hub_filters"][before:] == [filters]
    assert (result.status, result.captured) == ("done", 1)  # the unrelated one is not counted
    [evidence_id] = result.evidence_ids
    meta = case.read_meta(evidence_id)
    assert meta["kind"] == "alert"
    assert meta["source"]["related_to"] == the_alert["Id"]
    assert meta["source"]["filters"] == filters
    page = case.evidence_dir(evidence_id) / "securityhub" / "get-findings-00001.json"
    assert page.read_bytes() == server["hub_bodies"][-1]
    [entry] = entries(case, "capture")
    assert entry["source"]["related"] == 1 and entry["source"]["as_received"] is True
    assert entries(case, "capture-complete")[0]["evidence_id"] == evidence_id


def test_related_findings_from_guardduty_filter_by_resource_and_leave_the_alert_out(
    server: dict[str, Any], tmp_path: Path
) -> None:
    guardduty = boto_client(server["url"], "guardduty")
    detector = guardduty.create_detector(Enable=True)["DetectorId"]
    key = "AKIAEXAMPLEKEY000009"
    server["gd_findings"].update(
        {
            "gd-alert": {"id": "gd-alert", "type": "UnauthorizedAccess:IAMUser/X", "_key": key},
            "gd-other": {"id": "gd-other", "type": "Recon:IAMUser/Y", "_key": key},
            "gd-elsewhere": {"id": "gd-elsewhere", "type": "Recon:IAMUser/Y", "_key": "AKIAZ"},
        }
    )
    raw = {"Arn": f"arn:aws:guardduty:us-east-1:{ACCOUNT}:detector/{detector}/finding/gd-alert"}
    the_alert = alert(
        id="gd-alert", raw=raw, family="access-key",
        resources=(AlertResource("access-key", key), AlertResource("iam-user", "alice")),
    )  # fmt: skip
    case, [result], _ = run(
        tmp_path, server["url"], scope(), book("  - kind: related-findings\n"), alert=the_alert
    )
    assert server["gd_criteria"][-2:] == [
        {"resource.accessKeyDetails.accessKeyId": {"equals": [key]},
         "id": {"notEquals": ["gd-alert"]}},
        {"resource.accessKeyDetails.userName": {"equals": ["alice"]},
         "id": {"notEquals": ["gd-alert"]}},
    ]  # fmt: skip
    assert (result.status, result.captured) == ("done", 1)
    [evidence_id] = result.evidence_ids
    assert case.read_meta(evidence_id)["source"]["detector_id"] == detector
    page = case.evidence_dir(evidence_id) / "guardduty" / "get-findings-00001.json"
    assert page.read_bytes() == server["gd_bodies"][-1]
    assert [f["id"] for f in json.loads(page.read_bytes())["findings"]] == ["gd-other"]


def test_an_instance_that_is_gone_fails_the_ebs_step_on_the_record_and_the_next_step_runs(
    server: dict[str, Any], tmp_path: Path
) -> None:
    gone = "i-0000000000000dead"
    case, [ebs, containers], said = run(
        tmp_path, server["url"], scope(instances=(gone,)),
        book("  - kind: ebs\n  - kind: containers\n"),
    )  # fmt: skip
    assert (ebs.status, ebs.failed, ebs.captured) == ("failed", 1, 0)
    assert (ebs.reason or "").startswith(f"{gone}: ec2:DescribeInstances failed: ")
    assert ebs.problems == [ebs.reason]
    assert containers.status == "skipped"
    outcomes = [e["source"]["outcome"] for e in entries(case, "capture-skipped")]
    assert outcomes == ["failed", "skipped"]
    assert f"ebs: failed: {ebs.reason}" in said


def test_capture_lookup_with_filters_names_each_filter_and_without_keeps_its_shape(
    server: dict[str, Any], tmp_path: Path
) -> None:
    from cloudir.capture.cloudtrail import LookupFilter, RequestSpacing, capture_lookup
    from cloudir.timewindow import Window

    case = Case.create(tmp_path / "case")
    results = capture_lookup(
        case, aws(server["url"]), ["us-east-1"], Window(START, END), {"Account": ACCOUNT},
        lambda _: None, spacing=lambda: RequestSpacing(0.0),
        filters=[LookupFilter("Username", "alice"), LookupFilter("ResourceName", "../../x")],
    )  # fmt: skip
    assert [r.as_dict()["filter"] for r in results] == [
        {"AttributeKey": "Username", "AttributeValue": "alice"},
        {"AttributeKey": "ResourceName", "AttributeValue": "../../x"},
    ]
    assert (
        results[0].evidence_id == f"cloudtrail-api-{ACCOUNT}-us-east-1-20240731T0900-Username-alice"
    )
    assert "/" not in results[1].evidence_id  # one folder, inside the case's evidence
    assert case.evidence_dir(results[1].evidence_id).parent == case.evidence_dir("-").parent
    closing = [e["note"] for e in entries(case, "capture-complete")]
    assert closing[0] == "LookupEvents us-east-1: 2 events in 1 pages for Username=alice"
    assert server["lookups"][-2:] == [
        [{"AttributeKey": "Username", "AttributeValue": "alice"}],
        [{"AttributeKey": "ResourceName", "AttributeValue": "../../x"}],
    ]
