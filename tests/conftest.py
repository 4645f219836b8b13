"""Shared fixtures: the real AWS emulator over HTTP, the corpus, the CLI as a user runs it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.guardduty_server import guardduty_server  # noqa: F401 - a fixture for every test
from tests.spark_session import spark, spark_case  # noqa: F401 - fixtures for every test

REPO = Path(__file__).resolve().parent.parent
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials() -> Iterator[None]:
    """No test may ever reach a real account: credentials are fake, profiles are ignored."""
    saved = {k: os.environ.get(k) for k in [*FAKE_AWS_ENV, "AWS_PROFILE", "AWS_ENDPOINT_URL"]}
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server over HTTP: CI's (CLOUDIR_MOTO_URL) or one started for this session."""
    external = os.environ.get("CLOUDIR_MOTO_URL")
    if external:
        yield external.rstrip("/")
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def boto_client(moto_url: str, service: str, region: str = "us-east-1") -> Any:
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=moto_url)


CORPUS_COPY = REPO / "tests" / "data" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Third-party evidence the tests use, kept in the repository with each set's LICENSE
    and SOURCE.txt (tests/data/corpus/README.md), so a fresh clone tests fully."""
    assert (CORPUS_COPY / "cloudtrail").is_dir(), f"{CORPUS_COPY} is missing from the checkout"
    return CORPUS_COPY


@pytest.fixture(scope="session")
def external_corpus() -> Path:
    """Sets whose licence keeps them out of the repository (loghub: research use only),
    read in place from the folder CLOUDIR_CORPUS names."""
    named = os.environ.get("CLOUDIR_CORPUS", "")
    path = Path(named)
    if not named or not (path / "linux" / "loghub").is_dir():
        why = (
            f"no linux/loghub in CLOUDIR_CORPUS={named}"
            if named
            else "CLOUDIR_CORPUS is not set (loghub's research-only logs are not in the repository)"
        )
        if os.environ.get("CLOUDIR_REQUIRE_CORPUS") == "1":
            pytest.fail(f"CLOUDIR_REQUIRE_CORPUS=1 but {why}")
        pytest.skip(why)
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cloudir(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> Result:
    """Run the CLI in a child process, exactly as a responder or a CI job would."""
    full_env = dict(os.environ, COLUMNS="200", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "cloudir", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def custody(case: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]


def query(case: Path, sql: str) -> list[dict[str, Any]]:
    result = cloudir("query", "--case", str(case), sql, "--json")
    assert result.code == 0, result.stderr
    return result.json()


def ct_event(when: str, name: str = "ListBuckets", **extra: Any) -> dict[str, Any]:
    """A CloudTrail record shaped like AWS's, with a fresh eventID."""
    event = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDATEST",
            "arn": "arn:aws:iam::111111111111:user/alice",
            "accountId": "111111111111",
            "accessKeyId": "AKIATESTKEY",
            "userName": "alice",
        },
        "eventTime": when,
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2",
        "requestParameters": None,
        "responseElements": None,
        "eventID": str(uuid.uuid4()),
        "recipientAccountId": "111111111111",
    }
    event.update(extra)
    return event


def records_gz(events: list[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps({"Records": events}).encode())


def ext4_image(root: Path, image: Path, size: str) -> Path:
    """`root` as an ext4 image made by `mkfs.ext4 -d`; the test skips, saying why, where
    e2fsprogs is missing or too old to populate an image."""
    import shutil

    mkfs = shutil.which("mkfs.ext4") or next(
        (p for p in ("/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4") if os.access(p, os.X_OK)), None
    )
    if mkfs is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) not installed; it builds the ext4 test image")
    made = subprocess.run(
        [mkfs, "-q", "-F", "-d", str(root), str(image), size],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0 and "-d" in made.stderr:
        pytest.skip(f"this mkfs.ext4 cannot populate an image (-d): {made.stderr.strip()}")
    assert made.returncode == 0, made.stderr
    return image
