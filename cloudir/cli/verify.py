"""`cloudir verify`: re-hash the evidence against custody, optionally close a torn tail.

`verify` is added to the root app by `cli/__init__.py`, in the order help lists it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudir.cli.common import (
    CaseOpt,
    EndpointOpt,
    JsonOpt,
    ProfileOpt,
    emit_json,
    handled,
    locks_case,
    say,
)
from cloudir.errors import EXIT_EVIDENCE, UsageError


@handled
@locks_case(when=lambda kw: kw["repair"])
def verify(
    case: CaseOpt,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            metavar="SHA256",
            help="A custody head noted earlier, outside the case: fail unless custody "
            "still holds that line (catches removed or rewritten entries).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="First close a torn custody tail (a write cut short) with a "
            "custody-repaired entry; nothing else is written.",
        ),
    ] = False,
    s3: Annotated[
        bool,
        typer.Option(
            "--s3",
            help="Also check that S3 still holds every object version a --manifest capture "
            "pinned (HeadObject: VersionId, ETag, size).",
        ),
    ] = False,
    profile: ProfileOpt = None,
    endpoint_url: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every evidence file against custody.jsonl; exit 3 on any difference.

    Example: cloudir verify --case ./case-42 --head 3f1c...e9

    Example (evidence left in S3): cloudir verify --case ./case-42 --s3 --profile ir
    """
    from cloudir.case import Case
    from cloudir.console import byte_progress, inert

    if head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", head):
        raise UsageError("--head takes the 64 hex digits verify printed as the custody head")
    the_case = Case.open(case)
    if repair and (closed := the_case.repair_custody_tail()):
        say(f"repaired: {inert(closed['note'])}")
    with byte_progress() as bar:
        task = bar.add_task("hashing evidence", total=the_case.total_recorded_bytes())
        report = the_case.verify(on_bytes=lambda n: bar.advance(task, n), head=head)
    pins = _check_pins(the_case, report, profile, endpoint_url) if s3 else None
    if as_json:
        emit_json(report.as_dict() | ({"s3": pins.as_dict()} if pins else {}))
    for path in report.changed:
        why = report.changed_reasons.get(path)
        say(f"CHANGED   {inert(path)}" + (f" ({inert(why)})" if why else ""))
    for path in report.missing:
        say(f"MISSING   {inert(path)}")
    busy = _in_use_by(case) if any(p.endswith(".partial") for p in report.unrecorded) else None
    for path in report.unrecorded:
        hint = " (an interrupted capture: re-run it)" if path.endswith(".partial") else ""
        if hint and busy:
            hint = f" (still being written: the case is in use by {busy})"
        say(f"UNRECORDED {inert(path)}{hint}")
    for path, records in report.conflicts.items():
        hashes = ", ".join(f"{r.sha256} ({r.bytes} bytes)" for r in records)
        say(f"CONFLICT  {inert(path)}: custody records {len(records)} hashes: {hashes}")
    for line in report.chain_errors + ([report.torn_tail] if report.torn_tail else []):
        say(f"CUSTODY   {inert(line)}")
    for note in report.notes:
        say(f"note: {inert(note)}")
    for problem in pins.problems if pins else []:
        label = f"S3 {problem['kind'].upper()}"
        say(f"{label:<10} {inert(problem['uri'])}: {inert(problem['reason'])}")
    for line in pins.bad_lines if pins else []:
        say(f"MANIFEST  {inert(line)}")
    if not report.ok or (pins and not pins.ok):
        raise typer.Exit(EXIT_EVIDENCE)
    if not as_json:
        print(f"ok: {report.checked} evidence files match custody.jsonl")
        if pins:
            print(f"ok: S3 holds all {pins.checked} object versions the manifests pin")
        print(f"custody head: sha256 {report.custody_head} (note it outside the case)")


def _in_use_by(case: Path) -> str | None:
    from cloudir.case_lock import in_use_by

    return in_use_by(case)


def _check_pins(case: Any, report: Any, profile: str | None, endpoint_url: str | None) -> Any:
    """The pinned versions of every manifest that verified unchanged: a changed manifest
    is already a failure, and what it now names is not what custody recorded."""
    from cloudir.aws import AwsOptions
    from cloudir.console import count_progress
    from cloudir.pinned_check import check_case_pins

    held = set(case.recorded_files()) - set(report.changed) - set(report.missing)
    with count_progress() as bar:
        task = bar.add_task("checking S3 versions", total=None)
        return check_case_pins(
            case,
            held,
            AwsOptions(profile=profile, endpoint_url=endpoint_url),
            on_checked=lambda done, total: bar.update(task, completed=done, total=total),
        )
