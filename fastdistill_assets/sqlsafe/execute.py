"""Execute candidate SQL on the task's database: read-only, time-limited, bounded.

SQLite files are opened with ``mode=ro``, ``PRAGMA query_only``, an authorizer that allows
only reads, a cap on value length, and a progress handler that interrupts a query past its
deadline. DuckDB files are opened ``read_only`` with external access off and a memory limit, in an
engine process whose memory is capped, and interrupted by a timer
(:mod:`~fastdistill_assets.sqlsafe.duck_process`). A PostgreSQL database (``dialect`` postgres,
``db_path`` its URL) is queried in read-only transactions that are always rolled back, under
``statement_timeout`` (:mod:`~fastdistill_assets.sqlsafe.postgres`). One connection per database
is reused across rows.

Rows are fetched a few at a time and counted as they come: a result stops at ``max_rows`` + 1 rows
(``too_many_rows``) or past ``max_result_bytes`` (``result_too_big``), so a hostile result is never
pulled into Python whole. A query that would build one huge value a row is refused before it runs
(:func:`~fastdistill_assets.sqlsafe.parse.oversized_value`), since DuckDB computes 2,048 rows at once.

A SQLite connection reads its schema before the first deadline is set: parsing the schema of a
file with tens of thousands of tables (WikiSQL's train split has about 18,000) takes seconds,
and under a query's deadline every query would time out while the schema is still loading.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import psycopg
from sqlglot import exp

from fastdistill_assets.config.models import ExecutionGates
from fastdistill_assets.sqlsafe.bounded import ResultTooLarge, fetch_bounded
from fastdistill_assets.sqlsafe.duck_process import DuckProcess
from fastdistill_assets.sqlsafe.parse import oversized_value, parse_sql
from fastdistill_assets.sqlsafe.postgres import PostgresDatabase

_ALLOWED_SQLITE_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
MAX_VALUE_BYTES = 1_000_000  # SQLite refuses to build a longer value


@dataclass(frozen=True)
class ExecResult:
    ok: bool
    rows: list[tuple[Any, ...]] | None = None
    error: str | None = None
    detail: str | None = None
    elapsed_ms: float = 0.0


def _sqlite_authorizer(action: int, *_: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_SQLITE_ACTIONS else sqlite3.SQLITE_DENY


_ERROR_KINDS = [
    ("timeout", re.compile(r"interrupt|statement timeout", re.I)),
    ("not_authorized", re.compile(r"not authorized|authorization denied|read-?only|readonly|query_only|permission|external access", re.I)),
    ("no_such_table", re.compile(r"no such table|(table|relation) .* does not exist|catalog error: table", re.I)),
    ("no_such_column", re.compile(r"no such column|column .* (not found|does not exist)|referenced column", re.I)),
    ("syntax_error", re.compile(r"syntax error|parser error|incomplete input", re.I)),
    ("result_too_big", re.compile(r"too big|string or blob|out of memory|MemoryError", re.I)),
]


def classify_error(message: str) -> str:
    return next((kind for kind, pattern in _ERROR_KINDS if pattern.search(message)), "db_error")


class _SqliteDatabase:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)
        try:
            self.conn.execute("PRAGMA query_only = ON")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the schema, loaded without a deadline
        except sqlite3.Error:
            self.conn.close()
            raise
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.conn.set_authorizer(_sqlite_authorizer)
        self.conn.set_progress_handler(self._progress, 2000)
        self._deadline = 0.0

    def _progress(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0

    def fetch(self, sql: str, timeout_s: float, max_rows: int, max_bytes: int,
              params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._deadline = time.perf_counter() + timeout_s
        cursor = self.conn.execute(sql, tuple(params))
        try:
            return fetch_bounded(cursor, max_rows, max_bytes)
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()


K = TypeVar("K")
V = TypeVar("V")
GOLD_CACHE_SIZE = 4096  # gold results kept (a sample's candidates are gated together; the cache stays bounded)
VALUE_CACHE_SIZE = 65_536  # value lookups kept (candidates of a sample repeat the same literals)


def quote_identifier(name: str) -> str:
    """A double-quoted identifier, embedded quotes doubled (SQLite and DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


def _recently_used(cache: OrderedDict[K, V], key: K, size: int, compute: Callable[[], V]) -> V:
    """``cache[key]``, computed on a miss; the cache keeps its ``size`` most recently used entries."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = compute()
    if len(cache) > size:
        cache.popitem(last=False)
    return value


class Executor:
    """Runs read-only queries under the run's execution limits (:class:`ExecutionGates`); keeps one
    connection per database and the latest gold results."""

    def __init__(self, limits: ExecutionGates | None = None) -> None:
        self.limits = limits or ExecutionGates()
        self.timeout_s, self.max_rows = self.limits.timeout_ms / 1000, self.limits.max_rows
        self._dbs: dict[tuple[str, str], _SqliteDatabase | DuckProcess | PostgresDatabase] = {}
        self._gold: OrderedDict[tuple[str, str, str], ExecResult] = OrderedDict()
        self._values: OrderedDict[tuple[str, str, str, str, str, bool], bool | None] = OrderedDict()

    def _db(self, db_path: str, dialect: str) -> _SqliteDatabase | DuckProcess | PostgresDatabase:
        key = (db_path, dialect)
        if key not in self._dbs and dialect == "postgres":   # ``db_path``: the database's URL
            self._dbs[key] = PostgresDatabase(db_path)
        if key not in self._dbs:
            path = Path(db_path)
            if not path.exists():
                raise FileNotFoundError(f"database not found: {db_path}")
            self._dbs[key] = (DuckProcess(path, self.limits.engine_memory_mb) if dialect == "duckdb"
                              else _SqliteDatabase(path))
        return self._dbs[key]

    def run(self, db_path: str, dialect: str, sql: str, parsed: exp.Expr | None = None) -> ExecResult:
        """Run one query: refuse anything but one read query (unless ``parsed``, what
        :func:`parse_sql` already accepted, is given) and any that builds huge values, then
        :meth:`run_unchecked`."""
        started = time.perf_counter()
        if parsed is None:
            checked = parse_sql(sql, dialect)
            if not checked.ok:
                error = checked.error or "parse_error"
                kind = "not_authorized" if error.startswith("not_read_only") else "syntax_error"
                return ExecResult(False, None, kind, error, (time.perf_counter() - started) * 1000)
            parsed = checked.expression
            assert parsed is not None  # parse_sql gives the expression of every query it accepts
        if oversized := oversized_value(parsed):
            return ExecResult(False, None, "result_too_big", oversized, (time.perf_counter() - started) * 1000)
        return self.run_unchecked(db_path, dialect, sql)

    def run_unchecked(self, db_path: str, dialect: str, sql: str, params: Sequence[Any] = ()) -> ExecResult:
        """Run one query (``?`` placeholders bound to ``params``) under the engines' own guards and
        the result's bounds alone: for SQL this package builds, never for a candidate's."""
        started = time.perf_counter()
        try:
            rows = self._db(db_path, dialect).fetch(sql, self.timeout_s, self.max_rows, self.limits.max_result_bytes,
                                                    params)
        except ResultTooLarge as err:
            return ExecResult(False, None, err.kind, err.detail, (time.perf_counter() - started) * 1000)
        except (sqlite3.Error, duckdb.Error, psycopg.Error, FileNotFoundError, OverflowError, ValueError,
                MemoryError) as err:
            message = str(err)[:300] or type(err).__name__
            return ExecResult(False, None, classify_error(message) if not isinstance(err, FileNotFoundError)
                              else "no_database", message, (time.perf_counter() - started) * 1000)
        return ExecResult(True, [tuple(r) for r in rows], None, None, (time.perf_counter() - started) * 1000)

    def gold(self, db_path: str, dialect: str, gold_sql: str) -> ExecResult:
        return _recently_used(self._gold, (db_path, dialect, gold_sql), GOLD_CACHE_SIZE,
                              lambda: self.run(db_path, dialect, gold_sql))

    def value_exists(self, db_path: str, dialect: str, table: str, column: str, value: str,
                     case_sensitive: bool = False) -> bool | None:
        """Whether ``value`` occurs in ``table.column``: equal to it as the database compares (a REAL
        10.0 and '10'; in DuckDB a TIMESTAMP and '2020-01-01') or as text (alone where the database
        cannot compare the two: DuckDB's INTEGER and 'abc'); None when it could not be checked.

        One bound-parameter ``LIMIT 1`` read under the run's timeout; a missing table or column, a
        timeout or any other database error gives None, never an exception. Answers are cached.
        """
        return _recently_used(self._values, (db_path, dialect, table, column, value, case_sensitive),
                              VALUE_CACHE_SIZE, lambda: self._lookup(db_path, dialect, table, column, value,
                                                                     case_sensitive))

    def _lookup(self, db_path: str, dialect: str, table: str, column: str, value: str,
                case_sensitive: bool) -> bool | None:
        # Qualified, because SQLite reads an unqualified "name" that is no column as the string 'name'.
        column_sql = f"{quote_identifier(table)}.{quote_identifier(column)}"
        text = f"CAST({column_sql} AS TEXT)"
        as_text = f"{text} = ?" if case_sensitive else f"lower({text}) = lower(?)"
        native = f"SELECT 1 FROM {quote_identifier(table)} WHERE {column_sql} = ? OR {as_text} LIMIT 1"
        text_only = f"SELECT 1 FROM {quote_identifier(table)} WHERE {as_text} LIMIT 1"
        found: bool | None = None
        for sql, params in ((native, (value, value)), (text_only, (value,))):
            try:
                found = bool(self._db(db_path, dialect).fetch(sql, self.timeout_s, 1, self.limits.max_result_bytes,
                                                              params))
            except (duckdb.ConversionException, psycopg.errors.DataError):
                continue  # the column's type cannot hold the value: compare as text alone
            except Exception:  # noqa: BLE001 - a lookup that fails is missing evidence, not a verdict
                found = None
            break
        return found

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
