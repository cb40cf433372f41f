"""Grounded literals: which string comparisons a query makes, and whether each value is in its column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fastdistill_assets.config.models import ExecutionGates
from fastdistill_assets.gates.grounding import (
    LiteralUse,
    first_ungrounded,
    string_literal_uses,
)
from fastdistill_assets.sqlsafe import execute
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.sqlsafe.parse import parse_sql
from fastdistill_assets_tests.db_fixtures import write_tables

U = LiteralUse

USES = [
    ("SELECT * FROM t AS a WHERE a.c = 'x'", [U("t", "c", "x")]),
    ("SELECT * FROM t a WHERE A.c = 'x'", [U("t", "c", "x")]),
    ("SELECT col1 FROM t WHERE col6 = 'rIeland'", [U("t", "col6", "rIeland")]),
    ("SELECT * FROM t WHERE 'x' = c", [U("t", "c", "x")]),
    ("SELECT * FROM t WHERE c IN ('a', 'b', 3, NULL, 'a')", [U("t", "c", "a"), U("t", "c", "b")]),
    ("SELECT * FROM t WHERE c NOT IN ('a')", [U("t", "c", "a")]),
    ("SELECT * FROM t WHERE c != 'x' AND d <> 'y'", [U("t", "c", "x"), U("t", "d", "y")]),
    ("SELECT * FROM t WHERE c LIKE 'Brazil' AND d LIKE 'Bra%' AND e LIKE 'B_azil'", [U("t", "c", "Brazil", like="like")]),
    ("SELECT * FROM t WHERE c ILIKE 'brazil' AND d ILIKE '%x'", [U("t", "c", "brazil", like="ilike")]),
    ("SELECT * FROM t WHERE 'Brazil' LIKE c", []),
    ("SELECT * FROM t WHERE c = 3 AND d = 2.5 AND e = NULL AND f IS NULL AND g = h", []),
    ("SELECT * FROM t WHERE lower(c) = 'x' AND c = 'a' || 'b'", []),
    ("SELECT p.name FROM player AS p JOIN club AS c ON p.club_id = c.id WHERE c.city = 'Porto' AND p.pos = 'GK'",
     [U("club", "city", "Porto"), U("player", "pos", "GK")]),
    ("SELECT * FROM player JOIN club ON player.club_id = club.id WHERE club.city = 'Porto'",
     [U("club", "city", "Porto")]),
    ("SELECT * FROM player p JOIN club c ON p.club_id = c.id WHERE city = 'Porto'", []),  # ambiguous: skipped
    ("SELECT * FROM player WHERE club_id IN (SELECT id FROM club WHERE city = 'Oslo') AND name = 'Ana'",
     [U("club", "city", "Oslo"), U("player", "name", "Ana")]),
    ("SELECT * FROM player p WHERE EXISTS (SELECT 1 FROM club c WHERE c.id = p.club_id AND p.pos = 'GK')",
     [U("player", "pos", "GK")]),
    ("WITH c AS (SELECT name AS n FROM player WHERE pos = 'GK') SELECT * FROM c WHERE c.n = 'Ana' AND n = 'Ben'",
     [U("player", "pos", "GK")]),
    ("SELECT * FROM (SELECT name FROM player WHERE pos = 'GK') AS d WHERE d.name = 'Ana'",
     [U("player", "pos", "GK")]),
    ("SELECT name AS n FROM player WHERE n = 'Ana'", []),  # an output alias, not a column
    ("SELECT a FROM t1 WHERE a = 'x' UNION SELECT b FROM t2 WHERE b = 'y'", [U("t1", "a", "x"), U("t2", "b", "y")]),
    ('SELECT * FROM "my table" AS m WHERE m."my col" = \'x\'', [U("my table", "my col", "x")]),
    ("SELECT count(*) FROM t GROUP BY c HAVING c = 'x'", [U("t", "c", "x")]),
    ("SELECT c AS k, count(*) FROM t GROUP BY c HAVING k = 'x' OR t.c = 'y'", [U("t", "c", "y")]),
    ("SELECT * FROM t WHERE c = 'x' AND c = 'x' AND d = 'x'", [U("t", "c", "x"), U("t", "d", "x")]),
    ("SELECT 'x' = 'x', 1 FROM t", []),
]


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb"])
@pytest.mark.parametrize(("sql", "expected"), USES)
def test_string_literal_uses(sql, expected, dialect):
    parsed = parse_sql(sql, dialect)
    assert parsed.ok, parsed.error
    assert string_literal_uses(parsed.expression, dialect) == expected


def test_first_ungrounded_skips_unchecked_and_found_values():
    uses = [U("t", "a", "ok"), U("t", "b", "unknown"), U("t", "c", "bad"), U("t", "d", "worse")]
    verdicts = {"ok": True, "unknown": None, "bad": False, "worse": False}
    assert first_ungrounded(uses, lambda use: verdicts[use.value]) == U("t", "c", "bad")
    assert first_ungrounded(uses[:2], lambda use: verdicts[use.value]) is None
    assert first_ungrounded([], lambda use: False) is None


ROWS = [("Ireland", 3, "x"), ("Brazil", 7, "y"), (None, 12, None), ("O'Brien", 5, "z")]


@pytest.fixture(params=["sqlite", "duckdb"])
def countries(request, tmp_path):
    """A ``country`` table with a text column, an integer column and a column whose name holds a quote."""
    path = write_tables(tmp_path / f"countries.{request.param}",
                        {'CREATE TABLE country (name TEXT, code INTEGER, "odd ""col""" TEXT)': ROWS})
    return str(path), request.param


LOOKUPS = [
    ("name", "Ireland", False, True),
    ("name", "Ireland", True, True),
    ("name", "ireLAND", False, True),
    ("name", "ireLAND", True, False),
    ("name", "rIeland", True, False),
    ("name", "Brzail", False, False),
    ("name", "O'Brien", False, True),
    ("name", "", False, False),
    ("code", "3", False, True),
    ("code", "4", False, False),
    ('odd "col"', "Y", False, True),
    ("missing", "Ireland", False, None),
    ("missing", "missing", False, None),  # SQLite would read an unqualified "missing" as a string
]


@pytest.mark.parametrize(("column", "value", "case_sensitive", "expected"), LOOKUPS)
def test_value_exists(countries, column, value, case_sensitive, expected):
    path, dialect = countries
    with Executor() as executor:
        assert executor.value_exists(path, dialect, "country", column, value, case_sensitive) is expected


def test_value_exists_without_table_or_database(countries, tmp_path):
    path, dialect = countries
    with Executor() as executor:
        assert executor.value_exists(path, dialect, "nowhere", "name", "Ireland") is None
        assert executor.value_exists(str(tmp_path / "absent.db"), dialect, "country", "name", "Ireland") is None
        assert executor.run(path, dialect, "SELECT count(*) FROM country").rows == [(4,)]  # the connection still works


def test_a_slow_lookup_is_interrupted_and_unknown(tmp_path):
    path = tmp_path / "big.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE big AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 200000) "
               "SELECT i, 'v' || i AS v FROM r")
    db.commit()
    db.close()
    with Executor(ExecutionGates(timeout_ms=1)) as executor:
        assert executor.value_exists(str(path), "sqlite", "big", "v", "nope") is None


def test_value_lookups_are_cached_and_bounded(countries, monkeypatch):
    path, dialect = countries
    monkeypatch.setattr(execute, "VALUE_CACHE_SIZE", 2)
    with Executor() as executor:
        assert executor.value_exists(path, dialect, "country", "name", "Brazil") is True
        assert (path, dialect, "country", "name", "Brazil", False) in executor._values
        executor.close()
        Path(path).unlink()  # answered from the cache: the file is gone
        assert executor.value_exists(path, dialect, "country", "name", "Brazil") is True
        executor.value_exists(path, dialect, "country", "name", "Chile")
        executor.value_exists(path, dialect, "country", "name", "Peru")
        assert list(executor._values) == [(path, dialect, "country", "name", v, False) for v in ("Chile", "Peru")]


def test_gate_end_to_end(countries):
    path, dialect = countries
    sql = "SELECT code FROM country AS c WHERE c.name = 'Ireland' OR c.name IN ('Brzail', 'rIeland')"
    uses = string_literal_uses(parse_sql(sql, dialect).expression, dialect)
    with Executor() as executor:
        def exists(use: LiteralUse) -> bool | None:
            return executor.value_exists(path, dialect, use.table, use.column, use.value, case_sensitive=True)

        assert first_ungrounded(uses, exists) == U("country", "name", "Brzail")
        assert first_ungrounded(uses[:1], exists) is None


@pytest.mark.parametrize("dialect, ddl, stored, value, expected", [
    ("sqlite", "v REAL", 10.0, "10", True),                       # numeric affinity: 10.0 = '10'
    ("sqlite", "v REAL", 10.0, "11", False),
    ("duckdb", "v TIMESTAMP", "2020-01-01", "2020-01-01", True),  # the database's own comparison
    ("duckdb", "v DECIMAL(5, 2)", 5, "5", True),
    ("duckdb", "v DECIMAL(5, 2)", 5, "6", False),
    ("duckdb", "v TIMESTAMP", "2020-01-01", "not a time", False),  # no such text either
    ("duckdb", "v INTEGER", 3, "abc", False),
])
def test_value_exists_on_typed_columns(tmp_path, dialect, ddl, stored, value, expected):
    """A query that returns rows on a typed column is never called ungrounded."""
    path = write_tables(tmp_path / f"typed.{'duckdb' if dialect == 'duckdb' else 'sqlite'}",
                        {f"CREATE TABLE t ({ddl})": [(stored,)]})
    with Executor() as executor:
        assert executor.value_exists(str(path), dialect, "t", "v", value) is expected
