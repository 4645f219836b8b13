"""What the test proxies between boto3 and moto share: a threaded HTTP server on
127.0.0.1 whose `url` is the endpoint_url boto3 is given.

Each proxy (fault_proxy, lambda_proxy, export_proxy) forwards to moto and changes only
what a test asked for; this is the server they run on, started and stopped with `with`.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class _QueuedServer(ThreadingHTTPServer):
    request_queue_size = 128  # a download's 32 workers connect at once


class LocalProxy:
    def __init__(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.05) -> None:
        self._server = _QueuedServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": poll_interval},
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
