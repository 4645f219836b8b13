"""One command that changes a case at a time: an exclusive lock on CASE/case.lock.

Two captures into one case clear each other's temporary files, two timelines rebuild
the same folder under each other: the second command must stop and say who holds the
case. The lock is `flock(2)` on a file in the case root, so the kernel releases it the
moment its process dies (kill -9 included); no stale lock ever needs clearing by hand.
The file names the holder (pid, host, command, start time) for the refusal message.

Within one process the lock is re-entrant (`analyze` runs timeline, detect and report;
a nested hold only counts). Forked children (timeline's parser processes) close their
copy, so a child that outlives its parent does not keep the case locked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloudir.case_folder import (
    LOCK_FILE,
    FolderState,
    check_output_links,
    folder_state,
    read_case_info,
    refuse_foreign,
    refuse_inside_a_case,
)
from cloudir.errors import EvidenceError, UsageError

POLL_SECONDS = 0.2
HOLDER_LIMIT = 4096
COMMAND_LIMIT = 400


@dataclass
class _Hold:
    fd: int
    depth: int


_holds: dict[tuple[int, int], _Hold] = {}  # (st_dev, st_ino) of the case root
_holds_guard = threading.Lock()


def _close_in_child() -> None:
    for hold in _holds.values():
        with contextlib.suppress(OSError):
            os.close(hold.fd)
    _holds.clear()


os.register_at_fork(after_in_child=_close_in_child)


def current_command() -> str:
    return shlex.join(["cloudir", *sys.argv[1:]])


@contextlib.contextmanager
def hold(
    root: Path,
    command: str | None = None,
    wait: float = 0,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the case's lock for the block; exit 2 (UsageError) naming the holder if taken.

    `wait` seconds are spent retrying before giving up; `root` must be a folder.
    """
    key = _key(root)
    with _holds_guard:
        held = _holds.get(key)
        if held is not None:
            held.depth += 1
    if held is not None:
        try:
            yield
        finally:
            with _holds_guard:
                held.depth -= 1
        return
    fd = _acquire(root, command or current_command(), wait, say)
    with _holds_guard:
        _holds[key] = _Hold(fd, 1)
    try:
        yield
    finally:
        with _holds_guard:
            _holds.pop(key, None)
        _release(root, fd)


@contextlib.contextmanager
def for_command(
    root: Path,
    *,
    creates: bool,
    adopt_folder: bool = False,
    adoptable: bool = True,
    title: str | None = None,
    examiner: str | None = None,
    wait: float = 0,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """What a mutating command does around its work: judge the folder before writing
    anything into it, take the lock, and, for a folder the user chose to adopt, make the
    case in it under the lock. A folder this made only for its lock is removed again
    when the command made nothing else in it."""
    state = folder_state(root)
    if state is FolderState.CASE:
        read_case_info(root)
    elif not creates:
        raise UsageError(f"{root} is not a cloudir case (no case.json); capture into it first")
    elif state is FolderState.FOREIGN and not adopt_folder:
        raise refuse_foreign(root, adoptable)
    if state is not FolderState.CASE:
        refuse_inside_a_case(root)
    if state is not FolderState.ABSENT:
        check_output_links(root)
    made_root = state is FolderState.ABSENT
    if made_root:
        _make_folder(root)
    try:
        with hold(root, wait=wait, say=say):
            if adopt_folder and folder_state(root) is FolderState.FOREIGN:
                from cloudir.case import Case

                Case.create(root, title=title, examiner=examiner, adopt_folder=True)
            yield
    finally:
        if made_root:
            with contextlib.suppress(OSError):
                root.rmdir()  # only succeeds when nothing was made in it


def in_use_by(root: Path) -> str | None:
    """Who holds the case now (`pid N (cloudir ...) since T`), found without taking the
    lock, so a read-only command can explain what it sees mid-write."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _is_flocked(st):
            return None
        return _holder_text(fd)
    finally:
        os.close(fd)


def _is_flocked(st: os.stat_result) -> bool:
    """Whether any process holds a flock on this file, from /proc/locks (Linux). Only a
    hint depends on it: where that cannot be read, the answer is no."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK":
            try:
                major, minor, inode = fields[5].split(":")
                if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                    return True
            except ValueError:
                continue
    return False


def clear_folder_keeping_lock(root: Path) -> None:
    """Empty a case folder whose lock this process holds (`demo --force`); the lock file
    stays, or a second process could lock a fresh one while this one still works."""
    import shutil

    for entry in os.scandir(root):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _key(root: Path) -> tuple[int, int]:
    st = root.stat()
    return st.st_dev, st.st_ino


def _make_folder(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{root}: cannot make the case folder ({exc.strerror})") from None


def _acquire(root: Path, command: str, wait: float, say: Callable[[str], None] | None) -> int:
    deadline = time.monotonic() + max(0.0, wait)
    told = False
    while True:
        fd = _open_lock_file(root)
        try:
            fcntl_lock(fd)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            message = f"case {root} is in use by {holder}; wait for it or stop it"
            if time.monotonic() >= deadline:
                if wait > 0:
                    message += f" (waited {wait:g} s)"
                raise UsageError(message) from None
            if say and not told:
                say(f"{message}: waiting up to {wait:g} s")
                told = True
            time.sleep(POLL_SECONDS)
            continue
        if _still_linked(root, fd):
            _write_holder(fd, command)
            return fd
        os.close(fd)  # the holder before us unlinked it on release: lock the new one


def fcntl_lock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _open_lock_file(root: Path) -> int:
    path = root / LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EvidenceError(
                f"{path} is a symbolic link: cloudir never follows a link out of the case; "
                "remove it"
            ) from None
        if exc.errno == errno.ENOENT:  # the folder itself went away between runs
            _make_folder(root)
            return _open_lock_file(root)
        raise EvidenceError(f"{path}: cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EvidenceError(f"{path} is not a regular file: remove it")
    return fd


def _still_linked(root: Path, fd: int) -> bool:
    try:
        on_disk = os.lstat(root / LOCK_FILE)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _write_holder(fd: int, command: str) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data = json.dumps(holder).encode() + b"\n"
    with contextlib.suppress(OSError):  # the name is for people; the lock already holds
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _holder_text(fd: int) -> str:
    """`pid N (cloudir ...) since T`, or what can be said when the holder just started."""
    try:
        holder = json.loads(os.pread(fd, HOLDER_LIMIT, 0))
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        return "another cloudir command (it is just starting)"
    text = f"pid {holder.get('pid', '?')}"
    host = holder.get("host")
    if host and host != socket.gethostname():
        text += f" on {host}"
    command = str(holder.get("command", ""))
    if command:
        shown = command if len(command) <= COMMAND_LIMIT else command[: COMMAND_LIMIT - 1] + "…"
        text += f" ({shown})"
    return text + f" since {holder.get('since', '?')}"


def _release(root: Path, fd: int) -> None:
    """Unlink while still holding it, then close: a waiter that locked the old file sees
    it is gone and locks the new one, so two processes never both hold the case."""
    with contextlib.suppress(OSError):
        if _still_linked(root, fd):
            os.unlink(root / LOCK_FILE)
    os.close(fd)
