"""Grounded literals: a string a candidate compares a column with must occur in that column.

A typical Text-to-SQL error is a misspelled or invented value (``col6 = 'rIeland'``,
``col1 = 'Brzail'``): the query parses and executes, but returns nothing, and a model trained on
it learns to make values up. This gate finds every comparison of a real table's column with a
string literal (``=``, ``!=``/``<>``, ``IN (...)``, and ``LIKE``/``ILIKE`` without wildcards) and
looks each value up in the database; a candidate with a value found nowhere in its column is
ungrounded.

Columns are resolved with sqlglot's scopes, each within its own SELECT: ``a.col`` through the
alias ``a`` (or an outer query's alias, for a correlated subquery), an unqualified column only when
its SELECT reads exactly one source. A column of a CTE or derived table, an ambiguous column and
anything else that cannot be resolved is skipped: the gate rejects on evidence, never on a guess.

The other way round, a number the question states must be in the query (``question_numbers``): a
teacher that cannot link a condition drops it ("... where the opening year is 1931" answered without
``1931``), and its answers agree with each other on the wrong, larger result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.optimizer.scope import Scope, traverse_scope

UNGROUNDED = "ungrounded_literal"             # a string its column never holds
MISSING_NUMBER = "missing_question_number"     # a number of the question the query leaves out
_WILDCARDS = ("%", "_")
_COMPARISONS = (exp.EQ, exp.NEQ, exp.Like, exp.ILike, exp.In)   # what _compared reads


@dataclass(frozen=True)
class LiteralUse:
    """A column of a real table compared with a string value."""

    table: str
    column: str
    value: str
    like: str | None = None   # "like" / "ilike": a pattern without wildcards (see :meth:`any_case`)

    def any_case(self, dialect: str) -> bool:
        """Whether the comparison ignores case: an ILIKE, or a LIKE in SQLite (case-insensitive for ASCII)."""
        return self.like == "ilike" or (self.like == "like" and dialect == "sqlite")


def _string(node: exp.Expr | None) -> str | None:
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


def _walk(node: exp.Expr) -> Iterator[exp.Expr]:
    """Depth first, in text order: a WITH clause (kept last in sqlglot's args) comes before its query.

    Iterative, so a long chain of ``AND``/``OR`` (a deep tree) cannot exhaust the recursion limit.
    """
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        children = list(node.iter_expressions())
        if node.args.get("with") or node.args.get("with_"):
            children.sort(key=lambda child: child.arg_key not in ("with", "with_"))
        stack.extend(reversed(children))


def _compared(node: exp.Expr) -> tuple[exp.Expr | None, list[str], str | None]:
    """(the column side, the string values, "like" / "ilike" for a pattern) of a comparison with
    string literals, else (None, [], None)."""
    if isinstance(node, (exp.EQ, exp.NEQ)):
        left, right = node.this, node.expression
        if isinstance(left, exp.Column) and (value := _string(right)) is not None:
            return left, [value], None
        if isinstance(right, exp.Column) and (value := _string(left)) is not None:
            return right, [value], None
    elif isinstance(node, (exp.Like, exp.ILike)):
        pattern = _string(node.expression)
        if pattern is not None and not any(w in pattern for w in _WILDCARDS):
            return node.this, [pattern], "ilike" if isinstance(node, exp.ILike) else "like"
    elif isinstance(node, exp.In) and not node.args.get("query"):
        values = [_string(item) for item in node.expressions]
        return node.this, [v for v in values if v is not None], None
    return None, [], None


def _source(scope: Scope | None, name: str, case_insensitive: bool) -> exp.Expr | Scope | None:
    """The source a qualifier names in this scope or, for a correlated subquery, an enclosing one."""
    while scope is not None:
        for alias, (_, source) in scope.selected_sources.items():
            if alias == name or (case_insensitive and alias.lower() == name.lower()):
                return source
        scope = scope.parent if scope.is_subquery else None
    return None


def _table_of(column: exp.Column, scope: Scope, case_insensitive: bool) -> str | None:
    """The real table a column reads, or None when it is not a table's or cannot be told."""
    if column.table:
        source = _source(scope, column.table, case_insensitive)
    else:
        outputs = scope.expression.expressions if isinstance(scope.expression, exp.Select) else []
        if column.name in {e.alias for e in outputs if isinstance(e, exp.Alias)}:
            return None  # an output alias, not a column
        if len(scope.selected_sources) != 1:
            return None  # ambiguous without a schema
        _, source = next(iter(scope.selected_sources.values()))
    if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
        return source.name
    return None  # a CTE, a derived table, a table function, or not found


def _single_table(expression: exp.Expr) -> exp.Table | None:
    """The table of a plain one-table SELECT (no join, subquery, CTE or set operation), else None:
    every column there is that table's, no scope needs building (the common case, and the fast one)."""
    if not isinstance(expression, exp.Select) or expression.args.get("joins") or expression.args.get("with"):
        return None
    source = expression.args.get("from") or expression.args.get("from_")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        return None
    return table if sum(1 for _ in expression.find_all(exp.Query)) == 1 else None  # no subquery or set operation


def string_literal_uses(expression: exp.Expr, dialect: str) -> list[LiteralUse]:
    """Columns of real tables compared with string literals, deduplicated, in the order of the text."""
    table = _single_table(expression)
    nodes = expression.find_all(*_COMPARISONS, bfs=False) if table is not None else _walk(expression)  # text order
    compared = [(column, values, like) for column, values, like in map(_compared, nodes) if column is not None]
    if not compared:
        return []
    case_insensitive = Dialect.get_or_raise(dialect).normalization_strategy == NormalizationStrategy.CASE_INSENSITIVE
    if table is not None:
        names = {n.lower() if case_insensitive else n for n in (table.name, table.alias_or_name)}
        outputs = {e.alias for e in expression.expressions if isinstance(e, exp.Alias)}
        found: dict[LiteralUse, None] = {}
        for column, values, like in compared:
            if not isinstance(column, exp.Column):
                continue
            qualifier = column.table.lower() if case_insensitive else column.table
            if qualifier in names if column.table else column.name not in outputs:
                found.update((LiteralUse(table.name, column.name, value, like), None) for value in values)
        return list(found)
    try:
        scopes = traverse_scope(expression)
    except Exception:  # noqa: BLE001 - sqlglot may refuse a query it cannot scope; nothing is resolved then
        return []
    tables: dict[int, str | None] = {}
    for scope in scopes:
        having = scope.expression.args.get("having")  # sqlglot leaves out HAVING's unqualified columns (aliases?)
        for column in [*scope.columns, *(having.find_all(exp.Column) if having else ())]:
            if column.find_ancestor(exp.Select) is scope.expression:  # not a subquery's outer reference
                tables[id(column)] = _table_of(column, scope, case_insensitive)
    uses: dict[LiteralUse, None] = {}
    for column, values, like in compared:
        name = tables.get(id(column)) if isinstance(column, exp.Column) else None
        if name:
            uses.update((LiteralUse(name, column.name, value, like), None) for value in values)
    return list(uses)


def first_ungrounded(uses: Sequence[LiteralUse], exists: Callable[[LiteralUse], bool | None]) -> LiteralUse | None:
    """The first use whose value is not in its column; ``exists`` returning None (not checked) counts as grounded."""
    return next((use for use in uses if exists(use) is False), None)


# A number standing alone in a question ("1931", "38.5", "1,000"), not part of a word ("1500m", "A4").
_QUESTION_NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\w,])|(?<![\w.,])\d+(?:\.\d+)?(?![\w]|[.,]\d)")
_ANY_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# A number a query writes otherwise: "1 million" (1000000), "50 %" (0.5), "3k"
_SCALED = re.compile(r"\s*(?:%|(?i:per\s?cent|percent|thousand|million|billion|trillion|bn)\b|[kKM](?![\w-]))")


def question_numbers(question: str) -> list[str]:
    """The numbers standing alone in ``question``, as written (thousands separators removed), less
    those with a scale or a percent sign after them (a query writes them as another number)."""
    text = question or ""
    return [m.group().replace(",", "") for m in _QUESTION_NUMBER.finditer(text) if not _SCALED.match(text, m.end())]


def missing_question_numbers(question: str, expression: exp.Expr) -> list[str]:
    """The numbers of ``question`` that no literal of the query holds, in order: a query that leaves
    out a number the question states (``... opening year is 1931`` answered without ``1931``) has
    dropped or changed a condition. A literal counts when it is that number (``1931``, ``1931.0``) or
    a string that contains it (``'Astra 749'``)."""
    wanted = list(dict.fromkeys(question_numbers(question)))
    if not wanted:
        return []
    held: set[float] = set()
    for literal in expression.find_all(exp.Literal):
        held.update(float(n) for n in _ANY_NUMBER.findall(str(literal.this)))
    return [n for n in wanted if float(n) not in held]
