"""Plan putting back what a containment action changed, from custody alone.

Restore trusts the custody log, not memory: each `respond-change` entry holds the value
found before the change and the value set. A setting whose current value is neither
(someone changed it since) is drift; restore will not overwrite drift unless told to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cloudir.capture.aws import call
from cloudir.case import Case
from cloudir.custody_actions import RESPOND_CLOSING, read_action
from cloudir.custody_actions import CustodyAction as A
from cloudir.errors import CloudError, UsageError
from cloudir.respond.changes import Change, Context, is_gone, read, same
from cloudir.respond.plan import Plan
from cloudir.respond.record import RESPONSE_KIND

LABELS = {
    "security-group": "quarantine group {name} in {target}",
    "eni-security-groups": "security groups of {target}",
    "asg-min-size": "minimum size of auto-scaling group {target}",
    "asg-membership": "auto-scaling group of {target}",
    "instance-attribute": "{attribute} of {target}",
    "tags": "tags of {target}",
    "access-key-status": "status of access key {target}",
    "inline-policy": "inline policy {policy} on {target}",
    "instance-profile": "instance profile of {target}",
    "metadata-endpoint": "instance metadata service of {target}",
}


@dataclass
class RecordedAction:
    """One containment action as custody tells it."""

    action_id: str
    action: str
    target: str
    region: str | None
    status: str  # complete | incomplete | started (no end entry: the run was killed)
    changes: list[Change] = field(default_factory=list)  # done, as custody recorded them
    unconfirmed: list[Change] = field(default_factory=list)  # started, never confirmed
    restored_by: str | None = None
    actor: str | None = None
    started: str | None = None
    end_note: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # each change: time, summary

    def as_dict(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "action": self.action,
            "target": self.target,
            "region": self.region,
            "status": self.status,
            "changes": len(self.changes),
            "restored_by": self.restored_by,
            "actor": self.actor,
            "started": self.started,
            "end_note": self.end_note,
            "steps": self.steps,
        }


def recorded_actions(case: Case) -> list[RecordedAction]:
    """Every isolate/disable-key action in the case, oldest first."""
    metas = {
        eid: meta
        for eid in case.evidence_ids()
        if (meta := case.read_meta(eid)).get("kind") == RESPONSE_KIND
    }
    actions: dict[str, RecordedAction] = {}
    restores: dict[str, str] = {}
    started: dict[str, dict[Any, dict[str, Any]]] = {}
    for entry in case.custody_entries():
        eid = str(entry.get("evidence_id"))
        meta = metas.get(eid)
        if meta is None:
            continue
        source = meta.get("source", {})
        action = read_action(entry.get("action"))
        if source.get("action") == "restore":
            if action is A.RESPOND_COMPLETE and source.get("restores"):
                restores[source["restores"]] = eid
            continue
        item = actions.setdefault(
            eid,
            RecordedAction(
                eid,
                source.get("action", "?"),
                source.get("target", "?"),
                source.get("region"),
                "started",
            ),
        )
        if action is A.RESPOND_PLAN:
            item.started, item.actor = entry.get("ts"), entry.get("actor")
        elif action is A.RESPOND_CHANGE_STARTED:
            started.setdefault(eid, {})[(entry.get("source") or {}).get("step")] = entry
        elif action is A.RESPOND_CHANGE:
            change = Change.from_dict(entry.get("source") or {})
            started.get(eid, {}).pop((entry.get("source") or {}).get("step"), None)
            item.changes.append(change)
            item.steps.append(
                {
                    "ts": entry.get("ts"),
                    "kind": change.kind,
                    "target": change.target,
                    "summary": change.summary,
                }
            )
        elif action in RESPOND_CLOSING:
            item.status = "complete" if action is A.RESPOND_COMPLETE else "incomplete"
            item.end_note = entry.get("note")
    for eid, item in actions.items():
        item.restored_by = restores.get(eid)
        for entry in started.get(eid, {}).values():  # killed or failed while AWS acted
            item.unconfirmed.append(Change.from_dict(entry.get("source") or {}))
    return list(actions.values())


def chosen_actions(case: Case, action_id: str | None) -> list[RecordedAction]:
    """The named action, else every one not yet undone, newest first."""
    actions = recorded_actions(case)
    if action_id:
        chosen = [a for a in actions if a.action_id == action_id]
        if not chosen:
            known = ", ".join(a.action_id for a in actions) or "none"
            raise UsageError(f"no containment action {action_id} in {case.root} (known: {known})")
        return chosen
    return [a for a in reversed(actions) if not a.restored_by]


def plan_restore(ctx: Context, action: RecordedAction, force: bool) -> Plan:
    """Undo changes newest first, each only if it is still as cloudir left it."""
    changes: list[Change] = []
    notes: list[str] = []
    drift: list[str] = []
    if action.restored_by:
        notes.append(f"already restored by {action.restored_by}; reading the settings again")
    ordered = [(c, True) for c in action.changes] + [(c, False) for c in action.unconfirmed]
    ordered.sort(key=lambda pair: pair[0].step)
    for done, confirmed in reversed(ordered):
        if not done.undoable:
            if confirmed:
                notes.append(f"{done.kind} of {done.target} is kept: it is evidence")
            continue
        label = LABELS[done.kind].format(target=done.target, **done.detail)
        try:
            current = read(ctx, done)
        except CloudError as exc:
            if not is_gone(exc):
                raise
            notes.append(f"{label}: gone ({exc}); nothing to put back")
            continue
        if same(done.kind, current, done.before):
            if confirmed:
                notes.append(f"{label} is already as before ({_show(done.before)})")
            else:
                notes.append(f"{label}: the step that was cut short did not land")
            continue
        if not same(done.kind, current, done.after):
            text = (
                f"{label} changed since {action.action_id}: it is {_show(current)}, "
                f"cloudir set {_show(done.after)}"
            )
            if not force:
                drift.append(text)
                continue
            notes.append(text + "; overwritten (--force)")
        if not confirmed:
            notes.append(f"{label}: the step that was cut short did land; it is put back too")
        if done.kind == "asg-membership" and not _running(ctx, done.target):
            notes.append(
                f"{done.target} is not running, and a group only takes running instances: "
                f"start it and restore again to put it back in {done.before}"
            )
            continue
        changes.append(
            Change(
                done.kind,
                done.target,
                current,
                done.before,
                f"put back {label}: {_show(current)} → {_show(done.before)}",
                detail=done.detail,
            )
        )
    changes.extend(_orphaned_groups(ctx, action, changes, notes))
    if drift:
        notes.extend(f"drift, left alone: {text}" for text in drift)
    if action.status != "complete":
        notes.append(
            f"{action.action_id} did not finish ({action.status}): only the "
            "changes custody records (and those cut short that did land) are put back"
        )
    if any(c.kind == "asg-membership" for c in changes):
        notes.append(
            "attaching the instance raises the group's desired capacity by one; if the "
            "group launched a replacement, it now runs one instance more"
        )
    return Plan(
        "restore",
        action.action_id,
        ctx.aws.region,
        changes,
        notes,
        {"restores": action.action_id, "drift": drift},
    )


def _running(ctx: Context, instance_id: str) -> bool:
    ec2 = ctx.client("ec2")
    found = call("ec2:DescribeInstances", ec2.describe_instances, InstanceIds=[instance_id])
    return found["Reservations"][0]["Instances"][0].get("State", {}).get("Name") == "running"


def _orphaned_groups(
    ctx: Context, action: RecordedAction, changes: list[Change], notes: list[str]
) -> list[Change]:
    """Quarantine groups this action reused (another isolation made them) that nothing
    will use once its interfaces are put back: deleted, so none is left behind."""
    created = {c.after for c in action.changes if c.kind == "security-group"}
    restored = {c.target for c in changes if c.kind == "eni-security-groups"}
    groups = {
        g
        for c in action.changes
        if c.kind == "eni-security-groups" and c.target in restored
        for g in (c.after or [])
        if g not in created
    }
    out = []
    ec2 = ctx.client("ec2")
    for group_id in sorted(groups):
        users = call(
            "ec2:DescribeNetworkInterfaces",
            ec2.describe_network_interfaces,
            Filters=[{"Name": "group-id", "Values": [group_id]}],
        )["NetworkInterfaces"]
        if {n["NetworkInterfaceId"] for n in users} - restored:
            notes.append(f"quarantine group {group_id} stays: other interfaces still use it")
            continue
        described = call(
            "ec2:DescribeSecurityGroups", ec2.describe_security_groups, GroupIds=[group_id]
        )["SecurityGroups"][0]
        out.append(
            Change(
                "security-group",
                described["VpcId"],
                group_id,
                None,
                f"delete quarantine group {group_id}: unused once these interfaces are back",
                detail={"name": described["GroupName"]},
            )
        )
    return out


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        if "Statement" in value:
            digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
            return f"a policy document (sha256 {digest[:12]}, {len(value['Statement'])} statements)"
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
