"""Parse with sqlglot in the task's dialect; only one read-only query passes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Command, exp.Attach,
               exp.Detach, exp.Pragma, exp.Merge, exp.Copy, exp.Set, exp.Transaction, exp.Commit, exp.Rollback)


@dataclass(frozen=True)
class Parsed:
    ok: bool
    error: str | None = None
    expression: exp.Expr | None = None


def read_only_violation(expression: exp.Expr) -> str | None:
    """Why an expression is not a plain read query, or None."""
    if not isinstance(expression, exp.Query):
        return f"not a query: {type(expression).__name__}"
    for node in expression.walk():
        if isinstance(node, WRITE_NODES):
            return f"write statement inside query: {type(node).__name__}"
    return None


# PostgreSQL functions a read query has no business calling: they read or list the server's files,
# sleep, take advisory locks, signal backends, change settings, write sequences or large objects,
# run SQL given as text, or reach other servers (dblink). Any other pg_* function too, but pg_typeof.
PG_DENIED_PREFIXES = ("pg_", "lo_", "dblink")
PG_DENIED = frozenset({"set_config", "current_setting", "nextval", "setval", "query_to_xml", "query_to_xmlschema",
                       "query_to_xml_and_xmlschema", "cursor_to_xml", "txid_current", "loread", "lowrite"})
PG_ALLOWED = frozenset({"pg_typeof"})


def _function_name(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else None


def postgres_violation(expression: exp.Expr) -> str | None:
    """Why a PostgreSQL query must not run though it only reads, or None: a function of
    PG_DENIED (or named with PG_DENIED_PREFIXES), row locks (``FOR UPDATE`` / ``SHARE``) or
    ``SELECT ... INTO`` (which creates a table)."""
    for node in expression.walk():
        if isinstance(node, exp.Lock):
            return f"row locks: {node.sql(dialect='postgres')[:60]}"
        if isinstance(node, exp.Into):
            return "SELECT ... INTO creates a table"
        name = _function_name(node)
        if name and name not in PG_ALLOWED and (name in PG_DENIED or name.startswith(PG_DENIED_PREFIXES)):
            return f"function {name}() is not allowed in a read query"
    return None


def parse_sql(sql: str, dialect: str) -> Parsed:
    """Parse one statement; the parser's message is kept on failure."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as err:
        return Parsed(False, f"parse_error: {str(err).splitlines()[0][:300]}")
    except Exception as err:  # noqa: BLE001 - sqlglot may raise other errors on hostile text
        return Parsed(False, f"parse_error: {type(err).__name__}: {str(err)[:200]}")
    if len(statements) != 1:
        return Parsed(False, f"parse_error: expected one statement, got {len(statements)}")
    violation = read_only_violation(statements[0]) or (postgres_violation(statements[0]) if dialect == "postgres"
                                                        else None)
    if violation:
        return Parsed(False, f"not_read_only: {violation}")
    return Parsed(True, None, statements[0])


MAX_BUILT_SIZE = 10_000  # the largest size a function may be asked to build one value of
_SIZED = {"zeroblob": 0, "randomblob": 0, "list_resize": 1, "array_resize": 1}  # anonymous: the size argument
_FORMAT_WIDTH = re.compile(r"%[-+ #0']*(\*|\d+)?(?:\.(\*|\d+))?|\{[^}]*?:[^}]*?(\d+)")


def _literal_int(node: exp.Expr | None) -> int | None:
    """The integer a literal (or a negated literal) stands for, or None for anything computed."""
    if isinstance(node, exp.Neg):
        inner = _literal_int(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(float(node.this))
        except (ValueError, OverflowError):
            return None
    return None


def _built_sizes(node: exp.Expr) -> list[int | None]:
    """The sizes a function call asks one value to have (None: computed), or [] for other nodes."""
    if isinstance(node, exp.Repeat):
        return [_literal_int(node.args.get("times"))]
    if isinstance(node, exp.Pad):
        return [_literal_int(node.expression)]
    if isinstance(node, exp.Space):
        return [_literal_int(node.this)]
    if isinstance(node, exp.GenerateSeries) and not isinstance(node.parent, exp.Table):  # a list, not rows
        start, end = _literal_int(node.args.get("start")), _literal_int(node.args.get("end"))
        return [None if start is None or end is None else end - start]
    name = node.name.lower() if isinstance(node, exp.Anonymous) else ""
    if name in _SIZED:
        arguments = node.expressions
        return [_literal_int(arguments[_SIZED[name]]) if len(arguments) > _SIZED[name] else None]
    if name == "printf" or isinstance(node, exp.Format):
        pattern = node.expressions[0] if name == "printf" and node.expressions else node.this
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            return [None]
        widths = [w for match in _FORMAT_WIDTH.finditer(pattern.this) for w in match.groups() if w]
        return [None if w == "*" else int(w) for w in widths]
    return []


def oversized_value(expression: exp.Expr) -> str | None:
    """Why ``expression`` could build one huge value, or None: a call of repeat, lpad/rpad, space,
    zeroblob, randomblob, list_resize, a scalar range/generate_series or a printf/format width whose
    size is computed or above MAX_BUILT_SIZE. DuckDB computes 2,048 rows at a time, so one such value
    a row is gigabytes in memory before the first row can be counted against the result's bounds."""
    for node in expression.walk():
        for size in _built_sizes(node):
            if size is None or abs(size) > MAX_BUILT_SIZE:
                shown = "a computed size" if size is None else f"size {size}"
                return f"{node.sql()[:80]} builds one value of {shown} (at most {MAX_BUILT_SIZE} allowed)"
    return None
