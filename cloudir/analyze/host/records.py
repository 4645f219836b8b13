"""dissect records to timeline rows: a generic mapping for any record, curated ones for
the artifacts a responder reads first.

Generic: every datetime field of a record is a row (its `timestamp_desc` names the
field), the whole record goes to `raw`. A record without any time (a cron entry, an SSH
key, a user) takes the modification time of the file it came from, and says so.
Curated: the artifacts below also fill `user`, `src_ip`, `action`, `target`, `outcome`
and a readable `message`, and put in `raw` the fields Sigma rules read (docs/detection.md).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cloudir.analyze.host.rows import epoch_time, host_row, iso_time, json_value, raw_json
from cloudir.analyze.parsers import ErrorLog, Logsource, Row, RowSource

MESSAGE_LIMIT = 400


@dataclass
class Mapped:
    """What a curated mapper says about one record, beyond its times."""

    artifact: str
    message: str
    user: str | None = None
    src_ip: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # added to raw, for the rules
    # Time fields that are deadlines worked out from another time, not events: kept in
    # raw, never rows (shadow's max_age of 99999 days is a row in the 2290s otherwise,
    # and every report would flag it as an implausible time).
    deadlines: tuple[str, ...] = ()


Mapper = Callable[[dict[str, Any], str], Mapped]


@dataclass(frozen=True)
class Artifact:
    """One dissect function, how its records become rows, and what those rows are.

    `rows` declares the timeline artifacts the mapper writes and the Sigma logsources they
    serve (the host parser declares them from this table, so a new host artifact is one
    entry here); left empty, the rows are the generic mapping's, under `artifact`.
    """

    function: str  # dissect's function name, dotted for namespaces ("ssh.authorized_keys")
    artifact: str  # the timeline's artifact for the generic mapping
    mapper: Mapper | None = None
    rows: tuple[RowSource, ...] = ()

    def row_sources(self) -> tuple[RowSource, ...]:
        return self.rows or (
            RowSource(self.artifact, f"dissect `{self.function}` records, a row per time"),
        )


# -- curated mappers -------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _syslog_extra(fields: dict[str, Any], host: str | None) -> dict[str, Any]:
    """The keys SigmaHQ's syslog rules use."""
    return {
        "timestamp": fields.get("ts"),
        "host": host,
        "program": fields.get("service"),
        "pid": fields.get("pid"),
        "message": fields.get("message"),
    }


def _line(fields: dict[str, Any]) -> str:
    pid = f"[{fields['pid']}]" if fields.get("pid") is not None else ""
    return f"{fields.get('service') or '?'}{pid}: {fields.get('message') or ''}"


_INVALID_USER = re.compile(r"\binvalid user\s+(\S+)")
_PAM_FIELD = re.compile(r"\b(rhost|user)=(\S+)")
# sshd lines where dissect's `user` is not an account (a reverse-DNS name, say)
_NO_USER = ("reverse mapping checking", "POSSIBLE BREAK-IN ATTEMPT", "Address ")
TIME_NAMES = {"ts": "Event Time"}


def auth(fields: dict[str, Any], host: str) -> Mapped:
    action = _text(fields.get("action"))
    user = _text(fields.get("user"))
    message = _text(fields.get("message")) or ""
    remote = _text(fields.get("remote_ip"))
    invalid = _INVALID_USER.search(message)
    if invalid:  # dissect reads "Failed password for invalid user admin" as user "invalid"
        user = invalid.group(1)
    elif any(marker in message for marker in _NO_USER):
        user = None
    if "pam_unix" in (fields.get("service") or "") or "pam_unix" in message:
        pam = dict(_PAM_FIELD.findall(message))  # "authentication failure; ... rhost=IP user=x"
        user = user or pam.get("user")
        remote = remote or _address(pam.get("rhost"))
    outcome = None
    if action:
        lowered = action.lower()
        outcome = "failure" if ("fail" in lowered or "invalid" in lowered) else None
        outcome = outcome or ("success" if "accepted" in lowered else None)
    return Mapped(
        "linux:auth",
        _line(fields),
        user=user,
        src_ip=remote,
        action=f"{fields.get('service') or 'auth'}:{action}"
        if action
        else _text(fields.get("service")),
        outcome=outcome,
        extra=_syslog_extra(fields, host),
    )


_CRON_USER = re.compile(r"^\((\S+)\) ")  # "(deploy) CMD (...)", "(root) REPLACE (root)"


def syslog(fields: dict[str, Any], host: str) -> Mapped:
    service = _text(fields.get("service")) or ""
    if service.upper() in ("CRON", "CROND", "ANACRON", "CRONTAB"):
        user = _CRON_USER.match(_text(fields.get("message")) or "")
        return Mapped(
            "linux:cron",
            _line(fields),
            user=user.group(1) if user else None,
            action=service,
            extra=_syslog_extra(fields, host),
        )
    return Mapped(
        "linux:syslog", _line(fields), action=service or None, extra=_syslog_extra(fields, host)
    )


def journal(fields: dict[str, Any], host: str) -> Mapped:
    program = _text(fields.get("syslog_identifier") or fields.get("comm"))
    pid = fields.get("pid") or fields.get("syslog_pid")
    message = _text(fields.get("message")) or ""
    extra = {"timestamp": fields.get("ts"), "host": host, "program": program, "pid": pid,
             "message": message}  # fmt: skip
    return Mapped(
        "linux:journal",
        f"{program or '?'}[{pid}]: {message}" if pid else f"{program or '?'}: {message}",
        user=_text(fields.get("uid")),
        action=program,
        extra=extra,
    )


_AUDIT_PAIR = re.compile(r"([\w-]+)=(?:\"([^\"]*)\"|'([^']*)'|(\S+))")
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


def audit_fields(text: str) -> dict[str, str]:
    """auditd's key=value text as a dict, as auditd wrote it; the quoted `msg='...'` of
    user-space records is opened too (its keys never override the outer ones), and the
    hex form auditd gives arguments holding spaces (`a1=2F746D70...`) is decoded."""
    found: dict[str, str] = {}
    for key, double, single, bare in _AUDIT_PAIR.findall(text):
        if single and key == "msg":
            for inner_key, value in audit_fields(single).items():
                found.setdefault(inner_key, value)
            continue
        value = double or single or bare
        if bare and re.fullmatch(r"a\d+|proctitle|cmd", key) and _HEX.match(bare):
            value = bytes.fromhex(bare).replace(b"\0", b" ").decode("utf-8", "replace")
        found.setdefault(key, value)
    return found


def audit(fields: dict[str, Any], host: str) -> Mapped:
    """One auditd record; an EXECVE record is also a process creation (its arguments)."""
    kind = _text(fields.get("audit_type")) or "?"
    pairs = audit_fields(_text(fields.get("message")) or "")
    extra: dict[str, Any] = {"type": kind, **pairs}
    target = pairs.get("exe") or pairs.get("name")
    if kind == "EXECVE":
        count = int(pairs["argc"]) if pairs.get("argc", "").isdigit() else 0
        args = [pairs.get(f"a{n}", "") for n in range(count)] if count else []
        if not args:
            args = [v for k, v in sorted(pairs.items()) if re.fullmatch(r"a\d+", k)]
        extra["CommandLine"] = " ".join(args)
        extra["Image"] = args[0] if args else ""
        target = extra["Image"] or target
    result = pairs.get("res") or pairs.get("success")
    outcome = None
    if result:
        outcome = "success" if result.lower() in ("success", "yes", "1") else "failure"
    user = pairs.get("acct") or pairs.get("auid") or pairs.get("uid")
    return Mapped(
        "linux:auditd",
        f"audit {kind}: {_text(fields.get('message')) or ''}",
        user=None if user in (None, "4294967295", "-1", "unset") else user,
        src_ip=_address(pairs.get("addr")),
        action=f"auditd:{kind}",
        target=target,
        outcome=outcome,
        extra=extra,
    )


def history(fields: dict[str, Any], host: str) -> Mapped:
    """A typed command as a process creation: the fields SigmaHQ's rules match on."""
    command = _text(fields.get("command")) or ""
    shell = _text(fields.get("shell")) or "bash"
    user = _text(fields.get("username"))
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        words = command.split()
    image = words[0] if words else ""
    return Mapped(
        f"linux:{shell}_history" if shell in ("bash", "zsh") else "linux:shell_history",
        f"{user or '?'}$ {command}",
        user=user,
        action=f"{shell}:command",
        target=image or None,
        extra={
            "Image": image,
            "CommandLine": command,
            "User": user,
            "ParentImage": f"/bin/{shell}",
            "CurrentDirectory": fields.get("user_home"),
        },
    )


def login(kind: str) -> Mapper:
    def mapped(fields: dict[str, Any], host: str) -> Mapped:
        user = _text(fields.get("ut_user"))
        remote = _text(fields.get("ut_host")) or _text(fields.get("ut_addr"))
        what = _text(fields.get("ut_type")) or kind
        return Mapped(
            f"linux:{kind}",
            f"{kind} {what}: {user or '?'} on {fields.get('ut_line') or '?'} from {remote or '-'}",
            user=user,
            src_ip=_address(remote) or _address(fields.get("ut_addr")),
            action=f"{kind}:{what}",
            outcome="failure" if kind == "btmp" else None,
        )

    return mapped


def lastlog(fields: dict[str, Any], host: str) -> Mapped:
    user = _text(fields.get("username") or fields.get("uid"))
    remote = _text(fields.get("remote_host") or fields.get("ut_host"))
    return Mapped(
        "linux:lastlog",
        f"last login of {user or '?'} from {remote or '-'}",
        user=user,
        src_ip=_address(remote),
        action="lastlog:login",
    )


def user_account(fields: dict[str, Any], host: str) -> Mapped:
    name = _text(fields.get("name"))
    return Mapped(
        "linux:users",
        f"user {name} uid {fields.get('uid')} gid {fields.get('gid')} "
        f"home {fields.get('home')} shell {fields.get('shell')}",
        user=name,
        action="account:user",
        target=name,
    )


def shadow(fields: dict[str, Any], host: str) -> Mapped:
    name = _text(fields.get("name"))
    return Mapped(
        "linux:shadow",
        f"password entry of {name} (last change {json_value(fields.get('last_change'))})",
        user=name,
        action="account:password",
        target=name,
        deadlines=("min_age", "max_age"),
    )


_SYSTEM_CRONTAB = re.compile(r"^/etc/(crontab|cron\.d/)")


def cronjob(fields: dict[str, Any], host: str) -> Mapped:
    """A cron job, or one of the environment lines (`SHELL=/bin/sh`) dissect yields with
    them; a system crontab's line names its user before the command."""
    if "command" not in fields and "key" in fields:
        return Mapped(
            "linux:cron_env",
            f"cron environment in {fields.get('source')}: {fields.get('key')}="
            f"{fields.get('value') or ''}",
            action="cron:environment",
            target=_text(fields.get("key")),
        )
    schedule = " ".join(
        str(fields.get(k) or "") for k in ("minute", "hour", "day", "month", "weekday")
    )
    command = _text(fields.get("command")) or ""
    user = _text(fields.get("username"))
    if _SYSTEM_CRONTAB.match(str(fields.get("source") or "")) and " " in command.strip():
        user, command = command.strip().split(None, 1)
    return Mapped(
        "linux:cron_job",
        f"cron job of {user or '?'}: {schedule} {command}",
        user=user,
        action="cron:job",
        target=command or None,
    )


def authorized_key(fields: dict[str, Any], host: str) -> Mapped:
    user = _text(fields.get("username"))
    comment = _text(fields.get("comment")) or ""
    return Mapped(
        "linux:ssh_authorized_key",
        f"authorized key of {user or '?'}: {fields.get('key_type') or '?'} {comment}".rstrip(),
        user=user,
        action="ssh:authorized_key",
        target=comment or None,
    )


def known_host(fields: dict[str, Any], host: str) -> Mapped:
    user = _text(fields.get("username"))
    remote = _text(fields.get("host"))
    return Mapped(
        "linux:ssh_known_host",
        f"known host of {user or '?'}: {remote}",
        user=user,
        src_ip=_address(remote),
        action="ssh:known_host",
        target=remote,
    )


def service(fields: dict[str, Any], host: str) -> Mapped:
    name = _text(fields.get("name"))
    command = _text(fields.get("ExecStart") or fields.get("exec_start"))
    return Mapped(
        "linux:service",
        f"service {name}: {command or fields.get('source') or ''}".rstrip(": "),
        action="service:installed",
        target=name,
    )


def package(fields: dict[str, Any], host: str) -> Mapped:
    what = _text(fields.get("operation") or fields.get("status"))
    name = _text(fields.get("package_name") or fields.get("name"))
    return Mapped(
        "linux:package",
        f"package {what or '?'}: {name or fields.get('command') or ''}",
        user=_text(fields.get("requested_by_user")),
        action=f"package:{what}" if what else "package",
        target=name,
    )


def container(fields: dict[str, Any], host: str) -> Mapped:
    name = _text(fields.get("name"))
    cid = (_text(fields.get("container_id")) or "")[:12]
    state = "running" if fields.get("running") else "stopped"
    return Mapped(
        "docker:container",
        f"container {name or cid} ({cid}, image {fields.get('image')}, {state}): "
        f"{fields.get('command') or ''}".rstrip(": "),
        action="docker:container",
        target=name or cid or None,
    )


def container_image(fields: dict[str, Any], host: str) -> Mapped:
    tag = _text(fields.get("tag") or fields.get("name"))
    return Mapped(
        "docker:image",
        f"image {tag} ({fields.get('image_id')})",
        action="docker:image",
        target=tag,
    )


def container_log(fields: dict[str, Any], host: str) -> Mapped:
    cid = (_text(fields.get("container")) or "")[:12]
    return Mapped(
        "docker:log",
        f"container {cid} {fields.get('stream') or ''}: {fields.get('message') or ''}",
        action=f"docker:log:{fields.get('stream') or '?'}",
        target=cid or None,
    )


# What SigmaHQ's Linux rules read. A typed command is a process creation only when its
# row has a command line (auditd rows other than EXECVE have none).
SYSLOG = Logsource("linux", "syslog")
PROCESS_CREATION = Logsource(
    "linux",
    category="process_creation",
    condition="json_extract_string(raw, '$.CommandLine') IS NOT NULL",
)


def _history_rows(shell: str) -> RowSource:
    typed_in = "another shell (ash, fish, ...)" if shell == "shell" else shell
    return RowSource(
        f"linux:{shell}_history",
        f"one command typed in {typed_in}, as a process creation",
        (PROCESS_CREATION,),
    )


LINUX: tuple[Artifact, ...] = (
    Artifact(
        "authlog",
        "linux:auth",
        auth,
        rows=(
            RowSource(
                "linux:auth",
                "one line of auth.log/secure: sshd, sudo, su, PAM",
                (Logsource("linux", "auth"), Logsource("linux", "sshd"), SYSLOG),
            ),
        ),
    ),
    Artifact(
        "syslog",
        "linux:syslog",
        syslog,
        rows=(
            RowSource("linux:syslog", "one syslog line", (SYSLOG,)),
            RowSource(
                "linux:cron",
                "one syslog line of the cron daemon",
                (SYSLOG, Logsource("linux", "cron")),
            ),
        ),
    ),
    Artifact(
        "journal",
        "linux:journal",
        journal,
        rows=(RowSource("linux:journal", "one systemd journal entry", (SYSLOG,)),),
    ),
    Artifact(
        "audit",
        "linux:auditd",
        audit,
        rows=(
            RowSource(
                "linux:auditd",
                "one auditd record; EXECVE also as a process creation",
                (Logsource("linux", "auditd"), PROCESS_CREATION),
            ),
        ),
    ),
    Artifact(
        "commandhistory",
        "linux:shell_history",
        history,
        rows=tuple(_history_rows(shell) for shell in ("bash", "zsh", "shell")),
    ),
    Artifact("wtmp", "linux:wtmp", login("wtmp")),
    Artifact("btmp", "linux:btmp", login("btmp")),
    Artifact("lastlog", "linux:lastlog", lastlog),
    Artifact("users", "linux:users", user_account),
    Artifact("passwords", "linux:shadow", shadow),
    Artifact(
        "cronjobs",
        "linux:cron_job",
        cronjob,
        rows=(
            RowSource("linux:cron_job", "one crontab line: a scheduled command"),
            RowSource("linux:cron_env", "one crontab environment line (`SHELL=/bin/sh`)"),
        ),
    ),
    Artifact("services", "linux:service", service),
    Artifact("ssh.authorized_keys", "linux:ssh_authorized_key", authorized_key),
    Artifact("ssh.known_hosts", "linux:ssh_known_host", known_host),
    Artifact("packagemanager.logs", "linux:package", package),
    Artifact("dpkg.log", "linux:package", package),
    Artifact("docker.containers", "docker:container", container),
    Artifact("docker.images", "docker:image", container_image),
    Artifact("docker.logs", "docker:log", container_log),
)

WINDOWS: tuple[Artifact, ...] = tuple(
    Artifact(function, f"windows:{function.replace('.', '_')}")
    for function in (
        "evtx", "evt", "services", "tasks", "runkeys", "prefetch", "shimcache",
        "amcache.applications", "amcache.files", "userassist", "bam", "recyclebin",
        "lnk", "powershell_history", "users",
    )
)  # fmt: skip


def row_sources() -> tuple[RowSource, ...]:
    """Every timeline artifact the Linux and Windows tables write, each named once."""
    seen: dict[str, RowSource] = {}
    for spec in LINUX + WINDOWS:
        for source in spec.row_sources():
            seen.setdefault(source.artifact, source)
    return tuple(seen.values())


def artifacts_for(os_name: str) -> tuple[Artifact, ...]:
    if os_name == "windows":
        return WINDOWS
    if os_name in ("linux", "unix", "debian", "redhat", "suse", "alpine", "amazon"):
        return LINUX
    return ()


# -- the generic part ------------------------------------------------------------------------
def record_fields(record: Any) -> dict[str, Any]:
    """The record's own fields, without flow.record's bookkeeping (`_source`, ...)."""
    return {k: v for k, v in record._asdict().items() if not k.startswith("_")}


def datetime_fields(record: Any) -> list[str]:
    return [n for n, f in record._desc.fields.items() if f.typename == "datetime"]


class RecordRows:
    """Rows for the records of one target; caches the mtimes of the files records cite."""

    def __init__(self, target: Any, host: str | None, evidence_id: str, errors: ErrorLog) -> None:
        self.target = target
        self.host = host
        self.evidence_id = evidence_id
        self.errors = errors
        self._mtimes: dict[str, str | None] = {}

    def rows(self, record: Any, spec: Artifact, position: int) -> Iterator[Row]:
        """`position` is the record's place in its function's output: part of the event
        id, so two identical records (one log line twice in a second) stay two rows."""
        fields = record_fields(record)
        mapped = spec.mapper(fields, self.host or "") if spec.mapper else None
        artifact = mapped.artifact if mapped else spec.artifact
        raw_fields = dict(fields)
        raw_fields["record_type"] = record._desc.name
        if mapped:
            raw_fields.update({k: v for k, v in mapped.extra.items() if k not in raw_fields})
        raw = raw_json(raw_fields)
        message = mapped.message if mapped else generic_message(record._desc.name, fields)
        message = message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "…"
        columns = {
            "user": mapped.user if mapped else None,
            "src_ip": mapped.src_ip if mapped else _first_address(fields),
            "action": (mapped.action if mapped else None) or record._desc.name,
            "target": mapped.target if mapped else None,
            "outcome": mapped.outcome if mapped else None,
        }
        deadlines = mapped.deadlines if mapped else ()
        times = [
            (name, iso_time(fields.get(name)))
            for name in datetime_fields(record)
            if name not in deadlines
        ]
        times = [(name, when) for name, when in times if when]
        if not times:
            times = [self._file_time(fields)]
        for name, when in times:
            yield host_row(
                when=when,
                desc=TIME_NAMES.get(name, name),
                artifact=artifact,
                host=self.host,
                evidence_id=self.evidence_id,
                raw=raw,
                message=message,
                occurrence=position,
                user=columns["user"],
                src_ip=columns["src_ip"],
                action=columns["action"],
                target=columns["target"],
                outcome=columns["outcome"],
            )

    def _file_time(self, fields: dict[str, Any]) -> tuple[str, str | None]:
        """A timeless record's row: the modification time of the file it came from."""
        source = fields.get("source") or fields.get("path")
        if source is None:
            return ("No Time", None)
        key = str(source)
        if key not in self._mtimes:
            try:
                stat = self.target.fs.path(key).lstat()
                self._mtimes[key] = epoch_time(stat.st_mtime)
            except Exception:  # the file a record cites may be gone or unreadable
                self._mtimes[key] = None
        when = self._mtimes[key]
        return (f"Source File Modification Time ({key})", when) if when else ("No Time", None)


def generic_message(name: str, fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if key in ("hostname", "domain") or value is None or value == "":
            continue
        parts.append(f"{key}={json_value(value)}")
    return f"{name}: " + "; ".join(parts)


_ADDRESS_FIELDS = ("remote_ip", "src_ip", "source_ip", "client_ip", "ip", "remote_host")


def _first_address(fields: dict[str, Any]) -> str | None:
    for name in _ADDRESS_FIELDS:
        address = _address(fields.get(name))
        if address:
            return address
    return None


def _address(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None
