"""The whole-image SHA-256, after the fact and while blocks land out of order."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from cloudir.capture.image_hash import CHUNK, FrontierHasher, hash_image
from cloudir.case import sha256_file
from cloudir.errors import EvidenceError

BLOCK = 64 * 1024


def _sparse_image(path: Path, size: int, blocks: dict[int, bytes]) -> None:
    with open(path, "wb") as out:
        out.truncate(size)
        for index, data in blocks.items():
            out.seek(index * BLOCK)
            out.write(data)


def _plain_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_hash_image_equals_a_plain_read_of_a_sparse_file(tmp_path: Path) -> None:
    size = 3 * CHUNK + 5 * BLOCK  # holes longer than one read, a data tail
    blocks = {0: os.urandom(BLOCK), 70: os.urandom(BLOCK), size // BLOCK - 1: b"\x01" * BLOCK}
    image = tmp_path / "image.raw"
    _sparse_image(image, size, blocks)
    assert hash_image(image, size) == _plain_sha256(image)


def test_sha256_file_skips_holes_and_gives_the_plain_read_hash(tmp_path: Path) -> None:
    """verify and resume checks hash images through sha256_file: same digest, same size,
    and progress that counts the holes' bytes too."""
    size = 3 * CHUNK + 7 * BLOCK + 123  # a hole longer than the zero buffer, a ragged end
    blocks = {1: os.urandom(BLOCK), 150: os.urandom(BLOCK)}
    image = tmp_path / "image.raw"
    _sparse_image(image, size, blocks)
    seen: list[int] = []
    assert sha256_file(image, seen.append) == (_plain_sha256(image), size)
    assert sum(seen) == size
    solid = tmp_path / "solid.bin"  # no holes at all; and an empty file
    solid.write_bytes(os.urandom(CHUNK + 5))
    assert sha256_file(solid) == (_plain_sha256(solid), CHUNK + 5)
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == (hashlib.sha256().hexdigest(), 0)


def test_sha256_file_of_a_file_that_grows_while_hashed_is_its_bytes(tmp_path: Path) -> None:
    """A size that changes under the hash sends it back to plain reads of the whole file."""
    image = tmp_path / "image.raw"
    _sparse_image(image, 2 * CHUNK, {0: os.urandom(BLOCK)})

    def grow(_n: int) -> None:
        if image.stat().st_size == 2 * CHUNK:
            with open(image, "ab") as out:
                out.write(b"appended by someone else")

    digest, size = sha256_file(image, grow)
    assert (digest, size) == (_plain_sha256(image), 2 * CHUNK + 24)


def test_the_frontier_hash_of_blocks_written_out_of_order_is_the_file_hash(
    tmp_path: Path,
) -> None:
    size = 512 * BLOCK
    rng = random.Random(5)
    listed = sorted(rng.sample(range(512), 180))  # the rest are holes
    image = tmp_path / "image.raw"
    image.write_bytes(b"")
    os.truncate(image, size)
    on_disk: set[int] = set()
    fd = os.open(image, os.O_RDWR)
    try:
        hasher = FrontierHasher(fd, "image.raw", size, BLOCK, listed, on_disk.__contains__)
        order = listed[:]
        rng.shuffle(order)
        for index in order:
            os.pwrite(fd, rng.randbytes(BLOCK), index * BLOCK)
            on_disk.add(index)
            hasher.nudge()
        digest = hasher.finish()
    finally:
        os.close(fd)
    assert digest == _plain_sha256(image)


def test_the_frontier_hash_refuses_to_finish_while_a_block_is_missing(tmp_path: Path) -> None:
    size = 8 * BLOCK
    image = tmp_path / "image.raw"
    _sparse_image(image, size, {})
    fd = os.open(image, os.O_RDWR)
    try:
        hasher = FrontierHasher(fd, "image.raw", size, BLOCK, [2, 5], {2}.__contains__)
        with pytest.raises(EvidenceError, match="block 5 was never written"):
            hasher.finish()
    finally:
        os.close(fd)


def test_abandon_stops_the_hash_thread(tmp_path: Path) -> None:
    image = tmp_path / "image.raw"
    _sparse_image(image, 4 * BLOCK, {})
    fd = os.open(image, os.O_RDWR)
    try:
        before = threading.active_count()
        hasher = FrontierHasher(fd, "image.raw", 4 * BLOCK, BLOCK, [1], lambda _i: False)
        hasher.abandon()
        assert threading.active_count() == before
        assert hasher.hashed_to == BLOCK  # the hole before block 1, nothing after it
    finally:
        os.close(fd)
