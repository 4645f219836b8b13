"""Secrets in evidence never reach a report file; look-alikes and the evidence stay as they are.

Issue 14 item 7 lists the secrets a report used to print: each one is put, here, in the
columns a report shows (the Markdown shows the target, the HTML and JSON also the raw
record) of a row a rule matches, and every report file is searched for it. Look-alikes a
responder needs (a SHA-1, ARNs, an ordinary `--user` value, an access key id) must still
be there, and the timeline must still hold every secret: only reports mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.report.mask import MASK, mask_document, mask_text
from tests.conftest import cloudir, query
from tests.test_adversarial_report import (
    FORMATS,
    build_case,
    hostile_text,
    report_files,
    run_report,
)
from tests.timeline_rows import timeline_row, write_timeline

SECRET_KEY_A = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8kLmN2pR"  # 40 characters, a secret access key
SECRET_KEY_B = "Zq7+Lm2NpR4sT6uV8wX0yA1bC3dE5fG7hJ9kL0mN"
SECRET_KEY_C = "hB3nM5qR7tV9xZ1aC3eG5iK7mO9qS1uW3yA5cE7g"
STS_AQOD = "AQoDYXdzEJr1K0hMDpTrexampleTOKENvalue1234567890abcdefGHIJKL"
STS_FQOG = "FQoGZXIvYXdzEXAMPLEtokenVALUE0987654321zyxwvuTSRQPONM"
HEADER_TOKEN = "ZXhhbXBsZXNlY3VyaXR5dG9rZW4wMTIzNDU2Nzg5YWJjZGVm"
KEYED_TOKEN = "opaqueTokenValue7Q2w9E4r"
CLI_PASSWORD = "Sup3r-S3cret-Pa55w0rd"
BASIC_AUTH = "YWRtaW46c3VwZXJzZWNyZXQ5OQ=="
PWD_VALUE = "PwdValue-8f3K2m9Q"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"

# The cases: (name, text carrying the secret, the secret)
IN_TEXT = [
    ("aws-configure-set", f"aws configure set aws_secret_access_key {SECRET_KEY_A}", SECRET_KEY_A),
    ("env-space-separated", f"AWS_SECRET_ACCESS_KEY {SECRET_KEY_B} exported", SECRET_KEY_B),
    ("bare-beside-key-id", f"credentials: {KEY_ID} {SECRET_KEY_C}", SECRET_KEY_C),
    ("sts-aqod-free-text", f"the caller sent {STS_AQOD} with the request", STS_AQOD),
    ("sts-fqog-free-text", f"old style token {STS_FQOG} seen", STS_FQOG),
    ("x-amz-security-token", f"GET / HTTP/1.1 X-Amz-Security-Token: {HEADER_TOKEN}", HEADER_TOKEN),
    ("cli-password", f"mysql -h db.internal --password {CLI_PASSWORD} prod", CLI_PASSWORD),
    ("authorization-basic", f"curl -H 'Authorization: Basic {BASIC_AUTH}' http://x", BASIC_AUTH),
]
# Secrets only a key name says are secrets: (name, key, value)
IN_KEYS = [
    ("token-key", "token", KEYED_TOKEN),
    ("sts-under-token-key", "token", STS_AQOD),
    ("pwd-key", "pwd", PWD_VALUE),
]
SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
LOOK_ALIKES = {
    "sha1": SHA1,
    "arn": "arn:aws:iam::111111111111:user/alice",
    "secret-arn": "arn:aws:secretsmanager:us-east-1:111111111111:secret:prod/db-AbCdEf",
    "user-option": "--user operator7",
    "access-key-id": KEY_ID,
}


# -- the rules on their own ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "secret"), IN_TEXT, ids=[c[0] for c in IN_TEXT])
def test_mask_text_masks_each_listed_secret(name: str, text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert MASK in masked


@pytest.mark.parametrize(("name", "key", "value"), IN_KEYS, ids=[c[0] for c in IN_KEYS])
def test_a_secret_key_masks_its_value_and_the_same_value_elsewhere(
    name: str, key: str, value: str
) -> None:
    doc = mask_document({"requestParameters": {key: value}, "message": f"saw {value} here"})
    assert value not in json.dumps(doc)
    assert doc["requestParameters"][key] == MASK


@pytest.mark.parametrize("name", sorted(LOOK_ALIKES))
def test_look_alikes_stay(name: str) -> None:
    text = f"checked {LOOK_ALIKES[name]} at 10:00"
    assert mask_text(text) == text
    assert mask_document({"commitId": SHA1, "arn": LOOK_ALIKES["arn"]}) == {
        "commitId": SHA1,
        "arn": LOOK_ALIKES["arn"],
    }


def test_a_sha1_beside_an_access_key_id_is_not_a_secret_key() -> None:
    text = f"{KEY_ID} {SHA1}"
    assert mask_text(text) == text


def test_a_pwd_path_is_masked_under_its_key_but_not_everywhere() -> None:
    """A `pwd` key may hold a working directory: masked there, not in every file path."""
    doc = mask_document({"env": {"pwd": "/home/alice"}, "path": "/home/alice/.bash_history"})
    assert doc == {"env": {"pwd": MASK}, "path": "/home/alice/.bash_history"}


# -- through the CLI: every report file ----------------------------------------------------


def secret_rows() -> list[dict[str, Any]]:
    """One matched row per case, the secret in target, message and raw; one look-alike row."""
    rows = []
    for n, (name, text, _) in enumerate(IN_TEXT):
        raw = {"eventName": "SecretProbe", "case": name, "commandLine": text}
        rows.append(
            timeline_row("aws:cloudtrail", f"2026-03-01T10:{n:02d}:00Z", raw, user="mallory",
                         src_ip="198.51.100.7", action="SecretProbe", target=text,
                         message=text)
        )  # fmt: skip
    for n, (name, key, value) in enumerate(IN_KEYS):
        raw = {"eventName": "KeyProbe", "case": name, "requestParameters": {key: value}}
        rows.append(
            timeline_row("aws:cloudtrail", f"2026-03-01T11:{n:02d}:00Z", raw, user="mallory",
                         action="KeyProbe", target=f"value {value}")
        )  # fmt: skip
    for n, (name, alike) in enumerate(LOOK_ALIKES.items()):
        rows.append(
            timeline_row("aws:cloudtrail", f"2026-03-01T12:{n:02d}:00Z",
                         {"eventName": "KeyProbe", "case": f"look-alike {name}",
                          "commitId": SHA1, "note": alike}, user="mallory", action="KeyProbe",
                         target=alike, message=alike)
        )  # fmt: skip
    return rows


# Two rules, so that each finding shows all its rows in the Markdown (10 at most).
RULE = """title: {name}
id: 00000000-0000-4000-8000-0000000000{number}
status: test
logsource: {{product: aws, service: cloudtrail}}
detection:
    selection:
        eventName: {name}
    condition: selection
level: high
"""


@pytest.fixture(scope="module")
def masked_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("masking")
    case = root / "case"
    write_timeline(case, secret_rows())
    (root / "rules").mkdir()
    for number, name in (("a7", "SecretProbe"), ("a8", "KeyProbe")):
        (root / f"rules/{name}.yml").write_text(RULE.format(name=name, number=number))
    detect = cloudir("detect", "--case", str(case), "--rules", str(root / "rules"),
                     "--no-builtin", "--fail-on", "critical")  # fmt: skip
    assert detect.code == 0, detect.stderr
    result = cloudir("report", "--case", str(case))
    assert result.code == 0, result.stderr
    return case


def reports(case: Path) -> dict[str, str]:
    """Each report file as a reader sees it (escapes undone): a secret cannot hide in one."""
    return report_files(case)


def test_every_secret_row_is_in_the_report_and_the_timeline_keeps_the_secrets(
    masked_case: Path,
) -> None:
    """The control: each row is reported, and the raw evidence still holds every secret."""
    doc = json.loads((masked_case / "report/report.json").read_text())
    reported = {e["raw"]["case"] for f in doc["findings"] for e in f["events"]}
    alikes = {f"look-alike {name}" for name in LOOK_ALIKES}
    assert reported == {c[0] for c in IN_TEXT} | {c[0] for c in IN_KEYS} | alikes
    raw = "\n".join(r["raw"] for r in query(masked_case, "SELECT raw FROM timeline"))
    for _, _, secret in IN_TEXT + IN_KEYS:
        assert json.dumps(secret)[1:-1] in raw


@pytest.mark.parametrize(
    ("name", "secret"),
    [(c[0], c[2]) for c in IN_TEXT + IN_KEYS],
    ids=[c[0] for c in IN_TEXT + IN_KEYS],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_listed_secret_in_any_report_file(
    masked_case: Path, fmt: str, name: str, secret: str
) -> None:
    text = reports(masked_case)[fmt]
    assert secret not in text
    assert json.dumps(secret)[1:-1] not in text  # as a JSON string (a / is not escaped)


@pytest.mark.parametrize("name", sorted(LOOK_ALIKES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_look_alikes_are_in_every_report_file(masked_case: Path, fmt: str, name: str) -> None:
    text = reports(masked_case)[fmt]
    assert LOOK_ALIKES[name] in text


def test_markdown_shows_what_was_masked(masked_case: Path) -> None:
    md = reports(masked_case)["md"]
    assert "aws configure set aws_secret_access_key [masked]" in md
    assert "--password [masked] prod" in md
    assert "Authorization: Basic [masked]" in md


# -- generated secrets in generated attacker text ------------------------------------------

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
PASSWORD_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#%*+-.:@^_~"


def _with_digit_and_letter(value: str) -> str:
    return value[:-2] + "7q"


secret_keys = st.text(B64, min_size=40, max_size=40).map(_with_digit_and_letter)
sts_tokens = st.tuples(
    st.sampled_from(["AQoDYXdz", "FQoGZXIvYXdz", "FwoGZXIvYXdz", "IQoJb3JpZ2lu"]),
    st.text(B64, min_size=24, max_size=200),
).map("".join)
passwords = st.text(PASSWORD_CHARS, min_size=12, max_size=40).map(_with_digit_and_letter)
generic_tokens = st.text(B64, min_size=20, max_size=120).map(_with_digit_and_letter)

# (how the secret is written, which secrets it takes)
CONTEXTS = [
    ("aws configure set aws_secret_access_key {}", secret_keys),
    ("AWS_SECRET_ACCESS_KEY {}", secret_keys),
    ("AWS_SECRET_ACCESS_KEY={}", secret_keys),
    ("aws_session_token = {}", sts_tokens),
    (KEY_ID + " {}", secret_keys),
    (KEY_ID + ",{}", secret_keys),
    ("{}", sts_tokens),
    ("X-Amz-Security-Token: {}", generic_tokens),
    ("--password {}", passwords),
    ("--password={}", passwords),
    ("Authorization: Basic {}", generic_tokens),
    ("Authorization: Bearer {}", generic_tokens),
    ("password={}", passwords),
]


@st.composite
def secret_in_text(draw: st.DrawFn) -> tuple[str, str]:
    """Attacker text, a secret written one of the ways above, more attacker text."""
    form, secrets = draw(st.sampled_from(CONTEXTS))
    secret = draw(secrets)
    before = draw(hostile_text(max_size=80))
    after = draw(hostile_text(max_size=80))
    return f"{before}\n{form.format(secret)}\n{after}", secret


@settings(max_examples=60, deadline=None)
@given(secret_in_text())
def test_generated_secrets_in_attacker_text_are_masked(case: tuple[str, str]) -> None:
    text, secret = case
    masked = mask_document({"message": text, "raw": {"userAgent": text, text[:30]: text}})
    assert secret not in json.dumps(masked, ensure_ascii=False)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(secret_in_text(), min_size=1, max_size=4))
def test_generated_secrets_never_reach_a_report_file(
    tmp_path_factory: pytest.TempPathFactory, cases: list[tuple[str, str]]
) -> None:
    """Through `cloudir report`: the secrets sit in every string column and in raw."""
    rows = [
        timeline_row("aws:cloudtrail", f"2026-03-02T10:{n:02d}:00Z",
                     {"eventName": "Probe", "n": n, "userAgent": text, "requestParameters":
                      {"commandLine": text}}, user=text, src_ip=text, host=text,
                     action=text, target=text, outcome=text, message=text)
        for n, (text, _) in enumerate(cases)
    ]  # fmt: skip
    case = build_case(tmp_path_factory.mktemp("generated-secrets"), rows)
    result = run_report(case)
    assert result.exit_code == 0, result.output
    files = report_files(case)
    for _, secret in cases:
        for fmt, text in files.items():
            assert secret not in text, fmt
            assert json.dumps(secret)[1:-1] not in text, fmt
