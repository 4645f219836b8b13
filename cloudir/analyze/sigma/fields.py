"""Which raw JSON fields a rule set reads, and the SQL that reaches each one.

The rules are evaluated over `timeline` rows whose `raw` column is the source record as
JSON. Parsing that JSON is the cost that dominates (one `json_extract_string` per field per
row is twenty times a full scan). The fields most rules compare are columns of their own
(schema.PROMOTED_FIELDS, filled when `promoted_from` is set), so a rule reads those
without any parse. On the other rows every raw field a rule set uses is read by ONE
`json_transform` per row into a struct column `_f`, and rules compare struct members. On a
row with promoted columns, a field that is not one of them is read from `raw` where the
rule reaches it, which the nested CASE of a rule's conditions keeps to the few rows that
passed its earlier ones (the promoted eventSource and eventName, mostly).

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
from cloudir.analyze.schema import PROMOTED_FIELDS, PROMOTED_FROM, promoted_column
from cloudir.analyze.sigma.context import with_context

PROMOTED = {tuple(path.split(".")): quote_ident(promoted_column(path)) for path in PROMOTED_FIELDS}
UNPROMOTED = f"{PROMOTED_FROM} IS NULL"  # the row's fields are only in `raw`

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
        # value_sql of a field read from `raw` on every row -> its `_f` member (for the
        # rows without promoted columns) and its read of `raw` (for the rows with them)
        # `_f` members of the non-promoted fields -> their paths
        self.raw_members: dict[str, tuple[str, ...]] = {}
        self.promoted_values: dict[str, str] = {}  # value_sql of a promoted field -> column
        self._nec: dict[str, str | None] = {}
        self._reach: dict[str, str | None] = {}

    def value_sql(self, parts: tuple[str, ...]) -> str:
        """The field's value on any row: its promoted column where the row has one, else
        its `_f` member (or its own read of `raw`, for a path the struct cannot hold)."""
        if parts in self.direct or not self._place(parts):
            self.direct.add(parts)
            return _read(parts)
        member = "_f." + ".".join(quote_ident(p) for p in parts)
        column = PROMOTED.get(parts)
        if column is None:
            self.raw_members[member] = parts
            return member
        value = f"(CASE WHEN {UNPROMOTED} THEN {member} ELSE {column} END)"
        self.promoted_values[value] = column
        return value

    def parsed_alone(self, value: str) -> bool:
        """Whether `value` (value_sql's) is a path the struct cannot hold, which each use
        reads with a parse of the record of its own."""
        return any(value == _read(parts) for parts in self.direct)

    def reads_raw(self, sql: str) -> bool:
        """Whether `sql` reads a field that rows with promoted columns hold only in `raw`
        (a member of `_f` that is not a promoted column's), lower-cased ones included."""
        if "\x00" in sql:
            sql = self.resolve(sql, shared=False)
        return any(member in sql for member in self.raw_members)

    def typed_reads(self, sql: str) -> str:
        """`sql` for any row, reading its non-promoted fields from `raw` where the row has
        promoted columns (and so may have no `_f`): for SQL evaluated on matched rows
        only, where one read of `raw` per field costs less than a parse of every row."""
        if not self.reads_raw(sql):
            return sql
        typed = sql
        for member, parts in sorted(self.raw_members.items(), key=lambda m: -len(m[0])):
            read = _read(parts)
            typed = typed.replace(member, f"(CASE WHEN {may_hold_key(parts[-1])} THEN {read} END)")
        return f"(CASE WHEN {UNPROMOTED} THEN {sql} ELSE {typed} END)"

    # Where a rule reads `raw` on rows with promoted columns. For each condition SQL the
    # conversion made: `nec`, a condition over promoted columns that holds wherever it is
    # true (None: none known), and `reach`, one that holds wherever it reads a
    # non-promoted field (None: anywhere; "false": it reads none). A conjunction's CASE
    # chain evaluates an operand only where the ones before it hold; a disjunction's
    # where they do not, which says nothing.

    def nec(self, sql: str) -> str | None:
        known = self._nec.get(sql, self._nec.get(_ungrouped(sql), _UNKNOWN))
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        return None if self.reads_raw(sql) else self.typed_sql(sql)

    def reach(self, sql: str) -> str | None:
        known = self._reach.get(sql, self._reach.get(_ungrouped(sql), _UNKNOWN))
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        return None if self.reads_raw(sql) else "false"

    def breadth(self, sql: str) -> int:
        """How many rows a condition on promoted columns may let through, coarsely: 0 if it
        holds only on some event names, 1 on some event sources, else 2 (see
        DuckDBBackend._lazy, which tests the narrow ones first)."""
        nec = self.nec(sql)
        if nec is None:
            return 2
        return next((n for n, column in enumerate(_NARROW_COLUMNS) if column in nec), 2)

    def note_and(self, sql: str, conditions: list[Any]) -> None:
        operands = [str(c) for c in conditions]
        necs = [self.nec(a) for a in operands]
        known = [n for n in necs if n is not None]
        self._nec[sql] = " AND ".join(f"({n})" for n in known) if known else None
        first = next((k for k, a in enumerate(operands) if self.reads_raw(a)), None)
        if first is None:
            self._reach[sql] = "false"
            return
        before = [n for n in necs[:first] if n is not None]
        reach, after = self.reach(operands[first]), necs[first]
        last = len(operands) == first + 1
        either = (
            reach
            if last
            else (None if reach is None or after is None else f"({reach}) OR ({after})")
        )
        parts = before + ([either] if either is not None else [])
        self._reach[sql] = " AND ".join(f"({n})" for n in parts) if parts else None

    def note_or(self, sql: str, conditions: list[Any]) -> None:
        operands = [str(c) for c in conditions]
        necs = [self.nec(a) for a in operands]
        self._nec[sql] = None if None in necs else " OR ".join(f"({n})" for n in necs)
        reaches = [r for r in (self.reach(a) for a in operands) if r != "false"]
        if not reaches:
            self._reach[sql] = "false"
        elif None in reaches:
            self._reach[sql] = None
        else:
            self._reach[sql] = " OR ".join(f"({r})" for r in reaches)

    def typed_sql(self, sql: str) -> str | None:
        """`sql` as it reads on a row with promoted columns, before `_f` exists: each
        promoted field as its column, lower() inline; None if it needs more than that,
        or reads `raw` (a gate evaluated on every CloudTrail row must stay cheap)."""
        sql = self.resolve(sql, shared=False)
        for value, column in self.promoted_values.items():
            sql = sql.replace(value, column)
        if "_f." in sql or "_c_" in sql or _READS_RAW.search(sql):
            return None
        return sql

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
        conditions (a policy event) may pay for it. Nor anything that reads `raw` (the
        record itself, a path read from it) or a log line's `message`: lower-casing or
        parsing every row's record costs more than reading it; the rules' tests of them
        stay behind their cheaper conditions.
        """
        expensive = {*VIRTUAL_FIELDS.values(), quote_ident("message")}
        return {
            sql: name
            for sql, name in self.lower_columns.items()
            if self.lower_uses.get(name, 0) >= SHARED_LOWER_USES
            and sql not in expensive
            and not _READS_RAW.search(sql)
        }

    def resolve(self, predicate: str, shared: bool = True, promoted: bool = False) -> str:
        """Replace lower() tokens: shared columns by name, the others inline.

        Only tokens outside quoted literals and identifiers: a rule's value may hold the
        token's very characters (YAML writes NUL as "\\0"), and it stays a value.

        `promoted`: for SQL evaluated only on rows that all have promoted columns (a
        CloudTrail rule where every CloudTrail row has them, detect.all_promoted): each
        promoted field is its column, and a shared lower-cased one its `_t` column
        (scan_sql's `promoted`). The CASE that picks column or `_f` member makes a flat
        copy of every row's value, where the column as read from Parquet is a
        dictionary: DuckDB lower-cases and compares a dictionary's few entries, not each
        row's (a tenth of the scan at 5M rows).
        """
        columns = set(self.shared_lowers().values()) if shared else set()
        inline = {name: sql for sql, name in self.lower_columns.items()}

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name is None:
                return match[0]  # a quoted literal or identifier, kept as it is
            if name not in columns:
                return f"lower({inline[name]})"
            return f"{name}_t" if promoted and inline[name] in self.promoted_values else name

        resolved = _LOWER_TOKEN.sub(replace, predicate)
        return self.promoted_reads(resolved) if promoted else resolved

    def promoted_reads(self, sql: str) -> str:
        """`sql` with each promoted field's value (the CASE of value_sql) as its column,
        outside quoted literals and identifiers; for rows that all have promoted columns."""
        if not self.promoted_values:
            return sql
        values = "|".join(re.escape(v) for v in sorted(self.promoted_values, key=len, reverse=True))
        pattern = re.compile(f"'(?:[^']|'')*'|({values})|\"(?:[^\"]|\"\")*\"")

        def replace(match: re.Match[str]) -> str:
            return self.promoted_values[match[1]] if match[1] else match[0]

        return pattern.sub(replace, sql)

    def element_values(self, parts: tuple[str, ...], value: str) -> tuple[str, str]:
        """A guard (may there be an array on the path?) and every value at the path (NULL
        where there is no array).

        An array leaf shows in the struct as JSON text starting with `[`; an array further
        up leaves the struct member NULL, and one `json_type` over the prefixes tells it
        from an absent key. Both are evaluated inline, so only rows that passed the rule's
        earlier conditions pay for the extra parse. From the first array on, arrays may or
        may not nest, so the values are gathered with DuckDB's `[*]` paths for each choice
        of the later positions. Each parse of the record counts: an array leaf four keys
        deep took 3.7 us a row while a branch per prefix parsed the record again to look
        for an array above it, 1.3 us now.
        """
        leaf_array = f"starts_with({value}, '[')"  # how json_transform renders an array leaf
        leaf_values = _gather(parts, len(parts))
        if len(parts) == 1:
            return leaf_array, f"CASE WHEN {leaf_array} THEN {leaf_values} END"
        listed = ", ".join(sql_str(json_path(parts[:first])) for first in range(1, len(parts)))
        # the leaf's key must be in the text at all: a substring test spares the parse. The
        # parse that finds the first array from the top is the values' own (one json_type
        # over every prefix): where there is none they are NULL, which no element matches
        upper_array = f"({value} IS NULL AND {may_hold_key(parts[-1])})"
        picks = " ".join(
            f"WHEN {first} THEN {_gather(parts, first)}" for first in range(1, len(parts))
        )
        values = (
            f"CASE WHEN {leaf_array} THEN {leaf_values} "
            f"ELSE CASE list_position(json_type(raw, [{listed}]), 'ARRAY') {picks} END END"
        )
        return f"{leaf_array} OR {upper_array}", values

    def scan_sql(
        self,
        table: str,
        context_tables: dict[str, str] | None = None,
        typed_parse: str | None = None,
        promoted: bool = False,
        used: str | None = None,
    ) -> str:
        """The rows as rules see them: raw parsed once by json_transform where the row has
        no promoted columns, or where `typed_parse` holds (some rule may read a field that
        is not promoted; see detect.raw_parse_gate), then the lower-cased values many rules
        compare. The computed fields join their aggregates,
        or the tables in `context_tables` that already hold them (see context.Context).
        `promoted`: also each shared lower-cased promoted field as its column lower-cased
        (`<name>_t`), for the rules resolved with `promoted` (see resolve). `used`: the
        SQL that reads the scan; a shared lower-cased value it does not name is left out
        (DuckDB computes a subquery's unread column all the same)."""
        if typed_parse is None:  # without a narrower gate: wherever a field is not promoted
            typed_parse = "true" if self.raw_members else "false"
        columns = ["*"]
        if self.tree:
            parse = f"json_transform(raw, {sql_str(json.dumps(self.tree))})"
            columns.append(f"CASE WHEN {UNPROMOTED} OR ({typed_parse}) THEN {parse} END AS _f")
        parsed = with_context(f"SELECT {', '.join(columns)} FROM {table}", self, context_tables)
        shared = self.shared_lowers().items()
        lowered = [f"lower({sql}) AS {name}" for sql, name in shared]
        if promoted:
            lowered += [
                f"lower({self.promoted_values[sql]}) AS {name}_t"
                for sql, name in shared
                if sql in self.promoted_values
            ]
        if used is not None:
            named = set(_LOWERED_NAME.findall(used))
            lowered = [c for c in lowered if c.rsplit(" AS ", 1)[1] in named]
        return f"SELECT *, {', '.join(lowered)} FROM ({parsed})" if lowered else parsed


_UNKNOWN = object()
# the promoted columns a rule's conditions most narrow the rows by, narrowest first
_NARROW_COLUMNS = tuple(PROMOTED[(name,)] for name in ("eventName", "eventSource"))
_READS_RAW = re.compile(r'\braw\b|"raw"')  # the column itself, not a raw_<path> column


def may_hold_key(key: str) -> str:
    """False only where the record in `raw` cannot have `key` as a key: its text holds
    neither the key as JSON writes it nor an escape that could spell it another way. A
    substring test, so a row's parse is spared where it fails.

    JSON spells a character of a string differently only with an escape: `\\"`, `\\\\`,
    `\\/`, the five control escapes, or `\\uXXXX` for any character. A key without `"`,
    `\\`, `/` or those controls is spelled otherwise only with a `\\u` escape. CloudTrail
    records often hold `\\"` (policies are JSON text in a string), `\\u` far less.

    The key is looked for without its opening quote (`URI"`, which `"URI"` holds):
    DuckDB's `contains` finds the needle's first byte with memchr, then compares byte by
    byte from there, and a record's second byte is a quote. With the quote, a test read
    the whole record (1.2 µs on a 2 KB PutObject, against 0.35 µs without).
    """
    written = json.dumps(key, ensure_ascii=False)[1:]
    escape = "\\u" if _SHORT_ESCAPED.isdisjoint(key) else "\\"
    return f"(contains(raw, {sql_str(written)}) OR contains(raw, {sql_str(escape)}))"


# The characters JSON may write with a two-character escape (`\\n`); any other is written
# as itself or as `\\uXXXX`.
_SHORT_ESCAPED = frozenset('"\\/\b\f\n\r\t')


def _ungrouped(sql: str) -> str:
    """A condition without the parentheses a group put around it."""
    return sql[1:-1] if sql.startswith("(") and sql.endswith(")") else sql


SHARED_LOWER_USES = 3
_LOWERED_NAME = re.compile(r"\b_l[0-9]+(?:_t)?\b")  # a shared lower-cased column's name
_LOWER_TOKEN = re.compile("'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\x00(_l[0-9]+)\x00")


def _read(parts: tuple[str, ...]) -> str:
    """The value at a path, read from `raw` by a parse of its own."""
    return f"json_extract_string(raw, {sql_str(json_path(parts))})"


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
