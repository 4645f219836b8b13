"""Lambda functions on the timeline: what `cloudir capture lambda` found, at the times
the service states.

An item of kind `lambda-function` holds the function's API answers as received
(cloudir/capture/lambda_functions.py). Its rows, artifact `aws:lambda`, each with `raw`
one JSON record whose `recordType` says what it is:

- `FunctionConfiguration` (get-function.json) at the configuration's LastModified: the
  configuration, tags and concurrency, the function URL config and the resource policy
  (policy.json, with `PolicyGrant`: public / cross-account:<ids> / internal, decided by
  policyuniverse as for CloudTrail's `resourceGrant`);
- `FunctionLayer`, one per layer the configuration names, at the same time, with the
  function's and the layer's account (`FunctionAccount`, `LayerAccount`);
- `FunctionVersion` per published version at its LastModified, with that version's own
  resource policy (`qualifiers/<version>/policy.json`) and its `PolicyGrant`;
- `FunctionAlias` per alias, at the LastModified of the version it points to (an alias
  states no time of its own: the row says "not before"), with the alias's own policy and
  `PolicyGrant` and its own function URL config (`qualifiers/<alias>/`);
- `FunctionUrlConfig` at its CreationTime, and again at LastModifiedTime when later; an
  alias's URL (`qualifiers/<alias>/url-config.json`) is a row of its own the same way,
  with `Qualifier` the alias (its folder's name, or the answer's qualified FunctionArn
  when the folder's name is a digest of an unusual one),
  so the rule for a URL without auth fires on an alias's URL as on the function's;
- `EventSourceMapping` per mapping at its LastModified;
- `LayerVersion` per layer version read (layers/*.json) at its CreatedDate.

**Environment variables are secrets.** Their names are kept; every value is replaced by
`<masked sha256:<first 8 hex>…>` in every row, so the timeline, `query` and the report
never show one (two rows with the same value still show the same mask). The evidence
file keeps them as received. The code's presigned `Location` is dropped from rows (a
URL with a signature, useless once expired). The code packages themselves are never
opened: their skip says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from cloudir.analyze.parsers import (
    BY_NAME_AND_STRUCTURE,
    NOT_MINE,
    ErrorLog,
    Logsource,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    json_list,
    json_loads,
    json_object,
    parse_timestamp,
    register,
)
from cloudir.safe_text import inert, path_segment

KIND: Final = "lambda-function"
SOURCE: Final = "lambda"
ARTIFACT: Final = "aws:lambda"
MAX_BYTES: Final = 64 << 20  # a list page or GetFunction answer is far smaller
MAX_MESSAGE: Final = 1000
GET_FUNCTION: Final = "get-function.json"
LIST_FOLDERS: Final = {"versions", "aliases", "event-source-mappings"}
QUALIFIERS: Final = "qualifiers"  # qualifiers/<alias or version>/{policy,url-config}.json
URL_CONFIG: Final = "url-config.json"
POLICY: Final = "policy.json"


def mask(value: Any) -> str:
    """An environment variable's value as it may be shown: a short hash, never the value."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"<masked sha256:{digest}…>"


def masked(value: Any) -> Any:
    """A copy with every `Environment.Variables` value masked, at any depth."""
    if isinstance(value, list):
        return [masked(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "Environment" and isinstance(item, dict):
            item = dict(item)
            variables = item.get("Variables")
            if isinstance(variables, dict):
                item["Variables"] = {name: mask(v) for name, v in variables.items()}
            elif variables is not None:
                item["Variables"] = mask(variables)
        out[key] = masked(item)
    return out


def accepts(path: Path) -> bool:
    if path.suffix.lower() != ".json" or path.name == "meta.json":
        return False
    parent = path.parent.name
    return path.name in (GET_FUNCTION, URL_CONFIG, POLICY) or (parent in LIST_FOLDERS | {"layers"})


def _qualifier_of(path: Path) -> str | None:
    """The qualifier folder's name for `qualifiers/<q>/{policy,url-config}.json`, else None."""
    if path.name in (URL_CONFIG, POLICY) and path.parent.parent.name == QUALIFIERS:
        return path.parent.name
    return None


def skip_reason(path: Path) -> str | None:
    if path.suffix.lower() == ".zip":
        return "a Lambda code package: kept as evidence, never unpacked or run"
    return None


def recognise(paths: Sequence[Path]) -> int:
    """A saved capture folder: a get-function.json that is a GetFunction answer."""
    for path in paths:
        if path.name == GET_FUNCTION:
            document = _load(path)
            config = document.get("Configuration") if isinstance(document, dict) else None
            if isinstance(config, dict) and isinstance(config.get("FunctionArn"), str):
                return BY_NAME_AND_STRUCTURE
    return NOT_MINE


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions
) -> Iterator[pa.RecordBatch]:
    if path.name == POLICY:
        return  # read into the row of its function, alias or version
    document = _read(path, errors)
    if document is None:
        return
    qualifier = _qualifier_of(path)
    if qualifier is not None:
        folder = path.parent.parent.parent
    elif path.parent.name in LIST_FOLDERS | {"layers"}:
        folder = path.parent.parent
    else:
        folder = path.parent
    function = _load(folder / GET_FUNCTION)
    config = function.get("Configuration") if isinstance(function, dict) else None
    config = config if isinstance(config, dict) else {}
    rows: Iterator[Row]
    if path.name == GET_FUNCTION:
        rows = _function_rows(document, folder, evidence_id, errors)
    elif path.name == URL_CONFIG:
        rows = _url_rows(document, config, evidence_id, errors, qualifier)
    elif path.parent.name == "versions":
        rows = _list_rows(document, "Versions", "FunctionVersion", config, evidence_id, errors,
                          folder)  # fmt: skip
    elif path.parent.name == "aliases":
        rows = _alias_rows(document, folder, config, evidence_id, errors)
    elif path.parent.name == "event-source-mappings":
        rows = _list_rows(document, "EventSourceMappings", "EventSourceMapping", config,
                          evidence_id, errors)  # fmt: skip
    else:
        rows = _layer_version_rows(document, config, evidence_id, errors)
    yield from batches(rows, errors)


# -- the rows ----------------------------------------------------------------------------
def _function_rows(
    document: dict[str, Any], folder: Path, evidence_id: str, errors: ErrorLog
) -> Iterator[Row]:
    config = document.get("Configuration")
    if not isinstance(config, dict) or not isinstance(config.get("FunctionArn"), str):
        errors.add(f"{GET_FUNCTION}: no Configuration.FunctionArn: not a GetFunction answer")
        return
    arn = _unqualified(config["FunctionArn"])
    account = _account(arn)
    record: dict[str, Any] = {
        "recordType": "FunctionConfiguration",
        "FunctionArn": arn,
        "FunctionName": config.get("FunctionName"),
        "AccountId": account,
        "Configuration": config,
        "Code": {k: v for k, v in json_object(document.get("Code")).items() if k != "Location"},
    }
    for key in ("Tags", "Concurrency"):
        if key in document:
            record[key] = document[key]
    url = _load(folder / URL_CONFIG)
    record["FunctionUrl"] = url if isinstance(url, dict) else None
    text = _policy(record, folder, account)
    when = _time(config.get("LastModified"))
    if when is None:
        errors.add(f"{GET_FUNCTION}: Configuration.LastModified is not a time; not placed")
        return
    if not isinstance(config.get("Layers") or [], list):
        errors.add(f"{GET_FUNCTION}: Configuration.Layers is not a list; no layer rows")
    layers = [x.get("Arn") for x in json_list(config.get("Layers")) if isinstance(x, dict)]
    parts = [
        f"runtime {config.get('Runtime') or config.get('PackageType')}",
        f"handler {config.get('Handler')}",
        f"role {config.get('Role')}",
        f"code sha256 {config.get('CodeSha256')}",
        f"layers {', '.join(str(x) for x in layers) or 'none'}",
        f"URL auth {url.get('AuthType') if isinstance(url, dict) else 'no URL'}",
        f"policy grants {record['PolicyGrant'] or ('nothing' if text is None else 'unread')}",
    ]
    yield _row(when, "Lambda Configuration Modified", "lambda:configuration", arn, record,
               f"Lambda {config.get('FunctionName')}: " + "; ".join(parts),
               evidence_id, "config")  # fmt: skip
    for number, layer in enumerate(json_list(config.get("Layers")), 1):
        if not isinstance(layer, dict) or not isinstance(layer.get("Arn"), str):
            errors.add("a Configuration.Layers entry without an Arn", record=number)
            continue
        layer_account = _account(layer["Arn"])
        record = {"recordType": "FunctionLayer", "FunctionArn": arn, "FunctionAccount": account,
                  "Layer": layer, "LayerAccount": layer_account}  # fmt: skip
        whose = "its own account" if layer_account == account else f"account {layer_account}"
        yield _row(when, "Lambda Configuration Modified", "lambda:layer", arn, record,
                   f"Lambda {config.get('FunctionName')} uses layer {layer['Arn']} of {whose}",
                   evidence_id, f"layer\x00{layer['Arn']}")  # fmt: skip


def _policy(record: dict[str, Any], folder: Path, account: str | None) -> str | None:
    """`Policy` and its `PolicyGrant` into `record` from the `policy.json` in `folder`
    (None when there is none); the policy's text, or None."""
    policy = _load(folder / POLICY)
    text = policy.get("Policy") if isinstance(policy, dict) else None
    record["Policy"] = _json_or_text(text) if isinstance(text, str) else None
    # imported here: policyuniverse's import (0.1 s) is paid by timelines that have a
    # Lambda policy, not by every timeline that discovers this parser
    from cloudir.analyze.policy_grants import classify_policy

    record["PolicyGrant"] = classify_policy(text, account) if isinstance(text, str) else None
    return text if isinstance(text, str) else None


def _grant_text(record: dict[str, Any]) -> str:
    """What a row's message says of its own policy, when it has one."""
    return f"; policy grants {record['PolicyGrant'] or 'unread'}" if record["Policy"] else ""


def _list_rows(
    document: dict[str, Any], key: str, kind: str, config: dict[str, Any], evidence_id: str,
    errors: ErrorLog, folder: Path | None = None,
) -> Iterator[Row]:  # fmt: skip
    entries = document.get(key)
    if not isinstance(entries, list):
        errors.add(f"no `{key}` list: not a {kind} page")
        return
    arn = _unqualified(str(config.get("FunctionArn") or ""))
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            errors.add(f"a {kind} that is not a JSON object", record=number)
            continue
        if kind == "FunctionVersion" and entry.get("Version") == "$LATEST":
            continue  # the FunctionConfiguration row is $LATEST
        when = _time(entry.get("LastModified"))
        if when is None:
            errors.add(f"a {kind} whose LastModified is not a time; not placed", record=number)
            continue
        target = arn or _unqualified(str(entry.get("FunctionArn") or "")) or None
        record = {"recordType": kind, "FunctionArn": target, **entry}
        if kind == "FunctionVersion":
            desc, action = "Lambda Version Published", "lambda:version"
            text = f"version {entry.get('Version')} code sha256 {entry.get('CodeSha256')}"
            if folder is not None and isinstance(entry.get("Version"), str):
                qualified = folder / QUALIFIERS / path_segment(entry["Version"])
                _policy(record, qualified, _account(target or ""))
                text += _grant_text(record)
            key_id = f"version\x00{entry.get('Version')}"
        else:
            desc, action = "Lambda Event Source Mapping Modified", "lambda:event-source-mapping"
            text = (f"event source {entry.get('EventSourceArn')} state {entry.get('State')}"
                    f" (mapping {entry.get('UUID')})")  # fmt: skip
            key_id = f"esm\x00{entry.get('UUID')}\x00{entry.get('LastModified')}"
        yield _row(when, desc, action, target, record, f"Lambda {_name(target)}: {text}",
                   evidence_id, key_id)  # fmt: skip


def _alias_rows(
    document: dict[str, Any], folder: Path, config: dict[str, Any], evidence_id: str,
    errors: ErrorLog,
) -> Iterator[Row]:  # fmt: skip
    aliases = document.get("Aliases")
    if not isinstance(aliases, list):
        errors.add("no `Aliases` list: not a ListAliases page")
        return
    published: dict[str, Any] = {"$LATEST": config.get("LastModified")}
    for page in sorted((folder / "versions").glob("page-*.json")):
        listed = _load(page)
        for version in json_list(json_object(listed).get("Versions")):
            if isinstance(version, dict) and version.get("Version") != "$LATEST":
                published[str(version.get("Version"))] = version.get("LastModified")
    arn = _unqualified(str(config.get("FunctionArn") or "")) or None
    for number, alias in enumerate(aliases, 1):
        if not isinstance(alias, dict):
            errors.add("an alias that is not a JSON object", record=number)
            continue
        when = _time(published.get(str(alias.get("FunctionVersion"))))
        if when is None:
            errors.add(f"alias {inert(alias.get('Name'), 80)}: its version "
                       f"{inert(alias.get('FunctionVersion'), 20)} has no known time; not placed",
                       record=number)  # fmt: skip
            continue
        record = {"recordType": "FunctionAlias", "FunctionArn": arn, **alias}
        text = f"alias {alias.get('Name')} -> version {alias.get('FunctionVersion')}"
        if alias.get("RoutingConfig"):
            text += f" (routing {json.dumps(alias['RoutingConfig'], sort_keys=True)})"
        if isinstance(alias.get("Name"), str):
            qualified = folder / QUALIFIERS / path_segment(alias["Name"])
            url = _load(qualified / URL_CONFIG)
            record["FunctionUrl"] = url if isinstance(url, dict) else None
            _policy(record, qualified, _account(arn or ""))
            text += _grant_text(record)
            if isinstance(url, dict):
                text += f"; URL auth {url.get('AuthType')}"
        yield _row(when, "Lambda Alias Version Published (alias set at or after)",
                   "lambda:alias", arn, record, f"Lambda {_name(arn)}: {text}", evidence_id,
                   f"alias\x00{alias.get('Name')}\x00{alias.get('RevisionId')}")  # fmt: skip


def _url_rows(
    document: dict[str, Any], config: dict[str, Any], evidence_id: str, errors: ErrorLog,
    folder_qualifier: str | None = None,
) -> Iterator[Row]:  # fmt: skip
    """The function URL's rows; an alias's (`folder_qualifier` its folder's name) carry
    `Qualifier`: the alias the capture asked for, which is the folder's name, unless that
    name is a digest (`safe_text.path_segment` of an unusual name), when the answer's
    qualified FunctionArn (`...:function:<name>:<alias>`) says it."""
    given = str(document.get("FunctionArn") or config.get("FunctionArn") or "")
    arn = _unqualified(given)
    record = {"recordType": "FunctionUrlConfig", **document, "FunctionArn": arn or None}
    name, key = _name(arn), "url"
    if folder_qualifier is not None:
        parts = given.split(":")
        qualifier = folder_qualifier
        if qualifier.startswith("_.") and len(parts) > 7 and parts[5] == "function":
            qualifier = parts[7]
        record["Qualifier"] = qualifier
        name, key = f"{name}:{qualifier}", f"url\x00{qualifier}"
    created, modified = _time(document.get("CreationTime")), _time(document.get("LastModifiedTime"))
    if created is None and modified is None:
        errors.add(f"{URL_CONFIG}: neither CreationTime nor LastModifiedTime is a time")
        return
    text = f"function URL {document.get('FunctionUrl')} auth type {document.get('AuthType')}"
    if created is not None:
        yield _row(created, "Lambda Function URL Created", "lambda:function-url", arn or None,
                   record, f"Lambda {name}: {text}", evidence_id, f"{key}-created")  # fmt: skip
    if modified is not None and modified != created:
        yield _row(modified, "Lambda Function URL Modified", "lambda:function-url", arn or None,
                   record, f"Lambda {name}: {text}", evidence_id, f"{key}-modified")  # fmt: skip


def _layer_version_rows(
    document: dict[str, Any], config: dict[str, Any], evidence_id: str, errors: ErrorLog
) -> Iterator[Row]:
    layer_arn = document.get("LayerVersionArn")
    when = _time(document.get("CreatedDate"))
    if not isinstance(layer_arn, str) or when is None:
        errors.add("a layer answer without LayerVersionArn or a CreatedDate time; not placed")
        return
    arn = _unqualified(str(config.get("FunctionArn") or "")) or None
    content = {k: v for k, v in json_object(document.get("Content")).items() if k != "Location"}
    record = {"recordType": "LayerVersion", "FunctionArn": arn, **document, "Content": content,
              "LayerAccount": _account(layer_arn)}  # fmt: skip
    yield _row(when, "Lambda Layer Version Created", "lambda:layer-version", arn, record,
               f"Lambda layer {layer_arn} created (code sha256 {content.get('CodeSha256')})",
               evidence_id, f"layer-version\x00{layer_arn}")  # fmt: skip


def _row(
    when: str, desc: str, action: str, target: str | None, record: dict[str, Any],
    message: str, evidence_id: str, key: str,
) -> Row:  # fmt: skip
    raw = json.dumps(masked(record), sort_keys=True, ensure_ascii=False, default=str)
    identity = f"lambda\x00{target}\x00{key}\x00{when}"
    return Row(
        timestamp=when,
        timestamp_desc=desc,
        source=SOURCE,
        artifact=ARTIFACT,
        host=None,
        user=None,  # the API answers do not say who made a change: CloudTrail does
        src_ip=None,
        action=action,
        target=target,
        outcome=None,
        message=inert(message, MAX_MESSAGE),
        evidence_id=evidence_id,
        event_id=hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32],
        raw=raw,
    )


# -- small readers -----------------------------------------------------------------------
def _time(value: Any) -> str | None:
    """Lambda's times: ISO 8601 text (`2024-07-31T10:00:00.000+0000`) or epoch seconds."""
    if isinstance(value, str) and len(value) > 5 and value[-5] in "+-" and value[-4:].isdigit():
        value = f"{value[:-2]}:{value[-2:]}"  # +0000 -> +00:00 for fromisoformat
    moment = parse_timestamp(value)
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def _unqualified(arn: str) -> str:
    """arn:aws:lambda:r:a:function:name[:qualifier] without the qualifier."""
    parts = arn.split(":")
    return ":".join(parts[:7]) if len(parts) > 7 and parts[5] == "function" else arn


def _account(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def _name(arn: str | None) -> str:
    return (arn or "").rsplit(":", 1)[-1] or "?"


def _json_or_text(text: str) -> Any:
    try:
        return json_loads(text)
    except ValueError:
        return text


def _read(path: Path, errors: ErrorLog) -> dict[str, Any] | None:
    try:
        with _open(path) as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        errors.add(f"{path.name}: not readable ({exc.strerror or exc})")
        return None
    if len(data) > MAX_BYTES:
        errors.add(f"{path.name}: over {MAX_BYTES} bytes, not a Lambda API answer; not read")
        return None
    try:
        document = json_loads(data)
    except ValueError as exc:
        errors.add(f"{path.name}: not valid JSON ({exc})")
        return None
    if not isinstance(document, dict):
        errors.add(f"{path.name}: not a JSON object: not a Lambda API answer")
        return None
    return document


def _load(path: Path) -> Any:
    """A sibling answer, or None when it is missing or unreadable (its own parse says)."""
    try:
        with _open(path) as fh:
            return json_loads(fh.read(MAX_BYTES))
    except (OSError, ValueError):
        return None


def _open(path: Path) -> Any:
    """Never through a link and never waiting on a FIFO."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    return os.fdopen(fd, "rb")


register(
    Parser(
        name="lambda-config",
        evidence_kinds=(KIND,),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=(
            RowSource(
                ARTIFACT,
                "one Lambda function fact (configuration, layer, version, alias, URL, "
                "event source mapping), at the time the service states",
                (Logsource("aws", "lambda"),),
            ),
        ),
        capture_kind=KIND,
        recognise=recognise,
        priority=60,
    )
)
