"""Large evidence files flushed to disk as they grow: the stored bytes, the recorded
SHA-256 and the guarantee that custody only records what is on disk are unchanged.

The engine tests (test_capture_container.py) compare a real export with the SDK's own
stream.
"""

from __future__ import annotations

import errno
import hashlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudir import write_behind
from cloudir.case import Case, NoSpaceError
from tests.conftest import custody


def reused_buffer_chunks(data: bytes, size: int) -> Iterator[memoryview]:
    """`data` in chunks of one buffer overwritten after each is handed out: a writer
    that kept a chunk past the next would store garbage."""
    buffer = bytearray(size)
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        buffer[: len(piece)] = piece
        yield memoryview(buffer)[: len(piece)]
        buffer[:] = b"\xff" * size


@pytest.mark.parametrize("size", [1000, 1 << 16, 3 << 20])
def test_stored_bytes_and_hash_are_the_streams(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes((5 << 20) + 12345)
    case = Case.open_or_create(tmp_path / "case")
    record = case.store_stream("item", "fs.tar", reused_buffer_chunks(data, size))
    assert (tmp_path / "case" / record.path).read_bytes() == data
    assert (record.sha256, record.bytes) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_large_file_is_flushed_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = threading.Event()
    monkeypatch.setattr(write_behind, "FLUSH_EVERY", 1 << 20)
    monkeypatch.setattr(write_behind, "_datasync", lambda fd: synced.set())
    data = random.Random(1).randbytes(6 << 20)

    def chunks() -> Iterator[memoryview]:
        for n, chunk in enumerate(reused_buffer_chunks(data, 1 << 20)):
            if n == 5:
                assert synced.wait(30)  # an early flush, before the store's own fsync
            yield chunk

    case = Case.open_or_create(tmp_path / "case")
    record = case.store_stream("item", "big.bin", chunks())
    assert (tmp_path / "case" / record.path).read_bytes() == data
    assert record.sha256 == hashlib.sha256(data).hexdigest()


def test_a_write_back_error_seen_early_is_never_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux reports a write-back error to one fsync only: when the early flush gets it,
    the store must fail even if the final fsync then succeeds."""
    failed = threading.Event()

    def failing(fd: int) -> None:
        failed.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    def chunks() -> Iterator[bytes]:
        yield from (bytes(1 << 20) for _ in range(2))
        assert failed.wait(30)  # the early flush has run (and failed) before the end
        yield bytes(1 << 20)

    monkeypatch.setattr(write_behind, "FLUSH_EVERY", 1 << 20)
    monkeypatch.setattr(write_behind, "_datasync", failing)
    case = Case.open_or_create(tmp_path / "case")
    with pytest.raises(NoSpaceError, match=r"big\.bin"):
        case.store_stream("item", "big.bin", chunks())
    folder = tmp_path / "case" / "evidence" / "item"
    assert not list(folder.iterdir())  # no file, no partial
    assert not [f for e in custody(tmp_path / "case") for f in e["files"]]


def test_a_failing_source_stops_the_flusher(
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
    assert "flusher" not in left
