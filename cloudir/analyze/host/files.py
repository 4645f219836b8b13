"""One artifact file inside the image: is it a regular file, and if not, why not.

An intruder blinds a log reader with one link: `auth.log -> /dev/null`, a link to a
missing path, to a folder, a loop, or a folder where a file belongs. Each such entry must
cost that one file, named in the error log, never the reader. Every check goes through
the image's own file system (dissect's TargetPath): a link is resolved against the image
root, so `/dev/null` or `../../etc/shadow` name paths in the image, never on the
examiner's host.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from typing import Any

from cloudir.analyze.parsers import ErrorLog

# Each unreadable line is one error entry up to this many per file; the rest are counted.
LINE_ERRORS_PER_FILE = 1_000
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def present(path: Any) -> bool:
    """True when the entry itself exists (a dangling link counts): absent files are not
    errors, most images lack most artifacts."""
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except Exception:
        return True
    return True


def problem(path: Any) -> str | None:
    """Why this entry cannot be read as a file, or None when it is a regular file (itself
    or through links that stay in the image)."""
    from dissect.target.exceptions import SymlinkRecursionError

    try:
        own = path.lstat()
    except FileNotFoundError:
        return "missing"
    except SymlinkRecursionError:
        return "a link loop in its folder path"
    except Exception as exc:
        return f"unreadable ({_short(exc)})"
    if not stat.S_ISLNK(own.st_mode):
        return None if stat.S_ISREG(own.st_mode) else f"{_kind(own.st_mode)}, not a file"
    try:
        link = str(path.readlink())
    except Exception as exc:
        return f"a link that cannot be read ({_short(exc)})"
    try:
        final = path.stat()  # follows the chain inside the image
    except SymlinkRecursionError:
        return f"a link loop (-> {link})"
    except (FileNotFoundError, NotADirectoryError):
        return f"a link to {link}, which does not exist in the image"
    except Exception as exc:
        return f"a link to {link} that cannot be followed ({_short(exc)})"
    if stat.S_ISREG(final.st_mode):
        return None
    return f"a link to {link}, {_kind(final.st_mode)} in the image, not a file"


def listed(folder: Any, patterns: Iterable[str], errors: ErrorLog, function: str) -> list[Any]:
    """The entries dissect's plugin would glob, in its order, links and all (dissect's own
    listing drops or trips over the bad ones)."""
    found: list[Any] = []
    for pattern in patterns:
        try:
            found += [p for p in sorted(folder.glob(pattern), key=str) if p not in found]
        except FileNotFoundError:
            continue
        except Exception as exc:
            errors.add(f"{function}: {folder}/{pattern} not listed: {_short(exc)}")
    return found


def readable(path: Any, function: str, errors: ErrorLog) -> bool:
    """True for a regular file; otherwise the file is named in the error log."""
    why = problem(path)
    if why is None:
        return True
    errors.add(f"{function}: {path} not read: {why}; the other {function} files are read")
    return False


def guarded(records: Iterable[Any], function: str, path: Any, errors: ErrorLog) -> Iterator[Any]:
    """The records dissect reads from one file; a failure midway costs the rest of that
    file (logged with how far it got), not the other files."""
    count = 0
    iterator = iter(records)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            errors.add(f"{function}: {path} stopped after {count} records: {_short(exc)}")
            return
        count += 1
        yield record


class LineErrors:
    """One file's unreadable lines: each one logged up to a limit, then counted."""

    def __init__(self, function: str, path: Any, errors: ErrorLog) -> None:
        self.function = function
        self.path = path
        self.errors = errors
        self.count = 0

    def add(self, why: str, line: str) -> None:
        self.count += 1
        if self.count <= LINE_ERRORS_PER_FILE:
            text = line.strip()[:200]
            self.errors.add(f"{self.function}: {self.path}: line not read ({why}): {text!r}")

    def close(self) -> None:
        if self.count > LINE_ERRORS_PER_FILE:
            self.errors.add(
                f"{self.function}: {self.path}: {self.count - LINE_ERRORS_PER_FILE} more lines "
                "not read (not listed)"
            )


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), f"mode {oct(mode)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
