"""Single-table query sketches: ``SELECT [AGG(]col[)] FROM t [WHERE c op v AND ...]``.

The one place that builds such SQL (the WikiSQL loader, the embedded baseline and the sketch
student all call :func:`select_sql`) and that parses SQL back into a :class:`Sketch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

AGGS = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"]
_AGG_NODES = {exp.Max: "MAX", exp.Min: "MIN", exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG"}
OPS = ["=", ">", "<"]
_OP_NODES: dict[type[exp.Expr], str] = {exp.EQ: "=", exp.GT: ">", exp.LT: "<"}
_NODE_FOR_OP = {op: node for node, op in _OP_NODES.items()}


@dataclass(frozen=True)
class Cond:
    column: int
    op: str
    value: str
    numeric: bool


@dataclass(frozen=True)
class Sketch:
    sel: int
    agg: str
    conds: tuple[Cond, ...] = field(default_factory=tuple)


class SketchError(ValueError):
    """The SQL does not fit the single-table sketch; ``reason`` is a short category."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _column_index(node: exp.Expr, columns: Sequence[str]) -> int:
    if not isinstance(node, exp.Column):
        raise SketchError("unsupported_expression")
    names = [c.lower() for c in columns]
    if node.name.lower() not in names:
        raise SketchError("unknown_column")
    return names.index(node.name.lower())


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    node = node.unnest() if isinstance(node, exp.Paren) else node
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def sql_to_sketch(sql: str, columns: Sequence[str]) -> Sketch:
    """Parse SQL into a sketch.

    Raises:
        SketchError: the SQL is not ``SELECT [AGG(]col[)] FROM t [WHERE c op v AND ...]``.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError as err:
        raise SketchError("parse_error") from err
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        raise SketchError("not_single_select")
    if any(tree.args.get(k) for k in ("joins", "group", "order", "having", "limit", "distinct")):
        raise SketchError("unsupported_clause")
    projection = tree.expressions[0]
    projection = projection.this if isinstance(projection, exp.Alias) else projection
    agg = _AGG_NODES.get(type(projection), "")
    sel = _column_index(projection.this if agg else projection, columns)
    conds = []
    where = tree.args.get("where")
    for cond in _conjuncts(where.this) if where else []:
        op = _OP_NODES.get(type(cond))
        if op is None or not isinstance(cond.expression, (exp.Literal, exp.Neg)):
            raise SketchError("unsupported_where")
        literal = cond.expression
        value = literal.sql() if isinstance(literal, exp.Neg) else literal.this
        conds.append(Cond(_column_index(cond.this, columns), op, str(value),
                          isinstance(literal, exp.Neg) or not literal.is_string))
    return Sketch(sel, agg, tuple(conds))


def literal(value: str | int | float, numeric: bool) -> exp.Expr:
    return exp.Literal.number(value) if numeric else exp.Literal.string(str(value))


def select_sql(table: str, column: str, agg: str, conds: Sequence[tuple[str, str, exp.Expr]]) -> str:
    """SQLite text of ``SELECT [agg(]column[)] FROM table WHERE name op literal AND ...``."""
    projection: exp.Expr = exp.column(column)
    query = exp.select(exp.func(agg, projection) if agg else projection).from_(table)
    for name, op, value in conds:
        query = query.where(_NODE_FOR_OP[op](this=exp.column(name), expression=value))
    return query.sql(dialect="sqlite")


def sketch_to_sql(sketch: Sketch, table: str, columns: Sequence[str]) -> str:
    return select_sql(table, columns[sketch.sel], sketch.agg,
                      [(columns[c.column], c.op, literal(c.value, c.numeric)) for c in sketch.conds])
