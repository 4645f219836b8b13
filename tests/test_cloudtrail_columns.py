"""CloudTrail's column-at-a-time path gives what the row-at-a-time path gives.

Delivery files whose records all have CloudTrail's own field types are parsed a column
at a time (`block_batches`); every other record goes through `to_row`. These tests hold
the two to one another on the corpus and on generated records of every odd shape: the
same rows, values and error entries, so the faster path can never change a timeline.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.duck import sql_str
from cloudir.analyze.parsers import BatchBuilder, ErrorLog
from cloudir.analyze.parsers import cloudtrail as ct
from cloudir.analyze.schema import PROMOTED_FIELDS, TIMELINE_SCHEMA, promoted_column
from cloudir.analyze.sigma.fields import json_path

CORPUS = Path(__file__).parent / "data" / "corpus" / "cloudtrail"
EVIDENCE = "ev-columns"


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(batches, schema=TIMELINE_SCHEMA)


def _parse(opener: Callable[[], Any]) -> tuple[pa.Table, list[dict[str, Any]], int]:
    """The parser as it runs, and how many records went the column-at-a-time way."""
    errors = ErrorLog(EVIDENCE, "file")
    blocks = sum(
        len(entry.raws) for entry in ct._records(opener, ErrorLog(EVIDENCE, "file"))
        if isinstance(entry, ct.Block)
    )  # fmt: skip
    batches = list(ct._parse_opened(opener, EVIDENCE, errors))
    return _table(batches), errors.entries, blocks


def _row_at_a_time(opener: Callable[[], Any]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The same file with every record through `unwrap` and `to_row`, as a file whose
    records have odd types is read."""
    errors = ErrorLog(EVIDENCE, "file")
    builder = BatchBuilder(errors, ct.promoted_from_raw)
    for entry in ct._records(opener, errors):
        if isinstance(entry, ct.Block):
            numbered = [
                (entry.first + offset, *ct.unwrap(item)) for offset, item in enumerate(entry.raws)
            ]
        else:
            numbered = [entry]
        for number, raw, view in numbered:
            row = ct.to_row(raw, view, EVIDENCE, number, errors)
            if row is not None:
                builder.add(number, row)
    batch = builder.flush()
    return _table([batch] if batch is not None else []), errors.entries


def _assert_same(opener: Callable[[], Any]) -> int:
    table, entries, blocks = _parse(opener)
    reference, reference_entries = _row_at_a_time(opener)
    assert table.to_pylist() == reference.to_pylist()
    assert entries == reference_entries
    _assert_promoted_as_duckdb_reads_raw(table)
    return blocks


def _assert_promoted_as_duckdb_reads_raw(table: pa.Table) -> None:
    """Each promoted column holds what DuckDB reads at its path in `raw` (the value the
    rules compared before the columns), on every row that has them; and a row has them
    exactly when its record has CloudTrail's own types."""
    reads = ", ".join(
        f"json_extract_string(raw, {sql_str(json_path(tuple(p.split('.'))))})"
        for p in PROMOTED_FIELDS
    )
    columns = ", ".join(f'"{promoted_column(p)}"' for p in PROMOTED_FIELDS)
    con = duckdb.connect()
    con.register("t", table)
    rows = con.execute(f"SELECT raw, promoted_from, [{columns}], [{reads}] FROM t").fetchall()
    for raw, promoted_from, promoted, read in rows:
        try:
            msgspec.json.decode(raw, type=ct.TypedView)
            typed = True
        except msgspec.ValidationError:
            typed = False
        assert promoted_from == ("aws:cloudtrail" if typed else None), raw
        assert promoted == (read if typed else [None] * len(PROMOTED_FIELDS)), raw


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and ct.accepts(p) and
                  p.name.endswith((".json", ".json.gz", ".jsonl")))  # fmt: skip


def test_corpus_files_read_the_same_both_ways() -> None:
    files = _corpus_files()
    assert len(files) >= 5
    by_columns = 0
    for path in files:
        by_columns += _assert_same(lambda path=path: ct.open_evidence(path))
    # the corpus' delivery files do take the column path, so the comparison means something
    assert by_columns >= 100


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ODD = st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.lists(TEXT, max_size=2),
                st.dictionaries(TEXT, TEXT, max_size=2))  # fmt: skip
VALUE = st.one_of(TEXT, st.just(""), st.none())


@st.composite
def records(draw: st.DrawFn, odd: bool) -> dict[str, Any]:
    """A CloudTrail-like record; with `odd`, any field may hold another type."""
    value = st.one_of(VALUE, ODD) if odd else VALUE
    record: dict[str, Any] = {
        "eventTime": draw(
            st.sampled_from(
                [
                    "2024-05-01T10:00:00Z",
                    "2024-05-01T10:00:01.5Z",
                    "not a time",
                    "0000-01-01T00:00:00Z",
                ]
            )
        )
    }
    for name in ("eventSource", "eventName", "eventID", "sourceIPAddress", "errorCode",
                 "errorMessage"):  # fmt: skip
        if draw(st.booleans()):
            record[name] = draw(value)
    if draw(st.booleans()):
        record["eventName"] = "ConsoleLogin"
        record["responseElements"] = {"ConsoleLogin": draw(st.sampled_from(["Failure", "Success"]))}
    for name in ("userAgent", "recipientAccountId", "awsRegion", "eventType", "vpcEndpointId"):
        if draw(st.booleans()):
            record[name] = draw(value)
    for name in ("readOnly", "sessionCredentialFromConsole"):
        if draw(st.booleans()):
            record[name] = draw(st.one_of(st.booleans(), value))
    if draw(st.booleans()):
        identity_keys = ["arn", "userName", "principalId", "invokedBy", "type", "accountId",
                         "accessKeyId"]  # fmt: skip
        record["userIdentity"] = {
            key: draw(st.one_of(value, st.sampled_from(["AROA:i-0abc123", "i-", "AIDA:bob"])))
            for key in draw(st.sets(st.sampled_from(identity_keys)))
        }
        if draw(st.booleans()):
            mfa = draw(st.one_of(st.booleans(), value))
            issuer = {
                key: draw(value)
                for key in draw(st.sets(st.sampled_from(["type", "arn", "userName"])))
            }
            context = (
                {"attributes": {"mfaAuthenticated": mfa}, "sessionIssuer": issuer}
                if draw(st.booleans())
                else mfa
            )
            record["userIdentity"]["sessionContext"] = context
    if draw(st.booleans()):
        record["resources"] = draw(
            st.lists(st.fixed_dictionaries({}, optional={"ARN": value, "type": TEXT}), max_size=3)
        )
    if draw(st.booleans()):
        params = draw(st.dictionaries(st.sampled_from((*ct.TARGET_PARAMETERS[:4], "other", "x")),
                                      value, max_size=3))  # fmt: skip
        if draw(st.booleans()):
            params["instancesSet"] = {"items": [{"instanceId": draw(TEXT)}]}
        record["requestParameters"] = params if not odd or draw(st.booleans()) else draw(ODD)
    return record


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(records(odd=False), records(odd=True)), min_size=1, max_size=6),
    st.sampled_from(["records", "list", "gzip"]),
)
def test_generated_records_read_the_same_both_ways(
    tmp_path_factory: pytest.TempPathFactory, batch: list[dict[str, Any]], shape: str
) -> None:
    document = json.dumps(batch if shape == "list" else {"Records": batch}).encode()
    path = tmp_path_factory.mktemp("ct") / "file.json.gz"
    path.write_bytes(gzip.compress(document) if shape == "gzip" else document)
    _assert_same(lambda: ct.open_evidence(path))


def test_records_with_cloudtrail_types_take_the_column_path(tmp_path: Path) -> None:
    record = {
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateAccessKey",
        "userIdentity": {"arn": "arn:aws:iam::111122223333:user/alice"},
        "requestParameters": {"userName": "bob"},
    }
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"Records": [record, record | {"eventID": "e2"}]}))
    table, entries, blocks = _parse(lambda: ct.open_evidence(path))
    assert blocks == 2 and entries == []
    rows = table.to_pylist()
    assert [r["target"] for r in rows] == ["bob", "bob"]
    assert rows[0]["message"] == "user/alice called iam:CreateAccessKey on bob"
    assert rows[1]["event_id"] == "e2"
    assert rows[0]["raw"] == json.dumps(record)
    # one record whose errorCode is a number sends the whole file the row-at-a-time way
    path.write_text(json.dumps({"Records": [record, record | {"errorCode": 5}]}))
    table, entries, blocks = _parse(lambda: ct.open_evidence(path))
    assert blocks == 0 and table.column("outcome").to_pylist() == ["success", "5"]


@pytest.mark.parametrize(
    "field", ["userAgent", "eventName", "errorMessage", "arn", "requestParameters", "other"]
)
@pytest.mark.parametrize("shape", ["records", "lines"])
def test_bytes_that_are_not_utf8_read_the_same_both_ways(
    tmp_path: Path, field: str, shape: str
) -> None:
    """Invalid UTF-8 in any field, a delivery file or JSON lines: no record lost, the same
    rows both ways, and promoted values as the stored (\\xNN) `raw` reads."""
    record: dict[str, Any] = {
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListUsers",
        "userAgent": "aws-cli/2",
        "errorMessage": "denied",
        "userIdentity": {"arn": "arn:aws:iam::111122223333:user/alice", "type": "IAMUser"},
    }
    marked = json.loads(json.dumps(record))
    if field == "arn":
        marked["userIdentity"]["arn"] = "MARK"
    elif field == "requestParameters":  # a field the typed view keeps as raw JSON
        marked[field] = {"roleName": "MARK"}
    elif field == "other":  # a field no view reads
        marked["additionalEventData"] = {"note": "MARK"}
    else:
        marked[field] = "MARK"
    bad = json.dumps(marked).encode().replace(b"MARK", b"x-\xff-y")
    good = json.dumps(record).encode()
    if shape == "records":
        document = b'{"Records": [' + good + b", " + bad + b"]}"
    else:
        document = good + b"\n" + bad + b"\n"
    path = tmp_path / "file.json"
    path.write_bytes(document)
    _assert_same(lambda: ct.open_evidence(path))
    table, entries, blocks = _parse(lambda: ct.open_evidence(path))
    assert table.num_rows == 2
    assert any("not valid UTF-8" in e["reason"] for e in entries)
    if shape == "records" and field in ("requestParameters", "other"):
        assert blocks == 2  # fields the typed view does not decode: the column path


@given(st.lists(st.binary(max_size=40) | st.text(max_size=20).map(str.encode), max_size=30))
def test_joined_text_is_each_record_or_none(records: list[bytes]) -> None:
    """`raw` from one joined buffer: each record's text in order, or None (the row-by-row
    fallback, which logs) when any record is not UTF-8."""
    text = ct._joined_text([msgspec.Raw(record) for record in records])
    try:
        expected = [record.decode("utf-8") for record in records]
    except UnicodeDecodeError:
        assert text is None
        return
    assert text is not None and text.to_pylist() == expected


DIGITS = "9" * 5000  # past Python's int_max_str_digits: no decoder holds it


@pytest.mark.parametrize(
    "odd",
    [
        '"requestParameters": {"count": 1e999}',
        '"eventName": "ConsoleLogin", "responseElements": {"ConsoleLogin": 1e999}',
        '"eventName": 1e999',
        '"userIdentity": {"arn": -1e999}',
        '"requestParameters": {"count": 1e999, "note": "x-BAD-y"}',
        '"eventName": 1e999, "additionalEventData": {"note": "x-BAD-y"}',
        '"source": 1e999, "requestParameters": {"count": 1.5, "size": 100000.0}',
        f'"requestParameters": {{"count": {DIGITS}}}',
        f'"resources": {DIGITS}',
        f'"eventName": "ConsoleLogin", "responseElements": {{"x": {DIGITS}}}',
        '"eventTime": 1e999',
    ],
)
def test_numbers_past_a_float_or_an_int_cost_no_other_record(tmp_path: Path, odd: str) -> None:
    """1e999 and an integer of 5000 digits are valid JSON that msgspec will not hold,
    alone or beside bytes that are not UTF-8: the record they are in is a row (or, as a
    time, a logged error), both paths give the same rows, the other numbers of the
    record read as they always did, and the file's other records are rows."""
    good = (b'{"eventTime": "2024-05-01T10:00:00Z", "eventSource": "s3.amazonaws.com", '
            b'"eventID": "%s"%s}')  # fmt: skip
    extra = b", " + odd.encode().replace(b"BAD", b"\xff")  # a byte that is not UTF-8
    if b'"eventName"' not in extra:
        extra += b', "eventName": "GetObject"'
    name = b', "eventName": "GetObject"'
    document = b'{"Records": [' + good % (b"odd", extra) + b", " + good % (b"good", name) + b"]}"
    path = tmp_path / "file.json"
    path.write_bytes(document)
    _assert_same(lambda: ct.open_evidence(path))
    table, entries, _ = _parse(lambda: ct.open_evidence(path))
    rows = {row["event_id"]: row for row in table.to_pylist()}
    if "eventTime" in odd:
        assert list(rows) == ["good"] and [e["record"] for e in entries] == [1]
        return
    assert list(rows) == ["odd", "good"]
    assert all("UTF-8" in e["reason"] for e in entries) and (b"\xff" in extra) == bool(entries)
    # the only string among the parameters is the target; no number is taken for one
    named = "requestParameters" in odd and "note" in odd
    assert rows["odd"]["target"] == ("x-\\xff-y" if named else None)
    assert "1.5" not in rows["odd"]["message"]
    if "ConsoleLogin" in odd:
        assert rows["odd"]["outcome"] == "success"
