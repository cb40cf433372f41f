"""A user's database as the teacher sees it: dialect, schema text and sample rows of every table
and view.

Works on SQLite and DuckDB files and PostgreSQL databases (by URL, see :mod:`postgres_catalog`). Every query, the user's gold SQL included, goes through the
guarded read-only executor the gates use (read-only connection, authorizer, no external
access, time limit, row cap). The dialect comes from the file's header, not its name. Sample
rows are bounded per table and in total; tables past the total get none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastdistill_assets.config.models import ExecutionGates
from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.postgres_catalog import MAX_TABLES, postgres_tables
from fastdistill_assets.datasets.sqlite_schema import quote_identifier
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.sqlsafe.postgres import is_postgres_url, shown

SQLITE_MAGIC = b"SQLite format 3\x00"
DUCKDB_MAGIC = b"DUCK"  # at byte offset 8
DB_SUFFIXES = (".sqlite", ".db", ".duckdb", ".sqlite3")
_TABLES = {  # tables, then views: (schema, name, CREATE statement)
    "sqlite": ("SELECT 'main', name, sql FROM sqlite_master WHERE type IN ('table', 'view') AND sql IS NOT NULL "
               "AND name NOT LIKE 'sqlite_%' ORDER BY type, name"),
    "duckdb": ("SELECT schema_name, table_name, sql, 0 AS k FROM duckdb_tables() WHERE NOT internal "
               "UNION ALL SELECT schema_name, view_name, sql, 1 FROM duckdb_views() WHERE NOT internal "
               "AND NOT temporary ORDER BY k, schema_name, table_name"),
}


def detect_dialect(path: Path) -> str:
    """``sqlite`` or ``duckdb`` from the file header.

    Raises:
        OSError: the file cannot be read.
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
class GoldCheck:
    error: str | None     # why the gold query cannot run (None: it ran)
    empty: bool | None    # it returned no rows or only NULLs (None: it did not run)


@dataclass(frozen=True)
class Database:
    path: str          # a file's resolved path, or a PostgreSQL database's URL
    dialect: str
    schema: str
    sample_rows: dict[str, list[list[Any]]]


class DatabaseCatalog(records.Closing):
    """Describes each database once; one guarded read-only connection per file."""

    def __init__(self, rows_per_table: int, rows_total: int, limits: ExecutionGates | None = None,
                 schemas: tuple[str, ...] = ("public",), max_tables: int = MAX_TABLES) -> None:
        """``schemas``, ``max_tables``: what a PostgreSQL database shows (see :func:`postgres_tables`)."""
        self.rows_per_table, self.rows_total = rows_per_table, rows_total
        self.schemas, self.max_tables = schemas, max_tables
        self.executor = Executor(limits or ExecutionGates())
        self._entries: dict[tuple[str, str | None], Database | str] = {}
        self._listings: dict[str, tuple[Path, str, list[tuple[Any, ...]]]] = {}

    def get(self, path: Path | str, table: str | None = None) -> Database | str:
        """The database at ``path`` (a file, or a PostgreSQL URL; only ``table`` of it when
        given), or a one-line reason it cannot be used. ``table`` is a table or view name, or a WikiSQL table id (``1-10015132-11``
        for ``table_1_10015132_11``): a question about one table of a database with thousands."""
        key = (str(path), table)
        if key not in self._entries:
            self._entries[key] = self._describe(path, table)
        return self._entries[key]

    def _query(self, database: str, dialect: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        result = self.executor.run_unchecked(database, dialect, sql, params)  # SQL built here
        if not result.ok:
            raise ValueError(f"cannot read {shown(database)}: {result.detail}")
        return result.rows or []

    def _listing(self, path: Path | str) -> tuple[str, str, list[tuple[Any, ...]]]:
        """(resolved path or URL, dialect, catalog rows: schema, name, CREATE statement), read once
        per database.

        Raises:
            OSError, ValueError: the file is missing, not a database, or has no tables.
        """
        key = str(path)
        if key not in self._listings and is_postgres_url(key):
            tables = postgres_tables(lambda sql, params: self._query(key, "postgres", sql, params), self.schemas,
                                     self.max_tables)
            if not tables:
                raise ValueError(f"database has no tables or views in schemas {', '.join(self.schemas)}: "
                                 f"{shown(key)}")
            self._listings[key] = (key, "postgres", tables)
        if key not in self._listings:
            resolved = Path(path).resolve()
            if not resolved.is_file():
                raise FileNotFoundError(f"database not found: {resolved}")
            dialect = detect_dialect(resolved)
            tables = self._query(str(resolved), dialect, _TABLES[dialect])
            if not tables:
                raise ValueError(f"database has no tables or views: {resolved}")
            self._listings[key] = (str(resolved), dialect, tables)
        return self._listings[key]

    def _describe(self, path: Path, table: str | None) -> Database | str:
        try:
            path, dialect, tables = self._listing(path)
            if table is not None:
                names = {table, "table_" + table.replace("-", "_")}
                tables = [t for t in tables if t[1] in names]
                if not tables:
                    return f"no table {table!r} in {shown(path)}"
            rows: dict[str, list[list[Any]]] = {}
            budget = self.rows_total
            for schema_name, name, *_ in tables:
                label = name if schema_name in ("main", "public") else f"{schema_name}.{name}"
                quoted = quote_identifier(name) if dialect == "sqlite" else \
                    f"{quote_identifier(schema_name)}.{quote_identifier(name)}"
                take = min(self.rows_per_table, budget)
                # identifiers come from the catalog, quoted; the limit is our own integer
                found = self._query(path, dialect, f"SELECT * FROM {quoted} LIMIT {int(take)}") if take > 0 else []
                rows[label] = [list(r) for r in found]
                budget -= len(found)
        except (OSError, ValueError) as err:
            return str(err)
        schema = ";\n".join(sql.strip().rstrip(";") for _, _, sql, *_ in tables)
        return Database(path, dialect, schema, rows)

    def check_gold(self, database: Database, sql: str) -> GoldCheck:
        """Run a gold query as the gates would run it: why it fails, or whether its result is empty."""
        result = self.executor.run(str(database.path), database.dialect, sql)
        if not result.ok:
            return GoldCheck(error=f"{result.error}: {result.detail}", empty=None)
        return GoldCheck(error=None, empty=records.is_empty_result(result.rows))

    def close(self) -> None:
        self.executor.close()


def find_database(folder: Path, db_id: str) -> Path | None:
    """``<db_id>.<suffix>`` or ``<db_id>/<db_id>.<suffix>`` inside ``folder``; a db_id that is
    not a plain name (a path) finds nothing."""
    if Path(db_id).name != db_id or db_id in {".", ".."}:
        return None
    for base in (folder, folder / db_id):
        for suffix in DB_SUFFIXES:
            candidate = base / f"{db_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None


_CAN_WRITE = """
SELECT r.rolsuper, has_database_privilege(current_user, current_database(), 'CREATE'),
       EXISTS (SELECT 1 FROM information_schema.table_privileges
               WHERE grantee = current_user AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE'))
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""


def write_privileges_note(url: str, limits: ExecutionGates | None = None) -> str | None:
    """One line when the role of a PostgreSQL URL could write (a superuser, CREATE on the
    database, or INSERT, UPDATE or DELETE on a table): every query runs read-only anyway, but a
    role that can only read is the safer one. None when it cannot, or cannot be asked."""
    with Executor(limits or ExecutionGates()) as executor:
        result = executor.run_unchecked(url, "postgres", _CAN_WRITE)   # SQL built here
    if not result.ok or not result.rows:
        return None
    superuser, create, write = result.rows[0]
    if not (superuser or create or write):
        return None
    what = "is a superuser" if superuser else "has CREATE on the database" if create else \
        "has INSERT, UPDATE or DELETE on tables"
    return (f"dataset.db_url: the role of {shown(url)} {what}; every query runs in a read-only transaction, "
            "but a role granted SELECT only is safer")
