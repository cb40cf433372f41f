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

A password is never part of the URL a config holds (one that is, is refused): it comes from the
environment variable the URL's ``password_env`` parameter names, or from libpq's own
``PGPASSWORD`` / ``~/.pgpass``, at connect time; it is never stored, frozen or logged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from fastdistill_assets.config.models import POSTGRES_SCHEMES, checked_postgres_url
from fastdistill_assets.sqlsafe.bounded import fetch_bounded

IDLE_IN_TRANSACTION_S = 60   # the server ends a transaction this worker left open (a killed step)
CONNECT_TIMEOUT_S = 10


PASSWORD_ENV = "password_env"  # the URL's query parameter that names the password's environment variable


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)


def with_password_env(url: str, password_env: str | None) -> str:
    """``url`` naming the environment variable that holds its password (its value is read only
    when connecting); ``url`` itself without one."""
    if password_env is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != PASSWORD_ENV]
    return urlunsplit(parts._replace(query=urlencode([*query, (PASSWORD_ENV, password_env)])))


def shown(location: str) -> str:
    """A database's location for a message: a URL without its query (a file path as it is)."""
    return urlunsplit(urlsplit(location)._replace(query="")) if is_postgres_url(location) else location


def connection_target(url: str) -> tuple[str, str | None]:
    """(the URL libpq is given, the password from the environment variable its ``password_env``
    parameter names, or None to let libpq find one: ``PGPASSWORD``, ``~/.pgpass``).

    Raises:
        ValueError: the URL holds a password, or names an environment variable that is not set.
    """
    parts = urlsplit(checked_postgres_url(url))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    names = [v for k, v in query if k == PASSWORD_ENV]
    plain = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != PASSWORD_ENV])))
    if not names:
        return plain, None
    if names[-1] not in os.environ:
        raise ValueError(f"the environment variable {names[-1]} (dataset.password_env) is not set")
    return plain, os.environ[names[-1]]


class PostgresDatabase:
    """``url``: ``postgresql://user@host:port/dbname``, with ``?password_env=NAME`` where the
    password is in the environment variable NAME (see :func:`connection_target`).

    Raises:
        ValueError: see :func:`connection_target`.
        psycopg.Error: the server cannot be reached or refuses the login.
    """

    def __init__(self, url: str) -> None:
        target, password = connection_target(url)
        options = f"-c default_transaction_read_only=on -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S}s"
        extra: dict[str, Any] = {"password": password} if password is not None else {}
        self.conn = psycopg.connect(target, autocommit=False, connect_timeout=CONNECT_TIMEOUT_S,
                                    application_name="fastdistill", options=options, **extra)

    def fetch(self, sql: str, timeout_s: float, max_rows: int, max_bytes: int,
              params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (``?`` placeholders, as for SQLite and DuckDB, when ``params`` are
        given: SQL this package builds), in a read-only transaction rolled back afterwards."""
        try:
            # one round trip: our own integer, no parameters (several statements may not take any)
            self.conn.execute(f"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            with self.conn.cursor(name="fastdistill_query") as cursor:
                cursor.execute(sql.replace("?", "%s") if params else sql, tuple(params) if params else None)
                return fetch_bounded(cursor, max_rows, max_bytes)
        finally:
            self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
