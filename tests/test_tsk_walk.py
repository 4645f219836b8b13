"""The native ext walker (`host/tsk_walk.py`) gives dissect's rows, row for row.

dissect is the reference: each image is walked twice, `fs_rows(..., native=False)` (all
dissect) and the default (ext through struct and The Sleuth Kit), and the rows and the
error log must be equal. The images hold what a walker gets wrong first: names that are
not UTF-8, with newlines or 255 bytes long, fast and slow symlinks, hard links, deleted
entries, devices, sparse and inline files, a directory big enough for an htree index,
times with epoch bits, and hostile ones: a directory loop, damaged directory blocks, odd
superblocks. What the tree should contain is checked against the source in
tests/test_fs_timeline.py; here only the two walkers are compared.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze.parsers import ErrorLog, Row

pytsk3 = pytest.importorskip("pytsk3", reason="the native walker needs the `fast` extra")
pytestmark = pytest.mark.skipif(
    not (shutil.which("mkfs.ext4") and shutil.which("debugfs")),
    reason="needs mkfs.ext4 and debugfs (e2fsprogs) to build and change ext images",
)

ROOT = os.geteuid() == 0


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _tree(root: Path) -> None:
    _write(root / "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    _write(root / "tmp/tool", b"#!/bin/sh\necho hi\n", 0o755)
    _write(root / "tmp/big", bytes(range(256)) * 64, 0o755)  # several blocks
    sparse = _write(root / "home/u/sparse", b"", 0o755)
    with open(sparse, "r+b") as fh:
        fh.seek(300_000)
        fh.write(b"the end")
    _write(root / "home/u/tiny", b"x", 0o755)  # inline where the image has inline_data
    odd = bytes(root / "odd")
    os.makedirs(odd)
    for name in (b"caf\xe9-\xff.bin", b"new\nline", b"L" * 255, b"sp ace", b"\x01ctl"):
        with open(os.path.join(odd, name), "wb") as fh:
            fh.write(name[:8])
    os.symlink(b"/etc/passwd", os.path.join(odd, b"fast"))
    os.symlink(b"/" + b"s" * 200, os.path.join(odd, b"slow"))  # past i_block: in a block
    os.symlink(b"caf\xe9", os.path.join(odd, b"oddlink"))
    _write(root / "srv/a/b/c/deep.txt", b"deep\n")
    os.link(root / "srv/a/b/c/deep.txt", root / "srv/hard")
    for i in range(300):  # more than one block of names: an htree directory
        _write(root / f"many/file-{i:04d}-{'x' * 20}", b"")
    os.mkfifo(root / "srv/fifo")
    if ROOT:
        os.mknod(root / "srv/null", 0o20666, os.makedev(1, 3))
        os.chown(root / "tmp/tool", 100_000, 100_001)  # a user namespace's ids
    os.utime(root / "etc/passwd", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    for doomed in ("gone1", "gone2", "many/file-0007-" + "x" * 20):
        _write(root / doomed, b"deleted later")


def _debugfs(image: Path, *requests: str) -> bytes:
    out = b""
    for request in requests:
        argv = ["debugfs", "-w", "-R", request, str(image)]
        out += subprocess.run(argv, check=True, capture_output=True).stdout
    return out


def _image(work: Path, name: str, options: list[str]) -> Path:
    root = work / f"root-{name}"
    root.mkdir()
    _tree(root)
    image = work / f"{name}.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", *options, "-d", str(root), str(image), "16M"],
        check=True,
        capture_output=True,
    )
    # deleted after the build: their names stay in the directory blocks' slack
    _debugfs(image, "rm /gone1", "rm /gone2", f"rm /many/file-0007-{'x' * 20}")
    _debugfs(
        image,
        "sif /srv/a/b/c/deep.txt mtime_extra 0x1d6f3455",  # epoch bits: past 2038
        "sif /etc/passwd atime_extra 0x7fffffff",
        "sif /srv/hard uid 70000",  # high bits dissect does not read
    )
    return image


FORMATS = {
    "ext4": [],
    "ext4-inline": ["-O", "inline_data", "-I", "256"],
    "ext2-128": ["-t", "ext2", "-I", "128"],
    "ext3-nofiletype": ["-t", "ext3", "-O", "^filetype", "-b", "1024"],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("tsk_walk")
    return {name: _image(work, name, options) for name, options in FORMATS.items()}


def _walk(image: Path, native: bool) -> tuple[list[Row], list[dict[str, Any]]]:
    from dissect.target import Target

    from cloudir.analyze.host.fs_timeline import fs_rows
    from cloudir.analyze.host.target import quiet_dissect

    quiet_dissect()
    errors = ErrorLog()
    rows = list(fs_rows(Target.open(image), "web-1", "ev-1", errors, native=native))
    return rows, errors.entries


def _same(image: Path) -> tuple[list[Row], list[dict[str, Any]]]:
    reference = _walk(image, native=False)
    native = _walk(image, native=True)
    for mine, theirs in zip(native[0], reference[0], strict=False):
        assert mine == theirs
    assert len(native[0]) == len(reference[0])
    assert native[1] == reference[1]
    return native


@pytest.mark.parametrize("name", FORMATS)
def test_the_native_walker_gives_dissects_rows_row_for_row(
    images: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dissect.target.filesystems.extfs import ExtFilesystemEntry

    image = images[name]
    reference = _walk(image, native=False)
    calls = []
    real = ExtFilesystemEntry.lstat
    monkeypatch.setattr(
        ExtFilesystemEntry, "lstat", lambda self: calls.append(self.path) or real(self)
    )
    rows, errors = _walk(image, native=True)
    for mine, theirs in zip(rows, reference[0], strict=True):
        assert mine == theirs
    assert errors == reference[1]
    if name == "ext4-inline":
        # dissect reads an inline directory's parent-inode header as an entry with no
        # name (so "/home/" is inode 2 again) and stops at a zero rec_len: the walker hands
        # such directories to dissect and gets the same, a dissect bug kept visible here
        assert [e["reason"] for e in errors if "/home/:" in e["reason"]]
        assert calls == ["/", "/home/"]
        return
    assert calls == ["/"]  # every entry below the root was read natively
    assert errors == []
    paths = {row.target for row in rows}
    assert "/odd/caf\\xe9-\\xff.bin" in paths and "/odd/new\nline" in paths
    assert "/odd/" + "L" * 255 in paths
    assert not {"/gone1", "/gone2", f"/many/file-0007-{'x' * 20}"} & paths
    assert len([p for p in paths if p.startswith("/many/")]) == 299


def test_the_hard_cases_read_as_dissect_reads_them(images: dict[str, Path]) -> None:
    """The values dissect gives and the walker must give too, even where dissect is not
    the kernel: spelled out, so a change in either shows here."""
    import json
    from datetime import UTC, datetime, timedelta

    from cloudir.analyze.host.rows import iso_time

    EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
    rows, _ = _same(images["ext4"])
    raw = {row.target: json.loads(row.raw) for row in rows}
    assert raw["/odd/slow"]["symlink_target"] == "/" + "s" * 200
    assert raw["/odd/oddlink"]["symlink_target"] == "caf\\xe9"
    assert raw["/srv/hard"]["inode"] == raw["/srv/a/b/c/deep.txt"]["inode"]
    assert raw["/srv/hard"]["uid"] == 70000 & 0xFFFF  # dissect reads the low 16 bits
    assert raw["/etc/passwd"]["mtime"] == "2017-07-14T02:40:00+00:00"  # mkfs keeps seconds
    # unsigned seconds plus the epoch bits (the kernel reads the seconds as signed)
    epoch = (1_600_000_000 | 3 << 32) * 10**6 + 0x7FFFFFFF // 4 // 1000
    assert raw["/etc/passwd"]["atime"] == iso_time(EPOCH + timedelta(microseconds=epoch))
    assert raw["/home/u/sparse"]["sha256"] == _sha256(b"\0" * 300_000 + b"the end")
    assert raw["/tmp/big"]["sha256"] == _sha256(bytes(range(256)) * 64)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- hostile images: the same rows and errors as dissect, never a traceback or a loop ------
def _block_of(image: Path, path: str) -> tuple[int, int]:
    block = int(_debugfs(image, f"bmap {path} 0"))
    size = int(_debugfs(image, "stats").split(b"Block size:")[1].split()[0])
    return block, size


def _patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _loop(image: Path) -> None:
    _debugfs(image, "link /srv /srv/a/b/loop")  # a second name for an ancestor directory


def _ff_block(image: Path) -> None:
    block, size = _block_of(image, "/srv")
    _patch(image, block * size, b"\xff" * size)


def _zero_rec_len(image: Path) -> None:
    block, size = _block_of(image, "/odd")
    _patch(image, block * size + 4, b"\0\0")  # "."'s rec_len


def _wild_inode(image: Path) -> None:
    block, size = _block_of(image, "/srv/a")
    _patch(image, block * size + 24, struct.pack("<I", 0x7FFFFFF0))  # "b" after "." ".."


def _free_inode(image: Path) -> None:
    block, size = _block_of(image, "/srv/a")
    _patch(image, block * size + 24, struct.pack("<I", 4000))  # an inode never used


def _huge_directory(image: Path) -> None:
    _debugfs(image, "sif /srv/a size 0x7fffffffff")


def _superblock(offset: int, fmt: str, value: int) -> Any:
    def corrupt(image: Path) -> None:
        _patch(image, 1024 + offset, struct.pack(fmt, value))

    return corrupt


HOSTILE = {
    "directory loop": _loop,
    "directory block of 0xff": _ff_block,
    "zero rec_len": _zero_rec_len,
    "inode number out of range": _wild_inode,
    "an unused inode": _free_inode,
    "directory size of 512 GiB": _huge_directory,
    "inode size 3": _superblock(88, "<H", 3),
    "descriptor size 7": _superblock(0xFE, "<H", 7),
    "inodes count off by one": _superblock(0, "<I", 4097),
}


@pytest.mark.parametrize("damage", HOSTILE)
def test_a_hostile_image_gives_dissects_rows_and_errors(
    images: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    image = tmp_path / "hostile.img"
    shutil.copyfile(images["ext4"], image)
    HOSTILE[damage](image)
    rows, errors = _same(image)
    assert rows  # the walk went on past the damage
    if damage == "directory loop":
        (error,) = errors
        assert error["reason"].startswith("/srv/a/b/loop: directory inode ")
        assert error["reason"].endswith("already walked at another path; not walked again")


def test_a_superblock_nothing_can_read_is_one_line(images: dict[str, Path], tmp_path: Path) -> None:
    from cloudir.analyze.host.target import open_target
    from cloudir.errors import EvidenceError

    image = tmp_path / "nosb.img"
    shutil.copyfile(images["ext4"], image)
    _patch(image, 1024 + 56, b"\0\0")  # the ext magic
    with pytest.raises(EvidenceError) as caught:
        open_target(image)
    assert "\n" not in str(caught.value) and "no file system found" in str(caught.value)


def test_without_pytsk3_dissect_reads_everything(
    images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudir.analyze.host import tsk_walk

    reference = _walk(images["ext4"], native=False)
    monkeypatch.setattr(tsk_walk, "pytsk3", None)
    assert _walk(images["ext4"], native=True) == reference
