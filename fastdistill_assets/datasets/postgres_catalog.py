"""A PostgreSQL database's tables and views as the teacher sees them, read from its catalog.

PostgreSQL keeps no CREATE statement, so one is written per table from ``pg_catalog``: its
columns with their types and NOT NULL, its primary key and its foreign keys; a view is
``CREATE VIEW name AS`` its definition. Only the configured schemas (``dataset.schemas``,
default ``public``) are read, at most ``max_tables`` tables and views (tables first); when a
database has more, the schema text ends with a comment that says how many were left out.
Every query goes through the guarded executor with bound parameters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

MAX_TABLES = 200  # tables and views of one database shown to the teacher, at most

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind IN ('v', 'm') AS is_view
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY(?) AND NOT c.relispartition
ORDER BY is_view, n.nspname, c.relname
"""
_COLUMNS = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY(?) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_KEYS = """
SELECT k.conrelid, pg_catalog.pg_get_constraintdef(k.oid, true)
FROM pg_catalog.pg_constraint k
WHERE k.conrelid = ANY(?) AND k.contype IN ('p', 'f')
ORDER BY k.conrelid, k.contype DESC, k.conname
"""
_VIEWS = "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid, true) FROM pg_catalog.pg_class c WHERE c.oid = ANY(?)"
_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def identifier(name: str) -> str:
    """``name`` as PostgreSQL reads it back: bare when it is a plain lower-case name, else quoted."""
    return name if _PLAIN.match(name) else '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    return identifier(name) if schema == "public" else f"{identifier(schema)}.{identifier(name)}"


def postgres_tables(query: Query, schemas: tuple[str, ...], max_tables: int = MAX_TABLES) -> list[tuple[str, str, str]]:
    """(schema, name, CREATE statement) of the database's tables, then views, in ``schemas``; at
    most ``max_tables`` of them, the last statement then followed by a comment naming how many
    more there are."""
    relations = query(_RELATIONS, (list(schemas),))
    shown, left_out = relations[:max_tables], len(relations) - max_tables
    oids = [oid for oid, *_ in shown]
    columns: dict[int, list[str]] = defaultdict(list)
    for oid, name, type_name, not_null in query(_COLUMNS, (oids,)) if oids else []:
        columns[oid].append(f"  {identifier(name)} {type_name}" + (" NOT NULL" if not_null else ""))
    keys: dict[int, list[str]] = defaultdict(list)
    for oid, definition in query(_KEYS, (oids,)) if oids else []:
        keys[oid].append(f"  {definition}")
    views = dict(query(_VIEWS, ([oid for oid, *_, is_view in shown if is_view],))) if any(r[3] for r in shown) else {}
    tables = []
    for oid, schema, name, is_view in shown:
        if is_view:
            statement = f"CREATE VIEW {_qualified(schema, name)} AS\n{str(views.get(oid, '')).strip().rstrip(';')}"
        else:
            statement = f"CREATE TABLE {_qualified(schema, name)} (\n" + ",\n".join(columns[oid] + keys[oid]) + "\n)"
        tables.append((schema, name, statement))
    if left_out > 0 and tables:
        schema, name, statement = tables[-1]
        tables[-1] = (schema, name, f"{statement};\n-- {left_out} more tables and views not shown "
                                    f"(at most {max_tables}: dataset.max_tables)")
    return tables
