"""A container's export read as fast as the engine sends it, in large buffers.

The engine writes its export tar in HTTP chunks of about 32 KiB. Read through the SDK
(`container.export()`: requests, then urllib3, then http.client) each chunk is a Python
object of its own, joined again into larger ones, and the same thread then writes and
hashes them: while it does, nothing reads the socket and the engine waits. Here a reader
thread fills a few large reused buffers straight from the HTTP response
(`http.client.HTTPResponse.readinto` decodes the chunked framing into the buffer),
while the caller writes and hashes the buffer filled before. The bytes are the ones
`docker export` writes, in the same order: nothing is decoded but the HTTP framing.

A buffer handed out is valid until the next one is asked for; the case's writer writes
and hashes each before asking (`cloudir.case._write_hashed`).

The response is opened with the SDK's own calls (status check, socket timeout off for a
stream), so every transport it supports (unix socket, TCP with TLS, ssh) and the hooks
that let Ctrl-C cut a stalled stream still apply. A response this cannot read directly
(a content encoding, an HTTP stack of another shape) is read through the SDK instead.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3.exceptions

from cloudir.capture.docker_sdk import Container

BUFFER = 4 << 20  # one read: big enough that per-read costs vanish, small enough to hold 3
BUFFERS = 3  # one being written, one being filled, one spare for the engine's bursts
SDK_CHUNK = 1 << 20  # the fallback's chunk size
JOIN_TIMEOUT = 10  # seconds to wait for the reader once its socket is shut down
_POLL = 0.25  # seconds between looks at `stopped` while waiting for the reader


def export_chunks(container: Container, stopped: Callable[[], None]) -> Iterator[memoryview]:
    """The export tar of `container`. `stopped` is called while waiting for the engine
    and raises to abandon the export (Ctrl-C): the reader is woken and joined."""
    api = container.client.api
    response = api._get(api._url("/containers/{0}/export", container.id), stream=True)
    try:
        api._raise_for_status(response)
        sock = api._get_raw_response_socket(response)
        api._disable_socket_timeout(sock)  # as the SDK does: an export may pause for long
        body = _http_body(response)
        if body is None:
            for chunk in response.iter_content(SDK_CHUNK, False):
                stopped()
                yield memoryview(chunk)
            return
        yield from _Prefetch(body, _shutter(sock), stopped).chunks()
    finally:
        response.close()


def _http_body(response: requests.Response) -> http.client.HTTPResponse | None:
    """The http.client response under requests and urllib3, when the body can be read
    from it as sent: nothing buffered above it and no content encoding to undo."""
    raw = response.raw
    body = getattr(raw, "_fp", None)
    if not isinstance(body, http.client.HTTPResponse):
        return None
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    if getattr(raw, "_fp_bytes_read", 0) or len(getattr(raw, "_decoded_buffer", b"")):
        return None  # something already read through urllib3: it holds those bytes
    return body


def _shutter(sock: Any) -> Callable[[], None]:
    """Wake a reader blocked on `sock` (shut down, not closed: closing does not wake a
    blocked read on Linux)."""

    def shutdown() -> None:
        with contextlib.suppress(AttributeError, OSError):
            sock.shutdown(socket.SHUT_RDWR)

    return shutdown


class _Prefetch:
    """A reader thread filling `BUFFERS` reused buffers; the caller takes them in order."""

    def __init__(
        self, body: http.client.HTTPResponse, wake: Callable[[], None], stopped: Callable[[], None]
    ) -> None:
        self._body = body
        self._wake = wake
        self._stopped = stopped
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[bytearray | BaseException, int]] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(bytearray(BUFFER))
        self._thread = threading.Thread(target=self._read, name="export-reader", daemon=True)

    def chunks(self) -> Iterator[memoryview]:
        self._thread.start()
        try:
            while True:
                buffer, size = self._next()
                if not size:
                    return
                yield memoryview(buffer)[:size]
                self._free.put(buffer)  # the caller asked for the next: this one is done
        finally:
            self._free.put(None)  # a reader waiting for a buffer stops
            if self._thread.is_alive():
                self._wake()  # a reader blocked on the socket stops
            self._thread.join(JOIN_TIMEOUT)

    def _next(self) -> tuple[bytearray, int]:
        while True:
            try:
                item, size = self._full.get(timeout=_POLL)
            except queue.Empty:
                self._stopped()
                continue
            if isinstance(item, BaseException):
                raise _broken(item)
            return item, size

    def _read(self) -> None:
        try:
            while (buffer := self._free.get()) is not None:
                size = self._body.readinto(buffer)
                self._full.put((buffer, size))
                if not size:
                    return
        except BaseException as exc:  # handed to the caller, which raises it
            self._full.put((exc, 0))


def _broken(exc: BaseException) -> BaseException:
    """What the SDK path raises for the same failure (urllib3's ProtocolError), so the
    capture reports a stream cut short as the engine's failure and not the disk's."""
    if isinstance(exc, http.client.HTTPException | OSError):
        error = urllib3.exceptions.ProtocolError(f"Connection broken: {exc!r}", exc)
        error.__cause__ = exc
        return error
    return exc
