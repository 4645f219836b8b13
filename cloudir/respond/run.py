"""The respond commands end to end: plan, and with --yes open the case and act.

Planning only reads the account and writes nothing anywhere, not even the case folder,
so a responder can look at a plan from any machine. Acting needs the case: the plan,
every change and the end of the run go to its custody log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudir.aws import Aws, AwsOptions, open_case_as_caller
from cloudir.case import CASE_FILE, Case, safe_name
from cloudir.errors import EvidenceError, UsageError
from cloudir.respond.changes import Context, Reporter
from cloudir.respond.isolate import plan_isolation
from cloudir.respond.keys import plan_disable_key
from cloudir.respond.plan import Plan
from cloudir.respond.record import Outcome, carry_out
from cloudir.respond.restore import chosen_actions, plan_restore


@dataclass
class Response:
    plans: list[Plan]
    applied: bool
    outcomes: list[Outcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "plans": [p.as_dict() for p in self.plans],
            "outcomes": [o.as_dict() for o in self.outcomes],
        }


@dataclass
class CaseRef:
    """The case folder named on the command line; opened only when acting."""

    root: Path
    title: str | None = None
    examiner: str | None = None

    @property
    def case_id(self) -> str:
        if (self.root / CASE_FILE).is_file():
            return str(Case.open(self.root).info["id"])
        return safe_name(self.root.resolve().name)

    def open_for_action(self, aws: Aws) -> tuple[Case, dict[str, str]]:
        return open_case_as_caller(aws, self.root, self.title, self.examiner)


def isolate(
    ref: CaseRef,
    aws: Aws,
    instance_id: str,
    allow_cidrs: list[str],
    yes: bool,
    report: Reporter,
    snapshot: bool = True,
    replace: bool = False,
    keep_credentials: bool = False,
) -> Response:
    ctx = Context(aws, report)
    plan = plan_isolation(
        ctx, ref.case_id, instance_id, allow_cidrs, snapshot, replace, keep_credentials
    )
    return _act(ref, ctx, plan, yes)


def disable_key(
    ref: CaseRef,
    aws: Aws,
    access_key_id: str | None,
    revoke_sessions: bool,
    role: str | None,
    yes: bool,
    report: Reporter,
) -> Response:
    ctx = Context(aws, report)
    case_root = ref.root if (ref.root / CASE_FILE).is_file() else None
    plan = plan_disable_key(ctx, access_key_id, revoke_sessions, role, case_root)
    return _act(ref, ctx, plan, yes)


def restore(
    ref: CaseRef,
    aws_for: Callable[[str | None], Aws],
    action_id: str | None,
    force: bool,
    yes: bool,
    report: Reporter,
) -> Response:
    """Plan each action's restore just before carrying it out, newest first: an older
    action is judged against the state the newer ones' restores left, not before them."""
    if not (ref.root / CASE_FILE).is_file():
        raise UsageError(f"{ref.root} is not a cloudir case: nothing to restore")
    case = Case.open(ref.root)
    chain = case.custody_chain_errors()
    if chain and not force:
        raise EvidenceError(
            f"custody.jsonl is broken ({chain[0]}): restore reads what to put back from it; "
            "run cloudir verify, and --force only if you trust every respond entry"
        )
    actions = chosen_actions(case, action_id)
    response = Response([], applied=yes)
    if not actions:
        report("no containment action in the case left to restore")
    if not yes and len(actions) > 1:
        report(
            f"{len(actions)} actions, newest first; each is planned against the account "
            "as it is now, and with --yes again just before it is restored"
        )
    for action in actions:
        ctx = Context(aws_for(action.region), report)
        plan = plan_restore(ctx, action, force)
        response.plans.append(plan)
        if not yes:
            continue
        drift = plan.facts.get("drift", [])
        if drift:
            done = [o.action_id for o in response.outcomes]
            raise UsageError(
                f"{action.action_id}: {len(drift)} setting(s) changed since cloudir set them, "
                f"so it was not restored: {'; '.join(drift)}. "
                + (f"Already restored: {', '.join(done)}. " if done else "")
                + "Re-run with --force to put them back anyway"
            )
        ctx.case, ctx.identity = ref.open_for_action(ctx.aws)
        response.outcomes.append(carry_out(ctx.case, ctx, plan, restores=action.action_id))
    return response


def _act(ref: CaseRef, ctx: Context, plan: Plan, yes: bool) -> Response:
    response = Response([plan], applied=yes)
    if yes:
        ctx.case, ctx.identity = ref.open_for_action(ctx.aws)
        response.outcomes.append(carry_out(ctx.case, ctx, plan))
    return response


def aws_factory(options: AwsOptions) -> Callable[[str | None], Aws]:
    """An Aws per region: restore acts where each action was taken unless --region says."""
    made: dict[str | None, Aws] = {}

    def for_region(region: str | None) -> Aws:
        chosen = options.region or region
        if chosen not in made:
            made[chosen] = Aws(
                AwsOptions(
                    options.profile, chosen, options.endpoint_url, retry_mode=options.retry_mode
                )
            )
        return made[chosen]

    return for_region
