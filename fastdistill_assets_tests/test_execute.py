"""Execution on real SQLite and DuckDB files, including hostile queries."""

import time

import pytest

from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets_tests.db_fixtures import RUNAWAY, file_hash, make_duckdb, make_sqlite

HOSTILE = [
    "DROP TABLE player",
    "DELETE FROM player",
    "INSERT INTO player VALUES ('x', 'y', 1, 1.0)",
    "UPDATE player SET goals = 0",
    "CREATE TABLE evil (a)",
    "ATTACH DATABASE '{other}' AS other",
    "PRAGMA user_version = 7",
    "VACUUM",
]
CARTESIAN = "SELECT count(*) FROM nums a, nums b, nums c, nums d"
WIDE = "SELECT a.n, b.n FROM nums a, nums b"


@pytest.fixture(params=["sqlite", "duckdb"])
def database(request, tmp_path):
    maker = make_sqlite if request.param == "sqlite" else make_duckdb
    return maker(tmp_path / f"db.{request.param}"), request.param


def test_reads_work_and_reuse_one_connection(database):
    path, dialect = database
    with Executor() as executor:
        first = executor.run(str(path), dialect, "SELECT name FROM player WHERE club = 'Porto' ORDER BY name")
        second = executor.run(str(path), dialect, "SELECT count(*) FROM player")
        assert first.ok and first.rows == [("Ana",), ("Cai",)]
        assert second.ok and second.rows == [(4,)]
        assert len(executor._dbs) == 1


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_statements_never_change_the_database(database, sql, tmp_path):
    path, dialect = database
    before = file_hash(path)
    with Executor() as executor:
        result = executor.run(str(path), dialect, sql.format(other=tmp_path / "other.db"))
    assert not result.ok and result.error in {"not_authorized", "db_error"}, result
    assert file_hash(path) == before
    assert not (tmp_path / "other.db").exists()


def test_runaway_query_is_interrupted(database):
    path, dialect = database
    with Executor(timeout_ms=300) as executor:
        started = time.perf_counter()
        result = executor.run(str(path), dialect, RUNAWAY)
        assert result.error == "timeout"
        assert time.perf_counter() - started < 5
        assert executor.run(str(path), dialect, "SELECT count(*) FROM player").rows == [(4,)]


def test_cartesian_blowup_is_bounded(database):
    path, dialect = database
    with Executor(timeout_ms=300, max_rows=1000) as executor:
        assert executor.run(str(path), dialect, CARTESIAN).error == "timeout"
        assert executor.run(str(path), dialect, WIDE).error == "too_many_rows"


def test_sqlite_huge_values_are_refused(tmp_path):
    path = make_sqlite(tmp_path / "db.sqlite")
    with Executor() as executor:
        result = executor.run(str(path), "sqlite", "SELECT zeroblob(100000000)")
    assert not result.ok and result.error == "too_big"


def test_duckdb_cannot_read_files(tmp_path):
    path = make_duckdb(tmp_path / "db.duckdb")
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with Executor() as executor:
        result = executor.run(str(path), "duckdb", f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")
    assert not result.ok and result.error == "not_authorized"


def test_missing_database_and_errors_are_classified(tmp_path):
    path = make_sqlite(tmp_path / "db.sqlite")
    with Executor() as executor:
        assert executor.run(str(tmp_path / "nope.db"), "sqlite", "SELECT 1").error == "no_database"
        assert executor.run(str(path), "sqlite", "SELECT nope FROM player").error == "no_such_column"
        assert executor.run(str(path), "sqlite", "SELECT name FROM nope").error == "no_such_table"


def test_engine_level_guards_hold_even_without_the_parse_check(tmp_path):
    """SQLite's authorizer and mode=ro refuse writes even when the caller skips the parse gate."""
    path = make_sqlite(tmp_path / "db.sqlite")
    before = file_hash(path)
    with Executor() as executor:
        for sql in HOSTILE:
            result = executor.run(str(path), "sqlite", sql.format(other=tmp_path / "o.db"), read_only_checked=True)
            assert not result.ok and result.error == "not_authorized", (sql, result)
    assert file_hash(path) == before and not (tmp_path / "o.db").exists()


def test_a_schema_slower_to_parse_than_the_deadline_does_not_time_out_every_query(tmp_path):
    """Opening a SQLite file parses its whole schema (seconds for WikiSQL-size files of tens of
    thousands of tables): that must not count against the first query's deadline, or every query
    on the connection times out while the schema loads."""
    import sqlite3

    path = tmp_path / "many_tables.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("".join(f"CREATE TABLE t{i} (a INTEGER, b TEXT, c REAL);" for i in range(6000)))
        conn.execute("INSERT INTO t5999 VALUES (1, 'x', 2.5)")
    started = time.perf_counter()
    sqlite3.connect(path).execute("SELECT count(*) FROM sqlite_master").fetchone()
    assert time.perf_counter() - started > 0.002          # the schema takes longer than the deadline below
    with Executor(timeout_ms=1) as executor:
        assert executor.run(str(path), "sqlite", "SELECT a, b FROM t5999").rows == [(1, "x")]
        assert executor.run(str(path), "sqlite", "SELECT count(*) FROM t0").rows == [(0,)]


def test_gold_results_are_kept_for_the_latest_queries_only(tmp_path, monkeypatch):
    from fastdistill_assets.sqlsafe import execute

    monkeypatch.setattr(execute, "GOLD_CACHE_SIZE", 2)
    path = str(make_sqlite(tmp_path / "db.sqlite"))
    with Executor() as executor:
        queries = [f"SELECT count(*) + {i} FROM player" for i in range(3)]
        assert [executor.gold(path, "sqlite", q).rows for q in queries] == [[(4,)], [(5,)], [(6,)]]
        assert list(executor._gold) == [(path, "sqlite", q) for q in queries[1:]]
        executor.gold(path, "sqlite", queries[1])                       # a hit moves to the end
        assert list(executor._gold)[-1] == (path, "sqlite", queries[1])
