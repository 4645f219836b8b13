"""Large evidence files hashed beside their write and flushed as they grow: the stored
bytes, the recorded SHA-256 and the on-disk guarantee are those of the plain loop.

No engine: the export reader is fed by a fake HTTP body; the engine tests
(test_capture_container.py) compare a real export with the SDK's own stream.
"""

from __future__ import annotations

import errno
import hashlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.exceptions

from cloudir import write_behind
from cloudir.capture import engine_stream
from cloudir.case import Case, NoSpaceError
from tests.conftest import custody


def reused_buffer_chunks(data: bytes, size: int) -> Iterator[memoryview]:
    """`data` in chunks of one buffer overwritten after each is handed out, as the
    export reader does: a writer that kept a chunk past the next would store garbage."""
    buffer = bytearray(size)
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        buffer[: len(piece)] = piece
        yield memoryview(buffer)[: len(piece)]
        buffer[:] = b"\xff" * size


@pytest.mark.parametrize("size", [1000, write_behind.HASH_BESIDE, 3 * write_behind.HASH_BESIDE])
def test_stored_bytes_and_hash_are_the_streams(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(5 * write_behind.HASH_BESIDE + 12345)
    case = Case.open_or_create(tmp_path / "case")
    record = case.store_stream("item", "fs.tar", reused_buffer_chunks(data, size))
    assert (tmp_path / "case" / record.path).read_bytes() == data
    assert (record.sha256, record.bytes) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_large_file_is_flushed_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(write_behind, "FLUSH_EVERY", 1 << 20)
    monkeypatch.setattr(write_behind, "_datasync", lambda fd: synced.append(fd))
    data = random.Random(1).randbytes(6 << 20)
    case = Case.open_or_create(tmp_path / "case")
    record = case.store_stream("item", "big.bin", reused_buffer_chunks(data, 1 << 20))
    assert (tmp_path / "case" / record.path).read_bytes() == data
    assert synced  # at least one early flush; the final fsync is the store's own


def test_a_write_back_error_seen_early_is_never_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux reports a write-back error to one fsync only: when the early flush gets it,
    the store must fail even if the final fsync then succeeds."""

    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write_behind, "FLUSH_EVERY", 1 << 20)
    monkeypatch.setattr(write_behind, "_datasync", failing)
    case = Case.open_or_create(tmp_path / "case")
    data = bytes(4 << 20)
    with pytest.raises(NoSpaceError, match=r"big\.bin"):
        case.store_stream("item", "big.bin", reused_buffer_chunks(data, 1 << 20))
    folder = tmp_path / "case" / "evidence" / "item"
    assert not list(folder.iterdir())  # no file, no partial
    assert not [f for e in custody(tmp_path / "case") for f in e["files"]]


def test_a_write_error_waits_for_the_hash_and_stops_the_flusher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "FLUSH_EVERY", 1 << 20)

    def chunks() -> Iterator[bytes]:
        yield from (bytes(2 << 20) for _ in range(3))
        raise OSError(errno.EIO, "Input/output error")

    case = Case.open_or_create(tmp_path / "case")
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(OSError, match="Input/output error"):
        case.store_stream("item", "big.bin", chunks())
    left = {t.name for t in threading.enumerate()} - before
    assert not left & {"flusher", "hash-beside"}


# -- the export reader ------------------------------------------------------------------
class FakeBody:
    """An http.client response's readinto over `data`, in reads of `step` bytes; then
    `failure` raised, or (`stall`) a wait until `wake` is called."""

    def __init__(
        self, data: bytes, step: int, failure: BaseException | None = None, stall: bool = False
    ) -> None:
        self.data, self.step, self.failure, self.stall = data, step, failure, stall
        self.offset = 0
        self.woken = threading.Event()

    def readinto(self, buffer: Any) -> int:
        size = 0
        while size < len(buffer) and self.offset < len(self.data):  # fills, as http.client
            piece = self.data[self.offset : self.offset + min(self.step, len(buffer) - size)]
            buffer[size : size + len(piece)] = piece
            size += len(piece)
            self.offset += len(piece)
        if size:
            return size
        if self.failure is not None:
            raise self.failure
        if self.stall:
            self.woken.wait(30)
            raise OSError(errno.EBADF, "shut down")
        return 0

    def wake(self) -> None:
        self.woken.set()


def prefetch(body: FakeBody, stopped: Any = lambda: None) -> Iterator[memoryview]:
    return engine_stream._Prefetch(body, body.wake, stopped).chunks()  # type: ignore[arg-type]


def test_the_reader_hands_out_the_stream_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_stream, "BUFFER", 1000)
    data = random.Random(2).randbytes(10_500)
    got = b"".join(bytes(c) for c in prefetch(FakeBody(data, 32)))
    assert got == data


def test_a_stream_cut_short_is_the_engines_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.client

    monkeypatch.setattr(engine_stream, "BUFFER", 1000)
    body = FakeBody(bytes(2500), 100, failure=http.client.IncompleteRead(b"", 10))
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        for _ in prefetch(body):
            pass


def test_a_stalled_stream_is_abandoned_when_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the engine sends nothing: the wait ends, the reader is woken."""
    monkeypatch.setattr(engine_stream, "BUFFER", 1000)
    monkeypatch.setattr(engine_stream, "_POLL", 0.01)
    body = FakeBody(bytes(1500), 100, stall=True)
    cancel = threading.Event()

    def stopped() -> None:
        if cancel.is_set():
            raise KeyboardInterrupt

    chunks = prefetch(body, stopped)
    assert len(next(chunks)) == 1000
    assert len(next(chunks)) == 500
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        next(chunks)
    timer.join()
    assert body.woken.is_set()
    assert "export-reader" not in {t.name for t in threading.enumerate()}
