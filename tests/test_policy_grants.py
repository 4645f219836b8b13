"""Resource policies and shares classified by policyuniverse: public, cross-account, internal.

The rules (tests/data/rule_cases/policy.yml) pin the boundary per resource type; these
tests pin the classifier itself: which conditions restrict a "*", what policyuniverse
gets wrong and the wrapper corrects (IfExists, ForAllValues, keys it does not know, values
written as numbers), and that no input, however hostile, raises, inside DuckDB or out.
"""

from __future__ import annotations

import json
import time
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudir.analyze.policy_grants import (
    classify_policy,
    classify_share,
    event_grant,
    resource_grant,
)
from cloudir.analyze.sigma.runtime import register_functions

OWN, OTHER = "111122223333", "444455556666"
CANONICAL_USER = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: Any, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Principal": principal, "Action": "s3:GetObject"}
    return {**statement, "Condition": condition} if condition else statement


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}, "cross-account:o-a1b2c3d4e5"),
        (
            {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-a1b2c3d4e5/r-ab12/*"}},
            "cross-account:o-a1b2c3d4e5",
        ),
        ({"StringEquals": {"aws:SourceOrgID": "o-a1b2c3d4e5"}}, "cross-account:o-a1b2c3d4e5"),
        ({"StringEquals": {"aws:SourceVpce": "vpce-0a1b2c3d"}}, "internal"),
        ({"StringEquals": {"aws:SourceVpc": "vpc-0a1b2c3d"}}, "internal"),
        ({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}, "internal"),
        ({"StringEquals": {"aws:SourceAccount": OWN}}, "internal"),
        ({"StringEquals": {"aws:SourceAccount": int(OWN)}}, "internal"),  # a JSON number
        ({"StringEquals": {"aws:PrincipalAccount": OTHER}}, f"cross-account:{OTHER}"),
        (
            {"ArnLike": {"aws:SourceArn": f"arn:aws:sns:us-east-1:{OTHER}:t"}},
            f"cross-account:{OTHER}",
        ),
        ({"StringEquals": {"AWS:SourceOwner": OWN}}, "internal"),  # keys are case-insensitive
        ({"StringEquals": {"aws:VpceAccount": OWN}}, "internal"),
        ({"StringEquals": {"s3:DataAccessPointAccount": OWN}}, "internal"),
        ({"StringEquals": {"kms:CallerAccount": OTHER}}, f"cross-account:{OTHER}"),
        # not restrictions
        ({"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, "public"),
        ({"StringEquals": {"aws:SourceAccount": "*"}}, "public"),
        ({"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}, "public"),
        ({"ForAllValues:StringEquals": {"aws:PrincipalOrgPaths": "o-a1b2c3d4e5/*"}}, "public"),
        ({"StringNotEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}, "public"),
        ({"StringLike": {"aws:UserAgent": "aws-cli*"}}, "public"),
        ({"Bool": {"aws:SecureTransport": "true"}}, "public"),
    ],
)
def test_which_conditions_restrict_a_star(condition: dict[str, Any], expected: str) -> None:
    assert classify_policy(policy(allow("*", condition)), OWN) == expected


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ([allow({"AWS": "*"})], "public"),
        ([allow({"AWS": ["*"]})], "public"),
        ([allow({"AWS": "arn:aws:iam::*:root"})], "public"),
        (
            [
                {
                    "Effect": "Allow",
                    "NotPrincipal": {"AWS": f"arn:aws:iam::{OWN}:root"},
                    "Action": "s3:*",
                }
            ],
            "public",
        ),
        (
            [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                allow({"AWS": f"arn:aws:iam::{OWN}:role/app"}),
            ],
            "internal",
        ),
        (
            [allow({"AWS": [OTHER, f"arn:aws:iam::{OWN}:root", "arn:aws:iam::777788889999:root"]})],
            f"cross-account:{OTHER},777788889999",
        ),
        ([allow({"AWS": int(OTHER)})], f"cross-account:{OTHER}"),
        ([allow({"Service": "cloudtrail.amazonaws.com"})], "internal"),
        (
            [allow({"CanonicalUser": CANONICAL_USER})],
            "internal",
        ),
        ([], "internal"),
    ],
)
def test_principals(statements: list[dict[str, Any]], expected: str) -> None:
    assert classify_policy(policy(*statements), OWN) == expected


def test_github_oidc_trust_needs_a_subject() -> None:
    provider = f"arn:aws:iam::{OWN}:oidc-provider/token.actions.githubusercontent.com"
    audience = {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
    open_trust = allow({"Federated": provider}, {"StringEquals": audience})
    assert classify_policy(policy(open_trust), OWN) == "public"
    subject = {"token.actions.githubusercontent.com:sub": "repo:acme/infra:*"}
    narrow = allow({"Federated": provider}, {"StringEquals": audience, "StringLike": subject})
    assert classify_policy(policy(narrow), OWN) == "internal"
    weak = allow({"Federated": provider}, {"StringLikeIfExists": subject})
    assert classify_policy(policy(weak), OWN) == "public"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "null",
        "[]",
        "42",
        '"*"',
        '{"Statement": "x"}',
        '{"Statement": [1]}',
        '{"Statement": {"Effect": "Allow", "Principal": {"AWS": [["*"]]}}}',
        '{"Statement": {"Effect": "Allow", "Principal": 7}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Condition": []}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Condition": {"StringEquals": 1}}}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_unreadable_policies_are_unknown(text: str) -> None:
    assert classify_policy(text, OWN) is None


def test_url_encoded_documents_are_read() -> None:
    encoded = (
        "%7B%22Statement%22%3A%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%22%2A%22%7D%7D"
    )
    assert classify_policy(encoded, OWN) == "public"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "internal"),
        (["all"], "public"),
        (["ALL"], "public"),
        ([OWN], "internal"),
        ([OWN, OTHER], f"cross-account:{OTHER}"),
        (
            ["arn:aws:organizations::999988887777:organization/o-a1b2c3d4e5"],
            "cross-account:o-a1b2c3d4e5",
        ),
        (
            ["arn:aws:organizations::999988887777:ou/o-a1b2c3d4e5/ou-ab12-cdefghij"],
            "cross-account:o-a1b2c3d4e5",
        ),
    ],
)
def test_share_lists(values: list[str], expected: str) -> None:
    assert classify_share(values, OWN) == expected


def event(source: str, name: str, params: Any, **extra: Any) -> dict[str, Any]:
    return {"eventSource": source, "eventName": name, "requestParameters": params,
            "recipientAccountId": OWN, **extra}  # fmt: skip


STAR = policy(allow("*"))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            event("s3.amazonaws.com", "PutBucketPolicy", {"bucketPolicy": json.loads(STAR)}),
            "public",
        ),
        (event("kms.amazonaws.com", "CreateKey", {"policy": STAR}), "public"),
        (event("kms.amazonaws.com", "CreateKey", {"keyUsage": "ENCRYPT_DECRYPT"}), None),
        (event("iam.amazonaws.com", "CreateRole", {"assumeRolePolicyDocument": STAR}), "public"),
        (event("iam.amazonaws.com", "UpdateAssumeRolePolicy", {"policyDocument": STAR}), "public"),
        (event("ecr.amazonaws.com", "SetRepositoryPolicy", {"policyText": STAR}), "public"),
        (
            event("sqs.amazonaws.com", "SetQueueAttributes", {"attributes": {"Policy": STAR}}),
            "public",
        ),
        (
            event(
                "sqs.amazonaws.com",
                "SetQueueAttributes",
                {"attributes": {"VisibilityTimeout": "30"}},
            ),
            None,
        ),
        (
            event(
                "sns.amazonaws.com",
                "SetTopicAttributes",
                {"attributeName": "Policy", "attributeValue": STAR},
            ),
            "public",
        ),
        (
            event(
                "sns.amazonaws.com",
                "SetTopicAttributes",
                {"attributeName": "DeliveryPolicy", "attributeValue": STAR},
            ),
            None,
        ),
        (
            event("secretsmanager.amazonaws.com", "PutResourcePolicy", {"resourcePolicy": STAR}),
            "public",
        ),
        (event("lambda.amazonaws.com", "AddPermission20150331v2", {"principal": "*"}), "public"),
        (
            event(
                "lambda.amazonaws.com",
                "AddPermission20150331v2",
                {"principal": "*", "sourceAccount": OWN},
            ),
            "internal",
        ),
        (
            event("lambda.amazonaws.com", "AddPermission20150331v2", {"principal": int(OTHER)}),
            f"cross-account:{OTHER}",
        ),
        (
            event(
                "ec2.amazonaws.com",
                "ModifySnapshotAttribute",
                {"createVolumePermission": {"add": {"items": []}}},
            ),
            "internal",
        ),
        (
            event(
                "ec2.amazonaws.com",
                "ModifySnapshotAttribute",
                {"createVolumePermission": {"remove": {"items": [{"userId": OTHER}]}}},
            ),
            None,
        ),
        (
            event(
                "ec2.amazonaws.com",
                "ModifyImageAttribute",
                {"launchPermission": {"add": {"items": [{"group": "all"}]}}},
            ),
            "public",
        ),
        (
            event(
                "rds.amazonaws.com",
                "ModifyDBSnapshotAttribute",
                {"attributeName": "restore", "valuesToAdd": []},
            ),
            "internal",
        ),
        (
            event(
                "rds.amazonaws.com",
                "ModifyDBClusterSnapshotAttribute",
                {"attributeName": "restore", "valuesToAdd": [OTHER]},
            ),
            f"cross-account:{OTHER}",
        ),
        # the owner from the caller's account when the recipient is missing
        (
            {
                "eventSource": "ecr.amazonaws.com",
                "eventName": "SetRepositoryPolicy",
                "userIdentity": {"accountId": OTHER},
                "requestParameters": {"policyText": policy(allow({"AWS": OTHER}))},
            },
            "internal",
        ),
        (event("s3.amazonaws.com", "GetBucketPolicy", {"bucketName": "x"}), None),
        (event("s3.amazonaws.com", "PutBucketPolicy", None), None),
        (event("s3.amazonaws.com", "PutBucketPolicy", {"bucketPolicy": [1, 2]}), None),
    ],
)
def test_event_grant(record: dict[str, Any], expected: str | None) -> None:
    assert event_grant(record) == expected
    assert resource_grant(json.dumps(record)) == expected


# -- never raises ---------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.sampled_from(["*", OWN, OTHER, "o-a1b2c3d4e5", "0.0.0.0/0", "10.0.0.0/8",
                     "arn:aws:iam::*:root", f"arn:aws:iam::{OTHER}:root", "s3.amazonaws.com",
                     "vpce-1", "", "all"]),
    st.text(max_size=20),
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["aws:PrincipalOrgID", "aws:SourceVpce", "aws:SourceIp", "aws:SourceAccount",
     "aws:SourceArn", "aws:PrincipalArn", "aws:userid", "aws:SourceVpc", "kms:CallerAccount",
     "token.actions.githubusercontent.com:sub", "aws:SecureTransport"]
)  # fmt: skip
OPERATORS = st.sampled_from(
    ["StringEquals", "StringLike", "StringEqualsIfExists", "ForAllValues:StringEquals",
     "ForAnyValue:StringLike", "ArnLike", "IpAddress", "NotIpAddress", "Bool", "Null"]
)  # fmt: skip
PRINCIPALS = st.one_of(
    SCALARS,
    st.dictionaries(st.sampled_from(["AWS", "Service", "Federated", "CanonicalUser"]),
                    st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3),
    JSON,
)  # fmt: skip
STATEMENTS = st.fixed_dictionaries(
    {"Effect": st.one_of(st.sampled_from(["Allow", "Deny"]), SCALARS)},
    optional={
        "Principal": PRINCIPALS,
        "NotPrincipal": PRINCIPALS,
        "Action": st.one_of(SCALARS, st.lists(SCALARS, max_size=3)),
        "Condition": st.one_of(
            st.dictionaries(OPERATORS, st.dictionaries(KEYS, st.one_of(
                SCALARS, st.lists(SCALARS, max_size=3)), max_size=3), max_size=3),
            JSON,
        ),
    },
)  # fmt: skip
POLICIES = st.one_of(
    st.fixed_dictionaries(
        {"Statement": st.one_of(STATEMENTS, st.lists(STATEMENTS, max_size=4), JSON)}
    ),
    JSON,
)


def _is_grant_class(value: str | None) -> bool:
    return value in (None, "public", "internal") or (
        value is not None and value.startswith("cross-account:") and len(value) > 14
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(POLICIES, st.sampled_from([OWN, OTHER, None]))
def test_random_policies_never_raise(document: Any, owner: str | None) -> None:
    assert _is_grant_class(classify_policy(json.dumps(document), owner))


@settings(max_examples=200, deadline=None)
@given(STATEMENTS)
def test_a_restricted_star_is_never_public(statement: dict[str, Any]) -> None:
    """A "*" Allow restricted to an organisation is never public on its own; beside any
    random statement the result is still a grant class (the other one may be public)."""
    restricted = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}},
    }
    assert classify_policy(policy(restricted), OWN) != "public"
    assert _is_grant_class(classify_policy(policy(restricted, statement), OWN))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [("s3.amazonaws.com", "PutBucketPolicy", "bucketPolicy"),
         ("kms.amazonaws.com", "PutKeyPolicy", "policy"),
         ("lambda.amazonaws.com", "AddPermission20150331v2", "principal"),
         ("ec2.amazonaws.com", "ModifySnapshotAttribute", "createVolumePermission"),
         ("ec2.amazonaws.com", "ModifyImageAttribute", "launchPermission"),
         ("rds.amazonaws.com", "ModifyDBSnapshotAttribute", "valuesToAdd"),
         ("sqs.amazonaws.com", "SetQueueAttributes", "attributes")]
    ),
    JSON,
    JSON,
)  # fmt: skip
def test_random_events_never_raise(target: tuple[str, str, str], value: Any, other: Any) -> None:
    source, name, key = target
    record = {"eventSource": source, "eventName": name, "recipientAccountId": other,
              "requestParameters": {key: value, "attributeName": other}}  # fmt: skip
    assert _is_grant_class(resource_grant(json.dumps(record)))


def test_the_duckdb_function_returns_null_for_hostile_rows() -> None:
    con = duckdb.connect()
    register_functions(con)
    nested = '{"eventName": "PutBucketPolicy", "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
    rows = [
        None, "", "not json", nested, '{"eventName": "PutBucketPolicy"}',
        json.dumps(event("s3.amazonaws.com", "PutBucketPolicy",
                         {"bucketPolicy": json.loads(STAR)})),
    ]  # fmt: skip
    con.execute("CREATE TABLE t (i INTEGER, raw VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(rows)))
    got = con.execute("SELECT resource_grant(raw) FROM t ORDER BY i").fetchall()
    assert [g[0] for g in got] == [None, None, None, None, None, "public"]


def test_rows_without_a_policy_event_are_not_parsed() -> None:
    """The function is called on every row a rule's earlier conditions let through; rows
    naming no policy event are skipped before json.loads, so a big timeline stays fast."""
    row = json.dumps({"eventName": "GetObject", "requestParameters": {"k": "v" * 2000}})
    start = time.perf_counter()
    for _ in range(20_000):
        assert resource_grant(row) is None
    assert time.perf_counter() - start < 2.0
