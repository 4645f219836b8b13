"""Capture played as an adversary: hostile S3 keys, hostile local trees, files that change
while they are copied, and a case captured into itself.

Invariants asserted throughout: every input object ends up either as evidence or as a named,
counted problem (never neither); nothing is written outside the case; exit codes follow the
contract; no traceback; `cloudir verify` exits 0 afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.aws import Aws, AwsOptions
from cloudir.capture import cloudtrail, files
from cloudir.case import Case
from cloudir.timewindow import Window
from tests.conftest import boto_client, cloudir, custody, records_gz

ACCOUNT = "111111111111"
REGION_PREFIX = f"t/AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/"
DAY = "2024/07/31/"
LOG = f"{ACCOUNT}_CloudTrail_us-east-1_20240731T0905Z_0123456789abcdef.json.gz"
WINDOW = ["--start", "2024-07-31T00:00:00Z", "--end", "2024-07-31T23:59:59Z"]


def _bucket(moto_url: str) -> tuple[Any, str]:
    s3 = boto_client(moto_url, "s3")
    bucket = f"adv-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket


def _capture_s3(case: Path, moto_url: str, bucket: str, *extra: str) -> Any:
    return cloudir(
        "capture", "cloudtrail", "--case", str(case), "--endpoint-url", moto_url,
        "--bucket", bucket, "--prefix", "t", *WINDOW, "--json", *extra,
    )  # fmt: skip


def _tree_snapshot(root: Path) -> dict[str, int]:
    """Every path under root with its mtime: what 'nothing written outside the case' compares."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            found[path] = os.lstat(path).st_mtime_ns
    return found


def _assert_s3_capture_holds_every_object(
    case: Path, objects: dict[str, bytes], cli_verify: bool = True
) -> None:
    """One evidence file per object, byte for byte; each key once in custody; decodable."""
    entries = [e for e in custody(case) if e["action"] == "capture"]
    keys = [e["source"]["key"] for e in entries]
    assert sorted(keys) == sorted(objects), "every key exactly once in custody"
    paths = [f["path"] for e in entries for f in e["files"]]
    assert len(set(paths)) == len(paths) == len(objects), "one evidence path per object"
    on_disk = [p for p in (case / "evidence").rglob("*") if p.is_file() and p.name != "meta.json"]
    assert len(on_disk) == len(objects)
    for entry in entries:
        [record] = entry["files"]
        body = objects[entry["source"]["key"]]
        stored = (case / record["path"]).read_bytes()
        assert stored == body
        assert record["sha256"] == hashlib.sha256(body).hexdigest()
        name = record["path"].split("/", 2)[2]  # evidence/<id>/<name>
        assert REGION_PREFIX + cloudtrail.key_for_evidence_name(name) == entry["source"]["key"]
    if cli_verify:
        verify = cloudir("verify", "--case", str(case))
        assert verify.code == 0, verify.stderr


# -- item 1: colliding object keys -------------------------------------------------------


def test_keys_that_normalise_alike_are_three_objects_and_three_files(
    moto_url: str, tmp_path: Path
) -> None:
    """Before: 3 captured reported, 2 files stored, one path in custody twice with two hashes."""
    s3, bucket = _bucket(moto_url)
    objects = {
        REGION_PREFIX + DAY + LOG: records_gz([]) + b"genuine",
        REGION_PREFIX + DAY + "./" + LOG: b"dot",
        REGION_PREFIX + DAY + "x/../" + LOG: b"dotdot",
        REGION_PREFIX + DAY + ".../" + LOG: b"three dots",
        REGION_PREFIX + DAY + "/" + LOG: b"empty segment",
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    case = tmp_path / "case"
    result = _capture_s3(case, moto_url, bucket)
    assert result.code == 0, result.stderr
    [item] = result.json()["items"]
    assert (item["captured"], item["failed"]) == (len(objects), [])
    _assert_s3_capture_holds_every_object(case, objects)
    genuine = REGION_PREFIX + DAY + LOG
    [entry] = [e for e in custody(case) if e.get("source", {}).get("key") == genuine]
    assert entry["files"][0]["path"].endswith(f"/logs/{DAY}{LOG}"), "plain keys keep their name"


def test_file_and_folder_of_one_name_and_keys_differing_in_case(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url)
    names = ["a", "a/b", "A", "a/", "a.json/x", "a.json", "%41", "é.json", "e\u0301.json"]
    names.append("z" * 300)
    names.append("é" * ((1024 - len(REGION_PREFIX + DAY)) // 2))  # S3's longest key
    objects = {REGION_PREFIX + DAY + n: f"body of {n}".encode() for n in names}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    case = tmp_path / "case"
    result = _capture_s3(case, moto_url, bucket)
    assert result.code == 0, result.stderr
    _assert_s3_capture_holds_every_object(case, objects)
    again = _capture_s3(case, moto_url, bucket)
    assert again.code == 0, again.stderr
    [item] = again.json()["items"]
    assert (item["captured"], item["skipped"]) == (0, len(objects))


SEGMENT = st.one_of(
    st.sampled_from(
        ["", ".", "..", "...", "a", "A", "a.json.gz", "%2F", "%", "-", "_", "~", "x.partial"]
    ),
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
        min_size=1,
        max_size=12,
    ),
    st.text(st.sampled_from("aZ.-_%é"), min_size=100, max_size=300),
)
TAIL = st.lists(SEGMENT, min_size=1, max_size=5).map("/".join)


@given(tails=st.lists(TAIL, min_size=1, max_size=6, unique=True))
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_keys_each_get_their_own_evidence_file(
    moto_url: str, tmp_path_factory: pytest.TempPathFactory, tails: list[str]
) -> None:
    """In-process (the CLI path is covered above), so 20 examples stay fast."""
    keys = [REGION_PREFIX + DAY + t for t in tails]
    keys = [k for k in keys if len(k.encode()) <= 1024]
    if not keys:
        return
    s3, bucket = _bucket(moto_url)
    objects = {key: f"{n}:{key}".encode() for n, key in enumerate(keys)}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    work = tmp_path_factory.mktemp("adv")
    before = _tree_snapshot(work)
    case = work / "case"
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=moto_url))
    window = Window.parse(*WINDOW[1::2])
    [item] = cloudtrail.capture_s3(
        Case.create(case), aws, bucket, "t", [], [], window, 4, {}, lambda _: None
    )
    assert (item.captured, item.failed) == (len(objects), [])
    _assert_s3_capture_holds_every_object(case, objects, cli_verify=False)
    assert Case.open(case).verify().ok
    outside = {p: t for p, t in _tree_snapshot(work).items() if not p.startswith(str(case))}
    assert outside == before


@given(tail=TAIL)
@settings(max_examples=300, deadline=None)
def test_the_encoding_is_reversible_and_survives_the_case_cleaning(tail: str) -> None:
    name = cloudtrail.evidence_name_for_key(tail)
    assert cloudtrail.key_for_evidence_name(name) == tail
    for etag in ("logs", "0" * 32 + "-7", tail):
        assert cloudtrail.key_for_evidence_name(cloudtrail.version_name(etag, name)) == tail
    parts = name.split("/")
    assert all(0 < len(p.encode()) <= 120 for p in parts)
    assert not any(p.endswith(".partial") for p in parts), "the case clears *.partial"
    case_like = Path("/c")
    from cloudir.case import safe_name

    assert [safe_name(p) for p in parts] == parts, "the case's own cleaning leaves it alone"
    assert case_like.joinpath(*parts).as_posix() == "/c/" + name


# -- item 3, capture side: an object that changes while it is fetched ----------------------


def _s3_case(moto_url: str, tmp_path: Path, bodies: dict[str, bytes]) -> tuple[Any, str, Aws]:
    s3, bucket = _bucket(moto_url)
    for name, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=REGION_PREFIX + DAY + name, Body=body)
    return s3, bucket, Aws(AwsOptions(region="us-east-1", endpoint_url=moto_url))


def _run_s3(case: Case, aws: Aws, bucket: str) -> cloudtrail.ItemResult:
    window = Window.parse(*WINDOW[1::2])
    [item] = cloudtrail.capture_s3(case, aws, bucket, "t", [], [], window, 1, {}, lambda _: None)
    return item


def _last_status(case: Path) -> str:
    return [e for e in custody(case) if e["action"].startswith("capture-")][-1]["action"]


def test_an_object_replaced_between_listing_and_reading_is_fetched_again(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket, aws = _s3_case(moto_url, tmp_path, {"a.json.gz": b"as listed", "b.json.gz": b"b"})
    key = REGION_PREFIX + DAY + "a.json.gz"
    replaced: list[str] = []

    def replace_once(params: dict[str, Any], **_: Any) -> None:
        if params["Key"] == key and not replaced:
            replaced.append(key)
            s3.put_object(Bucket=bucket, Key=key, Body=b"rewritten after the listing")

    aws.session.events.register("provide-client-params.s3.GetObject", replace_once)
    case_dir = tmp_path / "case"
    item = _run_s3(Case.create(case_dir), aws, bucket)
    assert item.captured == 1
    [failure] = item.failed
    assert failure.startswith(key) and "changed since it was listed" in failure
    assert [e["source"]["key"] for e in custody(case_dir) if e["action"] == "capture"] == [
        REGION_PREFIX + DAY + "b.json.gz"
    ]
    assert _last_status(case_dir) == "capture-incomplete"

    again = _run_s3(Case.open(case_dir), aws, bucket)
    assert (again.captured, again.skipped, again.failed) == (1, 1, [])
    captures = [e for e in custody(case_dir) if e["action"] == "capture"]
    [entry] = [e for e in captures if e["source"]["key"] == key]
    assert (case_dir / entry["files"][0]["path"]).read_bytes() == b"rewritten after the listing"
    assert _last_status(case_dir) == "capture-complete"
    assert Case.open(case_dir).verify().ok


def test_a_short_answer_is_never_recorded_even_when_its_length_header_agrees(
    moto_url: str, tmp_path: Path
) -> None:
    """Before: the cut body was stored and recorded as complete (only the header was checked)."""
    from botocore.response import StreamingBody

    _, bucket, aws = _s3_case(moto_url, tmp_path, {"a.json.gz": b"0123456789" * 10})
    cut: list[int] = []

    def cut_once(parsed: dict[str, Any], **_: Any) -> None:
        if not cut:
            data = parsed["Body"].read()[:37]
            cut.append(len(data))
            parsed["Body"] = StreamingBody(io.BytesIO(data), len(data))
            parsed["ContentLength"] = len(data)

    aws.session.events.register("after-call.s3.GetObject", cut_once)
    case_dir = tmp_path / "case"
    item = _run_s3(Case.create(case_dir), aws, bucket)
    assert item.captured == 0
    [failure] = item.failed
    assert "37 bytes" in failure and "100" in failure
    assert not [e for e in custody(case_dir) if e["action"] == "capture"]
    assert _last_status(case_dir) == "capture-incomplete"
    again = _run_s3(Case.open(case_dir), aws, bucket)
    assert (again.captured, again.skipped, again.failed) == (1, 0, [])
    assert Case.open(case_dir).verify().ok


# -- item 3, capture side: a local file that changes while it is copied --------------------


def _mutating_chunks(change: Any) -> Any:
    """files._chunks, with `change(path)` run once after the first chunk: a deterministic
    stand-in for a writer racing the copy."""
    real = files._chunks

    def chunks(fh: Any, path: Path, before: os.stat_result) -> Any:
        for number, chunk in enumerate(real(fh, path, before)):
            if number == 0:
                change(path)
            yield chunk

    return chunks


def _append(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"written during the copy\n")


def _replace(path: Path) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(path.read_bytes())  # same size and bytes, another inode
    os.replace(fresh, path)


def _rewrite_in_place(path: Path) -> None:
    data = path.read_bytes()
    stamp = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"X" * 16)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # mtime put back: ctime tells
    assert path.read_bytes() != data


@pytest.mark.parametrize("change", [_append, _replace, _rewrite_in_place])
def test_a_file_changed_mid_copy_is_not_held_and_is_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    """Before: the changed copy was recorded, and the next run called it 'already held'."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "steady.log").write_bytes(b"steady\n" * 100)
    busy = logs / "busy.log"
    busy.write_bytes(b"line\n" * 2000)
    monkeypatch.setattr(files, "COPY_CHUNK", 4096)
    pending = [change]  # once: the second run copies a file that holds still

    def change_busy_once(path: Path) -> None:
        if path == busy and pending:
            pending.pop()(path)

    monkeypatch.setattr(files, "_chunks", _mutating_chunks(change_busy_once))
    case_dir = tmp_path / "case"
    [first] = files.capture_paths(Case.create(case_dir), [logs], "files", lambda _: None)
    assert first.captured == 1
    [failure] = first.failed
    assert failure.startswith(f"{busy}: changed while it was copied")
    held = [e["source"]["original_path"] for e in custody(case_dir) if e["action"] == "capture"]
    assert held == [str((logs / "steady.log").resolve())]
    assert not list(case_dir.glob("evidence/*/files/busy.log*"))
    assert _last_status(case_dir) == "capture-incomplete"

    [second] = files.capture_paths(Case.open(case_dir), [logs], "files", lambda _: None)
    assert (second.captured, second.skipped, second.failed) == (1, 1, [])
    [copy] = case_dir.glob("evidence/*/files/busy.log")
    assert copy.read_bytes() == busy.read_bytes()
    assert _last_status(case_dir) == "capture-complete"
    assert Case.open(case_dir).verify().ok


# -- item 13, capture side: the case captured into itself --------------------------------


@pytest.mark.parametrize("where", ["the case", "inside", "holds", "link to it", "new case inside"])
def test_capture_files_refuses_the_case_folder(tmp_path: Path, where: str) -> None:
    """Before: each was accepted (exit 0), custody and evidence captured as new evidence."""
    outer = tmp_path / "work"
    case = outer / "case"
    (outer / "logs").mkdir(parents=True)
    (outer / "logs" / "a.log").write_text("a\n")
    assert cloudir("capture", "files", "--case", str(case), str(outer / "logs")).code == 0
    os.symlink(case, tmp_path / "alias")
    target, case_arg = {
        "the case": (case, case),
        "inside": (case / "evidence", case),
        "holds": (outer, case),
        "link to it": (tmp_path / "alias", case),
        "new case inside": (outer / "logs", outer / "logs" / "new-case"),
    }[where]
    before = custody(case)
    result = cloudir("capture", "files", "--case", str(case_arg), str(target))
    assert result.code == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "the case folder" in line
    assert custody(case) == before
    assert not (outer / "logs" / "new-case").exists()


# -- hostile local trees for `capture files` ---------------------------------------------

HOSTILE_NAMES = st.one_of(
    st.sampled_from(
        ["a\nb.log", "..a", "...", ". .", "-rf", "x.partial", "x.partial~", "%2e%2e", "é", "a\\b"]
    ),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
        min_size=1,
        max_size=20,
    ),
    st.text(st.sampled_from("ab.~ é"), min_size=120, max_size=120),  # 255 bytes at most
).filter(lambda n: n not in (".", "..", "etc", "Windows"))
KINDS = st.sampled_from(
    ["file", "file", "empty", "to-devnull", "to-missing", "loop", "to-dir", "fifo", "folder"]
)


def _build(root: Path, entries: list[tuple[str, str]]) -> tuple[set[Path], set[Path]]:
    """The tree; returns (regular files, entries that are not regular files)."""
    regular: set[Path] = set()
    other: set[Path] = set()
    root.mkdir()
    for number, (name, kind) in enumerate(entries):
        path = root / name
        if kind in ("file", "empty"):
            path.write_bytes(b"" if kind == "empty" else f"{number}:{name}".encode())
            regular.add(path)
        elif kind == "folder":
            path.mkdir()
            (path / name).write_bytes(name.encode())
            regular.add(path / name)
        else:
            if kind == "to-devnull":
                os.symlink("/dev/null", path)
            elif kind == "to-missing":
                os.symlink(root / "no-such-file", path)
            elif kind == "loop":
                os.symlink(path, path)
            elif kind == "to-dir":
                os.symlink("/", path)
            elif kind == "fifo":
                os.mkfifo(path)
            other.add(path)
    return regular, other


def _assert_every_entry_is_evidence_or_named(
    case: Path, regular: set[Path], other: set[Path], problems: list[str]
) -> None:
    captures = [e for e in custody(case) if e["action"] == "capture"]
    by_original = {e["source"]["original_path"]: e["files"][0] for e in captures}
    assert sorted(by_original) == sorted(str(p.resolve()) for p in regular)
    assert len({f["path"] for f in by_original.values()}) == len(regular), "one file each"
    for path in regular:
        record = by_original[str(path.resolve())]
        assert (case / record["path"]).read_bytes() == path.read_bytes()
    for path in other:
        assert sum(line.startswith(f"{path}: ") for line in problems) == 1, path
    assert len(problems) == len(other), "every problem is one of the odd entries, once"


@given(
    entries=st.lists(
        st.tuples(HOSTILE_NAMES, KINDS), min_size=1, max_size=8, unique_by=lambda e: e[0]
    )
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_trees_each_entry_is_evidence_or_a_named_problem(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str]]
) -> None:
    work = tmp_path_factory.mktemp("tree")
    regular, other = _build(work / "tree", entries)
    before = _tree_snapshot(work)
    case = work / "case"
    [result] = files.capture_paths(Case.create(case), [work / "tree"], "files", lambda _: None)
    _assert_every_entry_is_evidence_or_named(case, regular, other, result.warnings + result.failed)
    assert result.captured == len(regular)
    expected = "capture-incomplete" if other else "capture-complete"
    assert _last_status(case) == expected
    outside = {p: t for p, t in _tree_snapshot(work).items() if not p.startswith(str(case))}
    assert outside == before
    again = files.capture_paths(Case.open(case), [work / "tree"], "files", lambda _: None)
    assert (again[0].captured, again[0].skipped) == (0, len(regular))
    assert Case.open(case).verify().ok


def test_a_hostile_tree_through_the_cli(tmp_path: Path) -> None:
    names = ["a\nb.log", "..a", "x.partial", "-rf", "é" * 100, "ok.log", "link", "pipe", "loop"]
    kinds = ["file", "file", "file", "file", "file", "file", "to-devnull", "fifo", "loop"]
    regular, other = _build(tmp_path / "tree", list(zip(names, kinds, strict=True)))
    (tmp_path / "tree" / "sub").mkdir()
    os.symlink(tmp_path / "tree", tmp_path / "tree" / "sub" / "up")  # a loop through a folder
    other.add(tmp_path / "tree" / "sub" / "up")
    case = tmp_path / "case"
    first = cloudir("capture", "files", "--case", str(case), str(tmp_path / "tree"), "--json")
    assert first.code == 3, first.stderr  # evidence problem: some entries not captured
    assert "Traceback" not in first.stderr
    assert first.stderr.strip().splitlines()[-1].startswith("error: 4 file(s) not captured")
    [item] = first.json()["items"]
    _assert_every_entry_is_evidence_or_named(
        case, regular, other, item["warnings"] + item["failed"]
    )
    second = cloudir("capture", "files", "--case", str(case), str(tmp_path / "tree"), "--json")
    assert second.code == 3
    assert (second.json()["items"][0]["skipped"], second.json()["items"][0]["captured"]) == (6, 0)
    assert cloudir("verify", "--case", str(case)).code == 0, "x.partial was not cleared"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_a_named_failure(tmp_path: Path) -> None:
    _build(tmp_path / "tree", [("open.log", "file"), ("shut.log", "file")])
    (tmp_path / "tree" / "shut.log").chmod(0)
    case = tmp_path / "case"
    [result] = files.capture_paths(Case.create(case), [tmp_path / "tree"], "files", print)
    assert result.captured == 1
    [failure] = result.failed
    assert failure.startswith(f"{tmp_path / 'tree' / 'shut.log'}: cannot be read")
    assert Case.open(case).verify().ok


def test_a_tree_member_changed_mid_read_keeps_no_tar_and_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the member was silently tarred as a mix of two states, the tar recorded."""
    from cloudir.capture import tree

    root = tmp_path / "root"
    for folder in ("etc", "usr", "var/log"):
        (root / folder).mkdir(parents=True)
    (root / "etc" / "hostname").write_text("web-1\n")
    log = root / "var" / "log" / "syslog"
    log.write_bytes(b"x" * 100_000)
    real_open = tree._open_member
    pending = [_rewrite_in_place]

    class ChangedAfterFirstRead:
        """The member's file, changed by another writer once its first bytes are read."""

        def __init__(self, fh: Any, path: Path) -> None:
            self.fh, self.path = fh, path

        def read(self, size: int = -1) -> bytes:
            data = self.fh.read(size)
            if self.path == log and pending:
                pending.pop()(self.path)
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    def open_and_change(path: Path) -> Any:
        return ChangedAfterFirstRead(real_open(path), path)

    monkeypatch.setattr(tree, "_open_member", open_and_change)
    case = tmp_path / "case"
    [first] = files.capture_paths(Case.create(case), [root], "auto", lambda _: None)
    assert first.kind == "disk-image"
    [failure] = first.failed
    assert failure.startswith(f"{log}: changed while it was read (its ctime changed)")
    assert not [e for e in custody(case) if e["action"] == "capture"]
    assert _last_status(case) == "capture-incomplete"
    [second] = files.capture_paths(Case.open(case), [root], "auto", lambda _: None)
    assert (second.captured, second.skipped, second.failed) == (1, 0, [])
    assert _last_status(case) == "capture-complete"
    assert Case.open(case).verify().ok


def test_keys_differing_only_in_case_on_a_case_folding_file_system(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS and Windows fold case: the second key must be a named failure, never an
    overwrite of the first one's file. (Linux cannot fold case, so the check is forced.)"""
    assert not cloudtrail.folds_case(Case.create(tmp_path / "probe"))
    monkeypatch.setattr(cloudtrail, "folds_case", lambda _case: True)
    _, bucket, aws = _s3_case(
        moto_url, tmp_path, {"Log.json.gz": b"upper", "log.json.gz": b"lower", "x.json": b"x"}
    )
    case_dir = tmp_path / "case"
    item = _run_s3(Case.create(case_dir), aws, bucket)
    assert item.captured == 2
    [failure] = item.failed
    assert failure.startswith(REGION_PREFIX + DAY + "log.json.gz: its name differs from")
    assert "only in case" in failure
    assert _last_status(case_dir) == "capture-incomplete"
    assert Case.open(case_dir).verify().ok


def test_an_object_rewritten_after_capture_is_named_and_taken_beside_the_held_copy(
    moto_url: str, tmp_path: Path
) -> None:
    """Before: the re-run said 'already held' and the rewrite went unseen."""
    s3, bucket, aws = _s3_case(moto_url, tmp_path, {LOG: b"as delivered"})
    case_dir = tmp_path / "case"
    assert _run_s3(Case.create(case_dir), aws, bucket).captured == 1
    s3.put_object(Bucket=bucket, Key=REGION_PREFIX + DAY + LOG, Body=b"rewritten by an intruder")
    again = _run_s3(Case.open(case_dir), aws, bucket)
    assert (again.captured, again.skipped, again.failed) == (1, 0, [])
    [line] = again.rewritten
    assert line.startswith(REGION_PREFIX + DAY + LOG + ": rewritten since it was captured")
    bodies = sorted(
        (case_dir / e["files"][0]["path"]).read_bytes()
        for e in custody(case_dir)
        if e["action"] == "capture"
    )
    assert bodies == [b"as delivered", b"rewritten by an intruder"]
    third = _run_s3(Case.open(case_dir), aws, bucket)
    assert (third.captured, third.skipped, len(third.rewritten)) == (0, 1, 1)
    cli = _capture_s3(case_dir, moto_url, bucket)
    assert cli.code == 0, cli.stderr
    assert f"rewritten: {REGION_PREFIX}{DAY}{LOG}: rewritten since it was captured" in cli.stderr
    objects = {REGION_PREFIX + DAY + LOG: b""}
    for entry in custody(case_dir):
        if entry["action"] == "capture":
            name = entry["files"][0]["path"].split("/", 2)[2]
            assert REGION_PREFIX + cloudtrail.key_for_evidence_name(name) in objects
    assert Case.open(case_dir).verify().ok


def test_an_original_changed_after_capture_is_named_and_the_held_copy_kept(
    tmp_path: Path,
) -> None:
    """A re-run over a source whose file changed since it was captured said only "already
    held": the held copy stays (it is the evidence), and the change is now named."""
    source = tmp_path / "logs"
    source.mkdir()
    (source / "a.json").write_text('{"Records": []}\n')
    (source / "b.json").write_text('{"Records": []}\n')
    case = tmp_path / "case"
    first = cloudir("capture", "files", "--case", str(case), str(source), "--json")
    assert first.code == 0, first.stderr
    held = {p.name: p.read_bytes() for p in (case / "evidence").rglob("*.json")}
    with open(source / "a.json", "a") as fh:
        fh.write('{"Records": [{"eventName": "Planted"}]}\n')
    again = cloudir("capture", "files", "--case", str(case), str(source), "--json")
    assert again.code == 0, again.stderr
    [item] = again.json()["items"]
    assert (item["captured"], item["skipped"]) == (0, 2)
    [changed] = item["changed_since"]
    assert changed.startswith(f"{source / 'a.json'}: changed since it was captured (")
    assert "changed since it was captured" in again.stderr
    assert {p.name: p.read_bytes() for p in (case / "evidence").rglob("*.json")} == held
    assert cloudir("verify", "--case", str(case)).code == 0
