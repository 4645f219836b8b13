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

    def run(command: str, wait_for_exit: bool = False, image: str = IMAGE) -> Any:
        container = engine.containers.run(
            image,
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
        rec = recorded[path.relative_to(case).as_posix()]
        with path.open("rb") as fh:  # streamed: an fs.tar can be hundreds of MB
            assert rec["sha256"] == hashlib.file_digest(fh, "sha256").hexdigest(), path
        assert rec["bytes"] == path.stat().st_size, path


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
    both = capture(tmp_path / "case", "web", "--all")
    assert both.code == 2
    assert error_lines(both) == ["error: name the containers to capture, or give --all (not both)"]
    running = capture(tmp_path / "case", "web", "--running")
    assert running.code == 2
    assert error_lines(running) == ["error: --running only applies to --all"]
    assert not (tmp_path / "case").exists()


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


# -- --all and --all --running ----------------------------------------------------------
def by_name(result: Result, names: set[str]) -> dict[str, dict[str, Any]]:
    """The summaries of the containers this test made; the engine may hold others."""
    return {c["name"]: c for c in result.json()["containers"] if c["name"] in names}


def assert_item_whole(case: Path, entry: dict[str, Any], running: bool) -> None:
    folder = case / "evidence" / entry["evidence_id"]
    assert entry["complete"] is True and entry["problems"] == []
    names = {p.name for p in folder.iterdir()}
    assert {"inspect.json", "diff.json", "logs.txt", "fs.tar", "meta.json"} <= names
    assert ("top.json" in names) is running
    assert sorted(entry["files"]) == sorted(
        p.relative_to(case).as_posix() for p in folder.iterdir() if p.name != "meta.json"
    )
    assert_every_file_in_custody(case, folder)
    inspect = json.loads((folder / "inspect.json").read_text())
    assert inspect["Id"] == entry["container_id"]
    assert inspect["State"]["Running"] is running
    assert item_entries(case, folder)[-1]["action"] == "capture-complete"


def test_all_captures_running_and_stopped_containers(tmp_path: Path, start: Any) -> None:
    up = start("sleep 3600")
    down = start("echo bye", wait_for_exit=True)
    case = tmp_path / "case"
    result = capture(case, "--all")
    assert result.code == 0, result.stderr
    mine = by_name(result, {up.name, down.name})
    assert set(mine) == {up.name, down.name}
    assert mine[up.name]["container_id"] == up.id
    assert mine[down.name]["container_id"] == down.id
    assert_item_whole(case, mine[up.name], running=True)
    assert_item_whole(case, mine[down.name], running=False)
    ids = [c["container_id"] for c in result.json()["containers"]]
    assert len(ids) == len(set(ids))  # each container once
    assert {p.name for p in (case / "evidence").iterdir()} == {
        c["evidence_id"] for c in result.json()["containers"]
    }


def test_all_running_leaves_the_stopped_ones_out(tmp_path: Path, start: Any) -> None:
    up = start("sleep 3600")
    down = start("echo bye", wait_for_exit=True)
    case = tmp_path / "case"
    result = capture(case, "--all", "--running")
    assert result.code == 0, result.stderr
    mine = by_name(result, {up.name, down.name})
    assert set(mine) == {up.name}
    assert_item_whole(case, mine[up.name], running=True)
    for entry in result.json()["containers"]:  # nobody's stopped container, not only ours
        inspect = case / "evidence" / entry["evidence_id"] / "inspect.json"
        assert json.loads(inspect.read_text())["State"]["Running"] is True
    assert not [p for p in (case / "evidence").iterdir() if down.id[:12] in p.name]


# -- TLS over tcp -----------------------------------------------------------------------
def write_tls_material(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in the file
    names the docker CLI and SDK read from DOCKER_CERT_PATH (plus server-*.pem)."""
    import datetime as dt

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(
        subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool, usage: Any = None
    ) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            import ipaddress

            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem: str, cert: Any, key: Any) -> None:
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem.replace('cert', 'key')}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("cloudir-test-ca", ca_key, name("cloudir-test-ca"), ca_key, ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem, cn, usage in (
        ("server-cert", "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH),
        ("cert", "cloudir-test-client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(cn, key, ca.subject, ca_key, ca=False, usage=usage), key)


class TlsProxy:
    """An engine's TLS endpoint as `dockerd --tlsverify` offers it: TLS on 127.0.0.1,
    client certificate required and checked against the CA, bytes relayed to the unix
    socket. asyncio in one thread: an SSL object is never used by two threads at once."""

    def __init__(self, engine_socket: str, certs: Path) -> None:
        import asyncio
        import ssl

        self.engine_socket = engine_socket
        self.clients: list[str] = []  # the client certificate CN of each connection
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certs / "ca.pem")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(certs / "server-cert.pem", certs / "server-key.pem")
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self.context)
        )
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        import asyncio

        async def shutdown() -> None:
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    async def _relay(self, reader: Any, writer: Any) -> None:
        import asyncio

        peer = writer.get_extra_info("peercert") or {}
        self.clients.append(dict(x[0] for x in peer.get("subject", ())).get("commonName", ""))
        up_reader, up_writer = await asyncio.open_unix_connection(self.engine_socket)

        async def pipe(source: Any, sink: Any) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()


def test_capture_over_tls_with_client_certificates(
    tmp_path: Path, implanted: Any, start: Any
) -> None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.skip(f"the TLS proxy forwards to a unix socket; DOCKER_HOST is {host!r}")
    certifi = pytest.importorskip("certifi")
    certs = tmp_path / "certs"
    certs.mkdir()
    write_tls_material(certs)
    case = tmp_path / "case"
    with TlsProxy(host.removeprefix("unix://"), certs) as proxy:
        url = proxy.url
        tls = {
            "DOCKER_HOST": url,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(certs),
            # Set on many responders' machines; it must not replace the engine's CA.
            "REQUESTS_CA_BUNDLE": certifi.where(),
            "CURL_CA_BUNDLE": certifi.where(),
        }
        result = cloudir(
            "capture", "container", "--case", str(case), implanted.name, "--json", env=tls
        )
        assert result.code == 0, result.stderr
        assert proxy.clients and set(proxy.clients) == {"cloudir-test-client"}
        # Without the CA the server certificate is not trusted: one line, exit 4, no item.
        (certs / "ca.pem").write_bytes((certs / "cert.pem").read_bytes())
        refused = cloudir(
            "capture", "container", "--case", str(tmp_path / "c2"), implanted.name, env=tls
        )
        # DOCKER_CERT_PATH without DOCKER_TLS_VERIFY is the CLI's --tls: TLS, no check.
        unchecked = cloudir(
            "capture", "container", "--case", str(tmp_path / "c3"), implanted.name,
            env={**tls, "DOCKER_TLS_VERIFY": ""},
        )  # fmt: skip
    folder = item(case, result)
    assert_every_file_in_custody(case, folder)
    recorded = {f["path"]: f for e in item_entries(case, folder) for f in e["files"]}
    fs_tar = folder / "fs.tar"
    with fs_tar.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    assert recorded[fs_tar.relative_to(case).as_posix()]["sha256"] == digest
    with tarfile.open(fs_tar) as tar:
        assert tar.extractfile("tmp/.x/miner").read() == IMPLANT  # type: ignore[union-attr]
    assert json.loads((folder / "meta.json").read_text())["source"]["docker_host"] == url
    engines = [e for e in custody(case) if e["action"] == "docker-engine"]
    assert engines and engines[0]["source"]["docker_host"] == url

    assert refused.code == 4, refused.stderr
    (line,) = error_lines(refused)
    assert line.startswith(f"error: no Docker engine at {url}: ")
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "c2" / "evidence").exists()
    assert unchecked.code == 0, unchecked.stderr


# -- the export as the engine sends it -----------------------------------------------
def test_fs_tar_is_the_engines_export_byte_for_byte(
    tmp_path: Path, engine: Any, start: Any
) -> None:
    """fs.tar is written, hashed and flushed to disk as it streams in: the file and its
    custody hash must be those of the export stream the test reads itself."""
    holder = start("sleep 3600")
    try:  # random: no run of equal bytes could hide a chunk stored twice or out of order
        sh(holder, "mkdir -p /srv && head -c 13000000 /dev/urandom > /srv/random.bin")
        sent = hashlib.sha256()
        size = 0
        for chunk in holder.export():  # the test's own read, through the SDK
            sent.update(chunk)
            size += len(chunk)
        case = tmp_path / "case"
        folder = item(case, capture(case, holder.name))
    finally:
        holder.remove(force=True)
    fs_tar = folder / "fs.tar"
    recorded = {f["path"]: f for e in custody(case) for f in e["files"]}
    entry = recorded[fs_tar.relative_to(case).as_posix()]
    assert (entry["sha256"], entry["bytes"]) == (sent.hexdigest(), size)
    with fs_tar.open("rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == sent.hexdigest()
    assert size > 3 * (4 << 20)  # more than every reused buffer: each was refilled


# -- a huge sparse file -----------------------------------------------------------------
SPARSE_BYTES = 200 << 20  # the export carries every zero: 2 GiB is a 2 GiB fs.tar


def test_a_large_sparse_file_is_captured_and_timed_inside_the_case(
    tmp_path: Path, start: Any
) -> None:
    holder = start("sleep 3600")
    try:
        sh(holder, f"mkdir -p /data && truncate -s {SPARSE_BYTES} /data/sparse.bin")
        case = tmp_path / "case"
        scratch = {"TMPDIR": tmp_path / "tmp", "HOME": tmp_path / "home"}
        for folder in scratch.values():
            folder.mkdir()
        env = {k: str(v) for k, v in scratch.items()}
        result = cloudir(
            "capture", "container", "--case", str(case), holder.name, "--json", env=env
        )
        folder = item(case, result)
        timeline = cloudir("timeline", "--case", str(case), "--json", env=env)
    finally:
        holder.remove(force=True)  # a 200 MiB container would slow every later --all
    assert timeline.code == 0, timeline.stderr
    assert_every_file_in_custody(case, folder)
    with tarfile.open(folder / "fs.tar") as tar:
        assert tar.getmember("data/sparse.bin").size == SPARSE_BYTES
    assert (folder / "fs.tar").stat().st_size > SPARSE_BYTES

    (row,) = query(
        case,
        "SELECT action, message, raw FROM timeline "
        "WHERE artifact = 'container:diff' AND target = '/data/sparse.bin'",
    )
    assert row["action"] == "container:added"
    raw = json.loads(row["raw"])
    assert raw["size"] == SPARSE_BYTES and raw["type"] == "file"
    assert f"{SPARSE_BYTES:,} bytes" in row["message"]

    assert {p.name for p in tmp_path.iterdir()} == {"case", "tmp", "home"}
    assert [list(f.iterdir()) for f in scratch.values()] == [[], []]
    assert not [p for p in case.rglob("*") if p.name.endswith(".partial")]


# -- a container whose image was deleted ------------------------------------------------
def test_a_container_whose_image_was_deleted_is_still_captured(
    tmp_path: Path, engine: Any, start: Any
) -> None:
    """`docker rmi -f` deletes an image a stopped container still uses (a running one
    only loses the tag): the container's layer and config remain, the image does not."""
    docker = pytest.importorskip("docker")
    base = start("echo base > /marker", wait_for_exit=True)
    tag = f"cloudir-test/throwaway:{uuid.uuid4().hex[:8]}"
    image = base.commit(repository=tag.split(":")[0], tag=tag.split(":")[1])
    try:
        orphan = start("echo orphan > /tmp/left", wait_for_exit=True, image=tag)
    finally:
        engine.images.remove(image.id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(image.id)

    case = tmp_path / "case"
    result = capture(case, orphan.name)
    assert result.code == 0, result.stderr
    (summary,) = result.json()["containers"]
    assert summary["complete"] is True and summary["problems"] == []
    assert any("is no longer on the engine" in note for note in summary["notes"])
    folder = case / "evidence" / summary["evidence_id"]
    names = {p.name for p in folder.iterdir()}
    assert names == {"inspect.json", "diff.json", "logs.txt", "fs.tar", "meta.json"}
    assert_every_file_in_custody(case, folder)
    assert json.loads((folder / "inspect.json").read_text())["Image"] == image.id
    assert json.loads((folder / "meta.json").read_text())["source"]["image"] == tag
    with tarfile.open(folder / "fs.tar") as tar:
        assert tar.extractfile("tmp/left").read() == b"orphan\n"  # type: ignore[union-attr]
        assert tar.extractfile("marker").read() == b"base\n"  # type: ignore[union-attr]
    last = item_entries(case, folder)[-1]
    assert last["action"] == "capture-complete"
    assert f"image {image.id} is no longer on the engine" in last["note"]
    assert "image.json and image-history.json not captured" in last["note"]
