"""Work taken off a large evidence write's path, so that a file is hashed and on disk about
when its last byte arrives, and not a hash pass and a flush of the whole file later.

Every file the case stores is written, hashed (SHA-256) and fsynced before custody
records it. For a file of hundreds of MB (a container's export, a disk image) the final
fsync would add a stretch of its own after the last byte arrived. `Flusher` starts the
disk writing early: every `FLUSH_EVERY` bytes a helper thread calls fdatasync, so the
dirty pages go to disk while the stream goes on and the fsync before custody waits for
the last stretch only. It never replaces that fsync. (Hashing on a helper thread was
tried as well and measured no faster on two cores: capture/containers.py says why.)

A write-back error the helper meets is kept and raised by `close`: Linux reports such an
error once per open file, so the final fsync could otherwise succeed after the helper
was told, and custody would record a file that is not on disk.
"""

from __future__ import annotations

import os
import threading

FLUSH_EVERY = 32 << 20  # bytes written between early flushes (none for smaller files)
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class Flusher:
    """fdatasync on a helper thread every `FLUSH_EVERY` bytes written to `fd`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._written = 0
        self._asked = 0  # bytes written when the last flush was asked for
        self._wake = threading.Event()
        self._stop = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        self._written += size
        if self._written - self._asked < FLUSH_EVERY or self._error is not None:
            return
        self._asked = self._written
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the helper (after the flush it may be in), then raise the error it met.
        Must come before the descriptor is closed: the helper must never sync a number
        the process has since given to another file."""
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                _datasync(self.fd)
            except OSError as exc:
                self._error = exc
                return
