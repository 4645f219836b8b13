"""`capture cloudtrail` from S3, against a moto server over HTTP."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloudir.aws import Aws, AwsOptions
from cloudir.capture import cloudtrail
from cloudir.case import Case
from cloudir.timewindow import Window
from tests.conftest import boto_client, cloudir, ct_event, custody, query, records_gz

ORG = "o-abcdef1234"
A1, A2 = "111111111111", "222222222222"


def log_key(prefix: str, account: str, region: str, stamp: str, org: str | None = ORG) -> str:
    day = f"{stamp[0:4]}/{stamp[4:6]}/{stamp[6:8]}"
    root = f"{prefix}/AWSLogs/" + (f"{org}/" if org else "")
    return (
        f"{root}{account}/CloudTrail/{region}/{day}/"
        f"{account}_CloudTrail_{region}_{stamp}Z_{uuid.uuid4().hex[:16]}.json.gz"
    )


def event_time(stamp: str) -> str:
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:00Z"


@pytest.fixture
def org_bucket(moto_url: str) -> dict[str, Any]:
    """An organization trail bucket: two accounts, two regions, digests, old files."""
    s3 = boto_client(moto_url, "s3")
    bucket = f"trail-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    wanted: list[str] = []
    layout = [
        (A1, "us-east-1", "20240730T1200", True),
        (A1, "us-east-1", "20240731T0905", True),
        (A1, "us-east-1", "20240801T0005", True),  # next day, within delivery slack
        (A1, "eu-west-1", "20240730T1300", True),
        (A2, "us-east-1", "20240731T1000", True),
        (A1, "us-east-1", "20240720T1200", False),  # long before the window
        (A1, "us-east-1", "20240805T1200", False),  # long after it
    ]
    for account, region, stamp, inside in layout:
        key = log_key("corp", account, region, stamp)
        when = event_time(stamp)
        s3.put_object(Bucket=bucket, Key=key, Body=records_gz([ct_event(when), ct_event(when)]))
        if inside:
            wanted.append(key)
    digest = (
        f"corp/AWSLogs/{ORG}/{A1}/CloudTrail-Digest/us-east-1/2024/07/31/"
        f"{A1}_CloudTrail-Digest_us-east-1_trail_us-east-1_20240731T1000Z.json.gz"
    )
    s3.put_object(Bucket=bucket, Key=digest, Body=records_gz([]))
    return {"bucket": bucket, "wanted": wanted, "s3": s3}


WINDOW = ["--start", "2024-07-30T00:00:00Z", "--end", "2024-07-31T23:59:59Z"]


def capture(case: Path, moto_url: str, *args: str) -> Any:
    return cloudir("capture", "cloudtrail", "--case", str(case), "--endpoint-url", moto_url, *args)


def captured_keys(case: Path) -> list[str]:
    return [e["source"]["key"] for e in custody(case) if e["action"] == "capture"]


def test_captures_exactly_the_window_across_accounts_and_regions(
    org_bucket: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    result = capture(case, moto_url, "--bucket", org_bucket["bucket"], "--prefix", "corp", *WINDOW)
    assert result.code == 0, result.stderr
    assert sorted(captured_keys(case)) == sorted(org_bucket["wanted"])
    items = sorted(p.name for p in (case / "evidence").iterdir())
    assert items == [
        f"cloudtrail-{A1}-eu-west-1-20240730",
        f"cloudtrail-{A1}-us-east-1-20240730",
        f"cloudtrail-{A2}-us-east-1-20240730",
    ]
    meta = json.loads((case / "evidence" / items[1] / "meta.json").read_text())
    assert meta["source"]["organization"] == ORG
    assert meta["source"]["account"] == A1


def test_custody_holds_key_etag_version_and_hash(
    org_bucket: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    bucket = org_bucket["bucket"]
    assert capture(case, moto_url, "--bucket", bucket, "--prefix", "corp", *WINDOW).code == 0
    entries = [e for e in custody(case) if e["action"] == "capture"]
    for entry in entries:
        source = entry["source"]
        obj = org_bucket["s3"].get_object(Bucket=bucket, Key=source["key"])
        body = obj["Body"].read()
        [record] = entry["files"]
        assert record["sha256"] == hashlib.sha256(body).hexdigest()
        assert record["bytes"] == source["size"] == len(body)
        assert source["etag"] == obj["ETag"].strip('"')
        assert source["version_id"] == obj["VersionId"]
        assert (case / record["path"]).read_bytes() == body
    identity = next(e for e in custody(case) if e["action"] == "caller-identity")
    assert identity["source"]["Arn"].startswith("arn:aws:")
    assert entries[0]["actor"] == identity["source"]["Arn"]


def test_account_and_region_filters(
    org_bucket: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    result = capture(
        case,
        moto_url,
        "--bucket",
        org_bucket["bucket"],
        "--prefix",
        "corp",
        "--account",
        A1,
        "--region",
        "eu-west-1",
        *WINDOW,
    )
    assert result.code == 0, result.stderr
    keys = captured_keys(case)
    assert len(keys) == 1
    assert f"/{A1}/CloudTrail/eu-west-1/" in keys[0]


def test_lists_only_the_day_folders_the_window_needs(
    org_bucket: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url=moto_url))
    listed: list[dict[str, Any]] = []
    aws.session.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(dict(params))
    )
    case = Case.create(tmp_path / "case")
    window = Window.parse("2024-07-31T00:00:00Z", "2024-07-31T12:00:00Z")
    cloudtrail.capture_s3(
        case, aws, org_bucket["bucket"], "corp", [A1], ["us-east-1"], window, 4, {}, print
    )
    day_listings = [p["Prefix"] for p in listed if "Delimiter" not in p]
    assert day_listings == [  # 15 minutes before the window, 12 hours of delivery after it
        f"corp/AWSLogs/{ORG}/{A1}/CloudTrail/us-east-1/2024/07/30/",
        f"corp/AWSLogs/{ORG}/{A1}/CloudTrail/us-east-1/2024/07/31/",
        f"corp/AWSLogs/{ORG}/{A1}/CloudTrail/us-east-1/2024/08/01/",
    ]
    assert all(p["Prefix"].startswith("corp/AWSLogs/") for p in listed)


def test_trail_name_resolves_bucket_and_prefix(moto_url: str, tmp_path: Path) -> None:
    s3 = boto_client(moto_url, "s3")
    bucket = f"named-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    key = log_key("team", A1, "us-east-1", "20240731T0905", org=None)
    s3.put_object(Bucket=bucket, Key=key, Body=records_gz([ct_event("2024-07-31T09:01:00Z")]))
    trail = f"trail-{uuid.uuid4().hex[:8]}"
    boto_client(moto_url, "cloudtrail").create_trail(
        Name=trail, S3BucketName=bucket, S3KeyPrefix="team"
    )
    case = tmp_path / "case"
    result = capture(case, moto_url, "--trail", trail, *WINDOW, "--json")
    assert result.code == 0, result.stderr
    assert captured_keys(case) == [key]
    assert result.json()["items"][0]["captured"] == 1


def test_rerun_skips_what_is_held_and_refetches_what_is_gone(
    org_bucket: dict[str, Any], moto_url: str, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    args = ["--bucket", org_bucket["bucket"], "--prefix", "corp", *WINDOW, "--json"]
    assert capture(case, moto_url, *args).code == 0
    lost = next(case.glob("evidence/*/logs/**/*.json.gz"))
    lost.unlink()
    items_before = sorted(p.name for p in (case / "evidence").iterdir())
    # a day later the same relative window starts elsewhere: it must resume, not fork
    wider = ["--bucket", org_bucket["bucket"], "--prefix", "corp", "--start", "2024-07-29"]
    result = capture(case, moto_url, *wider, "--end", "2024-07-31T23:59:59Z", "--json")
    assert result.code == 0, result.stderr
    items = result.json()["items"]
    assert sum(i["captured"] for i in items) == 1
    assert sum(i["skipped"] for i in items) == len(org_bucket["wanted"]) - 1
    assert sorted(p.name for p in (case / "evidence").iterdir()) == items_before
    assert cloudir("verify", "--case", str(case)).code == 0


def test_resumes_after_the_capture_is_killed(moto_url: str, tmp_path: Path) -> None:
    s3 = boto_client(moto_url, "s3")
    bucket = f"big-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    keys = []
    for n in range(300):
        stamp = f"20240731T{n // 60:02d}{n % 60:02d}"
        keys.append(log_key("x", A1, "us-east-1", stamp, org=None))
        s3.put_object(Bucket=bucket, Key=keys[-1], Body=records_gz([ct_event(event_time(stamp))]))
    case = tmp_path / "case"
    argv = [
        sys.executable,
        "-m",
        "cloudir",
        "capture",
        "cloudtrail",
        "--case",
        str(case),
        "--endpoint-url",
        moto_url,
        "--bucket",
        bucket,
        "--prefix",
        "x",
        "--workers",
        "1",
        *WINDOW,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    custody_log = case / "custody.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if custody_log.exists() and custody_log.read_text().count('"action": "capture"') >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = set(captured_keys(case))
    assert 3 <= len(first) < 300, "the first run must have been cut off mid-way"

    result = capture(case, moto_url, "--bucket", bucket, "--prefix", "x", *WINDOW, "--json")
    assert result.code == 0, result.stderr
    [item] = result.json()["items"]
    assert item["skipped"] >= len(first)
    assert item["skipped"] + item["captured"] == 300
    assert sorted(set(captured_keys(case))) == sorted(keys)
    assert cloudir("verify", "--case", str(case)).code == 0
    timeline = cloudir("timeline", "--case", str(case))
    assert timeline.code == 0, timeline.stderr
    assert query(case, "SELECT count(*) AS n FROM timeline") == [{"n": 300}]


def test_missing_bucket_is_a_cloud_error_in_one_line(moto_url: str, tmp_path: Path) -> None:
    result = capture(tmp_path / "case", moto_url, "--bucket", "no-such-bucket-here", *WINDOW)
    assert result.code == 4
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: s3:ListObjectsV2")
    assert "NoSuchBucket" in lines[-1]
    assert "Traceback" not in result.stderr


def test_a_source_is_required(tmp_path: Path) -> None:
    result = cloudir("capture", "cloudtrail", "--case", str(tmp_path / "c"))
    assert result.code == 2
    assert "--bucket, --trail or --lookup" in result.stderr
