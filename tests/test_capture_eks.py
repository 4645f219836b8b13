"""`cloudir capture eks`: a cluster's configuration and its audit log, on the timeline.

moto's EKS and CloudWatch Logs over HTTP hold a cluster and the audit stream its control
plane would deliver (`/aws/eks/<cluster>/cluster`, `kube-apiserver-audit-*`). The audit
events become rows whose `raw` is the event as logged, and the shipped Kubernetes rules
find the exec and the cluster-admin binding in them. (moto ignores FilterLogEvents'
`logStreamNamePrefix`, which keeps the group's other streams out on AWS: a test checks
that every request asks for it.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers import kubernetes_audit as parser
from tests.conftest import boto_client, cloudir, query

NOW = datetime.now(UTC).replace(microsecond=0)
START, END = NOW - timedelta(hours=2), NOW - timedelta(minutes=1)
EXEC_RULE = "277a5ab5-ae60-4936-9507-f324cc5eca1b"
ADMIN_RULE = "bdfd47eb-1f33-41ea-b026-d6c78a3c1123"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def audit_event(verb: str, ref: dict[str, Any], at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/x",
        "verb": verb,
        "user": {"username": "arn:aws:sts::111122223333:assumed-role/dev/mallory"},
        "sourceIPs": ["198.51.100.7"],
        "objectRef": ref,
        "responseStatus": {"code": 201},
        "requestReceivedTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "stageTimestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        **extra,
    }


@pytest.fixture
def cluster(moto_url: str) -> dict[str, Any]:
    name = f"prod-{uuid.uuid4().hex[:6]}"
    boto_client(moto_url, "eks").create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": ["subnet-1"]},
        logging={"clusterLogging": [{"types": ["api", "audit"], "enabled": True}]},
    )
    logs = boto_client(moto_url, "logs")
    group = f"/aws/eks/{name}/cluster"
    logs.create_log_group(logGroupName=group)
    at = START + timedelta(minutes=5)
    events = [
        audit_event("get", {"resource": "pods", "namespace": "web", "name": "api"}, at),
        audit_event(
            "create",
            {"resource": "pods", "namespace": "web", "name": "api", "subresource": "exec"},
            at + timedelta(minutes=1),
            responseStatus={"code": 101},
        ),
        audit_event(
            "create",
            {"resource": "clusterrolebindings", "name": "backdoor"},
            at + timedelta(minutes=2),
            requestObject={"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}},
        ),
    ]
    logs.create_log_stream(logGroupName=group, logStreamName="kube-apiserver-audit-0a1b")
    logs.put_log_events(
        logGroupName=group,
        logStreamName="kube-apiserver-audit-0a1b",
        logEvents=[
            {
                "timestamp": int((at + timedelta(minutes=n)).timestamp() * 1000),
                "message": json.dumps(e),
            }
            for n, e in enumerate(events)
        ],
    )
    return {"name": name, "events": events, "url": moto_url}


def _capture(case: Path, url: str, *names: str) -> Any:
    return cloudir(
        "capture", "eks", "--case", str(case), "--endpoint-url", url, "--region", "us-east-1",
        "--start", _iso(START), "--end", _iso(END), "--json", *names,
    )  # fmt: skip


def test_the_audit_log_is_captured_and_the_rules_find_the_exec_and_the_binding(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    run = _capture(case, cluster["url"], cluster["name"])
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["audit_logging"] is True and item["notes"] == []
    assert item["audit"]["events"] == 3
    described = json.loads((case / "evidence" / item["evidence_id"] / "cluster.json").read_text())
    assert described["cluster"]["name"] == cluster["name"]

    built = cloudir("timeline", "--case", str(case), "--strict", "--json")
    assert built.code == 0, built.stderr
    rows = query(
        case,
        "SELECT user, src_ip, action, target, outcome, host, raw, event_id FROM timeline "
        "WHERE artifact = 'kubernetes:audit' ORDER BY timestamp",
    )
    assert [(r["action"], r["target"], r["outcome"]) for r in rows] == [
        ("get", "namespaces/web/pods/api", "201"),
        ("create", "namespaces/web/pods/api/exec", "101"),
        ("create", "clusterrolebindings/backdoor", "201"),
    ]
    assert {r["host"] for r in rows} == {cluster["name"]}
    assert {r["src_ip"] for r in rows} == {"198.51.100.7"}
    assert [json.loads(r["raw"]) for r in rows] == cluster["events"]  # as logged
    [config] = query(case, "SELECT message FROM timeline WHERE artifact = 'aws:eks-cluster'")
    assert "audit logging on" in config["message"] and "public to 0.0.0.0/0" in config["message"]

    found = cloudir("detect", "--case", str(case), "--json", "--fail-on", "critical")
    assert found.code == 0, found.stderr
    by_rule = {f["rule_id"]: f for f in found.json()["findings"]}
    assert by_rule[EXEC_RULE]["event_ids"] == [rows[1]["event_id"]]
    assert by_rule[ADMIN_RULE]["event_ids"] == [rows[2]["event_id"]]


def test_every_request_asks_for_the_audit_streams_only(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    from cloudir.aws import Aws, AwsOptions
    from cloudir.capture.eks import capture_eks
    from cloudir.case import Case
    from cloudir.timewindow import Window

    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=cluster["url"]))
    asked: list[dict[str, Any]] = []
    aws.session.events.register(
        "provide-client-params.cloudwatch-logs.FilterLogEvents",
        lambda params, **_: asked.append(dict(params)),
    )
    window = Window.parse(_iso(START), _iso(END))
    result = capture_eks(Case.create(tmp_path / "case"), aws, cluster["name"], window, {}, print)
    assert result.audit is not None and result.audit.events == 3
    assert asked and {a.get("logStreamNamePrefix") for a in asked} == {"kube-apiserver-audit"}
    assert {a["logGroupName"] for a in asked} == {f"/aws/eks/{cluster['name']}/cluster"}


def test_audit_logging_off_is_said_and_a_missing_group_is_noted(
    moto_url: str, tmp_path: Path
) -> None:
    name = f"dark-{uuid.uuid4().hex[:6]}"
    boto_client(moto_url, "eks").create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": ["subnet-1"], "endpointPublicAccess": True},
        logging={"clusterLogging": [{"types": ["audit"], "enabled": False}]},
    )
    run = _capture(tmp_path / "case", moto_url, name)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["audit_logging"] is False and item["audit"] is None
    assert f"audit logging is off for EKS cluster {name}" in run.stderr
    assert f"no log group /aws/eks/{name}/cluster" in run.stderr
    assert cloudir("timeline", "--case", str(tmp_path / "case")).code == 0
    [config] = query(tmp_path / "case", "SELECT message FROM timeline")
    assert "audit logging OFF" in config["message"]


def test_a_cluster_that_does_not_exist_is_one_line(moto_url: str, tmp_path: Path) -> None:
    run = _capture(tmp_path / "case", moto_url, "no-such-cluster")
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: no EKS cluster named no-such-cluster in this account and region"
    ]
    assert not (tmp_path / "case").exists()


# -- the parser as an adversary reads it ------------------------------------------------
def _rows(tmp_path: Path, messages: list[Any]) -> tuple[list[dict[str, Any]], int]:
    page = tmp_path / "pages" / "page-00001.json"
    page.parent.mkdir(exist_ok=True)
    events = [{"timestamp": 1722420000000, "message": m, "logStreamName": "s"} for m in messages]
    page.write_text(json.dumps({"events": events}))
    errors = ErrorLog("e1", "pages/page-00001.json")
    rows = [
        r for b in parser.parse_audit(page, "e1", errors, ParseOptions()) for r in b.to_pylist()
    ]
    return rows, len(errors.entries)


def test_messages_that_are_not_audit_events_are_logged_skips(tmp_path: Path) -> None:
    good = json.dumps(audit_event("list", {"resource": "secrets"}, START))
    rows, errors = _rows(
        tmp_path,
        [good, "plain text", json.dumps({"kind": "Event"}), json.dumps([1]), 7,
         json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "user": "x"})],
    )  # fmt: skip
    assert len(rows) == 1 and errors == 5
    assert rows[0]["raw"] == good and rows[0]["target"] == "secrets"


audit_like = st.fixed_dictionaries(
    {"kind": st.just("Event"), "apiVersion": st.just("audit.k8s.io/v1")},
    optional={
        "verb": st.one_of(st.text(max_size=8), st.integers()),
        "user": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), st.text()),
        "objectRef": st.one_of(
            st.dictionaries(st.sampled_from(["resource", "namespace", "name"]), st.text()),
            st.integers(),
        ),
        "sourceIPs": st.one_of(st.lists(st.text(max_size=10)), st.text(max_size=5)),
        "responseStatus": st.one_of(st.dictionaries(st.just("code"), st.integers()), st.none()),
        "requestReceivedTimestamp": st.one_of(st.text(max_size=30), st.none()),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(st.one_of(audit_like.map(json.dumps), st.text(max_size=20)), max_size=6))
def test_every_message_is_a_row_or_one_logged_line(tmp_path: Path, events: list[str]) -> None:
    rows, errors = _rows(tmp_path, events)
    assert len(rows) + errors >= len(events)  # a row, or a skip (a bad time may add one)
    assert len(rows) <= len(events)
    assert all(r["artifact"] == "kubernetes:audit" for r in rows)


def _cluster_errors(path: Path) -> tuple[int, list[str]]:
    errors = ErrorLog("e1", path.name)
    rows = [
        r for b in parser.parse_cluster(path, "e1", errors, ParseOptions()) for r in b.to_pylist()
    ]
    return len(rows), [e["reason"] for e in errors.entries]


def test_an_oversized_cluster_file_is_a_counted_skip_read_only_to_its_bound(
    tmp_path: Path,
) -> None:
    import tracemalloc

    huge = tmp_path / "cluster.json"
    with huge.open("wb") as fh:  # sparse: 64 MiB on paper, nothing on disk
        fh.write(b'{"cluster": {"name": "x", "createdAt": 1722420000, "pad": "')
        fh.truncate(64 << 20)
    tracemalloc.start()
    try:
        rows, reasons = _cluster_errors(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 0
    assert reasons == [f"cluster.json: over {parser.MAX_CLUSTER_BYTES} bytes, not a "
                       "DescribeCluster answer; not read"]  # fmt: skip
    assert peak < 4 * parser.MAX_CLUSTER_BYTES  # the bound, not the file


def test_a_symlinked_cluster_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"cluster": {"name": "planted", "createdAt": 1722420000}}))
    assert _cluster_errors(target)[0] == 1  # the same document read directly is a row
    link = tmp_path / "item" / "cluster.json"
    link.parent.mkdir()
    link.symlink_to(target)
    rows, reasons = _cluster_errors(link)
    assert rows == 0
    assert len(reasons) == 1 and reasons[0].startswith("cluster.json: not readable (")
