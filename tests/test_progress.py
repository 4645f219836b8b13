"""Library code reports progress; the CLI's `TERMINAL` draws it as rich bars on stderr.

The bars must look as they did when capture drew them itself: a label, a bar, the
measure for the unit (12/40, bytes and speed, or a percentage), the time; and a label
that quotes evidence (a container's name) is shown as text, never as markup or escapes.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cloudir import console
from cloudir.progress import NO_PROGRESS


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr as a pipe: rich prints the bars once, as they stand when the step ends."""
    out = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=out, width=160, highlight=False))
    return out


def test_percent_lines_show_the_percentage_the_cloud_reports(drawn: io.StringIO) -> None:
    with console.TERMINAL.bars("percent") as bars:
        first = bars.add("snapshot snap-1 of vol-1", total=100)
        second = bars.add("snapshot snap-2 of vol-2", total=100)
        first.update(37)
        second.update(100)
    lines = drawn.getvalue().splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["snapshot", "snap-1", "of", "vol-1"],
        ["snapshot", "snap-2", "of", "vol-2"],
    ]
    assert "37%" in lines[0] and "100%" in lines[1]


def test_count_and_byte_lines_show_their_measure(drawn: io.StringIO) -> None:
    with console.TERMINAL.bars("count") as bars:
        bars.add("downloading", total=40).update(12)
    with console.TERMINAL.bars("bytes") as bars:
        line = bars.add("snap-1")  # size unknown at first
        line.update(3_000_000, total=8_000_000)
    counted, stored = drawn.getvalue().splitlines()
    assert counted.startswith("downloading") and "12/40" in counted
    assert stored.startswith("snap-1") and "3.0/8.0 MB" in stored


def test_a_label_quoting_evidence_is_shown_as_text(drawn: io.StringIO) -> None:
    with console.TERMINAL.bars("bytes") as bars:
        line = bars.add("[bold]web\x1b[2J")
        line.update(10, total=10, label="[bold]web\x1b[2J: done")
    text = drawn.getvalue()
    assert "[bold]web\\x1b[2J: done" in text
    assert "\x1b" not in text


def test_a_total_left_out_stays_as_it_was(drawn: io.StringIO) -> None:
    with console.TERMINAL.bars("count") as bars:
        line = bars.add("files", total=5)
        line.update(2)
        line.update(3, label="files: 3")
    assert "3/5" in drawn.getvalue()


def test_no_progress_draws_nothing(drawn: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    with NO_PROGRESS.bars("bytes") as bars:
        line = bars.add("anything", total=1)
        line.update(1, total=2, label="still nothing")
    assert drawn.getvalue() == ""
    assert capsys.readouterr() == ("", "")
