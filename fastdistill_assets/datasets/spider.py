"""Loader for the Spider / BIRD format.

``questions.json`` (or ``{split}.json``): a list of ``{db_id, question, query}`` (BIRD's
``SQL`` key is accepted too); one SQLite file per ``db_id`` at
``database/<db_id>/<db_id>.sqlite`` (Spider), ``<db_id>/<db_id>.sqlite`` or ``<db_id>.sqlite``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.sqlite_schema import connect_read_only, table_ddl, table_names, sample_rows as read_rows


def find_database(folder: Path, db_id: str) -> Path | None:
    for candidate in (folder / "database" / db_id / f"{db_id}.sqlite", folder / db_id / f"{db_id}.sqlite",
                      folder / f"{db_id}.sqlite"):
        if candidate.exists():
            return candidate
    return None


def questions_file(folder: Path, split: str) -> Path:
    for candidate in (folder / f"{split}.json", folder / split / "questions.json", folder / "questions.json"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no questions file for split {split!r} in {folder} ({split}.json or questions.json)")


class _Databases:
    """One read-only connection, schema text and sample rows per db_id."""

    def __init__(self, folder: Path, sample_rows: int) -> None:
        self.folder, self.sample_rows = folder, sample_rows
        self._cache: dict[str, tuple[sqlite3.Connection, str, list[list[Any]], Path] | None] = {}

    def get(self, db_id: str) -> tuple[sqlite3.Connection, str, list[list[Any]], Path] | None:
        if db_id not in self._cache:
            path = find_database(self.folder, db_id)
            if path is None:
                self._cache[db_id] = None
            else:
                conn = connect_read_only(path)
                first = (table_names(conn) or [None])[0]
                rows = read_rows(conn, first, self.sample_rows) if first else []
                self._cache[db_id] = (conn, table_ddl(conn), rows, path)
        return self._cache[db_id]

    def close(self) -> None:
        for entry in self._cache.values():
            if entry:
                entry[0].close()


def load_split(folder: Path, split: str, *, sample_rows: int = 3, limit: int | None = None) -> list[dict[str, Any]]:
    """Load one split into raw records, validating each gold query by executing it."""
    path = questions_file(folder, split)
    try:
        items = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of questions")
    databases = _Databases(folder, sample_rows)
    rows: list[dict[str, Any]] = []
    try:
        for index, item in enumerate(items[:limit] if limit is not None else items):
            rows.append(_load_item(item, f"{split}:{index}", split, databases))
    finally:
        databases.close()
    return rows


def _load_item(item: Any, source_id: str, split: str, databases: _Databases) -> dict[str, Any]:
    if not isinstance(item, dict):
        return records.rejected(source_id=source_id, split=split, reason="malformed_record", record=item)
    query = item.get("query", item.get("SQL"))
    for key, value in (("db_id", item.get("db_id")), ("question", item.get("question")), ("query", query)):
        if not isinstance(value, str) or not value.strip():
            return records.rejected(source_id=source_id, split=split, reason=f"missing_field:{key}", record=item)
    entry = databases.get(item["db_id"])
    if entry is None:
        return records.rejected(source_id=source_id, split=split, reason="unknown_database", record=item)
    conn, ddl, rows, db_path = entry
    try:
        conn.execute(query).fetchmany(1)
    except sqlite3.Error as err:
        return records.rejected(source_id=source_id, split=split, reason="gold_sql_failed", record=item,
                                detail=str(err))
    return records.good(source_id=source_id, split=split, db_id=item["db_id"], question=item["question"],
                        gold_sql=query.strip(), db_path=str(db_path.resolve()), dialect="sqlite", schema=ddl,
                        sample_rows=rows)
