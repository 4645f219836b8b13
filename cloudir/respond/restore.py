"""Plan putting back what a containment action changed, from custody alone.

Restore trusts the custody log, not memory: each `respond-change` entry holds the value
found before the change and the value set. A setting whose current value is neither
(someone changed it since) is drift; restore will not overwrite drift unless told to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudir.case import Case
from cloudir.errors import UsageError
from cloudir.respond.changes import Change, Context, read, same
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
}


@dataclass
class RecordedAction:
    """One containment action as custody tells it."""

    action_id: str
    action: str
    target: str
    region: str | None
    status: str  # complete | incomplete | started (no end entry: the run was killed)
    changes: list[Change] = field(default_factory=list)
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
    for entry in case.custody_entries():
        eid = str(entry.get("evidence_id"))
        meta = metas.get(eid)
        if meta is None:
            continue
        source = meta.get("source", {})
        if source.get("action") == "restore":
            if entry.get("action") == "respond-complete" and source.get("restores"):
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
        if entry.get("action") == "respond-plan":
            item.started, item.actor = entry.get("ts"), entry.get("actor")
        elif entry.get("action") == "respond-change":
            change = Change.from_dict(entry.get("source") or {})
            item.changes.append(change)
            item.steps.append(
                {
                    "ts": entry.get("ts"),
                    "kind": change.kind,
                    "target": change.target,
                    "summary": change.summary,
                }
            )
        elif entry.get("action") in ("respond-complete", "respond-incomplete"):
            item.status = entry["action"].removeprefix("respond-")
            item.end_note = entry.get("note")
    for eid, item in actions.items():
        item.restored_by = restores.get(eid)
    return list(actions.values())


def plan_restores(
    context_for: Callable[[str | None], Context], case: Case, action_id: str | None, force: bool
) -> list[tuple[RecordedAction, Context, Plan]]:
    """One restore plan per action to undo: the named one, else every one not yet undone."""
    actions = recorded_actions(case)
    if action_id:
        chosen = [a for a in actions if a.action_id == action_id]
        if not chosen:
            known = ", ".join(a.action_id for a in actions) or "none"
            raise UsageError(f"no containment action {action_id} in {case.root} (known: {known})")
    else:
        chosen = [a for a in reversed(actions) if not a.restored_by]
    out = []
    for action in chosen:
        ctx = context_for(action.region)
        out.append((action, ctx, plan_restore(ctx, action, force)))
    return out


def plan_restore(ctx: Context, action: RecordedAction, force: bool) -> Plan:
    changes: list[Change] = []
    notes: list[str] = []
    drift: list[str] = []
    if action.restored_by:
        notes.append(f"already restored by {action.restored_by}; reading the settings again")
    for done in reversed(action.changes):
        if not done.undoable:
            notes.append(f"{done.kind} of {done.target} is kept: it is evidence")
            continue
        label = LABELS[done.kind].format(target=done.target, **done.detail)
        current = read(ctx, done)
        if same(done.kind, current, done.before):
            notes.append(f"{label} is already as before ({_show(done.before)})")
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
    if drift:
        notes.extend(f"drift, left alone: {text}" for text in drift)
    if action.status != "complete":
        notes.append(
            f"{action.action_id} did not finish ({action.status}): only the "
            "changes custody records as done are put back"
        )
    if any(c.kind == "asg-membership" for c in changes):
        notes.append(
            "attaching the instance raises the group's desired capacity by one; if the "
            "group launched a replacement, it now runs one instance more"
        )
    plan = Plan(
        "restore",
        action.action_id,
        ctx.aws.region,
        changes,
        notes,
        {"restores": action.action_id, "drift": drift},
    )
    return plan


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        if "Statement" in value:
            return "a deny-older-sessions policy"
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
