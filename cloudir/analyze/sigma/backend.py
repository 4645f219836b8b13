"""Sigma conditions to DuckDB SQL: a DuckDB flavour of pySigma's SQLite backend.

Laid out as pySigma backends are (`sigma/backends/sqlite/` holds `sqlite.py` with the
backend class, `correlation.py` and `runtime.py` beside it): this module holds the backend
class, `fields.py` the raw-field plan it compiles against, `correlation.py` the correlation
SQL and `runtime.py` the DuckDB functions the SQL calls. Importing this module imports
pySigma, so only the commands that run rules import it (detect.py imports it on first use).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sigma.backends.sqlite import sqliteBackend
from sigma.conditions import ConditionFieldEqualsValueExpression
from sigma.conversion.state import ConversionState
from sigma.types import (
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaExists,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaString,
)

from cloudir.analyze.duck import quote_ident, sql_str
from cloudir.analyze.schema import COLUMN_NAMES
from cloudir.analyze.sigma.context import field_sql as computed_field_sql
from cloudir.analyze.sigma.context import is_computed
from cloudir.analyze.sigma.fields import SCALAR_FIELDS, VIRTUAL_FIELDS, FieldPlan
from cloudir.analyze.sigma.runtime import ipv4_network_sql

ELEMENT = "cloudir_element"  # the lambda parameter of the array fallback


def _plain(value: Any) -> str:
    """The literal text of a SigmaString without wildcards (to_plain() re-escapes `*`)."""
    return "".join(part for part in value.s if isinstance(part, str))


class _InList:
    """Marks the element form of an IN list while its fallback is generated."""

    def __init__(self, field_name: str) -> None:
        self.field = field_name


def _ilike(expression: str | None) -> str | None:
    """The SQLite backend's LIKE expression as ILIKE: Sigma compares case-insensitively."""
    return None if expression is None else expression.replace(" LIKE ", " ILIKE ")


class DuckDBBackend(sqliteBackend):
    """pySigma's SQLite backend, speaking DuckDB over the timeline's rows.

    A rule converts to a bare predicate over one timeline row; detect.py evaluates every
    rule's predicate as a column of one scan (see `finalize_query_default`).
    """

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
    field_equals_field_startswith_expression: ClassVar[str | None] = _ilike(
        sqliteBackend.field_equals_field_startswith_expression
    )
    field_equals_field_endswith_expression: ClassVar[str | None] = _ilike(
        sqliteBackend.field_equals_field_endswith_expression
    )
    field_equals_field_contains_expression: ClassVar[str | None] = _ilike(
        sqliteBackend.field_equals_field_contains_expression
    )
    timestamp_seconds_expression = "epoch({field})"
    event_id_field = "event_id"
    table = "timeline"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # sqliteBackend.__init__ has no annotations; the ignore covers that one call
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.fields = FieldPlan()
        self._element_of: str | None = None
        self._in_values = ""

    def field_sql(self, field_name: str) -> str:
        """A timeline column, a computed field, or the value at a raw JSON path (NULL when
        absent)."""
        if field_name in COLUMN_NAMES:
            return quote_ident(field_name)
        if field_name in VIRTUAL_FIELDS:
            return VIRTUAL_FIELDS[field_name]
        computed = computed_field_sql(self.fields, field_name)  # cloudir.* (context.py)
        if computed is not None:
            return computed
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

    @staticmethod
    def _has_elements(field_name: str) -> bool:
        """A raw path that may hold an array, so its tests need the any-element fallback."""
        return not (
            field_name in COLUMN_NAMES
            or field_name in SCALAR_FIELDS
            or field_name in VIRTUAL_FIELDS
            or is_computed(field_name)
        )

    def _with_elements(self, field_name: str, scalar: str, state: Any, cond: Any) -> str:
        if not self._has_elements(field_name):
            return scalar
        self._element_of = field_name
        try:
            each = self.convert_condition(cond, state)
        finally:
            self._element_of = None
        return self._fallback(field_name, scalar, each)

    def _fallback(self, field_name: str, scalar: str, each: str) -> str:
        """`scalar`, else `each` (over ELEMENT) true of some value when the path holds an
        array."""
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
        shared = self._one_fallback(args, state)
        if shared is not None:
            return shared
        return self._lazy(cond, state, conjunction=False)

    def _one_fallback(self, args: Any, state: ConversionState) -> str | None:
        """`field|startswith: [a, b, c]` on a raw field: the values' tests, then ONE
        any-element fallback testing every value on each element.

        Each value's own fallback would repeat the guard (`json_type` parses `raw`) once per
        value for every row that reaches it: a list of 31 instance type prefixes parsed
        each RunInstances record 31 times. An element matching any value is the same as
        any value matching an element, so the result is the same.
        """
        if not (
            self._element_of is None
            and len(args) > 1
            and all(isinstance(a, ConditionFieldEqualsValueExpression) for a in args)
            and len({a.field for a in args}) == 1
            and isinstance(args[0].field, str)
            and not any(
                isinstance(a.value, SigmaNull | SigmaExists | SigmaFieldReference) for a in args
            )
            and self._has_elements(args[0].field)
        ):
            return None
        field_name = args[0].field
        scalars = [
            super(DuckDBBackend, self).convert_condition_field_eq_val(a, state) for a in args
        ]
        if not all(isinstance(s, str) for s in scalars):
            return None
        self._element_of = field_name
        try:
            each = [self.convert_condition(a, state) for a in args]
        finally:
            self._element_of = None
        if not all(isinstance(e, str) for e in each):
            return None
        scalar = f"CASE {' '.join(f'WHEN {s} THEN true' for s in scalars)} ELSE false END"
        any_each = f"CASE {' '.join(f'WHEN {e} THEN true' for e in each)} ELSE false END"
        value = self.field_sql(field_name)
        if self.fields.parsed_alone(value):
            # a path read with its own parse (FieldPlan.value_sql): each value's test would
            # parse the record again (31 instance type prefixes: 60 us a RunInstances
            # record), so the value is read once and bound, as an element would be
            bound = f"list_transform([{value}], lambda {ELEMENT}: {any_each})"
            scalar = f"COALESCE(list_bool_or({bound}), false)"
        return self._fallback(field_name, scalar, any_each)

    def convert_condition_and(self, cond: Any, state: ConversionState) -> Any:
        return self._lazy(cond, state, conjunction=True)

    def _lazy(self, cond: Any, state: ConversionState, conjunction: bool) -> Any:
        """AND and OR as SQL's, to be evaluated as a condition (detect._gated puts each
        rule in one `CASE WHEN ... THEN true ELSE false END`): NULL is then false, as
        Sigma reads a missing field, and NOT is a CASE too (convert_condition_not).

        DuckDB stops at the first deciding operand of an AND or OR only where it selects
        rows: in a filter or a CASE's WHEN, not in a projection's value. A rule's whole
        tree under one WHEN is evaluated that way, each operand only on the rows still
        undecided. Rules were nested CASE chains before, every level a value of its own
        that the next one turned back into a selection; without them the rules' columns
        take a sixth less CPU (5M rows).
        """
        args: list[Any] = [
            self.convert_condition(a, state)
            if self.compare_precedence(cond, a)
            else self.convert_condition_group(a, state)
            for a in cond.args
        ]
        args = [a for a in args if a is not None]
        if not args:
            return None
        if not conjunction:
            expr = " OR ".join(f"({a})" for a in args)
            self.fields.note_or(expr, args)
            return expr
        # the narrowest conditions first (a conjunction's order does not change its value):
        # those that hold only on some event names, then on some event sources, each of
        # them on promoted fields before one that reads `raw` (whose own conditions test
        # the promoted fields first); then broad promoted tests, then the rest. A rule that
        # began with "no error code" or "not an AWS service" ran its next test on nine rows
        # in ten of a busy account's, where an event name lets one in a hundred through.
        args.sort(key=self._narrow_first)
        expr = " AND ".join(f"({a})" for a in args)
        self.fields.note_and(expr, args)
        return expr

    def convert_condition_not(self, cond: Any, state: ConversionState) -> Any:
        """NOT as a CASE, not `NOT COALESCE(x, false)`: the operand is then a condition
        (see _lazy), evaluated with its ANDs and ORs stopping early, and NULL is false."""
        arg = cond.args[0]
        if arg is None:
            return None
        if arg.__class__ in self.precedence:
            expr = self.convert_condition_group(arg, state)
        else:
            expr = self.convert_condition(arg, state)
        if not isinstance(expr, str):
            return super().convert_condition_not(cond, state)
        return f"CASE WHEN {expr} THEN false ELSE true END"

    def _narrow_first(self, condition: Any) -> tuple[int, bool]:
        if not isinstance(condition, str):
            return 3, True
        return self.fields.breadth(condition), self.fields.reads_raw(condition)

    def convert_condition(self, cond: Any, state: ConversionState) -> Any:
        if isinstance(cond, _InList):
            return f"lower({ELEMENT}) IN ({self._in_values})"
        return super().convert_condition(cond, state)

    def convert_condition_field_eq_val_str(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        """A plain value (no wildcard) compares lower-cased: cheaper than ILIKE. A value
        with wildcards is `lower(field) LIKE lower(pattern)`, which is how DuckDB defines
        ILIKE: the optimizer turns it into a prefix, suffix or contains test, over the
        field lower-cased once per row where many rules compare it (eventName)."""
        value = cond.value
        if not isinstance(value, SigmaString) or isinstance(value, SigmaCasedString):
            return super().convert_condition_field_eq_val_str(cond, state)
        if not value.contains_special():
            return f"{self._lower(cond.field)} = {sql_str(_plain(value).lower())}"
        expression = super().convert_condition_field_eq_val_str(cond, state)
        field_sql = f"{self.escape_and_quote_field(cond.field)} ILIKE "
        escape = " ESCAPE '\\'"
        if not (
            isinstance(expression, str)
            and expression.startswith(field_sql)
            and expression.endswith(escape)
        ):
            return expression
        pattern = expression[len(field_sql) : -len(escape)]
        return f"{self._lower(cond.field)} LIKE lower({pattern}){escape}"

    def _lower(self, field_name: str) -> str:
        if self._element_of is not None and field_name == self._element_of:
            return f"lower({ELEMENT})"
        return self.fields.lowered(self.field_sql(field_name))

    def convert_condition_field_eq_val_num(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        if not isinstance(cond.value, SigmaNumber):
            raise TypeError(f"not a number: {cond.value!r}")  # pySigma dispatches numbers here
        field_sql = self.escape_and_quote_field(cond.field)
        return f"TRY_CAST({field_sql} AS DOUBLE) = {cond.value.number}"

    def convert_condition_field_eq_val_cidr(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> str:
        """Real network math (IPv4 and IPv6), not string prefixes: see cidr_match."""
        if not isinstance(cond.value, SigmaCIDRExpression):
            raise TypeError(f"not a CIDR: {cond.value!r}")  # pySigma dispatches CIDRs here
        network = cond.value.network
        value = self.escape_and_quote_field(cond.field)
        if network.version == 4:  # in SQL: no Python call per row
            return ipv4_network_sql(value, network)
        test = f"cidr_match({value}, {sql_str(str(network))})"
        return f"CASE WHEN contains({value}, ':') THEN {test} ELSE false END"  # v6 only

    def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
        return query  # the bare predicate: detect.py builds the one scan around it
