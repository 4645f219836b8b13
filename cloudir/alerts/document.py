"""An alert document as JSON: read within bounds, its fields read by a path that names them.

Alerts are evidence and evidence is hostile: a document that is not JSON, is too large,
nests without end or puts a number where a name belongs must end in one `AlertError`
line that names the JSON path (`$.detail.resource.resourceType: expected text, found a
number`), never in a traceback or a silently wrong scope. Every reader of an alert field
goes through `Node`, so the path is always at hand when something is wrong.

GuardDuty findings come in two spellings of one model: camelCase (the API's wire format,
EventBridge, console exports) and PascalCase (boto3 and `aws guardduty get-findings`
output). `Node.get` looks a field up under both, so one parser reads either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from cloudir.alerts.model import AlertError

MAX_BYTES = 10 << 20
"""The largest alert document read (10 MiB). An EventBridge event is at most 256 KiB and a
GetFindings page of 100 ASFF findings a few MiB; anything larger is not an alert."""
MAX_DEPTH = 64  # real findings nest about 12 deep (ECS task > containers > volume mounts)
MAX_ID = 1024  # ASFF Id is at most 512 characters, a GuardDuty id 300
MAX_NAME = 2048  # an ARN is at most 2048 characters
MAX_TITLE = 1024

# C0/C1 controls and the format characters that reorder or hide text (as safe_text): an
# AWS identifier never holds one, so an identifier that does is crafted.
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2069\ufeff"
    r"\ud800-\udfff]"  # lone surrogates: JSON can spell them, UTF-8 cannot hold them
)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def load(data: bytes) -> Any:
    """The document's JSON value; AlertError for what is too large, not JSON or too deep."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AlertError(f"$: an alert document is bytes, not {_kind(data)}")
    size = len(data)
    if size > MAX_BYTES:
        raise AlertError(
            f"$: the document is {size} bytes; alert documents are read up to {MAX_BYTES} "
            "bytes (10 MiB)"
        )
    if not bytes(data).strip():
        raise AlertError("$: the document is empty")
    try:
        value = json.loads(bytes(data), parse_constant=_no_constant)
    except RecursionError:
        raise AlertError(f"$: nested deeper than {MAX_DEPTH} levels; not an alert") from None
    except UnicodeDecodeError as exc:
        raise AlertError(f"$: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise AlertError(f"$: not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # NaN/Infinity, an integer of more than 4300 digits
        raise AlertError(f"$: not JSON: {_one_line(str(exc))}") from None
    _check_depth(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_depth(value: Any) -> None:
    """Iteratively, so a deep document cannot exhaust the stack of a later recursive walk."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise AlertError(f"$: nested deeper than {MAX_DEPTH} levels; not an alert")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def _kind(value: Any) -> str:
    """What a JSON value is, in the words of an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


class Node:
    """One JSON object of the document and the path that leads to it."""

    def __init__(self, value: dict[str, Any], path: str) -> None:
        self.value = value
        self.path = path

    @classmethod
    def of(cls, value: Any, path: str) -> Node:
        if not isinstance(value, dict):
            raise AlertError(f"{path}: expected an object, found {_kind(value)}")
        return cls(value, path)

    def key(self, *names: str) -> str | None:
        """The first of `names` (each also in PascalCase) that the object holds, non-null."""
        for name in names:
            for spelling in (name, pascal(name)):
                if self.value.get(spelling) is not None:
                    return spelling
        return None

    def get(self, *names: str) -> Any:
        found = self.key(*names)
        return None if found is None else self.value[found]

    def at(self, name: str) -> str:
        return f"{self.path}.{self.key(name) or name}"

    def has(self, *names: str) -> bool:
        return self.key(*names) is not None

    def node(self, *names: str, required: bool = False) -> Node | None:
        found = self.key(*names)
        if found is None:
            if required:
                raise AlertError(f"{self.path}.{names[0]}: missing")
            return None
        return Node.of(self.value[found], f"{self.path}.{found}")

    def need_node(self, *names: str) -> Node:
        found = self.node(*names, required=True)
        assert found is not None  # required=True raised otherwise
        return found

    def nodes(self, *names: str, required: bool = False) -> Iterator[Node]:
        """The objects of a list field (each must be an object)."""
        found = self.key(*names)
        if found is None:
            if required:
                raise AlertError(f"{self.path}.{names[0]}: missing")
            return
        items = self.value[found]
        if not isinstance(items, list):
            raise AlertError(f"{self.path}.{found}: expected a list, found {_kind(items)}")
        if required and not items:
            raise AlertError(f"{self.path}.{found}: empty")
        for index, item in enumerate(items):
            yield Node.of(item, f"{self.path}.{found}[{index}]")

    def text(
        self, *names: str, required: bool = False, limit: int = MAX_NAME, identifier: bool = True
    ) -> str | None:
        """A text field; None when absent or empty (AlertError when required). An
        `identifier` (a name, id or ARN) may not hold control characters."""
        found = self.key(*names)
        if found is None:
            if required:
                raise AlertError(f"{self.path}.{names[0]}: missing")
            return None
        path = f"{self.path}.{found}"
        return check_text(self.value[found], path, required=required, limit=limit,
                          identifier=identifier)  # fmt: skip

    def need_text(self, *names: str, limit: int = MAX_NAME) -> str:
        found = self.text(*names, required=True, limit=limit)
        assert found is not None  # required=True raised otherwise
        return found

    def texts(self, *names: str, limit: int = MAX_NAME) -> list[str]:
        """A list of text values (absent: none)."""
        found = self.key(*names)
        if found is None:
            return []
        items = self.value[found]
        path = f"{self.path}.{found}"
        if not isinstance(items, list):
            raise AlertError(f"{path}: expected a list, found {_kind(items)}")
        values = (check_text(v, f"{path}[{i}]", limit=limit) for i, v in enumerate(items))
        return [v for v in values if v]

    def number(self, *names: str, required: bool = False) -> float | None:
        found = self.key(*names)
        if found is None:
            if required:
                raise AlertError(f"{self.path}.{names[0]}: missing")
            return None
        value = self.value[found]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AlertError(f"{self.path}.{found}: expected a number, found {_kind(value)}")
        return float(value)

    def need_number(self, *names: str) -> float:
        found = self.number(*names, required=True)
        assert found is not None  # required=True raised otherwise
        return found

    def flag(self, *names: str) -> bool | None:
        """A true/false field; the text "true"/"false" too (ASFF ProductFields are text)."""
        found = self.key(*names)
        if found is None:
            return None
        value = self.value[found]
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise AlertError(f"{self.path}.{found}: expected true or false, found {_kind(value)}")

    def time(self, *names: str, required: bool = False) -> datetime | None:
        """An ISO 8601 time (naive means UTC), as timezone-aware UTC."""
        text = self.text(*names, required=required, limit=64)
        if text is None:
            return None
        return parse_time(text, f"{self.path}.{self.key(*names)}")


def check_text(
    value: Any, path: str, *, required: bool = False, limit: int = MAX_NAME,
    identifier: bool = True,
) -> str | None:  # fmt: skip
    if not isinstance(value, str):
        raise AlertError(f"{path}: expected text, found {_kind(value)}")
    if not value.strip():
        if required:
            raise AlertError(f"{path}: empty")
        return None
    if len(value) > limit:
        raise AlertError(f"{path}: {len(value)} characters, longer than {limit}")
    if identifier and _CONTROL.search(value):
        raise AlertError(f"{path}: holds control characters; not an AWS name or id")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def parse_time(text: str, path: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AlertError(f"{path}: not an ISO 8601 time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise AlertError(f"{path}: a time outside years 1-9999 UTC: {text[:40]!r}") from None
