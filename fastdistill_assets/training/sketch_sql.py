"""WikiSQL-style sketches: SQL <-> (SELECT column, aggregate, WHERE column/op/value)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from fastdistill_assets.teacher.baseline import Column

AGGS = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"]
_AGG_NODES = {exp.Max: "MAX", exp.Min: "MIN", exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG"}
OPS = ["=", ">", "<"]
_OP_NODES = {exp.EQ: "=", exp.GT: ">", exp.LT: "<"}


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


def _column_index(node: exp.Expression, columns: list[Column]) -> int:
    if not isinstance(node, exp.Column):
        raise SketchError("unsupported_expression")
    names = [c.name.lower() for c in columns]
    if node.name.lower() not in names:
        raise SketchError("unknown_column")
    return names.index(node.name.lower())


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = node.unnest() if isinstance(node, exp.Paren) else node
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def sql_to_sketch(sql: str, columns: list[Column]) -> Sketch:
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


def sketch_to_sql(sketch: Sketch, table: str, columns: list[Column]) -> str:
    column = exp.column(columns[sketch.sel].name)
    query = exp.select(exp.func(sketch.agg, column) if sketch.agg else column).from_(table)
    for cond in sketch.conds:
        literal = exp.Literal.number(cond.value) if cond.numeric else exp.Literal.string(cond.value)
        node = {"=": exp.EQ, ">": exp.GT, "<": exp.LT}[cond.op]
        query = query.where(node(this=exp.column(columns[cond.column].name), expression=literal))
    return query.sql(dialect="sqlite")
