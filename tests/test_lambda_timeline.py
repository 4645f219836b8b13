"""The `lambda-function` parser as an adversary reads it, and a saved capture folder
brought in by `capture files` (recognised, on the timeline, its rules firing).

The answers are shaped as the Lambda API reference's examples (GetFunction,
ListVersionsByFunction, ListAliases, GetFunctionUrlConfig, ListEventSourceMappings,
GetLayerVersion: https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html and
the pages beside it), written here rather than shipped as files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.parsers import ErrorLog, ParseOptions
from cloudir.analyze.parsers import lambda_config as parser
from cloudir.safe_text import path_segment
from tests.conftest import cloudir, query
from tests.test_detect_reference import assert_agreement

OWNER = "111122223333"
FOREIGN = "444455556666"
ARN = f"arn:aws:lambda:us-west-2:{OWNER}:function:my-function"
LAYER = f"arn:aws:lambda:us-west-2:{FOREIGN}:layer:shady-helpers:7"
SECRET = "hunter2-but-longer-0b1c"


def _config(**extra: Any) -> dict[str, Any]:
    return {
        "FunctionName": "my-function",
        "FunctionArn": ARN,
        "Runtime": "nodejs22.x",
        "Role": f"arn:aws:iam::{OWNER}:role/lambda-role",
        "Handler": "index.handler",
        "CodeSize": 5797206,
        "CodeSha256": "YFgDgEKG3ugvF1+pX64gV6tu9qNuIYNUdgJm8nCxsm4=",
        "LastModified": "2024-07-31T10:00:00.000+0000",
        "Version": "$LATEST",
        "Environment": {"Variables": {"DB_PASSWORD": SECRET, "STAGE": "prod"}},
        "Layers": [{"Arn": LAYER, "CodeSize": 1200}],
        **extra,
    }


def _write_capture(folder: Path) -> None:
    """A capture folder as `cloudir capture lambda` leaves it (without the packages)."""
    (folder / "versions").mkdir(parents=True)
    (folder / "aliases").mkdir()
    (folder / "event-source-mappings").mkdir()
    (folder / "layers").mkdir()
    get_function = {
        "Configuration": _config(),
        "Code": {"RepositoryType": "S3", "Location": "https://awslambda-us-west-2-tasks.s3..."},
        "Tags": {"team": "billing"},
    }
    (folder / "get-function.json").write_text(json.dumps(get_function))
    version = _config(Version="1", FunctionArn=f"{ARN}:1",
                      LastModified="2024-07-31T11:00:00.000+0000")  # fmt: skip
    (folder / "versions" / "page-00001.json").write_text(
        json.dumps({"Versions": [_config(), version]})
    )
    alias = {"AliasArn": f"{ARN}:live", "Name": "live", "FunctionVersion": "1",
             "RevisionId": "594f41fb-b85f-4c20-95c7-6ca5f2a92c93"}  # fmt: skip
    (folder / "aliases" / "page-00001.json").write_text(json.dumps({"Aliases": [alias]}))
    url = {"FunctionUrl": "https://abcdefg.lambda-url.us-west-2.on.aws/", "FunctionArn": ARN,
           "AuthType": "AWS_IAM", "CreationTime": "2024-07-31T12:00:00.000Z",
           "LastModifiedTime": "2024-07-31T12:00:00.000Z"}  # fmt: skip
    (folder / "url-config.json").write_text(json.dumps(url))
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "partner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{FOREIGN}:root"},
        "Action": "lambda:InvokeFunction", "Resource": ARN}]}  # fmt: skip
    (folder / "policy.json").write_text(json.dumps({"Policy": json.dumps(policy),
                                                    "RevisionId": "x"}))  # fmt: skip
    mapping = {"UUID": "a1b2c3d4-5678-90ab-cdef-11111EXAMPLE", "State": "Enabled",
               "EventSourceArn": f"arn:aws:sqs:us-west-2:{OWNER}:jobs", "FunctionArn": ARN,
               "LastModified": 1722423600.0}  # fmt: skip
    (folder / "event-source-mappings" / "page-00001.json").write_text(
        json.dumps({"EventSourceMappings": [mapping]})
    )
    layer = {"Content": {"Location": "https://...", "CodeSha256": "abc=", "CodeSize": 1200},
             "LayerArn": LAYER.rsplit(":", 1)[0], "LayerVersionArn": LAYER, "Version": 7,
             "CreatedDate": "2024-07-01T08:00:00.000+0000"}  # fmt: skip
    (folder / "layers" / "shady-helpers-7.json").write_text(json.dumps(layer))


def test_a_saved_capture_is_recognised_and_its_rules_fire(tmp_path: Path) -> None:
    folder = tmp_path / "my-function"
    _write_capture(folder)
    case = tmp_path / "case"
    captured = cloudir("capture", "files", "--case", str(case), str(folder), "--json")
    assert captured.code == 0, captured.stderr
    assert [i["kind"] for i in captured.json()["items"]] == ["lambda-function"]
    built = cloudir("timeline", "--case", str(case), "--strict", "--json")
    assert built.code == 0, built.stderr
    rows = query(case, "SELECT timestamp, timestamp_desc, action, target, event_id, raw "
                       "FROM timeline ORDER BY timestamp, action")  # fmt: skip
    assert [(r["timestamp"][:19], r["action"]) for r in rows] == [
        ("2024-07-01 08:00:00", "lambda:layer-version"),
        ("2024-07-31 10:00:00", "lambda:configuration"),
        ("2024-07-31 10:00:00", "lambda:layer"),
        ("2024-07-31 11:00:00", "lambda:alias"),
        ("2024-07-31 11:00:00", "lambda:event-source-mapping"),
        ("2024-07-31 11:00:00", "lambda:version"),
        ("2024-07-31 12:00:00", "lambda:function-url"),
    ]
    assert {r["target"] for r in rows} == {ARN}
    everything = cloudir("query", "--case", str(case), "SELECT * FROM timeline", "--json")
    assert SECRET not in everything.stdout and "prod" not in everything.stdout
    assert "DB_PASSWORD" in everything.stdout  # names are kept
    config = json.loads(next(r["raw"] for r in rows if r["action"] == "lambda:configuration"))
    assert config["PolicyGrant"] == f"cross-account:{FOREIGN}"
    detect = cloudir("detect", "--case", str(case), "--json")
    assert detect.code == 1, detect.stderr
    findings = json.loads((case / "findings" / "findings.json").read_text())["findings"]
    fired = {f["rule_id"]: set(f["event_ids"]) for f in findings}
    layer_row = next(r["event_id"] for r in rows if r["action"] == "lambda:layer")
    config_row = next(r["event_id"] for r in rows if r["action"] == "lambda:configuration")
    assert fired["e5037756-e804-4836-9a43-f626178befef"] == {layer_row}
    assert fired["be46e7fa-168b-41ad-a295-30fc68c36252"] == {config_row}
    assert "9011897b-52f7-406c-9b81-d223a0009703" not in fired  # the URL needs IAM auth
    assert_agreement(case)  # the plain-Python reference finds the same


def test_the_reference_agrees_on_a_public_url(tmp_path: Path) -> None:
    folder = tmp_path / "my-function"
    _write_capture(folder)
    url = json.loads((folder / "url-config.json").read_text())
    (folder / "url-config.json").write_text(json.dumps({**url, "AuthType": "NONE"}))
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    assert cloudir("timeline", "--case", str(case)).code == 0
    reference = assert_agreement(case)
    [url_row] = query(case, "SELECT event_id FROM timeline WHERE action = 'lambda:function-url'")
    assert reference["9011897b-52f7-406c-9b81-d223a0009703"].event_ids == {url_row["event_id"]}


def test_masking_covers_every_environment_at_any_depth() -> None:
    record = {"Versions": [{"Environment": {"Variables": {"A": "x", "B": 3}}}],
              "Environment": {"Variables": "not a map"}}  # fmt: skip
    out = parser.masked(record)
    assert out["Versions"][0]["Environment"]["Variables"] == {
        "A": parser.mask("x"),
        "B": parser.mask(3),
    }
    assert out["Environment"]["Variables"] == parser.mask("not a map")
    assert record["Versions"][0]["Environment"]["Variables"]["A"] == "x"  # a copy


# -- the parser as an adversary reads it ------------------------------------------------
def _parse(folder: Path, name: str, document: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    errors = ErrorLog("e1", name)
    rows = [r for b in parser.parse(path, "e1", errors, ParseOptions()) for r in b.to_pylist()]
    return rows, errors.entries


@pytest.mark.parametrize(
    ("name", "document", "why"),
    [
        ("get-function.json", [1], "not a JSON object"),
        ("get-function.json", {"Configuration": {}}, "no Configuration.FunctionArn"),
        (
            "get-function.json",
            {"Configuration": _config(LastModified="yesterday")},
            "LastModified is not a time",
        ),
        ("versions/page-00001.json", {"Versions": "x"}, "no `Versions` list"),
        (
            "versions/page-00001.json",
            {"Versions": [_config(Version="2", LastModified=5e20)]},
            "LastModified is not a time",
        ),
        (
            "aliases/page-00001.json",
            {"Aliases": [{"Name": "x", "FunctionVersion": "9"}]},
            "has no known time",
        ),
        ("url-config.json", {"AuthType": "NONE"}, "neither CreationTime"),
        (
            "event-source-mappings/page-00001.json",
            {"EventSourceMappings": [3]},
            "not a JSON object",
        ),
        ("layers/x-1.json", {"LayerVersionArn": LAYER}, "without LayerVersionArn or a Created"),
    ],
)
def test_a_bad_answer_or_entry_is_a_logged_skip(
    tmp_path: Path, name: str, document: Any, why: str
) -> None:
    rows, errors = _parse(tmp_path, name, document)
    assert rows == [] and len(errors) == 1 and why in errors[0]["reason"]


value = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=30), st.booleans())
entry = st.fixed_dictionaries(
    {},
    optional={
        "LastModified": st.one_of(
            value, st.just("2024-07-31T10:00:00.000+0000"), st.just(1722423600.5)
        ),
        "Version": st.one_of(value, st.just("$LATEST"), st.just("3")),
        "FunctionArn": st.one_of(value, st.just(ARN)),
        "Environment": st.one_of(
            value,
            st.fixed_dictionaries(
                {
                    "Variables": st.dictionaries(
                        st.text(max_size=5), st.one_of(value, st.just(SECRET)), max_size=3
                    )
                }
            ),
        ),
        "UUID": value,
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entries=st.lists(st.one_of(entry, st.integers(), st.text(max_size=5)), max_size=6),
    folder=st.sampled_from(["versions", "event-source-mappings"]),
)
def test_every_list_entry_is_a_row_or_one_logged_line(
    tmp_path: Path, entries: list[Any], folder: str
) -> None:
    key = "Versions" if folder == "versions" else "EventSourceMappings"
    rows, errors = _parse(tmp_path, f"{folder}/page-00001.json", {key: entries})
    latest = sum(1 for e in entries if isinstance(e, dict) and e.get("Version") == "$LATEST")
    expected = len(entries) - (latest if folder == "versions" else 0)
    assert len(rows) + len(errors) == expected
    assert all(r["artifact"] == "aws:lambda" and r["timestamp"] for r in rows)
    assert all(SECRET not in r["raw"] for r in rows)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=st.dictionaries(st.sampled_from(list(_config())), value, max_size=8))
def test_a_hostile_configuration_is_rows_or_logged_lines(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    document = {"Configuration": {**_config(), **config}}
    rows, errors = _parse(tmp_path, "get-function.json", document)
    assert rows or errors
    assert all(r["artifact"] == "aws:lambda" and SECRET not in r["raw"] for r in rows)


def test_a_code_package_is_kept_unread_by_design_and_strict_passes(tmp_path: Path) -> None:
    folder = tmp_path / "my-function"
    _write_capture(folder)
    (folder / "code.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    built = cloudir("timeline", "--case", str(case), "--strict", "--json")
    assert built.code == 0, built.stderr
    [kept] = [
        json.loads(line)
        for line in (case / "timeline" / "errors.jsonl").read_text().splitlines()
        if json.loads(line)["path"].endswith("code.zip")
    ]
    assert kept["kind"] == "no_parser" and kept["by_design"] is True
    assert "never unpacked or run" in kept["reason"]


# -- aliases' and versions' own policies and URLs (qualifiers/<q>/) ---------------------
def _write_qualifiers(folder: Path, alias: str = "live") -> None:
    """`live`'s own URL (auth NONE, FunctionArn qualified as AWS answers) and policy
    (public); version 1's own policy (another account). The function's own stay as
    `_write_capture` made them (URL with IAM auth)."""
    aliases = json.loads((folder / "aliases" / "page-00001.json").read_text())
    aliases["Aliases"][0].update(Name=alias, AliasArn=f"{ARN}:{alias}")
    (folder / "aliases" / "page-00001.json").write_text(json.dumps(aliases))
    live = folder / "qualifiers" / path_segment(alias)
    live.mkdir(parents=True)
    url = {"FunctionUrl": "https://hijklmn.lambda-url.us-west-2.on.aws/",
           "FunctionArn": f"{ARN}:{alias}", "AuthType": "NONE",
           "CreationTime": "2024-08-02T09:00:00.000Z",
           "LastModifiedTime": "2024-08-02T09:00:00.000Z"}  # fmt: skip
    (live / "url-config.json").write_text(json.dumps(url))

    def policy(principal: Any, resource: str) -> str:
        statement = {"Sid": "s", "Effect": "Allow", "Principal": principal,
                     "Action": "lambda:InvokeFunction", "Resource": resource}  # fmt: skip
        document = {"Version": "2012-10-17", "Statement": [statement]}
        return json.dumps({"Policy": json.dumps(document), "RevisionId": "r"})

    (live / "policy.json").write_text(policy("*", f"{ARN}:{alias}"))
    (folder / "qualifiers" / "1").mkdir()
    (folder / "qualifiers" / "1" / "policy.json").write_text(
        policy({"AWS": f"arn:aws:iam::{FOREIGN}:root"}, f"{ARN}:1")
    )


def test_an_alias_url_and_qualifier_policies_are_rows_and_their_rules_fire(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "my-function"
    _write_capture(folder)
    _write_qualifiers(folder)
    case = tmp_path / "case"
    assert cloudir("capture", "files", "--case", str(case), str(folder)).code == 0
    built = cloudir("timeline", "--case", str(case), "--strict")
    assert built.code == 0, built.stderr
    rows = query(case, "SELECT timestamp, action, target, message, event_id, raw "
                       "FROM timeline ORDER BY timestamp, action")  # fmt: skip
    assert {r["target"] for r in rows} == {ARN}  # every row is the function's
    urls = [(r["timestamp"][:19], json.loads(r["raw"]).get("Qualifier"), r) for r in rows
            if r["action"] == "lambda:function-url"]  # fmt: skip
    assert [(t, q) for t, q, _ in urls] == [
        ("2024-07-31 12:00:00", None), ("2024-08-02 09:00:00", "live")
    ]  # fmt: skip
    alias_url = urls[1][2]
    assert json.loads(alias_url["raw"])["AuthType"] == "NONE"
    assert "Lambda my-function:live: function URL https://hijklmn" in alias_url["message"]
    by_action = {r["action"]: r for r in rows}
    alias = json.loads(by_action["lambda:alias"]["raw"])
    assert alias["PolicyGrant"] == "public" and alias["FunctionUrl"]["AuthType"] == "NONE"
    assert "policy grants public; URL auth NONE" in by_action["lambda:alias"]["message"]
    version = json.loads(by_action["lambda:version"]["raw"])
    assert version["PolicyGrant"] == f"cross-account:{FOREIGN}"
    assert cloudir("detect", "--case", str(case)).code == 1
    findings = json.loads((case / "findings" / "findings.json").read_text())["findings"]
    fired = {f["rule_id"]: set(f["event_ids"]) for f in findings}
    assert fired["9011897b-52f7-406c-9b81-d223a0009703"] == {alias_url["event_id"]}
    assert fired["be46e7fa-168b-41ad-a295-30fc68c36252"] == {
        by_action[a]["event_id"] for a in ("lambda:configuration", "lambda:alias", "lambda:version")
    }
    assert_agreement(case)


def test_an_unusual_alias_name_is_found_again_and_shown_inert(tmp_path: Path) -> None:
    """A name AWS would refuse (a separator, an escape) is a digest folder in the case;
    the parser finds it by the same function and takes the name from the answer's ARN."""
    odd = "../x\x1b[31m"
    folder = tmp_path / "my-function"
    _write_capture(folder)
    _write_qualifiers(folder, odd)
    [segment] = [p.name for p in (folder / "qualifiers").iterdir() if p.name != "1"]
    assert segment == path_segment(odd) and segment.startswith("_.") and "/" not in segment
    path = folder / "qualifiers" / segment / "url-config.json"
    errors = ErrorLog("e1", "url-config.json")
    rows = [r for b in parser.parse(path, "e1", errors, ParseOptions()) for r in b.to_pylist()]
    assert errors.entries == [] and len(rows) == 1
    assert json.loads(rows[0]["raw"])["Qualifier"] == odd
    assert "\x1b" not in rows[0]["message"] and "\\x1b[31m" in rows[0]["message"]
    aliases = folder / "aliases" / "page-00001.json"
    errors = ErrorLog("e1", "aliases/page-00001.json")
    [alias] = [
        r for b in parser.parse(aliases, "e1", errors, ParseOptions()) for r in b.to_pylist()
    ]
    assert json.loads(alias["raw"])["PolicyGrant"] == "public"


@given(name=st.text(max_size=200))
def test_a_path_segment_is_one_plain_name_and_the_same_each_time(name: str) -> None:
    segment = path_segment(name)
    assert segment == path_segment(name) and 0 < len(segment) <= 128
    assert segment not in (".", "..") and "/" not in segment and "\\" not in segment
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in segment)
    plain = (
        bool(name)
        and len(name) <= 128
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )
    assert (segment == name) == plain
