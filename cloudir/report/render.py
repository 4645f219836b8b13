"""Render the report model as HTML, Markdown and JSON.

Every string in the model came from the attacker's side (user agents, bucket and user
names, error messages, file names), so both text renderings treat all of it as inert:

- HTML: Jinja autoescaping is on, and on top of it every `{{ }}` value passes
  `_html_finalize`, which shows control, bidi and zero-width characters as visible
  escapes and caps the length (CELL characters unless a filter asks for more). Values
  are marked `Markup` only by filters here that escape them first; the one exception
  is the SVG chart, which `charts.py` builds with XML escaping. The page loads nothing
  (no script, no remote font or image) and says so in its Content-Security-Policy.
- Markdown: every `{{ }}` value passes `md_escape` (`_md_finalize`) unless a filter
  already escaped it, so a table cannot be broken, a link or image cannot be injected,
  raw HTML stays text and a bare URL is defanged rather than autolinked.
- JSON: the model as it is.

Times read `YYYY-MM-DD HH:MM:SS UTC` in both text renderings.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from cloudir.analyze.detect import LEVELS
from cloudir.analyze.messages import reader_names, short_principal
from cloudir.report import charts, times
from cloudir.report.charts import JSON_INVISIBLE, inert_text
from cloudir.report.model import CONTEXT_MINUTES
from cloudir.report.story import actor_label, outcome_label

CELL = 300  # characters of one value in a table; the raw event JSON holds the rest
PROSE = 2000  # rule descriptions and notes
MD_EVENTS = 10  # matched events per finding in the Markdown
MD_FILES = 100  # file hashes per evidence item in the Markdown (custody.jsonl has all)
HTML_FILES = 5000  # file hashes per evidence item in the HTML (report.json has all)
SEVERITIES = list(reversed(LEVELS))  # critical first
ENTITY_KINDS = [
    ("principals", "Principals"),
    ("access_keys", "Access keys"),
    ("source_ips", "Source IPs"),
    ("hosts", "Hosts"),
]
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def json_text(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False, default=str) + "\n"


def html(model: dict[str, Any]) -> str:
    """One self-contained page: inline CSS and SVG, no script, nothing fetched."""
    context = _context(model)
    context["chart_svg"] = Markup(  # built by charts.py with XML escaping of every value
        charts.events_over_time(model["timeline"]["chart"], context["mark_labels"])
    )
    context["csp"] = CSP
    return _html_env().get_template("report.html.j2").render(context)


def markdown(model: dict[str, Any]) -> str:
    """The same facts, compact, for a ticket or a chat message."""
    return _md_env().get_template("report.md.j2").render(_context(model))


# ---------------------------------------------------------------- shared view of the model


def _context(model: dict[str, Any]) -> dict[str, Any]:
    """The model plus what both templates derive from it (numbers, groups, look-ups).

    Findings are numbered 1.. in model order (severity first, as detect sorts them);
    the number is the anchor `finding-<n>`, the chart label and the Markdown heading.
    """
    findings = model["findings"]
    numbered = list(enumerate(findings, start=1))
    by_title: dict[tuple[Any, Any], int] = {}
    for n, f in numbered:
        by_title.setdefault((f["title"], f["level"]), n)

    def finding_number(ref: dict[str, Any]) -> int | None:
        """The number of the finding a summary or ATT&CK entry ({title, level}) names."""
        return by_title.get((ref.get("title"), ref.get("level")))

    groups = []
    for level in SEVERITIES + sorted({f["level"] for f in findings} - set(SEVERITIES)):
        members = [(n, f) for n, f in numbered if f["level"] == level]
        if members:
            groups.append({"level": level, "members": members})

    entity_findings: dict[str, dict[str, list[int]]] = {
        k: defaultdict(list) for k, _ in ENTITY_KINDS
    }
    for n, f in numbered:
        for kind, values in f["entities"].items():
            if kind in entity_findings:
                for value in values:
                    entity_findings[kind][value].append(n)

    marks = model["timeline"]["chart"]["marks"]
    mark_labels = [  # each mark names its finding's number (none outside the chart's span)
        str(m["finding"])
        if isinstance(m.get("finding"), int)
        else str(by_title.get((m.get("title"), m.get("level")), "?"))
        for m in marks
    ]
    counted = model["timeline"]["rows_by_evidence"]
    shown_principals = [  # every principal a table shortens: one name for each, none shared
        str(p)
        for f in findings
        for p in [
            *f["entities"].get("principals", []),
            *(e.get("user") for e in f.get("context") or []),
        ]
        if p
    ]
    story_groups: dict[str, list[tuple[int, dict[str, Any]]]] = {"human": [], "automation": []}
    for n, story in enumerate(model.get("stories", []), start=1):  # story-<n> anchors
        story_groups.setdefault(story["group"], []).append((n, story))
    return {
        "m": model,
        "case": model["case"],
        "summary": model["summary"],
        "numbered": numbered,
        "groups": groups,
        "entity_kinds": ENTITY_KINDS,
        "entity_findings": entity_findings,
        "finding_number": finding_number,
        "story_groups": story_groups,
        "principal_names": reader_names(shown_principals),
        "untagged": [(n, f) for n, f in numbered if not f["tactics"]],
        "mark_labels": mark_labels,
        "evidence_without_rows": [
            e["evidence_id"] for e in model["evidence"] if not counted.get(e["evidence_id"])
        ],
        "cell": CELL,
        "context_minutes": CONTEXT_MINUTES,
        "md_events": MD_EVENTS,
        "md_files": MD_FILES,
        "html_files": HTML_FILES,
    }


def display_time(value: Any) -> str:
    """`2026-11-27T03:43:31.000000Z` reads `2026-11-27 03:43:31 UTC`; other text stays."""
    if value is None or value == "":
        return "\u2014"  # an em dash: no list marker when it starts a Markdown line
    return times.display(value)


def span(first: Any, last: Any) -> str:
    """How long from first to last, for 'when' lines: `17 min`, `2 h 9 min`, `3 days`."""
    return times.duration(first, last)


@pass_context
def principal(context: Context, value: Any) -> Any:
    """`arn:aws:iam::123:user/alice` as `user/alice`, or `123:user/alice` when another
    principal in the report shortens alike (`principal_names`, from `reader_names`)."""
    if not value:
        return value
    return context.get("principal_names", {}).get(str(value)) or short_principal(str(value))


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def size(value: Any) -> str:
    """Bytes for a reader: `17.3 KB` (1000-based, as the files are listed exactly too)."""
    if not isinstance(value, int):
        return str(value)
    amount = float(value)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{value:,} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1000
    return str(value)


def level_name(level: Any) -> str:
    """The label that carries a severity wherever colour cannot (greyscale, screen reader)."""
    return str(level).upper() if level is not None else "NONE"


def level_class(level: Any) -> str:
    """A CSS class for a severity: only the five known names, whatever a rule file says."""
    return str(level) if level in LEVELS else "unknown"


VERDICT_LEVELS = {  # the badge colour of a verdict; its name is always printed beside
    "confirmed": "high",
    "corroborated": "medium",
    "not corroborated": "low",
    "explained": "informational",
}


def verdict_class(verdict: Any) -> str:
    """The severity class a verdict's badge borrows: only for the four known verdicts."""
    return VERDICT_LEVELS.get(str(verdict), "unknown")


def verdict_name(verdict: Any) -> str:
    return str(verdict).upper() if verdict in VERDICT_LEVELS else "NO VERDICT"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def pretty_json(value: Any) -> str:
    """The raw event as indented JSON with every invisible character as a JSON escape.

    Unlike `inert_text` this keeps the line breaks of the layout (JSON already escapes
    the controls inside strings) and stays valid JSON, so it can be copied out as is.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return JSON_INVISIBLE.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _collapse(value: Any) -> str:
    """Prose on one line: rule descriptions are wrapped YAML, not evidence layout."""
    return " ".join(("" if value is None else str(value)).split())


_COMMON_FILTERS: dict[str, Callable[..., Any]] = {
    "ts": display_time,
    "span": span,
    "num": number,
    "principal": principal,
    "size": size,
    "level_name": level_name,
    "level_class": level_class,
    "plural": plural,
    "actor_label": actor_label,
    "outcome_label": outcome_label,
    "verdict_class": verdict_class,
    "verdict_name": verdict_name,
}


# ---------------------------------------------------------------- HTML


def _html_finalize(value: Any) -> Any:
    """Every printed value: visible escapes for invisible characters, at most CELL long."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return "\u2014"
    return inert_text(value, CELL)


def html_time(value: Any) -> Markup:
    """A table cell's time, one text node: `2026-11-27 03:43:31&nbsp;UTC` wraps only
    between date and time (a hyphen between digits is no break opportunity)."""
    text = str(escape(inert_text(display_time(value), CELL)))  # str: replace() as text
    return Markup(text.removesuffix(" UTC") + "&nbsp;UTC" if text.endswith(" UTC") else text)


def html_cap(value: Any, limit: int = CELL) -> Markup:
    """Inert, escaped text of up to `limit` characters (a longer cap than the default)."""
    return Markup(escape(inert_text(value, limit)))


def html_prose(value: Any, limit: int = PROSE) -> Markup:
    return Markup(escape(inert_text(_collapse(value), limit)))


def html_json(value: Any) -> Markup:
    """The raw event, escaped here because `inert_text` would flatten its line breaks."""
    return Markup(escape(pretty_json(value)))


def html_list(values: Iterable[Any] | None, limit: int = CELL, most: int = 10) -> Markup:
    """Values joined with commas, each inert and escaped; `+N more` after `most`."""
    items = list(values or [])
    shown = [escape(inert_text(v, limit)) for v in items[:most]]
    if len(items) > most:
        shown.append(escape(f"+{len(items) - most} more"))
    return Markup(", ").join(shown) if shown else Markup("\u2014")


@cache
def _html_env() -> Environment:
    env = Environment(
        loader=PackageLoader("cloudir.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_html_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(_COMMON_FILTERS)
    env.filters.update(
        cap=html_cap, prose=html_prose, raw_json=html_json, names=html_list, ts_cell=html_time
    )
    return env


# ---------------------------------------------------------------- Markdown


class MdSafe(str):
    """Markdown text already escaped by `md_escape`: `_md_finalize` passes it through."""

    __slots__ = ()


_MD_SPACE = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
# Backslash-escaped anywhere: table cells, links and images, raw HTML and entities,
# code spans, emphasis, strikethrough, math. `_` only where it could start or end
# emphasis (intraword underscores are literal in CommonMark, and common in names).
_MD_SPECIAL = re.compile(r"[\\`*~|\[\]()!<>&$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# A list item needs "1." and then a space; a version or an address ("10.0.0.1") does not.
_MD_LINE_START = re.compile(r"^([#=+-])|^(\d{1,9})(\.)(?=\s|$)")
_MD_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}):(?=//)")
_MD_WWW = re.compile(r"(?i)\b(www)\.")


def md_escape(value: Any, limit: int | None = CELL) -> MdSafe:
    """One value as inert Markdown text on one line, at most `limit` characters of it.

    Line breaks become spaces; invisible characters show as escapes (`inert_text`);
    the text is capped before escaping so a cut never splits an escape; `scheme://`
    reads `scheme[:]//` and `www.` reads `www[.]` so no renderer autolinks them.
    """
    text = _MD_SPACE.sub(" ", "" if value is None else str(value)).strip()
    text = inert_text(text, limit)
    text = _MD_SCHEME.sub(r"\1[:]", text)
    text = _MD_WWW.sub(r"\1[.]", text)
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), text)
    text = _MD_LINE_START.sub(
        lambda m: "\\" + m.group(1) if m.group(1) else m.group(2) + "\\" + m.group(3), text
    )
    return MdSafe(text)


def _md_finalize(value: Any) -> str:
    if isinstance(value, MdSafe):
        return value
    if value is None:
        return "\u2014"
    return md_escape(value)


_HEX = re.compile(r"[0-9a-f]{6,128}")


def md_code(value: Any) -> MdSafe:
    """A hash in a code span, which only plain hex may enter (escapes do not work there)."""
    text = "" if value is None else str(value)
    return MdSafe(f"`{text}`") if _HEX.fullmatch(text) else md_escape(text)


def md_list(values: Iterable[Any] | None, limit: int = 120, most: int = 3) -> MdSafe:
    items = list(values or [])
    shown = [md_escape(v, limit) for v in items[:most]]
    if len(items) > most:
        shown.append(MdSafe(f"+{len(items) - most} more"))
    return MdSafe(", ".join(shown) if shown else "\u2014")


@cache
def _md_env() -> Environment:
    env = Environment(
        loader=PackageLoader("cloudir.report", "templates"),
        autoescape=False,  # Markdown, not HTML: md_escape runs on every value instead
        undefined=StrictUndefined,
        finalize=_md_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(_COMMON_FILTERS)
    env.filters.update(md=md_escape, code=md_code, names=md_list)
    return env
