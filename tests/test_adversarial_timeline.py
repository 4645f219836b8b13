"""The timeline played as an adversary: CloudTrail files an intruder or a broken shipper
could leave in a trail bucket, mixed with genuine ones, taken into a case with
`cloudir capture files` and read by `cloudir timeline`.

Generated: valid records beside truncated gzip, invalid JSON, JSON of the wrong shape,
empty files, records that are not objects, records missing fields, fields of the wrong
type, huge and deeply nested values, lone surrogates, and times from year 1 to 9999 (and
just outside). Invariants, every example:
- every input record is a timeline row or is named in errors.jsonl (its record number,
  or its whole file), never neither, and never two rows;
- no row comes from nowhere; summary.json agrees with the Parquet and with errors.jsonl;
- no traceback, `timeline` exits 0, `verify` exits 0 afterwards, the evidence is
  byte-for-byte what capture stored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.case_folder import timeline_files
from tests.conftest import cloudir, ct_event

TEST_ID = "cloudirTestId"  # a field of our own in every record object: the row's origin
IN_RANGE_TIMES = [
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "2024-07-31T09:05:00Z",
    "2024-07-31T09:05:00+14:00",
    "2024-07-31T09:05:00.123456",
]
ODD_TIMES: list[Any] = [
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "10000-01-01T00:00:00Z",
    "2024-13-45T99:99:99Z",
    "yesterday",
    "",
    None,
    0,
    1722416700,
    -62135596800,
    10**30,
    1.5e308,
    True,
    {"t": 1},
    ["2024-07-31T09:05:00Z"],
]
ODD_VALUES: list[Any] = [
    None,
    "",
    "x" * 20_000,
    "\u202e\u0000\ud800 <script>",
    -(2**63),
    2**64,
    1e-320,
    [],
    {},
    {"a": {"b": {"c": {"d": {"e": {"f": [1, [2, [3, [4]]]]}}}}}},
    [None, "", 0, {"": ""}],
]


@dataclass
class Plan:
    """One generated file: its bytes, and what each record should become."""

    name: str
    data: bytes
    records: list[Any] = field(default_factory=list)  # as written, in file order
    broken: bool = False  # the file as a whole cannot be read


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"n": value}
    return value


@st.composite
def records(draw: st.DrawFn, counter: list[int]) -> Any:
    """A record object, often hostile, or not an object at all."""
    shape = draw(st.sampled_from(["valid", "valid", "odd_time", "missing", "odd_fields", "not"]))
    if shape == "not":
        return draw(st.sampled_from([5, "Records", None, [1, 2], True, 1.5]))
    counter[0] += 1
    event = ct_event("2024-07-31T09:05:00Z")
    event[TEST_ID] = counter[0]
    if shape == "valid":
        event["eventTime"] = draw(st.sampled_from(IN_RANGE_TIMES))
    elif shape == "odd_time":
        event["eventTime"] = draw(st.sampled_from(ODD_TIMES))
    elif shape == "missing":
        for name in draw(
            st.lists(st.sampled_from(sorted(event)), min_size=1, max_size=6, unique=True)
        ):
            if name != TEST_ID:
                event.pop(name, None)
    else:
        for name in draw(
            st.lists(
                st.sampled_from(
                    ["eventName", "eventSource", "sourceIPAddress", "userIdentity",
                     "requestParameters", "resources", "errorCode", "eventID",
                     "responseElements", "userAgent"]
                ),
                min_size=1,
                max_size=4,
                unique=True,
            )
        ):  # fmt: skip
            event[name] = draw(st.sampled_from([*ODD_VALUES, _nested(60)]))
        event["eventTime"] = draw(st.sampled_from(IN_RANGE_TIMES))
    if isinstance(event.get("eventID"), str):
        event["eventID"] = f"adv-{counter[0]}"  # unique: no copies to de-duplicate
    return event


@st.composite
def plans(draw: st.DrawFn) -> list[Plan]:
    counter = [0]
    out: list[Plan] = []
    for n in range(draw(st.integers(min_value=1, max_value=7))):
        body = draw(st.lists(records(counter), min_size=0, max_size=6))
        text = json.dumps({"Records": body}).encode()
        kind = draw(
            st.sampled_from(
                ["json", "gzip", "gzip", "truncated", "invalid", "shape", "empty", "lines"]
            )
        )
        if kind == "json":
            out.append(Plan(f"f{n}.json", text, body))
        elif kind == "gzip":
            out.append(Plan(f"f{n}.json.gz", gzip.compress(text), body))
        elif kind == "truncated":
            whole = gzip.compress(text)
            cut = draw(st.integers(min_value=1, max_value=max(1, len(whole) - 9)))
            out.append(Plan(f"f{n}.json.gz", whole[:cut], body, broken=True))
        elif kind == "invalid":
            cut = draw(st.integers(min_value=1, max_value=max(1, len(text) - 1)))
            out.append(Plan(f"f{n}.json", text[:cut] + b"\x00}", body, broken=True))
        elif kind == "shape":
            data = draw(st.sampled_from([b'{"Records": 5}', b"42", b'"x"', b'{"Records": {}}']))
            out.append(Plan(f"f{n}.json", data, [], broken=True))
        elif kind == "empty":
            out.append(Plan(f"f{n}.json", draw(st.sampled_from([b"", b"\n\n", b"   "])), []))
            out[-1].broken = True
        else:  # JSON lines, one record a line, a broken line among them
            body = [r for r in body if not isinstance(r, list)]  # a list line is many
            lines = [json.dumps(r).encode() for r in body]
            if lines and draw(st.booleans()):
                lines[0] = lines[0][: len(lines[0]) // 2]
                body = [None, *body[1:]]  # that record can only be a logged line
            out.append(Plan(f"f{n}.jsonl", b"\n".join(lines) + b"\n", body))
            out[-1].broken = not lines
    return out


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(case: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    found = []
    for part in sorted(timeline_files(case / "timeline")):
        found += pq.read_table(part, columns=["raw", "evidence_id", "timestamp"]).to_pylist()
    return found


def _check(plan: list[Plan], work: Path, cli: bool) -> None:
    """`cli`: every stage as a child process (`cloudir ...`), as a responder runs it;
    otherwise the same functions those commands call, in this process (fast enough for
    Hypothesis on a 2-core CI)."""
    src = work / "src"
    src.mkdir()
    for item in plan:
        (src / item.name).write_bytes(item.data)
    case = work / "case"
    if cli:
        captured = cloudir("capture", "files", "--case", str(case), str(src))
        assert captured.code == 0 and "Traceback" not in captured.stderr, captured.stderr
    else:
        from cloudir.analyze.parsers import recognise_kind
        from cloudir.capture.files import capture_paths
        from cloudir.case import Case

        capture_paths(Case.create(case), [src], "auto", lambda _: None, recognise=recognise_kind)
    evidence = _hashes(case / "evidence")

    if cli:
        built = cloudir("timeline", "--case", str(case), "--json")
        assert built.code == 0, built.stderr
        assert "Traceback" not in built.stderr + built.stdout
        reported_rows = built.json()["rows"]
    else:
        from cloudir.analyze.timeline import build_timeline
        from cloudir.case import Case

        reported_rows = build_timeline(Case.open(case), workers=1).rows

    rows = _rows(case)
    errors = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    summary = json.loads((case / "timeline/summary.json").read_text())
    assert summary["rows"] == len(rows) == reported_rows
    assert summary["errors"] == len(errors)
    assert summary["evidence_problems"] == []

    parsed = [e for e in errors if "no parser" in e.get("reason", "")]
    assert parsed == [], "the generated files were not read as CloudTrail"
    origins = [json.loads(r["raw"]).get(TEST_ID) for r in rows]
    assert len(origins) == len(set(origins)), "a record became two rows"
    by_name = {item.name: item for item in plan}
    whole_file = {Path(e["path"]).name for e in errors if "record" not in e and "line" not in e}
    # a record is named by its number in file order; a JSON line that cannot be read
    # at all by its line (one record a line here, so the same number)
    named = {(Path(e["path"]).name, e["record"]) for e in errors if "record" in e}
    named |= {(Path(e["path"]).name, e["line"]) for e in errors if "line" in e}
    generated = {
        r[TEST_ID]: item.name for item in plan for r in item.records if isinstance(r, dict)
    }
    assert set(origins) <= set(generated), "a row that no input record explains"
    for item in plan:
        if item.broken:
            assert item.name in whole_file, f"{item.name}: broken, yet not named"
            continue
        for number, record in enumerate(item.records, 1):
            if isinstance(record, dict) and record[TEST_ID] in origins:
                continue
            assert (item.name, number) in named or item.name in whole_file, (
                f"{item.name} record {number} is neither a row nor an error: {record!r:.200}"
            )
    # every row's time is one every later stage can hold
    assert all(r["timestamp"] is not None for r in rows)
    assert by_name  # at least one file was generated

    if cli:
        verified = cloudir("verify", "--case", str(case))
        assert verified.code == 0, verified.stdout + verified.stderr
    else:
        from cloudir.case import Case

        assert Case.open(case).verify().ok
    assert _hashes(case / "evidence") == evidence


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_every_record_is_a_row_or_a_named_error(plan: list[Plan]) -> None:
    with tempfile.TemporaryDirectory(prefix="cloudir-adv-timeline-") as tmp:
        _check(plan, Path(tmp), cli=False)


def test_a_hostile_mix_through_the_command_line(tmp_path: Path) -> None:
    """One fixed mix of every kind of bad file, every stage run as `cloudir ...`."""
    good = [dict(ct_event(t), **{TEST_ID: n}) for n, t in enumerate(IN_RANGE_TIMES, 1)]
    odd = [dict(ct_event("2024-07-31T09:05:00Z"), eventTime=t, **{TEST_ID: 100 + n})
           for n, t in enumerate(ODD_TIMES)]  # fmt: skip
    text = json.dumps({"Records": [*good, 5, None, *odd]}).encode()
    whole = gzip.compress(text)
    plan = [
        Plan("good.json.gz", whole, [*good, 5, None, *odd]),
        Plan("cut.json.gz", whole[: len(whole) // 2], [*good], broken=True),
        Plan("invalid.json", text[:-7], [*good], broken=True),
        Plan("shape.json", b'{"Records": 5}', [], broken=True),
        Plan("empty.json", b"", [], broken=True),
    ]
    _check(plan, tmp_path, cli=True)


def test_a_record_at_each_end_of_time_reaches_export(tmp_path: Path) -> None:
    """Years 1 and 9999 are rows; timeline export writes both, in order."""
    src = tmp_path / "src"
    src.mkdir()
    events = [ct_event("9999-12-31T23:59:59Z"), ct_event("0001-01-01T00:00:00Z")]
    (src / "ends.json").write_text(json.dumps({"Records": events}))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(src)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    out = tmp_path / "out.jsonl"
    result = cloudir("timeline", "export", "--case", str(case), "--out", str(out))
    assert result.code == 0, result.stderr
    times = sorted(json.loads(line)["datetime"] for line in out.read_text().splitlines())
    assert times[0].startswith("0001-01-01T00:00:00") and times[1].startswith("9999-12-31")


def test_a_lone_surrogate_and_nul_in_a_record_do_not_stop_the_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = ct_event("2024-07-31T09:05:00Z")
    odd = ct_event("2024-07-31T09:06:00Z", eventName="\ud800\u0000")
    (src / "t.json").write_text(json.dumps({"Records": [odd, good]}))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(src)).code == 0
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0, result.stderr
    ids = {json.loads(r["raw"])["eventID"] for r in _rows(case)}
    errors = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    # msgspec refuses a lone surrogate escape anywhere in a document, so today the file
    # is one named error (a known limit: its other records are lost with it), or read
    assert good["eventID"] in ids or any(
        e["path"].endswith("t.json") and "surrogate" in e["reason"] for e in errors
    )
    assert odd["eventID"] in ids or errors


CORPUS_TRAILS = sorted(
    p
    for p in (Path(__file__).parent / "data" / "corpus" / "cloudtrail").rglob("*")
    if p.is_file() and p.name.endswith((".json", ".jsonl")) and p.stat().st_size < 200_000
)
SPLICES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f", b"\x00", b"\\ud800", b"\n", b'"',
           b"{", b"]", b"\\", b",", b"1e999", b"null"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(SPLICES), st.integers(0, 20)),
        min_size=1,
        max_size=4,
    ),
)
def test_spliced_bytes_never_escape_the_parser(
    which: int, edits: list[tuple[int, bytes, int]]
) -> None:
    """A real trail file with bytes put in or cut out (bytes that are not UTF-8, NUL,
    escapes, JSON punctuation) just inside a string, where they reach the most code: the
    parser gives rows and logged errors, and never raises, which would cost every record
    of the file (`parser cloudtrail failed`)."""
    from cloudir.analyze.parsers import ErrorLog
    from cloudir.analyze.parsers import cloudtrail as ct

    data = bytearray(CORPUS_TRAILS[which % len(CORPUS_TRAILS)].read_bytes())
    for quote, splice, cut in edits:
        quotes = [at for at, byte in enumerate(data) if byte == ord('"')] or [0]
        at = quotes[quote % len(quotes)] + 1
        if cut:
            del data[at : at + cut]
        else:
            data[at:at] = splice
    errors = ErrorLog("ev-spliced", "spliced.json")
    batches = list(ct.parse_bytes(bytes(data), "ev-spliced", errors))
    assert all(isinstance(raw, str) for b in batches for raw in b.column("raw").to_pylist())
    assert all(entry["reason"] for entry in errors.entries)
