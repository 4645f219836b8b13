"""A timeline whose Parquet parts live at a storage URI (`timeline --parts-uri`, issue 18).

The Spark executors write the parts under a folder of the run's own at the URI; the case
folder keeps custody, summary, errors and `timeline/parts.json`. Every reader (detect and
query on both engines, triage, report) reads the parts from there and must see exactly
the timeline a local build has: the same rows and the same findings. S3 is moto's, over
HTTP; `file://` stands for a cluster's shared mount and is read by Spark as well.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.spark_timeline import PartsTarget, build_timeline_spark
from cloudir.aws import AwsOptions
from cloudir.case import Case
from cloudir.case_folder import PARTS_FORMAT, read_parts_listing, timeline_files
from cloudir.errors import EvidenceError
from tests.conftest import boto_client, cloudir


def _rows(parts: list[Any], moto_url: str | None = None) -> Counter[tuple[Any, ...]]:
    """Every row of the parts, as a multiset of tuples (every column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloudir.storage_uri import open_uri

    tables = []
    for part in parts:
        if isinstance(part, Path):
            tables.append(pq.read_table(part))
            continue
        filesystem, path = open_uri(part, AwsOptions(endpoint_url=moto_url) if moto_url else None)
        tables.append(pq.read_table(path, filesystem=filesystem))
    table = pa.concat_tables(tables)
    columns = [c.to_pylist() for c in table.columns]
    return Counter(zip(*columns, strict=True))


def _findings(case: Path) -> dict[str, Any]:
    document = json.loads((case / "findings" / "findings.json").read_text())
    document.pop("generated")
    return document


def _summary(case: Path) -> dict[str, Any]:
    summary = json.loads((case / "timeline" / "summary.json").read_text())
    summary.pop("path")
    summary.pop("parts_root")
    return summary


def _twin(spark_case: Path, tmp_path: Path, name: str = "case") -> Path:
    """A copy of the shared case, so that what a test writes stays its own."""
    twin = tmp_path / name
    shutil.copytree(spark_case, twin)
    return twin


def test_a_timeline_at_a_file_uri_reads_as_the_local_one_on_both_engines(
    spark: Any, spark_case: Path, tmp_path: Path
) -> None:
    store = tmp_path / "shared mount"  # a space: a URI names it as it is
    store.mkdir()
    case = _twin(spark_case, tmp_path)
    spark_case = _twin(spark_case, tmp_path, "local")
    built = build_timeline_spark(Case.open(case), spark, parts_uri=f"file://{store}/")

    listing = read_parts_listing(case / "timeline" / "parts.json")
    assert built.parts_root == listing["root"]
    assert listing["root"].startswith(f"file://{store}/timeline-")
    parts = timeline_files(case / "timeline")
    assert parts == listing["parts"] and all(isinstance(p, str) for p in parts)
    assert not list((case / "timeline").rglob("*.parquet"))  # none left in the case
    on_disk = sorted(f"file://{p}" for p in store.rglob("*.parquet"))
    assert sorted(parts) == on_disk
    assert sum(listing["rows"]) == built.rows
    assert listing["bytes"] == [Path(p.removeprefix("file://")).stat().st_size for p in parts]
    assert all("/log_source=" in p and "/event_date=" in p for p in parts)

    assert _rows(parts) == _rows(timeline_files(spark_case / "timeline"))
    assert _summary(case) == _summary(spark_case)
    summary = json.loads((case / "timeline" / "summary.json").read_text())
    assert summary["parts_root"] == listing["root"]

    local_detect = cloudir("detect", "--case", str(spark_case))
    assert local_detect.code in (0, 1), local_detect.stderr
    expected = _findings(spark_case)
    assert expected["findings"]  # the corpus has findings to compare
    for engine in ("duckdb", "spark"):
        found = cloudir("detect", "--case", str(case), "--engine", engine)
        assert found.code == local_detect.code, found.stderr
        assert _findings(case) == expected, engine

    sql = "SELECT source, count(*) AS n FROM timeline GROUP BY source ORDER BY source"
    for engine in ("duckdb", "spark"):
        asked = cloudir("query", "--case", str(case), "--engine", engine, sql, "--json")
        assert asked.code == 0, asked.stderr
        local = cloudir("query", "--case", str(spark_case), sql, "--json")
        assert asked.json() == local.json(), engine


def test_a_timeline_in_s3_is_written_by_the_executors_and_read_by_duckdb(
    spark: Any, spark_case: Path, tmp_path: Path, moto_url: str
) -> None:
    s3 = boto_client(moto_url, "s3")
    bucket = f"timelines-{tmp_path.name.lower().replace('_', '-')}"[:60]
    s3.create_bucket(Bucket=bucket)
    case = _twin(spark_case, tmp_path)
    spark_case = _twin(spark_case, tmp_path, "local")
    aws = AwsOptions(endpoint_url=moto_url)
    build_timeline_spark(Case.open(case), spark, aws, parts_uri=f"s3://{bucket}/org trail")

    parts = timeline_files(case / "timeline")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(f"s3://{bucket}/{k}" for k in keys if k.endswith(".parquet")) == sorted(parts)
    assert _rows(parts, moto_url) == _rows(timeline_files(spark_case / "timeline"))

    env = {"AWS_ENDPOINT_URL": moto_url}  # the laptop reads the parts as the SDK is told
    local = cloudir("detect", "--case", str(spark_case))
    assert local.code in (0, 1), local.stderr
    found = cloudir("detect", "--case", str(case), env=env)
    assert found.code == local.code, found.stderr
    assert _findings(case) == _findings(spark_case)
    sql = "SELECT count(DISTINCT event_id) AS n FROM timeline"
    asked = cloudir("query", "--case", str(case), sql, "--json", env=env)
    assert asked.code == 0, asked.stderr
    assert asked.json() == cloudir("query", "--case", str(spark_case), sql, "--json").json()
    for folder in (case, spark_case):
        reported = cloudir("report", "--case", str(folder), env=env)
        assert reported.code == 0, reported.stderr
    ours, local_report = (
        json.loads((c / "report" / "report.json").read_text()) for c in (case, spark_case)
    )
    assert ours["timeline"]["events"] > 100
    for key in ("timeline", "entities", "summary", "findings"):
        assert ours[key] == local_report[key], key


def test_a_rebuild_writes_a_new_run_and_names_the_parts_it_no_longer_lists(
    spark: Any, spark_case: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    case = _twin(spark_case, tmp_path)
    args = ["timeline", "--case", str(case), "--engine", "spark", "--parts-uri", f"file://{store}"]
    first = cloudir(*args, "--spark-master", "local[1]")
    assert first.code in (0, 3), first.stderr
    earlier = read_parts_listing(case / "timeline" / "parts.json")
    assert f"into {earlier['root']} (listed in " in first.stdout
    second = cloudir(*args, "--spark-master", "local[1]")
    assert second.code in (0, 3), second.stderr
    later = read_parts_listing(case / "timeline" / "parts.json")
    assert later["root"] != earlier["root"]
    assert f"the previous timeline's parts at {earlier['root']} are no longer listed" in (
        second.stderr
    )
    assert all(Path(p.removeprefix("file://")).is_file() for p in earlier["parts"])  # kept
    rebuilt_locally = cloudir("timeline", "--case", str(case))  # back into the case folder
    assert rebuilt_locally.code in (0, 3)
    assert not (case / "timeline" / "parts.json").exists()
    assert all(isinstance(p, Path) for p in timeline_files(case / "timeline"))
    assert f"parts at {later['root']} are no longer listed" in rebuilt_locally.stderr


@pytest.mark.parametrize(
    ("extra", "code", "said"),
    [
        (["--parts-uri", "s3://bucket/x"], 2, "--parts-uri is the spark engine's"),
        (["--engine", "spark", "--parts-uri", "ftp://host/x"], 2, "cannot write ftp://"),
        (["--engine", "spark", "--parts-uri", "s3://b/../x"], 2, "`..` are not allowed"),
        (["--engine", "spark", "--parts-uri", "file://relative"], 2, "absolute path"),
        (["--engine", "spark", "--parts-uri", "/plain/path"], 2, "not a storage URI"),
        (["--engine", "spark", "--parts-uri", "s3://b/case[1]"], 2, "for a pattern"),
        (["--engine", "spark", "--parts-uri", "s3://b/2024-07-31T10:00"], 2, "or a scheme"),
    ],
)
def test_a_uri_cloudir_cannot_write_is_refused_in_one_line(
    spark_case: Path, tmp_path: Path, extra: list[str], code: int, said: str
) -> None:
    case = _twin(spark_case, tmp_path)
    before = sorted(p.name for p in (case / "timeline").rglob("*"))
    refused = cloudir("timeline", "--case", str(case), *extra)
    assert refused.code == code
    assert said in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in (case / "timeline").rglob("*")) == before


def test_a_missing_bucket_or_folder_fails_before_any_work(
    spark: Any, spark_case: Path, tmp_path: Path, moto_url: str
) -> None:
    case = _twin(spark_case, tmp_path)
    before = sorted(str(p) for p in (case / "timeline").rglob("*"))
    gone = cloudir(
        "timeline", "--case", str(case), "--engine", "spark", "--spark-master", "local[1]",
        "--endpoint-url", moto_url, "--parts-uri", "s3://no-such-bucket-cloudir/tl",
    )  # fmt: skip
    assert gone.code == 4, gone.stderr
    assert "the bucket or container no-such-bucket-cloudir does not exist" in gone.stderr
    unmounted = cloudir(
        "timeline", "--case", str(case), "--engine", "spark", "--spark-master", "local[1]",
        "--parts-uri", f"file://{tmp_path}/not-mounted",
    )  # fmt: skip
    assert unmounted.code == 2, unmounted.stderr
    assert not (tmp_path / "not-mounted").exists()
    assert sorted(str(p) for p in (case / "timeline").rglob("*")) == before


def test_a_failed_run_removes_only_its_own_folder(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "timeline-earlier").mkdir(parents=True)
    (store / "timeline-earlier" / "part-00000.parquet").write_bytes(b"PAR1")
    run = store / "timeline-this-run"
    (run / "log_source=cloudtrail").mkdir(parents=True)
    (run / "log_source=cloudtrail" / "part-00000.parquet").write_bytes(b"PAR1")
    PartsTarget(tmp_path / "building", f"file://{run}", None).discard()
    assert not run.exists()
    assert (store / "timeline-earlier" / "part-00000.parquet").is_file()


# -- parts.json is read as hostile input -----------------------------------------------
def _listing(folder: Path, document: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "parts.json"
    path.write_text(json.dumps(document))
    return path


ROOT = "s3://timelines/case-42/timeline-20261205T000000Z-0a1b2c3d"


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ([], "format is not"),
        ({"format": "other/1", "root": ROOT, "parts": []}, "format is not"),
        ({"format": PARTS_FORMAT, "root": "/etc", "parts": []}, "no root URI"),
        ({"format": PARTS_FORMAT, "root": "ftp://x/y", "parts": []}, "cannot write ftp://"),
        (
            {"format": PARTS_FORMAT, "root": ROOT, "parts": [{"uri": "file:///etc/passwd"}]},
            "not under",
        ),
        (
            {"format": PARTS_FORMAT, "root": ROOT, "parts": [{"uri": ROOT + "/../x.parquet"}]},
            "`..` step",
        ),
        ({"format": PARTS_FORMAT, "root": ROOT, "parts": ["x"]}, "not under"),
    ],
)
def test_a_damaged_parts_list_is_one_line_naming_it(
    tmp_path: Path, document: Any, why: str
) -> None:
    listing = _listing(tmp_path / "timeline", document)
    with pytest.raises(EvidenceError) as raised:
        timeline_files(tmp_path / "timeline")
    assert str(listing) in str(raised.value) and why in str(raised.value)


def test_a_parts_list_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = _listing(tmp_path / "elsewhere", {"format": PARTS_FORMAT, "root": ROOT, "parts": []})
    (tmp_path / "timeline").mkdir()
    os.symlink(real, tmp_path / "timeline" / "parts.json")
    with pytest.raises(EvidenceError):
        timeline_files(tmp_path / "timeline")


def test_query_on_a_damaged_parts_list_exits_3(spark_case: Path, tmp_path: Path) -> None:
    case = _twin(spark_case, tmp_path)
    _listing(case / "timeline", {"format": PARTS_FORMAT, "root": ROOT, "parts": [{"uri": "x"}]})
    asked = cloudir("query", "--case", str(case), "SELECT count(*) FROM timeline")
    assert asked.code == 3
    assert "parts.json: not a timeline parts list" in asked.stderr
    assert "Traceback" not in asked.stderr


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.text(max_size=40))
def test_only_parts_under_the_root_with_plain_steps_are_read(tmp_path: Path, tail: str) -> None:
    uri = ROOT + "/" + tail
    _listing(tmp_path / "timeline", {"format": PARTS_FORMAT, "root": ROOT, "parts": [{"uri": uri}]})
    steps = tail.split("/")
    try:
        parts = timeline_files(tmp_path / "timeline")
    except EvidenceError:
        assert any(step in ("", ".", "..") for step in steps)
    else:
        assert parts == [uri]
        assert all(step not in ("", ".", "..") for step in steps)
