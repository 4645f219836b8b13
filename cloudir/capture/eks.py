"""Capture an EKS cluster: its configuration, and its control plane's audit log.

The Kubernetes audit log is the cluster's CloudTrail: who ran `kubectl exec` into which
pod, who bound `cluster-admin`, who listed every secret. EKS delivers it to CloudWatch
Logs only when the cluster's `audit` log type is enabled, into the group
`/aws/eks/<cluster>/cluster`, streams `kube-apiserver-audit-*`. So a capture is two items:

- `eks-<cluster>`: DescribeCluster's answer as received (`cluster.json`): version,
  endpoint access (public, and from which CIDRs), logging, roles, the OIDC issuer;
- `eks-audit-...`: the audit streams for the window through `capture.log_group` (pages
  as received, resumable), kind `eks-audit`, read by the Kubernetes audit parser.

Audit logging off is said in one line and in the item's notes, never passed over in
silence: it means the control plane kept no record of the window, and the report's
evidence table should say so. Streams still held from when it was on are captured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cloudir.aws import Aws, call, keep_body
from cloudir.capture.cloudtrail import reencode
from cloudir.capture.log_group import LogGroupResult, capture_log_group, find_log_group
from cloudir.case import Case
from cloudir.errors import CloudError, UsageError
from cloudir.evidence_item import EvidenceItem, ItemTally
from cloudir.progress import Reporter
from cloudir.timewindow import Window

CLUSTER_KIND: Final = "eks-cluster"
AUDIT_KIND: Final = "eks-audit"
AUDIT_STREAMS: Final = "kube-apiserver-audit"


@dataclass
class ClusterResult(ItemTally):
    """One cluster's configuration item, and its audit log's item when there is one."""

    item: EvidenceItem
    cluster: str
    region: str
    audit_logging: bool = False
    audit: LogGroupResult | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "cluster": self.cluster,
            "region": self.region,
            "audit_logging": self.audit_logging,
            "audit": self.audit.as_dict() if self.audit else None,
            "notes": self.notes,
        }


def describe_cluster(aws: Aws, cluster: str, region: str | None = None) -> tuple[dict, bytes]:
    """DescribeCluster's `cluster` and the response body as received; a missing cluster is
    a one-line UsageError (asked before the case is made)."""
    client = aws.client("eks", region or aws.region)
    bodies: list[bytes] = []
    client.meta.events.register(
        "before-parse.eks.DescribeCluster", functools.partial(keep_body, bodies)
    )
    try:
        resp = call("eks:DescribeCluster", client.describe_cluster, name=cluster)
    except CloudError as exc:
        if "ResourceNotFoundException" in str(exc):
            raise UsageError(f"no EKS cluster named {cluster} in this account and region") from exc
        raise
    return resp["cluster"], bodies[-1] if bodies else reencode(resp)


def audit_logging_on(described: dict[str, Any]) -> bool:
    """The cluster sends its `audit` log type to CloudWatch Logs now."""
    entries = (described.get("logging") or {}).get("clusterLogging") or []
    return any(e.get("enabled") and "audit" in (e.get("types") or []) for e in entries)


def capture_eks(
    case: Case,
    aws: Aws,
    cluster: str,
    window: Window,
    identity: dict[str, str],
    report: Reporter,
    region: str | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> ClusterResult:
    region = region or aws.region
    described, body = describe_cluster(aws, cluster, region)
    account = identity.get("Account", "unknown")
    source = {"type": "describe_cluster", "account": account, "region": region,
              "cluster": cluster}  # fmt: skip
    evidence_id = case.unique_evidence_id(f"eks-{cluster}-{window.start:%Y%m%dT%H%M}")
    meta = {"kind": CLUSTER_KIND, "source": source, "caller_identity": identity,
            "window": window.as_dict()}  # fmt: skip
    result = ClusterResult(case.item(evidence_id, meta), cluster, region)
    result.audit_logging = audit_logging_on(described)
    with result.item as item:
        item.store("cluster.json", body, source=dict(source, arn=described.get("arn")))
        if not result.audit_logging:
            note = (
                f"audit logging is off for EKS cluster {cluster}: its control plane keeps no "
                "record of Kubernetes API requests while it stays off"
            )
            item.note(note)
            result.notes.append(note)
            report(note)
    group = f"/aws/eks/{cluster}/cluster"
    try:
        find_log_group(aws, group, region)
    except UsageError:
        note = f"no log group {group}: no audit log was ever delivered for {cluster}"
        result.notes.append(note)
        report(note)
        return result
    result.audit = capture_log_group(
        case, aws, group, window, identity, report, region=region, on_page=on_page,
        stream_prefix=AUDIT_STREAMS, kind=AUDIT_KIND, name="eks-audit",
    )  # fmt: skip
    return result
