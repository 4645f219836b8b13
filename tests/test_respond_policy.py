"""The README's minimum IAM policy covers every AWS action the respond commands call."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cloudir.respond.changes import KINDS, Change

REPO = Path(__file__).resolve().parent.parent
ACTION = re.compile(r'"((?:ec2|autoscaling|iam|sts):[A-Za-z]+)"')


def readme_policy() -> set[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("The minimum IAM policy for the responder's role")
    block = text[
        text.index("```json", start) + 7 : text.index("```", text.index("```json", start) + 7)
    ]
    policy = json.loads(block)
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def test_every_action_the_respond_code_names_is_in_the_readme_policy() -> None:
    named = set()
    for module in (REPO / "cloudir" / "respond").glob("*.py"):
        named |= set(ACTION.findall(module.read_text())) - {"sts:GetCallerIdentity"}
    # the snapshot step runs the EBS capture code
    named |= {"ec2:DescribeVolumes", "ec2:CreateSnapshots", "ec2:CreateTags"}
    assert len(named) > 20
    assert named - readme_policy() == set()


def test_every_change_kind_names_a_permission_in_the_policy() -> None:
    policy = readme_policy()
    for kind in KINDS:
        for after in (None, {"k": "v"}, "x"):
            target = "user/u" if kind == "inline-policy" else "t"
            change = Change(kind, target, None, after, "", detail={})
            for permission in change.permission.split(", "):
                assert permission in policy, (kind, after, permission)
