"""Kubernetes audit events on the timeline, and the EKS cluster they came from.

An EKS cluster's control plane writes one audit event per API request stage to CloudWatch
Logs (`capture eks`: kind `eks-audit`, FilterLogEvents pages as received). Each event's
message is the audit event as the API server logged it (`audit.k8s.io/v1` `Event`): the
row keeps that text byte for byte in `raw`, so a Sigma rule for Kubernetes audit logs
(`product: kubernetes, service: audit`) addresses the event's own fields (`verb`,
`objectRef.resource`, `objectRef.subresource`, `user.username`, `sourceIPs`,
`responseStatus.code`, `requestObject...`) and runs unmodified.

The columns: the time the request was received, `user` the username, `src_ip` the first
source address, `action` the verb, `target` the object's path
(`namespaces/<ns>/<resource>/<name>/<subresource>` or the non-resource URL), `outcome`
the response code, `host` the cluster. A message that is not an audit event is one line
in timeline/errors.jsonl; the page's other events still give their rows.

The cluster item (kind `eks-cluster`, DescribeCluster as received) gives one row at its
creation, with what an investigation asks first: whether the API endpoint is public and
to whom, and whether audit logging is on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from cloudir.analyze.parsers import (
    ErrorLog,
    Logsource,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    json_list,
    json_loads,
    json_object,
    register,
)
from cloudir.analyze.parsers.cloudwatch_logs import (
    MAX_PAGE_BYTES,
    iso_from_ms,
    read_bounded,
    read_page,
)
from cloudir.safe_text import inert

AUDIT_KIND: Final = "eks-audit"
CLUSTER_KIND: Final = "eks-cluster"
SOURCE: Final = "kubernetes"
AUDIT_ARTIFACT: Final = "kubernetes:audit"
CLUSTER_ARTIFACT: Final = "aws:eks-cluster"
MAX_MESSAGE: Final = 1000
MAX_CLUSTER_BYTES: Final = 4 << 20  # a DescribeCluster answer is a few KB; a bigger file is not one


def accepts_page(path: Path) -> bool:
    return path.suffix.lower() == ".json" and path.parent.name == "pages"


def parse_audit(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    page = read_page(path, errors)
    if page is not None:
        events, group = page
        cluster = _cluster_of(group)
        yield from batches(_audit_rows(events, cluster, evidence_id, errors), errors)


def _cluster_of(group: str | None) -> str | None:
    """`/aws/eks/<cluster>/cluster` -> the cluster's name."""
    parts = (group or "").split("/")
    return parts[3] if len(parts) == 5 and parts[1:3] == ["aws", "eks"] else None


def _audit_rows(
    events: list[Any], cluster: str | None, evidence_id: str, errors: ErrorLog
) -> Iterator[Row]:
    for number, event in enumerate(events, 1):
        text = event.get("message") if isinstance(event, dict) else None
        audit = _audit_event(text)
        if audit is None:
            errors.add("a log event that is not a Kubernetes audit event", record=number)
            continue
        assert isinstance(text, str)
        when = _text(audit.get("requestReceivedTimestamp")) or _text(audit.get("stageTimestamp"))
        if when is None and isinstance(event, dict):
            when = iso_from_ms(event.get("timestamp"))
        if when is None:
            errors.add("an audit event without a time; not placed", record=number)
            continue
        user = _text((audit.get("user") or {}).get("username"))
        verb = _text(audit.get("verb"))
        target = _target(audit)
        code = (audit.get("responseStatus") or {}).get("code")
        outcome = str(code) if isinstance(code, int) and not isinstance(code, bool) else None
        addresses = audit.get("sourceIPs")
        src_ip = _text(addresses[0]) if isinstance(addresses, list) and addresses else None
        message = f"{user or '?'} {verb or '?'} {target or '?'}"
        if outcome:
            message += f" -> {outcome}"
        yield Row(
            timestamp=when,
            timestamp_desc="Request Received",
            source=SOURCE,
            artifact=AUDIT_ARTIFACT,
            host=cluster,
            user=user,
            src_ip=src_ip,
            action=verb,
            target=target,
            outcome=outcome,
            message=inert(message, MAX_MESSAGE),
            evidence_id=evidence_id,
            event_id=_audit_id(cluster, audit, text),
            raw=text,
        )


def _audit_event(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or len(text) > MAX_PAGE_BYTES:
        return None
    try:
        audit = json_loads(text)
    except ValueError:
        return None
    if not isinstance(audit, dict) or audit.get("kind") != "Event":
        return None
    if not str(audit.get("apiVersion", "")).startswith("audit.k8s.io/"):
        return None
    for key in ("user", "objectRef", "responseStatus"):
        if key in audit and not isinstance(audit[key], dict):
            return None
    return audit


def _target(audit: dict[str, Any]) -> str | None:
    ref = audit.get("objectRef")
    if not isinstance(ref, dict):
        return _text(audit.get("requestURI"))
    steps: list[str] = []
    if _text(ref.get("namespace")):
        steps += ["namespaces", str(ref["namespace"])]
    for key in ("resource", "name", "subresource"):
        if _text(ref.get(key)):
            steps.append(str(ref[key]))
    return "/".join(steps) or _text(audit.get("requestURI"))


def _audit_id(cluster: str | None, audit: dict[str, Any], text: str) -> str:
    """The request's auditID and stage (one request logs up to four stages); without an
    auditID, the event's bytes."""
    audit_id, stage = audit.get("auditID"), audit.get("stage")
    if isinstance(audit_id, str) and audit_id:
        key = f"kubernetes-audit\x00{cluster}\x00{audit_id}\x00{stage}"
    else:
        key = f"kubernetes-audit\x00{cluster}\x00{text}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- the cluster's configuration ----------------------------------------------------------
def accepts_cluster(path: Path) -> bool:
    return path.name == "cluster.json"


def parse_cluster(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    try:
        data = read_bounded(path, MAX_CLUSTER_BYTES)
    except OSError as exc:  # a link (not followed), a folder, gone
        errors.add(f"{path.name}: not readable ({exc.strerror or exc})")
        return
    if len(data) > MAX_CLUSTER_BYTES:
        errors.add(f"{path.name}: over {MAX_CLUSTER_BYTES} bytes, not a DescribeCluster "
                   "answer; not read")  # fmt: skip
        return
    try:
        cluster = json_loads(data).get("cluster")
    except (ValueError, AttributeError) as exc:
        errors.add(f"{path.name}: not a DescribeCluster answer ({exc})")
        return
    if not isinstance(cluster, dict):
        errors.add(f"{path.name}: no `cluster` object: not a DescribeCluster answer")
        return
    yield from batches(_cluster_rows(cluster, evidence_id, errors), errors)


def _cluster_rows(cluster: dict[str, Any], evidence_id: str, errors: ErrorLog) -> Iterator[Row]:
    created = cluster.get("createdAt")
    when = iso_from_ms(created * 1000) if isinstance(created, int | float) else _text(created)
    if when is None:
        errors.add("the cluster has no creation time; not placed", record=1)
        return
    name = _text(cluster.get("name"))
    vpc = json_object(cluster.get("resourcesVpcConfig"))
    public = vpc.get("endpointPublicAccess", True)  # EKS's default: a public endpoint
    cidrs = json_list(vpc.get("publicAccessCidrs")) or (["0.0.0.0/0"] if public else [])
    audit_on = any(
        e.get("enabled") and "audit" in json_list(e.get("types"))
        for e in json_list(json_object(cluster.get("logging")).get("clusterLogging"))
        if isinstance(e, dict)
    )
    endpoint = f"public to {', '.join(map(str, cidrs))}" if public else "private"
    message = (
        f"EKS cluster {name} (Kubernetes {cluster.get('version')}): API endpoint {endpoint}; "
        f"audit logging {'on' if audit_on else 'OFF'}"
    )
    yield Row(
        timestamp=when,
        timestamp_desc="Cluster Created",
        source="aws",
        artifact=CLUSTER_ARTIFACT,
        host=name,
        user=None,
        src_ip=None,
        action="eks:cluster",
        target=_text(cluster.get("arn")),
        outcome=_text(cluster.get("status")),
        message=inert(message, MAX_MESSAGE),
        evidence_id=evidence_id,
        event_id=hashlib.sha256(f"eks-cluster\x00{evidence_id}".encode()).hexdigest()[:32],
        raw=json.dumps(cluster, sort_keys=True, ensure_ascii=False),
    )


register(
    Parser(
        name="kubernetes-audit",
        evidence_kinds=(AUDIT_KIND,),
        accepts=accepts_page,
        parse=parse_audit,
        artifacts=(
            RowSource(
                AUDIT_ARTIFACT,
                "one Kubernetes API request stage from the audit log (EKS control plane)",
                (Logsource("kubernetes", "audit"), Logsource("kubernetes")),
            ),
        ),
        priority=62,
    )
)
register(
    Parser(
        name="eks-cluster",
        evidence_kinds=(CLUSTER_KIND,),
        accepts=accepts_cluster,
        parse=parse_cluster,
        artifacts=(
            RowSource(
                CLUSTER_ARTIFACT,
                "an EKS cluster's configuration, at its creation (endpoint access, logging)",
                (Logsource("aws", "eks"),),
            ),
        ),
        priority=63,
    )
)
