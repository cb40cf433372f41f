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
