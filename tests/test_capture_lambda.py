"""`cloudir capture lambda`: a function's configuration, code, layers and logs as received.

moto's Lambda over HTTP holds the functions (role, zip code, a layer, versions, an alias,
a function URL, a permission, an SQS event source mapping); tests/lambda_proxy.py serves
the code packages moto names but cannot serve, serves other bytes for a tampered case,
and pages ListFunctions. The capture stores every answer as received, checks each package
against its CodeSha256, captures the log group, and its rows reach the timeline with the
environment variables' values masked.

Aliases' and versions' own policies and URLs (GetPolicy / GetFunctionUrlConfig with
`Qualifier=`): moto 5 takes AddPermission and GetPolicy with a Qualifier but keeps one
policy per function (every existing qualifier answers it; an unknown one is
ResourceNotFound), and ignores the Qualifier of the function URL calls altogether. The
first test captures what moto answers; the per-alias URL and per-version policy AWS
keeps are served by the proxy (`alias_urls`, `qualified_policies`).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import boto_client, cloudir, custody, query
from tests.lambda_proxy import LambdaProxy

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(hours=3)
END = NOW - timedelta(minutes=1)
SECRET = "s3cr3t-Value-9f8e7d"
URL_NO_AUTH = "9011897b-52f7-406c-9b81-d223a0009703"
LAYER_OTHER_ACCOUNT = "e5037756-e804-4836-9a43-f626178befef"
POLICY_OUTSIDE = (
    "be46e7fa-168b-41ad-a295-30fc68c36252"  # an environment variable's value: never shown unmasked
)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _zip(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def proxy(moto_url: str) -> Iterator[LambdaProxy]:
    with LambdaProxy(moto_url) as running:
        yield running


@pytest.fixture
def function(moto_url: str, proxy: LambdaProxy) -> dict[str, Any]:
    """A function with a layer, two versions, an alias, a public URL, a permission for
    everyone, an SQS trigger, and a log group with an event in the window."""
    tag = uuid.uuid4().hex[:8]
    iam = boto_client(moto_url, "iam")
    role = iam.create_role(
        RoleName=f"fn-role-{tag}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]  # fmt: skip
    lam = boto_client(moto_url, "lambda")
    layer_zip = _zip("python/helper.py", "X = 1\n")
    layer = lam.publish_layer_version(LayerName=f"helpers-{tag}", Content={"ZipFile": layer_zip})
    code = _zip("app.py", "def handler(event, context):\n    return 1\n")
    name = f"billing-{tag}"
    lam.create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="app.handler",
        Code={"ZipFile": code}, Layers=[layer["LayerVersionArn"]],
        Environment={"Variables": {"API_TOKEN": SECRET, "STAGE": "prod"}},
    )  # fmt: skip
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    lam.add_permission(FunctionName=name, StatementId="anyone", Action="lambda:InvokeFunction",
                       Principal="*")  # fmt: skip
    queue = boto_client(moto_url, "sqs").create_queue(QueueName=f"jobs-{tag}")["QueueUrl"]
    queue_arn = boto_client(moto_url, "sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=name)
    logs = boto_client(moto_url, "logs")
    logs.create_log_group(logGroupName=f"/aws/lambda/{name}")
    logs.create_log_stream(logGroupName=f"/aws/lambda/{name}", logStreamName="s")
    logs.put_log_events(logGroupName=f"/aws/lambda/{name}", logStreamName="s", logEvents=[
        {"timestamp": int((START + timedelta(minutes=5)).timestamp() * 1000),
         "message": "START RequestId: 1"}])  # fmt: skip
    proxy.packages[name] = code
    proxy.packages[layer["LayerVersionArn"]] = layer_zip
    return {"name": name, "code": code, "layer": layer["LayerVersionArn"], "role": role,
            "layer_zip": layer_zip}  # fmt: skip


def _capture(case: Path, proxy: LambdaProxy, *args: str) -> Any:
    return cloudir(
        "capture", "lambda", "--case", str(case), "--endpoint-url", proxy.url,
        "--region", "us-east-1", "--start", _iso(START), "--end", _iso(END), "--json", *args,
    )  # fmt: skip


def test_a_function_is_captured_whole_and_its_code_verified(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    run = _capture(case, proxy, function["name"])
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["code"] == "verified" and item["complete"] is True
    assert (item["layers"], item["aliases"], item["policy"]) == (1, 1, True)
    assert item["url_auth_type"] == "NONE" and item["versions"] >= 2  # $LATEST and 1
    # the alias and version 1, asked with Qualifier=: moto answers the function's one
    # policy for both; the alias has no URL of its own (the proxy says so, as AWS would)
    assert (item["qualifiers"], item["qualifier_policies"]) == (2, 2)
    assert (item["qualifier_url_auth_types"], item["urls_auth_none"]) == ({}, 1)
    folder = case / "evidence" / item["evidence_id"]
    assert (folder / "code.zip").read_bytes() == function["code"]
    stem = "-".join(function["layer"].split(":")[-2:])
    assert (folder / "layers" / f"{stem}.zip").read_bytes() == function["layer_zip"]
    got = json.loads((folder / "get-function.json").read_bytes())
    assert got["Configuration"]["Environment"]["Variables"]["API_TOKEN"] == SECRET  # as received
    for name in ("policy.json", "url-config.json", "versions/page-00001.json",
                 "aliases/page-00001.json", "event-source-mappings/page-00001.json",
                 f"layers/{stem}.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    mappings = json.loads((folder / "event-source-mappings/page-00001.json").read_bytes())
    assert len(mappings["EventSourceMappings"]) == 1
    lam = boto_client(proxy.url, "lambda")
    for qualifier in ("live", "1"):
        kept = json.loads((folder / "qualifiers" / qualifier / "policy.json").read_bytes())
        asked = lam.get_policy(FunctionName=function["name"], Qualifier=qualifier)
        assert kept["Policy"] == asked["Policy"] and '"Principal": "*"' in kept["Policy"]
    assert not (folder / "qualifiers" / "live" / "url-config.json").exists()
    assert not (folder / "qualifiers" / "1" / "url-config.json").exists()  # not asked
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "lambda-function" and SECRET not in json.dumps(meta)
    entries = [e for e in custody(case) if e.get("evidence_id") == item["evidence_id"]]
    assert entries[-1]["action"] == "capture-complete"
    assert "no function URL on aliases live" in entries[-1]["note"]
    stored = {f["path"].split(item["evidence_id"] + "/", 1)[1] for e in entries
              for f in e.get("files", [])}  # fmt: skip
    assert {"get-function.json", "code.zip", f"layers/{stem}.zip",
            "qualifiers/live/policy.json", "qualifiers/1/policy.json"} <= stored  # fmt: skip
    logs = [e for e in custody(case) if e.get("evidence_id") == item["log_group_evidence_id"]]
    assert logs[-1]["action"] == "capture-complete"
    assert SECRET not in run.stdout + run.stderr


def test_a_package_whose_hash_differs_leaves_the_item_incomplete(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    proxy.tampered[function["name"]] = function["code"] + b"tampered"
    case = tmp_path / "case"
    run = _capture(case, proxy, function["name"])
    assert run.code == 3
    [item] = run.json()["items"]
    assert item["code"] == "mismatch" and item["complete"] is False
    [problem] = item["failed"]
    assert "code.zip has SHA-256" in problem and "not the CodeSha256" in problem
    assert f"incomplete: {function['name']}: code: code.zip has SHA-256" in run.stderr
    folder = case / "evidence" / item["evidence_id"]
    assert (folder / "code.zip").read_bytes() == function["code"] + b"tampered"  # kept
    entries = [e for e in custody(case) if e.get("evidence_id") == item["evidence_id"]]
    assert entries[-1]["action"] == "capture-incomplete"
    assert "not the CodeSha256" in entries[-1]["note"]


def test_a_tampered_layer_package_is_named(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    proxy.tampered[function["layer"]] = b"PK not the layer"
    run = _capture(tmp_path / "case", proxy, function["name"])
    assert run.code == 3
    [item] = run.json()["items"]
    assert item["code"] == "verified" and item["complete"] is False
    assert any(p.startswith(f"layer {function['layer']}:") for p in item["failed"])


def test_all_pages_list_functions(
    function: dict[str, Any], moto_url: str, proxy: LambdaProxy, tmp_path: Path
) -> None:
    lam = boto_client(moto_url, "lambda")
    other = f"other-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=other, Runtime="python3.12", Role=function["role"],
                        Handler="a.b", Code={"ZipFile": _zip("a.py", "")})  # fmt: skip
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    proxy.list_page = 1
    run = _capture(tmp_path / "case", proxy, "--all")
    items = run.json()["items"]
    assert {i["function"] for i in items} == names
    assert proxy.list_requests == len(names)  # one page per function
    assert run.code in (0, 3)  # functions made by other tests have no served package
    mine = next(i for i in items if i["function"] == function["name"])
    assert mine["code"] == "verified" and mine["complete"] is True


def test_a_missing_function_is_one_line_before_the_case_is_made(
    moto_url: str, tmp_path: Path
) -> None:
    run = cloudir(
        "capture", "lambda", "--case", str(tmp_path / "case"), "--endpoint-url", moto_url,
        "--region", "us-east-1", "no-such-function",
    )  # fmt: skip
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: no Lambda function named no-such-function in this account and region"
    ]
    assert not (tmp_path / "case").exists()
    neither = cloudir("capture", "lambda", "--case", str(tmp_path / "case"))
    assert neither.code == 2 and "or give --all" in neither.stderr


def test_a_function_without_log_group_or_url_or_policy_says_so(
    function: dict[str, Any], moto_url: str, proxy: LambdaProxy, tmp_path: Path
) -> None:
    lam = boto_client(moto_url, "lambda")
    name = f"quiet-{uuid.uuid4().hex[:8]}"
    code = _zip("a.py", "def h(e, c):\n    pass\n")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=function["role"],
                        Handler="a.h", Code={"ZipFile": code})  # fmt: skip
    proxy.packages[name] = code
    run = _capture(tmp_path / "case", proxy, name)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["log_group_evidence_id"] is None
    assert (
        item["log_note"]
        == f"{name}: no log group /aws/lambda/{name} (the function has not logged there)"
    )
    assert item["log_note"] in run.stderr
    assert (item["policy"], item["url_auth_type"]) == (False, None)
    entries = [e for e in custody(tmp_path / "case") if e.get("evidence_id") == item["evidence_id"]]
    assert "no resource-based policy" in entries[-1]["note"]
    assert "no function URL" in entries[-1]["note"]


def test_the_capture_becomes_timeline_rows_with_environment_values_masked(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    from cloudir.analyze.parsers.lambda_config import mask

    proxy.qualified_policies = {}  # as AWS: the permission was given to the function only
    case = tmp_path / "case"
    run = _capture(case, proxy, function["name"])
    assert run.code == 0, run.stderr
    built = cloudir("timeline", "--case", str(case), "--json")
    assert built.code == 0, built.stderr
    errors = (case / "timeline" / "errors.jsonl").read_text()
    assert "a Lambda code package: kept as evidence, never unpacked or run" in errors
    assert errors.count("\n") == 2  # code.zip and the layer's zip: nothing else skipped
    everything = cloudir("query", "--case", str(case), "SELECT * FROM timeline", "--json")
    assert everything.code == 0 and SECRET not in everything.stdout
    rows = query(case, "SELECT timestamp_desc, action, target, message, raw FROM timeline "
                       "WHERE artifact = 'aws:lambda' ORDER BY action")  # fmt: skip
    actions = [r["action"] for r in rows]
    assert actions == [
        "lambda:alias", "lambda:configuration", "lambda:event-source-mapping",
        "lambda:function-url", "lambda:layer", "lambda:layer-version", "lambda:version",
    ]  # fmt: skip
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function['name']}"
    assert {r["target"] for r in rows} == {arn}
    config = json.loads(next(r["raw"] for r in rows if r["action"] == "lambda:configuration"))
    variables = config["Configuration"]["Environment"]["Variables"]
    assert variables == {"API_TOKEN": mask(SECRET), "STAGE": mask("prod")}
    assert mask(SECRET).startswith("<masked sha256:") and SECRET not in mask(SECRET)
    assert config["PolicyGrant"] == "public" and config["FunctionUrl"]["AuthType"] == "NONE"
    assert "Location" not in config["Code"]
    message = next(r["message"] for r in rows if r["action"] == "lambda:configuration")
    assert "runtime python3.12" in message and "URL auth NONE" in message
    assert "policy grants public" in message
    version = json.loads(next(r["raw"] for r in rows if r["action"] == "lambda:version"))
    assert version["Version"] == "1"
    assert version["Environment"]["Variables"]["API_TOKEN"] == mask(SECRET)
    layer = json.loads(next(r["raw"] for r in rows if r["action"] == "lambda:layer"))
    assert layer["LayerAccount"] == layer["FunctionAccount"] == "123456789012"
    detect = cloudir("detect", "--case", str(case), "--json")
    assert detect.code == 1, detect.stderr  # findings
    findings = json.loads((case / "findings" / "findings.json").read_text())["findings"]
    ids = {f["rule_id"]: set(f["event_ids"]) for f in findings}
    url_rows = {r["event_id"] for r in query(case, "SELECT event_id FROM timeline WHERE "
                                             "action = 'lambda:function-url'")}  # fmt: skip
    [config_row] = query(
        case, "SELECT event_id FROM timeline WHERE action = 'lambda:configuration'"
    )
    assert ids[URL_NO_AUTH] == url_rows
    assert ids[POLICY_OUTSIDE] == {config_row["event_id"]}
    assert LAYER_OTHER_ACCOUNT not in ids  # the layer is the function's own account's
    assert SECRET not in detect.stdout + (case / "findings" / "findings.json").read_text()
    report = cloudir("report", "--case", str(case))  # html, md and json
    assert report.code in (0, 1), report.stderr
    written = [p for p in (case / "report").rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {".html", ".md", ".json"}
    for path in (case / "report").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_function_named_by_its_arn_is_captured_under_its_name(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    from cloudir.capture.lambda_functions import function_name

    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function['name']}"
    assert function_name(f"{arn}:live") == function["name"]
    proxy.packages[arn] = function["code"]
    run = _capture(tmp_path / "case", proxy, arn)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert item["evidence_id"] == f"lambda-123456789012-us-east-1-{function['name']}"
    assert item["function_arn"] == arn and item["code"] == "verified"


def test_a_refused_call_is_named_and_the_others_are_still_made(
    function: dict[str, Any], proxy: LambdaProxy, tmp_path: Path
) -> None:
    proxy.denied.add("/policy")
    case = tmp_path / "case"
    run = _capture(case, proxy, function["name"])
    assert run.code == 3
    [item] = run.json()["items"]
    denied = ("lambda:GetPolicy denied: missing permission lambda:GetPolicy "
              "(AccessDeniedException: User is not authorized)")  # fmt: skip
    assert item["failed"] == [
        denied,  # the function's own; then the first qualifier's ends the asking
        f"qualifier live: {denied}; not asked for the 1 other qualifiers",
    ]
    assert item["policy"] is False and item["url_auth_type"] == "NONE"
    folder = case / "evidence" / item["evidence_id"]
    assert not (folder / "policy.json").exists()
    assert (folder / "event-source-mappings" / "page-00001.json").is_file()
    assert item["log_group_evidence_id"]  # the logs are still captured


@pytest.mark.parametrize(
    ("url", "allow_http"),
    [("s3://", False), ("http://127.0.0.1:1/x", False), ("file:///etc/passwd", True)],
)
def test_a_code_location_that_is_not_https_is_not_read(url: str, allow_http: bool) -> None:
    from cloudir.capture.lambda_functions import download

    with pytest.raises(ValueError, match="not https"):
        list(download(url, allow_http=allow_http))


def test_an_alias_url_and_a_version_policy_of_their_own_are_captured_and_found(
    function: dict[str, Any], moto_url: str, proxy: LambdaProxy, tmp_path: Path
) -> None:
    """The function's own URL needs IAM and it has no policy; its alias `live` has a URL
    with auth NONE and its version 1 a policy for everyone: only the qualified calls show
    them, and the rules fire on those rows alone."""
    lam = boto_client(moto_url, "lambda")
    name = f"api-{uuid.uuid4().hex[:8]}"
    code = _zip("a.py", "def h(e, c):\n    return 2\n")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=function["role"],
                        Handler="a.h", Code={"ZipFile": code})  # fmt: skip
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="1")
    lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    proxy.packages[name] = code
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    made = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    for alias, auth in (("live", "NONE"), ("beta", "AWS_IAM")):
        proxy.alias_urls[name, alias] = {
            "FunctionUrl": f"https://{alias}{uuid.uuid4().hex[:6]}.lambda-url.us-east-1.on.aws/",
            "FunctionArn": f"{arn}:{alias}", "AuthType": auth, "CreationTime": made,
            "LastModifiedTime": made, "InvokeMode": "BUFFERED",
        }  # fmt: skip
    public = {"Version": "2012-10-17", "Id": "default", "Statement": [{
        "Sid": "anyone", "Effect": "Allow", "Principal": "*",
        "Action": "lambda:InvokeFunction", "Resource": f"{arn}:1"}]}  # fmt: skip
    proxy.qualified_policies = {(name, "1"): {"Policy": json.dumps(public), "RevisionId": "r"}}
    case = tmp_path / "case"
    run = _capture(case, proxy, name)
    assert run.code == 0, run.stderr
    [item] = run.json()["items"]
    assert (item["policy"], item["url_auth_type"]) == (False, "AWS_IAM")
    assert (item["qualifiers"], item["qualifier_policies"]) == (3, 1)
    assert item["qualifier_url_auth_types"] == {"live": "NONE", "beta": "AWS_IAM"}
    assert item["urls_auth_none"] == 1
    asked = sorted(q for q in proxy.qualified_requests if q[1] == name)
    assert asked == [("policy", name, "1"), ("policy", name, "beta"), ("policy", name, "live"),
                     ("url", name, "beta"), ("url", name, "live")]  # fmt: skip
    folder = case / "evidence" / item["evidence_id"]
    served = json.dumps(proxy.alias_urls[name, "live"]).encode()
    assert (folder / "qualifiers" / "live" / "url-config.json").read_bytes() == served
    assert (folder / "qualifiers" / "1" / "policy.json").is_file()
    assert not (folder / "qualifiers" / "live" / "policy.json").exists()
    entries = [e for e in custody(case) if e.get("evidence_id") == item["evidence_id"]]
    note = entries[-1]["note"]
    assert "no resource-based policy of their own on qualifiers beta, live" in note
    assert "1 of 3 qualifiers with a policy, 2 alias URLs, 1 URLs with auth NONE" in note

    assert cloudir("timeline", "--case", str(case)).code == 0
    rows = query(case, "SELECT event_id, action, target, message, raw FROM timeline "
                       f"WHERE artifact = 'aws:lambda' AND target = '{arn}'")  # fmt: skip
    urls = [r for r in rows if r["action"] == "lambda:function-url"]
    qualified = {json.loads(r["raw"]).get("Qualifier") for r in urls}
    assert qualified == {None, "live", "beta"}
    live_url = {r["event_id"] for r in urls if json.loads(r["raw"]).get("Qualifier") == "live"}
    assert all(f"Lambda {name}:live: function URL" in r["message"] for r in urls
               if r["event_id"] in live_url)  # fmt: skip
    [version] = [r for r in rows if r["action"] == "lambda:version"]
    assert json.loads(version["raw"])["PolicyGrant"] == "public"
    aliases = {json.loads(r["raw"])["Name"]: r for r in rows if r["action"] == "lambda:alias"}
    live = json.loads(aliases["live"]["raw"])
    assert live["FunctionUrl"]["AuthType"] == "NONE" and live["PolicyGrant"] is None
    assert "URL auth NONE" in aliases["live"]["message"]
    detect = cloudir("detect", "--case", str(case), "--json")
    assert detect.code == 1, detect.stderr
    findings = json.loads((case / "findings" / "findings.json").read_text())["findings"]
    fired = {f["rule_id"]: set(f["event_ids"]) for f in findings}
    assert fired[URL_NO_AUTH] == live_url
    assert fired[POLICY_OUTSIDE] == {version["event_id"]}
