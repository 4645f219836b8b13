"""Crafted evidence that once made a timeline parser raise, losing every record of its
file, or run for ever (tests/data/hostile, one folder each, found by fuzzing the parsers
with bytes spliced in, values of the wrong JSON type, nesting past Python's limit, lone
surrogates, times past year 9999, tar members with impossible sizes, modes and numbers).

Each must now give rows or logged errors, never an exception: a bad value costs its
record or its file with a reason in errors.jsonl, not the parse.
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
HANG_GUARD_SECONDS = 120  # a guard against a parser that never ends, not a speed check


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
    assert all(entry["reason"] for entry in errors.entries)
    # what reaches the timeline is text Arrow could store (a time no datetime holds is
    # no time: the row is kept, under event_date's no-value folder)
    assert all(isinstance(row["raw"], str) and row["evidence_id"] for row in rows)
