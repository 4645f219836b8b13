"""The export's chunks as the case stores them (`containers._counted`): gathered in one
reused buffer, every byte once and in order, whatever sizes the engine sends.

No engine: the chunks are generated. test_capture_container.py compares a real export
with the SDK's own stream.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudir.capture import containers
from cloudir.case import Case

SMALL = 64  # the buffer's size in these tests, so that every case crosses it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3 * SMALL), max_size=40))
def test_gathered_chunks_store_every_byte_in_order(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]
) -> None:
    data = b"".join(chunks)
    counted: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(containers, "COALESCE", SMALL)
        gathered = containers._counted(iter(chunks), threading.Event(), counted.append)
        case = Case.open_or_create(tmp_path_factory.mktemp("case"))
        sizes: list[int] = []

        def watched() -> Iterator[bytes | memoryview]:
            for chunk in gathered:
                sizes.append(len(chunk))
                yield chunk

        record = case.store_stream("item", "fs.tar", watched())
    assert (case.root / record.path).read_bytes() == data
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(counted) == len(data) == record.bytes
    assert counted == sizes and 0 not in sizes
    # gathered up to the buffer's size; only a chunk larger than it comes whole
    assert all(size <= max([SMALL, *map(len, chunks)]) for size in sizes)


def test_a_cancelled_capture_stops_before_the_next_chunk(tmp_path: Path) -> None:
    cancel = threading.Event()

    def engine() -> Iterator[bytes]:
        yield b"a" * 10
        cancel.set()
        yield b"b" * 10
        raise AssertionError("read on after the cancel")

    gathered = containers._counted(engine(), cancel, lambda _: None)
    with pytest.raises(containers._Interrupted):
        list(gathered)
