"""SHA-256 of files with holes, without reading the holes.

A downloaded EBS image is mostly holes (the blocks AWS never stored). Reading a hole is
not free: the kernel fills a fresh page-cache page with zeros for every 4 KiB, which
measured 2.3 CPU seconds per GiB here on top of the hash itself (a 1 GiB hole: 2.9 CPU-s
read, 0.6 CPU-s fed from a shared zero buffer). SEEK_DATA/SEEK_HOLE say where the holes
are, and the same zero buffer is fed to the digest instead. Filesystems may report a hole
as data (then it is read, and is zeros) but never data as a hole, so the digest is the
one a plain read of the file gives.

Core module (no capture imports): `case.sha256_file` (verify, resume checks) and the
download's whole-image hash (`capture/image_hash.py`) share it.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from typing import Any

ZERO_CHUNK = 4 << 20  # one update per 4 MiB of hole: hashing is CPU-bound, not call-bound


@functools.cache
def zeros() -> memoryview:
    """One read-only zero buffer for the process. bytes(n) is calloc'd, so its pages stay
    the kernel's shared zero page: hashing from it costs no memory."""
    return memoryview(bytes(ZERO_CHUNK))


class ShortRead(OSError):
    """The file ended inside a range that was data when the range was looked up."""


class Spans:
    """Feeds byte ranges of one open file to a digest, holes as zeros, data read into one
    reusable buffer."""

    def __init__(self, fd: int, chunk: int) -> None:
        self.fd = fd
        self.buffer = memoryview(bytearray(chunk))

    def hash(
        self,
        digest: Any,
        start: int,
        end: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Feed bytes [start, end) of the file to `digest`; ShortRead if it ends sooner."""
        pos = start
        blank = zeros()
        while pos < end:
            data_at = _seek(self.fd, pos, os.SEEK_DATA, end)
            while pos < data_at:  # a hole
                step = min(len(blank), data_at - pos)
                digest.update(blank[:step])
                pos += step
                if on_bytes:
                    on_bytes(step)
            hole_at = _seek(self.fd, pos, os.SEEK_HOLE, end)
            while pos < hole_at:  # data
                n = os.preadv(self.fd, [self.buffer[: min(len(self.buffer), hole_at - pos)]], pos)
                if n <= 0:
                    raise ShortRead(errno.EIO, f"short read at offset {pos}")
                digest.update(self.buffer[:n])
                pos += n
                if on_bytes:
                    on_bytes(n)


def _seek(fd: int, pos: int, whence: int, end: int) -> int:
    """lseek for SEEK_DATA/SEEK_HOLE, bounded by `end`. ENXIO means only a hole follows; a
    filesystem that cannot tell holes (EINVAL) is read as data from here to `end`."""
    if pos >= end:
        return end
    try:
        return min(os.lseek(fd, pos, whence), end)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return end
        return pos if whence == os.SEEK_DATA else end
