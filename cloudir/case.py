"""The case folder: the one place every stage reads from and writes to.

Evidence under `evidence/` is written once, through a temporary name that is renamed
only after the bytes are on disk and hashed, and every file is recorded in the
append-only `custody.jsonl`. Each custody line carries the SHA-256 of the line before
it, so an edited or deleted entry breaks the chain and `verify` says where.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import hashlib
import json
import os
import re
import shlex
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cloudir import __version__, custody_log
from cloudir.case_folder import (
    CASE_FILE,
    CUSTODY_FILE,
    EVIDENCE_DIR,
    CasePaths,
    FolderState,
    folder_state,
    foreign_entries,
    read_case_info,
    refuse_foreign,
    refuse_inside_a_case,
)
from cloudir.custody_actions import CAPTURE_CLOSING, Closing, CustodyAction, custody_action
from cloudir.errors import EvidenceError, UsageError
from cloudir.sparse import ShortRead, Spans
from cloudir.write_behind import Flusher

if TYPE_CHECKING:
    from cloudir.evidence_item import EvidenceItem, Summary

META_FILE = "meta.json"
PARTIAL_SUFFIX = ".partial"
CHUNK = 1 << 20
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_name(text: str, limit: int = 120) -> str:
    """A file or id component that cannot climb out of its folder or hide itself.

    A name that had to be changed gets a short hash of the original, so two originals
    that clean to the same text (`a b.json`, `a_b.json`) never share one evidence file.
    """
    cleaned = _ID_UNSAFE.sub("_", text).strip("._") or "unnamed"
    if cleaned == text and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{cleaned[: limit - 11]}~{digest}"


class NotRegularFileError(EvidenceError):
    """A FIFO, socket, device, link or folder where a file should be. It is never read:
    a FIFO would block forever, a link would hash whatever it points at."""

    def __init__(self, path: Path | str, kind: str) -> None:
        super().__init__(f"{path}: not a regular file ({kind})")
        self.kind = kind


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "not a file")


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file at `path`, which is not itself a link.

    lstat turns away anything else before it is opened; O_NOFOLLOW and O_NONBLOCK make
    an open that lost a race with a swap fail, or return at once, instead of following a
    link or waiting for a FIFO writer; fstat then checks what was really opened.
    """
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, file_kind(mode))
    return _open_checked(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _open_checked(path: Path, flags: int, create_mode: int = 0o644) -> int:
    """`os.open` with O_NOFOLLOW among `flags`: a link is named as one, and whatever was
    opened must be a regular file (fstat), or it is closed and refused."""
    try:
        fd = os.open(path, flags, create_mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFileError(path, "a symbolic link") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(path, file_kind(mode))
    return fd


SPACE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit)",
}


class NoSpaceError(EvidenceError):
    """A case write that failed for lack of space, named with its file. Not an OSError,
    so code that counts a source file it "cannot read" does not mislabel it."""


@contextlib.contextmanager
def naming_the_file(path: Path) -> Iterator[None]:
    """A failed write names its file: a bare "No space left on device" does not say
    which disk filled up. Lack of space becomes NoSpaceError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in SPACE_REASONS:
            where = exc.filename or path
            raise NoSpaceError(f"{SPACE_REASONS[exc.errno]} while writing {where}") from exc
        if exc.filename is None:
            exc.filename = str(path)
        raise


def write_all(fd: int, data: bytes | memoryview, path: Path) -> None:
    """Every byte, across short writes; a failure names `path`."""
    view = memoryview(data)
    with naming_the_file(path):
        while view:
            view = view[os.write(fd, view) :]


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and size of a regular file; anything else raises NotRegularFileError.

    Holes (a downloaded disk image is mostly holes) are hashed from a zero buffer instead
    of read (`cloudir.sparse`): the digest is the same, at a quarter of the CPU. A file
    whose size changes while it is hashed is hashed again by plain reads, so the result
    is always that of the bytes a read returns.
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        digest = hashlib.sha256()
        try:
            Spans(fd, CHUNK).hash(digest, 0, size, on_bytes)
            if os.fstat(fd).st_size == size and not os.pread(fd, 1, size):
                return digest.hexdigest(), size
        except ShortRead:
            pass
        return _sha256_read(fd, on_bytes)
    finally:
        os.close(fd)


def _sha256_read(fd: int, on_bytes: Callable[[int], None] | None) -> tuple[str, int]:
    """Every byte from the start to EOF by plain reads: for a file that changed size."""
    digest = hashlib.sha256()
    size = 0
    buffer = memoryview(bytearray(CHUNK))
    while n := os.preadv(fd, [buffer], size):
        digest.update(buffer[:n])
        size += n
        if on_bytes:
            on_bytes(n)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class FileRecord:
    """One evidence file as custody knows it: path relative to the case root."""

    path: str
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class VerifyReport:
    checked: int = 0
    changed: list[str] = field(default_factory=list)
    changed_reasons: dict[str, str] = field(default_factory=dict)  # when not just other bytes
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    conflicts: dict[str, list[FileRecord]] = field(default_factory=dict)  # one path, 2+ hashes
    chain_errors: list[str] = field(default_factory=list)
    torn_tail: str = ""  # a last entry cut short, not yet repaired
    notes: list[str] = field(default_factory=list)  # torn lines a repair entry closed
    custody_head: str = ""  # SHA-256 of the last custody line: keep it outside the case

    @property
    def ok(self) -> bool:
        return not (
            self.changed
            or self.missing
            or self.unrecorded
            or self.conflicts
            or self.chain_errors
            or self.torn_tail
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "custody_head_sha256": self.custody_head,
            "checked": self.checked,
            "changed": self.changed,
            "changed_reasons": self.changed_reasons,
            "missing": self.missing,
            "unrecorded": self.unrecorded,
            "conflicts": [
                {"path": path, "recorded": [r.as_dict() for r in records]}
                for path, records in self.conflicts.items()
            ],
            "custody_chain_errors": self.chain_errors,
            "custody_torn_tail": self.torn_tail or None,
            "custody_notes": self.notes,
        }


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class Case:
    """An open case folder. Thread-safe for concurrent evidence writes and custody appends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.operator = default_actor()
        self.actor = self.operator  # the AWS caller ARN once capture knows it
        self._recorded: dict[str, FileRecord] | None = None  # held paths, once loaded
        self.command = shlex.join(["cloudir", *sys.argv[1:]])
        self._custody_lock = threading.Lock()
        self.info: dict[str, Any] = read_case_info(root)

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: Path,
        title: str | None = None,
        examiner: str | None = None,
        adopt_folder: bool = False,
    ) -> Case:
        """A new case in a new or empty folder; in a folder holding other things only
        when the user said so (`adopt_folder`), and custody then names what was there."""
        state = folder_state(root)
        if state is FolderState.CASE:
            raise UsageError(f"{root} is already a case; open it instead")
        if state is FolderState.FOREIGN and not adopt_folder:
            raise refuse_foreign(root)
        refuse_inside_a_case(root)
        adopted = foreign_entries(root) if state is FolderState.FOREIGN else []
        root.mkdir(parents=True, exist_ok=True)
        info = {
            "id": safe_name(root.resolve().name),
            "title": title or root.resolve().name,
            "examiner": examiner or default_actor(),
            "created": utc_now(),
            "cloudir_version": __version__,
        }
        _atomic_write_bytes(root / CASE_FILE, json.dumps(info, indent=2).encode() + b"\n")
        (root / EVIDENCE_DIR).mkdir(exist_ok=True)
        (root / CUSTODY_FILE).touch()
        case = cls(root)
        note = f"case {info['id']} opened by {info['examiner']}"
        if adopted:
            note += (
                f"; made in a folder that already held {len(adopted)} entries, "
                f"not evidence: {', '.join(adopted[:20])}"
            )
        case.record(CustodyAction.CASE_CREATED, None, [], note=note)
        return case

    @classmethod
    def open(cls, root: Path) -> Case:
        if folder_state(root) is not FolderState.CASE:
            raise UsageError(
                f"{root} is not a cloudir case (no {CASE_FILE}); capture into it first"
            )
        return cls(root)

    @classmethod
    def open_or_create(
        cls,
        root: Path,
        title: str | None = None,
        examiner: str | None = None,
        adopt_folder: bool = False,
    ) -> Case:
        if folder_state(root) is FolderState.CASE:
            return cls(root)
        return cls.create(root, title=title, examiner=examiner, adopt_folder=adopt_folder)

    # -- what the stages derive (timeline, findings, report) --------------------------
    @property
    def paths(self) -> CasePaths:
        """The case's derived files and folders, named in one place (case_folder.py)."""
        return CasePaths(self.root)

    # -- evidence items --------------------------------------------------------------
    def evidence_dir(self, evidence_id: str) -> Path:
        return self.root / EVIDENCE_DIR / evidence_id

    def evidence_ids(self) -> list[str]:
        base = self.root / EVIDENCE_DIR
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def read_meta(self, evidence_id: str) -> dict[str, Any]:
        path = self.evidence_dir(evidence_id) / META_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise EvidenceError(f"{path}: unreadable meta.json ({exc})") from exc

    def item_with_source(self, source: dict[str, Any]) -> str | None:
        """The item whose meta.json names exactly this source, if one exists."""
        for evidence_id in self.evidence_ids():
            if self.read_meta(evidence_id).get("source") == source:
                return evidence_id
        return None

    def unique_evidence_id(self, base: str) -> str:
        """A fresh id: evidence is never written into an item another run created."""
        base = safe_name(base)
        candidate, n = base, 1
        while self.evidence_dir(candidate).exists():
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def open_item(self, evidence_id: str, meta: dict[str, Any]) -> bool:
        """Create the item with its meta.json, or reuse it when a previous run made it.

        Returns True when the item already existed (the caller is resuming).
        """
        folder = self.evidence_dir(evidence_id)
        meta_path = folder / META_FILE
        if meta_path.exists():
            if self.relpath(meta_path) not in self._recorded_paths():
                digest, size = sha256_file(meta_path)  # a run stopped before recording it
                rec = FileRecord(self.relpath(meta_path), digest, size)
                self.record(
                    CustodyAction.EVIDENCE_OPENED, evidence_id, [rec], note="recorded on resume"
                )
            self.remove_stale_partials(evidence_id)
            return True
        folder.mkdir(parents=True, exist_ok=True)
        body = dict(meta, evidence_id=evidence_id, captured=utc_now(), tool_version=__version__)
        data = json.dumps(body, indent=2, sort_keys=True, default=str).encode() + b"\n"
        rec = self.store_bytes(evidence_id, META_FILE, data)
        self.record(
            CustodyAction.EVIDENCE_OPENED, evidence_id, [rec], note=f"{meta.get('kind', '')} item"
        )
        return False

    def item(
        self,
        evidence_id: str,
        meta: dict[str, Any],
        summary: Summary | None = None,
        closing: Closing = CAPTURE_CLOSING,
    ) -> EvidenceItem:
        """Open the item (`open_item`) and hand back its lifecycle: store and record,
        skip, problem, finish. Use it as a context manager so the item always ends on
        the record (cloudir/evidence_item.py)."""
        from cloudir.evidence_item import EvidenceItem

        resumed = self.open_item(evidence_id, meta)
        kind = str(meta.get("kind", ""))
        return EvidenceItem(self, evidence_id, kind, resumed, summary=summary, closing=closing)

    def relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def target_path(self, evidence_id: str, name: str) -> Path:
        parts = [safe_name(p) for p in Path(name).parts if p not in ("", ".", "..", "/")]
        if not parts:
            raise EvidenceError(f"evidence file name {name!r} is empty after cleaning")
        return self.evidence_dir(evidence_id).joinpath(*parts)

    def store_stream(
        self,
        evidence_id: str,
        name: str,
        chunks: Iterable[bytes | memoryview],
        expected_bytes: int | None = None,
    ) -> FileRecord:
        """Write chunks to the item under `name`, hashing as they pass; rename when complete.

        A file custody already holds is never replaced, and a short transfer never gets
        its final name: only complete, hashed bytes become evidence.
        """
        target = self.target_path(evidence_id, name)
        rel = self.relpath(target)
        if target.exists() and rel in self._recorded_paths():
            raise EvidenceError(f"{rel} is already evidence and is never overwritten")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
        )
        partial = Path(partial_name)
        try:
            record = FileRecord(rel, *_write_hashed(fd, partial, chunks))
            if expected_bytes is not None and record.bytes != expected_bytes:
                raise EvidenceError(f"{rel}: got {record.bytes} bytes, expected {expected_bytes}")
            os.chmod(partial, 0o444)
            with self._custody_lock:  # no other thread can give this path other bytes
                held = self._held_unlocked()
                _refuse_second_hash(held, record)
                os.replace(partial, target)
                held[rel] = record
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return record

    def remove_stale_partials(self, evidence_id: str) -> int:
        """Temporary files an interrupted run left: never evidence, so safe to clear.

        A partial with a `.checkpoint` beside it (an EBS image download) is kept: the
        checkpoint names the blocks in it already verified, so a re-run resumes. Only
        regular files custody does not hold are ever removed: recorded evidence that
        happens to be named `*.partial`, a folder or a link so named stays for verify.
        """
        held = self._recorded_paths()
        stale = [
            p
            for p in self.evidence_dir(evidence_id).rglob("*" + PARTIAL_SUFFIX)
            if stat.S_ISREG(p.lstat().st_mode)
            and self.relpath(p) not in held
            and not any(p.parent.glob(p.name.removesuffix(PARTIAL_SUFFIX) + "*.checkpoint"))
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self.record(
                CustodyAction.PARTIALS_REMOVED,
                evidence_id,
                [],
                note=f"removed {len(stale)} incomplete temporary file(s) of an interrupted run",
            )
        return len(stale)

    def store_bytes(self, evidence_id: str, name: str, data: bytes) -> FileRecord:
        return self.store_stream(evidence_id, name, [data])

    def store_copy(self, evidence_id: str, name: str, source: Path) -> FileRecord:
        with open(source, "rb") as fh:
            return self.store_stream(evidence_id, name, _read_chunks(fh))

    # -- custody ---------------------------------------------------------------------
    def record(
        self,
        action: CustodyAction | str,
        evidence_id: str | None,
        files: list[FileRecord],
        note: str = "",
        source: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one custody entry, fsynced before returning.

        A path custody already holds is never given a second hash: the entry is refused
        (EvidenceError) and nothing is written. The same hash again is fine. `action` is
        one of the fixed set (cloudir/custody_actions.py); any other is a ValueError.
        """
        entry = self._entry_base(custody_action(action).value, evidence_id, note)
        entry["files"] = [f.as_dict() for f in files]
        if source:
            entry["source"] = source
        with self._custody_lock:
            held = self._held_unlocked()
            batch: dict[str, FileRecord] = {}
            for f in files:
                _refuse_second_hash(held, f)
                _refuse_second_hash(batch, f)
                batch[f.path] = f
            self._append(entry)
            for path, f in batch.items():
                held.setdefault(path, f)
        return entry

    def _entry_base(self, action: str, evidence_id: str | None, note: str) -> dict[str, Any]:
        return {
            "ts": utc_now(),
            "action": action,
            "actor": self.actor,
            "operator": self.operator,
            "host": socket.gethostname(),
            "tool_version": __version__,
            "command": self.command,
            "evidence_id": evidence_id,
            "files": [],
            "note": note,
        }

    def repair_custody_tail(self) -> dict[str, Any] | None:
        """Close a torn tail now, with the `custody-repaired` entry the next record would
        write; the entry, or None when the tail was whole (then nothing is written)."""
        with self._custody_lock:
            return self._append(None)

    def _append(self, entry: dict[str, Any] | None) -> dict[str, Any] | None:
        """One line at the end, under an exclusive flock, chained to the last line. A torn
        tail a cut-short write left is first closed by a `custody-repaired` entry, in the
        same write: existing bytes are never edited or removed. Returns that repair."""
        path = self.root / CUSTODY_FILE
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = _open_custody(path, flags | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
            base = self._entry_base(custody_log.REPAIR_ACTION, None, "")
            tail = custody_log.tail_for_append(fd, base)
            data = tail.prefix
            if entry is not None:
                entry["prev_sha256"] = custody_log.sha256_hex(tail.chain_to)
                data += json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
            if data:
                write_all(fd, data, path)
                with naming_the_file(path):
                    os.fsync(fd)
            return tail.repair
        finally:
            os.close(fd)

    def _read_custody(self) -> bytes:
        """The whole log, read under a shared flock (a writer appends whole lines)."""
        path = self.root / CUSTODY_FILE
        fd = _open_custody(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return custody_log.read_all(fd)
        finally:
            os.close(fd)

    def custody_entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry; an unreadable line is skipped here and reported by verify."""
        for raw in custody_log.split_lines(self._read_custody()):
            entry = custody_log.entry_of(raw)
            if entry is not None:
                yield entry

    def _held_unlocked(self) -> dict[str, FileRecord]:
        """Paths custody holds (and this process has stored), loaded once; the caller
        holds `_custody_lock` and no flock on the log."""
        if self._recorded is None:
            self._recorded = self.recorded_files()
        return self._recorded

    def _recorded_paths(self) -> dict[str, FileRecord]:
        with self._custody_lock:
            return self._held_unlocked()

    def recorded_files(self) -> dict[str, FileRecord]:
        """Every evidence file custody knows, by path, as first recorded (verify reports
        a path recorded with a second hash as a conflict)."""
        return {path: records[0] for path, records in self._file_versions().items()}

    def _file_versions(
        self, entries: Iterable[dict[str, Any]] | None = None
    ) -> dict[str, list[FileRecord]]:
        """Each path with every distinct (hash, size) custody records for it, in order."""
        versions: dict[str, list[FileRecord]] = {}
        for entry in self.custody_entries() if entries is None else entries:
            files = entry.get("files")
            for f in files if isinstance(files, list) else []:
                rec = _file_record(f)
                if rec is not None and rec not in (known := versions.setdefault(rec.path, [])):
                    known.append(rec)
        return versions

    def is_captured(self, evidence_id: str, name: str, recorded: dict[str, FileRecord]) -> bool:
        """True when the file is on disk, in custody, and still hashes to what custody says."""
        target = self.target_path(evidence_id, name)
        rec = recorded.get(self.relpath(target))
        if rec is None:
            return False
        try:
            return sha256_file(target) == (rec.sha256, rec.bytes)
        except (OSError, NotRegularFileError):
            return False

    def evidence_files(self, evidence_id: str) -> list[Path]:
        """The item's complete files (no partials, no meta.json), in a stable order."""
        folder = self.evidence_dir(evidence_id)
        found = []
        for path in sorted(folder.rglob("*")):
            complete = not path.name.endswith(PARTIAL_SUFFIX) and path != folder / META_FILE
            if complete and path.is_file() and not path.is_symlink():
                found.append(path)
        return found

    # -- verify ----------------------------------------------------------------------
    def custody_head(self) -> str:
        """SHA-256 of the last custody line: what a responder notes outside the case."""
        return self._check_chain().head

    def custody_chain_errors(self) -> list[str]:
        """Chain errors, and a torn tail not yet repaired (an entry's content is lost)."""
        check = self._check_chain()
        return check.errors + ([check.torn_tail] if check.torn_tail else [])

    def verify(
        self, on_bytes: Callable[[int], None] | None = None, head: str | None = None
    ) -> VerifyReport:
        """Custody's chain, then every file under evidence/ against it. `head` is a custody
        head noted earlier outside the case: the log must still hold that line."""
        data = self._read_custody()
        check = self._check_chain(data)
        report = VerifyReport(
            chain_errors=check.errors,
            torn_tail=check.torn_tail,
            notes=check.notes,
            custody_head=check.head,
        )
        if head and head.lower() not in check.line_hashes:
            report.chain_errors.append(
                f"custody head {head} is not in custody.jsonl: entries were removed, "
                "edited or rewritten since it was noted"
            )
        entries = filter(None, map(custody_log.entry_of, custody_log.split_lines(data)))
        versions = self._file_versions(entries)
        report.conflicts = {path: recs for path, recs in versions.items() if len(recs) > 1}
        seen: set[str] = set()
        for path in self._evidence_names(set(versions)):
            rel = self.relpath(path)
            seen.add(rel)
            if rel not in versions:
                report.unrecorded.append(rel)
                continue
            report.checked += 1
            problem = _hash_problem(path, versions[rel], on_bytes)
            if problem is not None:
                report.changed.append(rel)
                if problem:
                    report.changed_reasons[rel] = problem
        report.missing = sorted(set(versions) - seen)
        return report

    def _evidence_names(self, recorded: set[str]) -> Iterator[Path]:
        """Every name under evidence/ that is not a plain folder to walk into: files,
        FIFOs, sockets, links (a link to a folder too), and a folder where custody
        recorded a file. Nothing is followed or opened here."""
        for dirpath, dirnames, filenames in os.walk(self.root / EVIDENCE_DIR):
            dirnames.sort()
            odd = [
                d
                for d in dirnames
                if _is_link(dirpath, d) or self.relpath(Path(dirpath) / d) in recorded
            ]
            for name in sorted(filenames) + odd:
                yield Path(dirpath) / name

    def total_recorded_bytes(self) -> int:
        return sum(r.bytes for r in self.recorded_files().values())

    def _check_chain(self, data: bytes | None = None) -> custody_log.ChainCheck:
        return custody_log.check_chain(self._read_custody() if data is None else data)


def _open_custody(path: Path, flags: int) -> int:
    """custody.jsonl, opened only when it is a regular file (a FIFO would hang verify)."""
    try:
        return _open_checked(path, flags)
    except FileNotFoundError:
        raise EvidenceError(f"{path} is missing: this case has no custody log") from None


def _refuse_second_hash(held: dict[str, FileRecord], rec: FileRecord) -> None:
    known = held.get(rec.path)
    if known is not None and (known.sha256, known.bytes) != (rec.sha256, rec.bytes):
        raise EvidenceError(
            f"{rec.path} is already in custody with SHA-256 {known.sha256} ({known.bytes} "
            f"bytes); refusing to record SHA-256 {rec.sha256} ({rec.bytes} bytes) for it"
        )


def _file_record(f: Any) -> FileRecord | None:
    """A custody `files` item, or None when it is malformed (the chain check names the
    edited line; this must not crash verify)."""
    if not isinstance(f, dict):
        return None
    path, digest, size = f.get("path"), f.get("sha256"), f.get("bytes")
    if isinstance(path, str) and isinstance(digest, str) and type(size) is int:
        return FileRecord(path, digest, size)
    return None


def _hash_problem(
    path: Path, records: list[FileRecord], on_bytes: Callable[[int], None] | None
) -> str | None:
    """None when the file matches a recorded hash; "" for other bytes; else why not."""
    try:
        actual = sha256_file(path, on_bytes)
    except NotRegularFileError as exc:
        return f"not a regular file: {exc.kind}"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None if any((r.sha256, r.bytes) == actual for r in records) else ""


def _write_hashed(fd: int, path: Path, chunks: Iterable[bytes | memoryview]) -> tuple[str, int]:
    """Write every chunk to fd and fsync it, closing fd; SHA-256 and size of the bytes.

    Each chunk is written and hashed before the next is asked for (a source may reuse
    its buffer then). A large file is flushed to disk as it grows
    (`cloudir.write_behind`); the fsync at the end still covers every byte before the
    caller records the file.
    """
    digest = hashlib.sha256()
    flusher = Flusher(fd)
    size = 0
    try:
        for chunk in chunks:
            write_all(fd, chunk, path)
            digest.update(chunk)
            size += len(chunk)
            flusher.wrote(len(chunk))
        with naming_the_file(path):
            flusher.close()
            os.fsync(fd)
    finally:
        with contextlib.suppress(OSError):  # already failing: the first error is raised
            flusher.close()
        os.close(fd)
    return digest.hexdigest(), size


def _is_link(dirpath: str, name: str) -> bool:
    return os.path.islink(os.path.join(dirpath, name))


def _read_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with naming_the_file(path), open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
