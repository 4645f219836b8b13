"""The custody log's lines and chain, as bytes: how it is read back, checked and repaired.

Every line is one JSON object whose `prev_sha256` is the SHA-256 of the line before it
(without its newline; the first line chains to the empty string). `Case.record` writes
lines; this module decides what a line means when the log is read back.

A write cut short (a full disk, a crash mid-append) leaves a torn tail: one or more
unreadable lines after the last readable one. The next write does not edit or delete
them. It appends a `custody-repaired` entry that names each torn line (number, size,
SHA-256) and chains to the last readable line before them, so the chain skips the torn
bytes while still describing them exactly. An unreadable line anywhere else, or one that
no repair entry directly after it describes byte for byte, stays a chain error: only a
repair written immediately after the torn lines, and chained into by every later line,
closes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cloudir.custody_actions import CustodyAction

REPAIR_ACTION = CustodyAction.CUSTODY_REPAIRED.value
LOG_NAME = "custody.jsonl"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_lines(data: bytes) -> list[bytes]:
    """The log's lines without their newlines; a last line without one is still a line."""
    if not data:
        return []
    body = data[:-1] if data.endswith(b"\n") else data
    return body.split(b"\n")


def entry_of(raw: bytes) -> dict[str, Any] | None:
    """The entry a line holds, or None for a line that is not a JSON object."""
    try:
        entry = json.loads(raw)
    except ValueError:  # includes bytes that are not UTF-8
        return None
    return entry if isinstance(entry, dict) else None


def torn_descriptions(run: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """What a repair entry says about the torn lines it closes: enough to check each one."""
    return [{"line": n, "bytes": len(raw), "sha256": sha256_hex(raw)} for n, raw in run]


def _span(run: list[tuple[int, bytes]]) -> str:
    first, last = run[0][0], run[-1][0]
    return f"line {first}" if first == last else f"lines {first}-{last}"


def repair_note(run: list[tuple[int, bytes]]) -> str:
    size = sum(len(raw) for _, raw in run)
    return (
        f"{LOG_NAME} {_span(run)} cut short ({size} bytes) by an interrupted write "
        "(full disk, crash); kept as they are, described here, chain continues from "
        "the line before"
    )


def _unreadable(number: int, raw: bytes) -> str:
    what = "not a JSON object" if _is_json(raw) else "not valid JSON"
    return f"{LOG_NAME} line {number}: {what}"


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


@dataclass
class ChainCheck:
    """The log as verify reads it: errors, closed torn lines (notes), an open torn tail."""

    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    torn_tail: str = ""
    head: str = sha256_hex(b"")
    line_hashes: set[str] = field(default_factory=set)


def check_chain(data: bytes) -> ChainCheck:
    lines = split_lines(data)
    check = ChainCheck()
    anchor = b""  # the last readable line: what the next entry chains to
    run: list[tuple[int, bytes]] = []  # unreadable lines since it
    for number, raw in enumerate(lines, 1):
        check.line_hashes.add(sha256_hex(raw))
        entry = entry_of(raw)
        if entry is None:
            run.append((number, raw))
            continue
        expected = anchor
        if run and closes(entry, run):
            check.notes.append(f"{repair_note(run)}; repair recorded at line {number}")
        elif run:
            check.errors.extend(_unreadable(n, raw_) for n, raw_ in run)
            expected = run[-1][1]  # what an append after an unreadable line chains to
        if entry.get("prev_sha256") != sha256_hex(expected):
            check.errors.append(
                f"{LOG_NAME} line {number}: chain broken (an entry before it was edited or removed)"
            )
        anchor, run = raw, []
    if run:
        check.torn_tail = (
            f"{LOG_NAME} {_span(run)}: the last entry is cut short or unreadable "
            f"({sum(len(r) for _, r in run)} bytes), as an interrupted write (full disk, "
            "crash) leaves it; `cloudir verify --repair`, or the next command that writes "
            "custody, records a repair entry"
        )
    if lines:
        check.head = sha256_hex(lines[-1])
    return check


def closes(entry: dict[str, Any], run: list[tuple[int, bytes]]) -> bool:
    """True when `entry` is a repair describing exactly these torn lines, byte for byte."""
    return entry.get("action") == REPAIR_ACTION and entry.get("torn") == torn_descriptions(run)


@dataclass
class Tail:
    """What an append needs: the line to chain to, and what must be written before it."""

    chain_to: bytes
    prefix: bytes = b""  # a newline closing a torn line, and the repair entry
    repair: dict[str, Any] | None = None


def read_tail(fd: int) -> tuple[bytes, bool]:
    """The last line (without its newline) and whether the file ends with a newline."""
    end = os.fstat(fd).st_size
    data, pos = b"", end
    while pos > 0:
        step = min(64 * 1024, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        body = data[:-1] if data.endswith(b"\n") else data
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1 :], data.endswith(b"\n")
    return (data[:-1] if data.endswith(b"\n") else data), data.endswith(b"\n")


def read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, min(1 << 20, size - pos), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def tail_for_append(fd: int, repair_base: dict[str, Any]) -> Tail:
    """Where the next entry goes. The usual case reads only the last line; a torn tail
    gets a repair entry (from `repair_base`) written ahead of the new entry."""
    if os.fstat(fd).st_size == 0:
        return Tail(chain_to=b"")
    last, ends_with_newline = read_tail(fd)
    if ends_with_newline and entry_of(last) is not None:
        return Tail(chain_to=last)
    lines = split_lines(read_all(fd))
    newline = b"" if ends_with_newline else b"\n"
    run: list[tuple[int, bytes]] = []
    for number in range(len(lines), 0, -1):
        if entry_of(lines[number - 1]) is not None:
            break
        run.insert(0, (number, lines[number - 1]))
    if not run:  # a whole entry that lost only its newline
        return Tail(chain_to=lines[-1], prefix=newline)
    before = len(lines) - len(run)
    anchor = lines[before - 1] if before else b""
    repair = dict(
        repair_base,
        action=REPAIR_ACTION,
        evidence_id=None,
        files=[],
        note=repair_note(run),
        torn=torn_descriptions(run),
        prev_sha256=sha256_hex(anchor),
    )
    line = json.dumps(repair, sort_keys=True, default=str).encode()
    return Tail(chain_to=line, prefix=newline + line + b"\n", repair=repair)
