"""Read an alert document, whatever shape it arrived in, into `Alert`s.

Documents are recognised by their shape, never by a file name:

- an EventBridge event with `detail-type: "GuardDuty Finding"` (an EventBridge rule on
  GuardDuty): `detail` is the finding, in camelCase;
- `{"findings": [...]}` or `{"Findings": [...]}` of GuardDuty findings: GetFindings, as
  the API sends it (camelCase) or as boto3 and `aws guardduty get-findings` print it
  (PascalCase);
- one GuardDuty finding (a console export, or `detail` saved on its own);
- an EventBridge event with `detail-type` "Security Hub Findings - Imported" or
  "Security Hub Findings - Custom Action": `detail.findings[]` are ASFF findings;
- `{"Findings": [...]}` of ASFF findings: Security Hub GetFindings, or
  BatchImportFindings' input;
- one ASFF finding, or a JSON list of findings of either kind.

Anything else (a Security Hub insight result, another EventBridge event, JSON that is not
a finding, not JSON at all, a document over 10 MiB) is an `AlertError`: one line naming
the JSON path, which the CLI prints before exiting 2.
"""

from __future__ import annotations

from typing import Any

from cloudir.alerts import guardduty, securityhub
from cloudir.alerts.document import MAX_BYTES, Node, load
from cloudir.alerts.model import Alert, AlertError

__all__ = ["MAX_BYTES", "read_alert", "read_alerts", "read_each"]

GUARDDUTY_EVENT = "GuardDuty Finding"
SECURITYHUB_EVENTS = ("Security Hub Findings - Imported", "Security Hub Findings - Custom Action")
INSIGHT_EVENT = "Security Hub Insight Results"
MAX_FINDINGS = 1000  # GetFindings pages hold at most 100; an EventBridge event a few


def read_alerts(data: bytes) -> list[Alert]:
    """Every finding the document holds, in its order (at least one). One finding that
    cannot be read makes the document unreadable: triage acts on all of it or none."""
    alerts = []
    for found in read_each(data):
        if isinstance(found, AlertError):
            raise found
        alerts.append(found)
    return alerts


def read_each(data: bytes) -> list[Alert | AlertError]:
    """Each finding of the document, read or refused on its own (the timeline keeps the
    good ones and logs the rest). A document that is not an alert at all still raises."""
    found: list[Alert | AlertError] = []
    for node, envelope in _findings(load(data)):
        try:
            found.append(_read(node, envelope))
        except AlertError as exc:
            found.append(exc)
    return found


def read_alert(data: bytes, finding_id: str | None = None) -> Alert:
    """The document's first finding, or the one whose id is `finding_id`.

    A Security Hub event or a GetFindings response may hold several findings; triage
    works on one. Pass the id asked for (`--securityhub ARN`, `--guardduty
    DETECTOR:FINDING_ID`) to pick it, and an AlertError says when it is not there."""
    alerts = read_alerts(data)
    if finding_id is None:
        return alerts[0]
    for alert in alerts:
        if alert.id == finding_id or _guardduty_id(alert.id) == finding_id:
            return alert
    ids = ", ".join(a.id for a in alerts[:3]) + (", ..." if len(alerts) > 3 else "")
    raise AlertError(f"$: no finding with id {finding_id[:200]!r} in the document (it holds {ids})")


def _guardduty_id(finding_id: str) -> str:
    """A GuardDuty finding ARN (how ASFF names it) ends in `/finding/<id>`."""
    return finding_id.rsplit("/finding/", 1)[-1] if "/finding/" in finding_id else finding_id


Envelope = dict[str, str | None]


def _findings(document: Any) -> list[tuple[Node, Envelope]]:
    """Each finding of the document as (its node, what its envelope says)."""
    if isinstance(document, list):
        # A bare list is a list of findings only when it starts with one: a JSON array of
        # CloudTrail records (or of anything else) is not an alert document.
        if document and not _looks_like_finding(document[0]):
            raise AlertError("$[0]: not a GuardDuty or Security Hub finding (a list of findings "
                             "starts with one)")  # fmt: skip
        return _listed(document, "$", {})
    if not isinstance(document, dict):
        raise AlertError(f"$: not a GuardDuty or Security Hub finding (a JSON {_what(document)})")
    root = Node(document, "$")
    if "detail-type" in document:
        return _event(root)
    for key in ("Findings", "findings"):
        if key in document:
            return _listed(document[key], f"$.{key}", {})
    if _looks_like_finding(document):
        return [(root, {})]
    raise AlertError(
        "$: not a GuardDuty or Security Hub finding, nor an EventBridge event or "
        "GetFindings response holding one"
    )


def _looks_like_finding(value: Any) -> bool:
    return guardduty.looks_like_finding(value) or securityhub.looks_like_finding(value)


def _event(root: Node) -> list[tuple[Node, Envelope]]:
    kind = root.text("detail-type", limit=256)
    envelope: Envelope = {
        "account": root.text("account", limit=64),
        "region": root.text("region", limit=64),
    }
    if kind == GUARDDUTY_EVENT:
        return [(root.need_node("detail"), envelope)]
    if kind in SECURITYHUB_EVENTS:
        detail = root.need_node("detail")
        return _listed(detail.value.get("findings"), f"{detail.path}.findings", envelope)
    if kind == INSIGHT_EVENT:
        raise AlertError(
            f"$.detail-type: {INSIGHT_EVENT!r} carries an insight's result counts, not a "
            "finding; send the findings themselves (a Security Hub Findings event, or "
            "--securityhub ARN)"
        )
    raise AlertError(
        f"$.detail-type: {str(kind)[:80]!r} is not an alert event cloudir reads "
        f"({GUARDDUTY_EVENT!r}, {SECURITYHUB_EVENTS[0]!r}, {SECURITYHUB_EVENTS[1]!r})"
    )


def _listed(items: Any, path: str, envelope: Envelope) -> list[tuple[Node, Envelope]]:
    if items is None:
        raise AlertError(f"{path}: missing")
    if not isinstance(items, list):
        raise AlertError(f"{path}: expected a list of findings, found a JSON {_what(items)}")
    if not items:
        raise AlertError(f"{path}: empty; no finding in the document")
    if len(items) > MAX_FINDINGS:
        raise AlertError(f"{path}: {len(items)} findings, more than {MAX_FINDINGS}")
    return [(Node.of(item, f"{path}[{n}]"), envelope) for n, item in enumerate(items)]


def _read(node: Node, envelope: Envelope) -> Alert:
    if securityhub.looks_like_finding(node.value):
        return securityhub.read_finding(node, region=envelope.get("region"))
    if guardduty.looks_like_finding(node.value):
        return guardduty.read_finding(
            node, account=envelope.get("account"), region=envelope.get("region")
        )
    missing = [name for name in ("id", "type", "resource") if not node.has(name)]
    if missing:
        raise AlertError(
            f"{node.path}.{missing[0]}: missing (a GuardDuty finding has id, type and "
            "resource; an ASFF finding SchemaVersion, Id and ProductArn)"
        )
    # id, type and resource are there, but of the wrong kinds: say which.
    node.need_text("type", limit=256)
    node.need_node("resource")
    raise AlertError(f"{node.path}: not a GuardDuty or Security Hub finding")


def _what(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool) or value is None:
        return "true/false/null"
    return "number"
