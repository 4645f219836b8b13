"""The EventBridge example (docs/examples/triage-eventbridge.yaml) read as CloudFormation
reads it: the rules match the alerts they are meant for and no others, and the command
the task runs is the one cloudir expects, rendered from real-shaped events the way
EventBridge's input transformer renders it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_triage_policy import policy_actions

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "docs" / "examples" / "triage-eventbridge.yaml"
OVERRIDES_LIMIT = 8192  # ECS RunTask: characters allowed for all overrides together


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: `!Ref X` -> {"Ref": "X"}, `!Sub ...` ->
    {"Fn::Sub": ...}, and so on, as CloudFormation expands them."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.SequenceNode):
        value: Any = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), CloudFormationLoader)
    return loaded


# -- events as AWS sends them (shapes from the GuardDuty and Security Hub user guides) ---
GUARDDUTY_EVENT = {
    "version": "0",
    "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad",
    "detail-type": "GuardDuty Finding",
    "source": "aws.guardduty",
    "account": "111122223333",
    "time": "2026-11-30T08:15:00Z",
    "region": "eu-west-1",
    "resources": [],
    "detail": {
        "schemaVersion": "2.0",
        "accountId": "111122223333",
        "region": "eu-west-1",
        "id": "a2c6f4e7b1d94c0e8f3a5b6c7d8e9f01",
        "type": "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "severity": 8,
        "resource": {"resourceType": "AccessKey"},
        "service": {"serviceName": "guardduty", "detectorId": "12abc34d567e8fa901bc2d34e56789f0"},
    },
}

SECURITYHUB_EVENT = {
    "version": "0",
    "id": "8e5622f9-d81c-4d81-612a-9319e7ee2506",
    "detail-type": "Security Hub Findings - Imported",
    "source": "aws.securityhub",
    "account": "111122223333",
    "time": "2026-11-30T08:20:00Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:securityhub:eu-west-1::product/aws/inspector/arn:aws:inspector2:x"],
    "detail": {
        "findings": [
            {
                "SchemaVersion": "2018-10-08",
                "Id": "arn:aws:inspector2:eu-west-1:111122223333:finding/0123456789abcdef",
                "ProductArn": "arn:aws:securityhub:eu-west-1::product/aws/inspector",
                "ProductName": "Inspector",
                "CompanyName": "Amazon",
                "ProductFields": {"aws/securityhub/CompanyName": "AWS"},
                "Severity": {"Label": "HIGH", "Normalized": 70},
                "Workflow": {"Status": "NEW"},
                "RecordState": "ACTIVE",
            }
        ]
    },
}


def _matches(pattern: Any, value: Any) -> bool:
    """EventBridge's matching for what the example uses: a list of allowed values (strings,
    {"numeric": [...]}, {"anything-but": x}), objects matched key by key, and an array in
    the event matching when any of its elements does."""
    if isinstance(value, list):
        return any(_matches(pattern, v) for v in value)
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _matches(p, value[k]) for k, p in pattern.items()
        )
    assert isinstance(pattern, list), pattern
    for allowed in pattern:
        if isinstance(allowed, dict) and "numeric" in allowed:
            op, bound = allowed["numeric"]
            assert op == ">="
            if isinstance(value, (int, float)) and value >= bound:
                return True
        elif isinstance(allowed, dict) and "anything-but" in allowed:
            if value != allowed["anything-but"]:
                return True
        elif value == allowed:
            return True
    return False


def _rule(template: dict[str, Any], name: str) -> dict[str, Any]:
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Events::Rule"
    properties: dict[str, Any] = resource["Properties"]
    return properties


def test_the_guardduty_rule_takes_medium_and_up_only(template: dict[str, Any]) -> None:
    pattern = _rule(template, "GuardDutyRule")["EventPattern"]
    assert _matches(pattern, GUARDDUTY_EVENT)
    for severity, matched in ((4, True), (4.0, True), (3.9, False), (2, False), (8.9, True)):
        event = copy.deepcopy(GUARDDUTY_EVENT)
        event["detail"]["severity"] = severity
        assert _matches(pattern, event) is matched, severity
    assert not _matches(pattern, SECURITYHUB_EVENT)


def test_the_security_hub_rule_leaves_guardduty_and_imported_findings_out(
    template: dict[str, Any],
) -> None:
    pattern = _rule(template, "SecurityHubRule")["EventPattern"]
    assert pattern["detail-type"] == ["Security Hub Findings - Imported"]
    assert _matches(pattern, SECURITYHUB_EVENT)
    assert not _matches(pattern, GUARDDUTY_EVENT)

    def variant(**fields: Any) -> dict[str, Any]:
        event = copy.deepcopy(SECURITYHUB_EVENT)
        event["detail"]["findings"][0].update(fields)
        return event

    assert not _matches(pattern, variant(ProductName="GuardDuty"))  # the other rule has it
    assert not _matches(pattern, variant(Severity={"Label": "LOW"}))
    assert not _matches(pattern, variant(Workflow={"Status": "RESOLVED"}))
    assert not _matches(pattern, variant(RecordState="ARCHIVED"))
    third_party = variant(ProductFields={"aws/securityhub/CompanyName": "Example Corp"})
    assert not _matches(pattern, third_party)


def _path(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for name, index in re.findall(r"\.([\w-]+)|\[(\d+)\]", path.removeprefix("$")):
        value = value[int(index)] if index else value[name]
    return value


def _render(target: dict[str, Any], event: dict[str, Any], contain: bool) -> dict[str, Any]:
    """The RunTask overrides EventBridge sends: CloudFormation's Fn::Sub first, then the
    input transformer's placeholders filled from the event."""
    transformer = target["InputTransformer"]
    text, variables = transformer["InputTemplate"]["Fn::Sub"]
    condition, when_true, when_false = variables["ContainJson"]["Fn::If"]
    assert condition == "ContainEnabled"
    parameters = {
        "ContainJson": when_true if contain else when_false,
        "CaseBucket": "ir-cases",
        "NotifyTopicArn": "arn:aws:sns:eu-west-1:111122223333:ir-triage",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: parameters[m.group(1)], text)
    for name, path in transformer["InputPathsMap"].items():
        text = text.replace(f"<{name}>", str(_path(event, path)))
    assert len(text) < OVERRIDES_LIMIT
    rendered: dict[str, Any] = json.loads(text)
    return rendered


TAIL = ["--upload", "s3://ir-cases/triage", "--notify",
        "sns:arn:aws:sns:eu-west-1:111122223333:ir-triage", "--json"]  # fmt: skip


@pytest.mark.parametrize("contain", [False, True])
def test_the_task_command_triages_the_finding_by_its_ids(
    template: dict[str, Any], contain: bool
) -> None:
    extra = ["--contain"] if contain else []
    [container] = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    cases = [
        ("GuardDutyRule", GUARDDUTY_EVENT, ["--guardduty",
         "12abc34d567e8fa901bc2d34e56789f0:a2c6f4e7b1d94c0e8f3a5b6c7d8e9f01"]),
        ("SecurityHubRule", SECURITYHUB_EVENT, ["--securityhub",
         "arn:aws:inspector2:eu-west-1:111122223333:finding/0123456789abcdef"]),
    ]  # fmt: skip
    for rule, event, alert in cases:
        [target] = _rule(template, rule)["Targets"]
        overrides = _render(target, event, contain)
        [override] = overrides["containerOverrides"]
        assert override["name"] == container["Name"]
        assert override["command"] == ["triage", "--case", "/case", *alert, *extra, *TAIL]
        assert target["Arn"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
        assert target["EcsParameters"]["LaunchType"] == "FARGATE"
        assert target["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "TaskDefinition"}


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = document["Statement"]
    return statements


def _allowed(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        if statement["Effect"] == "Allow":
            listed = statement["Action"]
            actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_the_task_role_holds_exactly_the_documented_policies(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    [base] = resources["TaskRole"]["Properties"]["Policies"]
    contain = resources["ContainPolicy"]
    assert contain["Condition"] == "ContainEnabled"
    assert contain["Properties"]["Roles"] == [{"Ref": "TaskRole"}]
    base_actions = _allowed(_statements(base["PolicyDocument"]))
    contain_statements = _statements(contain["Properties"]["PolicyDocument"])
    assert base_actions == policy_actions("triage-policy.json")
    assert base_actions | _allowed(contain_statements) == policy_actions(
        "triage-contain-policy.json"
    )
    [deny] = [s for s in contain_statements if s["Effect"] == "Deny"]
    assert deny["Resource"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}


def test_the_task_runs_as_the_images_non_root_user_with_the_task_role(
    template: dict[str, Any],
) -> None:
    task = template["Resources"]["TaskDefinition"]["Properties"]
    [container] = task["ContainerDefinitions"]
    dockerfile = (REPO / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+)", dockerfile, re.M)
    assert container["User"] == user != "0"
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert "Command" not in container  # the rule's override names the finding


def test_every_reference_names_something_the_template_defines(template: dict[str, Any]) -> None:
    defined = set(template["Resources"]) | set(template["Parameters"])
    defined |= {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::NoValue"}
    conditions = set(template.get("Conditions", {}))
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref":
                    refs.append(value)
                elif key == "Fn::GetAtt":
                    refs.append(value[0])
                elif key == "Fn::Sub":
                    text, names = (value, {}) if isinstance(value, str) else value
                    for name in re.findall(r"\$\{([\w:]+)", text):
                        if name not in names:
                            refs.append(name)
                if key == "Fn::If":
                    assert value[0] in conditions, value[0]
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(template["Resources"])
    walk(template["Outputs"])
    assert len(refs) > 15
    assert set(refs) <= defined, set(refs) - defined
    for resource in template["Resources"].values():
        assert resource.get("Condition", "ContainEnabled") in conditions
