"""S3 server access logs and ELB access logs on the timeline: rows, recognition, bad lines.

The AWS documentation's own examples (tests/data/access-logs, see SOURCE) pin the real
format; lines written from fields (tests/access_log_lines.py) pin each field's mapping;
Hypothesis throws arbitrary line shapes at both parsers: nothing but valid rows and error
log entries may come out, one or the other for every line.
"""

from __future__ import annotations

import gzip
import json
import string
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze import parsers as registry
from cloudir.analyze.parsers import ErrorLog, alb_access, recognise_kind, s3_access
from tests.access_log_lines import alb_line, s3_line, write_log

DATA = Path(__file__).parent / "data" / "access-logs"
S3_DOC = DATA / "2019-02-06-00-00-38-5A2E3F1B7C9D0E4F"
ALB_DOC = DATA / (
    "123456789012_elasticloadbalancing_us-east-2_app.my-loadbalancer.50dc6c495c0c9188"
    "_20180702T2225Z_192.0.2.1_2kd8fz9x.log.gz"
)
CLASSIC_DOC = DATA / (
    "123456789012_elasticloadbalancing_us-west-2_my-loadbalancer_20140215T2340Z"
    "_172.160.001.192_20sg8hgm.log"
)


def read(parser: Any, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    errors = ErrorLog("ev-1", str(path))
    batches = list(parser.parse(path, "ev-1", errors))
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    return rows, errors.entries


# -- S3 server access logs -------------------------------------------------------------------
def test_the_documentation_example_is_two_rows_with_every_field_named() -> None:
    rows, errors = read(s3_access, S3_DOC)
    assert errors == []
    first, second = rows
    assert first["timestamp"].isoformat() == "2019-02-06T00:00:38+00:00"
    assert (first["source"], first["artifact"]) == ("s3", "aws:s3_access")
    assert first["user"] == "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    assert (first["src_ip"], first["action"]) == ("192.0.2.3", "s3:REST.GET.VERSIONING")
    assert (first["target"], first["outcome"]) == ("s3://amzn-s3-demo-bucket1", "success")
    raw = json.loads(first["raw"])
    assert list(raw) == list(s3_access.FIELDS)
    assert raw["request_uri"] == "GET /amzn-s3-demo-bucket1?versioning HTTP/1.1"
    assert raw["access_point_arn"] == "arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP"
    assert (raw["acl_required"], json.loads(second["raw"])["acl_required"]) == ("Yes", "-")
    assert second["action"] == "s3:REST.GET.LOGGING_STATUS"
    assert first["event_id"] != second["event_id"]


def test_a_key_is_decoded_in_target_and_kept_encoded_in_raw(tmp_path: Path) -> None:
    line = s3_line(key="reports/q1%202026%2Fdraft.pdf", requester="-", remote_ip="203.0.113.9")
    rows, errors = read(s3_access, write_log(tmp_path / "log", [line]))
    assert errors == []
    [row] = rows
    assert row["target"] == "s3://amzn-s3-demo-bucket1/reports/q1 2026/draft.pdf"
    assert json.loads(row["raw"])["key"] == "reports/q1%202026%2Fdraft.pdf"
    assert (row["user"], row["src_ip"]) == ("-", "203.0.113.9")
    assert row["message"].startswith("anonymous REST.GET.OBJECT s3://amzn-s3-demo-bucket1/")


def test_a_refused_request_has_status_and_error_code_as_outcome(tmp_path: Path) -> None:
    line = s3_line(http_status="403", error_code="AccessDenied", bytes_sent="243")
    [row], errors = read(s3_access, write_log(tmp_path / "log", [line]))
    assert (row["outcome"], errors) == ("403 AccessDenied", [])
    assert row["message"].endswith(": 403 AccessDenied")


def test_older_and_newer_lines_keep_the_fields_they_have(tmp_path: Path) -> None:
    oldest = s3_line(fields=17)  # ends with the user agent
    older = s3_line(fields=18)  # and the version id
    newer = s3_line() + ' us-east-1 "a later field"'
    rows, errors = read(s3_access, write_log(tmp_path / "log", [oldest, older, newer]))
    assert errors == []
    raws = [json.loads(r["raw"]) for r in rows]
    assert [len(r) for r in raws] == [17, 18, 27]
    assert list(raws[0])[-1] == "user_agent"
    assert raws[2]["extra_fields"] == ["us-east-1", "a later field"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (s3_line(fields=16), "16 fields, an S3 access log line has at least 17"),
        (s3_line().replace("[05/Jan/2026", "[05/Jax/2026"), "unreadable time"),
        (s3_line().replace("[05/Jan/2026:10:00:00 +0000]", "[05/Jan/2026:10:00:00"), "unclosed ["),
        (s3_line(user_agent='curl/8 "evil'), "unbalanced quote in field 17"),
        (s3_line().replace('"-" "aws', '"-"x "aws'), "unbalanced quote in field 16"),
        (s3_line().replace(" 200 - ", " 200  - "), "empty field 11 (two spaces in a row)"),
        (s3_line().replace('"-"', '"-', 1), "unbalanced quote in field 16"),
        (s3_line(operation="GET"), "operation 'GET' is not S3's"),
    ],
)
def test_a_bad_line_is_one_error_and_the_others_are_read(
    tmp_path: Path, line: str, reason: str
) -> None:
    lines = [s3_line(request_id="A1"), line, s3_line(request_id="A3")]
    rows, errors = read(s3_access, write_log(tmp_path / "log", lines))
    assert [json.loads(r["raw"])["request_id"] for r in rows] == ["A1", "A3"]
    [error] = errors
    assert error["line"] == 2 and reason in error["reason"], error


def test_a_day_that_does_not_exist_is_an_error_not_a_row(tmp_path: Path) -> None:
    line = s3_line().replace("[05/Jan/2026", "[31/Feb/2026")
    rows, errors = read(s3_access, write_log(tmp_path / "log", [s3_line(), line]))
    assert len(rows) == 1
    assert len(errors) == 1 and "unreadable time" in errors[0]["reason"]


def test_attacker_text_stays_data(tmp_path: Path) -> None:
    agent = "x\x1b[2J\u202eevil'); DROP TABLE timeline; --"
    key = "%1B%5B31m%27%3B--"
    line = s3_line(user_agent=agent, key=key, referer="javascript:alert(1)")
    [row], errors = read(s3_access, write_log(tmp_path / "log", [line]))
    assert errors == []
    raw = json.loads(row["raw"])
    assert (raw["user_agent"], raw["key"], raw["referer"]) == (agent, key, "javascript:alert(1)")
    assert row["target"] == "s3://amzn-s3-demo-bucket1/\x1b[31m';--"  # decoded, as data
    assert "\x1b" not in row["message"] and "\\x1b" in row["message"]


# -- ALB and Classic ELB access logs ------------------------------------------------------------
def test_the_alb_examples_are_rows_with_the_request_split() -> None:
    rows, errors = read(alb_access, ALB_DOC)
    assert errors == []
    assert [r["action"] for r in rows] == ["GET", "GET", "GET"]
    first = rows[0]
    assert first["timestamp"].isoformat() == "2018-07-02T22:23:00.186641+00:00"
    assert (first["source"], first["artifact"]) == ("elb", "aws:alb_access")
    assert (first["src_ip"], first["target"]) == ("192.168.131.39", "http://www.example.com:80/")
    assert (first["outcome"], first["user"]) == ("success", None)
    raw = json.loads(first["raw"])
    assert (raw["client_ip"], raw["client_port"]) == ("192.168.131.39", "2817")
    assert (raw["target_ip"], raw["target_port"]) == ("10.0.0.1", "80")
    assert raw["conn_trace_id"] == "TID_1234abcd5678ef90"
    assert (raw["c-ip"], raw["cs-method"], raw["sc-status"]) == ("192.168.131.39", "GET", "200")
    assert (raw["cs-host"], raw["cs-uri-stem"], raw["cs-user-agent"]) == (
        "www.example.com", "/", "curl/7.46.0",
    )  # fmt: skip
    assert json.loads(rows[2]["raw"])["redirect_url"] == "https://example.com:80/"


def test_classic_elb_lines_are_read_tcp_ones_without_method_or_status() -> None:
    rows, errors = read(alb_access, CLASSIC_DOC)
    assert errors == []
    assert [r["action"] for r in rows] == ["GET", "GET", None]
    assert [r["outcome"] for r in rows] == ["success", "success", None]
    raw = json.loads(rows[0]["raw"])
    assert (raw["backend_ip"], raw["backend_status_code"]) == ("10.0.0.1", "200")
    assert "type" not in raw and raw["elb"] == "my-loadbalancer"


def test_a_query_string_attack_reads_under_sigma_names(tmp_path: Path) -> None:
    url = "https://shop.example.com:443/download.php?file=../../../../etc/passwd"
    line = alb_line(request=f"GET {url} HTTP/1.1", elb_status_code="404")
    [row], errors = read(alb_access, write_log(tmp_path / "a.log.gz", [line], gz=True))
    raw = json.loads(row["raw"])
    assert raw["cs-uri-query"] == "/download.php?file=../../../../etc/passwd"
    assert (raw["cs-uri-stem"], raw["c-uri-extension"]) == ("/download.php", "php")
    assert (row["target"], row["outcome"], errors) == (url, "404", [])


def test_fewer_and_more_fields_are_read_an_unknown_shape_is_an_error(tmp_path: Path) -> None:
    full = alb_line(user_agent="curl/8.5.0")
    short = " ".join(full.split(" ")[:16])  # ends with the user agent
    assert short.endswith('"curl/8.5.0"')
    longer = full + ' "transformed.example.com" "/x" "-"'
    nlb = "tls 2.0 2026-01-05T10:00:00 net/nlb/1 g3d4b5e8bb8464cd 198.51.100.7:1 10.0.0.1:2"
    lines = [full, short, longer, nlb, alb_line(time="2026-01-05T10:00:00Z").replace("Z ", " ", 1)]
    rows, errors = read(alb_access, write_log(tmp_path / "a.log", lines))
    assert len(rows) == 3
    assert json.loads(rows[2]["raw"])["extra_fields"] == ["transformed.example.com", "/x", "-"]
    assert [e["line"] for e in errors] == [4, 5]
    assert "unreadable time '2.0'" in errors[0]["reason"]


def test_a_truncated_gzip_keeps_the_lines_before_it(tmp_path: Path) -> None:
    data = gzip.compress("".join(alb_line() + "\n" for _ in range(500)).encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    rows, errors = read(alb_access, path)
    assert 0 < len(rows) < 500
    [error] = errors
    assert error["reason"].startswith("truncated or corrupt gzip after line")


def test_rows_come_in_batches_of_at_most_batch_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "BATCH_ROWS", 7)
    path = write_log(tmp_path / "log", [s3_line(request_id=f"R{n}") for n in range(30)])
    errors = ErrorLog()
    sizes = [b.num_rows for b in s3_access.parse(path, "ev", errors)]
    assert sizes == [7, 7, 7, 7, 2] and errors.entries == []


def test_an_over_long_line_is_reported_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudir.analyze.parsers import _access_log

    monkeypatch.setattr(_access_log, "MAX_LINE_BYTES", 2000)
    line = s3_line(user_agent="A" * 5000)
    rows, errors = read(s3_access, write_log(tmp_path / "log", [line, s3_line()]))
    assert len(rows) == 1
    assert [(e["line"], e["reason"]) for e in errors] == [(1, "line over 2000 bytes; not read")]


def test_bytes_that_are_not_utf8_are_kept_visibly(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(s3_line(user_agent="agent-\udcff").encode("utf-8", "surrogateescape"))
    [row], errors = read(s3_access, path)
    assert json.loads(row["raw"])["user_agent"] == "agent-\\xff"
    assert [e["reason"] for e in errors] == ["not valid UTF-8; bytes kept as \\xNN text"]


# -- recognition --------------------------------------------------------------------------------
def test_aws_delivery_names_and_content_are_recognised(tmp_path: Path) -> None:
    assert recognise_kind([S3_DOC]) == "s3-access"
    assert recognise_kind([ALB_DOC]) == "alb-access"
    assert recognise_kind([CLASSIC_DOC]) == "alb-access"
    copy = tmp_path / "access.log"
    copy.write_bytes(S3_DOC.read_bytes())
    assert s3_access.recognise([copy]) == registry.BY_CONTENT
    assert recognise_kind([copy]) == "s3-access"
    web = write_log(tmp_path / "web.gz", [alb_line()], gz=True)
    assert alb_access.recognise([web]) == registry.BY_CONTENT
    empty = tmp_path / "2026-01-05-10-15-42-1A2B3C4D5E6F7A8B"
    empty.write_bytes(b"")
    assert s3_access.recognise([empty]) == registry.BY_NAME
    other = write_log(tmp_path / "notes.log", ["GET / HTTP/1.1 200", "hello"])
    assert (s3_access.recognise([other]), alb_access.recognise([other])) == (0, 0)
    assert recognise_kind([other]) == "files"


def test_one_format_is_never_taken_for_the_other(tmp_path: Path) -> None:
    s3_file = write_log(tmp_path / "s3.log", [s3_line()])
    alb_file = write_log(tmp_path / "alb.log", [alb_line()])
    assert (s3_access.recognise([alb_file]), alb_access.recognise([s3_file])) == (0, 0)


# -- any line shape -----------------------------------------------------------------------------
NOT_TIME = tuple(name for name in s3_access.FIELDS if name != "time")
_TEXT = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + ' "[]\\/:-.%\t\x1b\u202e'),
    max_size=40,
)


@st.composite
def mutated_lines(draw: st.DrawFn, make: Any, names: tuple[str, ...]) -> str:
    """A valid line with some fields replaced by arbitrary text, or cut anywhere."""
    changes = {name: draw(_TEXT) for name in draw(st.sets(st.sampled_from(names), max_size=4))}
    line = str(make(**changes))
    if draw(st.booleans()):
        line = line[: draw(st.integers(0, len(line)))]
    return line.replace("\n", " ").replace("\r", " ")


def check_every_line_is_a_row_or_an_error(parser: Any, path: Path, lines: list[str]) -> None:
    rows, errors = read(parser, path)
    kept = [line for line in lines if line.strip()]
    line_errors = {e["line"] for e in errors if e.get("line") is not None}
    timeless = [e for e in errors if e.get("line") is None]  # unreadable days, by record
    assert len(rows) + len(line_errors) + len(timeless) == len(kept)
    for row in rows:
        assert row["timestamp"] is not None and row["event_id"]
        json.loads(row["raw"])
        assert "\x1b" not in row["message"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(mutated_lines(s3_line, NOT_TIME), min_size=1, max_size=8))
def test_any_s3_line_shape_is_a_row_or_an_error(tmp_path: Path, lines: list[str]) -> None:
    path = write_log(tmp_path / "2026-01-05-10-15-42-1A2B3C4D5E6F7A8B", lines)
    check_every_line_is_a_row_or_an_error(s3_access, path, lines)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(mutated_lines(alb_line, alb_access.ALB_FIELDS[2:]), min_size=1, max_size=8))
def test_any_alb_line_shape_is_a_row_or_an_error(tmp_path: Path, lines: list[str]) -> None:
    path = write_log(tmp_path / "alb.log.gz", lines, gz=True)
    check_every_line_is_a_row_or_an_error(alb_access, path, lines)


_WORD = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + '/:-."[]'), max_size=12
)
_FIELD_TEXT = st.one_of(
    _WORD,
    _TEXT.map(lambda t: f'"{t}"'),
    _TEXT.map(lambda t: f"[{t}]"),
    st.sampled_from(["-", "[05/Jan/2026:10:00:00 +0000]", "2026-01-05T10:00:00.000000Z", "https"]),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_FIELD_TEXT, max_size=34).map(" ".join), min_size=1, max_size=6))
def test_random_field_lists_are_rows_or_errors_for_both(tmp_path: Path, lines: list[str]) -> None:
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    path = write_log(tmp_path / "random.log", lines)
    check_every_line_is_a_row_or_an_error(s3_access, path, lines)
    check_every_line_is_a_row_or_an_error(alb_access, path, lines)


def test_a_stray_file_beside_the_logs_does_not_change_the_kind(tmp_path: Path) -> None:
    log = tmp_path / S3_DOC.name
    log.write_bytes(S3_DOC.read_bytes())
    stray = tmp_path / ".DS_Store"
    stray.write_bytes(b"\x00\x00\x00\x01Bud1")
    assert recognise_kind([stray, log]) == "s3-access"
    alb = tmp_path / ALB_DOC.name
    alb.write_bytes(ALB_DOC.read_bytes())
    assert recognise_kind([stray, alb]) == "alb-access"
