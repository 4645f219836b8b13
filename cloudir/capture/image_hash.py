"""The SHA-256 of a sparse disk image, either after the fact or while it is being filled.

A downloaded snapshot is written out of order, but its custody hash is over the bytes in
order. Hashing it only once the last block lands leaves the CPU idle during the download
and then makes the responder wait for a full re-read; `FrontierHasher` instead follows
the front of the blocks already on disk, so by the time the download ends only the bytes
after the last block (usually a hole) are left to hash.

Holes are hashed as zeros without reading them (`cloudir.sparse`): the digest is the one
a plain read of the file gives.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloudir.errors import EvidenceError
from cloudir.sparse import ShortRead, Spans

CHUNK = 4 << 20  # large enough that hashing is CPU-bound, not syscall-bound


class _Spans:
    """`sparse.Spans` for an image: a short read is an evidence problem naming the file."""

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label
        self._spans = Spans(fd, CHUNK)

    def hash(self, digest: Any, start: int, end: int) -> None:
        """Feed bytes [start, end) of the file to `digest`, holes as zeros."""
        try:
            self._spans.hash(digest, start, end)
        except ShortRead as exc:
            raise EvidenceError(f"{self.label}: {exc.strerror}") from None


def hash_image(path: Path, size: int) -> str:
    """SHA-256 of the first `size` bytes of the image, in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        _Spans(fh.fileno(), str(path)).hash(digest, 0, size)
    return digest.hexdigest()


class FrontierHasher:
    """Hashes an image that is being written block by block, up to the first block not
    yet on disk, in a thread of its own (hashlib releases the GIL on large buffers).

    `on_disk(index)` must only say True for blocks whose bytes a read of `fd` returns;
    blocks not in `indices` are holes and count as on disk from the start. Only the
    writer calls `nudge`; `finish` returns the digest once every block is on disk.
    """

    def __init__(
        self,
        fd: int,
        label: str,
        size: int,
        block_size: int,
        indices: Sequence[int],
        on_disk: Callable[[int], bool],
    ) -> None:
        self.size = size
        self.block_size = block_size
        self.indices = indices  # sorted
        self.on_disk = on_disk
        self.digest = hashlib.sha256()
        self.hashed_to = 0
        self._spans = _Spans(fd, label)
        self._next = 0  # position in `indices` of the first block not hashed yet
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="image-hash", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """More blocks are on disk: the front may move."""
        self._wake.set()

    def finish(self) -> str:
        """The digest of the whole image; every block must be on disk by now."""
        self._stop()
        if self._error is not None:
            raise self._error
        if self.hashed_to != self.size:
            missing = self.indices[self._next] if self._next < len(self.indices) else None
            raise EvidenceError(
                f"{self._spans.label}: hashed {self.hashed_to} of {self.size} bytes; "
                f"block {missing} was never written"
            )
        return self.digest.hexdigest()

    def abandon(self) -> None:
        """The download failed: stop hashing; the partial image will be hashed on resume."""
        self._stop()

    def _stop(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()

    def _front(self) -> int:
        """Offset of the first listed block not on disk yet (the image size if none)."""
        while self._next < len(self.indices) and self.on_disk(self.indices[self._next]):
            self._next += 1
        if self._next < len(self.indices):
            return self.indices[self._next] * self.block_size
        return self.size

    def _run(self) -> None:
        try:
            while True:
                closing = self._closing
                front = self._front()
                if front > self.hashed_to:
                    self._spans.hash(self.digest, self.hashed_to, front)
                    # hashed pages are done with: start writing them back (the final
                    # fsync is then short) and keep a large image out of the page cache
                    os.posix_fadvise(
                        self._spans.fd,
                        self.hashed_to,
                        front - self.hashed_to,
                        os.POSIX_FADV_DONTNEED,
                    )
                    self.hashed_to = front
                if self.hashed_to >= self.size or closing:
                    return
                self._wake.wait()
                self._wake.clear()
        except BaseException as exc:  # reported by finish()
            self._error = exc
