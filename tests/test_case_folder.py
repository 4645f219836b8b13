"""What `--case` may name: a file, a folder of other things, a damaged or booby-trapped case.

Each mistake gets one line and exit 2 (the user named the wrong thing) or 3 (the case is
damaged), never a traceback; nothing already there is modified and nothing is written
outside the case folder. The property test at the end builds every mix of files, folders,
links and FIFOs under the names a case is made of and holds those invariants for each.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import cloudir, ct_event, custody


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if "━" not in line]  # progress bars
    assert len(lines) == 1, stderr
    return lines[0]


VERIFY_STATUS = ("CHANGED ", "MISSING ", "UNRECORDED ", "CONFLICT ", "CUSTODY ", "note: ")


def _verify_findings(stderr: str) -> list[str]:
    """verify lists every difference it found, one line each: that list, or one error line."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if "━" not in line]  # progress bars
    assert lines, stderr
    if len(lines) > 1:
        assert all(line.startswith(VERIFY_STATUS) for line in lines), stderr
    return lines


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under root, links not followed: kind and content hash or link target."""
    found: dict[str, str] = {}
    if not os.path.lexists(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = _describe(path)
    found["."] = _describe(root)
    return found


def _describe(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "link:" + os.readlink(path)
    if stat.S_ISREG(mode):
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "dir"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "trail.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"Records": [ct_event("2024-07-31T10:00:00Z")]}))
    return path


def _commands(case: Path, source: Path) -> dict[str, list[str]]:
    c = str(case)
    return {
        "capture files": ["capture", "files", "--case", c, str(source)],
        "capture cloudtrail": ["capture", "cloudtrail", "--case", c, "--bucket", "b",
                               "--endpoint-url", "http://127.0.0.1:9"],
        "verify": ["verify", "--case", c],
        "timeline": ["timeline", "--case", c],
        "query": ["query", "--case", c, "SELECT 1"],
        "report": ["report", "--case", c],
        "demo": ["demo", "--case", c],
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_commands(Path("c"), Path("s"))))
def test_case_naming_a_file_is_a_usage_error(tmp_path: Path, source: Path, name: str) -> None:
    # Before: "error: FileExistsError: [Errno 17] File exists" and exit 3 for capture.
    case = tmp_path / "notes.txt"
    case.write_text("my notes")
    result = cloudir(*_commands(case, source)[name])
    assert result.code == 2, result.stderr
    assert _one_line(result.stderr) == (
        f"error: {case} is a file, not a case folder; give --case a folder"
    )
    assert case.read_text() == "my notes"


def test_case_under_a_file_is_a_usage_error(tmp_path: Path, source: Path) -> None:
    (tmp_path / "notes.txt").write_text("my notes")
    case = tmp_path / "notes.txt" / "case"
    result = cloudir("capture", "files", "--case", str(case), str(source))
    assert result.code == 2
    assert "part of this path is a file" in _one_line(result.stderr)


def test_a_folder_of_other_things_is_refused_unless_adopted(tmp_path: Path, source: Path) -> None:
    # Before: the folder was silently made a case (exit 0).
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "old").mkdir()
    before = _snapshot(folder)
    refused = cloudir("capture", "files", "--case", str(folder), str(source))
    assert refused.code == 2
    assert _one_line(refused.stderr) == (
        f"error: {folder} is not a cloudir case (no case.json) and holds notes.txt, old; "
        "pick a new or empty folder, or add --adopt-folder to make this one a case "
        "(its files stay as they are)"
    )
    assert _snapshot(folder) == before  # not even a lock file was left
    adopted = cloudir("capture", "files", "--case", str(folder), str(source), "--adopt-folder")
    assert adopted.code == 0, adopted.stderr
    assert (folder / "notes.txt").read_text() == "my notes"
    created = custody(folder)[0]
    assert created["action"] == "case-created"
    assert created["note"].endswith("already held 2 entries, not evidence: notes.txt, old")
    assert cloudir("verify", "--case", str(folder)).code == 0
    # a case now: later commands need no option
    assert cloudir("capture", "files", "--case", str(folder), str(source)).code == 0


def test_demo_refuses_a_folder_of_other_things(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    before = _snapshot(folder)
    for args in ([], ["--force"]):
        result = cloudir("demo", "--case", str(folder), *args)
        assert result.code == 2
        assert _one_line(result.stderr).endswith("holds notes.txt; pick a new or empty folder")
    assert _snapshot(folder) == before


def test_an_empty_folder_or_one_with_a_dead_runs_lock_is_a_new_case(
    tmp_path: Path, source: Path
) -> None:
    empty, leftover = tmp_path / "empty", tmp_path / "leftover"
    empty.mkdir()
    leftover.mkdir()
    (leftover / "case.lock").write_text('{"pid": 1, "command": "cloudir timeline"}\n')
    for case in (empty, leftover):
        result = cloudir("capture", "files", "--case", str(case), str(source))
        assert result.code == 0, result.stderr
        assert not (case / "case.lock").exists()


def test_a_case_folder_reached_through_a_link_is_used(tmp_path: Path, source: Path) -> None:
    real = tmp_path / "big-disk" / "case"
    real.mkdir(parents=True)
    (tmp_path / "case").symlink_to(real)
    assert cloudir("capture", "files", "--case", str(tmp_path / "case"), str(source)).code == 0
    assert (real / "case.json").is_file()
    assert cloudir("verify", "--case", str(tmp_path / "case")).code == 0


def _make_case(tmp_path: Path, source: Path) -> Path:
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    return case


def _library_case(tmp_path: Path) -> Path:
    """A case with one evidence item, made in this process (quicker than the CLI)."""
    from cloudir.case import Case

    case = Case.create(tmp_path / "case")
    case.open_item("files-x", {"kind": "files"})
    case.record("capture", "files-x", [case.store_bytes("files-x", "a.txt", b"a")])
    return case.root


def _replace(path: Path, how: str, outside: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if how == "garbage":
        path.write_bytes(b"{not json\xff")
    elif how == "list":
        path.write_text("[1, 2]")
    elif how == "no-id":
        path.write_text('{"title": "x"}')
    elif how == "dir":
        path.mkdir()
    elif how == "file":
        path.write_text("x")
    elif how == "link":
        path.symlink_to(outside)
    elif how == "fifo":
        os.mkfifo(path)


DAMAGE = {
    "case.json is not JSON": ("case.json", "garbage", "case.json is not valid JSON"),
    "case.json is a list": ("case.json", "list", "case.json holds a JSON list, not an object"),
    "case.json has no id": ("case.json", "no-id", "case.json has no case id"),
    "case.json is a folder": ("case.json", "dir", "case.json is not a regular file"),
    "case.json is a link": ("case.json", "link", "case.json is a symbolic link (to "),
    "case.json is a FIFO": ("case.json", "fifo", "case.json is not a regular file"),
    "custody.jsonl is missing": ("custody.jsonl", "missing", "has no custody.jsonl"),
    "custody.jsonl is a folder": ("custody.jsonl", "dir", "custody.jsonl is not a regular file"),
    "custody.jsonl is a link": ("custody.jsonl", "link", "custody.jsonl is a symbolic link"),
    "custody.jsonl is a FIFO": ("custody.jsonl", "fifo", "custody.jsonl is not a regular file"),
    "evidence is a file": ("evidence", "file", "evidence is not a folder"),
    "evidence is a link": ("evidence", "link", "evidence is a symbolic link"),
    "case.json is missing": ("case.json", "missing", "holds custody.jsonl and evidence but no"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_case_is_an_evidence_error_in_one_line(
    tmp_path: Path, source: Path, damage: str
) -> None:
    # Before: the last line of a traceback (JSONDecodeError, FileNotFoundError,
    # IsADirectoryError) with exit 3, a hang on a FIFO, custody started afresh when
    # custody.jsonl was missing, and writes through the links.
    name, how, says = DAMAGE[damage]
    case = _library_case(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("outside")
    _replace(case / name, how, outside / "target.txt" if name != "evidence" else outside)
    before, outside_before = _snapshot(case), _snapshot(outside)
    for command in ("verify", "capture files", "timeline"):
        result = cloudir(*_commands(case, source)[command], timeout=60)
        assert result.code == 3, (command, result.stderr)
        assert says in _one_line(result.stderr), command
        assert _snapshot(case) == before, command
        assert _snapshot(outside) == outside_before, command


@pytest.mark.parametrize("name", ["timeline", "findings", "report"])
def test_an_output_folder_linked_out_of_the_case_is_refused(
    tmp_path: Path, source: Path, name: str
) -> None:
    case = _make_case(tmp_path, source)
    outside = tmp_path / "outside"
    outside.mkdir()
    (case / name).symlink_to(outside)
    result = cloudir("analyze", "--case", str(case))
    assert result.code == 3
    assert f"{name} is a symbolic link (to {outside})" in _one_line(result.stderr)
    assert list(outside.iterdir()) == []


# -- property: any mix of things under the names a case is made of -----------------------
NAMES = ("case.json", "custody.jsonl", "evidence", "case.lock", "notes.txt")
SHAPES = (
    "absent",
    "valid",
    "garbage",
    "json-list",
    "dir",
    "link-file",
    "link-dir",
    "link-nowhere",
    "fifo",
)
VALID = {
    "case.json": json.dumps({"id": "c", "title": "t"}),
    "custody.jsonl": "",
    "case.lock": "",
    "notes.txt": "notes",
}


def _plant(path: Path, shape: str, outside: Path) -> None:
    if shape == "absent":
        return
    if shape == "valid":
        if path.name == "evidence":
            path.mkdir()
        else:
            path.write_text(VALID[path.name])
    elif shape == "garbage":
        path.write_bytes(b"\x00{garbage\n\xff")
    elif shape == "json-list":
        path.write_text("[]")
    elif shape == "dir":
        path.mkdir()
        (path / "inside.txt").write_text("inside")
    elif shape == "link-file":
        path.symlink_to(outside / "file.txt")
    elif shape == "link-dir":
        path.symlink_to(outside / "dir")
    elif shape == "link-nowhere":
        path.symlink_to(outside / "nothing-here")
    elif shape == "fifo":
        os.mkfifo(path)


# Weighted towards a folder that is nearly a case, where one planted part is the attack.
ROOTS = ("dir", "dir", "dir", "dir", "absent", "file")
LIKELY = {
    "case.json": "valid",
    "custody.jsonl": "valid",
    "evidence": "valid",
    "notes.txt": "absent",
}


def _shape(name: str) -> st.SearchStrategy[str]:
    likely = LIKELY.get(name)
    return st.sampled_from((likely,) * 3 + SHAPES if likely else SHAPES)


COMMANDS = ("capture files", "verify", "timeline")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    root=st.sampled_from(ROOTS),
    shapes=st.fixed_dictionaries({name: _shape(name) for name in NAMES}),
    command=st.sampled_from(COMMANDS),
)
def test_any_case_folder_gives_an_exit_code_and_one_line_and_changes_nothing_it_held(
    tmp_path_factory: pytest.TempPathFactory, root: str, shapes: dict[str, str], command: str
) -> None:
    base = tmp_path_factory.mktemp("prop")
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file.txt").write_text("outside file")
    source = base / "src" / "trail.json"
    source.parent.mkdir()
    source.write_text(json.dumps({"Records": [ct_event("2024-07-31T10:00:00Z")]}))
    case = base / "case"
    if root == "file":
        case.write_text("a file")
    elif root == "dir":
        case.mkdir()
        for name, shape in shapes.items():
            _plant(case / name, shape, outside)
    before_case, before_outside = _snapshot(case), _snapshot(outside)
    before_source = _snapshot(source.parent)
    held_custody = case / "custody.jsonl"
    old_custody = held_custody.read_bytes() if _is_plain_file(held_custody) else None

    result = cloudir(*_commands(case, source)[command], timeout=60)

    assert result.code in (0, 2, 3), result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(outside) == before_outside
    assert _snapshot(source.parent) == before_source
    after = _snapshot(case)
    foreign = {rel for rel in before_case if "/" not in rel and rel not in (".", "case.lock")}
    if "case.json" not in before_case and foreign:
        assert "case.json" not in after  # a folder of other things is never adopted unasked
    if result.code != 0:
        if command == "verify" and result.code == 3:
            _verify_findings(result.stderr)
        else:
            _one_line(result.stderr)
        assert after == before_case  # a refusal writes nothing, not even a lock file
        return
    for rel, was in before_case.items():
        if rel == "custody.jsonl" and was.startswith("file:"):
            continue  # appended to, checked below
        if rel == "." or rel == "case.lock":
            continue  # the folder's entries grow; a dead run's lock file is reused
        assert after.get(rel) == was, rel
    if old_custody is not None:
        assert held_custody.read_bytes().startswith(old_custody)  # appended to, never rewritten


def _is_plain_file(path: Path) -> bool:
    """True for a regular file (not a link): the only custody.jsonl that may be appended to."""
    return os.path.lexists(path) and _describe(path).startswith("file:")
