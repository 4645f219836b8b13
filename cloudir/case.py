"""The case folder: the one place every stage reads from and writes to.

Evidence under `evidence/` is written once, through a temporary name that is renamed
only after the bytes are on disk and hashed, and every file is recorded in the
append-only `custody.jsonl`. Each custody line carries the SHA-256 of the line before
it, so an edited or deleted entry breaks the chain and `verify` says where.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import shlex
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cloudir import __version__
from cloudir.case_folder import (
    CASE_FILE,
    CUSTODY_FILE,
    EVIDENCE_DIR,
    FolderState,
    folder_state,
    foreign_entries,
    read_case_info,
    refuse_foreign,
)
from cloudir.errors import EvidenceError, UsageError

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


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
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
    missing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    chain_errors: list[str] = field(default_factory=list)
    custody_head: str = ""  # SHA-256 of the last custody line: keep it outside the case

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unrecorded or self.chain_errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "custody_head_sha256": self.custody_head,
            "checked": self.checked,
            "changed": self.changed,
            "missing": self.missing,
            "unrecorded": self.unrecorded,
            "custody_chain_errors": self.chain_errors,
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
        self._recorded: set[str] | None = None
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
        case.record("case-created", None, [], note=note)
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
                self.record("evidence-opened", evidence_id, [rec], note="recorded on resume")
            self.remove_stale_partials(evidence_id)
            return True
        folder.mkdir(parents=True, exist_ok=True)
        body = dict(meta, evidence_id=evidence_id, captured=utc_now(), tool_version=__version__)
        data = json.dumps(body, indent=2, sort_keys=True, default=str).encode() + b"\n"
        rec = self.store_bytes(evidence_id, META_FILE, data)
        self.record("evidence-opened", evidence_id, [rec], note=f"{meta.get('kind', '')} item")
        return False

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
        chunks: Iterable[bytes],
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
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected_bytes is not None and size != expected_bytes:
                raise EvidenceError(f"{rel}: got {size} bytes, expected {expected_bytes}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.chmod(partial, 0o444)
        os.replace(partial, target)
        _fsync_dir(target.parent)
        return FileRecord(rel, digest.hexdigest(), size)

    def remove_stale_partials(self, evidence_id: str) -> int:
        """Temporary files an interrupted run left: never evidence, so safe to clear.

        A partial with a `.checkpoint` beside it (an EBS image download) is kept: the
        checkpoint names the blocks in it already verified, so a re-run resumes.
        """
        stale = [
            p
            for p in self.evidence_dir(evidence_id).rglob("*" + PARTIAL_SUFFIX)
            if not any(p.parent.glob(p.name.removesuffix(PARTIAL_SUFFIX) + "*.checkpoint"))
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self.record(
                "partials-removed",
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
        action: str,
        evidence_id: str | None,
        files: list[FileRecord],
        note: str = "",
        source: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one custody entry, flushed and fsynced before returning."""
        entry: dict[str, Any] = {
            "ts": utc_now(),
            "action": action,
            "actor": self.actor,
            "operator": self.operator,
            "host": socket.gethostname(),
            "tool_version": __version__,
            "command": self.command,
            "evidence_id": evidence_id,
            "files": [f.as_dict() for f in files],
            "note": note,
        }
        if source:
            entry["source"] = source
        path = self.root / CUSTODY_FILE
        with self._custody_lock, open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                entry["prev_sha256"] = hashlib.sha256(_last_line(fh)).hexdigest()
                line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
                fh.seek(0, os.SEEK_END)
                if fh.tell() and not _ends_with_newline(fh):
                    line = b"\n" + line  # a torn last line stays its own (reported) line
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
            if self._recorded is not None:
                self._recorded.update(f.path for f in files)
        return entry

    def custody_entries(self) -> Iterator[dict[str, Any]]:
        """Every readable entry; an unreadable line is skipped here and reported by verify."""
        with open(self.root / CUSTODY_FILE, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            lines = fh.readlines()
            fcntl.flock(fh, fcntl.LOCK_UN)
        for line in lines:
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry

    def _recorded_paths(self) -> set[str]:
        with self._custody_lock:
            if self._recorded is None:
                self._recorded = set(self.recorded_files())
            return self._recorded

    def recorded_files(self) -> dict[str, FileRecord]:
        """Every evidence file custody knows, by path; a later entry for a path wins."""
        files: dict[str, FileRecord] = {}
        for entry in self.custody_entries():
            for f in entry.get("files", []):
                files[f["path"]] = FileRecord(f["path"], f["sha256"], f["bytes"])
        return files

    def is_captured(self, evidence_id: str, name: str, recorded: dict[str, FileRecord]) -> bool:
        """True when the file is on disk, in custody, and still hashes to what custody says."""
        target = self.target_path(evidence_id, name)
        rec = recorded.get(self.relpath(target))
        if rec is None or not target.is_file():
            return False
        return sha256_file(target) == (rec.sha256, rec.bytes)

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
        with open(self.root / CUSTODY_FILE, "rb") as fh:
            return hashlib.sha256(_last_line(fh)).hexdigest()

    def custody_chain_errors(self) -> list[str]:
        return self._check_chain()

    def verify(self, on_bytes: Callable[[int], None] | None = None) -> VerifyReport:
        report = VerifyReport(chain_errors=self._check_chain())
        report.custody_head = self.custody_head()
        recorded = self.recorded_files()
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root / EVIDENCE_DIR):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if _is_link(dirpath, d)]:
                path = Path(dirpath) / name
                rel = self.relpath(path)
                seen.add(rel)
                rec = recorded.get(rel)
                if rec is None or path.is_symlink():
                    report.unrecorded.append(rel)
                    continue
                report.checked += 1
                if sha256_file(path, on_bytes) != (rec.sha256, rec.bytes):
                    report.changed.append(rel)
        report.missing = sorted(set(recorded) - seen)
        return report

    def total_recorded_bytes(self) -> int:
        return sum(r.bytes for r in self.recorded_files().values())

    def _check_chain(self) -> list[str]:
        errors = []
        prev = b""
        with open(self.root / CUSTODY_FILE, "rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    errors.append(f"custody.jsonl line {number}: not valid JSON")
                    prev = line
                    continue
                expected = hashlib.sha256(prev.rstrip(b"\n")).hexdigest()
                if entry.get("prev_sha256") != expected:
                    errors.append(
                        f"custody.jsonl line {number}: chain broken "
                        "(an entry before it was edited or removed)"
                    )
                prev = line
        return errors


def _ends_with_newline(fh: BinaryIO) -> bool:
    fh.seek(-1, os.SEEK_END)
    last = fh.read(1) == b"\n"
    fh.seek(0, os.SEEK_END)
    return last


def _is_link(dirpath: str, name: str) -> bool:
    return os.path.islink(os.path.join(dirpath, name))


def _read_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _last_line(fh: BinaryIO) -> bytes:
    """The last complete line of an append-only file, read from its end."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if end == 0:
        return b""
    block = 64 * 1024
    pos = end
    data = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        body = data.rstrip(b"\n")
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1 :]
    return data.rstrip(b"\n")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with open(tmp, "wb") as out:
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
