"""cloudir.sniff: a file's kind from its first bytes, bounded, never a traceback."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.sniff import DISK_FORMATS, HEAD_BYTES, NOTHING, Sniff, identify, sniff


def _at(offset: int, data: bytes, size: int = 8192) -> bytes:
    out = bytearray(size)
    out[offset : offset + len(data)] = data
    return bytes(out)


def ext_head() -> bytes:
    """The first 4 KiB of an ext4 file system: its superblock at 1024, fields in range."""
    block = bytearray(1024)
    struct.pack_into("<I", block, 0, 65536)  # inodes
    struct.pack_into("<I", block, 24, 2)  # 4 KiB blocks
    struct.pack_into("<I", block, 32, 32768)  # blocks per group
    block[56:58] = b"\x53\xef"
    struct.pack_into("<H", block, 58, 1)  # cleanly unmounted
    struct.pack_into("<I", block, 76, 1)  # dynamic revision
    return bytes(1024) + bytes(block) + bytes(2048)


def _mbr() -> bytes:
    head = bytearray(512)
    head[446] = 0x80
    head[446 + 4] = 0x83  # a Linux partition
    head[510:512] = b"\x55\xaa"
    return bytes(head) + bytes(1024)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TRAIL = json.dumps({"Records": [{"eventName": "ListBuckets"}]}).encode()
SAMPLES = {
    "ext": ext_head(),
    "xfs": _at(0, b"XFSB"),
    "ntfs": _at(3, b"NTFS    ")[:510] + b"\x55\xaa",
    "fat": _at(82, b"FAT32   ", 512)[:510] + b"\x55\xaa",
    "gpt": _mbr()[:512] + b"EFI PART" + bytes(600),
    "mbr": _mbr(),
    "ewf": b"EVF\x09\x0d\x0a\xff\x00\x01" + bytes(100),
    "qcow2": b"QFI\xfb\x00\x00\x00\x03" + bytes(100),
    "vmdk": b"KDMV" + bytes(100),
    "vhdx": b"vhdxfile" + bytes(100),
    "vhd": b"conectix" + bytes(504),
    "vdi": b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
    + struct.pack("<I", 0xBEDA107F)
    + bytes(100),
}


@pytest.mark.parametrize(("expected", "data"), SAMPLES.items())
def test_disk_formats(expected: str, data: bytes) -> None:
    found = identify(data)
    assert found == Sniff(None, expected) and found.disk_image


def test_the_ext_magic_alone_is_not_a_file_system() -> None:
    """0xEF53 at 1080 is in one random file of 65536; the fields around it must fit too."""
    assert identify(_at(1080, b"\x53\xef")) == NOTHING
    mounted = bytearray(ext_head())
    mounted[1024 + 58] = 0  # state 0: mounted, as in a snapshot of a running instance
    assert identify(bytes(mounted)) == Sniff(None, "ext")


def test_a_real_ext4_image(tmp_path: Path) -> None:
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    image = tmp_path / "evidence.bin"
    subprocess.run([mkfs, "-q", "-F", str(image), "4M"], check=True, capture_output=True)
    assert sniff(image) == Sniff(None, "ext")


def test_btrfs_and_a_fixed_vhd_are_found_by_their_probes(tmp_path: Path) -> None:
    btrfs = tmp_path / "b"
    btrfs.write_bytes(_at(0x10040, b"_BHRfS_M", 0x10040 + 4096))
    assert sniff(btrfs) == Sniff(None, "btrfs")
    vhd = tmp_path / "fixed"
    vhd.write_bytes(bytes(20000) + b"conectix" + bytes(504))
    assert sniff(vhd) == Sniff(None, "vhd")


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (gzip.compress, "gzip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
        (zstandard.ZstdCompressor().compress, "zstd"),
    ],
)
def test_compressed_json_and_cloudtrail(compress, name: str) -> None:  # type: ignore[no-untyped-def]
    assert identify(compress(TRAIL)) == Sniff(name, "cloudtrail")
    assert identify(compress(b'  \n{"eventName": "x"}\n{"eventName": "y"}\n')) == Sniff(
        name, "json"
    )
    assert identify(compress(b"[1, 2]")) == Sniff(name, "json")
    assert identify(compress(b"plain text")) == Sniff(name, None)
    assert not identify(compress(TRAIL)).disk_image


def test_plain_json_tar_and_nothing() -> None:
    assert identify(b'\xef\xbb\xbf { "Records" : []}') == Sniff(None, "cloudtrail")
    assert identify(b'{"Events": []}').json
    assert identify(_tar({"manifest.json": b"[]"})) == Sniff(None, "tar")
    assert identify(gzip.compress(_tar({"etc/hostname": b"web"}))) == Sniff("gzip", "tar")
    assert identify(b"") == NOTHING
    assert identify(b"hello world") == NOTHING


def test_a_gzip_bomb_is_inflated_only_a_few_kib() -> None:
    bomb = gzip.compress(b"{" + b" " * (64 << 20))
    assert len(bomb) < HEAD_BYTES * 16
    assert identify(bomb[:HEAD_BYTES]) == Sniff("gzip", "json")


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    assert sniff(tmp_path) == NOTHING  # a folder
    assert sniff(tmp_path / "missing") == NOTHING
    link = tmp_path / "zero"
    link.symlink_to("/dev/zero")
    assert sniff(link) == NOTHING  # never through a link, never a device
    real = tmp_path / "disk.ext4"
    real.write_bytes(SAMPLES["ext"])
    (tmp_path / "to-disk").symlink_to(real)
    assert sniff(tmp_path / "to-disk") == NOTHING
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert sniff(fifo) == NOTHING  # returns at once: nobody writes to it


def test_an_unreadable_file_is_not_recognised(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "locked.raw"
    path.write_bytes(SAMPLES["ext"])
    path.chmod(0)
    assert sniff(path) == NOTHING


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=HEAD_BYTES + 64))
def test_any_bytes_are_an_answer_never_an_error(data: bytes) -> None:
    found = identify(data, {"btrfs": data[:8], "footer": data[-512:]})
    assert found.compression is None or found.format in (None, "json", "cloudtrail", "tar")
    assert found.format is None or found.format in DISK_FORMATS | {"json", "cloudtrail", "tar"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [
            *SAMPLES.values(),
            gzip.compress(TRAIL),
            bz2.compress(TRAIL),
            lzma.compress(TRAIL),
            zstandard.ZstdCompressor().compress(TRAIL),
        ]
    ),
    st.integers(min_value=0, max_value=HEAD_BYTES),
    st.binary(max_size=16),
)
def test_truncated_or_damaged_heads_never_raise(data: bytes, cut: int, junk: bytes) -> None:
    identify(data[:cut])
    identify(data[:cut] + junk)
    identify(junk + data[:cut])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=3 * HEAD_BYTES))
def test_files_of_any_content_are_sniffed_like_their_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "any"
    path.write_bytes(data)
    probes = {"btrfs": data[0x10040 : 0x10040 + 8]}
    if len(data) >= 512:
        probes["footer"] = data[-512:]
    assert sniff(path) == identify(data[:HEAD_BYTES], probes)
