"""The core of `cloudir capture container`'s fs.tar alone, for bench/container_capture.py:
the engine's export read through the Docker SDK and gathered as cloudir gathers it
(`containers._counted`: EXPORT_CHUNK reads into one reused COALESCE buffer), hashed
(SHA-256), written with cloudir's write-behind flushes and fsynced, in a bare Python
process, with no case, no custody line and no other API call. Its time, less its own
start, is what the capture's own work costs beside `docker export > FILE`.

Usage: .venv/bin/python bench/container_core.py CONTAINER FILE   (prints the SHA-256)
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

import docker

from cloudir.capture.containers import EXPORT_CHUNK, _counted
from cloudir.write_behind import Flusher


def main(name: str, target: str) -> str:
    client = docker.from_env(timeout=60)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    flusher = Flusher(fd)
    try:
        export = client.containers.get(name).export(chunk_size=EXPORT_CHUNK)
        for chunk in _counted(export, threading.Event(), lambda _: None):
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            flusher.wrote(len(chunk))
        flusher.close()
        os.fsync(fd)
    finally:
        flusher.close()  # before the descriptor goes: the helper must not sync a reused number
        os.close(fd)
        client.close()
    return digest.hexdigest()


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2]))
