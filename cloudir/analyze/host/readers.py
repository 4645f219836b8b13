"""Per-file and per-line reading for the dissect functions one bad file can blind.

dissect.target's plugins read all of an artifact's files in one generator. A file that
cannot be opened (`auth.log -> /dev/null`, a link loop, a folder named `auth.log.1`)
raises out of it, and every later file is never read; a line one of its field parsers
chokes on (an `Accepted publickey ... ssh2` line without a key fingerprint) does the
same. Here each file is listed the way dissect lists it, checked inside the image
(`files.problem`), and read on its own, and the text logs are built into records line by
line, all with dissect's own line readers, record types and field parsers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, tzinfo
from typing import Any

from cloudir.analyze.host.files import LineErrors, guarded, listed, present, readable
from cloudir.analyze.parsers import ErrorLog

Reader = Callable[[Any, ErrorLog], Iterator[Any]]

# Where dissect 3.x looks (AuthPlugin._get_paths, MessagesPlugin._find_log_files).
AUTH_LOGS = ("/var/log", ("auth.log*", "secure*"))
SYSLOG_FOLDERS = ("/var/log", "/var/log/installer")
SYSLOG_PATTERNS = ("syslog*", "messages*", "cloud-init.log*")
# Functions whose plugin keeps its file lists in attributes: read one file at a time by
# handing the plugin a list of one.
FILE_LISTS = {
    "wtmp": ("wtmp_paths", "utmp_paths"),
    "btmp": ("btmp_paths",),
    "journal": ("journal_files",),
    "audit": ("log_paths",),
}
# dissect's line helpers log these when they skip a line
_LINE_LOGGERS = ("dissect.target.helpers.utils", "dissect.target.plugins.os.unix.log.helpers")


# -- text logs ------------------------------------------------------------------------------
class _SkipsSeen(logging.Handler):
    """Notices that dissect's line reader skipped a line (it warns once per file)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen = True

    def __enter__(self) -> _SkipsSeen:
        for name in _LINE_LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        for name in _LINE_LOGGERS:
            logging.getLogger(name).removeHandler(self)


def _timestamped_lines(path: Any, zone: tzinfo) -> Iterator[tuple[Any, str]]:
    """(time, line) as dissect's auth and messages plugins read them: ISO lines as they
    come, classic syslog lines from the end with the year rolled back."""
    from dissect.target.helpers.utils import year_rollover_helper
    from dissect.target.plugins.os.unix.log.helpers import RE_TS, is_iso_fmt, iso_readlines

    if is_iso_fmt(path):  # a generator: a file that fails here costs that file alone
        yield from iso_readlines(path)
    else:
        yield from year_rollover_helper(path, RE_TS, "%b %d %H:%M:%S", zone)


def _text_log(
    function: str,
    path: Any,
    zone: tzinfo,
    build: Callable[[Any, str, LineErrors], Any],
    errors: ErrorLog,
) -> Iterator[Any]:
    """One log file, one record per line; a line that cannot be built costs that line,
    the lines dissect skips (no timestamp it knows) are counted."""
    bad = LineErrors(function, path, errors)
    read = 0
    with _SkipsSeen() as skips:
        for when, line in guarded(_timestamped_lines(path, zone), function, path, errors):
            read += 1
            try:
                record = build(when, line, bad)
            except Exception as exc:
                bad.add(f"{type(exc).__name__}: {exc}", line)
                continue
            if record is not None:
                yield record
    bad.close()
    if skips.seen:
        skipped = _text_lines(path) - read
        if skipped > 0:
            errors.add(
                f"{function}: {path}: {skipped} lines not read: no timestamp dissect recognises"
            )


def _text_lines(path: Any) -> int:
    from dissect.target.helpers.fsutil import open_decompress

    try:
        with open_decompress(path, "rt") as handle:
            return sum(1 for line in handle if line.strip("\0 \t\r\n"))
    except Exception:
        return 0


def _zone(target: Any) -> tzinfo:
    try:
        return target.datetime.tzinfo or UTC
    except Exception:
        return UTC


def _auth_builder(target: Any) -> Any:
    """dissect's auth record builder, with a field parser that does not fail on what
    sshd writes without a key fingerprint."""
    from dissect.target.plugins.os.unix.log.auth import (
        AuthLogRecordBuilder,
        PamUnixService,
        SshdService,
    )

    class Sshd(SshdService):
        """dissect reads the last three words of an `Accepted publickey` line as protocol,
        algorithm and `HASH:fingerprint`; sshd writes `... port N ssh2` without them
        below LogLevel VERBOSE. Such a line keeps dissect's other fields (user, address,
        port, action), without the key ones."""

        @classmethod
        def parse(cls, message: str) -> dict[str, Any]:
            try:
                return super().parse(message)
            except ValueError:
                if "Accepted publickey" not in message:
                    raise
            fields = super().parse(message.replace("Accepted publickey", "Accepted"))
            last = message.split()[-1].rstrip(":")
            if last.startswith("ssh"):
                fields["ssh_protocol"] = last
            return fields

    class Builder(AuthLogRecordBuilder):
        SERVICES = {**AuthLogRecordBuilder.SERVICES, "sshd": Sshd}  # noqa: RUF012

        def __init__(self, target: Any) -> None:
            super().__init__(target)
            self.failed: str | None = None

        def _parse_additional_fields(self, service: str | None, message: str) -> dict:
            """As dissect's, but a field parser that fails leaves the line's own fields
            (time, program, pid, message) and says why, instead of losing the line."""
            self.failed = None
            parser = PamUnixService if "pam_unix(" in message else self.SERVICES.get(service)
            if parser is None:
                return {}
            try:
                return parser.parse(message)
            except Exception as exc:
                self.failed = f"{service} fields not parsed ({type(exc).__name__}: {exc})"
                return {}

    return Builder(target)


def authlog(target: Any, errors: ErrorLog) -> Iterator[Any]:
    builder = _auth_builder(target)
    zone = _zone(target)

    def build(when: Any, line: str, bad: LineErrors) -> Any:
        record = builder.build_record(when, path, line)
        if builder.failed:  # the row stays, with the line's text; the fields are missing
            errors.add(f"authlog: {path}: {builder.failed}; kept as text: {line.strip()[:200]!r}")
        return record

    folder, patterns = AUTH_LOGS
    for path in listed(target.fs.path(folder), patterns, errors, "authlog"):
        if readable(path, "authlog", errors):
            yield from _text_log("authlog", path, zone, build, errors)


def syslog(target: Any, errors: ErrorLog) -> Iterator[Any]:
    from dissect.target.plugins.os.unix.log.helpers import RE_LINE
    from dissect.target.plugins.os.unix.log.messages import MessagesPlugin, MessagesRecord

    class Messages(MessagesPlugin):
        def _find_log_files(self) -> Iterator[Any]:  # the files are listed below
            return iter(())

    plugin = Messages(target)
    zone = _zone(target)

    def build(when: Any, line: str, bad: LineErrors) -> Any:
        match = RE_LINE.search(line)
        if not match:
            bad.add("not a syslog line", line)
            return None
        return MessagesRecord(ts=when, **match.groupdict(), source=path, _target=target)

    for folder in SYSLOG_FOLDERS:
        for path in listed(target.fs.path(folder), SYSLOG_PATTERNS, errors, "syslog"):
            if not readable(path, "syslog", errors):
                continue
            if "cloud-init" in path.name:
                yield from guarded(plugin._parse_cloud_init_log(path, zone), "syslog", path, errors)
            else:
                yield from _text_log("syslog", path, zone, build, errors)


# -- shell histories ------------------------------------------------------------------------
def commandhistory(target: Any, errors: ErrorLog) -> Iterator[Any]:
    """Every user's history files, each read alone by dissect's parsers; a bad one (a
    link to /dev/null, a loop) is named and the next user's is still read."""
    from dissect.target.plugins.os.unix.history import CommandHistoryPlugin

    class History(CommandHistoryPlugin):
        def _find_history_files(self) -> list:  # found below, one home at a time
            return []

    plugin = History(target)
    for user, home in _homes(target, errors):
        for shell, relative in plugin.COMMAND_HISTORY_RELATIVE_PATHS:
            path = home.joinpath(relative)
            if not present(path) or not readable(path, "commandhistory", errors):
                continue
            if shell == "zsh":
                records = plugin.parse_zsh_history(path, user)
            elif shell == "fish":
                records = plugin.parse_fish_history(path, user)
            else:
                records = plugin.parse_generic_history(path, user, shell)
            yield from guarded(records, "commandhistory", path, errors)


def _homes(target: Any, errors: ErrorLog) -> Iterator[tuple[Any, Any]]:
    """(user record, home) as dissect's `user_details.all_with_home` gives them, one user
    at a time: a home that is a link loop costs that user."""
    seen: list[Any] = []
    for user in guarded(target.users(), "commandhistory", "users", errors):
        if not user.home:
            continue
        try:
            home = target.user_details.get(user).home_path
            if not home.is_dir():
                continue
        except Exception as exc:
            errors.add(f"commandhistory: home {user.home} of {user.name} not read: {exc}")
            continue
        seen.append(home)
        yield user, home
    for home, criterion in guarded(target.misc_user_paths(), "commandhistory", "/home", errors):
        if not criterion or any(str(home) == str(known) for known in seen):
            continue
        try:
            details = target.user_details.find(**{criterion[0]: criterion[1]})
        except Exception:
            details = None
        if details is not None:
            yield details.user, home


# -- plugins that keep their file list ------------------------------------------------------
def one_file_at_a_time(function: str, attributes: tuple[str, ...]) -> Reader:
    """The plugin's own function, called once per file by handing it a list of one."""

    def read(target: Any, errors: ErrorLog) -> Iterator[Any]:
        plugin, method = target.get_function(function)
        if not all(hasattr(plugin, name) for name in attributes):  # another dissect
            yield from method()
            return
        kept = {name: list(getattr(plugin, name)) for name in attributes}
        try:
            for name, paths in kept.items():
                for path in paths:
                    if not readable(path, function, errors):
                        continue
                    for other in attributes:
                        setattr(plugin, other, [path] if other == name else [])
                    yield from guarded(method(), function, path, errors)
        finally:
            for name, paths in kept.items():
                setattr(plugin, name, paths)

    return read


# -- cron and ssh: the plugin's own listing, then one file per call --------------------------
def cronjobs(target: Any, errors: ErrorLog) -> Iterator[Any]:
    """dissect lists crontabs when the plugin starts, and a link loop among them stops
    the whole plugin; here they are listed from the same folders, each named if bad."""
    from dissect.target.plugins.os.unix.cronjobs import CronjobPlugin

    class Cron(CronjobPlugin):
        def find_crontabs(self) -> Iterator[Any]:  # listed below
            return iter(())

    plugin = Cron(target)
    for path in _crontabs(target, plugin, errors):
        if readable(path, "cronjobs", errors):
            plugin.crontabs = [path]
            yield from guarded(plugin.cronjobs(), "cronjobs", path, errors)


def _crontabs(target: Any, plugin: Any, errors: ErrorLog) -> Iterator[Any]:
    for name in plugin.CRONTAB_DIRS:
        folder = target.fs.path(name)
        if not present(folder):
            continue
        try:
            entries = list(folder.iterdir())
        except NotADirectoryError:
            continue
        except Exception as exc:
            errors.add(f"cronjobs: {folder} not listed: {type(exc).__name__}: {exc}")
            continue
        # /var/spool/cron/crontabs inside /var/spool/cron is a folder of crontabs, not one
        yield from (e for e in entries if str(e) not in plugin.CRONTAB_DIRS)
    for name in plugin.CRONTAB_FILES:
        path = target.fs.path(name)
        if present(path):
            yield path


def openssh(function: str) -> Reader:
    """OpenSSH's `authorized_keys` or `known_hosts`, one file per call: its file listing
    (`ssh_directory_globs`) is asked once for the list, then made to give one file."""

    def read(target: Any, errors: ErrorLog) -> Iterator[Any]:
        from dissect.target.plugins.apps.ssh.openssh import OpenSSHPlugin

        class OneFile(OpenSSHPlugin):
            listing: list[tuple[Any, Any]] | None = None
            only: tuple[Any, Any] | None = None

            def ssh_directory_globs(self, glob_user: str, glob_sshd: str) -> Iterator[Any]:
                if self.only is not None:
                    yield self.only
                    return
                files = super().ssh_directory_globs(glob_user, glob_sshd)
                self.listing = list(guarded(files, f"ssh.{function}", "~/.ssh", errors))

        plugin = OneFile(target)
        method = getattr(plugin, function)
        list(method())  # fills plugin.listing, yields nothing
        for details, path in plugin.listing or []:
            if readable(path, f"ssh.{function}", errors):
                plugin.only = (details, path)
                yield from guarded(method(), f"ssh.{function}", path, errors)
        if function == "known_hosts":  # PuTTY's, the other ssh client dissect reads
            yield from _optional(target, "putty.known_hosts", errors)

    return read


def _optional(target: Any, function: str, errors: ErrorLog) -> Iterator[Any]:
    from dissect.target.exceptions import PluginNotFoundError, UnsupportedPluginError

    try:
        _, method = target.get_function(function)
        records = method()
    except (PluginNotFoundError, UnsupportedPluginError):
        return
    yield from guarded(records, function, "all files", errors)


READERS: dict[str, Reader] = {
    "authlog": authlog,
    "syslog": syslog,
    "commandhistory": commandhistory,
    "cronjobs": cronjobs,
    "ssh.authorized_keys": openssh("authorized_keys"),
    "ssh.known_hosts": openssh("known_hosts"),
    **{function: one_file_at_a_time(function, names) for function, names in FILE_LISTS.items()},
}
