"""The demo's compromised container: a web server the intruder got a shell in.

With the leaked key the intruder also reached the team's container host. In the web
container they dropped a miner in a hidden folder under /tmp, added their SSH key and a
uid-0 account, and deleted `wget` after using it. The demo runs that container on the
Docker engine the responder's environment points at, plants exactly those traces, and
captures it with `capture container --pause`'s own code, so the timeline, the container
rules and the report that follow include it as they would in a real case. Its traces
are made when the demo runs, so on the timeline they come after the CloudTrail story
(which the demo dates a day back): the intruder's last stop, after the trail was stopped.

A Docker engine is optional for the demo: without one it says so in one line and goes
on. Nothing reaches a registry: the image is the offline test image when the engine has
it, or one imported from the host's static busybox. The container has no network and is
always removed at the end, whatever happened.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudir.case import Case
from cloudir.errors import CloudError, EvidenceError, UsageError

Say = Callable[[str], None]

TEST_IMAGE = "cloudir-test/busybox:1"  # made by scripts/dockerd.sh image (CI, developers)
DEMO_IMAGE = "cloudir-demo/busybox:1"
PING_TIMEOUT = 5  # seconds: an absent engine must not hold the demo up
ATTACKER_IP = "203.0.113.77"  # the address of the CloudTrail story (cloudir.demo.run)
ATTACKER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7tt0ck attacker@kali"
BACKDOOR_USER = "svc-web:x:0:0:web service:/root:/bin/sh"
MINER = "#!/bin/sh\necho 'xmrig 6.21.0 (demo stand-in: it only prints this line)'\n"
# What a shell needs for the story, if `busybox --list` cannot say what this one has.
APPLETS = ("sh", "ls", "cat", "mkdir", "chmod", "echo", "sleep", "rm", "wget", "printf", "id")

# The intruder's steps, each one `sh -c` in the running container, in order. The log line
# goes to PID 1's stdout, so it is in the container's logs as the web server's own.
PLANT = (
    f"echo 'GET /cgi-bin/.%2e/.%2e/bin/sh 200 from {ATTACKER_IP}' > /proc/1/fd/1",
    f"mkdir -p /tmp/.x && printf '%s' \"{MINER}\" > /tmp/.x/xmrig && chmod 755 /tmp/.x/xmrig",
    f"mkdir -p /root/.ssh && echo '{ATTACKER_KEY}' >> /root/.ssh/authorized_keys",
    f"echo '{BACKDOOR_USER}' >> /etc/passwd",
    "rm -f /bin/wget",
)


def capture_compromised_container(case: Case, say: Say) -> None:
    """Run, compromise and capture the web container; one line and return when no
    engine, image or busybox is available, so the rest of the demo still runs."""
    from cloudir.capture import containers as capture
    from cloudir.capture.docker_sdk import docker

    host = capture.engine_address(dict(os.environ))
    try:
        client = docker.from_env(timeout=PING_TIMEOUT)
        client.ping()
    except capture.ENGINE_ERRORS:
        shown = os.environ.get("DOCKER_HOST") or f"unset, so {host}"
        say(
            f"no Docker engine reachable (DOCKER_HOST={shown}): "
            "the demo goes on without a container"
        )
        return
    try:
        image = _image(client, say)
        if image is None:
            return
        _run_and_capture(case, client, image, say)
    except capture.ENGINE_ERRORS as exc:  # the engine went away or refused half-way
        say(f"Docker engine at {host} failed ({exc}): the demo goes on without a container")
    finally:
        client.close()


def _run_and_capture(case: Case, client: Any, image: str, say: Say) -> None:
    """The container's whole life, removed in `finally`: nothing is left running."""
    from cloudir.capture import containers as capture
    from cloudir.console import TERMINAL

    name = f"cloudir-demo-web-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(
        image,
        ["sh", "-c", "echo web server up; sleep 600"],
        name=name,
        detach=True,
        network_mode="none",  # the demo needs no network and must reach none
        labels={"cloudir-demo": "1"},
    )
    try:
        for step in PLANT:
            code, output = container.exec_run(["sh", "-c", step])
            if code != 0:
                text = output.decode(errors="replace").strip()
                say(f"container {name}: `{step}` failed ({text}): no container in this demo")
                return
        say(f"ran {name} ({image}); an intruder dropped a miner, a key and a uid-0 user in it")
        request = capture.ContainerRequest(names=(name,), pause=True, workers=1)
        try:
            engine = capture.connect(None, request.workers)
        except CloudError as exc:
            say(f"container {name} not captured: {exc}")
            return
        try:
            chosen = capture.select(engine, request)
            [result] = capture.capture_containers(case, engine, chosen, request, TERMINAL)
        except (CloudError, EvidenceError, UsageError) as exc:
            say(f"container {name} not captured: {exc}")
            return
        finally:
            engine.client.close()
        state = "paused during capture" if result.paused else "captured running"
        if not result.complete:
            state += "; INCOMPLETE: " + "; ".join(result.problems)
        say(f"{result.evidence_id}: {len(result.files)} files, {result.bytes} bytes, {state}")
    finally:
        try:
            container.remove(force=True)
        except capture.ENGINE_ERRORS as exc:
            say(f"could not remove {name} ({exc}): remove it with `docker rm -f {name}`")


def _image(client: Any, say: Say) -> str | None:
    """The offline test image if the engine has it, else the demo's own, imported once."""
    import docker.errors

    for tag in (TEST_IMAGE, DEMO_IMAGE):
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            continue
    busybox = _static_busybox()
    if busybox is None:
        say(
            "no static busybox on this host to build the demo image from "
            "(apt-get install busybox-static): the demo goes on without a container"
        )
        return None
    repository, tag = DEMO_IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(_rootfs_tar(busybox), repository=repository, tag=tag)
    try:
        client.images.get(DEMO_IMAGE)
    except docker.errors.ImageNotFound:
        say(f"importing {DEMO_IMAGE} from {busybox} failed: the demo goes on without a container")
        return None
    say(f"imported {DEMO_IMAGE} from {busybox} (offline, no registry)")
    return DEMO_IMAGE


def _static_busybox() -> Path | None:
    """A busybox that runs alone in an empty image: statically linked (no ELF
    interpreter). A dynamic one would fail inside the container with a confusing error."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate).resolve()
    return None


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable with no PT_INTERP program header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return False
            endian = "<" if head[5] == 1 else ">"
            if head[4] == 2:  # ELF64: e_phoff at 32, e_phentsize and e_phnum at 54
                [phoff] = struct.unpack_from(endian + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
            else:  # ELF32: e_phoff at 28, e_phentsize and e_phnum at 42
                [phoff] = struct.unpack_from(endian + "I", head, 28)
                phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    types = [struct.unpack_from(endian + "I", table, n * phentsize)[0] for n in range(phnum)]
    return 3 not in types  # PT_INTERP


def _applets(busybox: Path) -> list[str]:
    """The applets this busybox has (running the host's own binary), or the story's few."""
    try:
        listed = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    return sorted({*listed, *APPLETS} - {"busybox"}) if listed else list(APPLETS)


def _rootfs_tar(busybox: Path) -> bytes:
    """The image's file system: busybox and its applet links in /bin, a root account,
    /tmp and /root. Built in memory (about 2 MB); nothing is written on the host."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for folder, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)):
            add(folder, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in _applets(busybox):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        add("etc/passwd", tarfile.REGTYPE, 0o644, passwd)
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buffer.getvalue()
