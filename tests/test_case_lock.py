"""Two commands on one case at once: the second that would change it stops, naming the first.

The holders are real processes: a CLI run paused at a known point (a hook that waits for a
file, so the test knows exactly where it stands) or this test process holding the lock
through the library. Nothing here waits a fixed time and calls that proof.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, ct_event, custody, query

DEADLINE = 120.0


def hold(case: Path, command: str) -> Any:
    """The library's lock, held by this test process (imported late: the module is new)."""
    from cloudir.case_lock import hold as case_lock

    return case_lock(case, command)


# A CLI run that stops at one point of its work until told to go on: "store" halfway
# through writing an evidence file (its .partial on disk), "timeline" after parsing,
# before the parts are merged (its timeline.building on disk).
PAUSED_CLI = r"""
import os, sys, time
from pathlib import Path

ready, go, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sys.argv = ["cloudir", *sys.argv[4:]]
paused = []

def pause():
    if paused:
        return
    paused.append(True)
    ready.write_text(str(os.getpid()))
    while not go.exists():
        time.sleep(0.01)

if where == "store":
    from cloudir.case import Case
    original = Case.store_stream

    def store_stream(self, evidence_id, name, chunks, *args, **kwargs):
        if name == "meta.json":
            return original(self, evidence_id, name, chunks, *args, **kwargs)

        def halves():
            it = iter(chunks)
            for first in it:
                yield first
                break
            pause()
            yield from it

        return original(self, evidence_id, name, halves(), *args, **kwargs)

    Case.store_stream = store_stream
elif where == "timeline":
    import cloudir.analyze.timeline as timeline
    original = timeline._drop_duplicates

    def drop_duplicates(*args, **kwargs):
        pause()
        return original(*args, **kwargs)

    timeline._drop_duplicates = drop_duplicates

from cloudir.cli import main
main()
"""


@dataclass
class Paused:
    proc: subprocess.Popen[bytes]
    stderr: Path
    go: Path

    def release(self) -> int:
        self.go.write_text("go")
        return self.proc.wait(timeout=DEADLINE)


def _until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait for a state the other process reports, failing if it ends first."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE} s")
        time.sleep(0.01)


@contextmanager
def paused_cli(tmp_path: Path, where: str, *args: str) -> Iterator[Paused]:
    ready, go, err = tmp_path / "ready", tmp_path / "go", tmp_path / "holder.err"
    for path in (ready, go):
        path.unlink(missing_ok=True)
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", PAUSED_CLI, str(ready), str(go), where, *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(os.environ, COLUMNS="200"),
        )
    paused = Paused(proc, err, go)
    try:
        _until(ready.exists, proc, f"the paused {where} point")
        yield paused
    finally:
        go.write_text("go")
        if proc.poll() is None:
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _trail_source(tmp_path: Path, events: int = 2) -> Path:
    source = tmp_path / "src" / "trail.json"
    source.parent.mkdir(exist_ok=True)
    records = [ct_event(f"2024-07-31T10:0{i}:00Z") for i in range(events)]
    source.write_text(json.dumps({"Records": records}))
    return source


def _captured_case(tmp_path: Path) -> tuple[Path, list[str]]:
    """A case and the quickest command that changes it (capturing the same file again)."""
    case, source = tmp_path / "case", _trail_source(tmp_path)
    again = ["capture", "files", "--case", str(case), str(source)]
    assert cloudir(*again).code == 0
    return case, again


def _case_with_timeline(tmp_path: Path) -> Path:
    case, _ = _captured_case(tmp_path)
    assert cloudir("timeline", "--case", str(case), "--workers", "1").code == 0
    return case


def _snapshot(root: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else "dir"
    return found


def test_a_second_capture_is_refused_and_the_first_runs_partial_file_survives(
    tmp_path: Path,
) -> None:
    # Before: the second capture removed the first one's .partial as "stale", and the
    # first then failed renaming it (exit 3, FileNotFoundError).
    case, source = tmp_path / "case", _trail_source(tmp_path)
    args = ("capture", "files", "--case", str(case), str(source))
    with paused_cli(tmp_path, "store", *args) as holder:
        partials = list((case / "evidence").rglob("*.partial"))
        assert len(partials) == 1
        second = cloudir(*args)
        assert second.code == 2
        line = _one_line(second.stderr)
        assert line.startswith(f"error: case {case} is in use by pid {holder.proc.pid} (")
        assert f"(cloudir capture files --case {case} {source}) since 20" in line
        assert line.endswith("; wait for it or stop it")
        assert partials[0].exists()
        # verify does not wait; it says the temporary file is still being written
        checked = cloudir("verify", "--case", str(case))
        assert checked.code == 3
        rel = partials[0].relative_to(case).as_posix()
        assert (
            f"UNRECORDED {rel} (still being written: the case is in use by "
            f"pid {holder.proc.pid} (cloudir capture files" in checked.stderr
        )
        assert holder.release() == 0, holder.stderr.read_text()
    assert cloudir("verify", "--case", str(case)).code == 0
    entries = custody(case)
    assert "partials-removed" not in [e["action"] for e in entries]
    stored = [f["path"] for e in entries for f in e["files"] if f["path"].endswith("trail.json")]
    assert len(stored) == 1
    assert not (case / "case.lock").exists()


def test_a_second_timeline_is_refused_while_readers_go_on(tmp_path: Path) -> None:
    # Before: the second timeline removed timeline.building under the first, which then
    # failed with a raw DuckDB error (exit 3).
    case = _case_with_timeline(tmp_path)
    with paused_cli(tmp_path, "timeline", "timeline", "--case", str(case), "--workers", "1") as h:
        assert (case / "timeline.building").is_dir()
        second = cloudir("timeline", "--case", str(case))
        assert second.code == 2
        line = _one_line(second.stderr)
        assert f"is in use by pid {h.proc.pid} (cloudir timeline --case {case} --workers 1)" in line
        # read-only commands do not take the lock: they run beside the rebuild
        assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 2}]
        assert cloudir("verify", "--case", str(case)).code == 0
        assert cloudir("rules", "list").code == 0
        assert h.release() == 0, h.stderr.read_text()
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 2}]
    assert json.loads((case / "timeline/summary.json").read_text())["rows"] == 2


def test_the_lock_file_names_its_holder_and_goes_with_it(tmp_path: Path) -> None:
    case, source = tmp_path / "case", _trail_source(tmp_path)
    with paused_cli(tmp_path, "store", "capture", "files", "--case", str(case), str(source)) as h:
        holder = json.loads((case / "case.lock").read_text())
        assert holder["pid"] == h.proc.pid
        assert holder["command"] == f"cloudir capture files --case {case} {source}"
        assert holder["host"] and holder["since"].endswith("Z")
    assert not (case / "case.lock").exists()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    case, source = tmp_path / "case", _trail_source(tmp_path)
    args = ("capture", "files", "--case", str(case), str(source))
    with paused_cli(tmp_path, "store", *args) as holder:
        os.kill(holder.proc.pid, signal.SIGKILL)
        assert holder.proc.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert (case / "case.lock").exists()  # the file stays; the kernel dropped the lock
        again = cloudir(*args)
    assert again.code == 0, again.stderr
    assert "partials-removed" in [e["action"] for e in custody(case)]  # the dead run's
    assert cloudir("verify", "--case", str(case)).code == 0


def test_wait_waits_for_the_holder_then_runs(tmp_path: Path) -> None:
    case, again = _captured_case(tmp_path)
    err = tmp_path / "waiter.err"
    with hold(case, "cloudir test-holder"):
        with open(err, "wb") as stderr:
            waiter = subprocess.Popen(
                [sys.executable, "-m", "cloudir", "--wait", "300", *again],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        _until(lambda: "waiting up to 300 s" in err.read_text(), waiter, "the waiting notice")
        assert f"in use by pid {os.getpid()} (cloudir test-holder)" in err.read_text()
    assert waiter.wait(timeout=DEADLINE) == 0, err.read_text()


def test_wait_gives_up_after_its_time(tmp_path: Path) -> None:
    case, again = _captured_case(tmp_path)
    with hold(case, "cloudir test-holder"):
        result = cloudir("--wait", "0.5", *again)
    assert result.code == 2
    assert result.stderr.strip().splitlines()[-1].endswith("wait for it or stop it (waited 0.5 s)")


def _mutating_commands(case: Path, source: Path) -> dict[str, list[str]]:
    nowhere = "http://127.0.0.1:9"  # never reached: the lock is checked first
    c = str(case)
    return {
        "capture files": ["capture", "files", "--case", c, str(source)],
        "capture cloudtrail": ["capture", "cloudtrail", "--case", c, "--bucket", "b",
                               "--endpoint-url", nowhere],
        "capture ebs": ["capture", "ebs", "--case", c, "--volume-id", "vol-1",
                        "--endpoint-url", nowhere],
        "capture container": ["capture", "container", "--case", c, "--all",
                              "--docker-host", "unix:///nonexistent.sock"],
        "timeline": ["timeline", "--case", c],
        "detect": ["detect", "--case", c],
        "report": ["report", "--case", c],
        "analyze": ["analyze", "--case", c],
        "respond isolate --yes": ["respond", "isolate", "--case", c, "--instance-id", "i-1",
                                  "--yes", "--endpoint-url", nowhere],
        "respond disable-key --yes": ["respond", "disable-key", "--case", c,
                                      "--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--yes",
                                      "--endpoint-url", nowhere],
        "respond restore --yes": ["respond", "restore", "--case", c, "--yes"],
        "demo": ["demo", "--case", c, "--force"],
    }  # fmt: skip


MUTATING = list(_mutating_commands(Path("c"), Path("s")))


@pytest.fixture(scope="module")
def shared_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _case_with_timeline(tmp_path_factory.mktemp("shared"))


@pytest.mark.parametrize("name", MUTATING)
def test_every_mutating_command_is_refused_while_the_case_is_held(
    shared_case: Path, name: str
) -> None:
    args = _mutating_commands(shared_case, shared_case.parent / "src" / "trail.json")[name]
    before = _snapshot(shared_case)
    with hold(shared_case, "cloudir test-holder"):
        since = json.loads((shared_case / "case.lock").read_text())["since"]
        result = cloudir(*args)
    assert result.code == 2, result.stderr
    assert _one_line(result.stderr) == (
        f"error: case {shared_case} is in use by pid {os.getpid()} (cloudir test-holder) "
        f"since {since}; wait for it or stop it"
    )
    assert _snapshot(shared_case) == before


def test_read_only_commands_run_while_the_case_is_held(shared_case: Path, moto_url: str) -> None:
    c = str(shared_case)
    with hold(shared_case, "cloudir test-holder"):
        assert cloudir("verify", "--case", c).code == 0
        assert query(shared_case, "SELECT count(*) AS n FROM timeline") == [{"n": 2}]
        out = shared_case.parent / "export.jsonl"
        assert cloudir("timeline", "export", "--case", c, "--out", str(out)).code == 0
        assert len(out.read_text().splitlines()) == 2
        assert cloudir("rules", "list").code == 0
        plan = cloudir("respond", "isolate", "--case", c, "--instance-id", "i-0123456789abcdef0",
                       "--endpoint-url", moto_url)  # fmt: skip
        assert "in use" not in plan.stderr
        assert plan.code != 2, plan.stderr


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    case, again = _captured_case(tmp_path)
    with hold(case, "cloudir outer"):
        with hold(case, "cloudir inner"):
            assert json.loads((case / "case.lock").read_text())["command"] == "cloudir outer"
        refused = cloudir(*again)  # the outer hold still counts
        assert refused.code == 2
        assert "(cloudir outer)" in refused.stderr
    assert not (case / "case.lock").exists()
    assert cloudir(*again).code == 0


def _child_waits(conn: Any) -> None:
    conn.recv()


def test_a_forked_child_does_not_keep_the_case_locked(tmp_path: Path) -> None:
    # timeline's parser processes are forked while the lock is held; one that outlives
    # its parent must not keep every later command out.
    case, again = _captured_case(tmp_path)
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_child_waits, args=(child_end,))
    with hold(case, "cloudir parent"):
        child.start()
    try:
        assert child.is_alive()
        assert cloudir(*again).code == 0
    finally:
        parent_end.send("done")
        child.join(timeout=DEADLINE)


def test_a_lock_file_that_is_a_link_is_refused_and_not_followed(tmp_path: Path) -> None:
    case, again = _captured_case(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (case / "case.lock").symlink_to(outside)
    result = cloudir(*again)
    assert result.code == 3
    assert "case.lock is a symbolic link" in _one_line(result.stderr)
    assert outside.read_text() == "keep me"


def test_a_capture_that_fails_before_making_the_case_leaves_no_folder(tmp_path: Path) -> None:
    case = tmp_path / "new-case"
    result = cloudir("capture", "cloudtrail", "--case", str(case))
    assert result.code == 2
    assert _one_line(result.stderr) == "error: say where to read: --bucket, --trail or --lookup"
    assert not case.exists()
