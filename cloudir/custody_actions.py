"""The fixed set of custody actions: the `action` word of every custody.jsonl entry.

Custody is read back by code (completeness, restore, resumed captures) and by people
years later, so an action is a contract, not free text: each value here is the exact
string existing case folders already hold, `Case.record` refuses any other, and
docs/DESIGN.md ("Custody actions") lists each one with its meaning, the command that
writes it and whether it carries files (a test keeps that table and this set equal).

A reader uses `read_action`, which also accepts a retired spelling listed in
`RETIRED_NAMES` (none so far: no two of today's names mean the same thing), so an old
case keeps reading while only the current name is ever written.
"""

from __future__ import annotations

from enum import StrEnum


class CustodyAction(StrEnum):
    """Every custody action cloudir writes. A member is a `str`, so entries compare and
    serialise as the plain word."""

    # the case and the log itself
    CASE_CREATED = "case-created"
    CALLER_IDENTITY = "caller-identity"
    CUSTODY_REPAIRED = "custody-repaired"
    # the lifecycle of an evidence item (cloudir/evidence_item.py)
    EVIDENCE_OPENED = "evidence-opened"
    PARTIALS_REMOVED = "partials-removed"
    CAPTURE = "capture"
    CAPTURE_SKIPPED = "capture-skipped"
    CAPTURE_COMPLETE = "capture-complete"
    CAPTURE_INCOMPLETE = "capture-incomplete"
    # EBS: what cloudir did to snapshots in the account, and the downloaded image
    SNAPSHOT = "snapshot"
    TAG = "tag"
    SNAPSHOT_DESCRIBED = "snapshot-described"
    SNAPSHOT_PENDING = "snapshot-pending"
    SHARE = "share"
    SNAPSHOT_COPY = "snapshot-copy"
    SNAPSHOT_COPY_COMPLETE = "snapshot-copy-complete"
    CAPTURE_EBS_IMAGE = "capture-ebs-image"
    # Docker: the engine and what cloudir did to a container
    DOCKER_ENGINE = "docker-engine"
    CONTAINER_PAUSED = "container-paused"
    CONTAINER_UNPAUSED = "container-unpaused"
    CONTAINER_UNPAUSE_FAILED = "container-unpause-failed"
    # respond: a containment action's plan, each change, and its end
    RESPOND_PLAN = "respond-plan"
    RESPOND_CHANGE_STARTED = "respond-change-started"
    RESPOND_CHANGE = "respond-change"
    RESPOND_COMPLETE = "respond-complete"
    RESPOND_INCOMPLETE = "respond-incomplete"
    # triage --upload: the case folder copied to S3, object by object, and its end
    UPLOAD = "upload"
    UPLOAD_REFUSED = "upload-refused"
    UPLOAD_COMPLETE = "upload-complete"
    UPLOAD_INCOMPLETE = "upload-incomplete"


# How an item's run ends: (the action when it is whole, the action when it is not).
Closing = tuple[CustodyAction, CustodyAction]
CAPTURE_CLOSING: Closing = (CustodyAction.CAPTURE_COMPLETE, CustodyAction.CAPTURE_INCOMPLETE)
RESPOND_CLOSING: Closing = (CustodyAction.RESPOND_COMPLETE, CustodyAction.RESPOND_INCOMPLETE)

# A name an older cloudir wrote -> the action it means now. Read, never written.
RETIRED_NAMES: dict[str, CustodyAction] = {}


def custody_action(action: str) -> CustodyAction:
    """The member for a name about to be written; ValueError (one line) for any other,
    retired names included: only the current name is written."""
    try:
        return CustodyAction(action)
    except ValueError:
        raise ValueError(
            f"{action!r} is not a custody action: the set is fixed in "
            "cloudir/custody_actions.py and documented in docs/DESIGN.md"
        ) from None


def read_action(value: object) -> CustodyAction | None:
    """The action an entry read from custody.jsonl names (a retired name maps to its
    current one), or None for a word this cloudir does not know or a missing action."""
    if not isinstance(value, str):
        return None
    try:
        return CustodyAction(value)
    except ValueError:
        return RETIRED_NAMES.get(value)
