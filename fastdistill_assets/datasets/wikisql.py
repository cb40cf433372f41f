"""Loader for the WikiSQL format.

Files per split: ``{split}.jsonl`` (questions with ``sel``/``agg``/``conds`` sketches),
``{split}.tables.jsonl`` (header, types, rows) and ``{split}.db`` (SQLite; one table
``table_<id>`` per table id, dashes as underscores, columns ``col0..colN``). Each gold
sketch becomes executable SQL, checked by running it; a row that cannot be loaded becomes a
reject record with its reason.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlglot import exp

from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.sqlite_schema import connect_read_only
from fastdistill_assets.sqlsketch import AGGS, literal, select_sql

COND_OPS = ["=", ">", "<", "OP"]  # WikiSQL's operator codes; "OP" is unused in the data


def table_name(table_id: str) -> str:
    """The SQLite table name WikiSQL uses for a table id."""
    return "table_" + table_id.replace("-", "_")


def schema_text(table_id: str, header: list[str], types: list[str]) -> str:
    """DDL with each ``colN`` annotated by its human header, as shown to the teacher."""
    lines = [
        f"  col{i} {'REAL' if t == 'real' else 'TEXT'}{',' if i < len(header) - 1 else ''} -- {h}"
        for i, (h, t) in enumerate(zip(header, types, strict=True))
    ]
    return f"CREATE TABLE {table_name(table_id)} (\n" + "\n".join(lines) + "\n)"


def _literal(value: Any, col_type: str, lower: bool) -> exp.Expression:
    if col_type == "real" and not isinstance(value, bool):
        try:
            number = float(str(value).replace(",", ""))
        except ValueError:
            pass
        else:
            return literal(int(number) if number.is_integer() else number, numeric=True)
    text = str(value)
    return literal(text.lower() if lower else text, numeric=False)


def sketch_to_sql(table_id: str, sketch: dict[str, Any], types: list[str], lower_values: bool = False) -> str:
    """Turn a WikiSQL ``{sel, agg, conds}`` sketch into SQLite SQL.

    Raises:
        ValueError: an index or operator is out of range.
    """
    sel, agg, conds = sketch["sel"], sketch["agg"], sketch.get("conds", [])
    n_cols = len(types)
    if not isinstance(sel, int) or not 0 <= sel < n_cols:
        raise ValueError(f"bad_column_index: sel={sel!r} for {n_cols} columns")
    if not isinstance(agg, int) or not 0 <= agg < len(AGGS):
        raise ValueError(f"bad_aggregate: agg={agg!r}")
    where = []
    for cond in conds:
        if not isinstance(cond, (list, tuple)) or len(cond) != 3:
            raise ValueError(f"bad_condition: {cond!r}")
        col, op, value = cond
        if not isinstance(col, int) or not 0 <= col < n_cols:
            raise ValueError(f"bad_column_index: cond column {col!r}")
        if not isinstance(op, int) or not 0 <= op < 3:
            raise ValueError(f"bad_operator: {op!r}")
        where.append((f"col{col}", COND_OPS[op], _literal(value, types[col], lower_values)))
    return select_sql(table_name(table_id), f"col{sel}", AGGS[agg], where)


def load_tables(path: Path) -> dict[str, dict[str, Any]]:
    """Tables by id; malformed table lines are skipped (their questions reject as unknown_table)."""
    tables: dict[str, dict[str, Any]] = {}
    for _, table in records.read_jsonl(path):
        if isinstance(table, dict) and {"id", "header", "types"} <= table.keys():
            tables[table["id"]] = table
    return tables


def _check_question(item: Any, tables: dict[str, dict[str, Any]]) -> str | None:
    if not isinstance(item, dict):
        return "malformed_record"
    for key in ("question", "table_id", "sql"):
        if key not in item or item[key] in (None, ""):
            return f"missing_field:{key}"
    if not isinstance(item["sql"], dict) or not {"sel", "agg"} <= item["sql"].keys():
        return "missing_field:sql.sel/agg"
    if item["table_id"] not in tables:
        return "unknown_table"
    return None


def load_split(folder: Path, split: str, *, lower_values: bool = False, sample_rows: int = 3,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Load one WikiSQL split into raw records (good ones and reject records).

    Raises:
        FileNotFoundError: one of the three split files is missing.
    """
    questions, tables_path, db_path = folder / f"{split}.jsonl", folder / f"{split}.tables.jsonl", folder / f"{split}.db"
    for path in (questions, tables_path, db_path):
        if not path.exists():
            raise FileNotFoundError(f"WikiSQL split {split!r} needs {path}")
    tables = load_tables(tables_path)
    rows: list[dict[str, Any]] = []
    conn = connect_read_only(db_path)
    try:
        existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for line_no, item in records.read_jsonl(questions):
            if limit is not None and len(rows) >= limit:
                break
            source_id = f"{split}:{line_no}"
            if isinstance(item, ValueError):
                rows.append(records.rejected(source_id=source_id, split=split, reason="malformed_json",
                                             record=item.args[1], detail=str(item.args[0])))
                continue
            reason = _check_question(item, tables)
            if reason is None and table_name(item["table_id"]) not in existing:
                reason = "unknown_table"
            if reason is not None:
                rows.append(records.rejected(source_id=source_id, split=split, reason=reason, record=item))
                continue
            rows.append(_load_question(item, tables[item["table_id"]], conn, source_id, split, db_path,
                                       lower_values, sample_rows))
    finally:
        conn.close()
    return rows


def _load_question(item: dict[str, Any], table: dict[str, Any], conn: sqlite3.Connection, source_id: str,
                   split: str, db_path: Path, lower_values: bool, sample_rows: int) -> dict[str, Any]:
    try:
        gold_sql = sketch_to_sql(item["table_id"], item["sql"], table["types"], lower_values)
    except (ValueError, TypeError, KeyError) as err:
        return records.rejected(source_id=source_id, split=split, reason=str(err).split(":")[0], record=item,
                                detail=str(err))
    try:
        conn.execute(gold_sql).fetchall()
    except sqlite3.Error as err:
        return records.rejected(source_id=source_id, split=split, reason="gold_sql_failed", record=item,
                                detail=str(err))
    return records.good(
        source_id=source_id, split=split, db_id=item["table_id"], question=item["question"], gold_sql=gold_sql,
        db_path=str(db_path.resolve()), dialect="sqlite",
        schema=schema_text(item["table_id"], table["header"], table["types"]),
        sample_rows=[list(r) for r in table.get("rows", [])[:sample_rows]],
    )
