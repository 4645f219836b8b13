"""The HTML report in a real browser: it renders every finding and fetches nothing.

A report is opened on analysts' laptops and in mail clients; one remote fetch (a font,
a script from a CDN, an image an attacker planted in an event) tells an outsider that
the incident is being worked, and from where. Headless Chromium loads the report from
a file:// URL with a network log, and the test reads every request from that log.

Chromium's own browser services (component updater, account check, network time)
still talk to Google even with --disable-background-networking. Those requests carry
no page initiator and no file:// isolation key; the classifier below tells them apart
from anything the page asked for, and a control page with remote resources proves the
classifier sees page requests. The host resolver maps every name to nothing, so no
request of either kind leaves the machine during the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import cloudir

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--allow-browser-signin=false",
    "--disable-features=NetworkTimeServiceQuerying",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
REMOTE_SCHEMES = ("http", "https", "ws", "wss", "ftp")
# Chromium's own services; requests to them are allowed only when the page did not ask.
BROWSER_SERVICE_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CLOUDIR_REQUIRE_BROWSER") == "1":
        pytest.fail("CLOUDIR_REQUIRE_BROWSER=1 but no chromium or chromium-browser on PATH")
    pytest.skip("no chromium or chromium-browser on PATH (apt-get install chromium)")


def run_browser(page: Path, work: Path, *extra: str) -> tuple[str, dict[str, Any]]:
    """Load `page` once in a fresh profile; return the dumped DOM and the net log."""
    profile = work / "profile"
    netlog = work / "netlog.json"
    proc = subprocess.run(
        [browser(), *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}",
         *extra, "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(netlog.read_text())


def url_requests(netlog: dict[str, Any]) -> list[dict[str, Any]]:
    """Every URL the log names, with what started it (merged over its source's events)."""
    by_source: dict[int, dict[str, Any]] = {}
    for event in netlog["events"]:
        params = event.get("params") or {}
        if "url" not in params:
            continue
        entry = by_source.setdefault(event["source"]["id"], {"urls": set()})
        entry["urls"].add(params["url"])
        for key in ("initiator", "network_isolation_key", "site_for_cookies", "method"):
            if key in params:
                entry[key] = params[key]
    return list(by_source.values())


def remote_requests(netlog: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(requests the page made to the network, Chromium's own service requests)."""
    page, service = [], []
    for request in url_requests(netlog):
        for url in sorted(request["urls"]):
            parts = urlsplit(url)
            if not url:
                continue  # events about a request with no URL yet (stream setup)
            if parts.scheme not in REMOTE_SCHEMES:
                assert parts.scheme in ("file", "data", "about", "chrome"), url
                continue
            from_page = request.get("initiator", "not an origin") != "not an origin" or any(
                "file://" in str(request.get(k, ""))
                for k in ("network_isolation_key", "site_for_cookies")
            )
            host = parts.hostname or ""
            known = any(host == h or host.endswith("." + h) for h in BROWSER_SERVICE_HOSTS)
            (service if known and not from_page else page).append(url)
    return page, service


class TextOf(HTMLParser):
    """The text a reader sees, and the element names the browser built."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def dom_text(dom: str) -> tuple[str, set[str]]:
    parser = TextOf()
    parser.feed(dom)
    parser.close()
    return " ".join(" ".join(parser.text).split()), parser.tags


@pytest.fixture(scope="module")
def stratus_report(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser()  # skip before building the case when there is no browser
    case = tmp_path_factory.mktemp("browser") / "case"
    folder = corpus / "cloudtrail/stratus-red-team/detonation-logs"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    result = cloudir("analyze", "--case", str(case), "--fail-on", "critical")
    assert result.code == 0, result.stderr
    return case


def test_the_netlog_classifier_sees_what_a_page_fetches(tmp_path: Path) -> None:
    """The control: a page with remote resources shows up as page requests."""
    page = tmp_path / "control.html"
    page.write_text(
        "<!doctype html><title>control</title><h1>control</h1>"
        '<img src="http://evil.example/x.png">'
        '<link rel="stylesheet" href="https://cdn.example/a.css">'
        "<script>new WebSocket('ws://127.0.0.1:9/socket')</script>"
    )
    dom, netlog = run_browser(page, tmp_path)
    assert "<h1>control</h1>" in dom
    fetched, _ = remote_requests(netlog)
    hosts = {urlsplit(u).hostname for u in fetched}
    assert {"evil.example", "cdn.example"} <= hosts, fetched
    assert any(u.startswith(("ws://", "http://127.0.0.1:9/")) for u in fetched), fetched


def test_report_renders_every_finding_and_fetches_nothing(
    stratus_report: Path, tmp_path: Path
) -> None:
    findings = json.loads((stratus_report / "findings/findings.json").read_text())["findings"]
    assert findings
    dom, netlog = run_browser(stratus_report / "report/report.html", tmp_path)
    text, tags = dom_text(dom)
    for finding in findings:
        assert " ".join(finding["title"].split()) in text, finding["title"]
    assert "script" not in tags
    fetched, service = remote_requests(netlog)
    assert fetched == [], f"the report page requested {fetched}"
    print(f"netlog: {len(netlog['events'])} events, page requests: none; "
          f"browser service requests (blocked by the resolver rule): {service}")  # fmt: skip


def test_hostile_report_fetches_nothing_and_builds_no_active_elements(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The evidence planted images, scripts and links: the browser must build none of them."""
    browser()
    from tests.conftest import records_gz
    from tests.test_report import hostile_events

    root = tmp_path_factory.mktemp("browser-hostile")
    logs = root / "logs"
    logs.mkdir()
    (logs / "hostile.json.gz").write_bytes(records_gz(hostile_events()))
    case = root / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    result = cloudir("analyze", "--case", str(case), "--fail-on", "critical")
    assert result.code == 0, result.stderr
    dom, netlog = run_browser(case / "report/report.html", tmp_path)
    text, tags = dom_text(dom)
    assert "CloudTrail Logging Stopped" in text
    assert "<script>alert(1)</script>" in text  # shown as text, not built as an element
    assert not tags & {"script", "img", "iframe", "object", "embed"}
    fetched, _ = remote_requests(netlog)
    assert fetched == [], f"the hostile report page requested {fetched}"
