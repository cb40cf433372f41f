"""Small real SQLite and DuckDB databases for the gate tests."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import duckdb

ROWS = [("Ana", "Porto", 12, 1.5), ("Ben", "Lyon", 7, 2.25), ("Cai", "Porto", 3, 0.1), ("Dee", "Oslo", 7, 4.0)]


def make_sqlite(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE player (name TEXT, club TEXT, goals INTEGER, rating REAL)")
    db.executemany("INSERT INTO player VALUES (?, ?, ?, ?)", ROWS)
    db.execute("CREATE TABLE nums (n INTEGER)")
    db.executemany("INSERT INTO nums VALUES (?)", [(i,) for i in range(300)])
    db.commit()
    db.close()
    return path


def make_duckdb(path: Path) -> Path:
    db = duckdb.connect(str(path))
    db.execute("CREATE TABLE player (name TEXT, club TEXT, goals INTEGER, rating DOUBLE)")
    db.executemany("INSERT INTO player VALUES (?, ?, ?, ?)", [list(r) for r in ROWS])
    db.execute("CREATE TABLE nums AS SELECT range AS n FROM range(300)")
    db.close()
    return path


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SALES = [("North", "Tea", 120, 2023), ("North", "Coffee", 80, 2024), ("South", "Tea", 45, 2024),
         ("South", "Cocoa", 60, 2023), ("East", "Coffee", 200, 2024), ("West", "Tea", 15, 2022)]
STORES = [("Harbor", "Porto"), ("Central", "Lyon"), ("Lakeside", "Oslo")]


def write_tables(path: Path, tables: dict[str, list[tuple]]) -> Path:
    """A SQLite or DuckDB file (by its suffix, ``.duckdb``) with each ``CREATE TABLE name (...)``
    statement of ``tables`` run and its rows inserted."""
    db = duckdb.connect(str(path)) if path.suffix == ".duckdb" else sqlite3.connect(path)
    for create, rows in tables.items():
        db.execute(create)
        if rows:
            name = create.split()[2]
            db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(rows[0]))})", [list(r) for r in rows])
    if path.suffix != ".duckdb":
        db.commit()
    db.close()
    return path


def make_shop(path: Path) -> Path:
    """A two-table shop database (sales, stores), SQLite or DuckDB by the file suffix."""
    return write_tables(path, {"CREATE TABLE sales (region TEXT, product TEXT, amount INTEGER, year INTEGER)": SALES,
                               "CREATE TABLE stores (store_name TEXT, city TEXT)": STORES})

# A query that never ends on its own (the executor must interrupt it).
RUNAWAY = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
