"""The alert's verdict from a real case: CloudTrail captured, timelined and detected by the
cloudir CLI, then validated for hand-made alerts (tests/triage_case.py tells the story)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.alerts.model import Alert, AlertResource, Scope
from cloudir.case import Case
from cloudir.case_folder import timeline_files
from cloudir.errors import EvidenceError
from cloudir.triage.verdict import (
    CONFIRMED,
    CORROBORATED,
    EXPLAINED,
    NOT_CORROBORATED,
    VERDICTS,
    Validation,
    validate_alert,
    write_validation,
)
from tests.triage_case import ACCOUNT, build_case, event_ids, findings

STOP_LOGGING = "CloudTrail Logging Stopped"
NEW_USER_KEY = "New IAM User Given an Access Key by Its Creator"
OTHER_USER_KEY = "IAM Access Key Created for Another User"
DETECTOR = "GuardDuty Detector Deleted, Disabled or Detached"


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-11-20T{text}+00:00")


def alert(
    api: str | None = None, sample: bool = False, title: str = "Credentials used from outside"
) -> Alert:
    return Alert(
        source="guardduty",
        product="GuardDuty",
        id="6ac6f2a5e9d2c4b8f1e0a7d3b5c9e812",
        type="UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        title=title,
        severity="high",
        family="access-key",
        account=ACCOUNT,
        region="us-east-1",
        first_seen=at("10:00:00"),
        last_seen=at("10:07:00"),
        sample=sample,
        resources=(AlertResource("access-key", "AKIALEAKED0001"),),
        action={"api": api, "serviceName": "iam.amazonaws.com"} if api else {},
    )


def scope(start: str = "09:30:00", end: str = "10:30:00", **entities: Any) -> Scope:
    return Scope(account=ACCOUNT, region="us-east-1", start=at(start), end=at(end), **entities)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_case(tmp_path_factory.mktemp("verdict"))


def text(validation: Validation) -> str:
    return "\n".join(validation.reasons)


def test_a_leaked_key_with_high_findings_and_the_alerts_call_is_confirmed(case: Path) -> None:
    v = validate_alert(case, alert(api="CreateUser"), scope(access_keys=("AKIALEAKED0001",)))
    assert (v.verdict, v.rule) == (CONFIRMED, "serious-finding")
    by_title = findings(case)
    [stop] = by_title[STOP_LOGGING]["event_ids"]
    [create_user] = event_ids(case, "leaky", "CreateUser")
    reasons = text(v)
    assert (
        f"{by_title[STOP_LOGGING]['rule_id']} \u201c{STOP_LOGGING}\u201d (high, succeeded"
        in reasons
    )
    assert stop in reasons and NEW_USER_KEY in reasons
    assert "the alert's call CreateUser is in the evidence: 1 call" in reasons
    assert create_user in reasons
    # the evidence: the key's five calls in the window (DeleteDetector at 13:00 is outside)
    assert v.activity["count"] == 5
    assert v.activity["named_action"] == {
        "name": "CreateUser", "service": "iam.amazonaws.com", "count": 1,
        "event_ids": [create_user],
    }  # fmt: skip
    assert [r["action"] for r in v.activity["rows"]][:3] == [
        "sts.amazonaws.com:GetCallerIdentity", "s3.amazonaws.com:ListBuckets",
        "cloudtrail.amazonaws.com:StopLogging",
    ]  # fmt: skip
    titles = {f["title"]: f for f in v.findings}
    assert set(titles) == {STOP_LOGGING, NEW_USER_KEY, OTHER_USER_KEY, "IAM User Created"}
    # a finding of several principals counts only the key's own events here
    assert titles[OTHER_USER_KEY]["events_in_scope"] == 1
    assert titles[OTHER_USER_KEY]["event_ids"] == event_ids(case, "leaky", "CreateAccessKey")
    assert [f["title"] for f in v.story["later"]] == [DETECTOR]
    assert v.searched["rows"] == 13 and v.searched["rows_in_window"] == 9
    assert v.searched["rows_in_window_by_source"] == {"cloudtrail": 9}


def test_the_same_key_without_the_alerts_call_is_only_corroborated(case: Path) -> None:
    v = validate_alert(case, alert(api="GetSecretValue"), scope(users=("leaky",)))
    assert (v.verdict, v.rule) == (CORROBORATED, "consistent")
    assert v.reasons[-1] == (
        "not confirmed: the alert's call GetSecretValue is not among the 5 rows by the "
        "scoped entities in the window"
    )
    assert STOP_LOGGING in text(v) and v.activity["named_action"]["count"] == 0


def test_a_medium_finding_on_the_principal_corroborates(case: Path) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/carol"
    v = validate_alert(case, alert(), scope(principals=(arn,)))
    assert v.verdict == CORROBORATED
    [carol_key] = event_ids(case, "carol", "CreateAccessKey")
    rule_id = findings(case)[OTHER_USER_KEY]["rule_id"]
    assert v.reasons[0] == (
        f"cloudir rule {rule_id} \u201c{OTHER_USER_KEY}\u201d (medium, succeeded, actor "
        f"cli-sdk) raised on the scoped entities: 1 of its 3 events by the scoped entities, "
        f"event {carol_key}"
    )
    assert v.reasons[-1].startswith("not confirmed: no finding of level high or critical")


def test_the_alerts_call_alone_corroborates(case: Path) -> None:
    wrong_service = validate_alert(  # the alert says iam.amazonaws.com; bob's are S3's
        case, alert(api="ListBuckets"), scope(access_keys=("AKIABOBBOB0001",))
    )
    assert wrong_service.activity["named_action"]["count"] == 0
    assert wrong_service.verdict == NOT_CORROBORATED
    v = validate_alert(
        case,
        Alert(**{**alert().__dict__, "action": {"api": "ListBuckets"}}),
        scope(access_keys=("AKIABOBBOB0001",)),
    )
    assert v.verdict == CORROBORATED and v.findings == ()
    ids = event_ids(case, "bob", "ListBuckets")
    assert v.reasons == (
        "the alert's call ListBuckets is in the evidence: 2 calls by the scoped entities in "
        f"the window, events {ids[0]}, {ids[1]}",
    )


def test_activity_with_nothing_consistent_is_not_corroborated(case: Path) -> None:
    v = validate_alert(case, alert(api="GetSecretValue"), scope(users=("bob",)))
    assert (v.verdict, v.rule) == (NOT_CORROBORATED, "inconsistent")
    assert v.reasons[0].startswith("2 rows by the scoped entities in the window (searched 9")
    assert event_ids(case, "bob", "ListBuckets")[0] in v.reasons[0]
    assert v.reasons[1] == "the alert's call GetSecretValue is not among them"


def test_a_principal_that_did_nothing_in_the_window_is_not_corroborated(case: Path) -> None:
    v = validate_alert(case, alert(api="CreateUser"), scope(access_keys=("AKIANOBODY0001",)))
    assert (v.verdict, v.rule) == (NOT_CORROBORATED, "nothing")
    assert v.reasons == (
        "no activity by the scoped entities (access_keys AKIANOBODY0001) in the window: "
        "searched 9 timeline rows from 2026-11-20T09:30:00Z to 2026-11-20T10:30:00Z "
        "(cloudtrail 9) of 13 in the case",
        "no cloudir finding names these entities in the window",
        "so the alert's call CreateUser is not in the evidence",
    )
    assert v.activity["count"] == 0 and v.activity["rows"] == []


def test_leaky_outside_its_window_did_nothing(case: Path) -> None:
    """The same key, a window after its calls: its findings are the story's earlier steps."""
    v = validate_alert(case, alert(), scope("11:00:00", "12:00:00", users=("leaky",)))
    assert v.verdict == NOT_CORROBORATED
    assert {f["title"] for f in v.story["earlier"]} >= {STOP_LOGGING, NEW_USER_KEY}
    assert [f["title"] for f in v.story["later"]] == [DETECTOR]


def test_a_sample_finding_is_explained_whatever_the_evidence(case: Path) -> None:
    v = validate_alert(case, alert(api="CreateUser", sample=True), scope(users=("leaky",)))
    assert (v.verdict, v.rule) == (EXPLAINED, "sample")
    assert v.reasons[0].startswith("GuardDuty marks this finding as a sample")
    assert v.alert["sample"] is True


def test_activity_all_by_automation_is_explained(case: Path) -> None:
    v = validate_alert(case, alert(), scope("10:25:00", "10:35:00", roles=("terraform-deployer",)))
    assert (v.verdict, v.rule) == (EXPLAINED, "automation")
    assert v.activity["by_actor"]["automation"] == 2 == v.activity["count"]
    assert v.activity["known_automation"] == 2
    assert v.activity["automation_identities"] == ["terraform"]
    assert (
        "every one of the 2 rows by the scoped entities in the window is by known "
        in (v.reasons[0])
    )
    assert "terraform" in v.reasons[0]
    # the finding also holds leaky's events (a person's); here only the role's count
    new_user_key = next(f for f in v.findings if f["title"] == NEW_USER_KEY)
    assert (new_user_key["actor"], new_user_key["events_in_scope"]) == ("automation", 2)


def test_an_automation_user_agent_alone_explains_nothing(case: Path) -> None:
    """The agent is the caller's own text: a leaked key can claim to be Terraform."""
    listed = Alert(**{**alert().__dict__, "action": {"api": "ListBuckets"}})
    v = validate_alert(case, listed, scope("10:45:00", "10:55:00", users=("mallory",)))
    assert v.activity["by_actor"]["automation"] == 1 and v.activity["known_automation"] == 0
    assert (v.verdict, v.rule) == (CORROBORATED, "consistent")
    [call] = event_ids(case, "mallory", "ListBuckets")
    assert v.reasons == (
        "the alert's call ListBuckets is in the evidence: 1 call by the scoped entities in "
        f"the window, event {call}",
    )


def test_a_role_arn_names_its_sessions(case: Path) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/terraform-deployer"
    v = validate_alert(case, alert(), scope("10:25:00", "10:35:00", principals=(role,)))
    assert v.activity["count"] == 2 and v.verdict == EXPLAINED


def test_matches_the_users_filters_suppressed_are_explained(case: Path) -> None:
    v = validate_alert(case, alert(), scope("10:35:00", "10:45:00", users=("erin",)))
    assert (v.verdict, v.rule) == (EXPLAINED, "suppressed")
    [erin_key] = event_ids(case, "erin", "CreateAccessKey")
    assert v.reasons[1] == (
        "filter 5b7e2c1a-1111-4c52-9d38-7c2e4b1a9f60 (Erin rotates the partner keys) "
        f"removed event {erin_key}"
    )


def test_an_alert_naming_no_entity_cannot_be_searched(case: Path) -> None:
    v = validate_alert(case, alert(), scope())
    assert (v.verdict, v.rule) == (NOT_CORROBORATED, "no-entity")


def test_the_alerts_own_rows_are_never_its_evidence(case: Path, tmp_path: Path) -> None:
    """Rows from evidence of kind "alert" (the alert on the timeline) are left out."""
    copy = tmp_path / "case"
    shutil.copytree(case, copy)
    [meta] = list((copy / "evidence").glob("*/meta.json"))
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"kind": "alert"}))
    v = validate_alert(copy, alert(api="CreateUser"), scope(access_keys=("AKIALEAKED0001",)))
    assert v.activity["count"] == 0
    assert v.searched["alert_evidence_left_out"] == [meta.parent.name]


def test_a_case_without_timeline_or_findings_says_nothing_was_searched(tmp_path: Path) -> None:
    Case.create(tmp_path / "empty")
    v = validate_alert(tmp_path / "empty", alert(), scope(users=("leaky",)))
    assert v.verdict == NOT_CORROBORATED
    assert "the case has no timeline, so no row was searched" in v.reasons[0]
    assert v.searched["timeline"] is False and v.searched["findings_file"] == "absent"


def test_a_broken_findings_file_is_one_line(case: Path, tmp_path: Path) -> None:
    copy = tmp_path / "case"
    shutil.copytree(case, copy)
    (copy / "findings" / "findings.json").write_text('{"findings": 3}')
    with pytest.raises(EvidenceError) as caught:
        validate_alert(copy, alert(), scope(users=("leaky",)))
    assert "\n" not in str(caught.value) and "not a findings document" in str(caught.value)


def test_write_validation_stores_the_document(case: Path, tmp_path: Path) -> None:
    copy = tmp_path / "case"
    shutil.copytree(case, copy)
    v = validate_alert(copy, alert(api="CreateUser"), scope(access_keys=("AKIALEAKED0001",)))
    path = write_validation(copy, v)
    assert path == copy / "triage" / "validation.json"
    doc = json.loads(path.read_text())
    assert doc == json.loads(json.dumps(v.as_dict()))
    assert doc["validation_version"] == "1" and doc["verdict"] == "confirmed"
    assert doc["alert"]["title"] == "Credentials used from outside"
    assert doc["scope"]["access_keys"] == ["AKIALEAKED0001"]
    assert list((copy / "triage").iterdir()) == [path]  # no temporary file left


hostile = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=hostile, api=hostile, key=hostile, user=hostile, address=hostile)
def test_any_alert_text_gets_a_verdict_with_one_line_reasons(
    case: Path, title: str, api: str, key: str, user: str, address: str
) -> None:
    crafted = Alert(**{**alert(title=title).__dict__, "action": {"api": api, "service": api}})
    v = validate_alert(
        case, crafted, scope(access_keys=(key,), users=(user,), addresses=(address,))
    )
    assert v.verdict in VERDICTS
    assert v.reasons and all(r and "\n" not in r and "\r" not in r for r in v.reasons)
    json.dumps(v.as_dict())


def test_a_broken_timeline_is_one_line(case: Path, tmp_path: Path) -> None:
    copy = tmp_path / "case"
    shutil.copytree(case, copy)
    [part] = list(timeline_files(copy / "timeline"))
    part.write_bytes(b"PAR1 not parquet at all PAR1")
    with pytest.raises(EvidenceError) as caught:
        validate_alert(copy, alert(), scope(users=("leaky",)))
    assert "the timeline cannot be read" in str(caught.value) and "\n" not in str(caught.value)


def test_a_linked_triage_folder_is_never_written_through(case: Path, tmp_path: Path) -> None:
    copy = tmp_path / "case"
    shutil.copytree(case, copy)
    outside = tmp_path / "outside"
    outside.mkdir()
    (copy / "triage").symlink_to(outside)
    v = validate_alert(copy, alert(), scope(users=("leaky",)))
    with pytest.raises(EvidenceError, match="symbolic link"):
        write_validation(copy, v)
    assert list(outside.iterdir()) == []
