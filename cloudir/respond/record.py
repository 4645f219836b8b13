"""Carry out a plan with every step on the record, so a half-done action can be undone.

The plan (with the state found before any change) is evidence before the first change;
each change is a custody entry (and `steps/NNN.json`) the moment it lands; the end is
either `respond-complete` or `respond-incomplete` naming what was done, what failed and
what was never tried.
Custody, not a file written at the end, is what restore reads: a run killed between
two changes still leaves the first one on the record.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudir.case import Case, safe_name, utc_now
from cloudir.case_responses import RESPONSE_KIND
from cloudir.custody_actions import RESPOND_CLOSING, CustodyAction
from cloudir.errors import CloudError, CloudirError
from cloudir.evidence_item import EvidenceItem
from cloudir.respond.changes import Change, Context, write
from cloudir.respond.plan import Plan


class ResponseInterrupted(CloudirError):
    """Ctrl-C during an action: recorded, and the message says how to undo it."""

    exit_code = 130


@dataclass
class Outcome:
    action_id: str
    status: str  # complete | incomplete
    done: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, Any] | None = None
    not_done: list[dict[str, Any]] = field(default_factory=list)

    action: str = ""
    target: str = ""
    actor: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "action": self.action,
            "target": self.target,
            "actor": self.actor,
            "status": self.status,
            "done": self.done,
            "failed": self.failed,
            "not_done": self.not_done,
        }


def carry_out(case: Case, ctx: Context, plan: Plan, restores: str | None = None) -> Outcome:
    """Apply the plan's changes in order; stop at the first failure, on the record."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    subject = plan.target.split(" ")[0]
    action_id = case.unique_evidence_id(f"response-{plan.action}-{safe_name(subject)}-{stamp}")
    source = {
        "type": RESPONSE_KIND,
        "action": plan.action,
        "target": subject,
        "region": plan.region,
        "account": ctx.identity.get("Account"),
    }
    if restores:
        source["restores"] = restores
    meta = {"kind": RESPONSE_KIND, "source": source, "caller_identity": ctx.identity}
    summary = functools.partial(_stopped_early, plan)
    with case.item(action_id, meta, summary=summary, closing=RESPOND_CLOSING) as item:
        item.store(
            "plan.json",
            _json(plan.as_dict()),
            action=CustodyAction.RESPOND_PLAN,
            note=f"{plan.action} {plan.target}: {len(plan.changes)} change(s) planned",
        )
        outcome = Outcome(
            action_id,
            "incomplete",
            action=plan.action,
            target=subject,
            actor=ctx.identity.get("Arn", case.actor),
        )
        for index, change in enumerate(plan.changes, 1):
            _apply(item, ctx, plan, outcome, index, change)
        outcome.status = "complete"
        _finish(item, plan, outcome)
    return outcome


def _apply(
    item: EvidenceItem, ctx: Context, plan: Plan, outcome: Outcome, index: int, change: Change
) -> None:
    """One change: started, made, recorded; a failure ends the action on the record and
    says how to undo what was done."""
    total = len(plan.changes)
    intended = ctx.resolve(change.after)
    # Before the call: a run killed while AWS is acting still leaves this on the
    # record, and restore checks whether the change landed.
    item.record(
        CustodyAction.RESPOND_CHANGE_STARTED,
        note=f"step {index}/{total}: starting",
        source={"step": index, **change.as_dict(), "after": intended},
    )
    try:
        applied, result = write(ctx, change, intended)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            error = "interrupted (Ctrl-C)"
        elif isinstance(exc, CloudirError):
            error = str(exc)
        else:
            error = f"{type(exc).__name__}: {exc}"
        outcome.failed = {"step": index, **change.as_dict(), "error": error, "at": utc_now()}
        outcome.not_done = [
            {"step": n, **c.as_dict()} for n, c in enumerate(plan.changes[index:], index + 1)
        ]
        _finish(item, plan, outcome)
        action_id, root = outcome.action_id, item.case.root
        undo = f"cloudir respond restore --case {root} --action {action_id} --yes"
        if isinstance(exc, KeyboardInterrupt):
            raise ResponseInterrupted(
                f"{plan.action} interrupted at step {index} of {total}: "
                f"{_done_text(outcome)}, recorded in {action_id}; undo with: {undo}"
            ) from None
        if not isinstance(exc, CloudirError):
            ctx.report(f"{plan.action} failed at step {index}; undo with: {undo}")
            raise
        raise CloudError(
            f"{plan.action} stopped at step {index} of {total} ({change.summary}): "
            f"{error}. {_done_text(outcome)} recorded in {action_id}; undo with: "
            f"cloudir respond restore --case {root} --action {action_id} --yes"
        ) from exc
    entry = {"step": index, **change.as_dict(), "after": applied, "result": result, "at": utc_now()}
    # The step as evidence too, so the timeline has it even if the run dies before
    # outcome.json; custody's copy is what restore reads.
    item.store(
        f"steps/{index:03d}.json",
        _json(entry),
        action=CustodyAction.RESPOND_CHANGE,
        note=f"step {index}/{total}: {change.summary}",
        source=entry,
    )
    outcome.done.append(entry)
    ctx.report(f"done {index}/{total}: {change.summary}")


def _finish(item: EvidenceItem, plan: Plan, outcome: Outcome) -> None:
    """outcome.json, carried by respond-complete or respond-incomplete."""
    if outcome.status == "complete":
        note = f"{plan.action} {plan.target}: all {len(outcome.done)} change(s) done"
    else:
        failed = outcome.failed or {}
        note = (
            f"{plan.action} {plan.target}: stopped at step {failed.get('step')} "
            f"({failed.get('error')}); {_done_text(outcome)}; "
            f"not done: {_steps(outcome.not_done) or 'nothing'}"
        )
    item.finish(
        note,
        complete=outcome.status == "complete",
        source={
            "done": [e["step"] for e in outcome.done],
            "failed": (outcome.failed or {}).get("step"),
            "not_done": [e["step"] for e in outcome.not_done],
        },
        file=("outcome.json", _json(outcome.as_dict())),
    )


def _stopped_early(plan: Plan, item: EvidenceItem) -> str:
    """The end of a run stopped outside any change (the plan could not be stored, a
    change's value could not be resolved): what the record holds says what was done."""
    return "; ".join([f"{plan.action} {plan.target}: stopped outside a change", *item.problems])


def _done_text(outcome: Outcome) -> str:
    return f"done: {_steps(outcome.done)}" if outcome.done else "nothing was changed"


def _steps(entries: list[dict[str, Any]]) -> str:
    return ", ".join(f"{e['step']} ({e['kind']} {e['target']})" for e in entries)


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode() + b"\n"
