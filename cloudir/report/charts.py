"""Inline SVG charts for the HTML report, drawn by our own code so the report needs no script.

The report has to open offline, under a Content-Security-Policy that forbids scripts and
remote images, and print the same way; an SVG written here as text satisfies all three.
Every label and tooltip in it is evidence text (source names, finding titles), so each
string goes through `inert_text` and then XML escaping (`escape` for text nodes,
`quoteattr` for attribute values): the SVG stays well-formed XML and nothing in it can
become markup. Numbers and colours are ours and are formatted, never interpolated raw.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from cloudir.report import times
from cloudir.safe_text import inert

# safe_text.inert covers C0/C1 controls, bidi overrides and isolates and zero-width marks.
# These are the other characters that hide or reorder text (soft hyphen, Arabic letter
# mark, Hangul and Mongolian fillers, interlinear annotations, tag characters, the rest
# of U+2060-206F) and lone surrogates, which cannot even be written as UTF-8.
_MORE = (
    r"\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u115f\u1160\u180e\u206a-\u206f"
    r"\u3164\uffa0\ufff9-\ufffb\U000e0000-\U000e007f\ud800-\udfff"
)
_MORE_INVISIBLE = re.compile(f"[{_MORE}]")
# Everything above that JSON text does not escape by itself (it escapes U+0000-001F).
JSON_INVISIBLE = re.compile(rf"[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff{_MORE}]")


def inert_text(value: Any, limit: int | None = None) -> str:
    """Evidence text that shows what it is: invisible characters as escapes, then capped.

    `safe_text.inert` does the work (one rule for terminal and report); this adds the
    format characters it does not list, so a spoofed name cannot pass as another here.
    """
    text = "" if value is None else str(value)
    text = _MORE_INVISIBLE.sub(_escape_char, text)
    return inert(text, limit)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


WIDTH = 960
MARGIN_LEFT = 56
MARGIN_RIGHT = 16
PLOT_HEIGHT = 220
MARK_ROW = 18  # one row of finding labels above the plot
MARK_ROWS = 4
MAX_LABELS = 60  # more findings than this: lines and tooltips only, no numbered labels
AXIS_HEIGHT = 52  # tick labels (two lines) and the axis caption
LEGEND_ROW = 20
CHAR_WIDTH = 7.0  # of 12px sans-serif text, to lay out labels without measuring them
LEGEND_NAME = 40  # characters of a source name in the legend; the tooltip has more

# Okabe-Ito: told apart by most colour-blind readers; the order is the legend's.
PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442"]
OTHER_COLOUR = "#8c8c8c"

# Severity of a finding mark: colour, dash pattern and width, so greyscale still tells
# them apart; the label number names the finding in any case.
MARK_STYLE = {
    "critical": ("#67000d", "", 3.0),
    "high": ("#b42318", "", 2.0),
    "medium": ("#9a6700", "6 3", 1.6),
    "low": ("#1f4e8c", "2 3", 1.4),
    "informational": ("#57606a", "1 4", 1.2),
}
DEFAULT_MARK = ("#57606a", "1 4", 1.2)


def events_over_time(chart: dict[str, Any], mark_labels: Sequence[str] | None = None) -> str:
    """Stacked bars of events per bucket and source, findings marked; "" without buckets.

    `chart` is model["timeline"]["chart"]: `buckets` ({start, counts by source}), one
    per `bucket_seconds`, and `marks` ({timestamp, level, title}). `mark_labels` names
    each mark on the chart (the finding's number in the report); by default 1, 2, 3...
    """
    buckets = chart.get("buckets") or []
    if not buckets:
        return ""
    step = int(chart.get("bucket_seconds") or 60)
    starts = [_epoch(b["start"]) for b in buckets]
    t0, t_end = starts[0], starts[-1] + step
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    slot = plot_w / len(buckets)

    totals: Counter[str] = Counter()
    for bucket in buckets:
        totals.update(bucket["counts"])
    ranked = sorted(totals, key=lambda s: (-totals[s], s))
    if len(ranked) > len(PALETTE):  # the smallest sources share one colour
        named, folded = ranked[: len(PALETTE) - 1], set(ranked[len(PALETTE) - 1 :])
    else:
        named, folded = ranked, set()
    series: list[tuple[str, str]] = [(s, PALETTE[n]) for n, s in enumerate(named)]
    if folded:
        series.append((f"{len(folded)} other sources", OTHER_COLOUR))

    def stack(counts: dict[str, int]) -> list[int]:
        values = [counts.get(s, 0) for s in named]
        if folded:
            values.append(sum(v for s, v in counts.items() if s in folded))
        return values

    stacks = [stack(b["counts"]) for b in buckets]
    y_step = _tick_step(max((sum(s) for s in stacks), default=0) / 4)
    y_max = max(y_step, math.ceil(max(sum(s) for s in stacks) / y_step) * y_step)

    marks = list(chart.get("marks") or [])
    labels = list(mark_labels) if mark_labels is not None else []
    labels += [str(n + 1) for n in range(len(labels), len(marks))]
    placed = _place_labels(
        [
            (MARGIN_LEFT + _frac(_epoch(m["timestamp"]), t0, t_end) * plot_w, labels[n])
            for n, m in enumerate(marks)
        ]
    )
    labelled = len(marks) <= MAX_LABELS  # past that, numbers would only overlap
    rows_used = max((row for _, _, row, _ in placed), default=-1) + 1 if labelled else 0
    top = 8 + rows_used * MARK_ROW + (6 if rows_used else 0)
    bottom = top + PLOT_HEIGHT

    legend = _legend(series, sorted({m.get("level") for m in marks}, key=_level_rank))
    legend_rows = max((row for *_, row in legend), default=-1) + 1
    height = bottom + AXIS_HEIGHT + 8 + legend_rows * LEGEND_ROW

    def y(value: float) -> float:
        return bottom - value / y_max * PLOT_HEIGHT

    out: list[str] = [
        _open(
            "svg",
            viewBox=f"0 0 {WIDTH} {height}",
            width="100%",
            role="img",
            class_="chart",
            font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
            font_size="12",
            **{"aria-labelledby": "chart-title chart-desc"},
        ),
        _element("title", "Events over time by source", id="chart-title"),
        _element(
            "desc",
            f"{sum(totals.values())} events in {len(buckets)} bars of "
            f"{_duration(step)} from {_time(t0)} to {_time(t_end)}, stacked by source; "
            f"{len(marks)} findings marked at their first event.",
            id="chart-desc",
        ),
    ]
    # y axis: grid lines and counts
    out.append(_open("g", class_="axis y-axis"))
    for value in range(0, int(y_max) + 1, int(y_step)):
        out.append(
            _empty(
                "line",
                x1=_n(MARGIN_LEFT),
                x2=_n(WIDTH - MARGIN_RIGHT),
                y1=_n(y(value)),
                y2=_n(y(value)),
                class_="grid",
                stroke="#d0d7de",
                stroke_width="1",
            )
        )
        out.append(
            _element(
                "text", str(value), x=_n(MARGIN_LEFT - 6), y=_n(y(value) + 4), text_anchor="end"
            )
        )
    out.append(
        _element(
            "text",
            "events",
            x="0",
            y="0",
            transform=f"translate(14 {_n(top + PLOT_HEIGHT / 2)}) rotate(-90)",
            text_anchor="middle",
        )
    )
    out.append("</g>")

    # bars: one group per bucket, one rect per source, the tooltip on the group
    out.append(_open("g", class_="bars"))
    for n, (start, values) in enumerate(zip(starts, stacks, strict=True)):
        total = sum(values)
        if not total:
            continue
        x = MARGIN_LEFT + n * slot
        lines = [
            f"{_time(start)} to {_time(start + step)}: {total} event{'s' if total != 1 else ''}"
        ]
        lines += [
            f"{inert_text(name, 80)}: {v}" for (name, _), v in zip(series, values, strict=True) if v
        ]
        out.append(_open("g", class_="bar"))
        out.append(_element("title", "\n".join(lines)))
        out.append(
            _empty(
                "rect",
                x=_n(x),
                y=_n(top),
                width=_n(slot),
                height=_n(PLOT_HEIGHT),
                fill="transparent",
                class_="hit",
            )
        )
        level = 0
        for (_, colour), v in zip(series, values, strict=True):
            if not v:
                continue
            out.append(
                _empty(
                    "rect",
                    x=_n(x + slot * 0.1),
                    y=_n(y(level + v)),
                    width=_n(max(slot * 0.8, 1.0)),
                    height=_n(max(y(level) - y(level + v), 0.5)),
                    fill=colour,
                    stroke="#ffffff",
                    stroke_width="0.5",
                )
            )
            level += v
        out.append("</g>")
    out.append("</g>")

    # x axis: baseline, ticks, times (with the date when it changes), caption
    out.append(_open("g", class_="axis x-axis"))
    out.append(
        _empty(
            "line",
            x1=_n(MARGIN_LEFT),
            x2=_n(WIDTH - MARGIN_RIGHT),
            y1=_n(bottom),
            y2=_n(bottom),
            stroke="#57606a",
            stroke_width="1",
        )
    )
    every = max(1, math.ceil(len(buckets) / 8))
    last_date = None
    for n in range(0, len(buckets), every):
        x = MARGIN_LEFT + n * slot
        moment = times.from_seconds(starts[n])
        out.append(
            _empty(
                "line",
                x1=_n(x),
                x2=_n(x),
                y1=_n(bottom),
                y2=_n(bottom + 5),
                stroke="#57606a",
                stroke_width="1",
            )
        )
        date = f"{moment.year:04d}-{moment:%m-%d}"
        first_line = moment.strftime("%H:%M") if step < 86400 else date
        out.append(_element("text", first_line, x=_n(x), y=_n(bottom + 18), text_anchor="middle"))
        if step < 86400 and date != last_date:
            out.append(_element("text", date, x=_n(x), y=_n(bottom + 32), text_anchor="middle"))
        last_date = date
    out.append(
        _element(
            "text",
            f"time (UTC), one bar = {_duration(step)}",
            x=_n(WIDTH - MARGIN_RIGHT),
            y=_n(bottom + 46),
            text_anchor="end",
            class_="caption",
        )
    )
    out.append("</g>")

    # finding marks: a line at the first event, a numbered label above the plot
    out.append(_open("g", class_="marks"))
    for mark, (x, label_x, row, label) in zip(marks, placed, strict=True):
        colour, dash, width = MARK_STYLE.get(str(mark.get("level")), DEFAULT_MARK)
        label_w = _label_width(label)
        label_y = 8 + row * MARK_ROW
        out.append(_open("g", class_="mark"))
        out.append(
            _element(
                "title",
                f"Finding {inert_text(label, 20)}: {inert_text(mark.get('level'), 20).upper()}, "
                f"{inert_text(mark.get('title'), 200)}, first event "
                f"{_time(_epoch(mark['timestamp']))}",
            )
        )
        line = {"stroke": colour, "stroke_width": _n(width)}
        if dash:
            line["stroke_dasharray"] = dash
        out.append(_empty("line", x1=_n(x), x2=_n(x), y1=_n(top), y2=_n(bottom), **line))
        if not labelled:
            out.append("</g>")
            continue
        out.append(
            _empty(
                "polyline",
                points=f"{_n(label_x + label_w / 2)},{_n(label_y + 14)} {_n(x)},{_n(top)}",
                fill="none",
                stroke=colour,
                stroke_width="1",
            )
        )
        out.append(
            _empty(
                "rect",
                x=_n(label_x),
                y=_n(label_y),
                width=_n(label_w),
                height="14",
                rx="3",
                fill="#ffffff",
                stroke=colour,
                stroke_width=_n(width),
            )
        )
        out.append(
            _element(
                "text",
                label,
                x=_n(label_x + label_w / 2),
                y=_n(label_y + 11),
                text_anchor="middle",
                font_size="10",
                fill="#1b1f24",
                class_="mark-label",
            )
        )
        out.append("</g>")
    out.append("</g>")

    # legend: sources (colour) and, when there are marks, severities (line style)
    legend_top = bottom + AXIS_HEIGHT + 8
    out.append(_open("g", class_="legend"))
    for kind, text, style, x, row in legend:
        ly = legend_top + row * LEGEND_ROW
        if kind == "source":
            out.append(_empty("rect", x=_n(x), y=_n(ly), width="12", height="12", fill=style[0]))
        else:
            line = {"stroke": style[0], "stroke_width": _n(style[2])}
            if style[1]:
                line["stroke_dasharray"] = style[1]
            out.append(
                _empty("line", x1=_n(x), x2=_n(x + 16), y1=_n(ly + 6), y2=_n(ly + 6), **line)
            )
        out.append(_element("text", text, x=_n(x + 20), y=_n(ly + 10)))
    out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _legend(
    series: list[tuple[str, str]], levels: list[Any]
) -> list[tuple[str, str, tuple[str, str, float], float, int]]:
    """Legend entries laid out left to right, wrapping: (kind, text, style, x, row)."""
    entries: list[tuple[str, str, tuple[str, str, float]]] = [
        ("source", inert_text(name, LEGEND_NAME), (colour, "", 0.0)) for name, colour in series
    ]
    entries += [
        ("level", f"finding, {inert_text(level, 20)}", MARK_STYLE.get(str(level), DEFAULT_MARK))
        for level in levels
    ]
    laid_out = []
    x, row = float(MARGIN_LEFT), 0
    for kind, text, style in entries:
        width = 20 + len(text) * CHAR_WIDTH + 18
        if x + width > WIDTH - MARGIN_RIGHT and x > MARGIN_LEFT:
            x, row = float(MARGIN_LEFT), row + 1
        laid_out.append((kind, text, style, x, row))
        x += width
    return laid_out


def _place_labels(marks: list[tuple[float, str]]) -> list[tuple[float, float, int, str]]:
    """Labels above the plot that do not overlap: (mark x, label x, row, label), in order.

    Marks close in time sit on the next row up; when every row is taken at that spot,
    the label moves right on the row with most room and a leader line points back.
    """
    right_edges = [-math.inf] * MARK_ROWS
    placed: dict[int, tuple[float, float, int, str]] = {}
    for n in sorted(range(len(marks)), key=lambda n: marks[n][0]):
        x, label = marks[n]
        width = _label_width(label)
        want = min(max(x - width / 2, MARGIN_LEFT - width / 2), WIDTH - MARGIN_RIGHT - width)
        row = next((r for r in range(MARK_ROWS) if want >= right_edges[r] + 2), None)
        if row is None:
            row = min(range(MARK_ROWS), key=lambda r: right_edges[r])
            want = min(right_edges[row] + 2, WIDTH - MARGIN_RIGHT - width)
        right_edges[row] = want + width
        placed[n] = (x, want, row, label)
    return [placed[n] for n in range(len(marks))]


def _label_width(label: str) -> float:
    return 8 + len(label) * 6.5


def _level_rank(level: Any) -> int:
    order = list(MARK_STYLE)
    return order.index(level) if level in order else -1


def _tick_step(rough: float) -> int:
    """A round step (1, 2, 5 x 10^k) near `rough`: about four grid lines."""
    if rough <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(rough))
    return int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough))


def _frac(t: float, t0: float, t1: float) -> float:
    return min(max((t - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 0.0


def _epoch(text: Any) -> float:
    """Seconds since 1970 of any time the timeline holds (year 1 to 9999); 0 for no time."""
    moment = times.parse_time(text)
    return times.to_seconds(moment) if moment else 0.0


def _time(seconds: float) -> str:
    return times.display_seconds(seconds)


def _duration(seconds: int) -> str:
    units = (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60))
    for unit, size in units:
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _n(value: float) -> str:
    """A coordinate: one decimal, no trailing zero."""
    return f"{value:.1f}".removesuffix(".0")


def _attrs(attributes: dict[str, str]) -> str:
    """Attributes with XML quoting; `class_` and `font_size` become class and font-size."""
    return "".join(
        f" {name.rstrip('_').replace('_', '-')}={quoteattr(str(value))}"
        for name, value in attributes.items()
    )


def _open(tag: str, **attributes: str) -> str:
    return f"<{tag}{_attrs(attributes)}>"


def _empty(tag: str, **attributes: str) -> str:
    return f"<{tag}{_attrs(attributes)}/>"


def _element(tag: str, text: str, **attributes: str) -> str:
    """An element with text content; the text is made inert (newlines kept) and escaped."""
    body = "\n".join(inert_text(line) for line in str(text).split("\n"))
    return f"<{tag}{_attrs(attributes)}>{escape(body)}</{tag}>"
