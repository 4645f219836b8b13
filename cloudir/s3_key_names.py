"""The name an S3 object gets in a case: an injective, reversible encoding of its key.

Shared by every S3 capture (which names files with it) and by the parsers that need
the key back from a file's name (an export task's stream name is in its key).
"""

from __future__ import annotations

import re

from cloudir.case import PARTIAL_SUFFIX

# An S3 key is any UTF-8 string up to 1024 bytes: `a/./b`, `a/x/../b`, `a//b`, `a/` and
# `a/b` are five different objects. A file system (and the case's own name cleaning)
# would fold several of them into one path, so the name an object gets in the case is an
# injective, reversible encoding of its key, never a normalisation:
# - the key is split on "/"; each segment becomes one path component;
# - a segment made only of [A-Za-z0-9._-], starting with a letter or digit, not ending with
#   "." or "_", at most 100 characters, is kept as it is when it is a folder without a "."
#   or a file with one (`2024/07/31/<name>.json.gz`: every genuine CloudTrail key);
# - any other segment is escaped: bytes outside [A-Za-z0-9.] become `_XX` (and a final "."
#   becomes `_2E`), written as `-<escaped>` for a file and `-<escaped>-` for a folder, so a
#   file and a folder of one name (`a` and `a/b`) never meet and `.`, `..` and empty
#   segments are plain names;
# - a name ending in `.partial` (what the case clears as an interrupted run's leftover)
#   has that "." escaped too;
# - an escaped segment longer than 100 characters is cut into `--<piece>` folders followed
#   by its last piece, so no component passes the 255-byte file name limit.
# `key_for_evidence_name` reverses it; custody also keeps the key itself.
_PLAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9-])?$")
_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_PART_MAX = 100
_ESCAPE = re.compile(r"_([0-9A-F]{2})")
_ESCAPED_BODY = re.compile(r"^(?:[A-Za-z0-9.]|_[0-9A-F]{2})*$")


def evidence_name_for_key(rest: str) -> str:
    """`logs/` + the injective encoding of a key (the part after the region folder)."""
    segments = rest.split("/")
    parts: list[str] = []
    for number, segment in enumerate(segments):
        parts.extend(_encode_segment(segment, is_file=number == len(segments) - 1))
    return "logs/" + "/".join(parts)


def key_for_evidence_name(name: str) -> str:
    """The key part `evidence_name_for_key` encoded; ValueError for a name it never makes."""
    parts = name.split("/")
    if parts[0] == "versions":  # versions/<ETag as a folder>/logs/...
        after = 1
        while after < len(parts) and parts[after].startswith("--") and len(parts[after]) > 2:
            after += 1
        parts = parts[after + 1 :] or [""]
    if parts[0] != "logs" or len(parts) < 2:
        raise ValueError(f"{name!r} is not an encoded S3 key")
    segments: list[str] = []
    pieces: list[str] = []
    for number, part in enumerate(parts[1:], 2):
        is_file = number == len(parts)
        if part.startswith("--") and len(part) > 2 and not is_file:
            if not _ESCAPED_BODY.match(part[2:]):
                raise ValueError(f"{name!r}: {part!r} is not a cut segment")
            pieces.append(part[2:])
            continue
        if pieces or not _plain(part, is_file):
            body = _escaped_body(part, is_file)
            segments.append(_unescape("".join(pieces) + body))
            pieces = []
        else:
            segments.append(part)
    if pieces:
        raise ValueError(f"{name!r} ends inside a cut segment")
    return "/".join(segments)


def _plain(segment: str, is_file: bool) -> bool:
    return (
        len(segment) <= _PART_MAX
        and _PLAIN.match(segment) is not None
        and ("." in segment) == is_file
        and not segment.endswith(PARTIAL_SUFFIX)
    )


def _encode_segment(segment: str, is_file: bool) -> list[str]:
    if _plain(segment, is_file):
        return [segment]
    tokens = [
        chr(byte) if byte in _LITERAL else f"_{byte:02X}"
        for byte in segment.encode("utf-8", "surrogatepass")
    ]
    pieces: list[list[str]] = [[]]
    for token in tokens:
        if sum(map(len, pieces[-1])) + len(token) > _PART_MAX - 4:
            pieces.append([])
        pieces[-1].append(token)
    for piece in pieces:
        if piece and piece[-1] == ".":  # a name never ends with "." (the case strips it)
            piece[-1] = "_2E"
        if "".join(piece[-len(PARTIAL_SUFFIX) :]) == PARTIAL_SUFFIX:
            piece[-len(PARTIAL_SUFFIX)] = "_2E"  # the case clears *.partial as leftovers
    parts = ["--" + "".join(piece) for piece in pieces[:-1]]
    last = "-" + "".join(pieces[-1])
    return [*parts, last if is_file else last + "-"]


def _escaped_body(part: str, is_file: bool) -> str:
    shaped = part.startswith("-") if is_file else (len(part) >= 2 and part[0] == part[-1] == "-")
    body = part[1:] if is_file else part[1:-1]
    if not shaped or body.startswith("-") or not _ESCAPED_BODY.match(body):
        raise ValueError(f"{part!r} is not an encoded segment")
    return body


def _unescape(body: str) -> str:
    data = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(body):
        data += body[pos : match.start()].encode()
        data.append(int(match.group(1), 16))
        pos = match.end()
    data += body[pos:].encode()
    return data.decode("utf-8", "surrogatepass")


def version_name(etag: str, name: str) -> str:
    """Where a later version of an object goes: `versions/<escaped ETag>/logs/...`, a
    namespace `logs/` names never enter, so it stays injective over (key, ETag)."""
    return "/".join(["versions", *_encode_segment(etag, is_file=False), name])
