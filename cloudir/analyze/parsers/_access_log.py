"""Access log lines as S3 and Elastic Load Balancing write them: read, split, checked.

Both are text, one request per line, fields separated by one space, a field with spaces
either in double quotes (`"GET /x HTTP/1.1"`, `\\"` inside) or, for S3's time, in square
brackets. The files come plain or gzipped (ELB always gzips; S3 never does, a responder's
copy may). Shared by `s3_access.py` and `alb_access.py` so both read a hostile line the
same way: lines are read one at a time with a length limit (bounded memory whatever the
file holds), and a line that cannot be split is a reason for the error log, not a crash.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cloudir.analyze.parsers import ErrorLog

MAX_LINE_BYTES = 1 << 20  # a request line is a few KB; a longer one is reported, not held
HEAD_BYTES = 8 << 10  # what recognition reads of a file (inflated, for gzip)

# One field and the space after it: a quoted string (backslash escapes kept as logged),
# a bracketed time, or a bare word that starts with neither.
_FIELD = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|\[([^\]]*)\]|([^ "\[][^ ]*))(?: |$)')


class BadLine(ValueError):
    """A line that is not one request of the format; the message is the error log's reason."""


def split_fields(line: str) -> list[str]:
    """The line's fields, quotes and brackets taken off; BadLine when a quote or bracket is
    not closed (or a closing quote runs into more text), or a field is empty."""
    fields: list[str] = []
    pos, end = 0, len(line)
    match = _FIELD.match
    while pos < end:
        found = match(line, pos)
        if found is None:
            rest = line[pos : pos + 1]
            if rest == '"':
                raise BadLine(f"unbalanced quote in field {len(fields) + 1}")
            if rest == "[":
                raise BadLine(f"unclosed [ in field {len(fields) + 1}")
            raise BadLine(f"empty field {len(fields) + 1} (two spaces in a row)")
        quoted, bracketed, bare = found.groups()
        fields.append(
            quoted if quoted is not None else bracketed if bracketed is not None else bare
        )
        pos = found.end()
    return fields


def open_log(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when its magic says gzip (whatever its name says), as a
    stream: never the whole file in memory."""
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes what we return
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def log_lines(path: Path, errors: ErrorLog) -> Iterator[tuple[int, str]]:
    """Numbered, decoded, non-empty lines of the file. An over-long line, bytes that are not
    UTF-8 (kept as `\\xNN`), a truncated gzip and an unreadable file are error log entries;
    the lines before them still come."""
    number = 0
    try:
        with open_log(path) as fh:
            while chunk := fh.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
                    errors.add(f"line over {MAX_LINE_BYTES} bytes; not read", line=number)
                    while (rest := fh.readline(1 << 16)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of the over-long line
                    continue
                chunk = chunk.rstrip(b"\r\n")
                if not chunk.strip():
                    continue
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError:
                    errors.add("not valid UTF-8; bytes kept as \\xNN text", line=number)
                    text = chunk.decode("utf-8", "backslashreplace")
                yield number, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        errors.add(f"truncated or corrupt gzip after line {number} ({exc})")
    except OSError as exc:
        errors.add(f"cannot read file: {exc.strerror or exc}")


def head_lines(path: Path) -> list[str]:
    """The first lines of a regular file (inflated when gzip), for recognition: at most
    HEAD_BYTES, never through a link, never waiting on a FIFO; [] when unreadable. The last
    line is dropped when the head cut it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        head = os.pread(fd, HEAD_BYTES, 0)
    except OSError:
        return []
    finally:
        os.close(fd)
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, HEAD_BYTES)
        except zlib.error:
            return []
    lines = head.decode("utf-8", "replace").splitlines(keepends=True)
    if lines and len(head) >= HEAD_BYTES and not lines[-1].endswith("\n"):
        lines.pop()
    return [line.rstrip("\r\n") for line in lines if line.strip()]


def first_line_is(path: Path, check: Callable[[str], bool]) -> bool:
    """Whether the file's first non-empty line passes `check` (which must not raise)."""
    lines = head_lines(path)
    return bool(lines) and check(lines[0])


def status_outcome(status: str, error_code: str | None = None) -> str | None:
    """The timeline's outcome for an HTTP status: `success` for 1xx-3xx (triage reads
    `success` as success and anything else as a failure), else the status and the error
    code (`403 AccessDenied`); None when the log has no status (`-`)."""
    if not status or status == "-":
        return None
    if len(status) == 3 and status.isdigit() and status[0] in "123":
        return "success"
    if error_code and error_code != "-":
        return f"{status} {error_code}"
    return status
