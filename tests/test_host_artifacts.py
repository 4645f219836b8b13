"""Disk images through dissect.target, checked against real third-party evidence.

Ground truth is computed here from the corpus files themselves (loghub's structured CSVs,
the raw history and audit files), never from what cloudir prints. Where dissect reads
fewer or more records than the file holds, the difference is asserted with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, ext4_image, query

pytestmark = pytest.mark.corpus

LATER_SEGMENT = "a later segment of a split image; read with its first segment"
NO_FS = "no file system found"

# One small ext2 file system in every container format dfvfs ships; the first file of
# each set is what dissect opens, the others must sit beside it.
DFVFS_SETS = {
    "raw": ["ext2.raw"],
    "ewf": ["ext2.E01"],
    "ewf-split": ["ext2.split.E01", "ext2.split.E02"],
    "raw-split": ["ext2.splitraw.000", "ext2.splitraw.001"],
    "vmdk": ["ext2.vmdk"],
    "vhd": ["ext2.vhd"],
    "qcow2": ["ext2.qcow2"],
}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def iso(moment: datetime) -> str:
    """The text `strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f')` gives in DuckDB."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def epoch_iso(text: str) -> str:
    """'1481076992.414' as ISO text, without float rounding."""
    seconds, _, fraction = text.partition(".")
    moment = datetime.fromtimestamp(int(seconds), UTC)
    return iso(moment.replace(microsecond=int(fraction.ljust(6, "0")[:6])))


def one_line(reason: str) -> bool:
    return "\n" not in reason and "Traceback" not in reason


def errors_of(case: Path) -> list[dict[str, Any]]:
    text = (case / "timeline/errors.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def capture(case: Path, *paths: Path, kind: str = "auto") -> dict[str, str]:
    """Capture each path as one evidence item; returns {source file or folder name: id}."""
    result = cloudir(
        "capture", "files", "--case", str(case), "--kind", kind, *map(str, paths), "--json"
    )
    assert result.code == 0, result.stderr
    return {Path(item["source"]).name: item["evidence_id"] for item in result.json()["items"]}


# -- 1. one file system in seven container formats ------------------------------------------
@pytest.fixture(scope="module")
def dfvfs_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each set copied into its own folder (a split set must stay together in one item:
    capture files refuses symbolic links), one case, one timeline with the fs timeline on."""
    base = tmp_path_factory.mktemp("dfvfs")
    folders = []
    for name, files in DFVFS_SETS.items():
        folder = base / "sets" / name
        folder.mkdir(parents=True)
        for file in files:
            shutil.copyfile(corpus / "images/dfvfs" / file, folder / file)
        folders.append(folder)
    case = base / "case"
    ids = capture(case, *folders)
    result = cloudir("timeline", "--case", str(case), "--fs-timeline", "--json")
    assert result.code == 0, result.stderr
    return {"case": case, "ids": ids, "summary": result.json()}


def test_every_format_is_captured_as_a_disk_image_and_later_segments_are_not_opened_alone(
    dfvfs_case: dict[str, Any],
) -> None:
    case, ids = dfvfs_case["case"], dfvfs_case["ids"]
    assert set(ids) == set(DFVFS_SETS)
    for name, files in DFVFS_SETS.items():
        meta = json.loads((case / "evidence" / ids[name] / "meta.json").read_text())
        assert meta["kind"] == "disk-image", name
        held = sorted(p.name for p in (case / "evidence" / ids[name] / "files").iterdir())
        assert held == sorted(files), name
    # 7 first segments parsed; the 2 later segments listed as unparsed, with the reason.
    summary = dfvfs_case["summary"]
    assert summary["files"] == 7
    later = {
        f"evidence/{ids['ewf-split']}/files/ext2.split.E02",
        f"evidence/{ids['raw-split']}/files/ext2.splitraw.001",
    }
    assert set(summary["unparsed_files"]) == later
    reasons = {e["path"]: e["reason"] for e in errors_of(case) if e["path"] in later}
    assert reasons == dict.fromkeys(later, LATER_SEGMENT)
    for entry in errors_of(case):
        assert one_line(entry["reason"]), entry


def listing(image: Path) -> set[tuple[str, int, int, str]]:
    """(path, size, mtime, md5 of the content) of every file dissect finds in the image."""
    from cloudir.analyze.host.target import open_target

    target = open_target(image)
    found = set()
    for root, dirs, files in target.fs.walk("/"):
        for name in dirs + files:
            path = target.fs.path(root).joinpath(name)
            stat = path.lstat()
            digest = "" if name in dirs else hashlib.md5(path.read_bytes()).hexdigest()
            found.add((str(path), stat.st_size, int(stat.st_mtime), digest))
    return found


def test_every_captured_format_opens_to_the_same_file_system(dfvfs_case: dict[str, Any]) -> None:
    """What the host parser opens (the captured copies, first segment) holds the same
    files, sizes, times and contents in every format."""
    case, ids = dfvfs_case["case"], dfvfs_case["ids"]
    listings = {
        name: listing(case / "evidence" / ids[name] / "files" / files[0])
        for name, files in DFVFS_SETS.items()
    }
    reference = listings["raw"]
    # Checkable by hand with `debugfs -R 'ls -l /' ext2.raw`: 2 folders, 4 files.
    assert {p for p, *_ in reference} == {
        "/a_directory",
        "/a_directory/a_file",
        "/a_directory/another_file",
        "/a_link",
        "/lost+found",
        "/passwords.txt",
    }
    for name, found in listings.items():
        assert found == reference, name


def test_every_format_gives_the_same_file_system_timeline(dfvfs_case: dict[str, Any]) -> None:
    pytest.importorskip("cloudir.analyze.host.fs_timeline")
    case, ids = dfvfs_case["case"], dfvfs_case["ids"]
    rows = query(
        case,
        "SELECT evidence_id, strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f') AS ts, "
        "timestamp_desc, target, message FROM timeline WHERE artifact = 'fs:entry'",
    )
    by_item: dict[str, set[tuple[Any, ...]]] = {ids[name]: set() for name in DFVFS_SETS}
    for row in rows:
        by_item[row["evidence_id"]].add(
            (row["ts"], row["timestamp_desc"], row["target"], row["message"])
        )
    reference = by_item[ids["raw"]]
    assert reference, "no fs:entry rows for ext2.raw"
    # Every entry of the file system (debugfs -R 'ls -l /' ext2.raw) and nothing else.
    assert {t for _, _, t, _ in reference} == {
        "/",
        "/a_directory",
        "/a_directory/a_file",
        "/a_directory/another_file",
        "/a_link",
        "/lost+found",
        "/passwords.txt",
    }
    # debugfs -R 'stat /passwords.txt': m, a and c all 0x60f97ba4; ext2 has no birth time.
    assert {(ts, desc) for ts, desc, t, _ in reference if t == "/passwords.txt"} == {
        ("2021-07-22T14:07:32.000000", "Modification Time; Access Time; Change Time")
    }
    for name in DFVFS_SETS:
        assert by_item[ids[name]] == reference, name
    for entry in errors_of(case):
        assert one_line(entry["reason"]), entry


def test_split_raw_captured_as_two_paths_does_not_open_the_later_segment_alone(
    corpus: Path, tmp_path: Path
) -> None:
    folder = corpus / "images/dfvfs"
    case = tmp_path / "case"
    capture(case, folder / "ext2.splitraw.000", folder / "ext2.splitraw.001")
    assert cloudir("timeline", "--case", str(case), "--no-fs-timeline").code == 0
    reasons = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in errors_of(case)}
    assert reasons.get("ext2.splitraw.001") == LATER_SEGMENT


# -- 2. not a file system: one line in errors.jsonl, the rest of the case still parsed ------
STOP_LOGGING = "aws.defense-evasion.cloudtrail-stop.json"


@pytest.fixture(scope="module")
def bad_images_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("bad-images")
    truncated = base / "ext2-truncated.raw"
    truncated.write_bytes((corpus / "images/dfvfs/ext2.raw").read_bytes()[: 64 << 10])
    case = base / "case"
    ids = capture(case, corpus / "images/dfvfs/iso9660.raw", truncated)
    ids |= capture(case, corpus / "images/dfvfs/syslog", kind="disk-image")
    ids |= capture(case, corpus / "cloudtrail/stratus-red-team/detonation-logs" / STOP_LOGGING)
    result = cloudir("timeline", "--case", str(case), "--no-fs-timeline", "--json")
    return {"case": case, "ids": ids, "result": result}


def reasons_for(case: Path, evidence_id: str) -> list[str]:
    return [e["reason"] for e in errors_of(case) if e["evidence_id"] == evidence_id]


def test_bad_images_cost_a_logged_line_and_the_rest_is_parsed(
    bad_images_case: dict[str, Any], corpus: Path
) -> None:
    case, ids, result = (bad_images_case[k] for k in ("case", "ids", "result"))
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    [iso_reason] = reasons_for(case, ids["iso9660.raw"])
    assert iso_reason.startswith("iso9660.raw: ") and NO_FS in iso_reason
    # 64 KiB of a 4 MiB ext2: dissect still finds the superblock; cloudir says the image
    # is cut short, in one line that names the file and both sizes
    truncated_reasons = reasons_for(case, ids["ext2-truncated.raw"])
    assert truncated_reasons[0] == (
        "ext2-truncated.raw: the image looks truncated: its ext file system spans 4,194,304 "
        "bytes, the volume holds 65,536; what lies past the end cannot be read"
    )
    assert all(r.startswith("ext2-truncated.raw: ") for r in truncated_reasons)
    for entry in errors_of(case):
        assert one_line(entry["reason"]), entry
    # The CloudTrail file in the same case is complete.
    events = json.loads(
        (corpus / "cloudtrail/stratus-red-team/detonation-logs" / STOP_LOGGING).read_text()
    )
    rows = query(
        case,
        f"SELECT event_id, action FROM timeline WHERE evidence_id = '{ids[STOP_LOGGING]}'",
    )
    assert sorted(r["event_id"] for r in rows) == sorted(e["eventID"] for e in events)
    assert {r["action"] for r in rows} == {"cloudtrail.amazonaws.com:StopLogging"}
    assert query(case, "SELECT count(*) AS n FROM timeline")[0]["n"] == len(events)


def test_a_text_file_declared_a_disk_image_says_no_file_system(
    bad_images_case: dict[str, Any],
) -> None:
    case, ids = bad_images_case["case"], bad_images_case["ids"]
    [reason] = reasons_for(case, ids["syslog"])
    assert reason.startswith("syslog: ") and NO_FS in reason


def test_truncated_image_with_the_fs_timeline_on_is_one_line_too(
    corpus: Path, tmp_path: Path
) -> None:
    pytest.importorskip("cloudir.analyze.host.fs_timeline")
    truncated = tmp_path / "ext2-truncated.raw"
    truncated.write_bytes((corpus / "images/dfvfs/ext2.raw").read_bytes()[: 64 << 10])
    case = tmp_path / "case"
    ids = capture(case, truncated)
    ids |= capture(case, corpus / "cloudtrail/stratus-red-team/detonation-logs" / STOP_LOGGING)
    result = cloudir("timeline", "--case", str(case), "--fs-timeline")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    for entry in errors_of(case):
        assert one_line(entry["reason"]), entry
    rows = query(
        case, f"SELECT count(*) AS n FROM timeline WHERE evidence_id = '{ids[STOP_LOGGING]}'"
    )
    assert rows[0]["n"] == 1


# -- 3. a Linux system disk holding real logs --------------------------------------------------
# The years dissect gives lines without a year come from each file's mtime.
AUTH_MTIME = utc(2017, 12, 31, 12)
MESSAGES_MTIME = utc(2005, 12, 31, 12)
SYSLOG_MTIME = utc(2016, 6, 1, 12)
BASH_MTIME = utc(2021, 6, 11, 12)
ZSH_MTIME = utc(2016, 3, 26, 12)
CRONTAB_MTIME = utc(2017, 12, 10, 9, 40)
KEYS_MTIME = utc(2017, 12, 10, 9, 45)
AUDIT_LOG = "linux/go-libaudit/auparse/testdata/audit-rhel7.log"
# OpenSSH_2k.log line 189: a user name after two spaces.
FAILED_0101 = "Failed password for invalid user  0101 from 5.188.10.180"
PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
    "bob:x:1001:1001:Bob:/home/bob:/usr/bin/zsh\n"
)
AUTHORIZED_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3PmX3Cq9l0dX6CkqyF8uJ3lQ0mT6b0vQm3p0e7b6k "
    "attacker@kali\n"
)


def build_rootfs(root: Path, corpus: Path, external: Path) -> None:
    """Corpus logs where a Debian system keeps them, plus what dissect needs to see Linux.
    loghub's logs come from the external corpus (its licence keeps them out of the repo)."""

    def put(rel: str, text: str | None = None, src: str | None = None, mtime: float = 0) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if src is not None:
            base = external if src.startswith("linux/loghub/") else corpus
            shutil.copyfile(base / src, path)
        else:
            path.write_text(text or "")
        if mtime:
            os.utime(path, (mtime, mtime))

    for folder in ("run", "sys", "boot", "tmp", "root", "var/log/audit"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    put("etc/os-release", 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')
    put("etc/hostname", "labsz\n")
    put("etc/timezone", "Etc/UTC\n")
    put("etc/sysctl.conf", "")
    put("etc/passwd", PASSWD)
    put("etc/crontab", "SHELL=/bin/sh\n*/5 * * * * root /tmp/.x/update.sh\n", mtime=CRONTAB_MTIME)
    put("home/alice/.ssh/authorized_keys", AUTHORIZED_KEY, mtime=KEYS_MTIME)
    put("var/log/auth.log", src="linux/loghub/OpenSSH/OpenSSH_2k.log", mtime=AUTH_MTIME)
    put("var/log/messages", src="linux/loghub/Linux/Linux_2k.log", mtime=MESSAGES_MTIME)
    put("var/log/syslog", src="linux/plaso/syslog/syslog_cron.log", mtime=SYSLOG_MTIME)
    put("var/log/audit/audit.log", src=AUDIT_LOG)
    put("home/alice/.bash_history", src="linux/plaso/bash_history", mtime=BASH_MTIME)
    put("home/bob/.zsh_history", src="linux/plaso/zsh_extended_history.txt", mtime=ZSH_MTIME)


@pytest.fixture(scope="module")
def linux_image(
    corpus: Path, external_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    base = tmp_path_factory.mktemp("linux")
    build_rootfs(base / "root", corpus, external_corpus)
    return ext4_image(base / "root", base / "linux.raw", "64M")


@pytest.fixture(scope="module")
def linux_case(linux_image: Path) -> Path:
    case = linux_image.parent / "case"
    capture(case, linux_image)
    result = cloudir("timeline", "--case", str(case), "--no-fs-timeline")
    assert result.code == 0, result.stderr
    return case


@pytest.fixture(scope="module")
def linux_rows(linux_case: Path) -> list[dict[str, Any]]:
    rows = query(
        linux_case,
        "SELECT strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%f') AS ts, timestamp_desc, artifact, "
        'host, "user", src_ip, action, outcome, target, message, raw FROM timeline',
    )
    for row in rows:
        row["raw"] = json.loads(row["raw"])
    return rows


def of(rows: list[dict[str, Any]], artifact: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["artifact"] == artifact]


def loghub(corpus: Path, name: str) -> list[dict[str, str]]:
    path = corpus / f"linux/loghub/{name}/{name}_2k.log_structured.csv"
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def csv_time(year: int, month: str, day: str, clock: str) -> str:
    return iso(datetime.strptime(f"{year} {month} {day} {clock}", "%Y %b %d %H:%M:%S"))


def test_dissect_sees_a_debian_linux_named_labsz(linux_image: Path) -> None:
    from cloudir.analyze.host.target import hostname, open_target, os_name

    target = open_target(linux_image)
    assert target.os == "linux"
    assert os_name(target) == "linux"
    assert hostname(target) == "labsz"


def test_only_the_expected_artifacts_and_no_broken_errors(
    linux_case: Path, linux_rows: list[dict[str, Any]]
) -> None:
    assert {r["artifact"] for r in linux_rows} == {
        "linux:auth",
        "linux:syslog",
        "linux:cron",
        "linux:auditd",
        "linux:bash_history",
        "linux:zsh_history",
        "linux:users",
        "linux:cron_job",
        "linux:cron_env",  # the crontab's SHELL=/PATH= lines
        "linux:ssh_authorized_key",
    }
    assert {r["host"] for r in linux_rows} == {"labsz"}
    for entry in errors_of(linux_case):
        assert one_line(entry["reason"]), entry


def test_auth_log_matches_the_openssh_ground_truth(
    linux_rows: list[dict[str, Any]], external_corpus: Path
) -> None:
    truth = loghub(external_corpus, "OpenSSH")
    lines = (external_corpus / "linux/loghub/OpenSSH/OpenSSH_2k.log").read_text().splitlines()
    auth = of(linux_rows, "linux:auth")
    assert len(truth) == len(lines) == 2000
    assert len(auth) == 2000
    # Every line, with its time (year from the file's mtime), pid and text.
    expected = Counter(
        (csv_time(2017, t["Date"], t["Day"], t["Time"]), int(t["Pid"]), t["Content"]) for t in truth
    )
    got = Counter((r["ts"], r["raw"]["pid"], r["raw"]["message"]) for r in auth)
    assert got == expected
    assert all(r["raw"]["program"] == "sshd" for r in auth)

    # "Failed password" lines: 520, from 23 addresses, each with its address and user.
    failed = re.compile(r"Failed password for (?:invalid user +)?(.*?) from (\S+) port \d+")
    truth_failed = [(t, failed.search(t["Content"])) for t in truth]
    truth_failed = [(t, m) for t, m in truth_failed if m]
    rows_failed = [r for r in auth if "Failed password for" in r["message"]]
    assert len(truth_failed) == len(rows_failed) == 520
    truth_ips = {m.group(2) for _, m in truth_failed}
    assert len(truth_ips) == 23
    assert {r["src_ip"] for r in rows_failed} == truth_ips
    assert {r["outcome"] for r in rows_failed} == {"failure"}
    expected_users = Counter(
        (csv_time(2017, t["Date"], t["Day"], t["Time"]), m.group(1).strip(), m.group(2))
        for t, m in truth_failed
        if m.group(1).strip() != "0101"  # the double-space user: its own test below
    )
    got_users = Counter(
        (r["ts"], r["user"], r["src_ip"]) for r in rows_failed if FAILED_0101 not in r["message"]
    )
    assert got_users == expected_users
    # The one "Accepted" line of the log: fztu from 119.137.62.142.
    [accepted] = [r for r in auth if r["outcome"] == "success"]
    [truth_accepted] = [t for t in truth if t["Content"].startswith("Accepted password")]
    assert accepted["ts"] == csv_time(2017, "Dec", truth_accepted["Day"], truth_accepted["Time"])
    assert (accepted["user"], accepted["src_ip"]) == ("fztu", "119.137.62.142")


def test_first_auth_rows_are_the_first_lines_of_the_log(
    linux_rows: list[dict[str, Any]], external_corpus: Path
) -> None:
    truth = loghub(external_corpus, "OpenSSH")
    first = truth[0]
    start = csv_time(2017, first["Date"], first["Day"], first["Time"])
    assert start == "2017-12-10T06:55:46.000000"
    auth = sorted(of(linux_rows, "linux:auth"), key=lambda r: r["ts"])
    at_start = [r for r in auth if r["ts"] == start]
    assert auth[0]["ts"] == start
    same_second = [
        t
        for t in truth
        if (t["Date"], t["Day"], t["Time"]) == (first["Date"], first["Day"], first["Time"])
    ]
    assert sorted(r["raw"]["message"] for r in at_start) == sorted(
        t["Content"] for t in same_second
    )
    # The first line: the PTR check of 173.234.31.186.
    [row] = [r for r in at_start if r["raw"]["message"] == first["Content"]]
    assert row["src_ip"] == "173.234.31.186"
    assert row["message"].startswith("sshd[24200]: reverse mapping checking getaddrinfo")
    # The first failed password: invalid user webmaster from that address.
    t, m = next(
        (t, m)
        for t in truth
        if (m := re.search(r"Failed password for invalid user (\S+) from (\S+)", t["Content"]))
    )
    [row] = [
        r
        for r in auth
        if r["ts"] == csv_time(2017, t["Date"], t["Day"], t["Time"])
        and r["raw"]["message"] == t["Content"]
    ]
    assert (row["user"], row["src_ip"], row["outcome"]) == (
        "webmaster",
        "173.234.31.186",
        "failure",
    )


def test_reverse_mapping_lines_name_no_user(linux_rows: list[dict[str, Any]]) -> None:
    rows = [r for r in of(linux_rows, "linux:auth") if "reverse mapping" in r["message"]]
    assert rows
    assert {r["user"] for r in rows} == {None}


def test_invalid_user_with_a_leading_space_is_not_called_invalid(
    linux_rows: list[dict[str, Any]],
) -> None:
    [row] = [r for r in of(linux_rows, "linux:auth") if FAILED_0101 in r["message"]]
    assert row["user"] is not None and row["user"].strip() == "0101"


def test_messages_match_the_linux_ground_truth_but_for_two_token_programs(
    linux_case: Path, linux_rows: list[dict[str, Any]], external_corpus: Path
) -> None:
    """dissect's syslog line needs `HOST PROGRAM[PID]:` with a one-word program; the 7
    `syslogd 1.4.1: restart.` lines and the `-- root[2421]: ROOT LOGIN ON tty2` line of
    Linux_2k.log do not fit: each is skipped and listed in errors.jsonl, not dropped."""
    truth = loghub(external_corpus, "Linux")
    assert len(truth) == 2000
    unreadable = [t for t in truth if re.search(r"\s", t["Component"])]
    assert Counter(t["Component"] for t in unreadable) == {"syslogd 1.4.1": 7, "-- root": 1}
    skipped = [
        e["reason"]
        for e in errors_of(linux_case)
        if e["reason"].startswith("syslog: /var/log/messages: line not read (not a syslog line)")
    ]
    assert len(skipped) == 8
    assert sum("ROOT LOGIN ON tty2" in reason for reason in skipped) == 1
    rows = [r for r in linux_rows if r["raw"].get("source") == "/var/log/messages"]
    assert {r["artifact"] for r in rows} == {"linux:syslog"}  # Linux_2k.log has no cron lines
    assert len(rows) == len(truth) - len(unreadable) == 1992
    expected = Counter(
        (csv_time(2005, t["Month"], t["Date"], t["Time"]), t["Component"], t["Content"])
        for t in truth
        if t not in unreadable
    )
    got = Counter((r["ts"], r["raw"]["program"], r["raw"]["message"]) for r in rows)
    assert got == expected
    su = [r for r in rows if r["raw"]["program"] == "su(pam_unix)"]
    assert len(su) == sum(t["Component"] == "su(pam_unix)" for t in truth) == 172


def cron_truth(corpus: Path) -> Counter[tuple[str, str]]:
    """(time, message) of each CRON line of syslog_cron.log, its year as dissect infers it:
    read from the end, the mtime's year (2016) holds until the month goes up, then it is
    one year earlier (the file has March lines, then January lines)."""
    lines = (corpus / "linux/plaso/syslog/syslog_cron.log").read_text().splitlines()
    cron_lines = [line for line in lines if " CRON[" in line]
    assert len(cron_lines) == 9
    year, last_month, expected = 2016, 13, Counter()
    for line in reversed(cron_lines):
        when = datetime.strptime(line[:15] + " 1904", "%b %d %H:%M:%S %Y")
        if when.month > last_month:
            year -= 1
        last_month = when.month
        message = line.split(": ", 1)[1]
        expected[(iso(when.replace(year=year)), message)] += 1
    return expected


def test_cron_lines_of_syslog_roll_the_year_back(
    linux_rows: list[dict[str, Any]], corpus: Path
) -> None:
    expected = cron_truth(corpus)
    rows = of(linux_rows, "linux:cron")
    got = Counter((r["ts"], r["raw"]["message"]) for r in rows)
    assert set(got) == set(expected)
    # Two lines of the file are the same byte for byte (Mar 11 22:55:30 CRON[3] touch
    # /tmp/afile.txt): both are kept, as two events.
    assert sum(expected.values()) == 9 and len(expected) == 8
    assert len(rows) == 9
    assert {r["ts"][:4] for r in rows} == {"2015", "2016"}
    assert {r["action"] for r in rows} == {"CRON"}
    # "Jan 22 07:54:32 myhostname.myhost.com Job `cron.daily' terminated" has no
    # `program:` and is dropped like the two-token lines of /var/log/messages.
    assert not [r for r in linux_rows if "cron.daily" in r["message"]]


def test_identical_log_lines_are_two_events(
    linux_case: Path, linux_rows: list[dict[str, Any]], corpus: Path
) -> None:
    rows = of(linux_rows, "linux:cron")
    assert Counter((r["ts"], r["raw"]["message"]) for r in rows) == cron_truth(corpus)
    summary = json.loads((linux_case / "timeline/summary.json").read_text())
    assert summary["duplicates_dropped"] == 0


def test_audit_log_matches_its_lines_but_two(
    linux_rows: list[dict[str, Any]], corpus: Path
) -> None:
    """dissect reads `type=T msg=audit(SECONDS:SERIAL): ...`; of the 50 lines of
    audit-rhel7.log, `DAEMON_CONFIG msg=audit(...:34) config changed` (no colon after the
    stamp) and `UNKNOWN[1329] msg=?` (no stamp at all) do not fit and are dropped."""
    lines = (corpus / AUDIT_LOG).read_text().splitlines()
    stamp = re.compile(r"^type=(\S+) msg=audit\((\d+\.\d+):\d+\): ")
    readable = [m for m in map(stamp.match, lines) if m]
    assert len(lines) == 50
    assert len(readable) == 48
    dropped = [line.split()[0] for line in lines if not stamp.match(line)]
    assert dropped == ["type=DAEMON_CONFIG", "type=UNKNOWN[1329]"]
    rows = of(linux_rows, "linux:auditd")
    expected = Counter((epoch_iso(m.group(2)), m.group(1)) for m in readable)
    assert Counter((r["ts"], r["raw"]["type"]) for r in rows) == expected
    [auditctl] = [
        r
        for r in rows
        if r["raw"]["type"] == "EXECVE" and r["raw"]["CommandLine"].startswith("auditctl")
    ]
    assert auditctl["ts"] == epoch_iso("1481077231.371")
    assert auditctl["raw"]["CommandLine"] == "auditctl -a exit,always -F arch=b32 -S execve"
    assert auditctl["target"] == "auditctl"
    [add_user] = [r for r in rows if r["raw"]["type"] == "ADD_USER"]
    assert add_user["target"] == "/usr/sbin/useradd"
    assert add_user["outcome"] == "success"


def history_entries(text: str, stamp: str) -> list[tuple[int, list[str]]]:
    """(time, lines) of each command: a command runs until the next stamped line."""
    entries: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        match = re.match(stamp, line)
        if match:
            rest = line[match.end() :]
            entries.append((int(match.group(1)), [rest] if rest else []))
        else:
            entries[-1][1].append(line)
    return entries


def check_history(
    rows: list[dict[str, Any]], entries: list[tuple[int, list[str]]], user: str, mtime: float
) -> None:
    """Each command's first line is a row at its time; dissect reads line by line, so each
    further line of a multi-line command is a row of its own, timed by the file's mtime."""
    timed = [r for r in rows if r["timestamp_desc"] == "Event Time"]
    assert Counter((r["ts"], r["raw"]["CommandLine"]) for r in timed) == Counter(
        (iso(datetime.fromtimestamp(when, UTC)), lines[0]) for when, lines in entries
    )
    extra = [r for r in rows if r["timestamp_desc"] != "Event Time"]
    assert Counter(r["raw"]["CommandLine"] for r in extra) == Counter(
        line for _, lines in entries for line in lines[1:]
    )
    assert {r["ts"] for r in extra} <= {iso(datetime.fromtimestamp(mtime, UTC))}
    assert {r["user"] for r in rows} == {user}


def test_bash_history_has_four_commands_the_last_over_four_lines(
    linux_rows: list[dict[str, Any]], corpus: Path
) -> None:
    text = (corpus / "linux/plaso/bash_history").read_text()
    entries = history_entries(text, r"#(\d+)$")
    assert len(entries) == 4
    assert [len(lines) for _, lines in entries] == [1, 1, 1, 4]
    rows = of(linux_rows, "linux:bash_history")
    assert len(rows) == 4 + 3  # 4 commands, 3 continuation lines of the last one
    check_history(rows, entries, "alice", BASH_MTIME)
    [splunk] = [r for r in rows if "splunk" in r["message"]]
    assert splunk["ts"] == "2013-10-01T12:36:19.000000"
    assert splunk["raw"]["Image"] == splunk["target"] == "/usr/local/bin/splunk"
    assert splunk["raw"]["User"] == "alice"


def test_zsh_history_has_four_commands_one_of_them_over_two_lines(
    linux_rows: list[dict[str, Any]], corpus: Path
) -> None:
    text = (corpus / "linux/plaso/zsh_extended_history.txt").read_text()
    entries = history_entries(text, r": (\d+):\d+;")
    assert [len(lines) for _, lines in entries] == [1, 1, 2, 1]
    rows = of(linux_rows, "linux:zsh_history")
    assert len(rows) == 4 + 1
    check_history(rows, entries, "bob", ZSH_MTIME)
    [cd] = [r for r in rows if r["raw"]["CommandLine"] == "cd plaso"]
    assert cd["ts"] == "2016-03-12T08:26:50.000000"  # 1457771210


def test_users_cron_jobs_and_authorized_keys(linux_rows: list[dict[str, Any]]) -> None:
    users = of(linux_rows, "linux:users")
    assert sorted(r["user"] for r in users) == ["alice", "bob", "root"]
    [bob] = [r for r in users if r["user"] == "bob"]
    assert "home /home/bob shell /usr/bin/zsh" in bob["message"]

    [job] = [r for r in of(linux_rows, "linux:cron_job") if r["raw"].get("minute")]
    assert job["ts"] == iso(datetime.fromtimestamp(CRONTAB_MTIME, UTC))
    assert job["timestamp_desc"] == "Source File Modification Time (/etc/crontab)"
    assert job["raw"]["minute"] == "*/5"
    assert "/tmp/.x/update.sh" in job["message"]

    [key] = of(linux_rows, "linux:ssh_authorized_key")
    assert key["ts"] == iso(datetime.fromtimestamp(KEYS_MTIME, UTC))
    assert (key["user"], key["target"]) == ("alice", "attacker@kali")
    assert key["raw"]["key_type"] == "ssh-ed25519"


def test_crontab_environment_lines_are_not_cron_jobs(linux_rows: list[dict[str, Any]]) -> None:
    jobs = of(linux_rows, "linux:cron_job")
    assert [r["target"] for r in jobs] == ["/tmp/.x/update.sh"]  # the crontab's one job
    assert all("cron job of ?" not in r["message"] for r in jobs)
    [env] = of(linux_rows, "linux:cron_env")  # its SHELL= line, as what it is
    assert (env["action"], env["target"]) == ("cron:environment", "SHELL")
    assert env["message"] == "cron environment in /etc/crontab: SHELL=/bin/sh"


def test_system_crontab_target_is_the_command(linux_rows: list[dict[str, Any]]) -> None:
    [job] = [r for r in of(linux_rows, "linux:cron_job") if r["raw"].get("minute")]
    assert job["target"] == "/tmp/.x/update.sh"
    assert job["user"] == "root"


# -- 4. a Linux rule fires on the real traces ---------------------------------------------------
def brute_force_sources(truth: list[dict[str, str]], count: int = 10, minutes: int = 10) -> set:
    """Addresses with `count` sshd failures (password, none, keyboard-interactive) within
    `minutes`, as lnx_sshd_brute_force.yml counts them."""
    failure = re.compile(r"Failed (?:password|none|keyboard-interactive/pam) for .* from (\S+)")
    times: dict[str, list[datetime]] = {}
    for t in truth:
        match = failure.search(t["Content"])
        if match:
            when = datetime.strptime(f"{t['Date']} {t['Day']} {t['Time']}", "%b %d %H:%M:%S")
            times.setdefault(match.group(1), []).append(when)
    window = timedelta(minutes=minutes)
    found = set()
    for address, seen in times.items():
        seen.sort()
        for i, start in enumerate(seen):
            if sum(start <= x <= start + window for x in seen[i:]) >= count:
                found.add(address)
                break
    return found


def test_ssh_brute_force_is_found_from_the_right_addresses(
    linux_case: Path, external_corpus: Path
) -> None:
    result = cloudir("detect", "--case", str(linux_case), "--json", "--fail-on", "critical")
    assert result.code == 0, result.stderr
    findings = {f["title"]: f for f in result.json()["findings"]}
    truth = loghub(external_corpus, "OpenSSH")
    sources = brute_force_sources(truth)
    # 183.62.140.253 alone failed 286 times in under 4 hours.
    assert "183.62.140.253" in sources and len(sources) == 6
    brute = findings["SSH Brute Force From One Address"]
    assert set(brute["entities"]["source_ips"]) == sources
    assert brute["entities"]["hosts"] == ["labsz"]
    assert brute["level"] == "medium"
    # The only accepted login (fztu from 119.137.62.142) came from no guessing address.
    accepted = {
        m.group(1)
        for t in truth
        if t["Content"].startswith("Accepted ") and (m := re.search(r"from (\S+)", t["Content"]))
    }
    assert accepted == {"119.137.62.142"} and not accepted & sources
    assert "SSH Brute Force Followed by Successful Login" not in findings
    # audit-rhel7.log's one ADD_USER record.
    useradd = findings["Local User Account Created (auditd)"]
    assert useradd["count"] == 1
    assert useradd["entities"]["targets"] == ["/usr/sbin/useradd"]
