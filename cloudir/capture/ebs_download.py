"""A snapshot's blocks as one raw disk image in the case, through the EBS direct APIs.

The direct APIs read a snapshot without creating a volume or attaching it to anything,
so the responder's account never runs the suspect disk. The loop is coldsnap's: a list of
blocks (ListSnapshotBlocks), a bounded pool of fetches (GetSnapshotBlock), a SHA-256
compare per block against the checksum AWS computed when the block was written, and a
write at the block's offset into a sparse file whose holes are the blocks AWS never
stored (zeros). A checkpoint of verified blocks lets an interrupted download of a large
disk resume; only a complete image, hashed end to end, gets its name and a custody entry.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import json
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudir.aws import Aws
from cloudir.capture.image_hash import FrontierHasher
from cloudir.case import PARTIAL_SUFFIX, Case, FileRecord
from cloudir.custody_actions import CustodyAction, read_action
from cloudir.errors import CloudError, EvidenceError
from cloudir.progress import Counter, Reporter

IMAGE_NAME = "image.raw"
ACTION = CustodyAction.CAPTURE_EBS_IMAGE
CHECKPOINT_SUFFIX = ".checkpoint"
CHECKPOINT_EVERY_BLOCKS = 2048  # 1 GiB of AWS's blocks
CHECKPOINT_EVERY_SECONDS = 5.0
PROGRESS_EVERY = 0.1  # seconds between the watching thread's looks at the workers
BACKOFF_BASE = 0.2  # seconds before the second attempt; doubles per attempt, with jitter
BACKOFF_CAP = 20.0
LIST_PAGE = 10000  # ListSnapshotBlocks' largest page
_THROTTLING = {
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequestsException",
    "SlowDown",
}


@dataclass
class DownloadResult:
    snapshot_id: str
    path: Path  # the final evidence file, CASE/evidence/<evidence_id>/image.raw
    volume_bytes: int
    block_size: int
    blocks_listed: int
    blocks_fetched: int  # fetched in this run
    blocks_resumed: int  # already verified by an earlier, interrupted run
    sha256: str  # of the whole image, streamed
    seconds: float


@dataclass(frozen=True)
class Block:
    index: int
    token: str


@dataclass(frozen=True)
class Listing:
    """What ListSnapshotBlocks said: the geometry comes from AWS, never assumed."""

    volume_bytes: int
    block_size: int
    blocks: list[Block]  # sorted by index, each index once


class _Stopped(Exception):
    """A fetch abandoned because the download as a whole is stopping."""


# -- the download --------------------------------------------------------------------------
def download_snapshot(
    case: Case,
    aws: Aws,
    snapshot_id: str,
    evidence_id: str,
    *,
    workers: int = 32,
    request_timeout: float = 30.0,
    max_attempts: int = 8,
    progress: Counter | None = None,
    report: Reporter | None = None,
) -> DownloadResult:
    """Download the snapshot into `<item>/image.raw`, resuming an interrupted run.

    Raises CloudError (exit 4) when AWS refuses or keeps failing, EvidenceError (exit 3)
    when a block never matches its checksum; either way nothing enters custody and the
    partial image and its checkpoint stay for a resume.

    `progress` hears (bytes done, bytes in the volume); `report` hears why a checkpoint
    was resumed or set aside. Neither draws anything: the caller decides what is shown.
    """
    started = time.monotonic()
    say = report or _unheard
    target = case.target_path(evidence_id, IMAGE_NAME)
    held = _already_held(case, target, snapshot_id, started)
    if held is not None:
        return held
    ebs = ebs_client(aws, workers, request_timeout)
    listing = list_blocks(ebs, snapshot_id, max_attempts)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    checkpoint = Checkpoint.resume(
        target.with_name(target.name + CHECKPOINT_SUFFIX), partial, snapshot_id, listing, say
    )
    todo = [b for b in listing.blocks if not checkpoint.has(b.index)]
    resumed = len(listing.blocks) - len(todo)
    if resumed:
        say(f"{snapshot_id}: resuming, {resumed} of {len(listing.blocks)} blocks already verified")
    fd = _open_partial(partial, listing.volume_bytes, fresh=not resumed)
    hasher = FrontierHasher(
        fd,
        case.relpath(partial),
        listing.volume_bytes,
        listing.block_size,
        [b.index for b in listing.blocks],
        checkpoint.has,
    )
    try:
        fetched = _fetch_all(
            ebs,
            snapshot_id,
            fd,
            listing,
            todo,
            checkpoint,
            workers,
            max_attempts,
            progress,
            hasher.nudge,
        )
        digest = hasher.finish()
    except BaseException:
        hasher.abandon()
        raise
    finally:
        os.close(fd)
    record = _seal(case, partial, target, listing.volume_bytes, digest)
    case.record(
        ACTION,
        evidence_id,
        [record],
        note=(
            f"{snapshot_id}: {len(listing.blocks)} blocks of {listing.block_size} bytes listed, "
            f"{fetched} fetched, {resumed} resumed, each matched its SHA-256 checksum; "
            "blocks the snapshot does not hold are zeros"
        ),
        source={
            "snapshot_id": snapshot_id,
            "volume_bytes": listing.volume_bytes,
            "block_size": listing.block_size,
            "blocks_listed": len(listing.blocks),
            "api": "ebs:GetSnapshotBlock",
        },
    )
    checkpoint.path.unlink(missing_ok=True)
    return DownloadResult(
        snapshot_id=snapshot_id,
        path=target,
        volume_bytes=listing.volume_bytes,
        block_size=listing.block_size,
        blocks_listed=len(listing.blocks),
        blocks_fetched=fetched,
        blocks_resumed=resumed,
        sha256=record.sha256,
        seconds=time.monotonic() - started,
    )


def ebs_client(aws: Aws, workers: int, request_timeout: float) -> Any:
    """An `ebs` client that tries each request once: the retry loop here is the only one,
    so every retry is visible and a checksum mismatch is retried like a throttle."""
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=request_timeout,
        read_timeout=request_timeout,
        max_pool_connections=max(10, workers),
        user_agent_extra="cloudir",
    )
    return aws.session.client(
        "ebs", region_name=aws.region, endpoint_url=aws.endpoint_url, config=config
    )


def list_blocks(ebs: Any, snapshot_id: str, max_attempts: int = 8) -> Listing:
    """Every block the snapshot holds, over all pages, in index order."""
    blocks: dict[int, str] = {}
    token: str | None = None
    geometry: tuple[int, int] | None = None
    while True:
        kwargs: dict[str, Any] = {"SnapshotId": snapshot_id, "MaxResults": LIST_PAGE}
        if token:
            kwargs["NextToken"] = token
        page = _retrying(
            "ebs:ListSnapshotBlocks",
            snapshot_id,
            functools.partial(ebs.list_snapshot_blocks, **kwargs),
            max_attempts,
        )
        geometry = geometry or (page["VolumeSize"] << 30, page["BlockSize"])
        for entry in page.get("Blocks", []):
            blocks[entry["BlockIndex"]] = entry["BlockToken"]
        token = page.get("NextToken")
        if not token:
            break
    volume_bytes, block_size = geometry
    if block_size <= 0 or volume_bytes % block_size:
        raise EvidenceError(
            f"{snapshot_id}: BlockSize {block_size} does not divide the volume size "
            f"{volume_bytes}; the listing cannot be laid out as an image"
        )
    beyond = [i for i in blocks if not 0 <= i < volume_bytes // block_size]
    if beyond:
        raise EvidenceError(f"{snapshot_id}: block index {beyond[0]} lies outside the volume")
    return Listing(volume_bytes, block_size, [Block(i, blocks[i]) for i in sorted(blocks)])


# -- the hard loop: bounded pool, checksum per block, write at offset -----------------------
def _fetch_all(
    ebs: Any,
    snapshot_id: str,
    fd: int,
    listing: Listing,
    todo: list[Block],
    checkpoint: Checkpoint,
    workers: int,
    max_attempts: int,
    progress: Counter | None,
    written: Callable[[], None],
) -> int:
    """Fetch `todo` with `workers` threads, each holding one block at a time (so at most
    `workers` blocks are in memory).

    Each worker takes the next block, fetches, verifies and pwrites it, then marks it;
    this thread only looks in every PROGRESS_EVERY seconds to report progress, hand a
    due checkpoint to the saver thread and notice a failure. Nothing passes through it
    per block: with a pool and a future per block, waking it and re-arming a wait over
    every pending future cost about 0.3 CPU-s per GiB, holding the GIL the workers need.
    However the loop ends (done, a failed block, Ctrl-C) the blocks already written are
    fsynced and checkpointed.
    """
    total = len(listing.blocks) * listing.block_size
    already = len(listing.blocks) - len(todo)
    if progress:
        progress(already * listing.block_size, total)
    crew = _Crew(ebs, snapshot_id, fd, listing, todo, checkpoint, max_attempts, written)
    saver = _CheckpointSaver(fd, checkpoint)
    threads = [
        threading.Thread(target=crew.work, name=f"ebs-block-{n}", daemon=True)
        for n in range(min(max(1, workers), len(todo)))
    ]
    crew.working = len(threads)
    try:
        for thread in threads:
            thread.start()
        reported = already
        while any(t.is_alive() for t in threads):
            crew.ended.wait(PROGRESS_EVERY)
            crew.raise_failure()
            if progress and already + crew.fetched != reported:
                reported = already + crew.fetched
                progress(reported * listing.block_size, total)
            if checkpoint.due():
                saver.start()
        crew.raise_failure()
        if progress and already + crew.fetched != reported:
            progress((already + crew.fetched) * listing.block_size, total)
    finally:
        crew.stop.set()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join()
        saver.finish()
    return crew.fetched


class _Crew:
    """What the block workers share: the blocks left, the stop flag, the count of blocks
    written and the first failure. A lock guards the queue and the bitmap (two workers
    may mark bits of one byte); `ended` wakes the watching thread when the last worker
    leaves or one fails."""

    def __init__(
        self,
        ebs: Any,
        snapshot_id: str,
        fd: int,
        listing: Listing,
        todo: list[Block],
        checkpoint: Checkpoint,
        max_attempts: int,
        written: Callable[[], None],
    ) -> None:
        self.ebs = ebs
        self.snapshot_id = snapshot_id
        self.fd = fd
        self.block_size = listing.block_size
        self.queue = iter(todo)
        self.checkpoint = checkpoint
        self.max_attempts = max_attempts
        self.written = written
        self.stop = threading.Event()
        self.ended = threading.Event()
        self.fetched = 0
        self.failure: BaseException | None = None
        self.working = 0  # threads started and not yet left
        self._lock = checkpoint.lock

    def work(self) -> None:
        try:
            while not self.stop.is_set():
                with self._lock:
                    block = next(self.queue, None)
                if block is None:
                    return
                data = get_block(
                    self.ebs, self.snapshot_id, block, self.block_size, self.max_attempts, self.stop
                )
                _pwrite_all(self.fd, data, block.index * self.block_size)
                del data  # not held through the next fetch: one block per worker in memory
                with self._lock:
                    self.checkpoint.mark(block.index)
                    self.fetched += 1
                self.written()
        except _Stopped:
            pass
        except BaseException as exc:
            with self._lock:
                if self.failure is None:
                    self.failure = exc
            self.stop.set()
        finally:
            with self._lock:
                self.working -= 1
                last = self.working == 0
            if last or self.failure is not None:
                self.ended.set()

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """The whole block at its offset: a block is marked as on disk only after this, so a
    short write (a disk filling up) must not leave part of it a hole."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, f"pwrite wrote nothing at offset {offset}")
        view, offset = view[written:], offset + written


def get_block(
    ebs: Any,
    snapshot_id: str,
    block: Block,
    block_size: int,
    max_attempts: int,
    stop: threading.Event,
) -> bytes:
    """One block's bytes, only once they hash to the checksum AWS gave with them.

    Throttling, 5xx, dropped connections, timeouts and a checksum mismatch are all
    retried with backoff; a block that never matches is an evidence problem, not a
    cloud one, and says which block and which hashes.
    """
    what = f"ebs:GetSnapshotBlock {snapshot_id} block {block.index}"
    mismatch = ""
    problem = ""
    for attempt in range(1, max_attempts + 1):
        if attempt > 1 and stop.wait(_backoff(attempt)):
            raise _Stopped
        if stop.is_set():
            raise _Stopped
        try:
            reply = ebs.get_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=block.index, BlockToken=block.token
            )
            data = reply["BlockData"].read()
        except Exception as exc:
            if not _transient(exc):
                raise _cloud_error("ebs:GetSnapshotBlock", snapshot_id, exc) from exc
            problem, mismatch = _describe(exc), ""
            continue
        expected = reply.get("Checksum") or ""
        actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if reply.get("ChecksumAlgorithm") == "SHA256" and expected == actual:
            if len(data) != block_size:
                raise EvidenceError(
                    f"{what}: {len(data)} bytes, but the snapshot's BlockSize is {block_size}"
                )
            return data
        mismatch = (
            f"SHA-256 mismatch: expected {expected or '(none)'} "
            f"({reply.get('ChecksumAlgorithm') or 'no algorithm'}), got {actual}"
        )
        problem = mismatch
    if mismatch:
        raise EvidenceError(f"{what}: {mismatch} after {max_attempts} attempts; not recorded")
    raise CloudError(f"{what} failed after {max_attempts} attempts: {problem}")


class _CheckpointSaver:
    """Saves checkpoints on a thread of its own, one at a time.

    The fsync before a save waits for every dirty page of the image, seconds for a large
    one on a slow disk; in the thread that feeds the pool it let the pool drain. The
    blocks a save names are copied from the bitmap before its fsync starts, and a block
    is marked only after its pwrite returned, so the fsync covers every block the saved
    checkpoint claims: it never names a block that is not durably on disk.

    A failed save stops the download at the next checkpoint (as it did when saves ran
    inline), and no checkpoint is written after it: Linux reports a writeback error to
    one fsync only, so a later fsync's success would not mean those pages reached disk.
    """

    def __init__(self, fd: int, checkpoint: Checkpoint) -> None:
        self.fd = fd
        self.checkpoint = checkpoint
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._failed = False

    def start(self) -> None:
        """Save the blocks marked so far in the background, unless a save is running
        (the next `due()` starts another)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._raise_failure()
        bits = self.checkpoint.take()
        self._thread = threading.Thread(
            target=self._save, args=(bits,), name="ebs-checkpoint", daemon=True
        )
        self._thread.start()

    def finish(self) -> None:
        """Wait for a save in flight, then save every block marked, here and now."""
        if self._thread is not None:
            self._thread.join()
        self._raise_failure()
        if not self._failed:
            self._write(self.checkpoint.take())

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._failed = True
            raise error

    def _save(self, bits: bytes) -> None:
        try:
            self._write(bits)
        except BaseException as exc:  # raised in the pool's thread by start() or finish()
            self._error = exc

    def _write(self, bits: bytes) -> None:
        """fsync first: the checkpoint may only name blocks whose bytes are on disk."""
        os.fsync(self.fd)
        self.checkpoint.save(bits)


# -- retries -----------------------------------------------------------------------------------
def _retrying(what: str, snapshot_id: str, fn: Callable[[], Any], max_attempts: int) -> Any:
    """`fn` with the same backoff as block fetches, for the listing calls."""
    problem = ""
    for attempt in range(1, max_attempts + 1):
        if attempt > 1:
            time.sleep(_backoff(attempt))
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc):
                raise _cloud_error(what, snapshot_id, exc) from exc
            problem = _describe(exc)
    raise CloudError(f"{what} {snapshot_id} failed after {max_attempts} attempts: {problem}")


def _backoff(attempt: int) -> float:
    """Exponential with jitter, so many workers throttled together do not return together."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 2))
    return random.uniform(ceiling / 2, ceiling)


def _transient(exc: Exception) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return code in _THROTTLING or status == 429 or status >= 500
    return False


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def _cloud_error(what: str, snapshot_id: str, exc: Exception) -> CloudError:
    """One line naming the permission a responder has to ask for."""
    from botocore.exceptions import ClientError

    text = f"{what} {snapshot_id} failed: {_describe(exc)}"
    if not isinstance(exc, ClientError):
        return CloudError(text)
    err = exc.response.get("Error", {})
    code = err.get("Code", "")
    reason = exc.response.get("Reason") or err.get("Reason") or ""
    if reason == "DEPENDENCY_ACCESS_DENIED" or "kms" in f"{code} {err.get('Message')}".lower():
        return CloudError(f"{text} (the snapshot is encrypted: the caller needs kms:Decrypt)")
    if "AccessDenied" in code or "UnauthorizedOperation" in code:
        return CloudError(f"{text} (the caller needs {what})")
    return CloudError(text)


# -- checkpoint --------------------------------------------------------------------------------
class Checkpoint:
    """The blocks whose bytes are verified and on disk, as a bitmap beside the partial.

    A bitmap keeps it small for any disk (a 16 TiB volume has 32M blocks: 4 MiB of bits,
    far less compressed), so it can be rewritten every few seconds.
    """

    def __init__(self, path: Path, snapshot_id: str, listing: Listing) -> None:
        self.path = path
        self.snapshot_id = snapshot_id
        self.volume_bytes = listing.volume_bytes
        self.block_size = listing.block_size
        self.bits = bytearray((listing.volume_bytes // listing.block_size + 7) // 8)
        self.unsaved = 0
        self.saved_at = time.monotonic()
        self.lock = threading.Lock()  # marking and taking the bitmap

    @classmethod
    def resume(
        cls, path: Path, partial: Path, snapshot_id: str, listing: Listing, say: Reporter
    ) -> Checkpoint:
        """The earlier run's checkpoint when it describes this snapshot, else an empty one."""
        fresh = cls(path, snapshot_id, listing)
        if not path.exists():
            return fresh
        try:
            saved = json.loads(path.read_text())
            bits = zlib.decompress(base64.b64decode(saved["verified"]))
        except (OSError, ValueError, KeyError, TypeError, zlib.error) as exc:
            say(f"{path.name}: unreadable ({exc}); downloading every block again")
            return fresh
        found = (saved.get("snapshot_id"), saved.get("volume_bytes"), saved.get("block_size"))
        wanted = (snapshot_id, listing.volume_bytes, listing.block_size)
        if found != wanted or len(bits) != len(fresh.bits):
            say(f"{path.name} is for {found}, not {wanted}; discarded, downloading every block")
            return fresh
        if not partial.is_file() or partial.stat().st_size != listing.volume_bytes:
            say(f"{path.name}: the partial image it describes is gone; downloading every block")
            return fresh
        fresh.bits[:] = bits
        return fresh

    def has(self, index: int) -> bool:
        return bool(self.bits[index >> 3] & (1 << (index & 7)))

    def mark(self, index: int) -> None:
        """Called with `lock` held by the workers."""
        self.bits[index >> 3] |= 1 << (index & 7)
        self.unsaved += 1

    def due(self) -> bool:
        return self.unsaved >= CHECKPOINT_EVERY_BLOCKS or (
            self.unsaved > 0 and time.monotonic() - self.saved_at >= CHECKPOINT_EVERY_SECONDS
        )

    def take(self) -> bytes:
        """The blocks marked so far, as a copy a saver thread may write while marking
        goes on; the next checkpoint is due counting from now."""
        with self.lock:
            self.unsaved = 0
            self.saved_at = time.monotonic()
            return bytes(self.bits)

    def save(self, bits: bytes | None = None) -> None:
        """Atomically: a crash leaves the old checkpoint or the new one, never half of one.
        `bits` is a copy from `take()` (default: the bitmap as it is now)."""
        bits = bytes(self.bits) if bits is None else bits
        body = {
            "snapshot_id": self.snapshot_id,
            "volume_bytes": self.volume_bytes,
            "block_size": self.block_size,
            "verified_count": int.from_bytes(bits, "little").bit_count(),
            "verified": base64.b64encode(zlib.compress(bits)).decode(),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


# -- the image file ------------------------------------------------------------------------------
def _open_partial(partial: Path, volume_bytes: int, fresh: bool) -> int:
    """The sparse partial image at full size: blocks never written read as zeros."""
    if fresh:
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(fd, volume_bytes)
        return fd
    os.chmod(partial, 0o644)  # a run stopped between sealing and renaming left it 0444
    return os.open(partial, os.O_RDWR)


def _seal(case: Case, partial: Path, target: Path, volume_bytes: int, digest: str) -> FileRecord:
    """Make the hashed image read-only and give it its final name, never over a file
    custody already holds (a hard link fails rather than replacing)."""
    size = partial.stat().st_size
    if size != volume_bytes:
        raise EvidenceError(f"{case.relpath(partial)}: {size} bytes, expected {volume_bytes}")
    os.chmod(partial, 0o444)
    rel = case.relpath(target)
    if rel in case.recorded_files() or target.exists():
        raise EvidenceError(f"{rel} already exists and is never overwritten; move it aside")
    os.link(partial, target)
    partial.unlink()
    _fsync_dir(target.parent)
    return FileRecord(rel, digest, size)


def _already_held(
    case: Case, target: Path, snapshot_id: str, started: float
) -> DownloadResult | None:
    """The result of an earlier run that completed, read back from custody."""
    rel = case.relpath(target)
    for entry in reversed(list(case.custody_entries())):
        files = [f for f in entry.get("files", []) if f.get("path") == rel]
        if not files:
            continue
        source = entry.get("source") or {}
        if (
            read_action(entry.get("action")) is not ACTION
            or source.get("snapshot_id") != snapshot_id
        ):
            raise EvidenceError(f"{rel} is already evidence of something else; use another item")
        if not target.is_file():
            raise EvidenceError(f"{rel} is in custody but missing from the case; run verify")
        return DownloadResult(
            snapshot_id=snapshot_id,
            path=target,
            volume_bytes=source["volume_bytes"],
            block_size=source["block_size"],
            blocks_listed=source["blocks_listed"],
            blocks_fetched=0,
            blocks_resumed=source["blocks_listed"],
            sha256=files[0]["sha256"],
            seconds=time.monotonic() - started,
        )
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unheard(message: str) -> None:
    """No one asked to hear about resuming: the result still counts blocks resumed."""
