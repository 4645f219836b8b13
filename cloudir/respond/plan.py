"""A containment plan: the changes in order, and what the responder must know first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudir.respond.changes import Change


@dataclass
class Plan:
    action: str  # isolate | disable-key | restore
    target: str  # the instance, key or action acted on
    region: str
    changes: list[Change]
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what the plan was built from

    @property
    def permissions(self) -> list[str]:
        return sorted({p for c in self.changes for p in c.permission.split(", ")})

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "region": self.region,
            "changes": [c.as_dict() for c in self.changes],
            "notes": self.notes,
            "facts": self.facts,
            "permissions": self.permissions,
        }

    def lines(self) -> list[str]:
        """The plan as a responder reads it before saying --yes."""
        head = f"{self.action} {self.target} in {self.region}: {len(self.changes)} change(s)"
        out = [head]
        for n, change in enumerate(self.changes, 1):
            out.append(f"  {n}. {change.summary}  [{change.permission}]")
        if not self.changes:
            out.append("  nothing to change")
        out.extend(f"  note: {note}" for note in self.notes)
        return out
