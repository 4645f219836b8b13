"""The core of `cloudir capture container`'s fs.tar alone, for bench/container_capture.py:
the engine's export read through the Docker SDK in cloudir's chunk sizes, hashed
(SHA-256), written with cloudir's write-behind flushes and fsynced, in a bare Python
process, with no case, no custody line and no other API call. Its time is what the
capture's own work costs beside `docker export > FILE`, without cloudir's start and the
metadata it also stores.

Usage: .venv/bin/python bench/container_core.py CONTAINER FILE   (prints the SHA-256)
"""

from __future__ import annotations

import hashlib
import os
import sys

import docker

from cloudir.capture.containers import COALESCE, EXPORT_CHUNK
from cloudir.write_behind import Flusher


def main(name: str, target: str) -> str:
    client = docker.from_env(timeout=60)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    flusher = Flusher(fd)
    pending = bytearray()
    try:
        for chunk in client.containers.get(name).export(chunk_size=EXPORT_CHUNK):
            pending += chunk
            if len(pending) >= COALESCE:
                _write(fd, pending, digest, flusher)
                pending.clear()
        _write(fd, pending, digest, flusher)
        flusher.close()
        os.fsync(fd)
    finally:
        os.close(fd)
        client.close()
    return digest.hexdigest()


def _write(fd: int, data: bytearray, digest: hashlib._Hash, flusher: Flusher) -> None:
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    flusher.wrote(len(data))


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2]))
