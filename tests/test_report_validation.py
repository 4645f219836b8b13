"""The report's "Alert validation" section: first in HTML and Markdown, `alert_validation`
in report.json, inert whatever the alert and the evidence say, absent without triage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.case import Case
from cloudir.report import model as report_model
from cloudir.report import render
from cloudir.triage.verdict import validate_alert, write_validation
from tests.conftest import cloudir
from tests.test_triage_verdict import alert, scope
from tests.triage_case import HOSTILE_AGENT, build_case

HOSTILE_TITLE = "<script>alert(1)</script> **bold** [x](http://evil.example) | cell |\n# head"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_case(tmp_path_factory.mktemp("report-validation"))


@pytest.fixture(scope="module")
def triaged(plain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("triaged") / "case"
    shutil.copytree(plain, case)
    crafted = alert(api="GetCallerIdentity", title=HOSTILE_TITLE)
    crafted = type(crafted)(**{**crafted.__dict__, "action": {"api": "GetCallerIdentity"}})
    write_validation(case, validate_alert(case, crafted, scope(access_keys=("AKIALEAKED0001",))))
    result = cloudir("report", "--case", str(case))
    assert result.code == 0, result.stderr
    return case


def reports(case: Path) -> dict[str, str]:
    return {f: (case / "report" / f"report.{f}").read_text() for f in ("html", "md", "json")}


def test_the_section_comes_first_with_the_verdict_and_its_reasons(triaged: Path) -> None:
    validation = json.loads((triaged / "triage" / "validation.json").read_text())
    assert validation["verdict"] == "confirmed"
    out = reports(triaged)
    html, md = out["html"], out["md"]
    assert html.index('id="alert-validation"') < html.index('id="contents"')
    assert html.index('id="alert-validation"') < html.index('id="summary"')
    assert '<span class="badge sev-high">CONFIRMED</span>' in html
    assert '<li><a href="#alert-validation">Alert validation</a>: CONFIRMED</li>' in html
    assert md.index("## Alert validation") < md.index("## Summary")
    assert "**Verdict: CONFIRMED.**" in md
    section = md[md.index("## Alert validation") : md.index("## Summary")]
    for reason in validation["reasons"]:
        event_ids = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", reason)
        assert all(e in section for e in event_ids)
        assert all(e in html for e in event_ids)
    named = [r for r in validation["reasons"] if re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", r)]
    assert len(named) >= 3
    assert "CloudTrail Logging Stopped" in section
    assert "the alert's call GetCallerIdentity is in the evidence: 1 call" in section


def test_report_json_carries_the_validation_after_the_case(triaged: Path) -> None:
    doc = json.loads(reports(triaged)["json"])
    assert doc["report_version"] == report_model.REPORT_VERSION == "1.3"
    assert list(doc)[:5] == [
        "report_version", "generated", "cloudir_version", "case", "alert_validation",
    ]  # fmt: skip
    v = doc["alert_validation"]
    written = json.loads((triaged / "triage" / "validation.json").read_text())
    assert (v["verdict"], v["rule"], v["reasons"]) == (
        "confirmed", "serious-finding", written["reasons"],
    )  # fmt: skip
    assert v["alert"]["title"] == HOSTILE_TITLE and v["alert"]["sample"] is False
    assert v["activity"]["count"] == 5 and len(v["activity"]["rows"]) == 5
    assert v["scope"]["entities"] == {"access_keys": ["AKIALEAKED0001"]}
    assert {f["title"] for f in v["findings"]} >= {"CloudTrail Logging Stopped"}
    assert [f["title"] for f in v["story"]["later"]] == [
        "GuardDuty Detector Deleted, Disabled or Detached"
    ]
    assert v["searched"]["rows"] == 13 and v["searched"]["timeline"] is True


def test_hostile_alert_title_and_user_agent_stay_text(triaged: Path) -> None:
    out = reports(triaged)
    html, md = out["html"], out["md"]
    section = html[html.index('id="alert-validation"') : html.index('id="contents"')]
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "&lt;img src=x onerror=alert(1)&gt;" in section  # the user agent, in the rows
    md_section = md[md.index("## Alert validation") : md.index("## Summary")]
    assert "\\<script\\>alert\\(1\\)\\</script\\>" in md_section
    assert "\\*\\*bold\\*\\*" in md_section and "http\\[:\\]//evil" in md_section
    assert "\\| cell \\|" in md_section
    assert "\n# head" not in md and "\\n" not in md_section.split("**Verdict")[1].split("\n")[0]
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in md_section
    assert "](javascript" not in md_section
    assert HOSTILE_AGENT not in md


def frozen(monkeypatch: pytest.MonkeyPatch, case: Path) -> dict[str, str]:
    monkeypatch.setattr(report_model, "utc_now", lambda: "2026-12-05T10:00:00.000000Z")
    model = report_model.build(Case.open(case))
    return {
        "html": render.html(model),
        "md": render.markdown(model),
        "json": render.json_text(model),
    }


def test_a_case_without_triage_renders_as_before(
    plain: Path, triaged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without triage/validation.json nothing is added; with it, only the section is."""
    before = frozen(monkeypatch, plain)
    after = frozen(monkeypatch, triaged)
    assert "alert-validation" not in before["html"] and "Alert validation" not in before["md"]
    assert "alert_validation" not in json.loads(before["json"])
    html = re.sub(r'\n<section id="alert-validation".*?</section>\n', "", after["html"], flags=re.S)
    html = re.sub(r'<li><a href="#alert-validation">.*?</li>\n', "", html)
    assert html.replace(str(triaged), str(plain)) == before["html"]
    md = re.sub(r"\n## Alert validation\n.*?(?=\n## Summary)", "", after["md"], flags=re.S)
    assert md.replace(str(triaged), str(plain)) == before["md"]
    doc = json.loads(after["json"])
    doc.pop("alert_validation")
    assert json.dumps(doc).replace(str(triaged), str(plain)) == json.dumps(
        json.loads(before["json"])
    )


def test_an_unreadable_validation_file_is_said_not_hidden(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = tmp_path / "case"
    shutil.copytree(plain, case)
    (case / "triage").mkdir()
    (case / "triage" / "validation.json").write_text('{"verdict": "confirmed", ')
    out = frozen(monkeypatch, case)
    assert '<span class="badge sev-unknown">NO VERDICT</span>' in out["html"]
    assert "The validation file could not be read: validation.json: unreadable" in out["html"]
    assert "**Verdict: NO VERDICT.**" in out["md"]
    assert json.loads(out["json"])["alert_validation"]["verdict"] is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["verdict", "reasons", "alert", "scope", "activity", "findings", "story", "suppressed",
     "searched", "rule"]
)  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    doc=st.dictionaries(keys, json_values, max_size=10),
    verdict=st.sampled_from(["confirmed", "explained", "<b>x</b>", None]),
)
def test_any_validation_document_renders_inert(
    plain: Path, doc: dict[str, Any], verdict: Any
) -> None:
    """A validation.json of any shape (a tampered case) renders; no value becomes markup."""
    model = _base_model(plain)
    model["alert_validation"] = report_model._validation_view(doc | {"verdict": verdict}, None)
    html = render.html(model)
    md = render.markdown(model)
    assert "<b>x</b>" not in html and html.count('id="alert-validation"') == 1
    assert "## Alert validation" in md
    json.dumps(model)


_MODELS: dict[Path, dict[str, Any]] = {}


def _base_model(case: Path) -> dict[str, Any]:
    if case not in _MODELS:
        _MODELS[case] = report_model.build(Case.open(case))
    return dict(_MODELS[case])
