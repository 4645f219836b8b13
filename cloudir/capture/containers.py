"""Docker container capture: what the engine knows about a container, and its file system.

A container is the most volatile evidence there is: `docker rm` (or an orchestrator
rescheduling it) deletes its writable layer, its logs and its configuration in one call.
So the engine's own answers are stored as it gave them, each hashed into custody with
the API call that produced it: the inspect document (command, environment, mounts,
start time), the image it ran and that image's history, the layer diff (what was added,
changed or deleted since the image: implants, dropped keys), the logs with the engine's
timestamps, the process list while it runs, and the whole file system as the export tar.
`--changed-only` keeps the tar to what the diff names, for large images.

Nothing from the container is executed or extracted on this host: tars are streamed
into the case as bytes, and `changed.tar` is assembled member by member in memory.
`--pause` freezes the processes (cgroup freezer) while the capture runs and always thaws
them again, so the file system and process list belong to one moment.

Speed (issue 20), measured against `docker export > file`: the export is hashed while it
is written, in one pass (no second read of fs.tar), and flushed to disk as it grows
(`cloudir.write_behind`), so the fsync custody waits for covers the last 32 MiB and not
the whole tar; the SDK is imported without paramiko unless the engine is ssh://
(`docker_sdk`). Tried and measured slower on the 2-core bench machine, so not done: a
reader thread filling large reused buffers from the HTTP response ahead of the writer;
hashing on a second thread, in step with each write or trailing the writer through a
bounded queue; reading the socket directly in 1 MiB `readinto1` calls and taking the
chunked framing out in place (fewer system calls, no faster: the engine sends 32 KiB
at a time). Each cost more CPU than the overlap won back: the engine's export and, on
vfs, its diff keep the machine's two cores busy. `splice`/`copy_file_range` do not
apply: the engine sends the tar in HTTP chunked framing, which must be taken out, and
every byte must pass through SHA-256 anyway.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import os
import socket
import tarfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from cloudir.capture.docker_sdk import Container, ContextAPI, docker, enable_ssh
from cloudir.case import Case
from cloudir.custody_actions import CustodyAction
from cloudir.errors import CloudError, EvidenceError, UsageError
from cloudir.evidence_item import EvidenceItem
from cloudir.progress import NO_PROGRESS, Bars, Progress, Reporter
from cloudir.safe_text import inert

API_TIMEOUT = 60  # seconds per API call; streams (export, logs) have no read timeout
EXPORT_CHUNK = 1 << 20
# Chunks are gathered to this size before they are written and hashed (_counted): a TTY
# container's logs arrive a byte at a time, the export in the engine's 32 KiB HTTP
# chunks. Measured on an 800 MB export, whole `capture container` runs alternating
# (issue 20): joining each 64 KiB into a new bytes object, 2.9-3.4 s and 1.7-1.8 CPU-s;
# one reused 256 KiB buffer, 2.7-3.2 s and 1.5 CPU-s; at 1 MiB, reused or joined anew,
# 4.7-5.6 s, the system time three times as high (0.6 s to 2.1-2.9 s).
COALESCE = 256 << 10
DEFAULT_HOST = "unix:///var/run/docker.sock"
_GO_MODE_DIR = 1 << 31  # os.ModeDir in the archive stat header the engine sends
CHANGED, ADDED, DELETED = 0, 1, 2
DONE, INCOMPLETE = "done", "INCOMPLETE"  # the last word on a container's progress line

# Everything the Docker SDK and its HTTP stack raise when the engine refuses or goes away.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)

_TRANSPORT_ERRORS = (*ENGINE_ERRORS, OSError, http.client.HTTPException)
Tick = Callable[[str, int], None]  # (step now running, bytes just stored)


@dataclass(frozen=True)
class ContainerRequest:
    """What the responder asked for: names or ids, or --all; then the options."""

    names: tuple[str, ...] = ()
    all: bool = False
    running: bool = False
    pause: bool = False
    changed_only: bool = False
    workers: int = 4
    docker_host: str | None = None

    def check(self) -> None:
        """Usage errors (exit 2) before anything reaches the engine."""
        if bool(self.names) == self.all:
            raise UsageError("name the containers to capture, or give --all (not both)")
        if self.running and not self.all:
            raise UsageError("--running only applies to --all")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")


@dataclass
class ContainerCapture:
    """One container's item and what this run got into it."""

    item: EvidenceItem
    container_id: str
    name: str
    paused: bool = False  # cloudir paused it for the capture (and unpaused it after)
    engine_failed: bool = False  # a problem came from the engine (exit 4), not the disk

    @property
    def evidence_id(self) -> str:
        return self.item.evidence_id

    @property
    def files(self) -> list[str]:
        return self.item.files

    @property
    def bytes(self) -> int:
        return self.item.bytes

    @property
    def complete(self) -> bool:
        return self.item.complete is True

    @property
    def problems(self) -> list[str]:
        return self.item.problems

    @property
    def notes(self) -> list[str]:
        """Facts, not failures (the image is gone, the logs driver keeps none, ...)."""
        return self.item.notes

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "container_id": self.container_id,
            "name": self.name,
            "files": self.files,
            "bytes": self.bytes,
            "paused": self.paused,
            "complete": self.complete,
            "problems": self.problems,
            "notes": self.notes,
        }


@dataclass
class Engine:
    """A connected Docker engine: the client, the address as the responder knows it."""

    client: docker.DockerClient
    host: str
    version: dict[str, Any]


class _Interrupted(Exception):
    """Ctrl-C (or a crash) in the main thread: workers stop between chunks, say why."""


# -- connecting and choosing ------------------------------------------------------------
def engine_address(environment: dict[str, str]) -> str:
    """The engine address as from_env resolves it: DOCKER_HOST, the docker CLI's current
    context, the local socket. It goes into meta.json and custody as the evidence source."""
    if environment.get("DOCKER_HOST"):
        return environment["DOCKER_HOST"]
    try:
        context = ContextAPI.kwargs_from_context(environment=environment)
    except docker.errors.DockerException:
        context = {}
    return str(context.get("base_url") or DEFAULT_HOST)


def connect(docker_host: str | None, workers: int) -> Engine:
    """A client configured like the docker CLI (DOCKER_HOST, DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH, the current context), with --docker-host overriding DOCKER_HOST.

    ssh:// hosts go through the system ssh client, so ~/.ssh/config and agents apply (the
    SDK still needs paramiko importable for that).
    """
    environment = dict(os.environ)
    if docker_host:
        environment["DOCKER_HOST"] = docker_host
    host = engine_address(environment)
    try:
        if host.startswith("ssh://"):
            enable_ssh()
        client = _EngineClient.from_env(
            environment=environment,
            timeout=API_TIMEOUT,
            max_pool_size=max(10, 2 * workers),
            use_ssh_client=host.startswith("ssh://"),
        )
        version = client.version()
    except ImportError as exc:
        raise CloudError(
            f"no Docker engine at {host}: ssh:// needs the paramiko package "
            "(pip install 'docker[ssh]==7.2.0')"
        ) from exc
    except ENGINE_ERRORS as exc:
        reason = _reason(exc)
        if "paramiko" in reason:  # the SDK imports it even when ssh is shelled out to
            reason = "ssh:// needs the paramiko package (pip install 'docker[ssh]==7.2.0')"
        raise CloudError(f"no Docker engine at {host}: {reason}") from exc
    return Engine(client, host, version)


class _EngineAPI(docker.APIClient):
    """DOCKER_CERT_PATH's ca.pem (or, without DOCKER_TLS_VERIFY, no check) as the docker
    CLI uses it, even when REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE is set.

    requests lets those variables replace the session's `verify` (docker/docker-py#2433):
    the engine's own CA gives way to the system bundle and a TLS engine fails with
    CERTIFICATE_VERIFY_FAILED. The session's value, passed per request, is kept. A
    subclass, because the SDK's constructor already asks the engine for its version.
    """

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if verify is None and self.verify is not True:  # True: no TLS settings of Docker's
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


class _EngineClient(docker.DockerClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.api = _EngineAPI(*args, **kwargs)


def select(engine: Engine, request: ContainerRequest) -> list[Container]:
    """The containers to capture, each once; every unknown name is listed in one error.

    An unknown name is a usage error (exit 2): the engine answered, the name is wrong or
    the container is already gone, and nothing is captured until the list is right.
    """
    try:
        if request.all:
            return engine.client.containers.list(all=not request.running, ignore_removed=True)
        found: dict[str, Container] = {}
        unknown = []
        for name in request.names:
            try:
                container = engine.client.containers.get(name)
            except docker.errors.NotFound:
                unknown.append(name)
                continue
            found.setdefault(container.id, container)
    except ENGINE_ERRORS as exc:
        raise CloudError(f"Docker engine at {engine.host}: {_reason(exc)}") from exc
    if unknown:
        raise UsageError(f"no such container on {engine.host}: {', '.join(unknown)}")
    return list(found.values())


# -- the whole command ------------------------------------------------------------------
def capture_containers(
    case: Case,
    engine: Engine,
    containers: list[Container],
    request: ContainerRequest,
    progress: Progress = NO_PROGRESS,
) -> list[ContainerCapture]:
    """Capture the containers in parallel, one progress line each (bytes stored, step).

    On Ctrl-C the workers stop at the next chunk, record `capture-incomplete`, unpause what
    they paused, and the interrupt is raised again once they have.
    """
    case.record(
        CustodyAction.DOCKER_ENGINE,
        None,
        [],
        note=f"Docker engine {engine.version.get('Version', '?')} at {engine.host}",
        source={"docker_host": engine.host, **_engine_summary(engine.version)},
    )
    cancel = threading.Event()
    streams = _OpenStreams()
    engine.client.api.hooks["response"].append(streams.add)
    results: list[ContainerCapture] = []
    with progress.bars("bytes") as bars:
        pool = ThreadPoolExecutor(max_workers=request.workers, thread_name_prefix="container")
        try:
            futures = [
                pool.submit(
                    capture_one,
                    case,
                    engine,
                    c,
                    request,
                    cancel,
                    _ticker(bars, _name(c.attrs)),
                )
                for c in containers
            ]
            results = [f.result() for f in as_completed(futures)]
        except BaseException:
            cancel.set()
            streams.cut()  # a worker blocked on a stalled engine stream wakes up now
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    order = {c.id: n for n, c in enumerate(containers)}
    return sorted(results, key=lambda r: order[r.container_id])


def _ticker(bars: Bars, name: str) -> Tick:
    """A container's line: bytes stored so far and the step running; sized when done."""
    label = inert(name, 40)
    line = bars.add(label)
    stored = [0]

    def tick(step: str, size: int) -> None:
        stored[0] += size
        line.update(stored[0], total=stored[0] if step == DONE else None, label=f"{label}: {step}")

    return tick


def raise_if_incomplete(results: list[ContainerCapture], report: Reporter) -> None:
    """One line per incomplete container; exit 4 when the engine failed, else 3 (disk)."""
    failed = [r for r in results if not r.complete]
    lines = [f"container {r.name} ({r.container_id[:12]}): {'; '.join(r.problems)}" for r in failed]
    error = CloudError if any(r.engine_failed for r in failed) else EvidenceError
    if len(lines) == 1:
        raise error(lines[0])
    for line in lines:
        report(line)
    if lines:
        raise error(f"{len(lines)} containers captured incompletely; see the lines above")


def capture_one(
    case: Case,
    engine: Engine,
    container: Container,
    request: ContainerRequest,
    cancel: threading.Event,
    tick: Tick,
) -> ContainerCapture:
    """One `container-<name>-<id12>` item: every file, then capture-complete or -incomplete."""
    name = _name(container.attrs)
    source = {
        "type": "docker",
        "docker_host": engine.host,
        "container_id": container.id,
        "name": name,
        "image": container.attrs.get("Config", {}).get("Image"),
    }
    item = _open_item(case, name, container.id, source, engine.version)
    run = _Run(case, engine, container, item, cancel, tick)
    try:
        with item:  # an exception ends the item incomplete, naming it, and is raised again
            try:
                run.capture(request)
            except _Interrupted:
                item.problem("interrupted before every file was captured")
    finally:
        tick(DONE if item.complete else INCOMPLETE, 0)
    return run.result


_ITEM_LOCK = threading.Lock()  # two workers must never pick the same fresh evidence id


def _open_item(
    case: Case, name: str, container_id: str, source: dict[str, Any], version: dict[str, Any]
) -> EvidenceItem:
    meta = {"kind": "container", "source": source, "engine": _engine_summary(version)}
    summary = functools.partial(_summary, name, container_id)
    with _ITEM_LOCK:
        evidence_id = case.unique_evidence_id(f"container-{name}-{container_id[:12]}")
        return case.item(evidence_id, meta, summary=summary)


def _summary(name: str, container_id: str, item: EvidenceItem) -> str:
    """The closing custody entry says plainly whether the item is whole."""
    names = [p.rsplit("/", 1)[-1] for p in item.files]
    note = "; ".join([f"{name} ({container_id[:12]}): captured {', '.join(names)}", *item.notes])
    if item.problems:
        note += "; INCOMPLETE: " + "; ".join(item.problems)
    return note


class _OpenStreams:
    """Every response the SDK opens, so Ctrl-C can cut the streams workers are reading.

    The SDK turns the socket timeout off for export and logs; a stalled engine would hold
    a worker (and its paused container) forever. Shutting the socket down makes that read
    fail at once, and the worker goes on to unpause and record the item as incomplete.
    """

    def __init__(self) -> None:
        self._responses: weakref.WeakSet[requests.Response] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, response: requests.Response, *_: Any, **__: Any) -> None:
        with self._lock:
            self._responses.add(response)

    def cut(self) -> None:
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            connection = getattr(response.raw, "connection", None)  # None once fully read
            if connection is None:
                continue
            with contextlib.suppress(AttributeError, OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)


class _Run:
    """One container's capture: each step stored and recorded, or its failure kept."""

    def __init__(
        self,
        case: Case,
        engine: Engine,
        container: Container,
        item: EvidenceItem,
        cancel: threading.Event,
        tick: Tick,
    ) -> None:
        self.case, self.engine, self.container = case, engine, container
        self.item, self.cancel, self.tick = item, cancel, tick
        self.result = ContainerCapture(item, container.id, _name(container.attrs))
        self.diff: list[dict[str, Any]] | None = None

    # -- the steps, most volatile first ---------------------------------------------
    def capture(self, request: ContainerRequest) -> None:
        """Inspect, pause, then the rest; the unpause is in `finally`, whatever happens."""
        attrs: dict[str, Any] = {}

        def inspect() -> None:
            self.container.reload()
            attrs.update(self.container.attrs)

        if not self.attempt("inspect.json", inspect):
            return  # the container is gone or the engine is: nothing else can follow
        state = attrs.get("State", {})
        running = bool(state.get("Running"))
        if request.pause and running and state.get("Paused"):
            self.item.note("already paused when found; left paused")
        try:
            if request.pause and running and not state.get("Paused"):
                self.pause()
            self.attempt("inspect.json", lambda: self.store_json("inspect.json", "inspect", attrs))
            if running:
                self.attempt("top.json", lambda: self.store_json("top.json", "top", self._top()))
            if request.changed_only:  # the archive is built from the diff: one after the other
                self._metadata(attrs)
                self.attempt("changed.tar", self._changed)
            else:
                # The engine computes the diff (on vfs, a walk of every file) and serves the
                # logs while the export streams: the wait is the longer one, not the sum.
                beside = threading.Thread(
                    target=self._metadata, args=(attrs,), name="container-metadata", daemon=True
                )
                beside.start()
                try:
                    self.attempt("fs.tar", self._export)
                finally:
                    beside.join()
        finally:
            if self.result.paused:
                self.unpause()

    def _metadata(self, attrs: dict[str, Any]) -> None:
        self.attempt("diff.json", self._diff)
        self.attempt("logs.txt", self._logs)
        self._image(attrs.get("Image", ""))

    def _top(self) -> dict[str, Any]:
        self.tick("top", 0)
        return self.container.top()

    def _diff(self) -> None:
        self.tick("diff", 0)
        self.diff = self.container.diff() or []  # the SDK says None for "no changes"
        self.store_json("diff.json", "diff", self.diff)

    def _logs(self) -> None:
        self.tick("logs", 0)
        try:
            chunks = self.container.logs(
                stream=True, follow=False, timestamps=True, stdout=True, stderr=True
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 501:  # log driver none/syslog/...: the engine keeps none
                self.item.note(f"logs.txt not available: {exc.explanation}")
                return
            raise
        self.store("logs.txt", "logs", chunks, step="logs")

    def _image(self, image_id: str) -> None:
        """The image the container ran, as the engine has it now (it may be gone)."""
        try:
            image = self.engine.client.images.get(image_id)
        except docker.errors.ImageNotFound:
            self.item.note(
                f"image {image_id} is no longer on the engine: "
                "image.json and image-history.json not captured"
            )
            return
        except ENGINE_ERRORS as exc:
            self.problem(f"image.json and image-history.json not captured: {_reason(exc)}")
            self.result.engine_failed = True
            return
        extra = {"image_id": image_id}
        self.attempt(
            "image.json", lambda: self.store_json("image.json", "image-inspect", image.attrs, extra)
        )
        self.attempt(
            "image-history.json",
            lambda: self.store_json("image-history.json", "image-history", image.history(), extra),
        )

    def _export(self) -> None:
        self.tick("export", 0)
        self.store("fs.tar", "export", self.container.export(chunk_size=EXPORT_CHUNK), "export")

    def _changed(self) -> None:
        if self.diff is None:
            raise EvidenceError("the diff could not be read, so nothing says what changed")
        self.tick("changed files", 0)
        roots = changed_roots(self.diff)
        gone: list[str] = []
        chunks = changed_tar_chunks(self.container, roots, self.cancel, gone)
        paths = [path for path, _ in roots]
        self.store("changed.tar", "get-archive", chunks, "changed files", {"paths": paths})
        if gone:  # deleted between the diff and the fetch: the container was not paused
            self.item.note(f"gone before changed.tar fetched them: {', '.join(gone)}")

    # -- pause ----------------------------------------------------------------------
    def pause(self) -> None:
        """A failed pause still captures: the evidence matters more than one instant."""
        try:
            self.container.pause()
        except ENGINE_ERRORS as exc:
            self.problem(f"--pause failed ({_reason(exc)}): captured while running")
            self.result.engine_failed = True
            return
        self.result.paused = True
        self.item.record(
            CustodyAction.CONTAINER_PAUSED,
            note=f"{self.result.name} paused (cgroup freezer) for the capture",
            source=self.source("pause"),
        )

    def unpause(self) -> None:
        """Thaw what cloudir froze. A failure is loud: the service stays down until then."""
        try:
            self.container.unpause()
        except ENGINE_ERRORS as exc:
            self.problem(
                f"unpause failed: {_reason(exc)}; the container is STILL PAUSED: "
                f"run `docker unpause {self.container.id[:12]}`"
            )
            self.result.engine_failed = True
            self.item.record(
                CustodyAction.CONTAINER_UNPAUSE_FAILED,
                note=_reason(exc),
                source=self.source("unpause"),
            )
            return
        self.item.record(
            CustodyAction.CONTAINER_UNPAUSED,
            note=f"{self.result.name} unpaused after the capture",
            source=self.source("unpause"),
        )

    # -- storing and recording ------------------------------------------------------
    def source(self, api: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "api": f"docker:{api}",
            "docker_host": self.engine.host,
            "container_id": self.container.id,
            **(extra or {}),
        }

    def store_json(
        self, name: str, api: str, value: Any, extra: dict[str, Any] | None = None
    ) -> None:
        """As the API returned it: keys in the engine's order, nothing added or dropped."""
        data = json.dumps(value, indent=2, sort_keys=False).encode() + b"\n"
        self.store(name, api, [data], api, extra)

    def store(
        self,
        name: str,
        api: str,
        chunks: Iterable[bytes],
        step: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Stream into the case (hashed while written, renamed only when complete)."""
        counted = _counted(chunks, self.cancel, lambda n: self.tick(step, n))
        self.item.store(name, counted, source=self.source(api, extra))

    def attempt(self, what: str, step: Callable[[], None]) -> bool:
        """Run one step; a failure is kept as a problem and the next step still runs."""
        if self.cancel.is_set():
            raise _Interrupted
        try:
            step()
        except ENGINE_ERRORS as exc:
            if self.cancel.is_set():  # the stream was cut for Ctrl-C: say that, not this
                raise _Interrupted from exc
            self.problem(f"{what} not captured: Docker engine error: {_reason(exc)}")
            self.result.engine_failed = True
            return False
        except (EvidenceError, OSError) as exc:
            self.problem(f"{what} not stored: {exc}")
            return False
        return True

    def problem(self, text: str) -> None:
        self.item.problem(text)


# -- changed files only -----------------------------------------------------------------
def changed_roots(diff: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The added or changed paths to fetch, none inside an added directory already fetched.

    A changed (kind 0) directory is not a root for what lies under it: it only means an
    entry in it was added, changed or deleted, and those entries are in the diff
    themselves. Fetching it whole would carry every unchanged image file in it.
    """
    kinds = {d["Path"]: d["Kind"] for d in diff}
    roots = []
    for path in sorted(p for p, k in kinds.items() if k in (CHANGED, ADDED)):
        parents = [path[:i] for i in range(1, len(path)) if path[i] == "/"]
        if not any(kinds.get(p) == ADDED for p in parents):
            roots.append((path, kinds[path]))
    return roots


def changed_tar_chunks(
    container: Container,
    roots: list[tuple[str, int]],
    cancel: threading.Event,
    gone: list[str],
) -> Iterator[bytes]:
    """One tar of every path, member names at their absolute place (`tmp/.x/miner`).

    Each `get_archive` answer is read as a tar stream and its members written out again
    with tarfile's own header encoding (PAX), data copied in chunks: nothing touches the
    disk and memory stays bounded. tarfile's `w|` mode writes a whole member per
    `addfile` call, which cannot hand chunks to the case's hashing writer in between.
    A changed directory contributes its own entry only (its mode, owner and times).
    A path deleted since the diff was read is added to `gone`.
    """
    for path, kind in roots:
        if cancel.is_set():
            raise _Interrupted
        try:
            stream, stat = container.get_archive(path, chunk_size=EXPORT_CHUNK)
        except docker.errors.NotFound:
            gone.append(path)
            continue
        parent = path.rstrip("/").rsplit("/", 1)[0].strip("/")
        prefix = f"{parent}/" if parent else ""
        is_dir = bool(int(stat.get("mode", 0)) & _GO_MODE_DIR)
        own_entry_only = kind == CHANGED and is_dir
        try:
            with tarfile.open(fileobj=_ChunkReader(stream), mode="r|") as source:
                for member in source:
                    yield from _member_bytes(source, member, prefix)
                    if own_entry_only:
                        break
        finally:
            stream.close()  # a directory's own entry is read: the rest is not wanted
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # the end-of-archive marker


def _member_bytes(source: tarfile.TarFile, member: tarfile.TarInfo, prefix: str) -> Iterator[bytes]:
    """The member's header and data, renamed under `prefix`; hard links follow it."""
    member.pax_headers = {
        k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")
    }
    member.name = prefix + member.name
    if member.islnk():
        member.linkname = prefix + member.linkname
    yield member.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    if not member.isreg() or member.size == 0:
        return
    data = source.extractfile(member)
    assert data is not None  # a regular file always has a data stream
    left = member.size
    while left:
        chunk = data.read(min(EXPORT_CHUNK, left))
        if not chunk:
            raise EvidenceError(f"{member.name}: the engine's archive ended inside the file")
        left -= len(chunk)
        yield chunk
    pad = -member.size % tarfile.BLOCKSIZE
    if pad:
        yield tarfile.NUL * pad


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


# -- small helpers ----------------------------------------------------------------------
def _counted(
    chunks: Iterable[bytes], cancel: threading.Event, on_bytes: Callable[[int], None]
) -> Iterator[bytes | memoryview]:
    """Chunks gathered to COALESCE bytes, counted for the progress line, stoppable.

    They are gathered in one buffer, reused: the case writes and hashes each chunk before
    it asks for the next (Case.store_stream), so the buffer is free again by then. A new
    joined buffer per chunk cost more (COALESCE says how much). A chunk as large as the
    buffer is handed on as it came.
    """
    buffer = bytearray(COALESCE)
    view = memoryview(buffer)
    filled = 0
    for chunk in chunks:
        if cancel.is_set():
            raise _Interrupted
        size = len(chunk)
        if filled + size > COALESCE:
            if filled:
                on_bytes(filled)
                yield view[:filled]
                filled = 0
            if size >= COALESCE:
                on_bytes(size)
                yield chunk
                continue
        view[filled : filled + size] = chunk
        filled += size
    if filled:
        on_bytes(filled)
        yield view[:filled]


def _name(attrs: dict[str, Any]) -> str:
    return str(attrs.get("Name") or attrs.get("Id", "")[:12]).lstrip("/")


def _engine_summary(version: dict[str, Any]) -> dict[str, Any]:
    keys = ("Version", "ApiVersion", "Os", "Arch", "KernelVersion")
    return {k: version.get(k) for k in keys}


def _reason(exc: BaseException) -> str:
    """The engine's own words when it answered, else the deepest cause's, on one line.

    The SDK wraps a refused socket four times over (DockerException, requests, urllib3,
    OSError); the innermost message is the one a responder can act on.
    """
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return f"{exc.explanation} (HTTP {exc.status_code})"
    text = ""
    current: BaseException | None = exc
    for _ in range(10):  # exception chains are short; never loop on a cycle
        if current is None:
            break
        first = current.args[0] if current.args else None
        if isinstance(current, OSError) and current.strerror:
            text = current.strerror
        elif isinstance(first, str) and first:
            text = first
        nested = [a for a in current.args if isinstance(a, BaseException)]
        current = current.__cause__ or (nested[-1] if nested else None)
        if not isinstance(current, _TRANSPORT_ERRORS):
            break  # a NameError under "Install paramiko" says less than the message above
    return " ".join(text.split()) or type(exc).__name__
