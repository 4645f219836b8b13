"""Who a resource policy or a share lets in: everyone, named other accounts, or the owner only.

A rule that greps a policy for `"*"` flags the `"*"` of an "enforce TLS" Deny statement and
of an Allow restricted to the organisation, and misses an account id written as a bare
number. So the decision is made here, by Netflix's policyuniverse (Apache-2.0), which parses
IAM policy statements, principals and condition blocks and decides which statements are open
to the internet. This module feeds it a sanitised copy of each statement, because the
library trusts its input (a number where it expects text raises, a list of lists is
unhashable) and because two of its condition rules are too generous:

- an `...IfExists` operator does not restrict: when the key is absent from the request
  (a principal outside any organisation has no `aws:PrincipalOrgID`) the test passes;
- `ForAllValues:` does not restrict either: it is true when the key has no values.

and it does not know a few restricting keys (`aws:SourceOrgID`, `aws:SourceOrgPaths`,
`aws:VpceAccount`, `aws:VpceOrgID`, `aws:SourceVpcArn`, `s3:DataAccessPointAccount`), which
are renamed to the library's key of the same kind. Two decisions are added on top: a GitHub
Actions OIDC trust without a `:sub` condition is public (any repository on GitHub can assume
the role), and so is a Lambda URL permission with auth type NONE.

The grant class, as rules see it (`resourceGrant` in Sigma, `resource_grant(raw)` in SQL):
  "public"                       anyone (Allow to "*" that no condition restricts, group "all")
  "cross-account:<id>,<id>..."   named accounts (or organisations, o-...) other than the owner
  "internal"                     nothing outside the owning account, including "*" restricted
                                 by network conditions (aws:SourceVpc(e), aws:SourceIp) and a
                                 share list that adds nobody
  None                           not a policy event, or a policy that cannot be read

Deny statements are not evaluated (an Allow to "*" stays public even when a Deny narrows it),
the same simplification policyuniverse makes: the finding then says "look at the Deny".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from policyuniverse.arn import ARN
from policyuniverse.organization import Organization
from policyuniverse.statement import Statement

PUBLIC = "public"
INTERNAL = "internal"
CROSS_ACCOUNT = "cross-account:"

# Restricting condition keys policyuniverse does not know, as the known key of the same kind.
_KEY_ALIASES = {
    "aws:sourceorgid": "aws:PrincipalOrgID",
    "aws:sourceorgpaths": "aws:PrincipalOrgPaths",
    "aws:vpceorgid": "aws:PrincipalOrgID",
    "aws:vpceorgpaths": "aws:PrincipalOrgPaths",
    "aws:vpceaccount": "aws:SourceAccount",
    "aws:sourcevpcarn": "aws:SourceArn",
    "s3:dataaccesspointaccount": "aws:SourceAccount",
}
_GITHUB_OIDC = "token.actions.githubusercontent.com"
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_ORGANIZATION_ID = re.compile(r"(?<=[:/])o-[a-z0-9]{10,32}")
_MAX_POLICY_CHARS = 1_000_000  # IAM's largest policy is 20 KiB; anything far above is hostile


class Unreadable(ValueError):
    """The policy is not a shape IAM accepts; its grant is unknown (NULL), not a guess."""


# IAM's own limit for an ARN; policyuniverse's ARN patterns backtrack on longer text (a
# 70 KB principal took about 100 s), so a principal past it makes the policy Unreadable.
# Other values (a long aws:Referer pattern) are valid and kept.
MAX_NAME_CHARS = 2048


def _text(value: Any) -> str:
    """A scalar as IAM text: account ids are sometimes written as JSON numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise Unreadable(f"not a scalar: {type(value).__name__}")


def _name(value: Any) -> str:
    """A principal as IAM text, no longer than an ARN can be."""
    text = _text(value)
    if len(text) > MAX_NAME_CHARS:
        raise Unreadable(f"a principal of {len(text)} characters (IAM's ARNs: {MAX_NAME_CHARS})")
    return text


def _texts(value: Any) -> list[str]:
    return [_text(v) for v in value] if isinstance(value, list) else [_text(value)]


def _names(value: Any) -> list[str]:
    return [_name(v) for v in value] if isinstance(value, list) else [_name(value)]


def _principal(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, str):
        return _name(value)
    if isinstance(value, dict):
        return {_text(kind): _names(who) for kind, who in value.items()}
    raise Unreadable("principal is neither text nor an object")


def _restricting_condition(condition: Any) -> dict[str, dict[str, list[str]]]:
    """The operators that restrict even when the key is missing, keys renamed, values text."""
    if condition is None:
        return {}
    if not isinstance(condition, dict):
        raise Unreadable("condition is not an object")
    kept: dict[str, dict[str, list[str]]] = {}
    for operator, tests in condition.items():
        if not isinstance(tests, dict):
            raise Unreadable("condition operator without key/value tests")
        texts = {_text(key): _texts(value) for key, value in tests.items()}
        name = _text(operator).lower()
        if name.endswith("ifexists") or name.startswith("forallvalues:"):
            continue  # passes when the key is absent: restricts nobody
        kept[_text(operator)] = {_KEY_ALIASES.get(k.lower(), k): v for k, v in texts.items()}
    return kept


def _statements(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise Unreadable("policy is not an object")
    found = document.get("Statement", [])
    found = found if isinstance(found, list) else [found]
    if not all(isinstance(s, dict) for s in found):
        raise Unreadable("a statement is not an object")
    return found


def _sanitised(statement: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {
        "Effect": _text(statement.get("Effect", "")),
        "Condition": _restricting_condition(statement.get("Condition")),
    }
    for key in ("Principal", "NotPrincipal"):
        if key in statement:
            clean[key] = _principal(statement[key])
    for key in ("Action", "NotAction"):
        if key in statement:
            clean[key] = _texts(statement[key])
    return clean


def _github_trust_without_subject(statement: Statement, original: dict[str, Any]) -> bool:
    """Trust in GitHub's OIDC provider with no restricting `...:sub` test: any repository."""
    principal = original.get("Principal")
    federated = principal.get("Federated", []) if isinstance(principal, dict) else []
    if not any(_GITHUB_OIDC in f for f in federated):
        return False
    restricting = statement.statement.get("Condition", {})
    return not any(key.lower().endswith(":sub") for tests in restricting.values() for key in tests)


def _accounts_of(value: str) -> set[str]:
    """The account (or organisation) an ARN, account id or org id names; none for a service."""
    if value.startswith("o-"):
        organization = Organization(value).organization
        return {organization} if organization and not Organization(value).error else set()
    arn = ARN(value)
    if arn.error or arn.service:
        return set()
    if arn.account_number and _ACCOUNT_ID.fullmatch(arn.account_number):
        return {arn.account_number}
    return set()


def _condition_accounts(statement: Statement) -> set[str]:
    """Accounts and organisations the statement's restricting conditions name."""
    named: set[str] = set()
    for entry in statement.condition_entries:
        if entry.category in ("account", "arn", "organization"):
            named |= _accounts_of(entry.value)
    return named


def _statement_accounts(statement: Statement) -> set[str]:
    """Who a non-public Allow statement admits, as accounts: principals naming an account
    directly, else (for "*" or a service restricted by conditions) what the conditions name."""
    named: set[str] = set()
    by_condition = statement.uses_not_principal()
    for principal in statement.principals:
        arn = ARN(principal)
        if principal == "*" or arn.service or arn.account_number == "*":
            by_condition = True
        else:
            named |= _accounts_of(principal)
    if by_condition:
        named |= _condition_accounts(statement)
    return named


def _grant_of(named: Iterable[str], owner: str | None) -> str:
    others = sorted(set(named) - {owner or ""})
    return CROSS_ACCOUNT + ",".join(others) if others else INTERNAL


def classify_document(document: Any, owner: str | None) -> str:
    """The grant class of a parsed policy document (raises Unreadable for a foreign shape)."""
    named: set[str] = set()
    for original in _statements(document):
        clean = _sanitised(original)
        if clean["Effect"] != "Allow":
            continue
        statement = Statement(clean)
        if statement.is_internet_accessible() or _github_trust_without_subject(statement, clean):
            return PUBLIC
        named |= _statement_accounts(statement)
    return _grant_of(named, owner)


@lru_cache(maxsize=8192)
def classify_policy(policy_text: str, owner: str | None) -> str | None:
    """The grant class of a policy given as JSON text; None when it cannot be read.

    Cached by text: a Terraform apply re-puts the same policy on every run.
    """
    if len(policy_text) > _MAX_POLICY_CHARS:
        return None
    text = policy_text.strip()
    if text.startswith("%7B") or text.startswith("%7b"):
        text = unquote(text)  # IAM documents sometimes arrive URL-encoded
    try:
        return classify_document(json.loads(text), owner)
    except (ValueError, TypeError, RecursionError, AttributeError):
        return None


def classify_policy_value(value: Any, owner: str | None) -> str | None:
    """A policy as CloudTrail records it: JSON text, or (S3) the document itself."""
    if isinstance(value, str):
        return classify_policy(value, owner)
    if isinstance(value, dict):
        try:
            return classify_policy(json.dumps(value, sort_keys=True), owner)
        except (TypeError, ValueError, RecursionError):
            return None
    return None


def classify_share(values: Iterable[str], owner: str | None) -> str:
    """A snapshot or image share list: "all" is everyone, an empty list shares nothing."""
    named: set[str] = set()
    for value in values:
        if value.lower() == "all":
            return PUBLIC
        organization = _ORGANIZATION_ID.search(value) if value.startswith("arn:") else None
        named |= {organization[0]} if organization else _accounts_of(value)
    return _grant_of(named, owner)


# -- CloudTrail events ------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lambda_permission(params: dict[str, Any], owner: str | None) -> str | None:
    """AddPermission is one statement given as parameters: build it and classify it alike."""
    principal = params.get("principal")
    if not isinstance(principal, str | int):
        return None
    principal = str(principal)
    if principal == "*" and str(params.get("functionUrlAuthType", "")).upper() == "NONE":
        return PUBLIC  # a function URL without IAM auth: anyone on the internet
    is_service = principal.endswith(".amazonaws.com")
    tests: dict[str, dict[str, Any]] = {}
    for param, operator, key in (
        ("sourceAccount", "StringEquals", "aws:SourceAccount"),
        ("sourceArn", "ArnLike", "aws:SourceArn"),
        ("principalOrgID", "StringEquals", "aws:PrincipalOrgID"),
        ("organizationId", "StringEquals", "aws:PrincipalOrgID"),  # AddLayerVersionPermission
    ):
        if params.get(param) not in (None, ""):
            tests.setdefault(operator, {})[key] = params[param]
    statement = {
        "Effect": "Allow",
        "Principal": principal
        if principal == "*"
        else {"Service" if is_service else "AWS": principal},
        "Action": params.get("action") or "lambda:InvokeFunction",
        "Condition": tests,
    }
    try:
        return classify_document({"Statement": [statement]}, owner)
    except Unreadable:
        return None


def _share_items(params: dict[str, Any], attribute: str) -> list[str] | None:
    """The account ids / groups an EC2 `add` block names; None when there is no `add`."""
    block = _dict(params.get(attribute))
    if "add" not in block:
        return None
    add = block["add"]
    items = add.get("items", []) if isinstance(add, dict) else add
    values: list[str] = []
    for item in items if isinstance(items, list) else []:
        for key in ("userId", "group", "organizationArn", "organizationalUnitArn"):
            if isinstance(_dict(item).get(key), str):
                values.append(item[key])
    return values


def _snapshot_or_image(params: dict[str, Any], owner: str | None, attribute: str) -> str | None:
    values = _share_items(params, attribute)
    return None if values is None else classify_share(values, owner)


def _rds_snapshot(params: dict[str, Any], owner: str | None) -> str | None:
    if str(params.get("attributeName", "")).lower() != "restore":
        return None
    added = params.get("valuesToAdd")
    if added is None:
        return None
    return classify_share([str(v) for v in added] if isinstance(added, list) else [], owner)


def _attribute_policy(params: dict[str, Any], owner: str | None) -> str | None:
    return classify_policy_value(_dict(params.get("attributes")).get("Policy"), owner)


def _sns_set_attribute(params: dict[str, Any], owner: str | None) -> str | None:
    if str(params.get("attributeName", "")).lower() != "policy":
        return None
    return classify_policy_value(params.get("attributeValue"), owner)


def _field(name: str) -> Callable[[dict[str, Any], str | None], str | None]:
    return lambda params, owner: classify_policy_value(params.get(name), owner)


_EXTRACTORS: dict[tuple[str, str], Callable[[dict[str, Any], str | None], str | None]] = {
    ("s3.amazonaws.com", "PutBucketPolicy"): _field("bucketPolicy"),
    ("kms.amazonaws.com", "PutKeyPolicy"): _field("policy"),
    ("kms.amazonaws.com", "CreateKey"): _field("policy"),
    ("iam.amazonaws.com", "CreateRole"): _field("assumeRolePolicyDocument"),
    ("iam.amazonaws.com", "UpdateAssumeRolePolicy"): _field("policyDocument"),
    ("ecr.amazonaws.com", "SetRepositoryPolicy"): _field("policyText"),
    ("sqs.amazonaws.com", "SetQueueAttributes"): _attribute_policy,
    ("sqs.amazonaws.com", "CreateQueue"): _attribute_policy,
    ("sns.amazonaws.com", "SetTopicAttributes"): _sns_set_attribute,
    ("sns.amazonaws.com", "CreateTopic"): _attribute_policy,
    ("secretsmanager.amazonaws.com", "PutResourcePolicy"): _field("resourcePolicy"),
    ("ec2.amazonaws.com", "ModifySnapshotAttribute"): (
        lambda p, o: _snapshot_or_image(p, o, "createVolumePermission")
    ),
    ("ec2.amazonaws.com", "ModifyImageAttribute"): (
        lambda p, o: _snapshot_or_image(p, o, "launchPermission")
    ),
    ("rds.amazonaws.com", "ModifyDBSnapshotAttribute"): _rds_snapshot,
    ("rds.amazonaws.com", "ModifyDBClusterSnapshotAttribute"): _rds_snapshot,
}
# Lambda's event names carry the API version (AddPermission20150331v2).
_LAMBDA_PREFIXES = ("AddPermission", "AddLayerVersionPermission")
# Cheap test before parsing a row: does its text name a policy event at all?
_POLICY_EVENT = re.compile(
    "|".join(sorted({name for _, name in _EXTRACTORS} | set(_LAMBDA_PREFIXES)))
)


def event_grant(event: Any) -> str | None:
    """The grant class a CloudTrail record sets, or None when it sets no resource policy."""
    if not isinstance(event, dict):
        return None
    source, name = event.get("eventSource"), event.get("eventName")
    if not isinstance(source, str) or not isinstance(name, str):
        return None
    params = _dict(event.get("requestParameters"))
    owner_value = event.get("recipientAccountId") or _dict(event.get("userIdentity")).get(
        "accountId"
    )
    owner = str(owner_value) if isinstance(owner_value, str | int) else None
    if source == "lambda.amazonaws.com" and name.startswith(_LAMBDA_PREFIXES):
        return _lambda_permission(params, owner)
    extractor = _EXTRACTORS.get((source, name))
    return extractor(params, owner) if extractor else None


def resource_grant(raw: str | None) -> str | None:
    """DuckDB UDF: the grant class of the event in a timeline row's `raw` JSON.

    Never raises (a hostile row must not stop the scan): anything unexpected is NULL.
    Rows that do not name a policy event are skipped before parsing.
    """
    if raw is None or len(raw) > _MAX_POLICY_CHARS * 4 or not _POLICY_EVENT.search(raw):
        return None
    try:
        return event_grant(json.loads(raw))
    except Exception:  # any malformed record: unknown grant, never an error in the scan
        return None
