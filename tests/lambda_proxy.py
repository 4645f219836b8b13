"""An HTTP proxy between boto3 and moto's Lambda that serves what moto cannot.

moto's GetFunction names a code location on amazonaws.com (no network here) and its
GetLayerVersion says `s3://`; it never pages ListFunctions and never lies about a
hash. The proxy forwards everything to moto and, for the requests a test set up:

- rewrites the code location in GetFunction / GetLayerVersion answers to a URL on
  itself, where it serves the package bytes the test registered (`packages`);
- serves other bytes than the package for a name in `tampered` (a hash mismatch);
- pages ListFunctions `list_page` functions at a time with NextMarker;
- refuses requests whose path ends with a suffix in `denied` (`/policy`: GetPolicy) as
  AWS refuses a caller without the permission (moto enforces none);
- answers GetFunctionUrlConfig with a `Qualifier` from `alias_urls` (or
  ResourceNotFound, as AWS does for an alias without a URL): moto 5 ignores the
  Qualifier of every function URL call (CreateFunctionUrlConfig with one makes the
  function's own URL, GetFunctionUrlConfig with one answers it);
- answers GetPolicy with a `Qualifier` from `qualified_policies` when a test sets it (or
  ResourceNotFound): moto keeps one policy per function, which AddPermission with a
  Qualifier adds to (the statement's Resource qualified) and GetPolicy answers for any
  qualifier that exists, where AWS keeps one per alias and version. Left None, the
  request goes to moto.
"""

from __future__ import annotations

import http.client
import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.local_proxy import LocalProxy

FUNCTION_PATH = "/2015-03-31/functions/"
URL_PATH = "/2021-10-31/functions/"
LAYER_PATH = "/2018-10-31/layers"


class LambdaProxy(LocalProxy):
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.packages: dict[str, bytes] = {}  # function name or layer version ARN -> zip
        self.tampered: dict[str, bytes] = {}  # served instead of the package
        self.list_page: int | None = None
        self.denied: set[str] = set()
        self.alias_urls: dict[tuple[str, str], dict[str, Any]] = {}  # (function, alias)
        self.qualified_policies: dict[tuple[str, str], dict[str, Any]] | None = None
        self.qualified_requests: list[tuple[str, str, str]] = []  # (what, function, q)
        self.list_requests = 0
        super().__init__(self._handler())

    def rewrite(self, path: str, query: dict[str, list[str]], body: bytes) -> bytes:
        """moto's answer, changed where the test asked."""
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if path.startswith(FUNCTION_PATH) and path.count("/") == 3 and "Code" in doc:
            name = unquote(path.rsplit("/", 1)[1])
            if name in self.packages:
                doc["Code"]["Location"] = f"{self.url}/package/{quote(name, safe='')}"
        elif path.startswith(LAYER_PATH + "/") and "/versions/" in path:
            arn = doc.get("LayerVersionArn", "")
            if arn in self.packages:
                doc["Content"]["Location"] = f"{self.url}/package/{quote(arn, safe='')}"
        elif path == FUNCTION_PATH.rstrip("/") and self.list_page:
            self.list_requests += 1
            functions = sorted(doc.get("Functions", []), key=lambda f: f["FunctionName"])
            start = int(query.get("Marker", ["0"])[0])
            doc["Functions"] = functions[start : start + self.list_page]
            if start + self.list_page < len(functions):
                doc["NextMarker"] = str(start + self.list_page)
        return json.dumps(doc).encode()

    def qualified(
        self, method: str, path: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes] | None:
        """The answer to a qualified GetFunctionUrlConfig or GetPolicy this proxy gives
        itself (see the module's docstring); None to forward the request to moto."""
        qualifier = query.get("Qualifier", [None])[0]
        if method != "GET" or qualifier is None:
            return None
        if path.startswith(URL_PATH) and path.endswith("/url"):
            what, table = "url", self.alias_urls
        elif path.startswith(FUNCTION_PATH) and path.endswith("/policy"):
            if self.qualified_policies is None:
                return None
            what, table = "policy", self.qualified_policies
        else:
            return None
        function = unquote(path.split("/")[3])
        self.qualified_requests.append((what, function, qualifier))
        json_type = {"Content-Type": "application/json"}
        if (function, qualifier) in table:
            return 200, json_type, json.dumps(table[function, qualifier]).encode()
        missing = json.dumps({"Message": f"The resource you requested does not exist. "
                                         f"(Qualifier {qualifier})"}).encode()  # fmt: skip
        return 404, {**json_type, "x-amzn-ErrorType": "ResourceNotFoundException"}, missing

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _forward(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.startswith("/package/"):
                    key = unquote(parts.path[len("/package/") :])
                    data = proxy.tampered.get(key, proxy.packages.get(key, b""))
                    self.send_response(200 if key in proxy.packages else 404)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if any(parts.path.endswith(suffix) for suffix in proxy.denied):
                    refusal = json.dumps({"Message": "User is not authorized"}).encode()
                    self.send_response(403)
                    self.send_header("x-amzn-ErrorType", "AccessDeniedException")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(refusal)))
                    self.end_headers()
                    self.wfile.write(refusal)
                    return
                answer_of = proxy.qualified(self.command, parts.path, parse_qs(parts.query))
                if answer_of is not None:
                    status, headers, data = answer_of
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                if self.command == "GET" and answer.status == 200:
                    data = proxy.rewrite(parts.path, parse_qs(parts.query), data)
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "server", "date"):  # fmt: skip
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        return Handler
