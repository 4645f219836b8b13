"""Capture Lambda functions: their configuration, code, layers, policy and logs as received.

A backdoored function (new code, a layer from a foreign account, a permission that lets
anyone invoke it, a function URL without auth) keeps working long after the API call that
made it ages out of CloudTrail's 90 days, and the next deployment wipes it. What the
function *is* at capture time is therefore evidence of its own, one item per function:

- `get-function.json`: GetFunction's body as received (configuration with its
  environment variables, exactly as AWS returned them; the code's presigned location);
- `code.zip`: the deployment package downloaded from that location and checked against
  `CodeSha256` (base64 SHA-256, as Lambda states it). A mismatch is a named problem and
  the item ends incomplete: the bytes are kept, they are what was served. Nothing in the
  package is extracted or run;
- `versions/`, `aliases/`, `event-source-mappings/`: the list pages as received;
- `policy.json` (GetPolicy) and `url-config.json` (GetFunctionUrlConfig), or a note that
  the function has none;
- `qualifiers/<qualifier>/policy.json` for every alias and published version and
  `qualifiers/<alias>/url-config.json` for every alias (function URLs exist only on
  $LATEST and aliases): the same calls with `Qualifier=`. An alias or a version has a
  resource policy of its own, and an alias a function URL of its own, which the
  unqualified answers never show: an intruder's `AddPermission --qualifier live` or an
  auth-NONE URL on an alias hides there. Qualifiers without one are named in one note
  each; the folder name is `safe_text.path_segment` of the qualifier (AWS's names are
  kept as they are), which the parser uses to find it again;
- `layers/<name>-<version>.json` (GetLayerVersion, asked with the layer's ARN, so a layer
  of another account is read as the function sees it) and `.zip` for each layer version
  the function uses, the zip checked against the layer's own CodeSha256.

The function's log group (`/aws/lambda/<name>`, or the one its LoggingConfig names) for
the window is captured by `capture_log_group` as an item of its own; a function that never
logged has none, and that is said in one line.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from cloudir.aws import Aws, call, error_code, keep_body
from cloudir.capture.cloudtrail import reencode
from cloudir.capture.log_group import LogGroupResult, capture_log_group, find_log_group
from cloudir.case import Case
from cloudir.errors import CloudError, UsageError
from cloudir.evidence_item import EvidenceItem, ItemTally
from cloudir.progress import Reporter
from cloudir.safe_text import inert, path_segment
from cloudir.timewindow import Window

KIND: Final = "lambda-function"
DOWNLOAD_TIMEOUT: Final = 60.0  # seconds without a byte before a code download fails
CHUNK: Final = 1 << 20
_NOT_FOUND: Final = "ResourceNotFoundException"
_DENIED: Final = "AccessDeniedException"
QUALIFIERS: Final = "qualifiers"
MAX_NAMED: Final = 20  # qualifiers a note names before "and N more"

T = TypeVar("T")
Fetch = Callable[[str], Iterable[bytes]]
"""Reads a presigned URL as chunks (a test passes its own)."""


@dataclass
class FunctionResult(ItemTally):
    """One function's capture: the `--json` item."""

    item: EvidenceItem
    function: str
    region: str
    arn: str | None = None
    code: str = "not captured"  # verified | mismatch | not captured | image
    layers: int = 0
    versions: int = 0
    aliases: int = 0
    policy: bool = False
    url_auth_type: str | None = None
    qualifiers: int = 0  # aliases and published versions asked with Qualifier=
    qualifier_policies: int = 0  # of them with a resource policy of their own
    qualifier_url_auth_types: dict[str, str | None] = field(default_factory=dict)  # alias: auth
    log_group: LogGroupResult | None = None
    log_note: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def urls_auth_none(self) -> int:
        """Function URLs anyone may invoke: the unqualified one and the aliases'."""
        types = [self.url_auth_type, *self.qualifier_url_auth_types.values()]
        return sum(1 for auth in types if auth == "NONE")

    def as_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "function": self.function,
            "function_arn": self.arn,
            "region": self.region,
            "code": self.code,
            "layers": self.layers,
            "versions": self.versions,
            "aliases": self.aliases,
            "policy": self.policy,
            "url_auth_type": self.url_auth_type,
            "qualifiers": self.qualifiers,
            "qualifier_policies": self.qualifier_policies,
            "qualifier_url_auth_types": self.qualifier_url_auth_types,
            "urls_auth_none": self.urls_auth_none,
            "log_group_evidence_id": self.log_group.evidence_id if self.log_group else None,
            "log_note": self.log_note,
            "captured": self.captured,
            "bytes": self.bytes,
            "failed": self.failed,
            "complete": self.item.complete,
        }


def list_functions(aws: Aws, region: str | None = None) -> list[str]:
    """Every function name of the region (ListFunctions, every page)."""
    client = aws.client("lambda", region or aws.region)
    paginator = client.get_paginator("list_functions")
    pages = call("lambda:ListFunctions", lambda: list(paginator.paginate()))
    return [f["FunctionName"] for page in pages for f in page.get("Functions", [])]


def check_functions(aws: Aws, names: list[str], region: str | None = None) -> None:
    """Each named function exists: a one-line error for the first that does not, asked
    before the case is made, so a mistyped name leaves no empty case."""
    client = aws.client("lambda", region or aws.region)
    for name in names:
        try:
            call("lambda:GetFunction", client.get_function, FunctionName=name)
        except CloudError as exc:
            if error_code(exc) == _NOT_FOUND:
                raise UsageError(
                    f"no Lambda function named {name} in this account and region"
                ) from exc
            raise


def capture_function(
    case: Case,
    aws: Aws,
    name: str,
    window: Window,
    identity: dict[str, str],
    report: Reporter,
    region: str | None = None,
    fetch: Fetch | None = None,
) -> FunctionResult:
    """One function into one evidence item (and its log group into another)."""
    region = region or aws.region
    client = aws.client("lambda", region)
    raw: list[bytes] = []
    client.meta.events.register("before-parse.lambda", functools.partial(keep_body, raw))
    fetch = fetch or functools.partial(download, allow_http=bool(aws.endpoint_url))
    account = identity.get("Account", "unknown")
    short = function_name(name)
    source = {"type": "lambda", "account": account, "region": region, "function": name}
    evidence_id = case.unique_evidence_id(f"lambda-{account}-{region}-{short}")
    meta = {"kind": KIND, "source": source, "window": window.as_dict(),
            "caller_identity": identity}  # fmt: skip
    result = FunctionResult(case.item(evidence_id, meta), name, region)
    result.item.summary = functools.partial(_summary, result)
    config: dict[str, Any] = {}
    with result.item as item:
        got = _store_call(item, raw, "get-function.json", "lambda:GetFunction",
                          client.get_function, FunctionName=name)  # fmt: skip
        config = got.get("Configuration", {})
        result.arn = config.get("FunctionArn")
        # the calls after GetFunction name the function of the caller's own account by its
        # name, another account's by its unqualified ARN (every alias, version and mapping,
        # whichever qualifier an ARN given named; the qualifier calls add their own)
        own = not name.startswith("arn:") or name.split(":")[4:5] == [account]
        target = str(config.get("FunctionName") or name) if own else ":".join(name.split(":")[:7])
        _code(item, result, got, fetch)
        # each answer on its own: a refused or failed call is a problem of the item (named,
        # incomplete), and the calls after it are still made
        pages, optional = (
            functools.partial(_pages, item, raw),
            functools.partial(_optional, item, raw),
        )
        it = {"FunctionName": target}
        versions = _attempt(item, pages, "versions", "lambda:ListVersionsByFunction",
                            client.list_versions_by_function, "Versions", **it) or []  # fmt: skip
        aliases = _attempt(item, pages, "aliases", "lambda:ListAliases",
                           client.list_aliases, "Aliases", **it) or []  # fmt: skip
        result.versions, result.aliases = len(versions), len(aliases)
        policy = _attempt(item, optional, "policy.json", "lambda:GetPolicy", client.get_policy,
                          "no resource-based policy", **it)  # fmt: skip
        url = _attempt(item, optional, "url-config.json", "lambda:GetFunctionUrlConfig",
                       client.get_function_url_config, "no function URL", **it)  # fmt: skip
        result.policy, result.url_auth_type = policy is not None, (url or {}).get("AuthType")
        _qualifiers(item, optional, client, result, target, aliases, versions)
        _attempt(item, pages, "event-source-mappings", "lambda:ListEventSourceMappings",
                 client.list_event_source_mappings, "EventSourceMappings", **it)  # fmt: skip
        for layer in config.get("Layers", []):
            _layer(item, raw, client, result, layer.get("Arn", ""), fetch)
        result.notes = list(item.notes)
    group = (config.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{short}"
    try:
        find_log_group(aws, group, region)
    except UsageError:
        result.log_note = f"{short}: no log group {group} (the function has not logged there)"
        report(result.log_note)
        return result
    result.log_group = capture_log_group(case, aws, group, window, identity, report,
                                         region=region)  # fmt: skip
    return result


def _attempt(item: EvidenceItem, step: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """One step whose AWS failure is the item's problem, not the end of the capture."""
    try:
        return step(*args, **kwargs)
    except CloudError as exc:
        item.problem(str(exc))
        return None


def function_name(name: str) -> str:
    """The function's name from a name or an ARN (arn:aws:lambda:r:a:function:NAME[:q])."""
    parts = name.split(":")
    return parts[6] if name.startswith("arn:") and len(parts) > 6 else name


def _store_call(
    item: EvidenceItem, raw: list[bytes], name: str, action: str, fn: Callable[..., Any],
    **kwargs: Any,
) -> dict[str, Any]:  # fmt: skip
    """One call, its body stored as received under `name`."""
    raw.clear()
    resp: dict[str, Any] = call(action, fn, **kwargs)
    item.store(name, raw[-1] if raw else reencode(resp), source={
        "type": "lambda_api", "action": action, "as_received": bool(raw),
        "request_id": resp.get("ResponseMetadata", {}).get("RequestId"),
    })  # fmt: skip
    return resp


def _optional(
    item: EvidenceItem, raw: list[bytes], name: str, action: str, fn: Callable[..., Any],
    none: str | None, **kwargs: Any,
) -> dict[str, Any] | None:  # fmt: skip
    """A call whose ResourceNotFound means "the function has none": noted (unless `none`
    is None: the caller says it for many at once), not failed."""
    try:
        return _store_call(item, raw, name, action, fn, **kwargs)
    except CloudError as exc:
        if error_code(exc) != _NOT_FOUND:
            raise
    if none is not None:
        item.note(none)
    return None


def _qualifiers(
    item: EvidenceItem, optional: Callable[..., dict[str, Any] | None], client: Any,
    result: FunctionResult, target: str, aliases: list[Any], versions: list[Any],
) -> None:  # fmt: skip
    """GetPolicy for every alias and published version, GetFunctionUrlConfig for every
    alias, each with `Qualifier=`, stored under `qualifiers/<qualifier>/`.

    A refusal (AccessDenied) names the qualifier and ends the asking for that call: the
    same caller would be refused for every other qualifier, and one line says so rather
    than one per version. Any other failure is the qualifier's own problem."""
    alias_names: list[str] = []
    version_numbers: list[str] = []
    unnamed = 0
    for entries, key, into in ((aliases, "Name", alias_names),
                               (versions, "Version", version_numbers)):  # fmt: skip
        for entry in entries:
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and value:
                if value != "$LATEST":  # the unqualified answers are $LATEST's
                    into.append(value)
            else:
                unnamed += 1
    if unnamed:
        item.problem(f"{unnamed} alias or version entries without a name; not asked")
    result.qualifiers = len(alias_names) + len(version_numbers)
    # a function URL belongs to $LATEST or an alias, never to a version
    calls = [("policy.json", "lambda:GetPolicy", client.get_policy,
              alias_names + version_numbers),
             ("url-config.json", "lambda:GetFunctionUrlConfig", client.get_function_url_config,
              alias_names)]  # fmt: skip
    without: dict[str, list[str]] = {"policy.json": [], "url-config.json": []}
    for file, action, fn, qualifiers in calls:
        for number, qualifier in enumerate(qualifiers, 1):
            name = f"{QUALIFIERS}/{path_segment(qualifier)}/{file}"
            try:
                got = optional(name, action, fn, None, FunctionName=target, Qualifier=qualifier)
            except CloudError as exc:
                problem = f"qualifier {inert(qualifier, 130)}: {exc}"
                if error_code(exc) == _DENIED and number < len(qualifiers):
                    left = len(qualifiers) - number
                    item.problem(f"{problem}; not asked for the {left} other qualifiers")
                    break  # the same caller is refused for every other qualifier
                item.problem(problem)
                continue
            if got is None:
                without[file].append(qualifier)
            elif file == "policy.json":
                result.qualifier_policies += 1
            else:
                result.qualifier_url_auth_types[qualifier] = got.get("AuthType")
    for file, what in (("policy.json", "no resource-based policy of their own on qualifiers"),
                       ("url-config.json", "no function URL on aliases")):  # fmt: skip
        if without[file]:
            item.note(f"{what} {_named(without[file])}")


def _named(qualifiers: list[str]) -> str:
    shown = ", ".join(inert(q, 130) for q in qualifiers[:MAX_NAMED])
    more = len(qualifiers) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def _pages(
    item: EvidenceItem, raw: list[bytes], folder: str, action: str, fn: Callable[..., Any],
    key: str, **kwargs: Any,
) -> list[Any]:  # fmt: skip
    """Every page of a Marker/NextMarker list, as received; the entries they held."""
    marker, page, entries = None, 0, []
    while True:
        page += 1
        resp = _store_call(item, raw, f"{folder}/page-{page:05d}.json", action, fn,
                           **kwargs, **({"Marker": marker} if marker else {}))  # fmt: skip
        found = resp.get(key)
        entries += found if isinstance(found, list) else []
        marker = resp.get("NextMarker")
        if not marker:
            return entries


def _code(item: EvidenceItem, result: FunctionResult, got: dict[str, Any], fetch: Fetch) -> None:
    code = got.get("Code", {})
    expected = got.get("Configuration", {}).get("CodeSha256")
    if code.get("RepositoryType") == "ECR" or "ImageUri" in code:
        result.code = "image"
        item.note(f"a container image function: its code is the image {code.get('ImageUri')} "
                  f"({code.get('ResolvedImageUri')}), not downloaded here")  # fmt: skip
        return
    result.code = _package(item, "code.zip", code.get("Location"), expected, fetch, "code")


def _layer(
    item: EvidenceItem, raw: list[bytes], client: Any, result: FunctionResult, arn: str,
    fetch: Fetch,
) -> None:  # fmt: skip
    stem = _layer_stem(arn)
    layer, _, version = arn.rpartition(":")
    try:
        if not version.isdigit():
            raise CloudError(f"not a layer version ARN: {arn!r}")
        # GetLayerVersion with the layer's ARN: what GetLayerVersionByArn answers, under
        # the same permission, for a layer of any account
        got = _store_call(item, raw, f"layers/{stem}.json", "lambda:GetLayerVersion",
                          client.get_layer_version, LayerName=layer,
                          VersionNumber=int(version))  # fmt: skip
    except CloudError as exc:
        item.problem(f"layer {arn}: {exc}")
        return
    result.layers += 1
    content = got.get("Content", {})
    _package(item, f"layers/{stem}.zip", content.get("Location"), content.get("CodeSha256"),
             fetch, f"layer {arn}")  # fmt: skip


def _package(
    item: EvidenceItem, name: str, location: Any, expected: Any, fetch: Fetch, what: str
) -> str:
    """Download a package from its presigned URL into `name` and check it against the
    CodeSha256 Lambda gave: verified, mismatch (a problem), or not captured (a problem)."""
    if not isinstance(location, str) or not location:
        item.problem(f"{what}: no code location in the answer; the package is not captured")
        return "not captured"
    try:
        record = item.store(name, fetch(location), source={"type": "lambda_code",
                            "of": what, "code_sha256": expected})  # fmt: skip
    except (OSError, CloudError, ValueError) as exc:
        item.problem(f"{what}: the package could not be downloaded ({exc})")
        return "not captured"
    got = base64.b64encode(bytes.fromhex(record.sha256)).decode()
    if got != expected:
        item.problem(f"{what}: {name} has SHA-256 {got} (base64), not the CodeSha256 "
                     f"{expected} Lambda stated")  # fmt: skip
        return "mismatch"
    return "verified"


def download(url: str, allow_http: bool = False) -> Iterator[bytes]:
    """A presigned S3 URL, read in chunks. Only https (http only against an emulator
    given with --endpoint-url); no credentials are sent: the URL carries its signature."""
    import urllib.request

    scheme = urlsplit(url).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise ValueError(f"a code location that is not https ({scheme}:) is not read")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as answer:
        while chunk := answer.read(CHUNK):
            yield chunk


def _layer_stem(arn: str) -> str:
    """`<layer name>-<version>` from a layer version ARN, safe as a file name."""
    parts = arn.split(":")
    stem = "-".join(parts[-2:]) if len(parts) >= 8 else arn
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:120] or "layer"


def _summary(result: FunctionResult, item: EvidenceItem) -> str:
    text = f"Lambda {result.function} ({result.region}): code {result.code}, "
    text += f"{result.layers} layers, {result.versions} versions, {result.aliases} aliases"
    text += f", {result.qualifier_policies} of {result.qualifiers} qualifiers with a policy"
    text += f", {len(result.qualifier_url_auth_types)} alias URLs"
    text += f", {result.urls_auth_none} URLs with auth NONE"
    return "; ".join([text, *item.notes, *item.problems])
