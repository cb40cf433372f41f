"""Read a SQLite database's schema text and sample rows, read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    """Open a SQLite file read-only (the file must exist)."""
    path = Path(db_path)
    if not path.exists():
        raise FileNotFoundError(f"database not found: {path}")
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()
    return [r[0] for r in rows]


def quote_identifier(name: str) -> str:
    """Quote an identifier for SQLite (identifiers cannot be bound parameters)."""
    return '"' + name.replace('"', '""') + '"'
