"""Crafted evidence that once made a timeline parser raise, losing every record of its
file, or run for ever (tests/data/hostile, one folder each, found by fuzzing the parsers
with bytes spliced in, values of the wrong JSON type, nesting past Python's limit, lone
surrogates, times past year 9999, tar members with impossible sizes, modes and numbers).

Each must now give rows or logged errors, never an exception: a bad value costs its
record or its file with a reason in errors.jsonl, not the parse. `case.json` pins how
many rows the rest of the file still gives. The hang guard cannot stop a regular
expression that backtracks (Python checks signals between, not inside, matches).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze.parsers import ErrorLog, ParseOptions, parser_for

HOSTILE = Path(__file__).parent / "data" / "hostile"
CASES = sorted(HOSTILE.glob("*/case.json"))
HANG_GUARD_SECONDS = 20  # a guard against a parser that never ends, not a speed check


@pytest.fixture
def hang_guard() -> Iterator[None]:
    def stop(*_: Any) -> None:
        raise TimeoutError(f"parser still running after {HANG_GUARD_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_GUARD_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_the_hostile_set_is_here() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case_file", CASES, ids=[c.parent.name for c in CASES])
def test_a_hostile_file_gives_rows_or_reasons(case_file: Path, hang_guard: None) -> None:
    case = json.loads(case_file.read_text())
    path = case_file.parent / case["file"]
    parser = parser_for(case["kind"], path)
    assert parser is not None, f"no parser takes {case['file']} as {case['kind']}"
    errors = ErrorLog(case["evidence_id"], case["file"])
    rows = []
    for batch in parser.parse(path, case["evidence_id"], errors, ParseOptions()):
        rows += batch.to_pylist()
    assert rows or errors.entries, case["description"]
    assert len(rows) == case["rows"]  # what the rest of the file still gives
    assert all(entry["reason"] for entry in errors.entries)
    # what reaches the timeline is text Arrow could store (a time no datetime holds is
    # no time: the row is kept, under event_date's no-value folder)
    assert all(isinstance(row["raw"], str) and row["evidence_id"] for row in rows)


@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("end_blocks", [True, False])
def test_a_valid_export_reads_whole_through_ends_once(
    tmp_path: Path, compression: str, end_blocks: bool
) -> None:
    """EndsOnce ends only archives that run out inside a member: a valid export, plain or
    compressed, with or without its end-of-archive blocks, gives every wanted member."""
    import io
    import tarfile

    from cloudir.analyze.parsers.container import _members

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, size in (("usr/bin/big", 100_000), ("etc/small", 20_000), ("tmp/x", 0)):
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = size, 0o755, 1_722_416_700
            tar.addfile(member, io.BytesIO(b"a" * size))
    data = plain.getvalue() if end_blocks else plain.getvalue()[: -2 * 512]
    if not end_blocks:
        data = data.rstrip(b"\0")
        data += b"\0" * (-len(data) % 512)
    if compression == "gz":
        import gzip

        data = gzip.compress(data)
    export = tmp_path / "fs.tar"
    export.write_bytes(data)
    errors = ErrorLog("ev", "fs.tar")
    wanted = {"/usr/bin/big": "added", "/etc/small": "changed", "/tmp/x": "added"}
    found = _members(export, wanted, errors)
    assert set(found) == set(wanted) and errors.entries == []
    assert found["/usr/bin/big"]["size"] == 100_000


def test_times_no_datetime_holds_are_no_time() -> None:
    from cloudir.analyze.host.rows import epoch_time

    assert epoch_time(1_722_416_700) == "2024-07-31T09:05:00+00:00"
    assert [epoch_time(v) for v in (1e20, -1e20, float("nan"), float("inf"))] == [None] * 4


def test_a_long_condition_value_is_valid_but_a_long_principal_is_unreadable() -> None:
    """IAM bounds an ARN (2,048 characters), not a condition value: a long aws:Referer
    pattern keeps the policy's grant; a principal past an ARN's length is unreadable
    rather than minutes of policyuniverse's ARN patterns."""
    from cloudir.analyze.policy_grants import Unreadable, classify_document

    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "s3:GetObject",
        "Condition": {"StringLike": {"aws:Referer": "https://example.com/" + "a" * 3000}},
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    assert classify_document(policy, "444455556666") == "cross-account:111122223333"
    statement["Principal"] = {"AWS": "arn:aws:iam::111122223333:" + "r" * 70_000}
    with pytest.raises(Unreadable):
        classify_document(policy, "444455556666")


def test_json_nested_past_pythons_limit_is_invalid_json_everywhere(tmp_path: Path) -> None:
    """One helper (parsers.json_loads) makes deep nesting a ValueError, so no parser's
    `except ValueError` misses it: not even recognising a file's kind at capture."""
    from cloudir.analyze.parsers import json_loads, recognise_kind

    deep = '{"events": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(ValueError, match="nested deeper"):
        json_loads(deep)
    page = tmp_path / "page-00001.json"
    page.write_text(deep)
    assert isinstance(recognise_kind([page]), str)


def test_a_name_that_is_not_utf8_reads_as_its_bytes_once_logged() -> None:
    """An image layer's Latin-1 file name: `\\xe9` in the text columns, `\\\\xe9` inside
    `raw`'s JSON (which reads back as `\\xe9`), and one error for the record, not one a
    column."""
    case = HOSTILE / "img-01-nonutf8-name"
    path = case / "image-evil" / "image.tar"
    parser = parser_for("container-image", path)
    assert parser is not None
    errors = ErrorLog("image-evil", "image.tar")
    rows = [
        r for b in parser.parse(path, "image-evil", errors, ParseOptions()) for r in b.to_pylist()
    ]
    [named] = [r for r in rows if "caf" in (r["target"] or "")]
    assert named["target"] == "/etc/caf\\xe9" and "/etc/caf\\xe9" in named["message"]
    assert json.loads(named["raw"])["path"] == "/etc/caf\\xe9"
    assert [(e["record"], e["reason"]) for e in errors.entries] == [
        (2, "text with lone surrogates; kept as \\\\xNN text")
    ]
