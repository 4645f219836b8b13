"""Evidence that stays in S3 (`capture cloudtrail --manifest`): pinned versions, read exactly.

Against moto's server over HTTP with versioned and unversioned buckets. Invariants: the
case holds a manifest, not copies, hashed into custody; the timeline of a pinned case has
the rows of a copied case of the same objects; a version that is gone or answers other
bytes is a named evidence problem (`--strict` exits 3), never rows from other bytes; logs
rewritten or deleted after delivery are pinned in every version and named.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudir.s3_manifest import (
    CHANGED,
    PinnedObject,
    PinnedReadError,
    manifest_bytes,
    read_manifest,
    read_pinned,
)
from tests.conftest import boto_client, cloudir, custody, query, records_gz

ACCOUNT = "222233334444"
REGION_PREFIX = f"t/AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2024/07/31/"
WINDOW = ["--start", "2024-07-31T00:00:00Z", "--end", "2024-07-31T23:59:59Z"]
COLUMNS = "timestamp, source, artifact, user, src_ip, action, target, outcome, event_id, raw"


def _event(n: int, tag: str = "") -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "eventID": f"00000000-0000-0000-0000-{n:012d}",
        "eventTime": f"2024-07-31T09:{n % 60:02d}:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateAccessKey",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": f"aws-cli/2.15 {tag}",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/u{n}"},
        "recipientAccountId": ACCOUNT,
    }


def _log_key(n: int) -> str:
    return f"{REGION_PREFIX}{ACCOUNT}_CloudTrail_us-east-1_20240731T09{n:02d}Z_{n:016x}.json.gz"


def _bucket(moto_url: str, versioned: bool = True) -> tuple[Any, str]:
    s3 = boto_client(moto_url, "s3")
    bucket = f"pin-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3, bucket


def _deliver(s3: Any, bucket: str, files: int = 3, per_file: int = 4) -> dict[str, str]:
    """`files` log objects; returns each key's VersionId."""
    versions = {}
    for f in range(files):
        events = [_event(f * 100 + e) for e in range(per_file)]
        resp = s3.put_object(Bucket=bucket, Key=_log_key(f), Body=records_gz(events))
        versions[_log_key(f)] = resp.get("VersionId", "null")
    return versions


def _capture(case: Path, moto_url: str, bucket: str, *extra: str) -> Any:
    return cloudir(
        "capture", "cloudtrail", "--case", str(case), "--endpoint-url", moto_url,
        "--bucket", bucket, "--prefix", "t", *WINDOW, "--json", *extra,
    )  # fmt: skip


def _timeline(case: Path, moto_url: str, *extra: str) -> Any:
    return cloudir("timeline", "--case", str(case), "--endpoint-url", moto_url, *extra)


def _manifest_entries(case: Path) -> list[dict[str, Any]]:
    found = sorted((case / "evidence").rglob("*.s3-manifest.jsonl"))
    return [json.loads(line) for path in found for line in path.read_text().splitlines()]


def _errors(case: Path) -> list[dict[str, Any]]:
    text = (case / "timeline" / "errors.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _rows(case: Path) -> list[dict[str, Any]]:
    return query(case, f"SELECT {COLUMNS} FROM timeline ORDER BY event_id, raw")


def test_a_manifest_pins_every_object_and_the_timeline_reads_what_a_copy_reads(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url)
    versions = _deliver(s3, bucket)
    pinned, copied = tmp_path / "pinned", tmp_path / "copied"

    run = _capture(pinned, moto_url, bucket, "--manifest")
    assert run.code == 0, run.stderr
    [item] = json.loads(run.stdout)["items"]
    assert (item["captured"], item["skipped"], item["failed"]) == (3, 0, [])
    entries = _manifest_entries(pinned)
    assert {(e["key"], e["version_id"]) for e in entries} == set(versions.items())
    heads = {k: s3.head_object(Bucket=bucket, Key=k) for k in versions}
    for e in entries:
        assert e["etag"] == heads[e["key"]]["ETag"].strip('"')
        assert e["size"] == heads[e["key"]]["ContentLength"]
        assert (e["bucket"], e["region"]) == (bucket, "us-east-1")
    held = [p for p in (pinned / "evidence").rglob("*") if p.is_file() and p.name != "meta.json"]
    assert [p.name.endswith(".s3-manifest.jsonl") for p in held] == [True], "no object copied"
    [entry] = [e for e in custody(pinned) if e["action"] == "capture"]
    assert entry["source"]["type"] == "s3-manifest"
    assert entry["source"]["objects"] == 3
    assert cloudir("verify", "--case", str(pinned)).code == 0

    assert _capture(copied, moto_url, bucket).code == 0
    built = _timeline(pinned, moto_url, "--strict", "--json")
    assert built.code == 0, built.stderr
    assert json.loads(built.stdout)["rows"] == 12
    assert _timeline(copied, moto_url).code == 0
    assert _rows(pinned) == _rows(copied)


def test_a_version_rewritten_after_capture_still_reads_as_pinned(
    moto_url: str, tmp_path: Path
) -> None:
    """Versioning keeps the delivered bytes: an intruder's overwrite changes nothing read."""
    s3, bucket = _bucket(moto_url)
    _deliver(s3, bucket, files=1)
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    s3.put_object(Bucket=bucket, Key=_log_key(0), Body=records_gz([_event(999, "forged")]))

    built = _timeline(case, moto_url, "--strict", "--json")
    assert built.code == 0, built.stderr
    ids = [r["event_id"] for r in query(case, "SELECT event_id FROM timeline ORDER BY 1")]
    assert len(ids) == 4
    assert not any(id.endswith("999") for id in ids)


def test_a_deleted_version_is_a_named_missing_problem_and_strict_exits_3(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url)
    versions = _deliver(s3, bucket)
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    gone = _log_key(1)
    s3.delete_object(Bucket=bucket, Key=gone, VersionId=versions[gone])

    built = _timeline(case, moto_url, "--strict", "--json")
    assert built.code == 3
    assert "Traceback" not in built.stderr
    assert json.loads(built.stdout)["rows"] == 8, "the other objects' rows are all there"
    [error] = _errors(case)
    assert error["kind"] == "missing"
    assert error["path"] == f"s3://{bucket}/{gone}?versionId={versions[gone]}"
    summary = json.loads((case / "timeline" / "summary.json").read_text())
    assert [p["kind"] for p in summary["evidence_problems"]] == ["missing"]


def test_an_unversioned_bucket_warns_and_an_overwrite_is_a_changed_problem(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url, versioned=False)
    _deliver(s3, bucket, files=2)
    case = tmp_path / "case"
    run = _capture(case, moto_url, bucket, "--manifest")
    assert run.code == 0, run.stderr
    assert f"versioning is off on s3://{bucket}" in run.stderr
    assert {e["version_id"] for e in _manifest_entries(case)} == {"null"}
    assert _timeline(case, moto_url, "--strict").code == 0

    s3.put_object(Bucket=bucket, Key=_log_key(0), Body=records_gz([_event(999, "forged")]))
    built = _timeline(case, moto_url, "--strict", "--json")
    assert built.code == 3
    [error] = _errors(case)
    assert error["kind"] == "changed"
    assert "overwritten" in error["reason"]
    ids = [r["event_id"] for r in query(case, "SELECT event_id FROM timeline")]
    assert len(ids) == 4 and not any(id.endswith("999") for id in ids), "never the new bytes"


def test_an_unversioned_bucket_with_nothing_in_the_window_still_names_the_bucket(
    moto_url: str, tmp_path: Path
) -> None:
    """The versioning note names the bucket captured from, not the first object listed:
    a window that lists no object still says which bucket (it once said `s3://?`)."""
    s3, bucket = _bucket(moto_url, versioned=False)
    _deliver(s3, bucket, files=1)  # on 2024-07-31: the account's region folder exists
    case = tmp_path / "case"
    run = cloudir(
        "capture", "cloudtrail", "--case", str(case), "--endpoint-url", moto_url,
        "--bucket", bucket, "--prefix", "t", "--manifest", "--json",
        "--start", "2024-08-01T00:00:00Z", "--end", "2024-08-01T23:59:59Z",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    [item] = json.loads(run.stdout)["items"]
    assert (item["listed"], item["captured"]) == (0, 0)
    assert f"in S3: versioning off on s3://{bucket}: pinned by ETag only" in run.stderr
    assert "s3://?" not in run.stderr


def test_logs_rewritten_or_deleted_before_capture_are_pinned_in_every_version_and_named(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url)
    _deliver(s3, bucket, files=2, per_file=1)
    forged = _event(0, "forged")  # the same eventID with other content: tampering
    s3.put_object(Bucket=bucket, Key=_log_key(0), Body=records_gz([forged]))
    s3.delete_object(Bucket=bucket, Key=_log_key(1))  # a delete marker; the version stays
    case = tmp_path / "case"

    run = _capture(case, moto_url, bucket, "--manifest")
    assert run.code == 0, run.stderr
    assert len(_manifest_entries(case)) == 3
    assert f"in S3: {_log_key(0)}: rewritten after delivery: 2 versions, all pinned" in run.stderr
    assert f"in S3: {_log_key(1)}: deleted (delete marker at" in run.stderr
    built = _timeline(case, moto_url, "--strict", "--json")
    summary = json.loads(built.stdout)
    assert summary["conflicting_copies"]["events"] == 1, "both versions read: they disagree"
    assert summary["rows"] == 3


def test_a_second_capture_pins_only_what_is_new(moto_url: str, tmp_path: Path) -> None:
    s3, bucket = _bucket(moto_url)
    _deliver(s3, bucket, files=2)
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    again = json.loads(_capture(case, moto_url, bucket, "--manifest").stdout)["items"][0]
    assert (again["captured"], again["skipped"]) == (0, 2)
    s3.put_object(Bucket=bucket, Key=_log_key(7), Body=records_gz([_event(700)]))
    third = json.loads(_capture(case, moto_url, bucket, "--manifest").stdout)["items"][0]
    assert (third["captured"], third["skipped"]) == (1, 2)
    assert len(list((case / "evidence").rglob("*.s3-manifest.jsonl"))) == 2
    assert json.loads(_timeline(case, moto_url, "--json").stdout)["rows"] == 9


def test_a_manifest_and_a_copy_of_one_folder_are_two_items(moto_url: str, tmp_path: Path) -> None:
    s3, bucket = _bucket(moto_url)
    _deliver(s3, bucket, files=1)
    case = tmp_path / "case"
    copy = json.loads(_capture(case, moto_url, bucket).stdout)["items"][0]
    pin = json.loads(_capture(case, moto_url, bucket, "--manifest").stdout)["items"][0]
    assert copy["evidence_id"] != pin["evidence_id"]
    assert pin["evidence_id"].endswith("-manifest")
    assert pin["captured"] == 1


def test_manifest_without_a_bucket_is_a_usage_error(tmp_path: Path) -> None:
    run = cloudir("capture", "cloudtrail", "--case", str(tmp_path / "c"), "--lookup", "--manifest")
    assert run.code == 2
    assert "--manifest pins a trail bucket's objects" in run.stderr


def test_hostile_manifest_lines_are_skips_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "m.s3-manifest.jsonl"
    good = PinnedObject("b", "k", "v1", "e" * 32, 10)
    path.write_bytes(
        manifest_bytes([good]) + b"{not json\n" + b'{"bucket": "b", "key": "k"}\n' + b"[1]\n"
    )
    pinned, bad = read_manifest(path)
    assert pinned == [good]
    assert [line for line, _ in bad] == [2, 3, 4]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.one_of(st.none(), st.integers(), st.text())))
def test_any_json_object_is_a_pinned_object_or_a_value_error(entry: dict[str, Any]) -> None:
    try:
        pinned = PinnedObject.from_dict(entry)
    except ValueError:
        return
    assert PinnedObject.from_dict(pinned.as_dict()) == pinned


@settings(max_examples=50, deadline=None)
@given(
    key=st.text(min_size=1, max_size=40),
    version=st.text(min_size=1, max_size=20),
    size=st.integers(min_value=0, max_value=1 << 40),
)
def test_manifest_lines_round_trip_any_key(key: str, version: str, size: int) -> None:
    obj = PinnedObject("bucket", key, version, "etag", size, "2024-07-31T09:00:00Z", "eu-west-1")
    [line] = manifest_bytes([obj]).splitlines()
    assert PinnedObject.from_dict(json.loads(line)) == obj


def _stubbed_read(pinned: PinnedObject, body: bytes, etag: str, version: str) -> PinnedReadError:
    """read_pinned against a stubbed answer: moto cannot answer other bytes than it holds."""
    import io

    import boto3
    from botocore.response import StreamingBody

    client = boto3.client("s3", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response(
            "get_object",
            {
                "Body": StreamingBody(io.BytesIO(body), len(body)),
                "ETag": f'"{etag}"',
                "VersionId": version,
                "ContentLength": len(body),
            },
            {
                "Bucket": pinned.bucket,
                "Key": pinned.key,
                "VersionId": pinned.version_id,
                "IfMatch": f'"{pinned.etag}"',
            },
        )
        with pytest.raises(PinnedReadError) as raised:
            read_pinned(pinned, client=client)
    return raised.value


@pytest.mark.parametrize(
    ("body", "etag", "version", "said"),
    [
        (b"short", "e1", "v1", "answered 5 bytes; the manifest pins 10"),
        (b"padded to more", "e1", "v1", "answered 14+ bytes"),
        (b"0123456789", "e2", "v1", "answered ETag e2"),
        (b"0123456789", "e1", "v2", "answered version v2"),
    ],
)
def test_an_answer_that_is_not_the_pinned_version_is_changed(
    body: bytes, etag: str, version: str, said: str
) -> None:
    error = _stubbed_read(PinnedObject("b", "k", "v1", "e1", 10), body, etag, version)
    assert error.kind == CHANGED
    assert said in str(error)


def test_spark_reads_pinned_objects_as_the_duckdb_path_does(
    moto_url: str, tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executors read the versions themselves: the same rows, errors and summary, with a
    version gone (missing), a log rewritten before capture (disagreeing copies) and a
    delete marker among them."""
    import shutil

    from cloudir.analyze import spark_timeline, timeline
    from cloudir.analyze.parsers import ParseOptions
    from cloudir.analyze.spark_timeline import build_timeline_spark
    from cloudir.analyze.timeline import build_timeline
    from cloudir.aws import AwsOptions
    from cloudir.case import Case
    from tests.test_spark_timeline import CEILING_US, assert_same, written

    monkeypatch.setattr(timeline, "_ceiling_us", lambda: CEILING_US)
    monkeypatch.setattr(spark_timeline, "_ceiling_us", lambda: CEILING_US)
    s3, bucket = _bucket(moto_url)
    versions = _deliver(s3, bucket, files=5)
    s3.put_object(Bucket=bucket, Key=_log_key(0), Body=records_gz([_event(0, "forged")]))
    s3.delete_object(Bucket=bucket, Key=_log_key(3))
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    s3.delete_object(Bucket=bucket, Key=_log_key(1), VersionId=versions[_log_key(1)])
    twin = tmp_path / "case-spark"
    shutil.copytree(case, twin)

    aws = AwsOptions(endpoint_url=moto_url)
    build_timeline(Case.open(case), workers=1, options=ParseOptions(aws=aws))
    build_timeline_spark(Case.open(twin), spark, aws)
    duck, on_spark = written(case), written(twin)
    assert_same(duck, on_spark)
    assert sum(duck["rows"].values()) == 17  # 5 files of 4, one gone, one forged copy more
    kinds = [json.loads(line).get("kind") for line in duck["errors"]]
    assert kinds.count("missing") == 1
    assert duck["summary"]["conflicting_copies"]["events"] == 1


def test_verify_s3_names_every_pinned_version_s3_no_longer_holds(
    moto_url: str, tmp_path: Path
) -> None:
    s3, bucket = _bucket(moto_url)
    versions = _deliver(s3, bucket, files=3)
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    whole = cloudir("verify", "--case", str(case), "--s3", "--endpoint-url", moto_url)
    assert whole.code == 0, whole.stderr
    assert "ok: S3 holds all 3 object versions the manifests pin" in whole.stdout

    gone = _log_key(2)
    s3.delete_object(Bucket=bucket, Key=gone, VersionId=versions[gone])
    s3.put_object(Bucket=bucket, Key=_log_key(1), Body=b"a new version: the pinned one stays")
    checked = cloudir("verify", "--case", str(case), "--s3", "--endpoint-url", moto_url, "--json")
    assert checked.code == 3
    assert "Traceback" not in checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True, "the case itself is intact"
    assert report["s3"]["checked"] == 3
    [problem] = report["s3"]["problems"]
    assert (problem["kind"], problem["uri"]) == (
        "missing",
        f"s3://{bucket}/{gone}?versionId={versions[gone]}",
    )
    assert f"S3 MISSING s3://{bucket}/{gone}" in checked.stderr
    plain = cloudir("verify", "--case", str(case))
    assert plain.code == 0, "without --s3, verify reads nothing from AWS"


def test_read_ahead_answers_in_order_with_failures_in_place(moto_url: str) -> None:
    """Reads overlap, answers do not reorder: the parser pairs each answer with its task."""
    from cloudir.aws import AwsOptions
    from cloudir.s3_manifest import MISSING, read_ahead

    s3, bucket = _bucket(moto_url)
    versions = _deliver(s3, bucket, files=12, per_file=1)
    head = {k: s3.head_object(Bucket=bucket, Key=k) for k in versions}
    pins = [
        PinnedObject(bucket, k, v, head[k]["ETag"].strip('"'), head[k]["ContentLength"])
        for k, v in sorted(versions.items())
    ]
    pins[5] = PinnedObject(bucket, pins[5].key, "no-such-version", pins[5].etag, pins[5].size)
    answers = list(read_ahead(pins, AwsOptions(endpoint_url=moto_url), depth=4))
    assert len(answers) == 12
    for n, (pin, answer) in enumerate(zip(pins, answers, strict=True)):
        if n == 5:
            assert isinstance(answer, PinnedReadError) and answer.kind == MISSING
        else:
            assert answer == s3.get_object(Bucket=bucket, Key=pin.key)["Body"].read()


def test_the_report_says_what_is_pinned_and_not_copied(moto_url: str, tmp_path: Path) -> None:
    s3, bucket = _bucket(moto_url)
    _deliver(s3, bucket, files=2)
    case = tmp_path / "case"
    assert _capture(case, moto_url, bucket, "--manifest").code == 0
    assert _timeline(case, moto_url).code == 0
    assert cloudir("detect", "--case", str(case)).code in (0, 1)
    assert cloudir("report", "--case", str(case)).code == 0
    report = json.loads((case / "report" / "report.json").read_text())
    [item] = report["evidence"]
    sizes = [s3.head_object(Bucket=bucket, Key=_log_key(n))["ContentLength"] for n in (0, 1)]
    assert item["pinned"] == {"objects": 2, "bytes": sum(sizes)}
    assert "+ 2 S3 object versions" in (case / "report" / "report.md").read_text()
    assert "pinned, not copied" in (case / "report" / "report.html").read_text()
