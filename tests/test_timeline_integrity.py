"""The timeline says what it could not see: partial captures, missing or odd evidence
files, implausible times, a case of nothing but bad files; its workers die with it; and
many small files cost row groups by rows, not by files (issue 14, items 3, 5, 11, 12, 15).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudir.case_folder import timeline_files
from tests.conftest import cloudir, ct_event, query, records_gz


def capture(case: Path, *paths: Path) -> None:
    result = cloudir("capture", "files", "--case", str(case), *map(str, paths))
    assert result.code == 0, result.stderr


def summary(case: Path) -> dict[str, Any]:
    return json.loads((case / "timeline/summary.json").read_text())


def errors(case: Path) -> list[dict[str, Any]]:
    text = (case / "timeline/errors.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def problems(case: Path) -> dict[str, str]:
    """path -> kind, from summary.json's evidence_problems."""
    return {p["path"]: p["kind"] for p in summary(case)["evidence_problems"]}


def trail_folder(folder: Path, files: int = 3, per_file: int = 2) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(files):
        events = [ct_event(f"2024-05-0{1 + n}T10:00:0{k}Z") for k in range(per_file)]
        ids += [e["eventID"] for e in events]
        (folder / f"t{n}.json.gz").write_bytes(records_gz(events))
    return ids


def evidence_file(case: Path, name: str) -> Path:
    [path] = (case / "evidence").rglob(name)
    return path


# -- item 3: partial captures and missing files ----------------------------------------
def test_a_complete_capture_has_no_evidence_problems(tmp_path: Path) -> None:
    case = tmp_path / "case"
    ids = trail_folder(tmp_path / "trail")
    capture(case, tmp_path / "trail")
    result = cloudir("timeline", "--case", str(case), "--strict")
    assert result.code == 0, result.stderr
    assert summary(case)["evidence_problems"] == []
    assert {r["event_id"] for r in query(case, "SELECT event_id FROM timeline")} == set(ids)


def test_an_item_opened_and_never_closed_is_incomplete(tmp_path: Path) -> None:
    """What custody holds after a capture killed between its first file and its close."""
    from cloudir.case import Case

    case = tmp_path / "case"
    the_case = Case.create(case)
    evidence_id = "cloudtrail-cut-short"
    the_case.open_item(evidence_id, {"kind": "cloudtrail", "source": {"type": "test"}})
    event = ct_event("2024-05-01T10:00:00Z")
    rec = the_case.store_bytes(evidence_id, "a.json.gz", records_gz([event]))
    the_case.record("capture", evidence_id, [rec])

    result = cloudir("timeline", "--case", str(case), "--strict")
    assert result.code == 3
    assert "1 incomplete" in result.stderr and "Traceback" not in result.stderr
    [problem] = summary(case)["evidence_problems"]
    assert problem["kind"] == "incomplete" and problem["evidence_id"] == evidence_id
    assert "cut short" in problem["reason"]
    assert any(e.get("kind") == "incomplete" for e in errors(case))
    # what was captured is still in the timeline
    assert query(case, "SELECT event_id FROM timeline") == [{"event_id": event["eventID"]}]
    # finishing the item (as a re-run does) clears it
    the_case.record("capture-complete", evidence_id, [])
    assert cloudir("timeline", "--case", str(case), "--strict").code == 0


def test_a_capture_killed_mid_copy_is_incomplete(tmp_path: Path) -> None:
    """A real `capture files` killed with SIGKILL while it copies a large file."""
    case = tmp_path / "case"
    ids = trail_folder(tmp_path / "trail", files=1)
    capture(case, tmp_path / "trail")
    big = tmp_path / "big" / "disk.raw"
    big.parent.mkdir()
    with open(big, "wb") as fh:
        fh.truncate(16 << 30)  # sparse: nothing on disk, far too much to copy in time
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudir", "capture", "files", "--case", str(case), str(big)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while b"disk-image item" not in (case / "custody.jsonl").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    result = cloudir("timeline", "--case", str(case), "--strict")
    assert result.code == 3, result.stderr
    found = summary(case)["evidence_problems"]
    assert {p["kind"] for p in found} == {"incomplete"}
    assert any(p["evidence_id"].startswith("disk-image") for p in found)
    assert {r["event_id"] for r in query(case, "SELECT event_id FROM timeline")} == set(ids)


def test_missing_odd_and_unrecorded_files_are_named(tmp_path: Path) -> None:
    case = tmp_path / "case"
    trail_folder(tmp_path / "trail", files=5)
    capture(case, tmp_path / "trail")
    gone = evidence_file(case, "t0.json.gz")
    gone.unlink()
    fifo = evidence_file(case, "t1.json.gz")
    fifo.unlink()
    os.mkfifo(fifo)
    link = evidence_file(case, "t2.json.gz")
    link.unlink()
    link.symlink_to("/etc/hostname")
    folder = evidence_file(case, "t3.json.gz")
    folder.unlink()
    folder.mkdir()
    planted = gone.with_name("planted.json.gz")
    planted.write_bytes(records_gz([ct_event("2024-05-09T10:00:00Z")]))

    result = cloudir("timeline", "--case", str(case), "--strict", timeout=60)
    assert result.code == 3
    rel = {p.name: str(p.relative_to(case)) for p in (gone, fifo, link, folder, planted)}
    assert problems(case) == {
        rel["t0.json.gz"]: "missing",
        rel["t1.json.gz"]: "not_regular",
        rel["t2.json.gz"]: "not_regular",
        rel["t3.json.gz"]: "not_regular",
        rel["planted.json.gz"]: "unrecorded",
    }
    named = {e["path"] for e in errors(case)}
    assert set(rel.values()) <= named
    line = " ".join(result.stderr.split())
    assert "1 missing" in line and "3 not regular" in line and "1 unrecorded" in line
    # only t4 is read: the planted file is not, and neither is the link's target
    assert summary(case)["rows"] == 2


def test_an_unreadable_file_is_named() -> None:
    """Root reads any file, so as root the check runs with the effective uid of nobody."""
    from cloudir.analyze.completeness import check_evidence
    from cloudir.case import Case

    work = Path(tempfile.mkdtemp(prefix="cloudir-unreadable-"))
    try:
        os.chmod(work, 0o755)
        case = work / "case"
        trail_folder(work / "trail", files=2)
        capture(case, work / "trail")
        hidden = evidence_file(case, "t0.json.gz")
        os.chmod(hidden, 0)
        the_case = Case.open(case)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            found = check_evidence(the_case).problems
        finally:
            if as_root:
                os.seteuid(0)
        assert [(p.path, p.kind) for p in found] == [(str(hidden.relative_to(case)), "unreadable")]
        assert "Permission denied" in found[0].reason
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


# -- item 5: implausible times ---------------------------------------------------------
def test_implausible_times_are_kept_counted_and_named(tmp_path: Path) -> None:
    events = [
        ct_event("0001-01-01T00:00:00Z"),
        ct_event("9999-12-31T23:59:59Z"),
        ct_event("2005-12-31T23:59:59Z"),
        ct_event("2024-05-01T10:00:00Z"),
    ]
    src = tmp_path / "trail"
    src.mkdir()
    (src / "odd.json").write_text(json.dumps({"Records": events}))
    case = tmp_path / "case"
    capture(case, src)
    result = cloudir("timeline", "--case", str(case))
    assert result.code == 0, result.stderr
    odd = summary(case)["implausible_times"]
    assert odd["rows"] == 3
    assert odd["earliest"].startswith("0001-01-01T00:00:00")
    assert odd["latest"].startswith("9999-12-31T23:59:59")
    assert {e["event_id"] for e in odd["examples"]} == {e["eventID"] for e in events[:3]}
    assert all(e["path"].endswith("odd.json") for e in odd["examples"])
    logged = [e for e in errors(case) if e.get("kind") == "implausible_time"]
    assert logged and any("3 rows" in e["reason"] for e in logged)
    # every row stays, and later stages read them
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 4}]
    assert cloudir("detect", "--case", str(case)).code == 0
    out = tmp_path / "x.jsonl"
    assert cloudir("timeline", "export", "--case", str(case), "--out", str(out)).code == 0
    assert len(out.read_text().splitlines()) == 4
    # implausible is suspicious, not broken: --strict does not fail on it alone
    assert cloudir("timeline", "--case", str(case), "--strict").code == 0


@pytest.mark.parametrize(
    "when", ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
)
def test_times_outside_years_1_to_9999_are_logged_not_stored(tmp_path: Path, when: str) -> None:
    """Arrow reads these, Python and every later stage cannot: one logged row, not a crash."""
    src = tmp_path / "trail"
    src.mkdir()
    good = ct_event("2024-05-01T10:00:00Z")
    (src / "t.json").write_text(json.dumps({"Records": [ct_event(when), good]}))
    case = tmp_path / "case"
    capture(case, src)
    assert cloudir("timeline", "--case", str(case)).code == 0
    assert query(case, "SELECT event_id FROM timeline") == [{"event_id": good["eventID"]}]
    [logged] = [e for e in errors(case) if e.get("record") == 1]
    assert when in logged["reason"]
    out = tmp_path / "x.jsonl"
    assert cloudir("timeline", "export", "--case", str(case), "--out", str(out)).code == 0


# -- item 15: every evidence file bad --------------------------------------------------
def test_a_case_of_only_bad_files_says_so(tmp_path: Path) -> None:
    src = tmp_path / "trail"
    src.mkdir()
    whole = gzip.compress(json.dumps({"Records": [ct_event("2024-05-01T10:00:00Z")]}).encode())
    (src / "truncated.json.gz").write_bytes(whole[: len(whole) // 2])
    (src / "invalid.json").write_text('{"Records": [{"eventTime": ')
    (src / "shape.json").write_text('{"Records": 5}')
    (src / "empty.json").write_text("")
    (src / "scalar.json").write_text("42")
    case = tmp_path / "case"
    capture(case, src)
    result = cloudir("timeline", "--case", str(case), "--strict")
    assert result.code == 3
    assert "Traceback" not in result.stderr
    assert "no events" in result.stderr and "5 files" in result.stderr
    logged = errors(case)
    by_name = {Path(e["path"]).name: e["reason"] for e in logged}
    assert set(by_name) >= {
        "truncated.json.gz",
        "invalid.json",
        "shape.json",
        "empty.json",
        "scalar.json",
    }
    assert by_name["empty.json"] == "empty file"
    assert by_name["truncated.json.gz"].startswith("truncated or corrupt gzip")
    found = summary(case)
    assert found["rows"] == 0 and found["errors"] == len(logged)
    assert found["evidence_problems"] == []
    # an empty timeline is still a timeline: query, detect and export read it
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 0}]
    assert cloudir("detect", "--case", str(case)).code == 0
    # without --strict the run is a success that still says so in one line
    again = cloudir("timeline", "--case", str(case))
    assert again.code == 0 and "no events" in again.stderr


# -- item 11: workers die with the timeline --------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def big_case(tmp_path: Path) -> Path:
    """Enough CloudTrail that two workers are parsing for a while."""
    src = tmp_path / "trail"
    src.mkdir()
    for n in range(16):
        events = [ct_event(f"2024-05-01T10:{k % 60:02d}:00Z") for k in range(12_000)]
        (src / f"t{n}.json").write_text(json.dumps({"Records": events}))
    case = tmp_path / "case"
    capture(case, src)
    return case


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_timeline_is_killed(big_case: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudir", "timeline", "--case", str(big_case), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert proc.poll() is None, "the timeline finished before its workers were seen"
            assert time.monotonic() < deadline
            workers = _children(proc.pid)
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # never leave them behind for the next test
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_the_parent_watch_fallback_ends_an_orphan(tmp_path: Path) -> None:
    """Where PR_SET_PDEATHSIG is not there, a thread in the worker watches its parent."""
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, time; from cloudir.analyze.timeline import watch_parent; "
        f"watch_parent(os.getppid(), interval=0.05); open({str(pid_file)!r}, 'w')"
        ".write(str(os.getpid())); time.sleep(120)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    orphan = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(orphan)
    if alive:
        os.kill(orphan, signal.SIGKILL)
    assert not alive


def test_a_worker_whose_parent_died_before_it_started_watching_ends(tmp_path: Path) -> None:
    """The race: the timeline dies between forking a worker and the worker arming its
    death signal. The worker must notice at once, not live on as an orphan."""
    marker, pid_file = tmp_path / "survived", tmp_path / "child.pid"
    child = (
        "import os, sys, time; from cloudir.analyze.timeline import watch_parent; "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); parent = int(sys.argv[1]); "
        "[time.sleep(0.05) for _ in range(600) if os.getppid() == parent]; "
        f"watch_parent(parent); open({str(marker)!r}, 'w').write('yes'); time.sleep(30)"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())]); "
        f"[time.sleep(0.05) for _ in range(600) if not os.path.exists({str(pid_file)!r})]"
    )
    assert subprocess.run([sys.executable, "-c", parent], timeout=60).returncode == 0
    orphan = int(pid_file.read_text())
    deadline = time.monotonic() + 40
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(orphan)
    if alive:
        os.kill(orphan, signal.SIGKILL)
    assert not alive and not marker.exists()


# -- item 12: many small files ----------------------------------------------------------
def _small_files(case: Path, files: int) -> Iterator[str]:
    """`files` one-record delivery files in one recorded item (made directly: fast)."""
    from cloudir.case import Case, FileRecord, sha256_file

    the_case = Case.create(case)
    evidence_id = "cloudtrail-small"
    the_case.open_item(evidence_id, {"kind": "cloudtrail", "source": {"type": "test"}})
    folder = the_case.evidence_dir(evidence_id)
    records = []
    for n in range(files):
        event = ct_event(f"2024-05-01T10:{n % 60:02d}:00Z")
        path = folder / f"f{n:05d}.json.gz"
        path.write_bytes(records_gz([event]))
        digest, size = sha256_file(path)
        records.append(FileRecord(the_case.relpath(path), digest, size))
        yield event["eventID"]
    the_case.record("capture", evidence_id, records)
    the_case.record("capture-complete", evidence_id, [])


def test_many_small_files_give_row_groups_by_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from cloudir.analyze.timeline import ROW_GROUP_ROWS

    case = tmp_path / "case"
    ids = set(_small_files(case, 3000))
    result = cloudir("timeline", "--case", str(case), "--workers", "2", "--strict")
    assert result.code == 0, result.stderr
    parts = list(timeline_files(case / "timeline"))
    groups = sum(pq.ParquetFile(p).metadata.num_row_groups for p in parts)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    assert rows == len(ids) == 3000
    # one per parser chunk at most, never one per file
    assert groups <= max(len(parts), -(-rows // ROW_GROUP_ROWS)) <= 32
    assert {r["event_id"] for r in query(case, "SELECT event_id FROM timeline")} == ids


def test_worker_memory_does_not_grow_with_files(tmp_path: Path) -> None:
    """One worker's chunk of 3,000 files: one row group, so the writer keeps no per-file state."""
    import pyarrow.parquet as pq

    from cloudir.analyze.timeline import collect_tasks, parse_chunk
    from cloudir.case import Case

    case = tmp_path / "case"
    list(_small_files(case, 3000))
    tasks, skipped = collect_tasks(Case.open(case))
    assert skipped == [] and len(tasks) == 3000
    out = tmp_path / "part.parquet"
    chunk = parse_chunk(str(out), tasks)
    assert chunk.rows == 3000
    [written] = chunk.parts  # the files' events are all of one source and day
    assert pq.ParquetFile(written).metadata.num_row_groups == 1


def test_one_parser_imported_first_leaves_every_other_parser_registered() -> None:
    """A parser module imported on its own (as tests and helpers do) once left the
    registry holding that parser alone, and every CloudTrail file read as "no parser"."""
    code = (
        "import cloudir.analyze.parsers.host\n"
        "from pathlib import Path\n"
        "from cloudir.analyze.parsers import parser_for\n"
        "print(parser_for('cloudtrail', Path('x.json.gz')).name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cloudtrail"


def test_the_summary_line_counts_what_no_parser_reads_and_keeps_disagreements_apart(
    tmp_path: Path,
) -> None:
    """Files no parser reads had dropped out of the count once they carried a kind, and
    kept disagreeing copies were counted as skipped problems."""
    import zipfile

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.json.gz").write_bytes(records_gz([ct_event("2024-07-31T10:00:00Z")]))
    with zipfile.ZipFile(logs / "more.zip", "w") as archive:
        archive.writestr("inner.json", "{}")
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(logs)).code == 0
    result = cloudir("timeline", "--case", str(case))
    assert result.code == 0, result.stderr
    assert "1 evidence problems skipped and listed in" in result.stderr
    assert result.stderr.rstrip().endswith("0 parse errors; 1 files no parser reads")
