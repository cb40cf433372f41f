"""Candidate SQL against a real PostgreSQL server the tests start: read-only, bounded, refused
before it runs where it would read files, sleep, lock or write (issue 23, item 3)."""

import time
from pathlib import Path

import psycopg
import pytest

from fastdistill_assets.config.models import ExecutionGates
from fastdistill_assets.sqlsafe.execute import Executor

SCHEMA = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, city text);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer REFERENCES customers(id),
                     amount numeric(10, 2), placed date);
CREATE SEQUENCE order_numbers;
INSERT INTO customers VALUES (1, 'Ana', 'Lisbon'), (2, 'Ben', 'Porto'), (3, 'Chloe', 'Lisbon');
INSERT INTO orders VALUES (10, 1, 12.50, '2024-01-03'), (11, 1, 7.25, '2024-02-11'), (12, 2, 30.00, '2024-02-12'),
                          (13, 3, 4.75, '2024-03-01');
"""
TABLES = ("customers", "orders")
WRITTEN = Path("/tmp/fastdistill-hostile-copy.txt")


@pytest.fixture
def shop(postgres_server) -> str:
    """A fresh ``shop`` database (customers, orders with a foreign key); its URL."""
    return postgres_server.fresh_database("shop", SCHEMA)


def _checksums(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as db:
        return {table: db.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                                  f"FROM {table} t").fetchone()[0] for table in TABLES}


def _our_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fastdistill'").fetchone()[0]


def test_reads_rows_in_its_own_types_and_looks_values_up(shop):
    with Executor() as executor:
        result = executor.run(shop, "postgres",
                              "SELECT c.name, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id "
                              "GROUP BY c.name ORDER BY c.name")
        assert result.ok and [(name, float(total)) for name, total in result.rows] == [
            ("Ana", 19.75), ("Ben", 30.0), ("Chloe", 4.75)]
        assert executor.run(shop, "postgres", "SELECT name FROM customers WHERE name LIKE '%n%' ORDER BY name").rows \
            == [("Ana",), ("Ben",)]                   # a % in the SQL is no placeholder
        assert executor.value_exists(shop, "postgres", "customers", "city", "lisbon") is True
        assert executor.value_exists(shop, "postgres", "customers", "city", "Madrid") is False
        assert executor.value_exists(shop, "postgres", "orders", "amount", "30") is True
        assert executor.value_exists(shop, "postgres", "orders", "amount", "thirty") is False   # compared as text
        assert executor.run(shop, "postgres", "SELECT nme FROM customers").error == "no_such_column"
        assert executor.run(shop, "postgres", "SELECT * FROM clients").error == "no_such_table"
        assert executor.run(shop, "postgres", "SELEC 1").error == "syntax_error"
        assert _our_connections(shop) == 1            # one connection, reused
    assert _our_connections(shop) == 0                # and closed with the executor


# (query, verdict): every one is refused before it runs, refused by the read-only transaction, or
# stopped by its bounds; none changes a table, creates a file or outlives its time limit.
HOSTILE = {
    "insert": ("INSERT INTO customers VALUES (9, 'Eve', 'Nowhere')", "not_authorized"),
    "update_in_cte": ("WITH x AS (UPDATE orders SET amount = 0 RETURNING 1) SELECT * FROM x", "not_authorized"),
    "delete": ("DELETE FROM orders", "not_authorized"),
    "drop": ("DROP TABLE orders", "not_authorized"),
    "create_table": ("CREATE TABLE t AS SELECT 1", "not_authorized"),
    "select_into": ("SELECT * INTO stolen FROM customers", "not_authorized"),
    "stacked": ("SELECT 1; DELETE FROM orders", "syntax_error"),
    "read_file": ("SELECT pg_read_file('/etc/passwd')", "not_authorized"),
    "list_dir": ("SELECT pg_ls_dir('.')", "not_authorized"),
    "large_object": ("SELECT lo_import('/etc/passwd')", "not_authorized"),
    "copy_to_file": (f"COPY customers TO '{WRITTEN}'", "not_authorized"),
    "copy_program": ("COPY customers TO PROGRAM 'touch /tmp/fastdistill-hostile-program'", "not_authorized"),
    "extension": ("CREATE EXTENSION dblink", "not_authorized"),
    "dblink": ("SELECT dblink('dbname=postgres', 'DROP TABLE orders')", "not_authorized"),
    "do_block": ("DO $$ BEGIN DELETE FROM orders; END $$", "not_authorized"),
    "call": ("CALL some_procedure()", "not_authorized"),
    "listen": ("LISTEN channel", "not_authorized"),
    "notify": ("SELECT pg_notify('channel', 'x')", "not_authorized"),
    "sleep": ("SELECT pg_sleep(30)", "not_authorized"),
    "set_config": ("SELECT set_config('default_transaction_read_only', 'off', false)", "not_authorized"),
    "terminate": ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "not_authorized"),
    "sequence": ("SELECT nextval('order_numbers')", "not_authorized"),
    "for_update": ("SELECT * FROM orders FOR UPDATE", "not_authorized"),
    "runaway_cte": ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
                    "timeout"),
    "cartesian_1e8": ("SELECT a.x, b.x FROM generate_series(1, 10000) a(x), generate_series(1, 10000) b(x)",
                      "too_many_rows"),
    "cartesian_count": ("SELECT count(*) FROM generate_series(1, 100000) a(x), generate_series(1, 100000) b(x)",
                        "timeout"),
}


def test_the_hostile_suite_changes_nothing_and_ends_within_its_limits(shop):
    before = _checksums(shop)
    WRITTEN.unlink(missing_ok=True)
    limit_s = 1.0
    verdicts, slowest = {}, 0.0
    with Executor(ExecutionGates(timeout_ms=int(limit_s * 1000))) as executor:
        for name, (sql, _) in HOSTILE.items():
            started = time.perf_counter()
            result = executor.run(shop, "postgres", sql)
            slowest = max(slowest, time.perf_counter() - started)
            verdicts[name] = result.error
        assert executor.run(shop, "postgres", "SELECT count(*) FROM orders").rows == [(4,)]   # still usable
    assert verdicts == {name: verdict for name, (_, verdict) in HOSTILE.items()}
    assert slowest < 1.5 * limit_s + 0.5
    assert _checksums(shop) == before
    assert not WRITTEN.exists() and not Path("/tmp/fastdistill-hostile-program").exists()
    assert _our_connections(shop) == 0


def test_the_read_only_transaction_holds_where_the_parser_cannot_see(shop):
    """A write the parse-level guard cannot see (inside a function body) still fails: the
    transaction is read-only, and it is rolled back."""
    with psycopg.connect(shop, autocommit=True) as admin:
        admin.execute("CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS "
                      "$$ DELETE FROM orders RETURNING 1 $$")
    before = _checksums(shop)
    with Executor() as executor:
        result = executor.run(shop, "postgres", "SELECT sneaky()")
    assert result.error == "not_authorized" and "read-only transaction" in result.detail
    assert _checksums(shop) == before


def test_an_unreachable_server_is_a_database_error_not_a_crash(postgres_server):
    with Executor() as executor:
        result = executor.run(postgres_server.url("no_such_database"), "postgres", "SELECT 1")
    assert not result.ok and result.error == "db_error" and "no_such_database" in result.detail
