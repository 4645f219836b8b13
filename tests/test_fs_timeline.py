"""The file system timeline over a real ext4 image built by mkfs.ext4 from a known tree.

The expectations come from the source tree (os.walk, hashlib, os.lstat) and from
debugfs, never from the code under test, so a walk that drops, doubles or follows
something shows as a difference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from calendar import timegm
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze.parsers import BatchBuilder, ErrorLog, Row

pytestmark = pytest.mark.skipif(
    not (shutil.which("mkfs.ext4") and shutil.which("debugfs")),
    reason="needs mkfs.ext4 and debugfs (e2fsprogs) to build and inspect an ext4 image",
)

TOOL = b"#!/bin/sh\necho dropped by the intruder\n"
MINER = bytes(range(256)) * 40
OLD_MTIME = timegm((2021, 3, 4, 5, 6, 7))
OLD_ATIME = timegm((2022, 1, 1, 0, 0, 0))
TOOL_TIME = timegm((2023, 5, 6, 7, 8, 9))
ODD_NAME = b"caf\xe9-\xff.bin"  # Latin-1 bytes: not UTF-8
INTRUDER = 1001 if os.geteuid() == 0 else os.getuid()  # chown needs root


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _build_tree(root: Path) -> None:
    _write(root / "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    tool = _write(root / "var/tmp/tool", TOOL, 0o755)
    _write(root / "home/u/.cache/miner", MINER, 0o700)
    _write(root / "home/u/notes.txt", b"not a program\n")
    _write(root / "opt/bin/exe", b"\x7fELF not in a drop place", 0o755)
    _write(root / "srv/a/b/c/deep.txt", b"deep\n")
    _write(root / "data/old.txt", b"old\n")
    _write(root / "data/zero.txt", b"zero\n")
    (root / "odd").mkdir()
    with open(os.path.join(bytes(root / "odd"), ODD_NAME), "wb") as fh:
        fh.write(b"odd name\n")
    (root / "home/u/link").symlink_to("../../etc/passwd")
    (root / "home/u/abs").symlink_to("/etc/passwd")
    (root / "home/u/vartmp").symlink_to("/var/tmp")  # a directory: must not be walked
    (root / "home/u/toollink").symlink_to("/var/tmp/tool")
    if os.geteuid() == 0:
        os.chown(tool, INTRUDER, INTRUDER)
    os.utime(tool, (TOOL_TIME, TOOL_TIME))
    os.utime(root / "data/old.txt", (OLD_ATIME, OLD_MTIME))
    os.utime(root / "data/zero.txt", (0, 0))


def _mkfs(root: Path, image: Path) -> None:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "16M"],
        check=True,
        capture_output=True,
    )


def _debugfs(image: Path, request: str, write: bool = False) -> bytes:
    argv = ["debugfs", *(["-w"] if write else []), "-R", request, str(image)]
    return subprocess.run(argv, check=True, capture_output=True).stdout


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _source_paths(root: Path) -> set[str]:
    """Every entry of the source tree as an image path; symlinks to directories are
    listed (os.walk puts them in dirnames) but not walked into."""
    paths = {"/"}
    base = bytes(root)
    for dirpath, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        for name in dirnames + filenames:
            paths.add("/" + _text(os.path.normpath(os.path.join(rel, name))))
    return paths


def _mkfs_added(image: Path, root: Path) -> set[str]:
    """What mkfs put at the image's root beyond the source tree (lost+found), by debugfs."""
    listed = set()
    for line in _debugfs(image, "ls -p /").splitlines():
        parts = line.split(b"/")
        if len(parts) > 5 and parts[5] not in (b".", b".."):
            listed.add(parts[5])
    return {"/" + _text(name) for name in listed - set(os.listdir(bytes(root)))}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("fs_timeline")
    root = work / "root"
    root.mkdir()
    _build_tree(root)
    image = work / "disk.img"
    _mkfs(root, image)
    return root, image


def _rows(image: Path, **options: Any) -> tuple[list[Row], ErrorLog]:
    from dissect.target import Target

    from cloudir.analyze.host.fs_timeline import fs_rows

    errors = ErrorLog()
    rows = list(fs_rows(Target.open(image), "web-1", "ev-1", errors, **options))
    return rows, errors


def _by_path(rows: list[Row]) -> dict[str, list[Row]]:
    found: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        found[row.target].append(row)
    return found


def _raw(rows: list[Row]) -> dict[str, Any]:
    return json.loads(rows[0].raw)


def test_every_entry_of_the_tree_and_what_mkfs_added_is_in_the_timeline(
    built: tuple[Path, Path],
) -> None:
    root, image = built
    rows, errors = _rows(image)
    expected = _source_paths(root) | _mkfs_added(image, root)
    assert set(_by_path(rows)) == expected
    assert "/lost+found" in expected
    assert errors.entries == []
    assert {row.artifact for row in rows} == {"fs:entry"}
    assert {row.host for row in rows} == {"web-1"}
    assert {row.evidence_id for row in rows} == {"ev-1"}
    assert len({row.event_id for row in rows}) == len(rows)  # event ids do not collide


def test_rows_are_valid_utf8_and_fit_the_timeline_schema(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image)
    builder = BatchBuilder(ErrorLog())
    for number, row in enumerate(rows, 1):
        for value in row:
            if isinstance(value, str):
                value.encode("utf-8")
        builder.add(number, row)
    batch = builder.flush()
    assert batch is not None and batch.num_rows == len(rows)


def test_a_name_that_is_not_utf8_is_kept_with_visible_escapes(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image)
    odd = _by_path(rows)["/odd/caf\\xe9-\\xff.bin"]
    assert _raw(odd)["path"] == "/odd/caf\\xe9-\\xff.bin"
    assert odd[0].message.startswith("/odd/caf\\xe9-\\xff.bin (9 bytes, -rw-r--r--, ")


def test_a_known_mtime_is_its_own_row_with_the_exact_time(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image)
    old = {row.timestamp_desc: row for row in _by_path(rows)["/data/old.txt"]}
    assert old["Modification Time"].timestamp == "2021-03-04T05:06:07+00:00"
    assert old["Access Time"].timestamp == "2022-01-01T00:00:00+00:00"
    assert old["Modification Time"].message.endswith(") M...")
    raw = _raw([old["Modification Time"]])
    assert raw["mtime"] == "2021-03-04T05:06:07+00:00"
    assert raw["atime"] == "2022-01-01T00:00:00+00:00"
    assert raw["btime"] is not None  # ext4 keeps a creation time (crtime)


def test_a_zero_time_is_no_time_not_1970(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image)
    zero = _by_path(rows)["/data/zero.txt"]
    assert _raw(zero)["mtime"] is None and _raw(zero)["atime"] is None
    assert all("Modification Time" not in row.timestamp_desc for row in zero)
    assert all(row.timestamp is None or row.timestamp >= "1970-01-02" for row in rows)


def test_an_entry_with_no_time_at_all_still_has_one_row(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, image = built
    timeless = tmp_path / "timeless.img"
    shutil.copyfile(image, timeless)
    for field in ("ctime", "crtime"):
        _debugfs(timeless, f"sif /data/zero.txt {field} 0", write=True)
    rows, _ = _rows(timeless)
    (row,) = _by_path(rows)["/data/zero.txt"]
    assert (row.timestamp, row.timestamp_desc) == (None, "No Time")
    assert row.message.endswith(") ....")


def test_executables_where_intruders_drop_tools_are_hashed(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image)
    found = _by_path(rows)
    assert _raw(found["/var/tmp/tool"])["sha256"] == hashlib.sha256(TOOL).hexdigest()
    assert _raw(found["/home/u/.cache/miner"])["sha256"] == hashlib.sha256(MINER).hexdigest()
    for unhashed in ("/home/u/notes.txt", "/opt/bin/exe", "/home/u/toollink", "/var/tmp"):
        assert "sha256" not in _raw(found[unhashed]), unhashed


def test_an_executable_over_the_limit_says_why_it_has_no_hash(built: tuple[Path, Path]) -> None:
    _, image = built
    rows, _ = _rows(image, hash_max_bytes=16)
    raw = _raw(_by_path(rows)["/var/tmp/tool"])
    assert raw["sha256"] is None
    assert raw["sha256_skipped"] == "larger than 16 bytes"


def test_the_tool_row_reads_as_one_line_with_owner_mode_and_macb(
    built: tuple[Path, Path],
) -> None:
    root, image = built
    rows, _ = _rows(image)
    tool = {row.timestamp_desc: row for row in _by_path(rows)["/var/tmp/tool"]}
    row = tool["Modification Time; Access Time"]
    assert row.timestamp == "2023-05-06T07:08:09+00:00"
    assert row.message == (
        f"/var/tmp/tool ({len(TOOL)} bytes, -rwxr-xr-x, uid {INTRUDER} gid {INTRUDER}) MA.."
    )
    assert (row.user, row.action, row.target) == (str(INTRUDER), "fs:file", "/var/tmp/tool")
    raw = json.loads(row.raw)
    source = os.lstat(root / "var/tmp/tool")
    assert raw["mode"] == "0o100755" and raw["size"] == len(TOOL)
    assert (raw["uid"], raw["gid"]) == (source.st_uid, source.st_gid)
    assert raw["type"] == "file" and isinstance(raw["inode"], int)


def test_symlinks_are_recorded_with_their_target_and_not_followed(
    built: tuple[Path, Path],
) -> None:
    _, image = built
    rows, _ = _rows(image)
    found = _by_path(rows)
    for path, target in (
        ("/home/u/link", "../../etc/passwd"),
        ("/home/u/abs", "/etc/passwd"),
        ("/home/u/vartmp", "/var/tmp"),
    ):
        raw = _raw(found[path])
        assert (raw["type"], raw["symlink_target"]) == ("symlink", target)
        assert {row.action for row in found[path]} == {"fs:symlink"}
        assert found[path][0].message.startswith(
            f"{path} -> {target} ({len(target)} bytes, lrwxrwxrwx, "
        )
    assert not [p for p in found if p.startswith("/home/u/vartmp/")]
    assert {row.action for row in found["/srv/a/b/c"]} == {"fs:dir"}


def test_a_damaged_directory_is_logged_and_the_walk_goes_on(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    root, image = built
    damaged = tmp_path / "damaged.img"
    shutil.copyfile(image, damaged)
    block = int(_debugfs(damaged, "bmap /srv 0"))
    block_size = int(_debugfs(damaged, "stats").split(b"Block size:")[1].split()[0])
    with open(damaged, "r+b") as fh:
        fh.seek(block * block_size)
        fh.write(b"\xff" * block_size)
    rows, errors = _rows(damaged)
    paths = set(_by_path(rows))
    everything = _source_paths(root) | _mkfs_added(image, root)
    assert paths == {p for p in everything if not p.startswith("/srv/")}
    assert "/srv" in paths
    assert [e["reason"] for e in errors.entries] == [
        "/srv: subdirectories: 1 by its link count, 0 could be read; the directory may be damaged"
    ]


def test_entries_dissect_makes_up_get_no_row_and_no_directory_is_walked_twice(
    built: tuple[Path, Path],
) -> None:
    from dissect.target import Target

    from cloudir.analyze.host.fs_timeline import fs_rows

    root, image = built
    target = Target.open(image)
    # what dissect adds for an LVM volume, and the same file system mounted a second time
    target.fs.append_layer().map_file_fh("/dev/vg0/lv0", io.BytesIO(b"a whole volume"))
    target.fs.mount("/mnt/again", target.fs.mounts["/"])
    errors = ErrorLog()
    paths = {row.target for row in fs_rows(target, None, "ev-1", errors)}
    assert paths == _source_paths(root) | _mkfs_added(image, root) | {"/mnt/again"}
    assert [e["reason"] for e in errors.entries] == [
        "/mnt/again: directory inode 2 already walked at another path; not walked again"
    ]


def test_links_that_blind_log_readers_are_symlink_rows_never_followed(tmp_path: Path) -> None:
    """The links of issue 14 (to /dev/null, a loop, a missing path, a program on the
    examiner's host) are entries of the image: one fs:symlink row each, nothing opened,
    hashed or logged as an error."""
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    links = {
        "/var/log/auth.log": "/dev/null",
        "/tmp/loop": "loop",
        "/tmp/gone": "/nowhere/at/all",
        "/tmp/host-shell": "/bin/sh",  # exists on the examiner's host, not in the image
    }
    for path, target in links.items():
        os.symlink(target, root / path.lstrip("/"))
    image = tmp_path / "links.img"
    _mkfs(root, image)
    rows, errors = _rows(image)
    assert errors.entries == []
    found = _by_path(rows)
    for path, target in links.items():
        assert {row.action for row in found[path]} == {"fs:symlink"}, path
        raw = _raw(found[path])
        assert raw["symlink_target"] == target
        assert raw.get("sha256") is None
