"""A folder holding a file system is captured as one tar, links kept as links."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import cloudir, custody, query

INTRUSION = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)


def _root(tmp_path: Path) -> Path:
    from cloudir.demo.instance import _write_tree

    root = tmp_path / "mnt-web1"
    _write_tree(root, INTRUSION, "203.0.113.77", "AKIAIOSFODNN7EXAMPLE")
    os.symlink("/etc/shadow", root / "home/deploy/.hidden")  # points at the host's file
    os.symlink("../../../../../etc/passwd", root / "var/tmp/up")  # climbs out of the tree
    os.mkfifo(root / "run/initctl")
    return root


def test_a_root_folder_becomes_one_tar_with_its_links_as_links(tmp_path: Path) -> None:
    root = _root(tmp_path)
    before = {p: p.lstat().st_mtime_ns for p in root.rglob("*")}
    case = tmp_path / "case"
    result = cloudir("capture", "files", "--case", str(case), str(root), "--json")
    assert result.code == 0, result.stderr
    [item] = result.json()["items"]
    assert (item["kind"], item["captured"]) == ("disk-image", 1)
    [entry] = [e for e in custody(case) if e["action"] == "capture"]
    [record] = entry["files"]
    assert record["path"] == f"evidence/{item['evidence_id']}/files/mnt-web1.tar"
    tar_path = case / record["path"]
    assert hashlib.sha256(tar_path.read_bytes()).hexdigest() == record["sha256"]
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./home/deploy/.hidden"].issym()
    assert members["./home/deploy/.hidden"].linkname == "/etc/shadow"
    assert members["./var/tmp/up"].linkname == "../../../../../etc/passwd"
    assert members["./run/initctl"].isfifo()
    every = {"./" + p.relative_to(root).as_posix() for p in root.rglob("*")} | {"."}
    assert set(members) == every
    assert before == {p: p.lstat().st_mtime_ns for p in root.rglob("*")}  # only read

    assert cloudir("timeline", "--case", str(case)).code == 0
    links = query(
        case,
        "SELECT target, json_extract_string(raw, '$.symlink_target') AS link FROM timeline "
        "WHERE action = 'fs:symlink' ORDER BY target",
    )
    assert links == [
        {"target": "/home/deploy/.hidden", "link": "/etc/shadow"},
        {"target": "/var/tmp/up", "link": "../../../../../etc/passwd"},
    ]
    failures = query(
        case,
        "SELECT count(*) AS n FROM timeline WHERE artifact = 'linux:auth' AND outcome = 'failure'",
    )
    assert failures == [{"n": 12}]
    implant = query(
        case,
        "SELECT raw FROM timeline WHERE target = '/var/tmp/.cache/kworkerd' "
        "AND artifact = 'fs:entry'",
    )
    digest = json.loads(implant[0]["raw"])["sha256"]
    assert digest == hashlib.sha256((root / "var/tmp/.cache/kworkerd").read_bytes()).hexdigest()
    # the host's own /etc/shadow was never read: nothing in the timeline holds its lines
    host_root_hash = query(case, "SELECT count(*) AS n FROM timeline WHERE raw LIKE '%root:$%'")
    assert host_root_hash == [{"n": 0}]

    again = cloudir("capture", "files", "--case", str(case), str(root), "--json")
    assert again.json()["items"][0]["skipped"] == 1


def test_a_run_stopped_after_the_tar_was_recorded_is_closed_by_the_next(tmp_path: Path) -> None:
    """Killed between recording the tar and closing the item: the re-run finds the tar
    held and closes the item, so the timeline does not call it cut short for good."""
    from cloudir.analyze.completeness import check_evidence
    from cloudir.capture.files import capture_tree
    from cloudir.case import Case

    root = tmp_path / "root"
    for name in ("etc/hostname", "var/log/syslog"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("web-1\n")
    case = Case.create(tmp_path / "case")
    real_record = Case.record

    def stop_at_close(self: Case, action: str, *args: object, **kwargs: object) -> object:
        if action == "capture-complete":
            raise KeyboardInterrupt
        return real_record(self, action, *args, **kwargs)  # type: ignore[arg-type]

    Case.record = stop_at_close  # type: ignore[method-assign]
    try:
        capture_tree(case, root, print)
    except KeyboardInterrupt:
        pass
    finally:
        Case.record = real_record  # type: ignore[method-assign]
    [open_item] = check_evidence(Case.open(case.root)).problems
    assert open_item.kind == "incomplete"

    result = cloudir("capture", "files", "--case", str(case.root), str(root), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["items"][0]["skipped"] == 1
    assert [e["action"] for e in custody(case.root)][-1] == "capture-complete"
    assert check_evidence(Case.open(case.root)).problems == []
