"""The fixed set of custody actions and the one evidence-item lifecycle every capture uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from cloudir.case import Case
from cloudir.custody_actions import RETIRED_NAMES, CustodyAction, read_action
from cloudir.evidence_item import EvidenceItem
from tests.conftest import custody

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "DESIGN.md"
ROW = re.compile(r"^\| `([a-z-]+)` \|(.+)\|(.+)\| (yes|no)[^|]*\|$")


def _documented() -> list[str]:
    """The actions in DESIGN.md's "Custody actions" table, in its order."""
    text = DESIGN.read_text()
    section = text.split("### Custody actions", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    matched = [ROW.match(line) for line in rows]
    assert all(matched), [row for row, m in zip(rows, matched, strict=True) if not m]
    return [m.group(1) for m in matched if m]


def test_the_design_table_lists_exactly_the_actions_cloudir_writes() -> None:
    documented = _documented()
    assert len(documented) == len(set(documented)), "an action is documented twice"
    assert documented == [a.value for a in CustodyAction]


def _record_calls() -> list[tuple[Path, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "cloudir").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
            ):
                calls.append((path, node))
    return calls


# The only `.record(` calls whose action is not written as `CustodyAction.<MEMBER>`: the
# item forwarding what its caller gave, and ebs_download's constant (checked below).
FORWARDERS = {
    ("cloudir/evidence_item.py", "action"),
    ("cloudir/evidence_item.py", "whole if complete else partial"),
    ("cloudir/capture/ebs_download.py", "ACTION"),
}


def test_every_record_call_names_a_custody_action_member() -> None:
    """No `.record(` in cloudir passes a word of its own: each names a CustodyAction
    member, or is one of the few places that forward one."""
    from cloudir.capture import ebs_download

    calls = _record_calls()
    assert len(calls) >= 20  # the scan finds the callers (an empty scan proves nothing)
    members = {a.name for a in CustodyAction}
    forwarded = set()
    for path, call in calls:
        rel = path.relative_to(ROOT).as_posix()
        given = [kw.value for kw in call.keywords if kw.arg == "action"] or call.args[:1]
        assert given, f"{rel}:{call.lineno}: .record( without an action"
        node = given[0]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert node.value.id == "CustodyAction", f"{rel}:{call.lineno}: {ast.unparse(node)}"
            assert node.attr in members, f"{rel}:{call.lineno}: no member {node.attr}"
        else:
            site = (rel, ast.unparse(node))
            assert site in FORWARDERS, f"{rel}:{call.lineno}: pass a CustodyAction member"
            forwarded.add(site)
    assert forwarded == FORWARDERS  # a forwarder that went away leaves the list
    assert isinstance(ebs_download.ACTION, CustodyAction)


def test_record_refuses_a_word_outside_the_set_and_writes_nothing(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    before = (case.root / "custody.jsonl").read_bytes()
    with pytest.raises(ValueError, match="'evidence-captured' is not a custody action"):
        case.record("evidence-captured", None, [])
    assert (case.root / "custody.jsonl").read_bytes() == before
    entry = case.record("capture-complete", "x", [])  # today's word as a string is fine
    assert entry["action"] == "capture-complete" and type(entry["action"]) is str


def test_values_are_the_words_existing_cases_hold() -> None:
    """A renamed value would make every existing case unreadable to completeness and
    restore: these are the words cases written before the set was fixed contain."""
    assert {a.value for a in CustodyAction} == {
        "case-created", "caller-identity", "custody-repaired", "evidence-opened",
        "partials-removed", "capture", "capture-skipped", "capture-complete",
        "capture-incomplete", "capture-ebs-image", "snapshot", "tag", "snapshot-described",
        "snapshot-pending", "share", "snapshot-copy", "snapshot-copy-complete",
        "docker-engine", "container-paused", "container-unpaused", "container-unpause-failed",
        "respond-plan", "respond-change-started", "respond-change", "respond-complete",
        "respond-incomplete", "upload", "upload-refused", "upload-complete",
        "upload-incomplete",
    }  # fmt: skip
    assert read_action("capture") is CustodyAction.CAPTURE
    assert read_action("no-such-action") is None and read_action(None) is None
    assert all(read_action(old) is new for old, new in RETIRED_NAMES.items())
    assert not set(RETIRED_NAMES) & {a.value for a in CustodyAction}


# -- the item lifecycle ----------------------------------------------------------------
def _actions(case: Case, evidence_id: str) -> list[tuple[str, str]]:
    return [(e["action"], e["note"]) for e in custody(case.root) if e["evidence_id"] == evidence_id]


def test_an_item_stores_records_and_closes_complete(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with case.item("files-a", {"kind": "files"}) as item:
        rec = item.store("files/a.txt", b"abc", source={"type": "file"})
        item.store("files/b.txt", [b"de", b"f"], note="two chunks")
        item.skip()
    assert item.complete is True
    assert (item.captured, item.skipped, item.bytes) == (2, 1, 6)
    assert item.files == [rec.path, "evidence/files-a/files/b.txt"]
    entries = [e for e in custody(case.root) if e["evidence_id"] == "files-a"]
    assert [e["action"] for e in entries] == [
        "evidence-opened",
        "capture",
        "capture",
        "capture-complete",
    ]
    assert entries[1]["files"][0] == rec.as_dict() and entries[1]["source"] == {"type": "file"}
    assert entries[2]["note"] == "two chunks"
    assert entries[3]["note"] == "2 captured, 1 skipped" and entries[3]["files"] == []


def test_a_problem_or_a_left_out_thing_closes_it_incomplete(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with case.item("a", {"kind": "files"}) as item:
        item.problem("x: cannot be read")
    with case.item("b", {"kind": "files"}) as other:
        other.leave_out("y: a FIFO, not captured")
        other.skip("console output not captured")  # a recorded skip does not
    assert (item.complete, other.complete) == (False, False)
    closing = ("capture-incomplete", "0 captured, 0 skipped; x: cannot be read")
    assert _actions(case, "a")[-1] == closing
    assert [a for a, _ in _actions(case, "b")] == [
        "evidence-opened",
        "capture-skipped",
        "capture-incomplete",
    ]
    assert other.skip_reasons == ["console output not captured"]


def test_an_exception_closes_the_item_incomplete_and_is_raised_again(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with pytest.raises(KeyboardInterrupt), case.item("a", {"kind": "files"}) as item:
        item.store("one.txt", b"1")
        raise KeyboardInterrupt
    with pytest.raises(OSError, match="disk on fire"), case.item("b", {"kind": "files"}):
        raise OSError("disk on fire")
    assert item.complete is False
    assert _actions(case, "a")[-1] == (
        "capture-incomplete",
        "1 captured, 0 skipped; stopped by KeyboardInterrupt",
    )
    assert _actions(case, "b")[-1][1].endswith("stopped by OSError: disk on fire")


def test_a_failed_closing_entry_is_not_followed_by_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The closing write itself fails (a kill, a full disk): the item stays as it was on
    disk (open), never closed twice with contradicting words."""
    case = Case.create(tmp_path / "case")
    real = Case.record

    def refuse_close(self: Case, action: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if action == CustodyAction.CAPTURE_COMPLETE:
            raise KeyboardInterrupt
        return real(self, action, *args, **kwargs)

    monkeypatch.setattr(Case, "record", refuse_close)
    with pytest.raises(KeyboardInterrupt), case.item("a", {"kind": "files"}) as item:
        item.store("one.txt", b"1")
    monkeypatch.undo()
    assert [a for a, _ in _actions(case, "a")] == ["evidence-opened", "capture"]
    with pytest.raises(RuntimeError, match="already ended"):
        item.finish()


def test_a_response_item_closes_with_its_own_words_and_file(tmp_path: Path) -> None:
    from cloudir.custody_actions import RESPOND_CLOSING

    case = Case.create(tmp_path / "case")
    with case.item("r", {"kind": "response"}, closing=RESPOND_CLOSING) as item:
        item.finish("nothing to do", complete=False, file=("outcome.json", b"{}\n"))
    last = custody(case.root)[-1]
    assert (last["action"], last["note"]) == ("respond-incomplete", "nothing to do")
    assert [f["path"] for f in last["files"]] == ["evidence/r/outcome.json"]


def test_an_unchanged_resumed_item_can_be_left_as_it_was(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "case")
    with case.item("a", {"kind": "files"}) as first:
        first.store("one.txt", b"1")
    with case.item("a", {"kind": "files"}) as again:
        assert again.resumed
        again.leave_as_is()
    assert [a for a, _ in _actions(case, "a")] == ["evidence-opened", "capture", "capture-complete"]
    assert isinstance(again, EvidenceItem) and again.complete is None
