"""The file system timeline: every entry of a disk image as MACB rows, read through dissect.

When an intruder's tools, a web shell or a changed config file are not in any log, the
file system's own times still say when something was written, read or had its owner or
mode changed. Each entry's modification, access, change and creation (birth) times are
grouped by value, one row per distinct time, named in MACB order as plaso does
("Modification Time; Change Time"), so an investigator sees them beside the other
artifacts. Executables where intruders drop their tools get a SHA-256 to look up.

The walk is iterative over dissect's directory entries (`scandir()`, then the entry's own
`lstat()`), so each entry costs the same whatever its depth or its directory's size.
dissect's `walkfs` plugin (and `DirEntry.stat()`) resolve every path again from the root,
looking each name up in its directory, so an entry costs more the deeper it is and the
bigger its directory: quadratic within a large directory, and about 30x slower than this
walk even with 100 entries per directory (bench/fs_timeline.py).

With pytsk3 installed (the `fast` extra), a directory that is all one ext file system's
(no mount point and nothing dissect made up at or below it) is listed and its entries
read by `tsk_walk.py` instead, several times faster, with the same rows; dissect reads
everything else and whatever that module leaves to it.

What is walked: the target's root view (`target.fs`), which is the root file system with
the others dissect found mounted on it: at their fstab mount points, and at
`/$fs$/fs<N>` for a file system it found on the image but could not place (dissect mounts
a file system there only when it is mounted nowhere else, so nothing is read twice). Both
are on-disk data, so both are walked; the `/$fs$/...` paths say the mount point is not
known. Entries that dissect makes up and that are on no file system of the image (the
`/$fs$` directory itself, the parent directories of a mount point that are missing on
disk, `/dev/<vg>/<lv>` files standing for whole LVM volumes) get no row: they have no
inode and no times, and a volume is not a file. A made-up directory is still walked into,
because a real mount can sit below it. On a plain ext4 image there are none.

Nothing is left out silently: an entry that cannot be read or listed is logged to the
`ErrorLog` with its path and the walk goes on; an entry with no time gets one "No Time"
row. dissect skips the unreadable records of a damaged ext directory without a word, so
on ext a directory that yields fewer subdirectories than its link count promises is
logged too. Symlinks are recorded with their target, never followed, and no directory (by file
system and inode) is walked twice, so a corrupt image with a directory loop ends. Paths
are the image's, kept as text; they are never used on the host's file system.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dissect.target.filesystem import (
    MappedCompressedFile,
    MappedFile,
    VirtualDirectory,
    VirtualFile,
    VirtualFilesystem,
    VirtualSymlink,
)

from cloudir.analyze.host.rows import host_row, iso_time, raw_json
from cloudir.analyze.host.tsk_walk import NativeEntry, Natives
from cloudir.analyze.host.tsk_walk import available as tsk_available
from cloudir.analyze.parsers import ErrorLog, Row

# The entries dissect makes up to lay out a target (parents of mount points, files that
# stand for whole volumes); an archive's members subclass some of them, so exact types.
_INVENTED = (VirtualDirectory, VirtualFile, VirtualSymlink, MappedFile, MappedCompressedFile)

if TYPE_CHECKING:
    from dissect.target import Target

ARTIFACT = "fs:entry"
# Where intruders drop their tools: executables here get a SHA-256.
HASHED_UNDER = ("/tmp", "/dev/shm", "/var/tmp", "/home", "/root")
HASH_CHUNK = 1 << 20
NO_TIME = "No Time"
# MACB order: the letter, the stat field, and what the time means.
_MACB = (
    ("M", "mtime", "Modification Time"),
    ("A", "atime", "Access Time"),
    ("C", "ctime", "Change Time"),
    ("B", "birthtime", "Creation Time"),
)
_TYPES = (
    (stat.S_ISREG, "file", "fs:file"),
    (stat.S_ISDIR, "dir", "fs:dir"),
    (stat.S_ISLNK, "symlink", "fs:symlink"),
    (stat.S_ISFIFO, "fifo", "fs:other"),
    (stat.S_ISSOCK, "socket", "fs:other"),
    (stat.S_ISCHR, "char device", "fs:other"),
    (stat.S_ISBLK, "block device", "fs:other"),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN = frozenset((str, int, type(None)))
_encode = json.JSONEncoder(ensure_ascii=False).encode  # what raw_json's json.dumps does
# C0 controls and DEL read as \xNN in the message, so a name cannot break its line.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def fs_rows(
    target: Target,
    host: str | None,
    evidence_id: str,
    errors: ErrorLog,
    hash_max_bytes: int = 64 << 20,
    native: bool = True,
) -> Iterator[Row]:
    """MACB rows for every entry of `target.fs` (a dissect Target), streamed as it walks.

    Only the stack of directories still to list is held, never the list of entries
    (and, against loops, one key per directory walked).
    Executable regular files under `HASHED_UNDER` up to `hash_max_bytes` get a SHA-256.
    `native`: read ext2/3/4 directories through `tsk_walk` when pytsk3 is installed (the
    same rows, faster); False reads everything through dissect (the tests' reference).
    """
    natives = Natives() if native and tsk_available() else None
    return _Walk(host, evidence_id, errors, hash_max_bytes, natives).rows(target.fs.get("/"))


@dataclass(frozen=True)
class _Directory:
    path: str
    entry: Any
    subdirectories: int | None  # what the link count promises, where it can be trusted


@dataclass
class _Walk:
    """One walk: its stack of directories to list, and the directories already listed."""

    host: str | None
    evidence_id: str
    errors: ErrorLog
    hash_max_bytes: int
    natives: Natives | None = None
    stack: list[_Directory] = field(default_factory=list)
    seen: set[tuple[Any, Any]] = field(default_factory=set)
    subdirectories_found: int = 0  # in the directory being listed

    def rows(self, root: Any) -> Iterator[Row]:
        yield from self.visit("/", root)
        while self.stack:
            directory = self.stack.pop()
            self.subdirectories_found = 0
            for name, entry in _children(directory, self.errors):
                yield from self.visit(f"{directory.path.rstrip('/')}/{name}", entry)
            expected = directory.subdirectories
            if expected is not None and self.subdirectories_found < expected:
                self.errors.add(
                    f"{_text(directory.path)}: subdirectories: {expected} by its link count, "
                    f"{self.subdirectories_found} could be read; the directory may be damaged"
                )

    def visit(self, path: str, entry: Any) -> Iterator[Row]:
        """The entry's rows; a directory not walked yet goes on the stack."""
        on_disk = _on_disk(entry)
        try:
            st = (on_disk or entry).lstat()
        except Exception as exc:
            self.errors.add(f"{_text(path)}: cannot stat: {_reason(exc)}")
            return
        if stat.S_ISDIR(st.st_mode or 0):
            self.subdirectories_found += 1
            key = (st.st_dev, st.st_ino)
            if key in self.seen:
                self.errors.add(
                    f"{_text(path)}: directory inode {st.st_ino} already walked at another "
                    "path; not walked again"
                )
            else:
                self.seen.add(key)
                listed = entry
                if self.natives is not None and on_disk is not None:
                    listed = self.natives.directory(entry, on_disk, st, path) or entry
                self.stack.append(_Directory(path, listed, _subdirectories(on_disk, st)))
        if on_disk is not None:
            yield from _entry_rows(
                path, on_disk, st, self.host, self.evidence_id, self.errors, self.hash_max_bytes
            )


def _subdirectories(on_disk: Any, st: Any) -> int | None:
    """On ext2/3/4 a directory's link count is 2 + its subdirectories (1 when it has too
    many to count); the only sign of entries that dissect silently drops from a damaged
    directory block. Other file systems count links differently, so no check there."""
    if on_disk is None or getattr(on_disk.fs, "__type__", None) != "ext":
        return None
    links = st.st_nlink
    return links - 2 if isinstance(links, int) and links >= 2 else None


def _children(directory: _Directory, errors: ErrorLog) -> Iterator[tuple[str, Any]]:
    """(name, entry) of each entry listed in the directory; what cannot be listed or
    opened is logged and the rest still comes."""
    path = _text(directory.path)
    if isinstance(directory.entry, NativeEntry):
        native = directory.entry.children()
        if native is not None:
            yield from native
            return
        # dissect lists what the native reader leaves to it, as the layered view would:
        # one entry per name ("." and ".." are never listed by dissect's ext reader)
        directory = _Directory(directory.path, directory.entry.dissect(), None)
    try:
        listing = iter(directory.entry.scandir())
    except Exception as exc:
        errors.add(f"{path}: cannot list directory: {_reason(exc)}")
        return
    while True:
        try:
            child = next(listing)
        except StopIteration:
            return
        except Exception as exc:  # a corrupt directory costs the rest of its entries
            errors.add(f"{path}: directory listing stopped: {_reason(exc)}")
            return
        try:
            yield child.name, child.get()
        except Exception as exc:
            errors.add(f"{path}/{_text(child.name)}: unreadable entry: {_reason(exc)}")


def _on_disk(entry: Any) -> Any:
    """The part of a root-view entry that is evidence, or None when dissect made the entry
    up (a virtual directory, a mapped volume). Archive members (a tar export's entries)
    live in a virtual file system too but are the evidence: told apart by their class."""
    for sub in getattr(entry, "entries", None) or [entry]:
        while isinstance(sub, VirtualDirectory) and sub.top is not None:
            sub = sub.top  # a mount point: the mounted file system's root
        if type(sub) in _INVENTED:
            continue
        if not isinstance(sub.fs, VirtualFilesystem) or isinstance(sub, VirtualFile):
            return sub
    return None


def _entry_rows(
    path: str,
    entry: Any,
    st: Any,
    host: str | None,
    evidence_id: str,
    errors: ErrorLog,
    hash_max_bytes: int,
) -> Iterator[Row]:
    mode = st.st_mode or 0
    kind, action = _kind(mode)
    shown = _text(path)
    times = _times(st)
    fields: dict[str, Any] = {
        "path": shown,
        "type": kind,
        "size": st.st_size,
        "mode": f"0o{mode:o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "inode": st.st_ino,
        "mtime": times[0],
        "atime": times[1],
        "ctime": times[2],
        "btime": times[3],
    }
    link = None
    if kind == "symlink":
        try:
            link = _text(entry.readlink())
        except Exception as exc:
            errors.add(f"{shown}: cannot read symlink target: {_reason(exc)}")
        fields["symlink_target"] = link
    if kind == "file" and mode & 0o111 and _hashed_place(path):
        fields.update(_sha256(shown, entry, st.st_size, hash_max_bytes, errors))
    # the values are JSON's own types almost always: then json_value would return each
    # unchanged, and one encode gives the same text
    if all(type(value) in _PLAIN for value in fields.values()):
        raw = _encode(fields)
    else:
        raw = raw_json(fields)
    user = None if st.st_uid is None else str(st.st_uid)
    head = _message_head(shown, link, st, mode)
    for when, letters, desc in _macb_groups(times):
        yield host_row(
            when=when,
            desc=desc,
            artifact=ARTIFACT,
            host=host,
            evidence_id=evidence_id,
            raw=raw,
            message=head + letters,
            user=user,
            action=action,
            target=shown,
        )


def _group_names(indexes: tuple[int, ...]) -> tuple[str, str]:
    letters = "".join(letter if i in indexes else "." for i, (letter, _, _) in enumerate(_MACB))
    return letters, "; ".join(_MACB[i][2] for i in indexes)


# (MACB letters, description) for each set of fields that share a time
_GROUP_NAMES = {
    indexes: _group_names(indexes)
    for indexes in (
        tuple(i for i in range(len(_MACB)) if bits >> i & 1) for bits in range(1, 1 << len(_MACB))
    )
}


def _macb_groups(times: tuple[str | None, ...]) -> list[tuple[str | None, str, str]]:
    """(time, MACB letters, description) per distinct time, in MACB order; one "No Time"
    group when the entry has no time at all, so no entry goes missing."""
    groups: dict[str, tuple[int, ...]] = {}
    for index, when in enumerate(times):
        if when is not None:
            groups[when] = (*groups.get(when, ()), index)
    if not groups:
        return [(None, "....", NO_TIME)]
    return [(when, *_GROUP_NAMES[indexes]) for when, indexes in groups.items()]


def _message_head(path: str, link: str | None, st: Any, mode: int) -> str:
    """`/var/tmp/x (1,234 bytes, -rwxr-xr-x, uid 1001 gid 1001) `, to which each row adds
    its MACB letters: one line."""
    name = path.translate(_CONTROL)
    if link is not None:
        name += f" -> {link.translate(_CONTROL)}"
    size = f"{st.st_size:,}" if isinstance(st.st_size, int) else "?"
    return f"{name} ({size} bytes, {stat.filemode(mode)}, uid {st.st_uid} gid {st.st_gid}) "


def _sha256(
    path: str, entry: Any, size: int | None, limit: int, errors: ErrorLog
) -> dict[str, Any]:
    """The file's SHA-256 read through dissect, or null with why not."""
    if size is not None and size > limit:
        return {"sha256": None, "sha256_skipped": f"larger than {limit} bytes"}
    digest = hashlib.sha256()
    read = 0
    try:
        with entry.open() as fh:
            while chunk := fh.read(HASH_CHUNK):
                read += len(chunk)
                if read > limit:  # the inode's size said otherwise: stop at the limit
                    return {"sha256": None, "sha256_skipped": f"larger than {limit} bytes"}
                digest.update(chunk)
    except Exception as exc:
        errors.add(f"{path}: cannot read for SHA-256: {_reason(exc)}")
        return {"sha256": None, "sha256_skipped": f"unreadable: {_reason(exc)}"}
    return {"sha256": digest.hexdigest()}


def _hashed_place(path: str) -> bool:
    return any(path == place or path.startswith(place + "/") for place in HASHED_UNDER)


def _kind(mode: int) -> tuple[str, str]:
    for test, kind, action in _TYPES:
        if test(mode):
            return kind, action
    return "other", "fs:other"


def _times(st: Any) -> tuple[str | None, ...]:
    """The entry's times in MACB order (`_MACB`)."""
    return tuple(_time(st, name) for _, name, _ in _MACB)


def _time(st: Any, name: str) -> str | None:
    """ISO text from the nanosecond field where there is one; None for no time, zero and
    1970-01-01 (iso_time), or a value no datetime can hold."""
    nanos = getattr(st, f"st_{name}_ns", None)
    if nanos is None:
        seconds = getattr(st, f"st_{name}", None)
        if not isinstance(seconds, int | float):
            return None
        nanos = int(seconds * 1_000_000_000)
    return _iso_ns(nanos)


@lru_cache(maxsize=1 << 16)
def _iso_ns(nanos: int) -> str | None:
    """Cached: an entry's times often share a value, and so do the files one package or
    one image build installed."""
    try:
        return iso_time(_EPOCH + timedelta(microseconds=nanos // 1000))
    except OverflowError:
        return None


def _text(value: str) -> str:
    """Valid UTF-8 text for a name from the image: bytes that were not UTF-8 (which
    dissect hands over as lone surrogates) read as `\\xNN`, so JSON and Arrow take them."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that was never a byte
        data = value.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


def _reason(exc: BaseException) -> str:
    text = _text(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
