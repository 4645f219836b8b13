"""The case folder and its custody log: what a responder must be able to defend."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cloudir.case import Case
from cloudir.errors import EvidenceError
from tests.conftest import cloudir, ct_event, custody, records_gz


@pytest.fixture
def captured(tmp_path: Path) -> Path:
    source = tmp_path / "logs"
    source.mkdir()
    (source / "a.json.gz").write_bytes(records_gz([ct_event("2024-07-31T10:00:00Z")]))
    (source / "b.json").write_text(json.dumps({"Records": [ct_event("2024-07-31T11:00:00Z")]}))
    case = tmp_path / "case"
    result = cloudir("capture", "files", "--case", str(case), str(source))
    assert result.code == 0, result.stderr
    return case


def test_custody_records_every_file_with_its_hash(captured: Path, tmp_path: Path) -> None:
    entries = custody(captured)
    recorded = {f["path"]: f for e in entries for f in e["files"]}
    for name in ("a.json.gz", "b.json"):
        original = (tmp_path / "logs" / name).read_bytes()
        rec = next(v for k, v in recorded.items() if k.endswith("/files/" + name))
        assert rec["sha256"] == hashlib.sha256(original).hexdigest()
        assert rec["bytes"] == len(original)
        assert (captured / rec["path"]).read_bytes() == original
    capture = next(e for e in entries if e["action"] == "capture")
    assert {"ts", "actor", "host", "tool_version", "command", "evidence_id"} <= set(capture)
    assert capture["source"]["original_path"].startswith(str(tmp_path / "logs"))


def test_case_json_names_case_and_version(captured: Path) -> None:
    info = json.loads((captured / "case.json").read_text())
    assert info["id"] == "case"
    assert info["cloudir_version"]
    assert info["created"].endswith("Z")


def test_verify_passes_on_an_untouched_case(captured: Path) -> None:
    result = cloudir("verify", "--case", str(captured), "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["ok"] is True
    assert report["checked"] == 3  # two logs and meta.json


def _evidence_file(case: Path, name: str) -> Path:
    return next(case.glob(f"evidence/*/files/{name}"))


def test_verify_names_a_changed_file(captured: Path) -> None:
    target = _evidence_file(captured, "b.json")
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert f"CHANGED   {target.relative_to(captured)}" in result.stderr


def test_verify_names_a_missing_file(captured: Path) -> None:
    target = _evidence_file(captured, "a.json.gz")
    target.unlink()
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert f"MISSING   {target.relative_to(captured)}" in result.stderr


def test_verify_names_an_added_file(captured: Path) -> None:
    extra = _evidence_file(captured, "a.json.gz").parent / "planted.json"
    extra.write_text("{}")
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert f"UNRECORDED {extra.relative_to(captured)}" in result.stderr


def test_verify_catches_an_edited_custody_entry(captured: Path) -> None:
    path = captured / "custody.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["actor"] = "someone-else"
    lines[1] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert "custody.jsonl line 3: chain broken" in result.stderr


def test_evidence_is_written_read_only(captured: Path) -> None:
    target = _evidence_file(captured, "a.json.gz")
    assert target.stat().st_mode & 0o222 == 0


def test_evidence_names_cannot_leave_the_item(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    case.open_item("item", {"kind": "files"})
    rec = case.store_bytes("item", "../../../etc/passwd", b"x")
    assert rec.path == "evidence/item/etc/passwd"
    assert not (tmp_path / "etc").exists()


def test_open_refuses_a_folder_that_is_not_a_case(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a cloudir case"):
        Case.open(tmp_path)
    result = cloudir("verify", "--case", str(tmp_path))
    assert result.code == 2
    assert "not a cloudir case" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_meta_is_an_evidence_error(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    (case.evidence_dir("x")).mkdir(parents=True)
    (case.evidence_dir("x") / "meta.json").write_text("{broken")
    with pytest.raises(EvidenceError, match=r"unreadable meta\.json"):
        case.read_meta("x")


def test_capture_files_names_what_it_could_not_take(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.json").write_text(json.dumps([ct_event("2024-07-31T10:00:00Z")]))
    os.mkfifo(source / "pipe")
    (source / "link.json").symlink_to(source / "ok.json")
    case = tmp_path / "case"
    result = cloudir("capture", "files", "--case", str(case), str(source), "--json")
    assert result.code == 3
    [item] = result.json()["items"]
    assert item["captured"] == 1
    assert sorted(Path(w.split(":")[0]).name for w in item["warnings"]) == ["link.json", "pipe"]
    assert "2 file(s) not captured" in result.stderr
    last = custody(case)[-1]
    assert last["action"] == "capture-incomplete"


def test_a_partial_with_a_checkpoint_survives_so_a_download_resumes(tmp_path: Path) -> None:
    from cloudir.case import Case

    case = Case.create(tmp_path / "case")
    folder = case.evidence_dir("ebs-snap-1")
    folder.mkdir(parents=True)
    (folder / "image.raw.partial").write_bytes(b"half")
    (folder / "image.raw.checkpoint").write_text("{}")
    (folder / ".other.json.abc.partial").write_bytes(b"junk")
    assert case.remove_stale_partials("ebs-snap-1") == 1
    assert (folder / "image.raw.partial").exists()
    assert not (folder / ".other.json.abc.partial").exists()


def test_recorded_evidence_named_partial_and_folders_so_named_are_never_cleared(
    tmp_path: Path,
) -> None:
    """A resume clears only an interrupted run's temporary files: a held file that is
    itself called `*.partial` stays (it was deleted), and a folder so named is passed
    over (it raised IsADirectoryError)."""
    from cloudir.case import Case

    case = Case.create(tmp_path / "case")
    rec = case.store_bytes("files-x", "files/notes.partial", b"evidence")
    case.record("capture", "files-x", [rec])
    folder = case.evidence_dir("files-x")
    (folder / "dir.partial").mkdir()
    (folder / ".tmp.abc.partial").write_bytes(b"junk")
    assert case.remove_stale_partials("files-x") == 1
    assert (case.root / rec.path).read_bytes() == b"evidence"
    assert (folder / "dir.partial").is_dir()


# -- issue 14 item 2: one path, two hashes ---------------------------------------------


def _append_chained(case: Path, entry: dict) -> None:
    """Append an entry the way cloudir does (chained to the last line): a forged but
    well-formed record, as someone with write access or a buggy code path would add."""
    path = case / "custody.jsonl"
    last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    entry = dict(entry, prev_sha256=hashlib.sha256(last).hexdigest())
    with open(path, "ab") as fh:
        fh.write(json.dumps(entry, sort_keys=True).encode() + b"\n")


def test_verify_names_two_hashes_for_one_path_as_a_conflict(captured: Path) -> None:
    target = _evidence_file(captured, "b.json")
    rel = target.relative_to(captured).as_posix()
    _append_chained(
        captured,
        {"action": "capture", "files": [{"path": rel, "sha256": "0" * 64, "bytes": 3}]},
    )
    result = cloudir("verify", "--case", str(captured), "--json")
    assert result.code == 3
    report = result.json()
    assert [c["path"] for c in report["conflicts"]] == [rel]
    assert {r["sha256"] for r in report["conflicts"][0]["recorded"]} == {
        hashlib.sha256(target.read_bytes()).hexdigest(),
        "0" * 64,
    }
    assert report["changed"] == []  # the file still matches what custody first held
    assert f"CONFLICT  {rel}" in result.stderr


def test_record_refuses_a_second_hash_for_a_held_path(tmp_path: Path) -> None:
    from cloudir.case import FileRecord

    case = Case.create(tmp_path / "c")
    case.open_item("item", {"kind": "files"})
    rec = case.store_bytes("item", "files/a.json", b"first")
    case.record("capture", "item", [rec])
    case.record("capture", "item", [rec], note="the same bytes again are fine")
    other = FileRecord(rec.path, hashlib.sha256(b"other").hexdigest(), 5)
    before = (case.root / "custody.jsonl").read_bytes()
    with pytest.raises(EvidenceError, match="already in custody with SHA-256"):
        case.record("capture", "item", [other])
    assert (case.root / "custody.jsonl").read_bytes() == before
    # a fresh process (no cache) refuses it too
    with pytest.raises(EvidenceError, match="already in custody with SHA-256"):
        Case.open(case.root).record("capture", "item", [other])


def test_a_missing_held_file_is_never_refilled_with_other_bytes(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "c")
    case.open_item("item", {"kind": "files"})
    rec = case.store_bytes("item", "files/a.json", b"first")
    case.record("capture", "item", [rec])
    target = case.root / rec.path
    target.unlink()
    reopened = Case.open(case.root)
    with pytest.raises(EvidenceError, match="already in custody with SHA-256"):
        reopened.store_bytes("item", "files/a.json", b"second")
    assert not target.exists()
    assert not list(target.parent.glob("*.partial"))
    assert reopened.store_bytes("item", "files/a.json", b"first") == rec  # the same bytes


# -- issue 14 item 9: non-regular files, torn custody tails ------------------------------


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink", "dev-symlink", "directory"])
def test_verify_reports_a_non_regular_file_in_place_of_evidence(captured: Path, kind: str) -> None:
    import stat

    target = _evidence_file(captured, "b.json")
    rel = target.relative_to(captured).as_posix()
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        os.mknod(target, stat.S_IFSOCK | 0o600)
    elif kind == "symlink":
        target.symlink_to(_evidence_file(captured, "a.json.gz"))
    elif kind == "dev-symlink":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    result = cloudir("verify", "--case", str(captured), "--json", timeout=60)
    assert result.code == 3, result.stderr
    assert "Traceback" not in result.stderr
    report = result.json()
    assert report["changed"] == [rel]
    assert report["changed_reasons"][rel].startswith("not a regular file")
    assert report["missing"] == []
    assert f"CHANGED   {rel} (not a regular file" in result.stderr


def _cut_last_line(case: Path, keep: int) -> bytes:
    """custody.jsonl as a full disk leaves it: the last line cut after `keep` bytes."""
    path = case / "custody.jsonl"
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[: start + keep]
    path.write_bytes(torn)
    return torn


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def test_a_torn_custody_tail_is_named_once_and_repaired_by_the_next_write(
    captured: Path, tmp_path: Path
) -> None:
    torn = _cut_last_line(captured, 40)
    torn_line = _line_count(torn)
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    custody_lines = [line for line in result.stderr.splitlines() if "custody.jsonl" in line]
    assert len(custody_lines) == 1, result.stderr
    assert f"line {torn_line}" in custody_lines[0] and "cut short" in custody_lines[0]

    more = tmp_path / "more"
    more.mkdir()
    (more / "c.json").write_text(json.dumps({"Records": [ct_event("2024-07-31T12:00:00Z")]}))
    result = cloudir("capture", "files", "--case", str(captured), str(more))
    assert result.code == 0, result.stderr

    after = (captured / "custody.jsonl").read_bytes()
    assert after.startswith(torn)  # not one existing byte deleted or edited
    lines = after.splitlines()
    repair = json.loads(lines[torn_line])
    assert repair["action"] == "custody-repaired"
    torn_bytes = torn[torn.rfind(b"\n") + 1 :]
    assert repair["torn"] == [
        {
            "line": torn_line,
            "bytes": len(torn_bytes),
            "sha256": hashlib.sha256(torn_bytes).hexdigest(),
        }
    ]
    result = cloudir("verify", "--case", str(captured), "--json")
    assert result.code == 0, result.stderr
    assert any(f"line {torn_line}" in n for n in result.json()["custody_notes"])


def test_a_line_cut_short_in_the_middle_stays_a_chain_error(captured: Path, tmp_path: Path) -> None:
    path = captured / "custody.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:30] + b"\n"
    path.write_bytes(b"".join(lines))
    more = tmp_path / "more"
    more.mkdir()
    (more / "c.json").write_text("{}")
    cloudir("capture", "files", "--case", str(captured), str(more))
    assert "custody-repaired" not in path.read_text()
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert "custody.jsonl line 2: not valid JSON" in result.stderr


def test_a_forged_repair_entry_does_not_excuse_an_edit_in_the_middle(captured: Path) -> None:
    """Cutting line 2 and inserting a well-formed repair after it breaks line 3's link."""
    path = captured / "custody.jsonl"
    lines = path.read_bytes().splitlines()
    cut = lines[1][:30]
    repair = {
        "action": "custody-repaired",
        "files": [],
        "torn": [{"line": 2, "bytes": len(cut), "sha256": hashlib.sha256(cut).hexdigest()}],
        "prev_sha256": hashlib.sha256(lines[0]).hexdigest(),
    }
    forged = [lines[0], cut, json.dumps(repair, sort_keys=True).encode(), *lines[2:]]
    path.write_bytes(b"\n".join(forged) + b"\n")
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3
    assert "custody.jsonl line 4: chain broken" in result.stderr


def test_verify_head_catches_a_removed_last_entry(captured: Path) -> None:
    ok = cloudir("verify", "--case", str(captured), "--json")
    head = ok.json()["custody_head_sha256"]
    path = captured / "custody.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the last capture-complete entry, gone
    assert cloudir("verify", "--case", str(captured)).code == 0  # the limit without a head
    result = cloudir("verify", "--case", str(captured), "--head", head)
    assert result.code == 3
    assert f"custody head {head} is not in custody.jsonl" in result.stderr
    assert cloudir("verify", "--case", str(captured), "--head", "x").code == 2


# -- issue 14 item 9: no space left ------------------------------------------------------

FAIL_WRITES = """
import errno, os, sys
budget = int(os.environ["FAIL_AFTER_BYTES"])
part = os.environ["FAIL_PATH_PART"]
real_write = os.write

def write(fd, data):
    global budget
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if part not in name:
        return real_write(fd, data)
    if budget <= 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    n = real_write(fd, bytes(data[:budget]))  # a short write, as the kernel does when full
    budget -= n
    return n

os.write = write
from cloudir.cli import main
sys.argv = ["cloudir", *sys.argv[1:]]
main()
"""


def _cloudir_with_full_disk(part: str, after: int, *args: str) -> tuple[int, str]:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", FAIL_WRITES, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, FAIL_PATH_PART=part, FAIL_AFTER_BYTES=str(after), COLUMNS="200"),
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("where", "room"),
    [("custody.jsonl", 50), ("/evidence/", 0), ("/evidence/", 3000)],
    ids=["custody", "meta-json", "evidence-file"],
)
def test_a_full_disk_is_named_with_the_file_being_written(
    captured: Path, tmp_path: Path, where: str, room: int
) -> None:
    more = tmp_path / "more"
    more.mkdir()
    (more / "big.json").write_text(json.dumps({"Records": [{"pad": "x" * 100_000}]}))
    code, stderr = _cloudir_with_full_disk(
        where, room, "capture", "files", "--case", str(captured), str(more)
    )
    assert code == 3, stderr
    assert "Traceback" not in stderr and "cannot be read" not in stderr
    [line] = [x for x in stderr.splitlines() if "no space" in x]
    assert "no space left on device while writing " in line
    assert where in line.split("while writing ", 1)[1]


def test_a_file_size_limit_tears_custody_and_the_next_run_repairs_it(
    captured: Path, tmp_path: Path
) -> None:
    """A real short write by the kernel: RLIMIT_FSIZE stops custody.jsonl mid-line (EFBIG)."""
    import resource
    import subprocess
    import sys

    custody_file = captured / "custody.jsonl"
    before = custody_file.read_bytes()
    limit = len(before) + 100  # room for the small evidence, not for a whole custody entry
    more = tmp_path / "more"
    more.mkdir()
    (more / "c.json").write_text("{}")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "cloudir", "capture", "files", "--case", str(captured), str(more)],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"file too large (file size limit) while writing {custody_file}" in proc.stderr
    torn = custody_file.read_bytes()
    assert len(torn) == limit and not torn.endswith(b"\n")
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 3 and "cut short" in result.stderr
    assert cloudir("capture", "files", "--case", str(captured), str(more)).code == 0
    assert custody_file.read_bytes().startswith(torn)
    result = cloudir("verify", "--case", str(captured))
    assert result.code == 0, result.stderr


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (
            OSError(28, "No space left on device", "/c/timeline/part-0.parquet"),
            "error: no space left on device while writing /c/timeline/part-0.parquet",
        ),
        (
            OSError(122, "Disk quota exceeded", "/c/report/report.html"),
            "error: disk quota exceeded while writing /c/report/report.html",
        ),
        (
            RuntimeError('IO Error: Could not write file "/c/x.parquet": No space left on device'),
            'error: no space left on device (IO Error: Could not write file "/c/x.parquet": '
            "No space left on device)",
        ),
    ],
    ids=["enospc", "edquot", "library-text"],
)
def test_any_stage_running_out_of_space_is_one_line_exit_3(
    capsys: pytest.CaptureFixture[str], raised: Exception, line: str
) -> None:
    """The central net under every command (timeline, report, detect writes)."""
    import typer

    from cloudir.cli import handled

    @handled
    def writes_something() -> None:
        try:
            raise raised
        except Exception as exc:
            raise ValueError("wrapped by the stage") from exc

    with pytest.raises(typer.Exit) as stopped:
        writes_something()
    assert stopped.value.exit_code == 3
    assert capsys.readouterr().err.strip() == line


def test_verify_repair_closes_a_torn_tail_and_writes_nothing_else(captured: Path) -> None:
    intact = (captured / "custody.jsonl").read_bytes()
    result = cloudir("verify", "--case", str(captured), "--repair")
    assert result.code == 0, result.stderr
    assert (captured / "custody.jsonl").read_bytes() == intact  # nothing torn: no write

    torn = _cut_last_line(captured, 25)
    result = cloudir("verify", "--case", str(captured), "--repair", "--json")
    assert result.code == 0, result.stderr
    after = (captured / "custody.jsonl").read_bytes()
    assert after.startswith(torn)
    repair = json.loads(after.splitlines()[-1])
    assert repair["action"] == "custody-repaired"
    assert [t["line"] for t in repair["torn"]] == [_line_count(torn)]
    assert result.json()["custody_notes"]
    assert "repaired" in result.stderr
