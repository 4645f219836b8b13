"""The containment a playbook names, planned against one scope (issue 17, step 6's plan).

Triage prints this plan and, only with `--contain` or a playbook that says `auto: true`,
hands each entry to `cloudir.respond.run` (`isolate` / `disable_key`), which reads the
account, prints its own detailed plan, records every change in custody and keeps the
restore path. This module only decides *what* to contain from the scope, so the plan can
be printed (`--plan`) without a case or credentials, and each entry says the `cloudir
respond` command a person would run instead.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from cloudir.alerts.model import Scope
from cloudir.respond.keys import KEY_ID
from cloudir.safe_text import inert
from cloudir.triage.playbook import ContainAction, Playbook


@dataclass(frozen=True)
class PlannedContainment:
    """One respond action on one target, or the reason the playbook's action has none.

    `arguments` are the keyword arguments of `cloudir.respond.run.isolate` (instance_id,
    allow_cidrs, snapshot, replace, keep_credentials) or `run.disable_key`
    (access_key_id, revoke_sessions, role), besides the case, the AWS session, `yes`
    and the reporter.
    """

    action: str  # "isolate" or "disable-key", as `cloudir respond` names them
    target: str  # the instance, key or role; "" when there is none
    arguments: dict[str, Any] = field(default_factory=dict)
    auto: bool = False  # the playbook says `auto: true`: triage runs it without --contain
    region: str | None = None
    reason: str | None = None  # why nothing can be contained by this action

    @property
    def runnable(self) -> bool:
        return self.reason is None

    def command(self, case: str = "CASE") -> str:
        """The `cloudir respond` command that does the same by hand (plan without --yes)."""
        if not self.runnable:
            return ""
        words = ["cloudir", "respond", self.action, "--case", case]
        if self.region:
            words += ["--region", self.region]
        args = self.arguments
        if self.action == "isolate":
            words += ["--instance-id", args["instance_id"]]
            for cidr in args["allow_cidrs"]:
                words += ["--allow-cidr", cidr]
            words += ["--no-snapshot"] if not args["snapshot"] else []
            words += ["--replace"] if args["replace"] else []
            words += ["--keep-credentials"] if args["keep_credentials"] else []
        else:
            if args["access_key_id"]:
                words += ["--access-key-id", args["access_key_id"]]
            if args["role"]:
                words += ["--role", args["role"]]
            words += ["--revoke-sessions"] if args["revoke_sessions"] else []
        return shlex.join(words)

    def line(self) -> str:
        """One printable line (target text from the alert made inert)."""
        if not self.runnable:
            return f"{self.action}: nothing to contain: {self.reason}"
        mode = "runs automatically (auto: true)" if self.auto else "only with --contain"
        return f"{self.action} {inert(self.target, 120)}: {mode}; by hand: {inert(self.command())}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "arguments": self.arguments,
            "auto": self.auto,
            "region": self.region,
            "reason": self.reason,
            "command": self.command() or None,
        }


def plan_containment(scope: Scope, playbook: Playbook) -> list[PlannedContainment]:
    """Each of the playbook's actions applied to the scope's targets, in playbook order."""
    planned: list[PlannedContainment] = []
    for action in playbook.contain:
        if action.action == "isolate":
            planned += _isolations(scope, action, playbook.auto_contain)
        else:
            planned += _key_actions(scope, action, playbook.auto_contain)
    return planned


def _isolations(scope: Scope, action: ContainAction, auto: bool) -> list[PlannedContainment]:
    if not scope.instances:
        return [PlannedContainment("isolate", "", reason="the scope names no EC2 instance")]
    return [
        PlannedContainment(
            "isolate",
            instance,
            {
                "instance_id": instance,
                "allow_cidrs": list(action.options["allow_cidrs"]),
                "snapshot": action.options["snapshot"],
                "replace": action.options["replace"],
                "keep_credentials": action.options["keep_credentials"],
            },
            auto,
            scope.region,
        )
        for instance in scope.instances
    ]


def _key_actions(scope: Scope, action: ContainAction, auto: bool) -> list[PlannedContainment]:
    """A long-term key (AKIA) is made inactive and, with revoke_sessions, its user's
    sessions denied; a session key (ASIA) cannot be made inactive, so only its role's
    sessions can be revoked (the role from the scope when it names exactly one, else
    respond finds it in the case's CloudTrail). With no key, each role's sessions."""
    revoke = bool(action.options["revoke_sessions"])
    only_role = scope.roles[0] if len(scope.roles) == 1 else None
    planned: list[PlannedContainment] = []
    for key in scope.access_keys:
        if not KEY_ID.match(key):
            planned.append(
                PlannedContainment(
                    "disable-key", key, reason=f"{inert(key, 40)!r} is not an access key id"
                )
            )
        elif key.startswith("ASIA") and not revoke:
            planned.append(
                PlannedContainment(
                    "disable-key",
                    key,
                    reason=f"{key} is a session key: it cannot be made inactive, and the "
                    "playbook says revoke_sessions: false",
                )
            )
        else:
            role = only_role if key.startswith("ASIA") else None
            args = {"access_key_id": key, "revoke_sessions": revoke, "role": role}
            planned.append(PlannedContainment("disable-key", key, args, auto, scope.region))
    if not scope.access_keys:
        if revoke and scope.roles:
            for role in scope.roles:
                args = {"access_key_id": None, "revoke_sessions": True, "role": role}
                planned.append(
                    PlannedContainment("disable-key", f"role/{role}", args, auto, scope.region)
                )
        else:
            planned.append(
                PlannedContainment(
                    "disable-key",
                    "",
                    reason="the scope names no access key"
                    + ("" if revoke else " (and revoke_sessions is false, so roles are not used)")
                    + ("" if scope.roles or not revoke else " and no role"),
                )
            )
    return planned
