"""VPC Flow Logs as timeline rows: formats, recognition, hostile lines (the parser alone).

The rules over these rows, end to end through the CLI, are in test_vpc_flow_rules.py.
"""

from __future__ import annotations

import gzip
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze import parsers as registry
from cloudir.analyze.parsers import ErrorLog, ParseOptions, recognise_kind
from cloudir.analyze.parsers import vpc_flow as flow
from tests.vpc_flow_lines import (
    LATEST_FIELDS,
    START,
    V5_FIELDS,
    delivery_name,
    flow_record,
    write_flow_log,
)

DATA = Path(__file__).parent / "data" / "vpc-flow"


def read(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, error entries) as the timeline gets them."""
    errors = ErrorLog("ev-1", str(path))
    rows = [row for batch in flow.parse(path, "ev-1", errors, ParseOptions()) for row in
            batch.to_pylist()]  # fmt: skip
    return rows, errors.entries


def raw(row: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row["raw"])
    return value


# -- the AWS documentation's records ---------------------------------------------------------
def test_the_documented_default_records_are_four_rows() -> None:
    rows, errors = read(DATA / "aws-doc-default.log")
    assert errors == []
    assert [r["action"] for r in rows] == ["ACCEPT", "REJECT", "NODATA", "SKIPDATA"]
    ssh = rows[0]
    assert ssh["timestamp"].isoformat() == "2014-12-14T04:06:50+00:00"  # start 1418530010
    assert (ssh["source"], ssh["artifact"], ssh["timestamp_desc"]) == (
        "vpc-flow", "aws:vpc-flow", "Flow Start",
    )  # fmt: skip
    assert (ssh["src_ip"], ssh["target"], ssh["outcome"], ssh["host"]) == (
        "172.31.16.139", "172.31.16.21:22/tcp", "success", "eni-1235b8ca123456789",
    )  # fmt: skip
    assert ssh["message"] == (
        "ACCEPT tcp 172.31.16.139:20641 -> 172.31.16.21:22 (20 packets, 4249 bytes) "
        "on eni-1235b8ca123456789"
    )
    assert raw(ssh) == {
        "version": 2, "account-id": "123456789010", "interface-id": "eni-1235b8ca123456789",
        "srcaddr": "172.31.16.139", "dstaddr": "172.31.16.21", "srcport": 20641,
        "dstport": 22, "protocol": 6, "packets": 20, "bytes": 4249, "start": 1418530010,
        "end": 1418530070, "action": "ACCEPT", "log-status": "OK",
        "SourceIp": "172.31.16.139", "DestinationIp": "172.31.16.21", "SourcePort": 20641,
        "DestinationPort": 22, "Protocol": "tcp",
    }  # fmt: skip
    assert (rows[1]["outcome"], rows[1]["target"]) == ("failure", "172.31.9.12:3389/tcp")


def test_nodata_and_skipdata_records_are_rows_without_addresses() -> None:
    rows, _ = read(DATA / "aws-doc-default.log")
    nodata, skipdata = rows[2], rows[3]
    assert (nodata["src_ip"], nodata["target"], nodata["outcome"]) == (None, None, None)
    assert nodata["message"] == "NODATA: no traffic on eni-1235b8ca123456789"
    assert skipdata["message"] == "SKIPDATA: records skipped (capacity) on eni-11111111aaaaaaaaa"
    assert skipdata["host"] == "eni-11111111aaaaaaaaa"
    record = raw(nodata)
    assert record["srcaddr"] is None and record["action"] is None
    assert "SourceIp" not in record and record["log-status"] == "NODATA"


# -- formats ---------------------------------------------------------------------------------
def test_a_custom_v5_format_is_mapped_by_name(tmp_path: Path) -> None:
    path = write_flow_log(
        tmp_path / "v5.log",
        [flow_record(V5_FIELDS, pkt_dst_aws_service="S3", dstaddr="52.216.0.10")],
        V5_FIELDS,
    )
    [row], errors = read(path)
    assert errors == []
    assert row["host"] == "i-0a1b2c3d4e5f60718"  # the instance, not the interface
    assert row["target"] == "52.216.0.10:443/tcp"
    record = raw(row)
    assert list(record)[: len(V5_FIELDS)] == list(V5_FIELDS)
    assert (record["tcp-flags"], record["traffic-path"], record["flow-direction"]) == (
        19, 8, "egress",
    )  # fmt: skip
    assert (record["pkt-dst-aws-service"], record["sublocation-id"]) == ("S3", None)
    assert (record["vpc-id"], record["az-id"], record["type"]) == (
        "vpc-0a1b2c3d", "use1-az1", "IPv4",
    )  # fmt: skip


def test_the_latest_fields_and_fields_unknown_today_are_kept(tmp_path: Path) -> None:
    fields = (*LATEST_FIELDS, "some-future-field")
    line = flow_record(
        fields, action="REJECT", reject_reason="BPA", ecs_cluster_name="prod",
        some_future_field="x-1",
    )  # fmt: skip
    [row], errors = read(write_flow_log(tmp_path / "latest.log", [line], fields))
    assert errors == []
    record = raw(row)
    assert (record["reject-reason"], record["ecs-cluster-name"]) == ("BPA", "prod")
    assert record["some-future-field"] == "x-1" and record["ecs-task-id"] is None
    assert row["outcome"] == "failure"


def test_fields_in_any_order_and_without_ports(tmp_path: Path) -> None:
    fields = ("start", "action", "dstaddr", "srcaddr", "protocol", "interface-id", "end")
    line = flow_record(fields, protocol=1, srcaddr="2001:db8::1", dstaddr="2001:db8::2")
    [row], errors = read(write_flow_log(tmp_path / "icmp.log", [line], fields))
    assert errors == []
    assert (row["src_ip"], row["target"]) == ("2001:db8::1", "2001:db8::2/icmp")
    assert raw(row)["Protocol"] == "icmp" and "DestinationPort" not in raw(row)
    v6 = flow_record(srcaddr="2001:db8::1", dstaddr="2001:db8::2", dstport=22)
    [row], _ = read(write_flow_log(tmp_path / "v6.log", [v6]))
    assert row["target"] == "[2001:db8::2]:22/tcp"


def test_gzip_gives_the_same_rows_as_plain(tmp_path: Path) -> None:
    records = [flow_record(V5_FIELDS, srcport=port) for port in range(40000, 40005)]
    plain, _ = read(write_flow_log(tmp_path / "a.log", records, V5_FIELDS))
    zipped, errors = read(write_flow_log(tmp_path / "b.log.gz", records, V5_FIELDS, gz=True))
    assert errors == [] and len(plain) == 5
    assert [r["raw"] for r in zipped] == [r["raw"] for r in plain]


def test_a_truncated_gzip_keeps_what_came_before(tmp_path: Path) -> None:
    records = [flow_record(srcport=p, bytes=p * 7919) for p in range(30000, 32000)]
    whole = gzip.compress(("\n".join([" ".join(flow.DEFAULT_FIELDS), *records]) + "\n").encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(whole[: len(whole) // 2])
    rows, errors = read(path)
    assert 0 < len(rows) < 2000
    assert len(errors) == 1 and "truncated or corrupt gzip" in errors[0]["reason"]


def test_header_variations(tmp_path: Path) -> None:
    """CRLF ends, blank lines, a second header (files concatenated) switching format."""
    text = (
        " ".join(flow.DEFAULT_FIELDS) + "\r\n"
        + flow_record(dstport=22) + "\r\n\r\n"
        + " ".join(V5_FIELDS) + "\n"
        + flow_record(V5_FIELDS, dstport=3389) + "\n"
    )  # fmt: skip
    path = tmp_path / "cat.log"
    path.write_text(text)
    rows, errors = read(path)
    assert errors == []
    assert [raw(r)["dstport"] for r in rows] == [22, 3389]
    assert [r["host"] for r in rows] == ["eni-0a1b2c3d4e5f60718", "i-0a1b2c3d4e5f60718"]


def test_header_less_default_records_are_read_as_cloudwatch_holds_them(tmp_path: Path) -> None:
    # an interface an AWS service created reads account-id `unknown`
    first = flow_record(account_id="unknown", interface_id="eni-0123456789abcdef0")
    path = write_flow_log(tmp_path / "cw.log", [first, flow_record(dstport=53)], header=False)
    rows, errors = read(path)
    assert errors == [] and [raw(r)["dstport"] for r in rows] == [443, 53]


def test_a_header_less_custom_format_is_not_guessed(tmp_path: Path) -> None:
    path = write_flow_log(tmp_path / "cw5.log", [flow_record(V5_FIELDS)], header=False)
    rows, errors = read(path)
    assert rows == []
    assert [e["line"] for e in errors] == [1]
    assert "neither a header of flow log fields nor a default-format record" in errors[0]["reason"]


def test_records_stream_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BATCH_ROWS", 3)
    path = write_flow_log(tmp_path / "many.log", [flow_record(srcport=p) for p in range(1, 9)])
    errors = ErrorLog()
    sizes = [batch.num_rows for batch in flow.parse(path, "ev", errors, ParseOptions())]
    assert sizes == [3, 3, 2] and errors.entries == []


# -- bad lines -------------------------------------------------------------------------------
BAD_LINES = {
    "2 111122223333 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 100": "11 fields where the format has 14",
    flow_record(srcport="ssh"): "srcport 'ssh' is not a number",
    flow_record(dstport=70000): "dstport 70000 is out of range",
    flow_record(protocol=-6): "protocol '-6' is not a number",
    flow_record(srcaddr="10.0.0.300"): "srcaddr '10.0.0.300' is not an IP address",
    flow_record(start=START, end=START - 1): f"end {START - 1} is before start {START}",
    flow_record(start=0, end=60): "a time of 0 (1970-01-01) is no flow's time",
    flow_record(start=99999999999999, end=99999999999999): "start 99999999999999 is out of range",
    flow_record(start=None, end=None): "no start or end time: not placed on the timeline",
}


def test_bad_lines_are_counted_errors_and_the_rest_reads(tmp_path: Path) -> None:
    lines = [flow_record(srcport=1000)]
    for bad in BAD_LINES:
        lines += [bad, flow_record(srcport=1000 + len(lines))]
    path = write_flow_log(tmp_path / "bad.log", lines)
    with path.open("ab") as fh:
        fh.write(b"2 111122223333 eni-1 \xff\xfe 10.0.0.2 1 2 6 1 1 100 160 ACCEPT OK\n")
        fh.write(b"x" * (flow.MAX_LINE + 10) + b"\n")
        fh.write((flow_record(srcport=4242) + "\n").encode())
    rows, errors = read(path)
    assert len(rows) == len(BAD_LINES) + 2
    reasons = [e["reason"] for e in errors]
    assert [r.removeprefix("bad flow record: ") for r in reasons[: len(BAD_LINES)]] == list(
        BAD_LINES.values()
    )
    assert reasons[len(BAD_LINES) :] == [
        "not valid UTF-8; not a flow record",
        f"a line longer than {flow.MAX_LINE} bytes",
    ]
    header = 1
    assert [e["line"] for e in errors[: len(BAD_LINES)]] == [
        header + 2 * i for i in range(1, len(BAD_LINES) + 1)
    ]
    assert raw(rows[-1])["srcport"] == 4242


TOKENS = st.one_of(
    st.sampled_from(["-", "2", "5", "6", "22", "ACCEPT", "REJECT", "OK", "NODATA", "eni-1",
                     "10.0.0.1", "2001:db8::1", "1767261600", "1767261660", "srcaddr",
                     "start", "action", "99999999999999999999999", "0", "1e3", "٣"]),
    st.text(string.printable.strip() + "éü€", min_size=1, max_size=12).filter(
        lambda t: not any(c.isspace() for c in t)
    ),
)  # fmt: skip
LINES = st.lists(st.lists(TOKENS, min_size=0, max_size=16).map(" ".join), max_size=25)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=LINES, header=st.sampled_from([flow.DEFAULT_FIELDS, V5_FIELDS]), cut=st.integers(0, 40)
)
def test_any_lines_give_valid_rows_or_errors_only(
    tmp_path: Path, lines: list[str], header: tuple[str, ...], cut: int
) -> None:
    """After a header, every non-blank line that is no header is one row or one error;
    each row is a placed, readable flow record."""
    good = flow_record(header)
    body = [" ".join(header), good[: len(good) - cut], *lines, good]
    path = tmp_path / "h.log"
    path.write_text("\n".join(body) + "\n")
    rows, errors = read(path)
    counted = [
        line for line in body[1:] if line.split() and flow.header_fields(line.split()) is None
    ]
    assert len(rows) + len(errors) == len(counted)
    for row in rows:
        assert row["timestamp"] is not None and row["artifact"] == "aws:vpc-flow"
        record = raw(row)
        assert isinstance(record, dict) and (record.get("start") or record.get("end"))
        for port in ("srcport", "dstport"):
            assert record.get(port) is None or 0 <= record[port] <= 65535


# -- recognition -----------------------------------------------------------------------------
def test_delivery_named_files_are_vpc_flow(tmp_path: Path) -> None:
    path = write_flow_log(tmp_path / delivery_name(), [flow_record(V5_FIELDS)], V5_FIELDS,
                          gz=True)  # fmt: skip
    assert flow.recognise([path]) == registry.BY_NAME_AND_STRUCTURE
    assert recognise_kind([path]) == "vpc-flow"


def test_a_header_line_is_recognised_whatever_the_name(tmp_path: Path) -> None:
    plain = write_flow_log(tmp_path / "export.txt", [flow_record()])
    zipped = write_flow_log(tmp_path / "flows.gz", [flow_record()], gz=True)
    headless = write_flow_log(tmp_path / "cw.out", [flow_record()], header=False)
    for path in (plain, zipped, headless):
        assert flow.recognise([path]) == registry.BY_CONTENT, path.name
        assert recognise_kind([path]) == "vpc-flow", path.name


def test_other_files_are_not_flow_logs(tmp_path: Path) -> None:
    notes = tmp_path / "notes.log"
    notes.write_text("Jan  1 10:00:00 web sshd[1]: Accepted publickey for alice\n")
    trail = tmp_path / "111122223333_CloudTrail_us-east-1_20260101T1000Z_abc.json.gz"
    trail.write_bytes(gzip.compress(b'{"Records": []}'))
    headless_v5 = write_flow_log(tmp_path / "v5.out", [flow_record(V5_FIELDS)], header=False)
    assert flow.recognise([notes]) == registry.NOT_MINE
    assert flow.recognise([headless_v5]) == registry.NOT_MINE
    assert recognise_kind([trail]) == "cloudtrail"
    assert recognise_kind([notes]) == "files"


PARQUET_NAME = "111122223333_vpcflowlogs_us-east-1_fl-1_20260101T1000Z_ab.log.parquet"


def write_parquet_flows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A Parquet delivery as Athena's table for it reads it: columns named with `_`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("version", pa.int32()), ("account_id", pa.string()), ("interface_id", pa.string()),
        ("srcaddr", pa.string()), ("dstaddr", pa.string()), ("srcport", pa.int32()),
        ("dstport", pa.int32()), ("protocol", pa.int64()), ("packets", pa.int64()),
        ("bytes", pa.int64()), ("start", pa.int64()), ("end", pa.int64()),
        ("action", pa.string()), ("log_status", pa.string()), ("instance_id", pa.string()),
    ])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="gzip")
    return path


def parquet_row(**changes: Any) -> dict[str, Any]:
    row = {
        "version": 5, "account_id": "111122223333", "interface_id": "eni-0a1b2c3d",
        "srcaddr": "203.0.113.9", "dstaddr": "10.0.1.5", "srcport": 50100, "dstport": 22,
        "protocol": 6, "packets": 12, "bytes": 4021, "start": START, "end": START + 60,
        "action": "ACCEPT", "log_status": "OK", "instance_id": "i-0123456789abcdef0",
    }  # fmt: skip
    return {**row, **changes}


def test_the_parquet_delivery_is_read_by_the_same_checks(tmp_path: Path) -> None:
    path = write_parquet_flows(
        tmp_path / PARQUET_NAME,
        [parquet_row(), parquet_row(dstport=3389, action="REJECT", instance_id=None),
         parquet_row(srcaddr="not-an-address"), parquet_row(start=None, end=None)],
    )  # fmt: skip
    assert flow.accepts(path) and flow.recognise([path]) == registry.BY_NAME_AND_STRUCTURE
    assert recognise_kind([path]) == "vpc-flow"
    rows, errors = read(path)
    assert [(r["src_ip"], r["target"], r["action"], r["host"]) for r in rows] == [
        ("203.0.113.9", "10.0.1.5:22/tcp", "ACCEPT", "i-0123456789abcdef0"),
        ("203.0.113.9", "10.0.1.5:3389/tcp", "REJECT", "eni-0a1b2c3d"),
    ]
    assert raw(rows[0])["log-status"] == "OK" and raw(rows[0])["DestinationPort"] == 22
    assert [e.get("record") for e in errors] == [3, 4]
    assert "is not an IP address" in errors[0]["reason"]


def test_a_parquet_file_that_is_not_a_flow_log_is_one_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"name": ["x"], "size": [1]}), other)
    broken = tmp_path / PARQUET_NAME
    broken.write_bytes(b"PAR1 not really")
    for path, why in ((other, "columns are not flow log fields"), (broken, "not a readable")):
        rows, errors = read(path)
        assert rows == [] and len(errors) == 1 and why in errors[0]["reason"], path.name
    assert flow.recognise([other]) == registry.NOT_MINE


def test_recognition_opens_each_file_once_and_follows_no_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet by its magic under any name, text by its first line: one open of the file
    decides either (the schema is read from the same handle), and a link is not read."""
    import os

    text = write_flow_log(tmp_path / "flows.txt", [flow_record()])
    parquet = write_parquet_flows(tmp_path / "flows.bin", [parquet_row()])
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    assert flow.recognise([text]) == registry.BY_CONTENT
    assert flow.recognise([parquet]) == registry.BY_CONTENT
    assert opened == ["flows.txt", "flows.bin"]
    monkeypatch.undo()
    for target in (text, parquet):
        link = tmp_path / f"link-{target.name}.parquet"
        link.symlink_to(target)
        assert flow.recognise([link]) == registry.NOT_MINE, target.name


def test_an_item_of_flow_logs_and_cloudtrail_is_cloudtrail(tmp_path: Path) -> None:
    """One path is one item of one kind (docs/parsers.md says to give vpcflowlogs/ apart)."""
    flows = write_flow_log(tmp_path / delivery_name(), [flow_record()], gz=True)
    trail = tmp_path / "111122223333_CloudTrail_us-east-1_20260101T1000Z_abc.json.gz"
    trail.write_bytes(gzip.compress(b'{"Records": []}'))
    readme = tmp_path / "README.txt"
    readme.write_text("synced from the log bucket\n")
    assert flow.recognise([flows, readme]) == registry.BY_NAME
    assert recognise_kind([flows, readme]) == "vpc-flow"
    assert recognise_kind([flows, trail]) == "cloudtrail"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_a_damaged_gzip_gives_rows_and_errors_only(
    tmp_path: Path, cut: int, flip: int, byte: int
) -> None:
    records = [flow_record(V5_FIELDS, srcport=p, bytes=p * 31) for p in range(1000, 1400)]
    data = bytearray(gzip.compress(("\n".join([" ".join(V5_FIELDS), *records]) + "\n").encode()))
    data[flip % len(data)] = byte
    path = tmp_path / "damaged.log.gz"
    path.write_bytes(bytes(data[: len(data) - cut % len(data)]))
    rows, errors = read(path)
    assert len(rows) <= len(records)
    assert all(raw(row)["srcport"] in range(0, 65536) for row in rows)
    if len(rows) < len(records):
        assert errors, "a record lost without an error entry"
