"""A file system tree the responder holds (a mounted image, a copied root) as one tar.

Copying such a tree file by file would lose what an examiner needs from it: symbolic
links (which must never be followed on the examiner's machine), owners, modes, device
nodes and times. A tar keeps all of them as data, dissect reads it as a file system
without extracting anything, and the case holds one file with one hash.

The tar is produced by a thread and handed over in bounded chunks, so a tree of any size
streams into the case without being held in memory.
"""

from __future__ import annotations

import os
import queue
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cloudir.errors import EvidenceError

CHUNK = 1 << 20
QUEUE_CHUNKS = 16  # at most this many chunks in flight between the tar thread and the case
_ROOT_MARKERS = ("usr", "var", "home", "bin", "boot", "opt", "Windows")


def looks_like_root_fs(path: Path) -> bool:
    """A folder laid out as an operating system's root: `etc` (or `Windows`) and more."""
    if not path.is_dir() or path.is_symlink():
        return False
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:  # an unreadable folder: captured file by file, its problem named there
        return False
    return ("etc" in names or "Windows" in names) and len(names & set(_ROOT_MARKERS)) >= 1


class _QueueSink:
    """The file object tarfile writes to: full chunks go to the queue."""

    def __init__(self, out: queue.Queue[bytes | BaseException | None]) -> None:
        self.out = out
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self.out.put(bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]
        return len(data)

    def close(self) -> None:
        if self.buffer:
            self.out.put(bytes(self.buffer))
            self.buffer.clear()


class TreeCounts:
    def __init__(self) -> None:
        self.entries = 0
        self.links = 0
        self.problems: list[str] = []


def tree_tar_chunks(root: Path, counts: TreeCounts) -> Iterator[bytes]:
    """The tree under `root` as a POSIX tar stream; what cannot be read is named in
    `counts.problems` (and left out), never silently dropped."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_CHUNKS)
    stop = threading.Event()

    def produce() -> None:
        sink = _QueueSink(chunks)
        try:
            # typeshed wants a seekable, readable fileobj; stream mode "w|" only writes
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path, arcname in _entries(root, counts):
                    if stop.is_set():
                        return
                    _add(tar, path, arcname, counts)
            sink.close()
            chunks.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            chunks.put(exc)

    worker = threading.Thread(target=produce, name="tree-tar", daemon=True)
    worker.start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def _entries(root: Path, counts: TreeCounts) -> Iterator[tuple[Path, str]]:
    """Every entry under root, folders first, sorted, links not followed."""

    def unreadable(exc: OSError) -> None:
        counts.problems.append(f"{exc.filename}: cannot be listed ({exc.strerror})")

    yield root, "."
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=unreadable):
        dirnames.sort()
        here = Path(dirpath)
        for name in dirnames + sorted(filenames):
            path = here / name
            yield path, "./" + path.relative_to(root).as_posix()


def _add(tar: tarfile.TarFile, path: Path, arcname: str, counts: TreeCounts) -> None:
    try:
        info = tar.gettarinfo(str(path), arcname=arcname)  # lstat: a link stays a link
    except OSError as exc:
        counts.problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return
    if info is None:  # a socket: nothing a tar can hold
        counts.problems.append(f"{path}: a socket, recorded nowhere")
        return
    counts.entries += 1
    if info.issym() or info.islnk():
        counts.links += 1
    if not info.isreg():
        tar.addfile(info)
        return
    try:
        fh = _open_member(path)  # opened before the header is written
    except OSError as exc:
        counts.problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return
    with fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode):
            counts.problems.append(f"{path}: no longer a regular file when it was opened")
            return
        if before.st_size != info.size:
            raise EvidenceError(
                f"{path}: changed between listing and reading ({info.size} bytes, then "
                f"{before.st_size}); the tar was not kept: capture the tree again"
            )
        try:
            tar.addfile(info, fh)
        except OSError as exc:  # the header is out: the tar cannot be mended, only redone
            raise EvidenceError(
                f"{path}: changed or failed while it was read ({exc}); capture the tree again"
            ) from exc
        # A tar holding a member that matches no one state of its file is not kept: the
        # run fails, nothing is recorded, and the next run makes the tar again.
        reason = change_between(before, os.fstat(fh.fileno()), info.size, path)
        if reason:
            raise EvidenceError(
                f"{path}: changed while it was read ({reason}); the tar was not kept: "
                "capture the tree again once nothing writes to it"
            )


def _open_member(path: Path) -> BinaryIO:
    """Never follows a link and never waits on a FIFO swapped in since the lstat."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def change_between(before: os.stat_result, after: os.stat_result, read: int, path: Path) -> str:
    """Why a file copied from `before` to `after` is not one state of it; "" if it held
    still (same size, mtime and ctime on the open descriptor, every byte read, and the
    path still naming that inode)."""
    if read != before.st_size:
        return f"{read} bytes read, {before.st_size} when opened"
    for label in ("size", "mtime_ns", "ctime_ns"):
        if getattr(before, f"st_{label}") != getattr(after, f"st_{label}"):
            return f"its {label.removesuffix('_ns')} changed"
    try:
        now = os.lstat(path)
    except OSError:
        return "it was removed"
    if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
        return "another file was put in its place"
    return ""
