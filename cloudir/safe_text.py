"""Evidence as text that is safe to show: no escape sequences, no invisible reordering.

Every string that came from evidence passes through `inert()` before it reaches a
terminal or a report, so an attacker's user agent cannot carry escape sequences. This
lives apart from the terminal code so that library code (a progress label, a chart
caption) can make text inert without importing the terminal.

`path_segment()` is the same care for a name from outside that becomes one folder or
file name in a case (a Lambda alias): the capture that writes it and the parser that
looks for it again both call it.
"""

from __future__ import annotations

import hashlib
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


_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")


def path_segment(name: str) -> str:
    """`name` as one file name: itself when it is plain (letters, digits, `_`, `-`; up to
    128, as AWS spells alias names and version numbers), else `_.<sha256 prefix>`, which
    no plain name can be: no separator, no `..`, no control character reaches the case,
    two names never share a segment, and the same name always gives the same one."""
    if _PLAIN_SEGMENT.fullmatch(name):
        return name
    return "_." + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
