"""The containment actions a case holds, as its custody log tells them.

`cloudir respond` writes each action as an evidence item of kind `response` and each
step as a custody entry; restore plans from that record, and the report shows it. Both
read it here, from the case alone, so the report needs nothing from `respond` (which
talks to AWS) and restore and the report cannot tell two different stories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudir.case import Case
from cloudir.custody_actions import RESPOND_CLOSING, read_action
from cloudir.custody_actions import CustodyAction as A

RESPONSE_KIND = "response"
"""meta.json `kind` of a containment action's evidence item."""


@dataclass
class ResponseRecord:
    """One containment action: what custody says was planned, changed and finished."""

    action_id: str
    action: str
    target: str
    region: str | None
    status: str  # complete | incomplete | started (no end entry: the run was killed)
    changes: list[dict[str, Any]] = field(default_factory=list)  # each `respond-change` source
    unconfirmed: list[dict[str, Any]] = field(default_factory=list)  # started, never confirmed
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


def response_records(case: Case) -> list[ResponseRecord]:
    """Every isolate/disable-key action in the case, oldest first; restores name theirs."""
    metas = {
        eid: found
        for eid in case.evidence_ids()
        if (found := case.read_meta(eid)).get("kind") == RESPONSE_KIND
    }
    actions: dict[str, ResponseRecord] = {}
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
            ResponseRecord(
                eid,
                source.get("action", "?"),
                source.get("target", "?"),
                source.get("region"),
                "started",
            ),
        )
        recorded = entry.get("source") or {}
        if action is A.RESPOND_PLAN:
            item.started, item.actor = entry.get("ts"), entry.get("actor")
        elif action is A.RESPOND_CHANGE_STARTED:
            started.setdefault(eid, {})[recorded.get("step")] = entry
        elif action is A.RESPOND_CHANGE:
            started.get(eid, {}).pop(recorded.get("step"), None)
            item.changes.append(recorded)
            item.steps.append(
                {
                    "ts": entry.get("ts"),
                    "kind": recorded.get("kind"),
                    "target": recorded.get("target"),
                    "summary": recorded.get("summary", ""),
                }
            )
        elif action in RESPOND_CLOSING:
            item.status = "complete" if action is A.RESPOND_COMPLETE else "incomplete"
            item.end_note = entry.get("note")
    for eid, item in actions.items():
        item.restored_by = restores.get(eid)
        for entry in started.get(eid, {}).values():  # killed or failed while AWS acted
            item.unconfirmed.append(entry.get("source") or {})
    return list(actions.values())
