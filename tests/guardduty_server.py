"""A moto server whose GuardDuty answers GetFindings with findings a test puts there.

moto keeps GuardDuty detectors but no findings, and has no GetFindings route. The
`guardduty_server` fixture starts its own `ThreadedMotoServer` in this process after
adding the route (`POST /detector/<id>/findings/get`) and a `get_findings` handler to
moto's GuardDuty response class, the way tests/test_capture_lookup.py adds LookupEvents
to CloudTrail. The CLI or `cloudir.alerts.fetch` then talks real HTTP to a real moto
server; boto3 is not patched. A detector the test did not create is refused as AWS
refuses it (moto's own "not owned by the current account"), an unknown finding id is
simply absent from the answer, as in AWS.

Use it from any test module (it is imported into tests/conftest.py):

    def test_x(guardduty_server):
        detector = guardduty_server.detector()             # a real moto detector
        guardduty_server.add(detector, finding)            # camelCase, as the API sends it
        body = fetch_guardduty(aws(guardduty_server.url), detector, finding["id"])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ROUTE = "{0}/detector/(?P<detector_id>[^/]+)/findings/get$"
LIST_ROUTE = "{0}/detector/(?P<detector_id>[^/]+)/findings$"


@dataclass
class GuardDutyServer:
    url: str
    region: str = "us-east-1"
    findings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)  # every GetFindings answer, as sent

    def client(self) -> Any:
        import boto3

        return boto3.client("guardduty", region_name=self.region, endpoint_url=self.url)

    def detector(self) -> str:
        return str(self.client().create_detector(Enable=True)["DetectorId"])

    def add(self, detector_id: str, finding: dict[str, Any]) -> None:
        """A finding as GuardDuty's API spells it (camelCase; `detail` of an EventBridge
        event is one)."""
        self.findings[(detector_id, finding["id"])] = finding


@pytest.fixture
def guardduty_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GuardDutyServer]:
    from moto.guardduty import urls
    from moto.guardduty.responses import GuardDutyResponse
    from moto.server import ThreadedMotoServer

    state: dict[str, GuardDutyServer] = {}

    def get_findings(self: GuardDutyResponse) -> str:
        detector_id = self.path.split("/")[-3]
        self.guardduty_backend.get_detector(detector_id)  # an unknown detector: 400, as AWS
        wanted = self._get_param("findingIds") or []
        server = state["server"]
        found = [
            server.findings[(detector_id, i)] for i in wanted if (detector_id, i) in server.findings
        ]
        body = json.dumps({"findings": found})
        server.bodies.append(body.encode())
        return body

    def list_findings(self: GuardDutyResponse) -> str:
        """Every finding of the detector but the ones the criteria's `id.notEquals` leaves
        out (triage's related-findings step asks for the alert's resources; the test's
        detector holds only findings on them)."""
        detector_id = self.path.split("/")[-2]
        self.guardduty_backend.get_detector(detector_id)
        criteria = (self._get_param("findingCriteria") or {}).get("criterion") or {}
        left_out = set((criteria.get("id") or {}).get("notEquals") or [])
        ids = [i for (d, i) in state["server"].findings if d == detector_id and i not in left_out]
        return json.dumps({"findingIds": ids})

    monkeypatch.setattr(GuardDutyResponse, "get_findings", get_findings, raising=False)
    monkeypatch.setattr(GuardDutyResponse, "list_findings", list_findings, raising=False)
    monkeypatch.setitem(urls.url_paths, ROUTE, GuardDutyResponse.dispatch)
    monkeypatch.setitem(urls.url_paths, LIST_ROUTE, GuardDutyResponse.dispatch)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    server = GuardDutyServer(url=f"http://{host}:{port}")
    state["server"] = server
    yield server
    moto.stop()
