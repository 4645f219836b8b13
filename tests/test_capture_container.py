"""`capture container` against a real Docker engine: what an implanted container leaves.

The engine is CI's private one (`scripts/dockerd.sh`, DOCKER_HOST exported); without an
engine the module skips and says how to start one. Containers run the offline busybox
image with no network, and every one the tests create is removed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Result, cloudir, custody, query

IMAGE = "cloudir-test/busybox:1"
IMPLANT = b"#!/bin/sh\necho cloudir-implant\n"
KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIcloudirtestkey attacker@evil\n"
LOG_LINE = "cloudir-log-line"
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z " + LOG_LINE + r"$", re.M)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The engine DOCKER_HOST names, with the test image; skip with the reason if not."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        pytest.skip(
            f"no Docker engine ({exc}); run `bash scripts/dockerd.sh start` and "
            "`eval $(bash scripts/dockerd.sh env)`"
        )
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        subprocess.run(["bash", "scripts/dockerd.sh", "image"], cwd=REPO, check=False)
        try:
            client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            pytest.skip(f"{IMAGE} missing and `scripts/dockerd.sh image` could not import it")
    yield client
    client.close()


@pytest.fixture(scope="module")
def start(engine: Any) -> Iterator[Callable[..., Any]]:
    """Start a container from the test image; all of them are removed at module end."""
    created: list[Any] = []

    def run(command: str, wait_for_exit: bool = False) -> Any:
        container = engine.containers.run(
            IMAGE,
            ["sh", "-c", command],
            name=f"cloudir-test-{uuid.uuid4().hex[:8]}",
            detach=True,
            network_mode="none",
        )
        created.append(container)
        if wait_for_exit:
            container.wait(timeout=30)
        container.reload()
        return container

    yield run
    for container in created:
        try:
            container.remove(force=True)
        except Exception as exc:  # already gone is fine; anything else is worth a line
            print(f"could not remove {container.name}: {exc}")


def sh(container: Any, command: str) -> None:
    code, output = container.exec_run(["sh", "-c", command])
    assert code == 0, output


@pytest.fixture(scope="module")
def implanted(start: Callable[..., Any]) -> Any:
    """What an intruder leaves: a miner in a hidden folder, an SSH key, a deleted tool."""
    container = start(f"echo {LOG_LINE}; sleep 3600")
    sh(
        container,
        "mkdir -p /tmp/.x && printf '#!/bin/sh\\necho cloudir-implant\\n' > /tmp/.x/miner",
    )
    sh(container, "chmod 755 /tmp/.x/miner")
    sh(
        container,
        f"mkdir -p /root/.ssh && printf '{KEY.decode().strip()}\\n' > /root/.ssh/authorized_keys",
    )
    sh(container, "rm /bin/wget")  # in the image; /etc/hostname is a bind mount here
    return container


def capture(case: Path, *args: str) -> Result:
    return cloudir("capture", "container", "--case", str(case), *args, "--json")


def item(case: Path, result: Result) -> Path:
    assert result.code == 0, result.stderr
    (entry,) = result.json()["containers"]
    return case / "evidence" / entry["evidence_id"]


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def item_entries(case: Path, folder: Path) -> list[dict[str, Any]]:
    return [e for e in custody(case) if e["evidence_id"] == folder.name]


def assert_every_file_in_custody(case: Path, folder: Path) -> None:
    recorded = {f["path"]: f for e in custody(case) for f in e["files"]}
    for path in folder.rglob("*"):
        data = path.read_bytes()
        rec = recorded[path.relative_to(case).as_posix()]
        assert rec["sha256"] == hashlib.sha256(data).hexdigest(), path
        assert rec["bytes"] == len(data), path


def test_capture_keeps_the_implant_key_deletion_and_logs(
    tmp_path: Path, engine: Any, implanted: Any
) -> None:
    case = tmp_path / "case"
    result = capture(case, implanted.name, "--pause")
    folder = item(case, result)
    (summary,) = result.json()["containers"]
    assert summary["container_id"] == implanted.id
    assert summary["name"] == implanted.name
    assert summary["paused"] is True and summary["complete"] is True
    assert folder.name == f"container-{implanted.name}-{implanted.id[:12]}"
    names = {p.name for p in folder.iterdir()}
    expected = {"inspect.json", "image.json", "image-history.json", "diff.json", "logs.txt"}
    assert expected | {"top.json", "fs.tar", "meta.json"} == names
    assert_every_file_in_custody(case, folder)

    diff = json.loads((folder / "diff.json").read_text())
    assert {"Path": "/tmp/.x/miner", "Kind": 1} in diff
    assert {"Path": "/root/.ssh/authorized_keys", "Kind": 1} in diff
    assert {"Path": "/bin/wget", "Kind": 2} in diff
    assert {"Path": "/tmp", "Kind": 0} in diff

    with tarfile.open(folder / "fs.tar") as tar:  # read in memory, never extracted
        miner = tar.getmember("tmp/.x/miner")
        assert miner.mode & 0o7777 == 0o755
        assert tar.extractfile(miner).read() == IMPLANT  # type: ignore[union-attr]
        assert tar.extractfile("root/.ssh/authorized_keys").read() == KEY  # type: ignore[union-attr]
        assert "bin/wget" not in tar.getnames()
        assert "bin/busybox" in tar.getnames()

    assert STAMPED.search((folder / "logs.txt").read_text())
    inspect = json.loads((folder / "inspect.json").read_text())
    assert inspect["Id"] == implanted.id
    assert json.loads((folder / "image.json").read_text())["Id"] == inspect["Image"]
    assert json.loads((folder / "top.json").read_text())["Processes"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "container"
    assert meta["source"]["container_id"] == implanted.id
    assert meta["source"]["image"] == IMAGE

    implanted.reload()
    assert implanted.attrs["State"]["Running"] and not implanted.attrs["State"]["Paused"]
    actions = [e["action"] for e in item_entries(case, folder)]
    assert actions.index("container-paused") < actions.index("container-unpaused")
    assert actions[-1] == "capture-complete"
    apis = {e["source"]["api"] for e in item_entries(case, folder) if e["action"] == "capture"}
    assert {"docker:export", "docker:diff", "docker:logs", "docker:inspect"} <= apis


def test_a_stopped_container_has_no_process_list(tmp_path: Path, start: Any) -> None:
    stopped = start("echo bye", wait_for_exit=True)
    case = tmp_path / "case"
    result = capture(case, stopped.id[:12], "--pause")
    folder = item(case, result)
    (summary,) = result.json()["containers"]
    assert summary["paused"] is False and summary["complete"] is True
    assert not (folder / "top.json").exists()
    assert (folder / "fs.tar").is_file()
    assert_every_file_in_custody(case, folder)


def test_a_container_with_no_changes_has_an_empty_diff(tmp_path: Path, start: Any) -> None:
    quiet = start("sleep 3600")
    case = tmp_path / "case"
    folder = item(case, capture(case, quiet.name))
    assert json.loads((folder / "diff.json").read_text()) == []


def test_changed_only_holds_the_changes_and_no_image_files(tmp_path: Path, implanted: Any) -> None:
    case = tmp_path / "case"
    folder = item(case, capture(case, implanted.name, "--changed-only"))
    assert not (folder / "fs.tar").exists()
    assert_every_file_in_custody(case, folder)
    with tarfile.open(folder / "changed.tar") as tar:
        names = tar.getnames()
        miner = tar.getmember("tmp/.x/miner")
        assert miner.mode & 0o7777 == 0o755
        assert tar.extractfile(miner).read() == IMPLANT  # type: ignore[union-attr]
        assert tar.extractfile("root/.ssh/authorized_keys").read() == KEY  # type: ignore[union-attr]
    assert "bin/busybox" not in names and "bin/wget" not in names
    assert not [n for n in names if n.startswith("bin/")]  # /bin itself: its entry only


def test_an_unknown_name_is_a_usage_error_naming_it(tmp_path: Path, engine: Any) -> None:
    case = tmp_path / "case"
    result = capture(case, "no-such-container-cloudir")
    assert result.code == 2
    (line,) = error_lines(result)
    assert "no-such-container-cloudir" in line
    assert "Traceback" not in result.stderr
    assert not (case / "evidence").exists()


def test_no_engine_is_one_line_and_exit_4(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/no-docker.sock"
    result = capture(tmp_path / "case", "web", "--docker-host", host)
    assert result.code == 4
    (line,) = error_lines(result)
    assert line.startswith(f"error: no Docker engine at {host}: ")
    assert "Traceback" not in result.stderr


def test_names_and_all_together_are_a_usage_error(tmp_path: Path) -> None:
    assert capture(tmp_path / "case", "web", "--all").code == 2
    assert capture(tmp_path / "case", "web", "--running").code == 2


class ExportCutter:
    """TCP on 127.0.0.1 to the engine's unix socket; each connection's export response is
    cut after `cut_after` bytes, as when the engine dies or the network drops mid-export,
    or (`stall`) held open with nothing more sent, as when the engine hangs."""

    def __init__(self, engine_socket: str, cut_after: int, stall: bool = False) -> None:
        self.engine_socket = engine_socket
        self.cut_after = cut_after
        self.stall = stall
        self.cut = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ExportCutter:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.engine_socket)
            for sock in (client, upstream):
                sock.settimeout(30)
                self._sockets.append(sock)
            exporting = threading.Event()
            threading.Thread(
                target=self._up, args=(client, upstream, exporting), daemon=True
            ).start()
            threading.Thread(
                target=self._down, args=(upstream, client, exporting), daemon=True
            ).start()

    @staticmethod
    def _up(client: socket.socket, upstream: socket.socket, exporting: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                if re.search(rb"^GET \S*/containers/\S+/export", data, re.M):
                    exporting.set()  # before forwarding: the next response is the export
                upstream.sendall(data)

    def _down(
        self, upstream: socket.socket, client: socket.socket, exporting: threading.Event
    ) -> None:
        sent = 0
        try:
            while data := upstream.recv(1 << 16):
                if exporting.is_set():
                    data = data[: self.cut_after - sent]
                    sent += len(data)
                client.sendall(data)
                if exporting.is_set() and sent >= self.cut_after:
                    self.cut.set()
                    self._stop.wait(60 if self.stall else 0)
                    break
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def test_engine_gone_mid_export_marks_the_item_incomplete(tmp_path: Path, implanted: Any) -> None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.skip(f"the cutting proxy forwards to a unix socket; DOCKER_HOST is {host!r}")
    case = tmp_path / "case"
    with ExportCutter(host.removeprefix("unix://"), cut_after=256 * 1024) as proxy:
        result = capture(case, implanted.name, "--pause", "--docker-host", proxy.url)
        assert proxy.cut.is_set()
    assert result.code == 4, result.stderr
    (line,) = error_lines(result)
    assert implanted.name in line and "fs.tar not captured" in line
    assert "Traceback" not in result.stderr
    (summary,) = result.json()["containers"]
    assert summary["complete"] is False
    folder = case / "evidence" / summary["evidence_id"]
    assert not (folder / "fs.tar").exists()
    assert not list(folder.glob("*.partial")) and not list(folder.glob(".*"))
    assert (folder / "inspect.json").is_file() and (folder / "logs.txt").is_file()
    assert_every_file_in_custody(case, folder)
    last = item_entries(case, folder)[-1]
    assert last["action"] == "capture-incomplete" and "fs.tar" in last["note"]
    implanted.reload()
    assert implanted.attrs["State"]["Running"] and not implanted.attrs["State"]["Paused"]


def test_the_json_shape_scripts_rely_on(tmp_path: Path, implanted: Any) -> None:
    case = tmp_path / "case"
    result = capture(case, implanted.name)
    body = result.json()
    assert body["case"] == str(case)
    (entry,) = body["containers"]
    keys = {"evidence_id", "container_id", "name", "files", "bytes", "paused", "complete"}
    assert keys <= set(entry)
    assert entry["bytes"] == sum((case / f).stat().st_size for f in entry["files"])


def test_ctrl_c_on_a_stalled_engine_unpauses_and_marks_incomplete(
    tmp_path: Path, implanted: Any
) -> None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.skip(f"the stalling proxy forwards to a unix socket; DOCKER_HOST is {host!r}")
    case = tmp_path / "case"
    args = ["capture", "container", "--case", str(case), implanted.name, "--pause"]
    with ExportCutter(host.removeprefix("unix://"), cut_after=64 * 1024, stall=True) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudir", *args, "--docker-host", proxy.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert proxy.cut.wait(30), "the export never started"
            implanted.reload()
            assert implanted.attrs["State"]["Paused"]  # frozen while the stream hangs
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    implanted.reload()
    assert not implanted.attrs["State"]["Paused"]
    (folder,) = (case / "evidence").iterdir()
    assert not (folder / "fs.tar").exists()
    last = item_entries(case, folder)[-1]
    assert last["action"] == "capture-incomplete" and "interrupted" in last["note"]
    assert "container-unpaused" in [e["action"] for e in item_entries(case, folder)]


def test_a_captured_container_reads_onto_the_timeline_and_fires_the_rules(
    tmp_path: Path, implanted: Any
) -> None:
    """Capture, timeline and detect end to end on a real engine's container."""
    case = tmp_path / "case"
    assert capture(case, implanted.name).code == 0
    timeline = cloudir("timeline", "--case", str(case), "--json")
    assert timeline.code == 0, timeline.stderr
    rows = query(
        case,
        "SELECT action, target, raw FROM timeline WHERE artifact = 'container:diff' "
        "ORDER BY target",
    )
    by_path = {r["target"]: r for r in rows}
    assert by_path["/tmp/.x/miner"]["action"] == "container:added"
    assert (
        json.loads(by_path["/tmp/.x/miner"]["raw"])["sha256"]
        == hashlib.sha256(b"#!/bin/sh\necho cloudir-implant\n").hexdigest()
    )
    assert by_path["/bin/wget"]["action"] == "container:deleted"
    logs = query(case, "SELECT message FROM timeline WHERE artifact = 'container:log'")
    assert any(LOG_LINE in r["message"] for r in logs)
    detect = cloudir("detect", "--case", str(case), "--json")
    titles = {f["title"] for f in detect.json()["findings"]}
    assert {
        "Executable Added to a Container's Temporary Directory",
        "Accounts, Sudoers or SSH Keys Changed Inside a Container",
    } <= titles
