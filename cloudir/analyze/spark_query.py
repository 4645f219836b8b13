"""`cloudir query --engine spark`: a responder's read-only SQL, run by Spark SQL.

The same contract as the DuckDB query (`analyze.query`): one statement that reads, over the
view `timeline` and nothing else, its rows printed or written by cloudir (`--output` goes
through `query.write_atomically`, so the refused targets and formats are the same).

Spark has no switch like DuckDB's `enable_external_access`, and `spark.sql()` runs a
command (CREATE, INSERT, SET, CACHE, ADD JAR, ...) the moment it is called. So the text is
parsed with Spark's own parser first (nothing runs) and the parsed plan is walked, every
node, expression and subquery, before Spark sees the statement to run it:

- every plan node must be a query's (a command, a write of any kind, `INSERT OVERWRITE
  DIRECTORY` included, is refused; EXPLAIN only in front of a query);
- every table it names must be `timeline` or a CTE the statement defines (a CTE may not
  take the name of a table in the session's catalog, which an out-of-scope reference
  would read): no catalog tables (a cluster's Glue or Hive metastore), no `global_temp`,
  no ``parquet.`/path` `` (Spark's SQL on files, also switched off on the session);
- every function must be one of Spark's built-ins, and not `reflect`/`java_method`, which
  call Java methods (`System.getenv` would hand over the cluster's credentials), nor the
  `xpath` family (an XML document's external entities name files and URLs);
- a name computed by IDENTIFIER(...) is refused (it is known only when Spark resolves it);
- table-valued functions are limited to the generators that only reshape their arguments.

It runs on a session of its own (`newSession()`: the process's SparkContext, its own SQL
settings and views), so the view and the settings never leak into the caller's session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from cloudir.analyze.query import timeline_files, write_arrow, write_atomically
from cloudir.analyze.schema import PROMOTED_COLUMNS
from cloudir.case import Case
from cloudir.engines.spark_parquet import read_parquet
from cloudir.errors import UsageError

VIEW: Final = "timeline"
REFUSED_FUNCTIONS: Final = frozenset({"reflect", "java_method", "try_reflect"})
"""Built-ins that call Java methods by name: `System.getenv` hands over credentials."""
XML_FUNCTIONS: Final = re.compile(r"^xpath(_\w+)?$")
"""Built-ins that parse XML from the row: a DOCTYPE's external entity names a file or URL."""
ALLOWED_TABLE_FUNCTIONS: Final = frozenset(
    {
        "range",
        "explode",
        "explode_outer",
        "inline",
        "inline_outer",
        "posexplode",
        "posexplode_outer",
        "json_tuple",
        "stack",
    }
)
QUERY_PACKAGES: Final = (
    "org.apache.spark.sql.catalyst.plans.logical.",
    "org.apache.spark.sql.catalyst.analysis.",
)
_LOGICAL = "org.apache.spark.sql.catalyst.plans.logical."
REFUSED_KINDS: Final = (
    _LOGICAL + "Command",
    _LOGICAL + "ParsedStatement",
    _LOGICAL + "InsertIntoDir",
)
_WRITE_WORDS = re.compile(r"Insert|Write|Append|Overwrite|Merge|Delete|Update|Create|Drop|Cache")
_EXPLAIN = "org.apache.spark.sql.execution.command.ExplainCommand"
_SUBQUERY = "org.apache.spark.sql.catalyst.expressions.SubqueryExpression"


def sealed_session(spark: Any, case: Case) -> Any:
    """A session of its own with the view `timeline` over the case's Parquet files: the
    event's own columns, as the DuckDB path's `cloudir query` shows them (no promoted
    copies; duck.timeline_view_sql)."""
    session = spark.newSession()
    session.conf.set("spark.sql.runSQLOnFiles", "false")
    session.conf.set("spark.sql.session.timeZone", "UTC")
    rows = read_parquet(session, timeline_files(case)).drop(*PROMOTED_COLUMNS)
    rows.createOrReplaceTempView(VIEW)
    return session


def check_read_only(session: Any, sql: str) -> None:
    """One statement that only reads `timeline`, or a UsageError naming what is refused."""
    if not sql.strip().strip(";").strip():
        raise UsageError("no SQL statement given: write one SELECT over `timeline`")
    plan = _parse(session, sql)
    if plan.getClass().getName() == _EXPLAIN:
        plan = plan.logicalPlan()
    _PlanCheck(session).check(plan)


def _parse(session: Any, sql: str) -> Any:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    parser = session._jsparkSession.sessionState().sqlParser()
    try:
        return parser.parsePlan(sql)
    except (Py4JJavaError, PySparkException) as exc:
        java = getattr(exc, "java_exception", None)
        first = _first_line(str(java.getMessage() if java is not None else exc))
        if ";" in sql.strip().rstrip(";"):  # Spark's parser takes one statement: say why
            raise UsageError(
                f"one SQL statement at a time: combine them with WITH or UNION ({first})"
            ) from exc
        raise UsageError(f"query failed: {first}") from exc


class _PlanCheck:
    """Walks a parsed (unresolved) plan; refuses what `check_read_only` names."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.jvm = session._jvm
        self.ctes: set[str] = set()
        self._builtins: set[str] | None = None

    def check(self, root: Any) -> None:
        nodes = list(self._plans(root))
        for node in nodes:
            if node.getClass().getSimpleName() == "UnresolvedWith":
                for pair in _seq(node.cteRelations()):
                    self.ctes.add(str(pair._1()).lower())
        self._check_cte_names()
        for node in nodes:
            self._check_node(node)
            for expression in _seq(node.expressions()):
                self._check_expressions(expression)

    def _plans(self, plan: Any) -> Iterator[Any]:
        """The plan, its children and inner children (CTE bodies, subqueries), depth first."""
        yield plan
        for child in _seq(plan.children()):
            yield from self._plans(child)
        for inner in _seq(plan.innerChildren()):
            if self._is(inner, "org.apache.spark.sql.catalyst.plans.logical.LogicalPlan"):
                yield from self._plans(inner)
        for expression in _seq(plan.expressions()):
            yield from self._subquery_plans(expression)

    def _subquery_plans(self, expression: Any) -> Iterator[Any]:
        if self._is(expression, _SUBQUERY):
            yield from self._plans(expression.plan())
        for child in _seq(expression.children()):
            yield from self._subquery_plans(child)

    def _check_node(self, node: Any) -> None:
        cls = node.getClass()
        name, simple = str(cls.getName()), str(cls.getSimpleName())
        refused = (
            not name.startswith(QUERY_PACKAGES)
            or any(self._is(node, kind) for kind in REFUSED_KINDS)
            or _WRITE_WORDS.search(simple) is not None
        )
        if refused:
            kind = simple.removesuffix("Command").removesuffix("Statement") or simple
            raise UsageError(
                f"query is read-only: {kind} statements are refused, only SELECT, WITH, "
                "VALUES and EXPLAIN run on Spark"
            )
        if "UnresolvedIdentifier" in simple:
            raise _identifier_refused()
        if simple == "UnresolvedRelation":
            self._check_table([str(p) for p in _seq(node.multipartIdentifier())])
        elif simple == "UnresolvedTableValuedFunction":
            names = [str(p) for p in _seq(node.name())]
            if len(names) != 1 or names[0].lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise UsageError(
                    f"query refused: table function {'.'.join(names)}() is not allowed; "
                    f"only {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )

    def _check_table(self, parts: list[str]) -> None:
        if len(parts) == 1 and (parts[0].lower() == VIEW or parts[0].lower() in self.ctes):
            return
        raise UsageError(
            f"query refused: it reads the case's timeline only, no other table, file or "
            f"URL ({'.'.join(parts)})"
        )

    def _check_cte_names(self) -> None:
        for name in sorted(self.ctes - {VIEW}):
            if self.session.catalog.tableExists(name):
                raise UsageError(
                    f"query refused: the CTE name {name} is also a table in the session's "
                    "catalog; name it differently"
                )

    def _check_expressions(self, expression: Any) -> None:
        simple = str(expression.getClass().getSimpleName())
        if "UnresolvedIdentifier" in simple:
            raise _identifier_refused()
        if simple == "UnresolvedFunction":
            self._check_function([str(p) for p in _seq(expression.nameParts())])
        elif simple == "UnresolvedGenerator":
            self._check_function([str(expression.name().funcName())])
        for child in _seq(expression.children()):
            self._check_expressions(child)

    def _check_function(self, parts: list[str]) -> None:
        name = ".".join(parts).lower()
        if name in REFUSED_FUNCTIONS:
            raise UsageError(f"query refused: {name}() calls Java methods")
        if XML_FUNCTIONS.match(name):
            raise UsageError(
                f"query refused: {name}() parses XML, whose external entities can read "
                "files and URLs; use get_json_object or regexp_extract"
            )
        if len(parts) != 1 or name not in self.builtins:
            raise UsageError(f"query refused: {name}() is not one of Spark's built-in functions")

    @property
    def builtins(self) -> set[str]:
        if self._builtins is None:
            rows = self.session.sql("SHOW SYSTEM FUNCTIONS").collect()
            self._builtins = {str(row[0]).lower() for row in rows}
        return self._builtins

    def _is(self, obj: Any, class_name: str) -> bool:
        return bool(self.jvm.java.lang.Class.forName(class_name).isInstance(obj))


def _identifier_refused() -> UsageError:
    return UsageError(
        "query refused: IDENTIFIER(...) names a table or function only when Spark runs the "
        "statement, too late to check; write the name itself"
    )


def _seq(seq: Any) -> list[Any]:
    """A Scala Seq (through py4j) as a Python list."""
    return [seq.apply(i) for i in range(seq.size())]


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else "error"


def _arrow(frame: Any) -> Any:
    """The DataFrame's rows as an Arrow table, timestamps as UTC instants like DuckDB's."""
    import pyarrow as pa

    batches = frame._collect_as_arrow()
    if batches:
        return pa.Table.from_batches(batches)
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(frame.schema).empty_table()


def _result(spark: Any, case: Case, sql: str) -> Any:
    """The checked statement's rows as an Arrow table."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    session = sealed_session(spark, case)
    check_read_only(session, sql)
    try:
        return _arrow(session.sql(sql))
    except PySparkException as exc:
        raise UsageError(f"query failed: {_first_line(str(exc))}") from exc
    except Py4JJavaError as exc:
        raise UsageError(f"query failed: {_first_line(str(exc.java_exception))}") from exc


def run_query(spark: Any, case: Case, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns and rows, as `analyze.query.run_query` returns them."""
    table = _result(spark, case, sql)
    columns = list(table.column_names)
    values = [column.to_pylist() for column in table.columns]  # by position: names may repeat
    return columns, list(zip(*values, strict=True)) if values else []


def write_result(spark: Any, case: Case, sql: str, out: Path) -> int:
    """The rows into `out` (format from its suffix), as `analyze.query.write_result` does."""

    def rows_into(fmt: str, tmp: Path) -> int:
        return write_arrow(fmt, _result(spark, case, sql).to_reader(), tmp)

    return write_atomically(case, out, rows_into)
