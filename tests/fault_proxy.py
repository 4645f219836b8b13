"""An HTTP proxy between boto3 and moto that misbehaves on request, as AWS sometimes does.

It also refuses named query-API actions (`proxy.deny("DetachInstances")`) with the
error AWS gives a caller who lacks the permission, which moto never enforces.

moto answers every request perfectly; the EBS download must also survive the answers a
real network and a busy API give: a corrupted block body, throttling, a 503, a connection
dropped halfway through a block, a refused permission. The proxy forwards everything to
moto untouched except the requests a test named a fault for.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_proxy import LocalProxy

BLOCK_PATH = re.compile(r"^/snapshots/(?P<snap>[^/]+)/blocks/(?P<index>\d+)")
LIST_PATH = re.compile(r"^/snapshots/(?P<snap>[^/]+)/blocks(\?|$)")


@dataclass
class Fault:
    """What to do to matching requests, how many more times (-1: always)."""

    kind: str  # corrupt | drop | throttle | unavailable | deny | kms-deny
    on: str  # "block" (GetSnapshotBlock) or "list" (ListSnapshotBlocks)
    index: int | None = None  # a block index, or None for any block
    times: int = 1

    def matches(self, on: str, index: int | None) -> bool:
        if self.times == 0 or self.on != on:
            return False
        return self.index is None or self.index == index


class FaultProxy(LocalProxy):
    """A threaded proxy on 127.0.0.1; `url` is what boto3's endpoint_url should be."""

    def __init__(self, upstream: str, block_delay: float = 0.0) -> None:
        self.upstream = urlsplit(upstream)
        self.block_delay = block_delay
        self.block_size: int | None = None  # rewrite ListSnapshotBlocks' BlockSize (moto: 512)
        self.list_page: int | None = None  # page ListSnapshotBlocks (moto answers in one page)
        self.faults: list[Fault] = []
        self.block_requests: list[int] = []
        self.list_requests = 0
        self.denied: dict[str, int] = {}  # query-API action -> refusals left (-1: always)
        self.refused: list[str] = []
        self.stalled: set[str] = set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    def __exit__(self, *_: Any) -> None:
        self._closing.set()
        super().__exit__()

    def add(self, kind: str, on: str = "block", index: int | None = None, times: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(kind, on, index, times))

    def stall(self, action: str) -> None:
        """Hold every request for a query-API action, unanswered, until the proxy closes:
        an engine (or API) that hangs while the client waits."""
        with self._lock:
            self.stalled.add(action)

    def deny(self, action: str, times: int = -1) -> None:
        """Refuse a query-API action (EC2, IAM, Auto Scaling, STS) as a missing permission."""
        with self._lock:
            self.denied[action] = times

    def refuse(self, action: str | None) -> bool:
        with self._lock:
            left = self.denied.get(action or "", 0)
            if left == 0:
                return False
            if left > 0:
                self.denied[action or ""] = left - 1
            self.refused.append(action or "")
            return True

    def take(self, on: str, index: int | None) -> str | None:
        """The fault this request gets, counting it down."""
        with self._lock:
            if on == "block" and index is not None:
                self.block_requests.append(index)
            if on == "list":
                self.list_requests += 1
            for fault in self.faults:
                if fault.matches(on, index):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault.kind
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def do_PUT(self) -> None:
                self._forward()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else None
                action = _query_action(payload)
                if action and proxy.refuse(action):
                    self._send_denied(action)
                    return
                if action in proxy.stalled:
                    proxy._closing.wait()
                    self.close_connection = True
                    return
                block = BLOCK_PATH.match(self.path)
                on = "block" if block else "list" if LIST_PATH.match(self.path) else "other"
                index = int(block["index"]) if block else None
                fault = proxy.take(on, index) if on != "other" else None
                if block and proxy.block_delay:
                    time.sleep(proxy.block_delay)
                if fault in ERRORS:
                    self._send(*ERRORS[fault])
                    return
                status, headers, body = self._upstream(payload)
                if on == "list" and status == 200:
                    body = self._relist(body)
                if fault == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if fault == "drop":
                    self._send_head(status, headers, len(body))
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._send_head(status, headers, len(body))
                self.wfile.write(body)

            def _relist(self, body: bytes) -> bytes:
                """The listing as AWS would give it: its block size, in pages."""
                listing = json.loads(body)
                if proxy.block_size:
                    listing["BlockSize"] = proxy.block_size
                if proxy.list_page:
                    query = parse_qs(urlsplit(self.path).query)
                    start = int(query.get("pageToken", ["0"])[0])
                    end = start + proxy.list_page
                    blocks = listing["Blocks"]
                    listing["Blocks"] = blocks[start:end]
                    if end < len(blocks):
                        listing["NextToken"] = str(end)
                return json.dumps(listing).encode()

            def _upstream(self, payload: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                try:
                    path = re.sub(r"([?&])pageToken=[^&]*&?", r"\1", self.path)
                    conn.request(self.command, path, body=payload, headers=dict(self.headers))
                    reply = conn.getresponse()
                    return reply.status, reply.getheaders(), reply.read()
                finally:
                    conn.close()

            def _send_head(self, status: int, headers: list[tuple[str, str]], size: int) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(size))
                self.send_header("Connection", "close")
                self.end_headers()

            def _send_denied(self, action: str) -> None:
                """The refusal AWS gives: EC2's <Response><Errors> or the query <ErrorResponse>."""
                scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/",
                                  self.headers.get("Authorization", ""))  # fmt: skip
                service = scope.group(1) if scope else "ec2"
                who = "arn:aws:iam::123456789012:user/responder"
                if service == "ec2":
                    message = f"You are not authorized to perform this operation. User: {who}"
                    body = (
                        "<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error>"
                        f"<Code>UnauthorizedOperation</Code><Message>{message}</Message>"
                        "</Error></Errors><RequestID>denied-by-test</RequestID></Response>"
                    )
                else:
                    message = f"User: {who} is not authorized to perform: {service}:{action}"
                    body = (
                        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                        f"<Message>{message}</Message></Error>"
                        "<RequestId>denied-by-test</RequestId></ErrorResponse>"
                    )
                data = body.encode()
                self._send_head(403, [("Content-Type", "text/xml")], len(data))
                self.wfile.write(data)

            def _send(self, status: int, error_type: str, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
                self._send_head(status, headers, len(data))
                self.wfile.write(data)

        return Handler


def _query_action(payload: bytes | None) -> str | None:
    """The Action of a query-protocol request (form-encoded POST body), if it is one."""
    if not payload or b"Action=" not in payload:
        return None
    try:
        return parse_qs(payload.decode())["Action"][0]
    except (UnicodeDecodeError, KeyError, IndexError):
        return None


HOP_HEADERS = {"content-length", "connection", "transfer-encoding", "server", "date"}
ERRORS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "throttle": (400, "ThrottlingException", {"message": "Rate exceeded"}),
    "unavailable": (503, "ServiceUnavailable", {"message": "Service unavailable"}),
    "deny": (
        403,
        "AccessDeniedException",
        {"message": "User is not authorized", "Reason": "UNAUTHORIZED_ACCOUNT"},
    ),
    "kms-deny": (
        403,
        "AccessDeniedException",
        {"message": "Access denied to the KMS key", "Reason": "DEPENDENCY_ACCESS_DENIED"},
    ),
}
