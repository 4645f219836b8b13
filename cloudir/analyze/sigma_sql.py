"""Sigma conditions to DuckDB SQL: a DuckDB flavour of pySigma's SQLite backend.

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

import ipaddress
import itertools
import json
import re
from typing import Any, ClassVar

from cloudir.analyze.schema import COLUMN_NAMES

ELEMENT = "cloudir_element"  # the lambda parameter of the array fallback

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
        return {
            sql: name
            for sql, name in self.lower_columns.items()
            if self.lower_uses.get(name, 0) >= SHARED_LOWER_USES
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

    def scan_sql(self, table: str) -> str:
        """The rows as rules see them: raw parsed once by json_transform, then the
        lower-cased values many rules compare."""
        columns = ["*"]
        if self.tree:
            columns.append(f"json_transform(raw, {sql_str(json.dumps(self.tree))}) AS _f")
        parsed = f"SELECT {', '.join(columns)} FROM {table}"
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


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cidr_match(address: str | None, network: str) -> bool | None:
    """DuckDB UDF: is `address` inside `network`? DuckDB's inet extension is not built in."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address.strip()) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False  # not an address (a service name such as "ec2.amazonaws.com")


# Exactly the dotted quads Python's ipaddress accepts (no leading zeros), as an integer.
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_MACRO = f"""CREATE OR REPLACE TEMP MACRO cloudir_ipv4(a) AS CASE
    WHEN regexp_full_match(trim(a), '{_OCTET}\\.{_OCTET}\\.{_OCTET}\\.{_OCTET}') THEN
        (split_part(trim(a), '.', 1)::UBIGINT << 24) + (split_part(trim(a), '.', 2)::UBIGINT << 16)
        + (split_part(trim(a), '.', 3)::UBIGINT << 8) + split_part(trim(a), '.', 4)::UBIGINT
    END"""


def register_functions(con: Any) -> None:
    con.execute(IPV4_MACRO).fetchall()
    con.create_function(
        "cidr_match", cidr_match, ["VARCHAR", "VARCHAR"], "BOOLEAN", null_handling="special"
    )


def _plain(value: Any) -> str:
    """The literal text of a SigmaString without wildcards (to_plain() re-escapes `*`)."""
    return "".join(part for part in value.s if isinstance(part, str))


class _InList:
    """Marks the element form of an IN list while its fallback is generated."""

    def __init__(self, field_name: str) -> None:
        self.field = field_name


def backend_class() -> type:
    """Built on first use: pySigma is only imported by the commands that run rules."""
    from sigma.backends.sqlite import sqliteBackend
    from sigma.conditions import ConditionFieldEqualsValueExpression
    from sigma.conversion.state import ConversionState
    from sigma.types import (
        SigmaCasedString,
        SigmaExists,
        SigmaFieldReference,
        SigmaNull,
        SigmaString,
    )

    class DuckDBBackend(sqliteBackend):
        identifier: ClassVar[str] = "cloudir-duckdb"
        name: ClassVar[str] = "cloudir DuckDB backend"
        wildcard_match_expression: ClassVar[str] = "{field} ILIKE '{value}' ESCAPE '\\'"
        contains_expression: ClassVar[str] = "{field} ILIKE '%{value}%' ESCAPE '\\'"
        eq_expression: ClassVar[str] = "{field} ILIKE {value}"
        re_expression: ClassVar[str] = "regexp_matches({field}, '{regex}')"
        bool_expression: ClassVar[str] = "lower({field}) = {value}"
        null_safe_expression: ClassVar[str] = "COALESCE({expr}, false)"
        compare_op_expression: ClassVar[str] = "TRY_CAST({field} AS DOUBLE) {operator} {value}"
        # fieldref: Sigma compares case-insensitively, like every other string match
        field_equals_field_expression: ClassVar[str] = "lower({field1}) = lower({field2})"
        field_equals_field_startswith_expression: ClassVar[str] = (
            sqliteBackend.field_equals_field_startswith_expression.replace(" LIKE ", " ILIKE ")
        )
        field_equals_field_endswith_expression: ClassVar[str] = (
            sqliteBackend.field_equals_field_endswith_expression.replace(" LIKE ", " ILIKE ")
        )
        field_equals_field_contains_expression: ClassVar[str] = (
            sqliteBackend.field_equals_field_contains_expression.replace(" LIKE ", " ILIKE ")
        )
        timestamp_seconds_expression = "epoch({field})"
        event_id_field = "event_id"
        table = "timeline"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fields = FieldPlan()
            self._element_of: str | None = None
            self._in_values = ""

        def field_sql(self, field_name: str) -> str:
            """A timeline column, or the value at a raw JSON path (NULL when absent)."""
            if field_name in COLUMN_NAMES:
                return quote_ident(field_name)
            return self.fields.value_sql(tuple(field_name.split(".")))

        def escape_and_quote_field(self, field_name: str) -> str:
            if self._element_of is not None and field_name == self._element_of:
                return ELEMENT
            return self.field_sql(field_name)

        def resolve_table(self, state: Any = None) -> str:
            return "timeline"

        def convert_condition_field_eq_val(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> Any:
            """Scalar test, plus the any-element fallback for raw fields holding arrays."""
            scalar = super().convert_condition_field_eq_val(cond, state)
            if (
                self._element_of is not None  # already generating the element form
                or not isinstance(cond.field, str)
                or isinstance(cond.value, SigmaNull | SigmaExists | SigmaFieldReference)
                or not isinstance(scalar, str)
            ):
                return scalar
            return self._with_elements(cond.field, scalar, state, cond)

        def _with_elements(self, field_name: str, scalar: str, state: Any, cond: Any) -> str:
            if field_name in COLUMN_NAMES or field_name in SCALAR_FIELDS:
                return scalar
            self._element_of = field_name
            try:
                each = self.convert_condition(cond, state)
            finally:
                self._element_of = None
            parts = tuple(field_name.split("."))
            guard, values = self.fields.element_values(parts, self.field_sql(field_name))
            each_value = f"list_bool_or(list_transform({values}, lambda {ELEMENT}: {each}))"
            return (
                f"CASE WHEN {scalar} THEN true "
                f"WHEN {guard} THEN COALESCE({each_value}, false) ELSE false END"
            )

        def convert_condition_or(self, cond: Any, state: ConversionState) -> Any:
            """`field: [a, b, c]` of plain strings: one `lower(field) IN (...)`, not n ILIKEs."""
            args = cond.args
            if (
                self._element_of is None
                and len(args) > 1
                and all(isinstance(a, ConditionFieldEqualsValueExpression) for a in args)
                and len({a.field for a in args}) == 1
                and isinstance(args[0].field, str)
                and all(
                    isinstance(a.value, SigmaString)
                    and not isinstance(a.value, SigmaCasedString)
                    and not a.value.contains_special()
                    for a in args
                )
            ):
                field_name = args[0].field
                values = ", ".join(sql_str(_plain(a.value).lower()) for a in args)
                self._in_values = values
                scalar = f"{self._lower(field_name)} IN ({values})"
                return self._with_elements(field_name, scalar, state, _InList(field_name))
            return self._lazy(cond, state, conjunction=False)

        def convert_condition_and(self, cond: Any, state: ConversionState) -> Any:
            return self._lazy(cond, state, conjunction=True)

        def _lazy(self, cond: Any, state: ConversionState, conjunction: bool) -> Any:
            """AND and OR as CASE chains, false for NULL as Sigma reads a missing field.

            DuckDB stops at the first deciding operand of an AND or OR only in a filter;
            in a projection (one column per rule) it evaluates every operand on every row.
            CASE evaluates a branch only on the rows that reach it, in both places.
            """
            args = [
                self.convert_condition(a, state)
                if self.compare_precedence(cond, a)
                else self.convert_condition_group(a, state)
                for a in cond.args
            ]
            args = [a for a in args if a is not None]
            if not args:
                return None
            if not conjunction:
                whens = " ".join(f"WHEN {a} THEN true" for a in args)
                return f"CASE {whens} ELSE false END"
            expr = f"CASE WHEN {args[-1]} THEN true ELSE false END"
            for arg in reversed(args[:-1]):
                expr = f"CASE WHEN {arg} THEN {expr} ELSE false END"
            return expr

        def convert_condition(self, cond: Any, state: ConversionState) -> Any:
            if isinstance(cond, _InList):
                return f"lower({ELEMENT}) IN ({self._in_values})"
            return super().convert_condition(cond, state)

        def convert_condition_field_eq_val_str(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> Any:
            """A plain value (no wildcard) compares lower-cased: cheaper than ILIKE."""
            value = cond.value
            if isinstance(value, SigmaCasedString) or value.contains_special():
                return super().convert_condition_field_eq_val_str(cond, state)
            return f"{self._lower(cond.field)} = {sql_str(_plain(value).lower())}"

        def _lower(self, field_name: str) -> str:
            if self._element_of is not None and field_name == self._element_of:
                return f"lower({ELEMENT})"
            return self.fields.lowered(self.field_sql(field_name))

        def convert_condition_field_eq_val_num(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> str:
            field_sql = self.escape_and_quote_field(cond.field)
            return f"TRY_CAST({field_sql} AS DOUBLE) = {cond.value.number}"

        def convert_condition_field_eq_val_cidr(
            self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
        ) -> str:
            """Real network math (IPv4 and IPv6), not string prefixes: see cidr_match."""
            network = cond.value.network
            value = self.escape_and_quote_field(cond.field)
            if network.version == 4:  # in SQL: no Python call per row
                low, high = int(network.network_address), int(network.broadcast_address)
                return f"cloudir_ipv4({value}) BETWEEN {low} AND {high}"
            test = f"cidr_match({value}, {sql_str(str(network))})"
            return f"CASE WHEN contains({value}, ':') THEN {test} ELSE false END"  # v6 only

        def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
            return query  # the bare predicate: detect.py builds the one scan around it

    return DuckDBBackend
