"""A PostgreSQL database, queried read-only and bounded (issue "Distill over the user's own
PostgreSQL database").

One connection per database (per worker process). Every query runs in a ``READ ONLY``
transaction that is always rolled back, under ``statement_timeout`` (the run's ``timeout_ms``),
and its rows come through a server-side cursor a few at a time, counted as they come
(:func:`~fastdistill_assets.sqlsafe.bounded.fetch_bounded`): the server never sends a hostile
result whole. The session itself is read-only by default and ends an idle transaction after
``idle_in_transaction_session_timeout``. The parse-level guard
(:func:`~fastdistill_assets.sqlsafe.parse.postgres_violation`) refuses PostgreSQL's functions
that read files, sleep, lock, signal or reach other servers before anything runs.

A password is never part of the URL a config holds: it comes from the environment variable
the config names (``PGPASSWORD`` by default, as libpq reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from fastdistill_assets.sqlsafe.bounded import fetch_bounded

IDLE_IN_TRANSACTION_S = 60   # the server ends a transaction this worker left open (a killed step)
CONNECT_TIMEOUT_S = 10


class PostgresDatabase:
    """``url``: ``postgresql://user@host:port/dbname`` (libpq reads the password from its
    environment). Raises ``psycopg.Error`` when the server cannot be reached."""

    def __init__(self, url: str) -> None:
        self.url = url
        options = f"-c default_transaction_read_only=on -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S}s"
        self.conn = psycopg.connect(url, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S,
                                    application_name="fastdistill", options=options)

    def fetch(self, sql: str, timeout_s: float, max_rows: int, max_bytes: int,
              params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (``?`` placeholders, as for SQLite and DuckDB, when ``params`` are
        given: SQL this package builds), in a read-only transaction rolled back afterwards."""
        try:
            self.conn.execute("SET TRANSACTION READ ONLY")
            self.conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{max(1, int(timeout_s * 1000))}",))
            with self.conn.cursor(name="fastdistill_query") as cursor:
                cursor.execute(sql.replace("?", "%s") if params else sql, tuple(params) if params else None)
                return fetch_bounded(cursor, max_rows, max_bytes)
        finally:
            self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
