"""Evidence as text that is safe to show: no escape sequences, no invisible reordering.

Every string that came from evidence passes through `inert()` before it reaches a
terminal or a report, so an attacker's user agent cannot carry escape sequences. This
lives apart from the terminal code so that library code (a progress label, a chart
caption) can make text inert without importing the terminal.
"""

from __future__ import annotations

import re
from typing import Any

# C0/C1 controls (tabs and newlines too: one value, one line), and the Unicode format
# characters that reorder or hide text on screen (bidi overrides, zero-width marks).
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2069\ufeff]"
)


def inert(value: Any, limit: int | None = None) -> str:
    """Text safe to print: control characters shown as escapes, optionally shortened."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(_escape, text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
