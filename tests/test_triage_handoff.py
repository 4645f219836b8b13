"""Triage's hand-off: the result document to SNS, the case folder to S3, against moto
over HTTP (SNS delivers to an SQS queue, which is how the tests read a message back)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudir.aws import Aws, AwsOptions
from cloudir.case import Case
from cloudir.errors import CloudError, UsageError
from cloudir.triage.handoff import (
    MIN_PART_SIZE,
    SNS_MESSAGE_LIMIT,
    notify_sns,
    parse_s3_url,
    parse_topic_arn,
    sns_message,
    upload_case,
)
from tests.conftest import boto_client, cloudir, custody

TRAILS = Path(__file__).parent / "data/corpus/cloudtrail/stratus-red-team/detonation-logs"
TRAIL_FILES = [
    TRAILS / "aws.defense-evasion.dns-delete-logs.json",
    TRAILS / "aws.defense-evasion.cloudtrail-delete.json",
    TRAILS / "aws.exfiltration.ec2-share-ebs-snapshot.json",
]


def _aws(moto_url: str) -> Aws:
    return Aws(AwsOptions(region="us-east-1", endpoint_url=moto_url))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- SNS ---------------------------------------------------------------------------------
@pytest.fixture
def topic(moto_url: str) -> dict[str, str]:
    """A topic with an SQS queue subscribed to it (the SNS envelope, not raw delivery)."""
    sns, sqs = boto_client(moto_url, "sns"), boto_client(moto_url, "sqs")
    name = f"triage-{uuid.uuid4().hex[:8]}"
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    return {"arn": arn, "queue": queue}


def _received(moto_url: str, queue: str) -> dict[str, Any]:
    messages = boto_client(moto_url, "sqs").receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    [message] = messages["Messages"]
    envelope: dict[str, Any] = json.loads(message["Body"])
    return envelope


def _document(findings: int = 3) -> dict[str, Any]:
    return {
        "alert": {"id": "a1b2", "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller"},
        "scope": {"access_keys": ["AKIAEXAMPLE"], "window": ["2026-01-01T00:00:00Z", "x"]},
        "verdict": "corroborated",
        "counts": {"findings": findings, "events": 1234},
        "report": {"html": "report/report.html", "markdown": "report/report.md"},
        "findings": [
            {"rule": f"rule-{n}", "title": "Console login without MFA " * 4, "n": n}
            for n in range(findings)
        ],
    }


def test_the_document_reaches_a_subscriber_whole(moto_url: str, topic: dict[str, str]) -> None:
    document = _document()
    message_id = notify_sns(_aws(moto_url), topic["arn"], document)
    envelope = _received(moto_url, topic["queue"])
    assert envelope["MessageId"] == message_id
    assert envelope["Subject"] == "cloudir triage result"
    assert json.loads(envelope["Message"]) == document


def test_a_document_over_256_kib_is_sent_trimmed_and_says_so(
    moto_url: str, topic: dict[str, str]
) -> None:
    document = _document(findings=20_000)
    assert len(json.dumps(document)) > SNS_MESSAGE_LIMIT
    notify_sns(_aws(moto_url), topic["arn"], document)
    sent = _received(moto_url, topic["queue"])["Message"]
    assert len(sent.encode()) <= SNS_MESSAGE_LIMIT
    got = json.loads(sent)
    for key in ("alert", "scope", "verdict", "counts", "report"):
        assert got[key] == document[key]
    note = got["trimmed"]
    assert note["whole_bytes"] == len(json.dumps(document, separators=(",", ":")).encode())
    assert "triage/result.json" in note["note"]
    [cut] = [c for c in note["cuts"] if c["path"] == "$.findings"]
    assert cut["of"] == 20_000 and cut["kept"] == len(got["findings"]) > 0
    assert got["findings"] == document["findings"][: cut["kept"]]


def test_even_a_document_of_countless_keys_fits() -> None:
    """No list or string to cut: only top-level values are left, and the note."""
    document = {f"key-{n}": "v" * 50 for n in range(20_000)}
    text = sns_message(document)
    got = json.loads(text)
    assert len(text.encode()) <= SNS_MESSAGE_LIMIT
    assert "only the document's top-level values are left" in got["trimmed"]["note"]
    assert all(got[k] == document[k] for k in got if k != "trimmed")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=20), inner),
    max_leaves=60,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=30), JSON, max_size=20), st.integers(600, 4000))
def test_any_document_becomes_one_message_within_the_limit(
    document: dict[str, Any], limit: int
) -> None:
    text = sns_message(document, limit=limit)
    assert len(text.encode()) <= limit
    got = json.loads(text)
    if len(json.dumps(document, separators=(",", ":")).encode()) <= limit:
        assert got == document
    else:
        assert got["trimmed"]["limit_bytes"] == limit


def test_a_fifo_topic_gets_a_message_group(moto_url: str) -> None:
    sns = boto_client(moto_url, "sns")
    arn = sns.create_topic(Name=f"t{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoTopic": "true"})[
        "TopicArn"
    ]
    assert notify_sns(_aws(moto_url), arn, _document())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "topic",
        "arn:aws:sqs:us-east-1:123456789012:queue",
        "arn:aws:sns:us-east-1:12345:topic",
        "arn:aws:sns:useast1:123456789012:topic",
        "arn:aws:sns:us-east-1:123456789012:",
        "arn:aws:sns:us-east-1:123456789012:bad/name",
        "arn:aws:sns:us-east-1:123456789012:topic\n\x1b[31mevil",
        "arn:aws:sns:us-east-1:123456789012:" + "t" * 300,
    ],
)
def test_a_bad_topic_arn_is_one_line_before_any_call(text: str) -> None:
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(UsageError) as caught:
        notify_sns(aws, text, {"verdict": "x"})
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    assert "is not an SNS topic ARN" in message


def test_the_arn_may_carry_the_notify_prefix_and_names_its_region() -> None:
    topic = parse_topic_arn("sns:arn:aws-us-gov:sns:us-gov-west-1:123456789012:ir.fifo")
    assert (topic.region, topic.account, topic.fifo) == ("us-gov-west-1", "123456789012", True)
    assert topic.text == "arn:aws-us-gov:sns:us-gov-west-1:123456789012:ir.fifo"


def test_a_topic_that_does_not_exist_is_one_line(moto_url: str) -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    with pytest.raises(CloudError, match=r"^sns:Publish failed: NotFound") as caught:
        notify_sns(_aws(moto_url), arn, _document())
    assert "\n" not in str(caught.value)


# -- S3 URL ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://ir-cases", "ir-cases", ""),
        ("s3://ir-cases/", "ir-cases", ""),
        ("s3://ir-cases/triage/2026/", "ir-cases", "triage/2026"),
        ("s3://ir.cases.example/a", "ir.cases.example", "a"),
    ],
)
def test_s3_urls_that_parse(text: str, bucket: str, prefix: str) -> None:
    dest = parse_s3_url(text)
    assert (dest.bucket, dest.prefix) == (bucket, prefix)
    assert dest.folder("case-1") == "/".join(p for p in (prefix, "case-1") if p) + "/"


@pytest.mark.parametrize(
    "text",
    [
        "ir-cases",
        "https://ir-cases.s3.amazonaws.com/x",
        "S3://ir-cases",
        "s3://",
        "s3://IR-Cases",
        "s3://ab",
        "s3://ir..cases",
        "s3://192.168.1.1",
        "s3://-ir-cases",
        "s3://ir_cases/x",
        "s3://ir-cases//x",
        "s3://ir-cases/a/../b",
        "s3://ir-cases/a?versionId=1",
        "s3://ir-cases/a\nb",
        "s3://ir-cases/a\\b",
        "s3://ir-cases/" + "p" * 600,
    ],
)
def test_a_bad_s3_url_is_one_line(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_s3_url(text)
    message = str(caught.value)
    assert message.startswith("--upload ") and "give s3://BUCKET" in message
    assert "\n" not in message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused_with_a_usage_error(text: str) -> None:
    for candidate in (text, "s3://" + text):
        try:
            dest = parse_s3_url(candidate)
        except UsageError as exc:
            assert "\n" not in str(exc)
        else:
            assert candidate.startswith("s3://") and dest.bucket in candidate


# -- S3 upload ---------------------------------------------------------------------------
@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"ir-cases-{uuid.uuid4().hex[:8]}"
    boto_client(moto_url, "s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def real_case(tmp_path: Path) -> Path:
    """A case as a responder makes it: captured CloudTrail files, a timeline, and the
    outputs triage writes beside them."""
    case = tmp_path / "case-7"
    assert cloudir("capture", "files", "--case", str(case), *map(str, TRAIL_FILES)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    (case / "triage").mkdir()
    (case / "triage" / "result.json").write_text('{"verdict": "corroborated"}\n')
    (case / "report").mkdir()
    (case / "report" / "report.html").write_text("<html>report</html>\n")
    return case


def _case_files(case: Path) -> dict[str, bytes]:
    return {
        p.relative_to(case).as_posix(): p.read_bytes()
        for p in sorted(case.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != "case.lock"
    }


def _object(moto_url: str, bucket: str, key: str) -> tuple[bytes, str | None]:
    s3 = boto_client(moto_url, "s3")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return body, head.get("ChecksumSHA256")


def _entries(case: Path, action: str) -> list[dict[str, Any]]:
    return [e for e in custody(case) if e["action"] == action]


def test_every_file_of_the_case_goes_up_with_its_sha256_and_custody(
    moto_url: str, bucket: str, real_case: Path
) -> None:
    local = _case_files(real_case)
    said: list[str] = []
    result = upload_case(_aws(moto_url), Case.open(real_case), f"s3://{bucket}/triage", said.append)
    assert result.complete and not result.refused
    assert result.prefix == "triage/case-7/"
    assert sorted(o.path for o in result.uploaded) == sorted(local)
    assert result.skipped == [("case.lock", result.skipped[0][1])]  # held while copying
    for rel, data in local.items():
        body, checksum = _object(moto_url, bucket, f"triage/case-7/{rel}")
        if rel == "custody.jsonl":  # copied last; its own upload entry came after
            data = (real_case / rel).read_bytes()
            assert checksum == _b64sha(body)
            assert data.startswith(body) and data[len(body) :].count(b"\n") == 1
            continue
        assert _sha(body) == _sha(data), rel
        assert checksum == _b64sha(data), rel
    uploads = _entries(real_case, "upload")
    assert [e["source"]["path"] for e in uploads] == [o.path for o in result.uploaded]
    assert len(uploads) == len(local)
    for entry, obj in zip(uploads, result.uploaded, strict=True):
        src = entry["source"]
        assert (src["bucket"], src["key"]) == (bucket, "triage/case-7/" + obj.path)
        assert src["checksum_sha256"] == base64.b64encode(bytes.fromhex(src["sha256"])).decode()
        assert entry["files"] == []
        if obj.path.startswith("evidence/"):
            assert entry["evidence_id"] == obj.path.split("/")[1]
            assert src["sha256"] == Case.open(real_case).recorded_files()[obj.path].sha256
    assert uploads[-1]["source"]["path"] == "custody.jsonl"
    [closing] = _entries(real_case, "upload-complete")
    assert closing["source"]["uploaded"] == len(local) - 1  # all but custody.jsonl, which follows
    assert Case.open(real_case).verify().ok  # the upload entries leave custody verifiable
    assert any(f"s3://{bucket}/triage/case-7/" in line for line in said)


def test_a_versioned_bucket_gives_each_upload_its_version_id(
    moto_url: str, bucket: str, real_case: Path
) -> None:
    s3 = boto_client(moto_url, "s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    result = upload_case(_aws(moto_url), Case.open(real_case), f"s3://{bucket}", print)
    case_json = next(o for o in result.uploaded if o.path == "case.json")
    versions = s3.list_object_versions(Bucket=bucket, Prefix="case-7/case.json")["Versions"]
    assert case_json.version_id == versions[0]["VersionId"] and case_json.version_id
    [entry] = [e for e in _entries(real_case, "upload") if e["source"]["path"] == "case.json"]
    assert entry["source"]["version_id"] == case_json.version_id


def test_tampered_evidence_is_refused_counted_and_recorded_not_uploaded(
    moto_url: str, bucket: str, real_case: Path
) -> None:
    case = Case.open(real_case)
    evidence = sorted(p for p in (real_case / "evidence").rglob("*.json") if p.is_file())
    tampered = next(p for p in evidence if p.name != "meta.json")
    rel = tampered.relative_to(real_case).as_posix()
    recorded = case.recorded_files()[rel]
    tampered.chmod(0o644)
    tampered.write_bytes(tampered.read_bytes().replace(b"DeleteTrail", b"DescribeTrails"))
    stray = tampered.parent / "planted.json"  # an evidence file custody never recorded
    stray.write_text("{}")
    said: list[str] = []

    result = upload_case(_aws(moto_url), case, f"s3://{bucket}/ir", said.append)

    assert not result.complete
    refused = dict(result.refused)
    assert set(refused) == {rel, stray.relative_to(real_case).as_posix()}
    assert "custody recorded: changed since capture" in refused[rel]
    assert "custody never recorded" in refused[stray.relative_to(real_case).as_posix()]
    s3 = boto_client(moto_url, "s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="ir/")["Contents"]}
    assert f"ir/case-7/{rel}" not in keys
    assert len(keys) == len(result.uploaded) == len(_case_files(real_case)) - 2
    [entry] = [e for e in _entries(real_case, "upload-refused") if e["source"]["path"] == rel]
    assert entry["source"]["recorded_sha256"] == recorded.sha256
    assert entry["source"]["sha256"] == _sha(tampered.read_bytes()) != recorded.sha256
    [closing] = _entries(real_case, "upload-incomplete")
    assert len(closing["source"]["refused"]) == 2
    assert "2 refused" in said[-1]
    assert sum(line.startswith(f"NOT uploaded: {rel}: SHA-256") for line in said) == 1


def test_links_and_fifos_are_skipped_never_followed(
    moto_url: str, bucket: str, real_case: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not case data")
    (real_case / "report" / "linked.txt").symlink_to(secret)
    (real_case / "report" / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(real_case / "report" / "pipe")
    result = upload_case(_aws(moto_url), Case.open(real_case), f"s3://{bucket}", print)
    skipped = dict(result.skipped)
    assert "symbolic link" in skipped["report/linked.txt"]
    assert "symbolic link" in skipped["report/linked-dir"]
    assert "FIFO" in skipped["report/pipe"]
    assert result.complete  # not the case's files: counted, not refused
    keys = {o.key for o in result.uploaded}
    assert not any("linked" in k or "pipe" in k or "outside" in k for k in keys)


def test_a_large_file_goes_up_in_parts_each_checked(
    moto_url: str, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    case = tmp_path / "big"
    assert cloudir("capture", "files", "--case", str(case), str(source)).code == 0
    result = upload_case(
        _aws(moto_url), Case.open(case), f"s3://{bucket}", print, part_size=MIN_PART_SIZE
    )
    [big] = [o for o in result.uploaded if o.bytes == len(data)]
    assert big.parts == 3
    body, checksum = _object(moto_url, bucket, big.key)
    assert _sha(body) == _sha(data) == big.sha256
    starts = range(0, len(data), MIN_PART_SIZE)
    digests = [hashlib.sha256(data[i : i + MIN_PART_SIZE]).digest() for i in starts]
    composite = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    assert checksum is not None and checksum.split("-")[0] == composite
    assert result.complete


def test_s3_refusing_a_checksum_is_a_refused_file_not_a_silent_one(tmp_path: Path) -> None:
    """moto stores the checksum a client sends without checking the bytes against it, so
    S3's refusal (BadDigest: the bytes changed between hashing and sending) is staged
    with botocore's Stubber, the one integrity fault moto cannot produce."""
    import boto3
    from botocore.stub import ANY, Stubber

    case = Case.create(tmp_path / "c")
    with case.item("item", {"kind": "files"}) as item:
        item.store("files/a.txt", b"alpha")
    s3 = boto3.client("s3", region_name="us-east-1")
    aws = Aws(AwsOptions(region="us-east-1"))
    aws.client = lambda service, region=None: s3  # type: ignore[method-assign]
    files = {"case.json": (tmp_path / "c/case.json").read_bytes(), "a": b"alpha"}
    with Stubber(s3) as stub:
        ok = {"ETag": '"e"', "ChecksumSHA256": _b64sha(files["case.json"])}
        stub.add_response("put_object", ok, {"Bucket": "ir-cases", "Key": "c/case.json"} | {
            k: ANY for k in ("Body", "ChecksumAlgorithm", "ChecksumSHA256", "Metadata")
        })  # fmt: skip
        stub.add_client_error(
            "put_object", "BadDigest", "The checksum you specified did not match", 400
        )
        stub.add_response("put_object", {"ETag": '"m"'})  # meta.json (no checksum echoed)
        stub.add_response("put_object", {"ETag": '"c"'})  # custody.jsonl
        result = upload_case(aws, case, "s3://ir-cases", print)
        stub.assert_no_pending_responses()
    [(path, why)] = result.refused
    assert path == "evidence/item/files/a.txt" and "S3 refused the bytes" in why
    assert [o.path for o in result.uploaded] == [
        "case.json",
        "evidence/item/meta.json",
        "custody.jsonl",
    ]
    [entry] = _entries(tmp_path / "c", "upload-refused")
    assert entry["evidence_id"] == "item" and "BadDigest" in entry["note"]


def test_a_missing_bucket_stops_with_one_line_and_custody_says_so(
    moto_url: str, real_case: Path
) -> None:
    with pytest.raises(CloudError, match=r"^s3:PutObject failed: NoSuchBucket") as caught:
        upload_case(_aws(moto_url), Case.open(real_case), "s3://no-such-bucket-x1", print)
    assert "\n" not in str(caught.value)
    [closing] = _entries(real_case, "upload-incomplete")
    assert "stopped by CloudError: s3:PutObject failed: NoSuchBucket" in closing["note"]
    assert _entries(real_case, "upload") == []


def test_a_bad_url_writes_nothing(real_case: Path) -> None:
    before = (real_case / "custody.jsonl").read_bytes()
    aws = Aws(AwsOptions(region="us-east-1", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(UsageError, match="not a valid S3 bucket name"):
        upload_case(aws, Case.open(real_case), "s3://Bad_Bucket/x", print)
    assert (real_case / "custody.jsonl").read_bytes() == before
