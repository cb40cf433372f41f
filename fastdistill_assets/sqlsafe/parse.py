"""Parse with sqlglot in the task's dialect; only one read-only query passes."""

from __future__ import annotations

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
    expression: exp.Expression | None = None


def read_only_violation(expression: exp.Expression) -> str | None:
    """Why an expression is not a plain read query, or None."""
    if not isinstance(expression, exp.Query):
        return f"not a query: {type(expression).__name__}"
    for node in expression.walk():
        if isinstance(node, WRITE_NODES):
            return f"write statement inside query: {type(node).__name__}"
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
    violation = read_only_violation(statements[0])
    if violation:
        return Parsed(False, f"not_read_only: {violation}")
    return Parsed(True, None, statements[0])
