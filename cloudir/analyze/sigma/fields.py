"""Which raw JSON fields a rule set reads, and the SQL that reaches each one.

The rules are evaluated over `timeline` rows whose `raw` column is the source record as
JSON. Parsing that JSON is the cost that dominates (one `json_extract_string` per field per
row is twenty times a full scan), so every raw field a rule set uses is read by ONE
`json_transform` per row into a struct column `_f`, and rules compare struct members.

Sigma's any-element semantics for arrays (`requestParameters.eventSelectors.readWriteType`
where `eventSelectors` is a list) cannot be expressed by a struct whose shape is fixed in
advance, so each raw-field condition has an exact fallback: when the row holds an array on
that path, the values are gathered with DuckDB's `[*]` JSON paths and the condition is
applied to each (see FieldPlan.element_values). The fallback runs under CASE after the
rule's earlier conditions, so only the few rows that reach it pay for it.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from cloudir.analyze.duck import quote_ident, sql_str
from cloudir.analyze.sigma.context import with_context

# Fields the CloudTrail record format defines as single strings (or booleans), never
# arrays: they need no any-element fallback, which keeps the hottest comparisons of the
# rule set (eventSource, eventName, errorCode, userIdentity.type) a plain compare.
# https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html
SCALAR_FIELDS = frozenset(
    {
        "eventVersion", "eventTime", "eventSource", "eventName", "awsRegion",
        "sourceIPAddress", "userAgent", "errorCode", "errorMessage", "requestID", "eventID",
        "eventType", "apiVersion", "managementEvent", "readOnly", "recipientAccountId",
        "sharedEventID", "vpcEndpointId", "vpcEndpointAccountId", "eventCategory",
        "sessionCredentialFromConsole",
        "userIdentity.type", "userIdentity.principalId", "userIdentity.arn",
        "userIdentity.accountId", "userIdentity.accessKeyId", "userIdentity.userName",
        "userIdentity.invokedBy", "userIdentity.identityProvider",
        "userIdentity.credentialId", "userIdentity.onBehalfOf.userId",
        "userIdentity.sessionContext.attributes.creationDate",
        "userIdentity.sessionContext.attributes.mfaAuthenticated",
        "userIdentity.sessionContext.sessionIssuer.type",
        "userIdentity.sessionContext.sessionIssuer.principalId",
        "userIdentity.sessionContext.sessionIssuer.arn",
        "userIdentity.sessionContext.sessionIssuer.accountId",
        "userIdentity.sessionContext.sessionIssuer.userName",
        "userIdentity.sessionContext.sourceIdentity",
        "userIdentity.sessionContext.ec2RoleDelivery",
        "tlsDetails.tlsVersion", "tlsDetails.cipherSuite", "tlsDetails.clientProvidedHostHeader",
    }
)  # fmt: skip


# Fields no record holds, computed from the whole row by a runtime function. Rules name them
# like any field (`resourceGrant: public`); they are single values, never arrays.
VIRTUAL_FIELDS = {
    # "public" | "cross-account:<ids>" | "internal" | NULL: see cloudir/analyze/policy_grants.py
    "resourceGrant": "resource_grant(raw)",
}


class FieldPlan:
    """Which raw paths the rules read, and how each is reached in SQL.

    Paths become members of one struct (`_f`). DuckDB struct member names are
    case-insensitive and a member is either a leaf or a struct, so a path that would clash
    with one already planned (`userIdentity` beside `userIdentity.type`, `Name` beside
    `name`) is read with its own `json_extract_string` instead.
    """

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.direct: set[tuple[str, ...]] = set()
        self.lower_columns: dict[str, str] = {}
        self.lower_uses: dict[str, int] = {}
        # computed `cloudir.*` fields in use, joined to the scan (sigma/context.py)
        self.context: dict[str, Any] = {}

    def value_sql(self, parts: tuple[str, ...]) -> str:
        if parts in self.direct or not self._place(parts):
            self.direct.add(parts)
            return f"json_extract_string(raw, {sql_str(json_path(parts))})"
        return "_f." + ".".join(quote_ident(p) for p in parts)

    def _place(self, parts: tuple[str, ...]) -> bool:
        node = self.tree
        for depth, part in enumerate(parts):
            leaf = depth == len(parts) - 1
            existing = next((k for k in node if k.lower() == part.lower()), None)
            if existing is not None and existing != part:
                return False  # differs only by case from a planned member
            if existing is None:
                node[part] = "VARCHAR" if leaf else {}
            elif leaf and node[part] != "VARCHAR":
                return False  # already an intermediate struct
            elif not leaf and node[part] == "VARCHAR":
                return False  # already a leaf
            if not leaf:
                node = node[part]
        return True

    def lowered(self, value_sql: str) -> str:
        """lower(value), as a token that `resolve` turns into a shared column or inline call.

        A value many rules compare (eventName) is lower-cased once per row in the scan; a
        rarely used one stays inline, where AND short-circuits it for most rows.
        """
        name = self.lower_columns.setdefault(value_sql, f"_l{len(self.lower_columns)}")
        self.lower_uses[name] = self.lower_uses.get(name, 0) + 1
        return f"\x00{name}\x00"

    def shared_lowers(self) -> dict[str, str]:
        """The lowered values computed once per row for every row of the scan.

        Never a virtual field's: `resource_grant(raw)` is a Python function, costlier per
        row than the whole rest of the scan, and only rows that passed a rule's cheaper
        conditions (a policy event) may pay for it.
        """
        expensive = set(VIRTUAL_FIELDS.values())
        return {
            sql: name
            for sql, name in self.lower_columns.items()
            if self.lower_uses.get(name, 0) >= SHARED_LOWER_USES and sql not in expensive
        }

    def resolve(self, predicate: str) -> str:
        """Replace lower() tokens: shared columns by name, the others inline.

        Only tokens outside quoted literals and identifiers: a rule's value may hold the
        token's very characters (YAML writes NUL as "\\0"), and it stays a value.
        """
        shared = set(self.shared_lowers().values())
        inline = {name: sql for sql, name in self.lower_columns.items()}

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name is None:
                return match[0]  # a quoted literal or identifier, kept as it is
            return name if name in shared else f"lower({inline[name]})"

        return _LOWER_TOKEN.sub(replace, predicate)

    def element_values(self, parts: tuple[str, ...], value: str) -> tuple[str, str]:
        """A guard (is there an array on the path?) and every value at the path.

        An array leaf shows in the struct as JSON text starting with `[`; an array further
        up leaves the struct member NULL, and `json_type` over the prefixes tells it from
        an absent key. Both are evaluated inline, so only rows that passed the rule's
        earlier conditions pay for the extra parse. From the first array on, arrays may or
        may not nest, so the values are gathered with DuckDB's `[*]` paths for each choice
        of the later positions.
        """
        prefixes = [parts[:first] for first in range(1, len(parts))]
        tests = [f"starts_with({value}, '[')"]  # how json_transform renders an array leaf
        branches = [f"WHEN {tests[0]} THEN {_gather(parts, len(parts))}"]
        if prefixes:
            listed = ", ".join(sql_str(json_path(p)) for p in prefixes)
            has_array = f"list_contains(json_type(raw, [{listed}]), 'ARRAY')"
            # the leaf's key must be in the text at all: a substring test spares the parse
            has_key = f"contains(raw, {sql_str(json.dumps(parts[-1])[1:-1])})"
            tests.append(f"({value} IS NULL AND {has_key} AND {has_array})")
            branches = [
                f"WHEN json_type(raw, {sql_str(json_path(prefix))}) = 'ARRAY' "
                f"THEN {_gather(parts, len(prefix))}"
                for prefix in prefixes
            ] + branches
        return " OR ".join(tests), f"CASE {' '.join(branches)} END"

    def scan_sql(self, table: str, context_tables: dict[str, str] | None = None) -> str:
        """The rows as rules see them: raw parsed once by json_transform, then the
        lower-cased values many rules compare. The computed fields join their aggregates,
        or the tables in `context_tables` that already hold them (see context.Context)."""
        columns = ["*"]
        if self.tree:
            columns.append(f"json_transform(raw, {sql_str(json.dumps(self.tree))}) AS _f")
        parsed = with_context(f"SELECT {', '.join(columns)} FROM {table}", self, context_tables)
        lowered = [f"lower({sql}) AS {name}" for sql, name in self.shared_lowers().items()]
        return f"SELECT *, {', '.join(lowered)} FROM ({parsed})" if lowered else parsed


SHARED_LOWER_USES = 3
_LOWER_TOKEN = re.compile("'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\x00(_l[0-9]+)\x00")


def json_path(parts: tuple[str, ...], wildcards: frozenset[int] = frozenset()) -> str:
    """`$."a"."b"`; a position in `wildcards` (1-based) is followed by `[*]`."""
    keys = ['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts]
    return "$." + ".".join(k + ("[*]" if n in wildcards else "") for n, k in enumerate(keys, 1))


def _gather(parts: tuple[str, ...], first: int) -> str:
    """All values when position `first` is an array: [*] there, any subset after it."""
    later = range(first + 1, len(parts) + 1)
    reads = [
        f"json_extract_string(raw, {sql_str(json_path(parts, frozenset({first, *chosen})))})"
        for size in range(len(later) + 1)
        for chosen in itertools.combinations(later, size)
    ]
    return f"flatten([{', '.join(reads)}])"
