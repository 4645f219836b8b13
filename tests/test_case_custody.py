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
