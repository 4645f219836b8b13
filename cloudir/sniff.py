"""What a file is, from its first bytes: compression, archive, disk image, JSON, CloudTrail.

Names lie (`disk.ext4`, `evidence.bin`, a device dump with no suffix), so `capture files
--kind auto` and the parsers ask the content. Reading is bounded: the first `HEAD_BYTES`,
and at most two small probes further in (btrfs keeps its superblock at 64 KiB, a fixed
VHD its footer at the end). Only regular files are opened, never through a symbolic link
and never waiting on a FIFO or a device; a file that cannot be read, or is too short to
tell, is simply not recognised. Pure: nothing here knows about parsers or evidence kinds.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 8 << 10
INFLATED_BYTES = 4 << 10  # how much of a compressed file is inflated to look inside
BTRFS_OFFSET = 0x10040
VHD_FOOTER_BYTES = 512

COMPRESSIONS = ("gzip", "zstd", "bzip2", "xz")
DISK_FORMATS = frozenset(
    {
        "ewf", "qcow2", "vmdk", "vhd", "vhdx", "vdi",  # image containers
        "gpt", "mbr",  # partition tables
        "ext", "xfs", "btrfs", "ntfs", "fat",  # file systems
    }
)  # fmt: skip


@dataclass(frozen=True)
class Sniff:
    """`compression` is the outer wrapper (or None); `format` what lies inside it.

    `format` is one of DISK_FORMATS, "tar", "cloudtrail" (a `{"Records": ...}` document),
    "json" (a document or JSON lines), or None when nothing was recognised.
    """

    compression: str | None = None
    format: str | None = None

    @property
    def disk_image(self) -> bool:
        return self.compression is None and self.format in DISK_FORMATS

    @property
    def json(self) -> bool:
        return self.format in ("json", "cloudtrail")


NOTHING = Sniff()


def sniff(path: Path) -> Sniff:
    """The file's kind by content; NOTHING for what cannot be read or is not recognised."""
    try:
        head, probes = _read(path)
    except OSError:
        return NOTHING
    return identify(head, probes)


def _read(path: Path) -> tuple[bytes, dict[str, bytes]]:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        head = os.pread(fd, HEAD_BYTES, 0)
        probes = {"btrfs": os.pread(fd, 8, BTRFS_OFFSET)}
        if info.st_size >= VHD_FOOTER_BYTES:
            probes["footer"] = os.pread(fd, VHD_FOOTER_BYTES, info.st_size - VHD_FOOTER_BYTES)
        return head, probes
    finally:
        os.close(fd)


def identify(head: bytes, probes: Mapping[str, bytes] | None = None) -> Sniff:
    """The same answer as `sniff`, from bytes already read: `head` from offset 0, and the
    optional `probes` "btrfs" (8 bytes at BTRFS_OFFSET) and "footer" (the last 512)."""
    probes = probes or {}
    compression = _compression(head)
    if compression:
        return Sniff(compression, _text_or_tar(_inflate(compression, head)))
    disk = _disk_format(head, probes)
    if disk:
        return Sniff(None, disk)
    return Sniff(None, _text_or_tar(head))


def _compression(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head[:3] == b"BZh" and len(head) > 3 and head[3] in b"123456789":
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _inflate(compression: str, head: bytes) -> bytes:
    """The first INFLATED_BYTES of the decompressed stream, or what of it the head holds;
    b"" when the stream is broken or its decoder is not installed."""
    try:
        if compression == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, INFLATED_BYTES)
        if compression == "bzip2":
            return bz2.BZ2Decompressor().decompress(head, INFLATED_BYTES)
        if compression == "xz":
            return lzma.LZMADecompressor().decompress(head, INFLATED_BYTES)
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return b""
    return _unzstd(head)


def _unzstd(head: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency (OCI layers)
        return b""
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(head)) as reader:
            return reader.read(INFLATED_BYTES)
    except zstandard.ZstdError:
        return b""


def _disk_format(head: bytes, probes: Mapping[str, bytes]) -> str | None:
    if head.startswith((b"EVF\x09\x0d\x0a\xff\x00", b"EVF2\x0d\x0a\x81\x00")):
        return "ewf"
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head.startswith(b"conectix") or probes.get("footer", b"").startswith(b"conectix"):
        return "vhd"
    if head[512:520] == b"EFI PART" or head[4096:4104] == b"EFI PART":
        return "gpt"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    boot_signature = head[510:512] == b"\x55\xaa"
    if boot_signature and (head[54:59] == b"FAT12" or head[54:59] == b"FAT16"):
        return "fat"
    if boot_signature and head[82:87] == b"FAT32":
        return "fat"
    if _ext_superblock(head[1024:2048]):
        return "ext"
    if head.startswith(b"XFSB"):
        return "xfs"
    if probes.get("btrfs", b"") == b"_BHRfS_M":
        return "btrfs"
    if boot_signature and _partition_entries_plausible(head):
        return "mbr"
    return None


def _ext_superblock(block: bytes) -> bool:
    """The magic 0xEF53 (two bytes, which random data has once in 65536 files) and the
    fields around it in range: inodes and blocks per group, a block size of 1-64 KiB, a
    state (0 while mounted: a live snapshot), revision 0 or 1."""
    if len(block) < 80 or block[56:58] != b"\x53\xef":
        return False
    inodes, log_block_size, blocks_per_group = struct.unpack_from("<I20xI4xI", block, 0)
    (state,) = struct.unpack_from("<H", block, 58)
    (revision,) = struct.unpack_from("<I", block, 76)
    return bool(
        inodes > 0
        and log_block_size <= 6
        and blocks_per_group > 0
        and state <= 7
        and (revision <= 1)
    )


def _partition_entries_plausible(head: bytes) -> bool:
    """An MBR: four entries whose status byte is 0x00 or 0x80, and at least one in use."""
    entries = [head[446 + 16 * n : 446 + 16 * (n + 1)] for n in range(4)]
    if any(len(e) < 16 or e[0] not in (0x00, 0x80) for e in entries):
        return False
    return any(e[4] != 0 for e in entries)


def _text_or_tar(data: bytes) -> str | None:
    if data[257:262] == b"ustar":
        return "tar"
    text = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        rest = text[1:].lstrip()
        return "cloudtrail" if rest.startswith(b'"Records"') else "json"
    if text.startswith(b"["):
        return "json"
    return None
