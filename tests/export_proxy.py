"""An HTTP proxy between boto3 and moto that makes moto's CloudWatch Logs export tasks
look like AWS's.

moto 5 runs CreateExportTask at once and writes the events to the bucket itself, but not
where AWS does: each stream under a fresh random folder (`PREFIX/<uuid>/<stream with / as
->/000000.gz`, not `PREFIX/<taskId>/<stream>/000000.gz`), the permission check object at
the bucket's top (not `PREFIX/aws-logs-write-test`), and times in the server's local
time. After moto answers a CreateExportTask the proxy moves what moto wrote to AWS's
keys, its own bytes with each line's time put in UTC; that is the only change made to
moto's export. For the tests it also:

- answers DescribeExportTasks with RUNNING `running` times before moto's COMPLETED, and
  with `final` (FAILED, CANCELLED) instead of it for the tasks created while it is set;
- refuses CreateExportTask with LimitExceededException while `limit_exceeded` is set, or
  with AccessDeniedException while `denied` is;
- counts the CloudWatch Logs actions it forwarded (`calls`).
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import boto3

from tests.local_proxy import LocalProxy

TARGET = "Logs_20140328."
WRITE_TEST = "aws-logs-write-test"
MOTO_TIME = "%Y-%m-%dT%H:%M:%S.000Z"


class ExportProxy(LocalProxy):
    def __init__(self, upstream: str) -> None:
        self.upstream_url = upstream
        self.upstream = urlsplit(upstream)
        self.running = 0  # DescribeExportTasks answers that say RUNNING before the real one
        self.final: str | None = None  # FAILED or CANCELLED instead of COMPLETED
        self.limit_exceeded = False
        self.denied = False
        self.calls: Counter[str] = Counter()
        self.tasks: set[str] = set()
        self.ended: dict[str, str] = {}  # tasks created while `final` was set, and how
        self._lock = threading.Lock()
        super().__init__(self._handler())

    # -- what AWS would have written ---------------------------------------------------
    def relayout(self, request: dict[str, Any], task_id: str) -> None:
        """Move the objects moto's export just wrote to the keys AWS writes."""
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=self.upstream_url)
        logs = boto3.client("logs", region_name="us-east-1", endpoint_url=self.upstream_url)
        bucket, prefix = request["destination"], request.get("destinationPrefix", "exportedlogs")
        streams = {
            s["logStreamName"].replace("/", "-"): s["logStreamName"]
            for page in logs.get_paginator("describe_log_streams").paginate(
                logGroupName=request["logGroupName"]
            )
            for s in page["logStreams"]
        }
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
        for obj in listed:
            folder, _, rest = obj["Key"][len(prefix) + 1 :].partition("/")
            if folder in self.tasks or folder == task_id or not rest.endswith("/000000.gz"):
                continue
            stream = streams.get(rest.rsplit("/", 1)[0], rest.rsplit("/", 1)[0])
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
            if gzip.decompress(body):  # a stream without events in the window: no file
                key = f"{prefix}/{task_id}/{stream}/000000.gz"
                s3.put_object(Bucket=bucket, Key=key, Body=_in_utc(body))
        test = s3.get_object(Bucket=bucket, Key=WRITE_TEST)["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{WRITE_TEST}", Body=test)
        s3.delete_object(Bucket=bucket, Key=WRITE_TEST)
        self.tasks.add(task_id)
        if self.final:
            self.ended[task_id] = self.final

    def describe(self, body: bytes) -> bytes:
        answer = json.loads(body)
        for task in answer.get("exportTasks", []):
            with self._lock:
                if self.running > 0:
                    self.running -= 1
                    task["status"] = {"code": "RUNNING", "message": "Task is running"}
                elif task.get("taskId") in self.ended:
                    final = self.ended[task["taskId"]]
                    task["status"] = {"code": final, "message": f"Task is {final}"}
        return json.dumps(answer).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "server", "date"):  # fmt: skip
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self, error: str, message: str) -> None:
                data = json.dumps({"__type": error, "message": message}).encode()
                self._reply(400, [("Content-Type", "application/x-amz-json-1.1")], data)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                target = self.headers.get("X-Amz-Target", "")
                action = target[len(TARGET) :] if target.startswith(TARGET) else None
                if action:
                    proxy.calls[action] += 1
                if action == "CreateExportTask" and proxy.limit_exceeded:
                    self._refuse("LimitExceededException", "Resource limit exceeded.")
                    return
                if action == "CreateExportTask" and proxy.denied:
                    self._refuse(
                        "AccessDeniedException",
                        "User: arn:aws:iam::123456789012:user/responder is not authorized "
                        "to perform: logs:CreateExportTask",
                    )
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if answer.status == 200 and action == "CreateExportTask":
                    proxy.relayout(json.loads(body or b"{}"), json.loads(data)["taskId"])
                if answer.status == 200 and action == "DescribeExportTasks":
                    data = proxy.describe(data)
                self._reply(answer.status, answer.getheaders(), data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        return Handler


def _in_utc(body: bytes) -> bytes:
    """moto's export lines with the time moto wrote in local time put in UTC, as AWS
    writes it."""
    lines = []
    for line in gzip.decompress(body).decode().split("\n"):
        stamp, space, message = line.partition(" ")
        if space:
            moment = datetime.strptime(stamp, MOTO_TIME).astimezone(UTC)
            line = f"{moment:%Y-%m-%dT%H:%M:%S}.000Z {message}"
        lines.append(line)
    return gzip.compress("\n".join(lines).encode())
