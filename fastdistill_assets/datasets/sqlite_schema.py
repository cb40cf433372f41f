"""Read a SQLite database's schema text and sample rows, read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    """Open a SQLite file read-only (the file must exist)."""
    path = Path(db_path)
    if not path.exists():
        raise FileNotFoundError(f"database not found: {path}")
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)


def table_ddl(conn: sqlite3.Connection, table: str | None = None) -> str:
    """CREATE statements of one table (or all tables), as stored by SQLite."""
    if table is None:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    else:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchall()
    return ";\n".join(r[0].strip() for r in rows)


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()
    return [r[0] for r in rows]


def quote_identifier(name: str) -> str:
    """Quote an identifier for SQLite (identifiers cannot be bound parameters)."""
    return '"' + name.replace('"', '""') + '"'


def sample_rows(conn: sqlite3.Connection, table: str, limit: int) -> list[list[Any]]:
    """The first ``limit`` rows of a table (the table name is checked against sqlite_master)."""
    if table not in table_names(conn):
        raise KeyError(f"unknown table {table!r}")
    cursor = conn.execute(f"SELECT * FROM {quote_identifier(table)} LIMIT ?", (limit,))
    return [list(r) for r in cursor.fetchall()]
