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
