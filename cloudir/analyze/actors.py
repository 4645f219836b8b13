"""Who made a CloudTrail call: a human at the console, a CLI or SDK, automation, AWS itself.

Triage ranks findings by their actor (docs/detection.md, "Triage"): a Terraform apply
that creates access keys is not the same story as a person doing it by hand. The signals
are data, not code, so that one table drives both the DuckDB expression detect runs over
every matched event (`class_sql`) and the plain Python function the tests and docs use
(`classify`); the tests check that both agree.

Precedence, first that holds:
1. infrastructure-as-code by its user agent or invoker (Pulumi, CDK, CloudFormation,
   Terraform) -> automation;
2. AWS calling on its own or on someone's behalf (`userIdentity.type` AWSService,
   `invokedBy` or `sourceIPAddress` a `*.amazonaws.com` name) -> aws-service;
3. the console (`sessionCredentialFromConsole`, ConsoleLogin, a browser or console agent)
   -> human-console;
4. an interactive command line (aws-cli, AWS Tools for PowerShell) -> cli-sdk;
5. a role or user whose name says it is automation (`*terraform*`, `cdk-*-role-*`,
   `*pulumi*`, CloudFormation's session) -> automation;
6. an SDK agent (boto3, botocore, the AWS SDKs) -> cli-sdk;
7. any other user agent -> cli-sdk ("other"); no agent at all -> no class.

A role or user named as automation (step 5) but seen at steps 3 or 4 keeps the human class:
that is an automation identity used by hand, which `automation_identity` still reports (and
triage.py calls misuse). The same identity with an SDK agent is taken as its own code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudir.analyze.duck import sql_str

HUMAN_CONSOLE = "human-console"
CLI_SDK = "cli-sdk"
AUTOMATION = "automation"
AWS_SERVICE = "aws-service"
# The order a finding's own class is chosen in: the most human actor among its events.
ACTOR_CLASSES = (HUMAN_CONSOLE, CLI_SDK, AUTOMATION, AWS_SERVICE)
HUMAN_CLASSES = frozenset({HUMAN_CONSOLE, CLI_SDK})

UA = "userAgent"
INVOKED_BY = "userIdentity.invokedBy"
IDENTITY_TYPE = "userIdentity.type"
SOURCE_IP = "sourceIPAddress"
FROM_CONSOLE = "sessionCredentialFromConsole"
EVENT_NAME = "eventName"
ISSUER_ROLE = "userIdentity.sessionContext.sessionIssuer.userName"
USER_NAME = "userIdentity.userName"
PRINCIPAL_ID = "userIdentity.principalId"
FIELDS = (
    UA, INVOKED_BY, IDENTITY_TYPE, SOURCE_IP, FROM_CONSOLE, EVENT_NAME, ISSUER_ROLE, USER_NAME,
    PRINCIPAL_ID,
)  # fmt: skip


@dataclass(frozen=True)
class Signal:
    """`field` matches the case-insensitive glob `pattern` (`*` any text) -> `detail`."""

    detail: str
    field: str
    pattern: str


# Order matters: Pulumi's and CDK's agents also carry Terraform's or the SDK's name.
AUTOMATION_AGENTS = (
    Signal("pulumi", UA, "*pulumi*"),
    Signal("cdk", UA, "*aws-cdk*"),
    Signal("cloudformation", INVOKED_BY, "cloudformation.amazonaws.com"),
    Signal("cloudformation", UA, "cloudformation.amazonaws.com*"),
    Signal("cloudformation", SOURCE_IP, "cloudformation.amazonaws.com"),
    Signal("terraform", UA, "*terraform*"),
)
AWS_SERVICES = (
    Signal("invokedBy", INVOKED_BY, "*.amazonaws.com"),
    Signal("sourceIPAddress", SOURCE_IP, "*.amazonaws.com"),
    Signal("type", IDENTITY_TYPE, "AWSService"),
)
CONSOLE = (
    Signal("console", FROM_CONSOLE, "true"),
    Signal("console", EVENT_NAME, "ConsoleLogin"),
    Signal("console", UA, "Mozilla/*"),
    Signal("console", UA, "*console.amazonaws.com*"),
    Signal("console", UA, "*S3Console*"),
)
# A person at a prompt: with an automation identity, that is the identity used by hand.
INTERACTIVE_AGENTS = (
    Signal("aws-cli", UA, "*aws-cli/*"),
    Signal("powershell", UA, "*PowerShell*"),
)
# A program: with an automation identity, more likely the automation's own code.
SDK_AGENTS = (
    Signal("boto3", UA, "*Boto3/*"),
    Signal("botocore", UA, "*Botocore/*"),
    Signal("aws-sdk-go", UA, "*aws-sdk-go*"),
    Signal("aws-sdk-java", UA, "*aws-sdk-java*"),
    Signal("aws-sdk-js", UA, "*aws-sdk-js*"),
    Signal("aws-sdk-dotnet", UA, "*aws-sdk-dotnet*"),
    Signal("aws-sdk-ruby", UA, "*aws-sdk-ruby*"),
    Signal("aws-sdk-php", UA, "*aws-sdk-php*"),
    Signal("aws-sdk-rust", UA, "*aws-sdk-rust*"),
    Signal("aws-sdk-cpp", UA, "*aws-sdk-cpp*"),
)
AUTOMATION_IDENTITIES = (
    Signal("pulumi", ISSUER_ROLE, "*pulumi*"),
    Signal("cdk", ISSUER_ROLE, "cdk-*-role-*"),
    Signal("terraform", ISSUER_ROLE, "*terraform*"),
    Signal("cloudformation", ISSUER_ROLE, "*cloudformation*"),
    Signal("cloudformation", PRINCIPAL_ID, "*:AWSCloudFormation"),
    Signal("pulumi", USER_NAME, "*pulumi*"),
    Signal("terraform", USER_NAME, "*terraform*"),
)


# The client family of a user agent: which kind of program signed the call, coarse on
# purpose (a version or an OS change is the same family), for "has this key been used by
# this kind of client before" (sigma/context.py, cloudir.key_new_agent_family). Built from
# the tables above, so a client is named the same way in a finding's actor and here; first
# that matches, then any other agent is "other". Boto3 and a bare botocore are one family
# (one is the other's engine); AWS calling on the key's behalf (forward access sessions,
# `*.amazonaws.com`, `AWS Internal`) is "aws-service", not a client of the key's holder.
_SAME_FAMILY = {"botocore": "boto3"}
AGENT_FAMILIES = (
    *(s for s in AUTOMATION_AGENTS if s.field == UA),
    Signal("secret-scanner", UA, "*trufflehog*"),  # verifies leaked keys it finds
    *(s for s in CONSOLE if s.field == UA),
    *INTERACTIVE_AGENTS,
    *(Signal(_SAME_FAMILY.get(s.detail, s.detail), s.field, s.pattern) for s in SDK_AGENTS),
    Signal("python-requests", UA, "python-requests/*"),
    Signal("curl", UA, "curl/*"),
    Signal("aws-service", UA, "*.amazonaws.com"),
    Signal("aws-service", UA, "AWS Internal*"),
)
OTHER_AGENT = "other"
AWS_SERVICE_AGENT = "aws-service"


@dataclass(frozen=True)
class Actor:
    kind: str | None  # one of ACTOR_CLASSES, or None when nothing tells
    detail: str | None
    automation_identity: str | None  # the role or user's name says automation: which


def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, pattern.split("*"))), re.IGNORECASE | re.DOTALL)


def _value(event: Mapping[str, Any], path: str) -> str | None:
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    if node is None or isinstance(node, (dict, list)):
        return None
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _first(signals: tuple[Signal, ...], event: Mapping[str, Any]) -> Signal | None:
    for signal in signals:
        value = _value(event, signal.field)
        if value is not None and _glob_regex(signal.pattern).fullmatch(value):
            return signal
    return None


def classify(event: Mapping[str, Any]) -> Actor:
    """The actor of one CloudTrail record (a dict as CloudTrail writes it)."""
    identity = _first(AUTOMATION_IDENTITIES, event)
    named = identity.detail if identity else None
    if agent := _first(AUTOMATION_AGENTS, event):
        return Actor(AUTOMATION, agent.detail, named)
    if service := _first(AWS_SERVICES, event):
        return Actor(AWS_SERVICE, _service_detail(event, service), named)
    if _first(CONSOLE, event):
        return Actor(HUMAN_CONSOLE, "console", named)
    if cli := _first(INTERACTIVE_AGENTS, event):
        return Actor(CLI_SDK, cli.detail, named)
    if named:
        return Actor(AUTOMATION, named, named)
    if sdk := _first(SDK_AGENTS, event):
        return Actor(CLI_SDK, sdk.detail, named)
    if _value(event, UA):
        return Actor(CLI_SDK, "other", named)
    return Actor(None, None, named)


def agent_family(user_agent: str | None) -> str | None:
    """The client family of a user agent (AGENT_FAMILIES); None without an agent."""
    if not user_agent:
        return None
    found = _first(AGENT_FAMILIES, {UA: user_agent})
    return found.detail if found else OTHER_AGENT


def _service_detail(event: Mapping[str, Any], signal: Signal) -> str:
    if signal.field == IDENTITY_TYPE:
        return _value(event, INVOKED_BY) or _value(event, "eventSource") or "aws-service"
    return _value(event, signal.field) or "aws-service"


# --- the same table as DuckDB SQL ------------------------------------------------------

FieldSql = Callable[[str], str]  # a raw field path -> the SQL reading it (text or NULL)


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sql_str(escaped.replace("*", "%"))


def _test(signal: Signal, field: FieldSql) -> str:
    """`field ILIKE pattern`, written as DuckDB evaluates it (both sides lower-cased, then
    LIKE): the optimizer turns that LIKE into contains/prefix/suffix tests over one shared
    lower() of the field, three to four times faster than ILIKE on user agents."""
    pattern = _like(signal.pattern)
    return f"COALESCE(lower({field(signal.field)}) LIKE lower({pattern}) ESCAPE '\\', false)"


def _any(signals: tuple[Signal, ...], field: FieldSql) -> str:
    """Whether any signal holds: a CASE chain, which stops at the first that does (an OR
    in a projection evaluates every operand on every row)."""
    arms = " ".join(f"WHEN {_test(s, field)} THEN true" for s in signals)
    return f"CASE {arms} ELSE false END"


def _which(signals: tuple[Signal, ...], field: FieldSql) -> str:
    """The detail of the first signal that holds, or NULL."""
    arms = " ".join(f"WHEN {_test(s, field)} THEN {sql_str(s.detail)}" for s in signals)
    return f"CASE {arms} END"


@dataclass(frozen=True)
class ActorSql:
    kind: str
    detail: str
    automation_identity: str


def actor_sql(field: FieldSql) -> ActorSql:
    """Three SQL expressions over one CloudTrail row, with `classify`'s precedence."""
    named = _which(AUTOMATION_IDENTITIES, field)
    ua = field(UA)
    service_detail = (
        f"CASE WHEN {_test(AWS_SERVICES[0], field)} THEN {field(INVOKED_BY)} "
        f"WHEN {_test(AWS_SERVICES[1], field)} THEN {field(SOURCE_IP)} "
        f"ELSE COALESCE({field(INVOKED_BY)}, {field('eventSource')}, 'aws-service') END"
    )
    steps = [
        (_any(AUTOMATION_AGENTS, field), sql_str(AUTOMATION), _which(AUTOMATION_AGENTS, field)),
        (_any(AWS_SERVICES, field), sql_str(AWS_SERVICE), service_detail),
        (_any(CONSOLE, field), sql_str(HUMAN_CONSOLE), "'console'"),
        (
            _any(INTERACTIVE_AGENTS, field),
            sql_str(CLI_SDK),
            _which(INTERACTIVE_AGENTS, field),
        ),
        (f"{named} IS NOT NULL", sql_str(AUTOMATION), named),
        (_any(SDK_AGENTS, field), sql_str(CLI_SDK), _which(SDK_AGENTS, field)),
        (f"COALESCE({ua} <> '', false)", sql_str(CLI_SDK), "'other'"),
    ]
    kind = "CASE " + " ".join(f"WHEN {test} THEN {k}" for test, k, _ in steps) + " END"
    detail = "CASE " + " ".join(f"WHEN {test} THEN {d}" for test, _, d in steps) + " END"
    return ActorSql(kind, detail, named)


def agent_family_sql(user_agent: str) -> str:
    """`agent_family` as SQL over a user agent's SQL text (NULL without an agent)."""
    families = _which(AGENT_FAMILIES, lambda _: user_agent)
    return f"CASE WHEN COALESCE({user_agent} <> '', false) THEN COALESCE({families}, 'other') END"


def identity_sql(user: str) -> str:
    """Whose credentials, from the timeline's `user` column: an assumed role's ARN without
    its session name (every session of a role is one identity), any other ARN as it is."""
    return (
        f"regexp_replace({user}, "
        r"'^(arn:[^:]+:sts::[^:]*:assumed-role/[^/]+)/.*$', '\1')"
    )


def is_address_sql(value: str) -> str:
    """An IP address, not a service name such as cloudformation.amazonaws.com."""
    return f"(cloudir_ipv4({value}) IS NOT NULL OR COALESCE(contains({value}, ':'), false))"
