"""A user's database as the teacher sees it: dialect, schema text and sample rows of every table.

Works on SQLite and DuckDB files, opened read-only. The dialect comes from the file's header,
not its name. Sample rows are bounded per table and in total; tables past the total get none.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from fastdistill_assets.datasets.sqlite_schema import connect_read_only, quote_identifier, table_ddl, table_names

SQLITE_MAGIC = b"SQLite format 3\x00"
DUCKDB_MAGIC = b"DUCK"  # at byte offset 8
DB_SUFFIXES = (".sqlite", ".db", ".duckdb", ".sqlite3")


def detect_dialect(path: Path) -> str:
    """``sqlite`` or ``duckdb`` from the file header.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is neither a SQLite nor a DuckDB database.
    """
    with path.open("rb") as handle:
        header = handle.read(16)
    if header.startswith(SQLITE_MAGIC):
        return "sqlite"
    if header[8:12] == DUCKDB_MAGIC:
        return "duckdb"
    raise ValueError(f"{path} is not a SQLite or DuckDB database")


@dataclass(frozen=True)
class Database:
    path: Path
    dialect: str
    schema: str
    sample_rows: dict[str, list[list[Any]]]


class _Connection:
    """A read-only connection with the three calls the loader needs, for either dialect."""

    def __init__(self, path: Path, dialect: str) -> None:
        self.dialect = dialect
        self.sqlite = connect_read_only(path) if dialect == "sqlite" else None
        self.duck = duckdb.connect(str(path), read_only=True) if dialect == "duckdb" else None

    def ddl_and_tables(self) -> tuple[str, list[tuple[str, str]]]:
        """(schema text, [(display name, quoted name)]) for every user table."""
        if self.sqlite is not None:
            names = sorted(table_names(self.sqlite))
            return table_ddl(self.sqlite), [(n, quote_identifier(n)) for n in names]
        rows = self.duck.execute(
            "SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE NOT internal "
            "ORDER BY schema_name, table_name").fetchall()
        tables = [(t if s == "main" else f"{s}.{t}", f"{quote_identifier(s)}.{quote_identifier(t)}") for s, t, _ in rows]
        return ";\n".join(sql.strip().rstrip(";") for _, _, sql in rows), tables

    def first_rows(self, quoted_table: str, limit: int) -> list[list[Any]]:
        # The table name comes from the catalog and is quoted; the limit is a bound parameter.
        sql = f"SELECT * FROM {quoted_table} LIMIT ?"
        conn = self.sqlite if self.sqlite is not None else self.duck
        return [list(r) for r in conn.execute(sql, [limit]).fetchall()]

    def gold_error(self, sql: str) -> str | None:
        """None if the query runs, else the database's error message."""
        try:
            if self.sqlite is not None:
                self.sqlite.execute(sql).fetchmany(1)
            else:
                self.duck.execute(sql).fetchmany(1)
        except (sqlite3.Error, duckdb.Error) as err:
            return str(err)[:300]
        return None

    def close(self) -> None:
        for conn in (self.sqlite, self.duck):
            if conn is not None:
                conn.close()


class DatabaseCatalog:
    """Describes each database once and keeps one read-only connection per file."""

    def __init__(self, rows_per_table: int, rows_total: int) -> None:
        self.rows_per_table, self.rows_total = rows_per_table, rows_total
        self._entries: dict[Path, tuple[Database, _Connection] | str] = {}

    def get(self, path: Path) -> Database | str:
        """The database at ``path``, or a one-line reason it cannot be used."""
        path = path.resolve()
        if path not in self._entries:
            self._entries[path] = self._open(path)
        entry = self._entries[path]
        return entry if isinstance(entry, str) else entry[0]

    def _open(self, path: Path) -> tuple[Database, _Connection] | str:
        if not path.is_file():
            return f"database not found: {path}"
        try:
            dialect = detect_dialect(path)
            conn = _Connection(path, dialect)
        except (ValueError, OSError, sqlite3.Error, duckdb.Error) as err:
            return str(err)
        try:
            schema, tables = conn.ddl_and_tables()
            if not tables:
                conn.close()
                return f"database has no tables: {path}"
            rows: dict[str, list[list[Any]]] = {}
            budget = self.rows_total
            for name, quoted in tables:
                take = min(self.rows_per_table, budget)
                rows[name] = conn.first_rows(quoted, take) if take > 0 else []
                budget -= len(rows[name])
        except (sqlite3.Error, duckdb.Error) as err:
            conn.close()
            return f"cannot read {path}: {err}"
        return Database(path, dialect, schema, rows), conn

    def gold_error(self, path: Path, sql: str) -> str | None:
        """Run a gold query on a database returned by :meth:`get`; None when it executes."""
        entry = self._entries[path.resolve()]
        assert not isinstance(entry, str), "gold_error on a database that could not be opened"
        return entry[1].gold_error(sql)

    def close(self) -> None:
        for entry in self._entries.values():
            if not isinstance(entry, str):
                entry[1].close()
        self._entries.clear()

    def __enter__(self) -> DatabaseCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_database(folder: Path, db_id: str) -> Path | None:
    """``<db_id>.<suffix>`` or ``<db_id>/<db_id>.<suffix>`` inside ``folder``."""
    for base in (folder, folder / db_id):
        for suffix in DB_SUFFIXES:
            candidate = base / f"{db_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None
