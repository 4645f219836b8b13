"""A faster reader for the ext2/3/4 entries of the file system timeline, same rows as dissect.

dissect reads each inode and each directory entry through cstruct, in pure Python: about
150 us per entry, most of the file system timeline's time (bench/fs_timeline.py). Here the
inode's fields and the directory records are unpacked with `struct` from the same bytes
(dissect's own file handle, the same offsets), and the data of directories, long symlinks
and hashed files is read through The Sleuth Kit (pytsk3, C; the `fast` extra), which maps
an inode's extents or block lists to bytes.

The values are dissect's, not the kernel's, on purpose: the timeline must not depend on
whether pytsk3 is installed, and dissect stays the reference the tests compare against
(tests/test_tsk_walk.py). So this follows dissect's `INode` and `ExtFilesystemEntry`
field for field: `i_uid`/`i_gid` without their high 16 bits, times as unsigned 32-bit
seconds plus the epoch bits of the `_extra` fields, a directory listed as a dict by name
(a repeated name keeps its first place and its last inode), inode numbers from 1 to
`s_inodes_count - 1`, a listing that ends quietly at a zero `rec_len`.

Whenever a value would need a judgement this module does not make (an inode or a group
descriptor out of range, a directory larger than `MAX_DIRECTORY`, The Sleuth Kit refusing
or reading short), the entry or directory is handed to dissect, which then does exactly
what it does without this module, errors included. pytsk3 not installed, or unable to
open a file system that dissect opened: the whole file system is dissect's.
"""

from __future__ import annotations

import io
import stat
import struct
from collections.abc import Iterator
from typing import Any

try:  # the `fast` extra
    import pytsk3
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    pytsk3 = None

# dissect's INode.open(): these read from i_block, not from blocks
_INLINE_DATA_FL = 0x10000000
_FAST_SYMLINK_BELOW = 60
# A directory read in one piece up to this; larger ones (a hostile i_size) go to dissect.
MAX_DIRECTORY = 64 << 20
_CHUNK_INODES = 256  # inode table bytes are read this many inodes at a time
# ext4_inode, as dissect's c_ext declares it, up to i_crtime_extra (152 bytes)
_INODE = struct.Struct("<HHIIIIIHHIII60sIIIIHHHHHHHHIIIII")
# indexes into its fields
_SIZE_HIGH, _EXTRA_ISIZE, _CTIME_EXTRA, _CRTIME_EXTRA = 15, 23, 25, 29
_DIRENTRY = struct.Struct("<IHH")  # inode, rec_len, name_len (low byte only with filetype)


def available() -> bool:
    return pytsk3 is not None


class _Stat:
    """The fields of dissect's `stat_result` that the timeline reads."""

    __slots__ = (
        "st_atime_ns",
        "st_birthtime_ns",
        "st_ctime_ns",
        "st_dev",
        "st_gid",
        "st_ino",
        "st_mode",
        "st_mtime_ns",
        "st_nlink",
        "st_size",
        "st_uid",
    )

    def __init__(self, values: tuple[Any, ...]) -> None:
        (
            self.st_mode,
            self.st_ino,
            self.st_dev,
            self.st_nlink,
            self.st_uid,
            self.st_gid,
            self.st_size,
            self.st_atime_ns,
            self.st_mtime_ns,
            self.st_ctime_ns,
            self.st_birthtime_ns,
        ) = values


def _ns(seconds: int, extra: int) -> int:
    """dissect.extfs `_parse_ns_ts`: unsigned seconds, the 2 epoch bits, nanoseconds."""
    return ((seconds | (extra & 0b11) << 32) * 1_000_000_000) + (extra >> 2)


class _Image(pytsk3.Img_Info if pytsk3 is not None else object):  # type: ignore[misc]
    """The Sleuth Kit reads the volume through dissect's file handle, so whatever dissect
    opened (raw, qcow2, vmdk, EWF, a partition, an LVM volume) is read the same way."""

    def __init__(self, fh: Any, size: int) -> None:
        self._fh = fh
        self._size = size
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        self._fh.seek(offset)
        return bytes(self._fh.read(size))

    def get_size(self) -> int:
        return self._size

    def close(self) -> None:  # the handle is dissect's
        pass


class NativeExt:
    """One ext file system that dissect opened, read through struct and The Sleuth Kit."""

    def __init__(self, fs: Any, tsk: Any) -> None:
        self.fs = fs
        self.extfs = fs.extfs
        self.fh = fs.extfs.fh
        sb = fs.extfs.sb
        self.inodes_count = int(sb.s_inodes_count)
        self.inodes_per_group = int(sb.s_inodes_per_group)
        self.inode_size = int(sb.s_inode_size)
        self.block_size = int(fs.extfs.block_size)
        self.name_len_mask = 0xFF if fs.extfs._dirtype.__name__ == "ext2_dir_entry_2" else 0xFFFF
        self.tsk = tsk
        self.dev = id(fs)  # what dissect's lstat gives as st_dev
        self._tables: dict[int, int | None] = {}  # group -> inode table offset (None: bad)
        self._chunks: dict[int, bytes] = {}

    @classmethod
    def open(cls, fs: Any) -> NativeExt | None:
        """For a dissect ext file system, or None when this cannot read it (then dissect
        reads all of it)."""
        if pytsk3 is None or getattr(fs, "__type__", None) != "ext":
            return None
        try:
            sb = fs.extfs.sb
            inode_size = int(sb.s_inode_size)
            if inode_size < 128 or inode_size & (inode_size - 1) or not sb.s_inodes_per_group:
                return None  # a superblock this much off is dissect's to make sense of
            fh = fs.extfs.fh
            size = getattr(fh, "size", None)
            if not isinstance(size, int):
                size = fh.seek(0, io.SEEK_END)
            tsk = pytsk3.FS_Info(_Image(fh, size), type=pytsk3.TSK_FS_TYPE_EXT_DETECT)
            return cls(fs, tsk)
        except Exception:  # TSK refuses what dissect accepted: dissect reads it
            return None

    # -- inodes ----------------------------------------------------------------------------
    def _table(self, group: int) -> int | None:
        if group not in self._tables:
            try:
                desc = self.extfs._read_group_desc(group)
                if hasattr(desc, "bg_inode_table_hi"):
                    block = (desc.bg_inode_table_hi << 32) | desc.bg_inode_table_lo
                else:
                    block = desc.bg_inode_table_lo
                self._tables[group] = int(block) * self.block_size
            except Exception:  # dissect raises the same when the entry goes to it
                self._tables[group] = None
        return self._tables[group]

    def raw_inode(self, inum: int) -> tuple[Any, ...] | None:
        """The inode's fields as dissect parses them, or None (dissect's to read)."""
        group, index = divmod(inum - 1, self.inodes_per_group)
        table = self._table(group)
        if table is None:
            return None
        chunk, slot = divmod(index, _CHUNK_INODES)
        key = table + chunk * _CHUNK_INODES * self.inode_size
        data = self._chunks.get(key)
        if data is None:
            if len(self._chunks) > 64:
                self._chunks.clear()
            self.fh.seek(key)
            # and the bytes dissect's struct reads past the chunk's last inode
            data = bytes(self.fh.read(_CHUNK_INODES * self.inode_size + 288))
            self._chunks[key] = data
        offset = slot * self.inode_size
        # dissect's struct runs to 288 - i_extra_isize bytes: past the chunk's end, or an
        # i_extra_isize over 128, is an odd inode that dissect reads its own way. With
        # 128-byte inodes it reads into the next inode but uses none of the extra fields.
        if offset + _INODE.size > len(data):
            return None
        fields = _INODE.unpack_from(data, offset)
        if self.inode_size > 128:
            extra_isize = fields[_EXTRA_ISIZE]
            if extra_isize > 128 or offset + 288 - extra_isize > len(data):
                return None
        return fields

    def stat(self, inum: int, fields: tuple[Any, ...]) -> _Stat:
        """dissect's `ExtFilesystemEntry.lstat()` of the inode, from its fields."""
        mode, uid, size_lo, atime, ctime, mtime = fields[:6]
        gid, links = fields[7], fields[8]
        size = (fields[_SIZE_HIGH] << 32) + size_lo
        if self.inode_size > 128:
            ctime_x, mtime_x, atime_x, crtime, crtime_x = fields[_CTIME_EXTRA : _CRTIME_EXTRA + 1]
            birth: int | None = _ns(crtime, crtime_x)
        else:
            ctime_x = mtime_x = atime_x = 0
            birth = None
        return _Stat(
            (
                mode,
                inum,
                self.dev,
                links,
                uid,
                gid,
                size,
                _ns(atime, atime_x),
                _ns(mtime, mtime_x),
                _ns(ctime, ctime_x),
                birth,
            )
        )

    # -- data ------------------------------------------------------------------------------
    def data(self, inum: int, fields: tuple[Any, ...], offset: int, length: int) -> bytes | None:
        """`length` bytes of the inode's data from `offset`, as dissect's `INode.open()`
        reads them; None when The Sleuth Kit cannot give them all."""
        mode, size, flags, block = (
            fields[0],
            (fields[_SIZE_HIGH] << 32) + fields[2],
            fields[10],
            fields[12],
        )
        want = max(0, min(length, size - offset))
        if flags & _INLINE_DATA_FL or (
            stat.S_IFMT(mode) == stat.S_IFLNK and size < _FAST_SYMLINK_BELOW
        ):
            return bytes(block[:size][offset : offset + length])
        if want == 0:
            return b""
        try:
            got = self.tsk.open_meta(inode=inum).read_random(offset, want)
        except Exception:
            return None
        return got if len(got) == want else None

    def listing(self, inum: int) -> dict[str, int] | None:
        """The directory's {name: inode} as dissect's `listdir()` builds it (without "."
        and ".."), or None (dissect's to list)."""
        fields = self.raw_inode(inum)
        if fields is None or stat.S_IFMT(fields[0]) != stat.S_IFDIR:
            return None
        size = (fields[_SIZE_HIGH] << 32) + fields[2]
        if size > MAX_DIRECTORY:
            return None
        data = self.data(inum, fields, 0, size)
        if data is None:
            return None
        names: dict[str, int] = {}
        offset = 0
        unpack = _DIRENTRY.unpack_from
        mask = self.name_len_mask
        limit = self.inodes_count
        while offset < size - 12:
            number, rec_len, name_len = unpack(data, offset)
            if rec_len == 0:
                return None  # dissect logs this and stops; it is dissect's to do
            if 0 < number < limit:
                start = offset + 8
                name = data[start : start + (name_len & mask)].decode(errors="surrogateescape")
                names[name] = number
            offset += rec_len
        names.pop(".", None)
        names.pop("..", None)
        return names


class NativeEntry:
    """An ext entry read by `NativeExt`, shaped like the dissect entry it stands for (the
    walk asks it for `lstat()`, `readlink()`, `open()`, and its children)."""

    __slots__ = ("_dissect", "_fields", "inum", "native", "path")

    def __init__(self, native: NativeExt, path: str, inum: int) -> None:
        self.native = native
        self.path = path
        self.inum = inum
        self._dissect: Any = None
        self._fields: tuple[Any, ...] | None = None

    @property
    def fs(self) -> Any:
        return self.native.fs

    def dissect(self) -> Any:
        """The dissect entry for the same inode: what reads anything this one does not."""
        if self._dissect is None:
            from dissect.target.filesystems.extfs import ExtFilesystemEntry

            node = self.native.extfs.get_inode(self.inum, self.path.rsplit("/", 1)[-1])
            self._dissect = ExtFilesystemEntry(self.native.fs, self.path, node)
        return self._dissect

    def lstat(self) -> Any:
        fields = self._fields = self.native.raw_inode(self.inum)
        if fields is None:
            return self.dissect().lstat()
        return self.native.stat(self.inum, fields)

    def readlink(self) -> str:
        fields = self._fields or self.native.raw_inode(self.inum)
        if fields is None or stat.S_IFMT(fields[0]) != stat.S_IFLNK:
            return str(self.dissect().readlink())
        size = (fields[_SIZE_HIGH] << 32) + fields[2]
        data = self.native.data(self.inum, fields, 0, size)
        if data is None:
            return str(self.dissect().readlink())
        return data.decode(errors="surrogateescape")

    def open(self) -> Any:
        fields = self._fields or self.native.raw_inode(self.inum)
        if fields is None or stat.S_IFMT(fields[0]) == stat.S_IFDIR:
            return self.dissect().open()
        return _Reader(self, fields)

    def children(self) -> Iterator[tuple[str, Any]] | None:
        """(name, entry) of the directory's entries, or None: dissect lists it."""
        names = self.native.listing(self.inum)
        if names is None:
            return None
        base = self.path.rstrip("/")
        native = self.native
        return ((name, NativeEntry(native, f"{base}/{name}", inum)) for name, inum in names.items())


class _Reader(io.RawIOBase):
    """A file's data through The Sleuth Kit; where it reads short, dissect's stream takes
    over at the same offset (and raises what it raises)."""

    def __init__(self, entry: NativeEntry, fields: tuple[Any, ...]) -> None:
        super().__init__()
        self.entry = entry
        self.fields = fields
        self.position = 0
        self.fallback: Any = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = (self.fields[_SIZE_HIGH] << 32) + self.fields[2] - self.position
        if self.fallback is None:
            data = self.entry.native.data(self.entry.inum, self.fields, self.position, size)
            if data is not None:
                self.position += len(data)
                return data
            self.fallback = self.entry.dissect().open()
            self.fallback.seek(self.position)
        data = self.fallback.read(size)
        self.position += len(data)
        return bytes(data)


class Natives:
    """The ext file systems of one walk that this module reads, opened once each."""

    def __init__(self) -> None:
        self._opened: dict[int, NativeExt | None] = {}

    def directory(self, entry: Any, on_disk: Any, st: Any, path: str) -> Any:
        """The native entry to list a directory with, or None: dissect lists it.

        A root-view directory qualifies only when exactly one layer holds it and that is
        an ext directory (no mount point and nothing dissect made up at or below it: those
        would make it a virtual directory in its layer), so its listing is the file
        system's own and the same as dissect's layered one."""
        if isinstance(on_disk, NativeEntry):
            return on_disk
        from dissect.target.filesystem import VirtualDirectory
        from dissect.target.filesystems.extfs import ExtFilesystemEntry

        layers = getattr(entry, "entries", None)
        if layers is not None:
            if len(layers) != 1:
                return None
            sub = layers[0]
            if isinstance(sub, VirtualDirectory):
                if sub.entries or sub.top is None:
                    return None
                sub = sub.top
            if sub is not on_disk:
                return None
        if type(on_disk) is not ExtFilesystemEntry:
            return None
        fs = on_disk.fs
        if id(fs) not in self._opened:
            self._opened[id(fs)] = NativeExt.open(fs)
        native = self._opened[id(fs)]
        if native is None or st.st_dev != native.dev:
            return None
        return NativeEntry(native, path, int(st.st_ino))
