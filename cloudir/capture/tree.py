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
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cloudir.errors import EvidenceError

CHUNK = 1 << 20
QUEUE_CHUNKS = 16  # at most this many chunks in flight between the tar thread and the case
_ROOT_MARKERS = ("usr", "var", "home", "bin", "boot", "opt", "Windows")


def looks_like_root_fs(path: Path) -> bool:
    """A folder laid out as an operating system's root: `etc` (or `Windows`) and more."""
    if not path.is_dir() or path.is_symlink():
        return False
    names = {p.name for p in path.iterdir()}
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
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
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
        fh = open(path, "rb")  # noqa: SIM115 - opened before the header is written
    except OSError as exc:
        counts.problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return
    with fh:
        try:
            tar.addfile(info, fh)
        except OSError as exc:  # the header is out: the tar cannot be mended, only redone
            raise EvidenceError(
                f"{path}: changed or failed while it was read ({exc}); capture the tree again"
            ) from exc
