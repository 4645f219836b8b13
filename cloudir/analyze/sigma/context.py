"""Computed fields: `cloudir.*` values a rule reads like any field, worked out by cloudir.

A Sigma rule compares one row's fields with constants (or, with `fieldref`, with another
field of the same row). Some questions a sequence rule asks need more than the row:
"is this the first time this access key is seen from this address, in the whole case?",
"is this address one of the instance's own?", "is this principal enumerating far more
than it usually does?". These fields answer them, so the rules stay plain Sigma.

- `cloudir.api_family`: `<eventSource>:<verb>` (lower case), the verb being the leading
  word of eventName (`List` of `ListBuckets`, `Describe` of `DescribeInstances20160101`).
  Row-level.
- `cloudir.query_domain`: for a DNS query row (DNS_ARTIFACTS), the domain its name is
  under, lower case: the last two labels (`evil.example` of `a1b2.t.evil.example`), three
  under a two-letter country code's `co`, `com`, `net`, `org`, `gov`, `edu`, `ac`, `or`,
  `ne` or `go` (`shop.co.uk`). Not the Public Suffix List: close enough to group a
  tunnel's names by the domain whose name server receives them. Row-level.
- `cloudir.key_new_address`: for a call signed with a long-term access key (AKIA...),
  `true` when the key's first call from this sourceIPAddress was at most an hour
  (NEW_ADDRESS_SECONDS) before this one and the key was used earlier than that first call
  (necessarily from other addresses); `false` on its other calls. No value for other rows.
  A key seen for the first time is not "new" anywhere: nothing in the case to compare with.
  The hour keeps what a sequence rule correlates small: only the calls from a new address.
- `cloudir.key_new_agent_family`: the same question as key_new_address about the client
  family of the call's userAgent (actors.AGENT_FAMILIES: aws-cli, boto3, aws-sdk-go,
  terraform, console, secret-scanner, python-requests, curl, ..., other): `true` when the
  key first used this family at most an hour before this call and was used earlier than
  that (necessarily with other families). No value without a user agent or for AWS calling
  on the key's behalf (`aws-service`): that is not a client of whoever holds the key.
- `cloudir.caller_in_group`: for an IAM user's call naming a group
  (requestParameters.groupName), whether the case shows the caller in that group just
  before the call: `true` when the last membership change of (account, group, user) before
  the call is a successful AddUserToGroup, `false` otherwise (removed by
  RemoveUserFromGroup, or never added in the case). CloudTrail does not log the responses
  of read calls (GetGroup, ListGroupsForUser), so the changes are all the case can show;
  a membership older than the case is unknown, and reads `false`.
- `cloudir.family_failing`: for a CloudTrail call with a principal (timeline `user`), whether
  the principal's calls of the same API family (as cloudir.api_family, read from the
  timeline's `action`) were mostly refused: `bucket` when at least half of them were refused
  for lack of permission (`outcome` AccessDenied, AccessDeniedException,
  Client.UnauthorizedOperation, UnauthorizedOperation, Client.AccessDenied) in this call's
  fixed 10-minute bucket, `case` when that holds in another bucket of the case, `no`
  otherwise. An application that is sometimes refused is not "failing"; a tool walking
  the actions of a service it may not use is.
- `cloudir.instance_address`: for a call made with an EC2 instance profile session (the
  timeline's `host` is the instance id), where it came from:
  `service` (an AWS service on its behalf: `invokedBy`, or a source that is not an IP
  address such as `ec2.amazonaws.com` or `AWS Internal`), `own` (one of the instance's own
  addresses), `outside` (an address, and not one of the instance's own), `unknown` (the
  case does not show the instance's own addresses). The instance's own addresses are what
  the case shows of it: the private and public addresses in RunInstances'
  responseElements, the public IP of AssociateAddress, and the addresses the SSM agent
  running on the instance (user agent `amazon-ssm-agent`) called from with its
  credentials. The address range is not used: an attacker inside the VPC, or anonymised
  data, gives a private address that is still not the instance's.
- `cloudir.lambda_new_deployer`: for a CloudTrail call that creates a Lambda function or
  replaces its code (CreateFunction, UpdateFunctionCode, any API version) with a principal,
  whether the principal (`user`, an assumed role's sessions counting as the role) is new to
  deploying this function (account, region and the function's name, read from
  requestParameters.functionName, name or ARN): `true` when its first successful deploy of
  the function was at most an hour (NEW_ADDRESS_SECONDS) before this call and someone else
  deployed the function earlier in the case; `false` otherwise. A function whose first
  deploy the case shows is nobody's "outside" deploy: nothing to compare with. The deploy
  role is whoever the case shows deploying before; the hour keeps the answer to the new
  deployer's first hour.
- `cloudir.discovery_unusual`: for a List/Describe/Get call, `true` when the principal's
  (timeline `user`) distinct discovery calls in that fixed 10-minute bucket are at least
  DISCOVERY_FACTOR times its median over its active buckets in the case, or when the
  principal has fewer than DISCOVERY_MIN_BUCKETS active buckets (no baseline to compare
  with); `false` otherwise. Rules put their absolute floor in the correlation.

Row-level fields are SQL over the row. The others join the scan (FieldPlan.scan_sql) to a
small aggregate over the whole timeline, computed by the same statement, and only when a
loaded rule reads the field. tests/sigma_reference.py computes them independently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudir.analyze.actors import AWS_SERVICE_AGENT, agent_family_sql, identity_sql
from cloudir.analyze.duck import quote_ident, sql_str
from cloudir.analyze.schema import PROMOTED_FROM, promoted_column

DISCOVERY_BUCKET_SECONDS = 600
DISCOVERY_FACTOR = 3
DISCOVERY_MIN_BUCKETS = 4
NEW_ADDRESS_SECONDS = 3600
DENIED = (
    "AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation",
    "UnauthorizedOperation", "Client.AccessDenied",
)  # fmt: skip
CLOUDTRAIL = "artifact = 'aws:cloudtrail'"


@dataclass(frozen=True)
class FactSources:
    """Where a computed field's facts are read from.

    `rows` is the timeline (or a part of it). `rare` holds at least its rows that
    rare_rows_sql selects, with RARE_COLUMNS, the few calls whose `raw` some facts read
    (group membership changes, Lambda deploys, instance launches): detect's DuckDB path
    reads them into a small table once, so the timeline's `raw`, which every reference
    makes DuckDB decompress whole, is read by one statement instead of one per field.
    `typed` says every CloudTrail row of `rows` has promoted columns: then no other fact
    reads `raw`.
    """

    rows: str = "timeline"
    rare: str = "timeline"
    typed: bool = False


@dataclass(frozen=True)
class Context:
    """A computed field that needs the whole timeline: an aggregate joined to each row.

    The aggregate is written in two steps so that it can be computed in pieces: `partial`
    reads rows of `timeline` into grouped facts, and `final` groups those facts again
    (min of minimums, sums of counts, distinct of distincts) into the table the scan joins.
    Over the whole timeline at once (the DuckDB path) `final(partial)` is the aggregate;
    over each part of the timeline on its own (Spark, one part per task) the union of the
    parts' `partial` rows gives `final` the same input facts, so the same table.
    """

    column: str  # the scan's column holding the field's value
    alias: str  # the joined table's name in the scan
    partial: Callable[[FactSources], str]  # SELECT over the sources: grouped facts
    final: Callable[[str], str]  # relation of partial rows -> the table the scan joins
    on: Callable[[Any], str]  # FieldPlan -> the join condition
    value: Callable[[Any], str]  # FieldPlan -> the value's SQL over the row and the join

    def table_sql(self) -> str:
        """The joined table over the whole timeline, in one statement."""
        return self.final(f"({self.partial(FactSources())})")

    def join(self, plan: Any, table: str | None = None) -> str:
        """The LEFT JOIN of the scan: to the aggregate, or to `table` already holding it."""
        source = table if table is not None else f"({self.table_sql()})"
        return f"LEFT JOIN {source} {self.alias} ON {self.on(plan)}"


ROW_FIELDS = ("cloudir.api_family", "cloudir.query_domain")
# Rows whose `target` is a DNS query name (without the root's trailing dot).
DNS_ARTIFACTS = ("aws:route53_resolver",)
# A two-letter country code's second level that registries sell names under (co.uk).
COUNTRY_SECOND_LEVEL = r"([^.]+\.(?:co|com|net|org|gov|edu|ac|or|ne|go)\.[^.]{2})$"
LAST_TWO_LABELS = r"([^.]+\.[^.]+)$"


def is_computed(field_name: str) -> bool:
    """A computed field cloudir knows: a single value per row (no any-element fallback)."""
    return field_name in ROW_FIELDS or field_name in CONTEXTS


def field_sql(plan: Any, field_name: str) -> str | None:
    """The SQL of a computed field (registering its join on the plan), None if unknown.

    An unknown `cloudir.` name is read as a raw path as before (it has no value): a
    community rule's field of that name keeps working.
    """
    if field_name == "cloudir.api_family":
        return _api_family(plan)
    if field_name == "cloudir.query_domain":
        return _query_domain()
    context = CONTEXTS.get(field_name)
    if context is None:
        return None
    if field_name not in plan.context:
        context.on(plan)  # plans the raw paths they read now, before the scan is built
        context.value(plan)
        plan.context[field_name] = context
    return context.column


def _raw(plan: Any, path: str) -> str:
    """A field's value in a join condition or a computed value: evaluated outside the
    rules, so on rows with promoted columns a non-promoted field reads `raw` itself (the
    scan's `_f` is there only where a rule needs it; FieldPlan.typed_reads)."""
    return str(plan.typed_reads(plan.value_sql(tuple(path.split(".")))))


def _api_family(plan: Any) -> str:
    source, name = _raw(plan, "eventSource"), _raw(plan, "eventName")
    verb = f"NULLIF(regexp_extract({name}, '^[A-Za-z][a-z]*'), '')"
    return f"lower({source} || ':' || {verb})"


def _query_domain() -> str:
    """Columns only (artifact, target): no JSON is read for it."""
    name = "lower(target)"
    artifacts = ", ".join(sql_str(a) for a in DNS_ARTIFACTS)
    country = f"NULLIF(regexp_extract({name}, {sql_str(COUNTRY_SECOND_LEVEL)}, 1), '')"
    two = f"NULLIF(regexp_extract({name}, {sql_str(LAST_TWO_LABELS)}, 1), '')"
    return f"(CASE WHEN artifact IN ({artifacts}) THEN COALESCE({country}, {two}) END)"


def _is_address(value: str) -> str:
    """IPv4 (cloudir_ipv4 macro) or IPv6 (cidr_match, a Python UDF: only on the few values
    with a colon; CASE, because a projection evaluates both sides of an AND)."""
    return (
        f"(CASE WHEN cloudir_ipv4({value}) IS NOT NULL THEN true "
        f"WHEN contains({value}, ':') THEN COALESCE(cidr_match({value}, '::/0'), false) "
        "ELSE false END)"
    )


# -- cloudir.key_new_address ------------------------------------------------------------------


def _key(plan: Any) -> str:
    return _raw(plan, "userIdentity.accessKeyId")


def _promoted_or_raw_when(sources: FactSources, holds: str | None, *paths: str) -> str:
    """The paths' values as a list: from the promoted columns of a row that has them (no
    parse), else from `raw` (only where `raw` contains `holds`, when given). For the
    facts' reads of the timeline, outside the scan; with `sources.typed`, no reference to
    `raw` at all, so DuckDB does not read it."""
    columns = ", ".join(quote_ident(promoted_column(path)) for path in paths)
    if sources.typed:
        return f"[{columns}]"
    reads = ", ".join(sql_str("$." + path) for path in paths)
    when = f"contains(raw, {holds})" if holds else "true"
    return (
        f"CASE WHEN {PROMOTED_FROM} IS NOT NULL THEN [{columns}] "
        f"WHEN {when} THEN json_extract_string(raw, [{reads}]) END"
    )


def _key_partial(sources: FactSources) -> str:
    key = _promoted_or_raw_when(sources, "'\"AKIA'", "userIdentity.accessKeyId")
    return f"""SELECT k AS _ck_key, ip AS _ck_ip, min(timestamp) AS _ck_first FROM (
            SELECT timestamp, lower(src_ip) AS ip, ({key})[1] AS k
            FROM {sources.rows} WHERE {CLOUDTRAIL}
        ) WHERE starts_with(k, 'AKIA') AND ip IS NOT NULL GROUP BY ALL"""


def _key_final(partial: str) -> str:
    return f"""SELECT _ck_key, _ck_ip, _ck_first,
            min(_ck_first) OVER (PARTITION BY _ck_key) AS _ck_key_first
        FROM (SELECT _ck_key, _ck_ip, min(_ck_first) AS _ck_first FROM {partial} GROUP BY ALL)"""


def _key_on(plan: Any) -> str:
    return f"_ck_key = {_key(plan)} AND _ck_ip = lower(src_ip)"


def _key_value(plan: Any) -> str:
    fresh = f"epoch(timestamp) - epoch(_ck_first) <= {NEW_ADDRESS_SECONDS}"
    return (
        f"CASE WHEN {CLOUDTRAIL} AND starts_with({_key(plan)}, 'AKIA') AND src_ip IS NOT NULL "
        f"THEN CAST(_ck_key_first < _ck_first AND {fresh} AS VARCHAR) END"
    )


# -- cloudir.key_new_agent_family -------------------------------------------------------------


def _agent_partial(sources: FactSources) -> str:
    # the promoted columns, else one parse of `raw` for both values, and only of the rows
    # that may hold a key: the others are dropped (k is NULL), so their agent is not needed
    values = _promoted_or_raw_when(sources, "'\"AKIA'", "userAgent", "userIdentity.accessKeyId")
    return f"""SELECT k AS _ca_key, ua AS _ca_agent, min(timestamp) AS _ca_seen FROM (
            SELECT timestamp, v[1] AS ua, v[2] AS k FROM (
                SELECT timestamp, {values} AS v FROM {sources.rows} WHERE {CLOUDTRAIL})
        ) WHERE starts_with(k, 'AKIA') GROUP BY ALL"""


def _agent_final(partial: str) -> str:
    """Joined on the key and the exact user agent, so the family (two dozen ILIKEs) is
    worked out once per distinct (key, agent) of the case, not on every row of the scan."""
    family = agent_family_sql("_ca_agent")
    return f"""SELECT _ca_key, _ca_agent,
            min(_ca_seen) OVER (PARTITION BY _ca_key, _ca_family) AS _ca_first,
            min(_ca_seen) OVER (PARTITION BY _ca_key) AS _ca_key_first
        FROM (
            SELECT _ca_key, _ca_agent, {family} AS _ca_family, _ca_seen FROM (
                SELECT _ca_key, _ca_agent, min(_ca_seen) AS _ca_seen FROM {partial} GROUP BY ALL
            )
        ) WHERE _ca_family IS NOT NULL AND _ca_family <> '{AWS_SERVICE_AGENT}'"""


def _agent_on(plan: Any) -> str:
    return f"_ca_key = {_key(plan)} AND _ca_agent = {_raw(plan, 'userAgent')}"


def _agent_value(plan: Any) -> str:
    """A row of a key with a family joins its own (key, agent) pair: the case holds it."""
    fresh = f"epoch(timestamp) - epoch(_ca_first) <= {NEW_ADDRESS_SECONDS}"
    return (
        f"CASE WHEN {CLOUDTRAIL} AND starts_with({_key(plan)}, 'AKIA') AND _ca_key IS NOT NULL "
        f"THEN CAST(_ca_key_first < _ca_first AND {fresh} AS VARCHAR) END"
    )


# -- cloudir.caller_in_group ------------------------------------------------------------------

# The rows the field has a value on: an IAM user's CloudTrail call naming a group.
_GROUP_CALL = "requestParameters.groupName"
_GROUP_CHANGES = ("iam.amazonaws.com:AddUserToGroup", "iam.amazonaws.com:RemoveUserFromGroup")


def _membership_key(account: str, group: str, user: str) -> str:
    """IAM names are unique regardless of case: AddUserToGroup on `Admins` is `admins`."""
    return f"lower({account} || '/' || {group} || '/' || {user})"


def _group_rows(plan: Any) -> str:
    return (
        f"{CLOUDTRAIL} AND {_raw(plan, 'userIdentity.type')} = 'IAMUser' "
        f"AND {_raw(plan, _GROUP_CALL)} IS NOT NULL"
    )


def _group_partial(sources: FactSources) -> str:
    """Each (account, group, user)'s membership changes, one per second.

    Changes in the same second are one change, a removal winning: which came first is not
    known, and "not a member" is the answer that claims less.
    """
    read = "json_extract_string(raw, '$.{}')".format
    change = _membership_key(
        read("recipientAccountId"), read("requestParameters.groupName"),
        read("requestParameters.userName"),
    )  # fmt: skip
    return f"""SELECT {change} AS _cg_key, timestamp AS _cg_time,
            bool_and(action = 'iam.amazonaws.com:AddUserToGroup') AS _cg_member
        FROM {sources.rare} WHERE {CLOUDTRAIL} AND outcome = 'success' AND action IN (
            {_in(_GROUP_CHANGES)})
        GROUP BY ALL HAVING _cg_key IS NOT NULL"""


def _group_final(partial: str) -> str:
    """The changes as one list per key, in time order. (A list, not an ASOF join: that
    sorts every row of the scan; this join matches only the few calls naming a group.)"""
    return f"""SELECT _cg_key, list({{'at': _cg_time, 'member': _cg_member}} ORDER BY _cg_time)
            AS _cg_changes
        FROM (
            SELECT _cg_key, _cg_time, bool_and(_cg_member) AS _cg_member
            FROM {partial} GROUP BY ALL
        ) GROUP BY _cg_key"""


def _group_on(plan: Any) -> str:
    row = _membership_key(
        _raw(plan, "recipientAccountId"), _raw(plan, _GROUP_CALL),
        _raw(plan, "userIdentity.userName"),
    )  # fmt: skip
    return f"_cg_key = CASE WHEN {_group_rows(plan)} THEN {row} END"


def _group_value(plan: Any) -> str:
    last = "(list_filter(_cg_changes, lambda c: c.at < timestamp))[-1].member"
    return f"CASE WHEN {_group_rows(plan)} THEN CAST(COALESCE({last}, false) AS VARCHAR) END"


# -- cloudir.instance_address -----------------------------------------------------------------

_INSTANCE_CALLS = ("ec2.amazonaws.com:RunInstances", "ec2.amazonaws.com:AssociateAddress")
# Keys of RunInstances' responseElements that hold one of the instance's addresses, at any
# depth of an instance item (the instance, its network interfaces, their associations).
_ADDRESS_KEYS = "privateIpAddress|ipAddress|publicIp|ipv6Address"
INSTANCE_ROWS = f"{CLOUDTRAIL} AND starts_with(host, 'i-')"


def _instance_partial(sources: FactSources) -> str:
    """The three sources of an instance's addresses read a materialised CTE of the few
    rows they need (`raw` only of RunInstances and AssociateAddress, from `sources.rare`;
    the user agent of instance profile calls), each then selecting its own rows from it
    exactly as from the timeline."""
    calls = _in(_INSTANCE_CALLS)
    user_agent = _promoted_or_raw_when(sources, None, "userAgent")
    agents = f"CASE WHEN {INSTANCE_ROWS} THEN ({user_agent})[1] END AS ua"
    if sources.rare == sources.rows:
        rows = f"""SELECT artifact, action, host, src_ip,
                CASE WHEN action IN ({calls}) THEN raw END AS raw, {agents}
            FROM {sources.rows} WHERE {CLOUDTRAIL} AND (action IN ({calls}) OR {INSTANCE_ROWS})"""
    else:  # a call both launching and made by an instance is in both: each reads its own
        rows = f"""SELECT artifact, action, host, src_ip, NULL AS raw, {agents}
            FROM {sources.rows} WHERE {INSTANCE_ROWS}
            UNION ALL SELECT artifact, action, host, src_ip, raw, NULL AS ua
            FROM {sources.rare} WHERE {CLOUDTRAIL} AND action IN ({calls})"""
    launched = f"""SELECT json_extract_string(item, '$.instanceId') AS instance,
            unnest(regexp_extract_all(CAST(item AS VARCHAR),
                '"(?:{_ADDRESS_KEYS})"\\s*:\\s*"([^"]+)"', 1)) AS address
        FROM (SELECT unnest(json_extract(raw, '$.responseElements.instancesSet.items[*]')) AS item
              FROM _ci_rows WHERE {CLOUDTRAIL} AND action = 'ec2.amazonaws.com:RunInstances')"""
    associated = f"""SELECT json_extract_string(raw, '$.requestParameters.instanceId'),
            json_extract_string(raw, '$.requestParameters.publicIp')
        FROM _ci_rows WHERE {CLOUDTRAIL} AND action = 'ec2.amazonaws.com:AssociateAddress'"""
    agent = f"""SELECT host, src_ip FROM _ci_rows WHERE {INSTANCE_ROWS}
        AND ua ILIKE '%amazon-ssm-agent%'
        AND {_is_address("src_ip")}"""
    return f"""WITH _ci_rows AS MATERIALIZED ({rows})
        SELECT DISTINCT lower(instance) AS _ci_instance, lower(trim(address)) AS _ci_address
        FROM ({launched} UNION ALL {associated} UNION ALL {agent})
        WHERE instance IS NOT NULL AND address IS NOT NULL"""


def _instance_final(partial: str) -> str:
    return f"""SELECT _ci_instance, list(DISTINCT _ci_address) AS _ci_addresses
        FROM {partial} GROUP BY 1"""


def _instance_on(plan: Any) -> str:
    return f"_ci_instance = CASE WHEN {INSTANCE_ROWS} THEN lower(host) END"


def _instance_value(plan: Any) -> str:
    invoked_by = _raw(plan, "userIdentity.invokedBy")
    return f"""CASE WHEN {INSTANCE_ROWS} THEN CASE
        WHEN {invoked_by} IS NOT NULL OR src_ip IS NULL OR NOT {_is_address("src_ip")}
            THEN 'service'
        WHEN _ci_addresses IS NULL THEN 'unknown'
        WHEN list_contains(_ci_addresses, lower(trim(src_ip))) THEN 'own'
        ELSE 'outside' END END"""


# -- cloudir.lambda_new_deployer --------------------------------------------------------------

# CreateFunction20150331, UpdateFunctionCode20150331v2, ... (not CreateFunctionUrlConfig)
_DEPLOY_ACTION = r"^lambda\.amazonaws\.com:(CreateFunction|UpdateFunctionCode)[0-9v_]*$"
DEPLOY_ROWS = f"{CLOUDTRAIL} AND user IS NOT NULL AND regexp_matches(action, '{_DEPLOY_ACTION}')"


def _function_key(account: str, region: str, function: str) -> str:
    """The function a deploy names: a name, a partial ARN (`123456789012:function:name`) or a
    full ARN all end in the name after the last colon (UpdateFunctionCode takes no
    qualifier). Names are case-sensitive in Lambda; the account and region are the call's."""
    return f"({account} || '/' || {region} || '/' || regexp_extract({function}, '([^:]+)$', 1))"


def _deploy_partial(sources: FactSources) -> str:
    read = "json_extract_string(raw, '$.{}')".format
    function = _function_key(
        read("recipientAccountId"), read("awsRegion"), read("requestParameters.functionName")
    )
    return f"""SELECT {function} AS _cl_function, {identity_sql("user")} AS _cl_principal,
            min(timestamp) AS _cl_first
        FROM {sources.rare} WHERE {DEPLOY_ROWS} AND outcome = 'success'
        GROUP BY ALL HAVING _cl_function IS NOT NULL"""


def _deploy_final(partial: str) -> str:
    return f"""SELECT _cl_function, _cl_principal, _cl_first,
            min(_cl_first) OVER (PARTITION BY _cl_function) AS _cl_function_first
        FROM (SELECT _cl_function, _cl_principal, min(_cl_first) AS _cl_first
              FROM {partial} GROUP BY ALL)"""


def _deploy_on(plan: Any) -> str:
    function = _function_key(
        _raw(plan, "recipientAccountId"), _raw(plan, "awsRegion"),
        _raw(plan, "requestParameters.functionName"),
    )  # fmt: skip
    return (
        f"_cl_function = CASE WHEN {DEPLOY_ROWS} THEN {function} END "
        f"AND _cl_principal = {identity_sql('user')}"
    )


def _deploy_value(plan: Any) -> str:
    """A call of a principal that never deployed the function successfully joins nothing:
    `false` (it changed nothing)."""
    fresh = (
        f"timestamp >= _cl_first AND epoch(timestamp) - epoch(_cl_first) <= {NEW_ADDRESS_SECONDS}"
    )
    return (
        f"CASE WHEN {DEPLOY_ROWS} THEN CAST(COALESCE(_cl_function_first < _cl_first AND {fresh}, "
        "false) AS VARCHAR) END"
    )


# -- cloudir.discovery_unusual ----------------------------------------------------------------

_VERB = "regexp_extract(split_part(action, ':', 2), '^(List|Describe|Get)', 1)"
DISCOVERY_ROWS = f"{CLOUDTRAIL} AND user IS NOT NULL AND {_VERB} <> ''"
_BUCKET = f"floor(epoch(timestamp) / {DISCOVERY_BUCKET_SECONDS})"


def _discovery_partial(sources: FactSources) -> str:
    return f"""SELECT user AS _cd_user, {_BUCKET} AS _cd_bucket,
            lower(split_part(action, ':', 2)) AS _cd_call
        FROM {sources.rows} WHERE {DISCOVERY_ROWS} GROUP BY ALL"""


def _discovery_final(partial: str) -> str:
    return f"""SELECT _cd_user, _cd_bucket,
            count(*) OVER (PARTITION BY _cd_user) < {DISCOVERY_MIN_BUCKETS}
            OR n >= {DISCOVERY_FACTOR} * median(n) OVER (PARTITION BY _cd_user) AS _cd_unusual
        FROM (
            SELECT _cd_user, _cd_bucket, count(DISTINCT _cd_call) AS n
            FROM {partial} GROUP BY ALL
        )"""


def _discovery_on(plan: Any) -> str:
    return f"_cd_user = CASE WHEN {DISCOVERY_ROWS} THEN user END AND _cd_bucket = {_BUCKET}"


def _discovery_value(plan: Any) -> str:
    return f"CASE WHEN {DISCOVERY_ROWS} THEN CAST(_cd_unusual AS VARCHAR) END"


# -- cloudir.family_failing -------------------------------------------------------------------


def _action_family(action: str) -> str:
    """cloudir.api_family of the SQL `action` (a timeline `action` value)."""
    return (
        f"lower(split_part({action}, ':', 1) || ':' || "
        f"NULLIF(regexp_extract(split_part({action}, ':', 2), '^[A-Za-z][a-z]*'), ''))"
    )


FAMILY_ROWS = f"{CLOUDTRAIL} AND user IS NOT NULL"


def _family_partial(sources: FactSources) -> str:
    """Counts per (principal, action, bucket): the family is a function of the action, so
    `final` derives it for these few rows, not for each of the timeline's (its regexp
    over 4.75M rows cost 0.43 s, the whole grouping 0.2 s)."""
    codes = ", ".join(f"'{code}'" for code in DENIED)
    return f"""SELECT user AS _cf_user, action AS _cf_action, {_BUCKET} AS _cf_bucket,
            count(*) FILTER (WHERE outcome IN ({codes})) AS _cf_denied, count(*) AS _cf_calls
        FROM {sources.rows} WHERE {FAMILY_ROWS} GROUP BY ALL"""


def _family_final(partial: str) -> str:
    """One row per (principal, action, bucket) with its family's verdicts in the bucket
    and in the case: the scan joins on the action itself, so no row of it computes the
    family. An action without a family (no leading word) gets no row, as a NULL family
    never joined."""
    return f"""WITH _cf_facts AS MATERIALIZED (
            SELECT _cf_user, _cf_action, _cf_bucket, {_action_family("_cf_action")} AS _cf_family,
                sum(_cf_denied) AS _cf_denied, sum(_cf_calls) AS _cf_calls
            FROM {partial} GROUP BY _cf_user, _cf_action, _cf_bucket
        ), _cf_buckets AS (
            SELECT _cf_user, _cf_family, _cf_bucket, _cf_failing,
                bool_or(_cf_failing) OVER (PARTITION BY _cf_user, _cf_family) AS _cf_any
            FROM (
                SELECT _cf_user, _cf_family, _cf_bucket,
                    2 * sum(_cf_denied) >= sum(_cf_calls) AS _cf_failing
                FROM _cf_facts WHERE _cf_family IS NOT NULL
                GROUP BY _cf_user, _cf_family, _cf_bucket
            )
        )
        SELECT f._cf_user, f._cf_action, f._cf_bucket, b._cf_failing, b._cf_any
        FROM _cf_facts f JOIN _cf_buckets b
          ON f._cf_user = b._cf_user AND f._cf_family = b._cf_family
         AND f._cf_bucket = b._cf_bucket"""


def _family_on(plan: Any) -> str:
    return (
        f"_cf_user = CASE WHEN {FAMILY_ROWS} THEN user END "
        f"AND _cf_action = action AND _cf_bucket = {_BUCKET}"
    )


def _family_value(plan: Any) -> str:
    return f"""CASE WHEN {FAMILY_ROWS} THEN CASE
        WHEN _cf_failing THEN 'bucket' WHEN _cf_any THEN 'case' ELSE 'no' END END"""


CONTEXTS: dict[str, Context] = {
    "cloudir.family_failing": Context(
        "_c_family_failing", "_cf", _family_partial, _family_final, _family_on, _family_value
    ),
    "cloudir.key_new_address": Context(
        "_c_key_new_address", "_ck", _key_partial, _key_final, _key_on, _key_value
    ),
    "cloudir.key_new_agent_family": Context(
        "_c_key_new_agent_family", "_ca", _agent_partial, _agent_final, _agent_on, _agent_value
    ),
    "cloudir.caller_in_group": Context(
        "_c_caller_in_group", "_cg", _group_partial, _group_final, _group_on, _group_value
    ),
    "cloudir.instance_address": Context(
        "_c_instance_address",
        "_ci",
        _instance_partial,
        _instance_final,
        _instance_on,
        _instance_value,
    ),
    "cloudir.lambda_new_deployer": Context(
        "_c_lambda_new_deployer", "_cl", _deploy_partial, _deploy_final, _deploy_on, _deploy_value
    ),
    "cloudir.discovery_unusual": Context(
        "_c_discovery_unusual",
        "_cd",
        _discovery_partial,
        _discovery_final,
        _discovery_on,
        _discovery_value,
    ),
}


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(sql_str(v) for v in values)


# The fields whose facts read FactSources.rare.
RARE_READERS = frozenset(
    {"cloudir.caller_in_group", "cloudir.instance_address", "cloudir.lambda_new_deployer"}
)


# The columns those facts read of FactSources.rare: all of the timeline's cost a third
# more to read at 5M rows (2.3 s, against 1.5 s; `raw` is most of either).
RARE_COLUMNS = ("artifact", "action", "outcome", "timestamp", "user", "host", "src_ip", "raw")


def rare_rows_sql() -> str:
    """The timeline rows FactSources.rare must hold: the CloudTrail calls whose `raw` the
    facts of caller_in_group, instance_address and lambda_new_deployer read."""
    columns = ", ".join(quote_ident(c) for c in RARE_COLUMNS)
    return f"""SELECT {columns} FROM timeline WHERE {CLOUDTRAIL} AND (
        action IN ({_in(_GROUP_CHANGES + _INSTANCE_CALLS)})
        OR regexp_matches(action, '{_DEPLOY_ACTION}'))"""


def with_context(scan: str, plan: Any, tables: dict[str, str] | None = None) -> str:
    """The scan with the columns of the computed fields in use, each joined once: to its
    aggregate, or to the table named in `tables` (field name -> table) that holds it."""
    if not plan.context:
        return scan
    tables = tables or {}
    used = [(name, CONTEXTS[name]) for name in sorted(plan.context)]
    joins = " ".join(context.join(plan, tables.get(name)) for name, context in used)
    values = ", ".join(f"{context.value(plan)} AS {context.column}" for _, context in used)
    return f"SELECT _s.*, {values} FROM ({scan}) _s {joins}"
