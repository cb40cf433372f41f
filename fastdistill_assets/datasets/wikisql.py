"""Loader for the WikiSQL format.

Files per split: ``{split}.jsonl`` (questions with ``sel``/``agg``/``conds`` sketches),
``{split}.tables.jsonl`` (header, types, rows) and ``{split}.db`` (SQLite; one table
``table_<id>`` per table id, dashes as underscores, columns ``col0..colN``). Each gold
sketch becomes executable SQL, checked by running it; a row that cannot be loaded becomes a
reject record with its reason.

The official Salesforce release stores text lower-cased in the ``.db`` while the tables file
keeps the original case; :func:`detect_lower_values` tells the two layouts apart, so string
condition values are lower-cased only where the database needs it. Sample rows shown to the
teacher come from the database the gates run against, not from the tables file.

A split is read as a stream (:class:`SplitReader`): the questions file line
by line, never whole; the tables once per split (only their header and types kept after the
detection); gold validated a batch at a time, in worker processes when the batch is large.
"""

from __future__ import annotations

import functools
import itertools
import math
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlglot import exp

from fastdistill_assets.core.sqlsketch import AGGS, literal, select_sql
from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.sqlite_schema import (
    connect_read_only,
    quote_identifier,
    table_names,
)

COND_OPS = ["=", ">", "<", "OP"]  # WikiSQL's operator codes; "OP" is unused in the data
DETECT_TABLES = 200  # tables compared by detect_lower_values


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


def _as_text(value: Any) -> str:
    """A JSON value as a text cell holds it: an int-valued float loses its ``.0`` (1998.0 -> '1998')."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _literal(value: Any, col_type: str, lower: bool) -> exp.Expr:
    """The SQL literal a condition value compares with: a number on a ``real`` column (when it
    parses as a finite one), else a string, lower-cased when the database holds lower-cased text."""
    if col_type == "real" and not isinstance(value, bool):
        try:
            number = float(str(value).replace(",", ""))
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return literal(int(number) if number.is_integer() else number, numeric=True)
    text = _as_text(value)
    return literal(text.lower() if lower else text, numeric=False)


def wikisql_to_sql(table_id: str, sketch: dict[str, Any], types: list[str], lower_values: bool = False) -> str:
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


def load_tables(path: Path, rows_of: set[str] | None = None, max_rows_tables: int | None = None,
                ) -> dict[str, dict[str, Any]]:
    """Tables by id; malformed table lines (header and types not lists of one length included) are
    skipped: their questions reject as unknown_table. With ``max_rows_tables``, a table keeps its
    ``rows`` only if it is one of the first that many whose table name is in ``rows_of`` (what
    :func:`detect_lower_values` compares): a train split's rows take hundreds of MiB as objects."""
    tables: dict[str, dict[str, Any]] = {}
    with_rows = 0
    for _, table in records.read_jsonl(path):
        if (isinstance(table, dict) and {"id", "header", "types"} <= table.keys()
                and isinstance(table["header"], list) and isinstance(table["types"], list)
                and len(table["header"]) == len(table["types"])):
            if max_rows_tables is not None:
                if with_rows < max_rows_tables and table_name(table["id"]) in (rows_of or set()):
                    with_rows += 1
                else:
                    table = {key: table[key] for key in ("id", "header", "types")}
            tables[table["id"]] = table
    return tables


def _first_rows(conn: sqlite3.Connection, table: str, limit: int) -> list[list[Any]]:
    """The first ``limit`` rows of a table known to exist, as the database holds them."""
    return [list(r) for r in conn.execute(f"SELECT * FROM {quote_identifier(table)} LIMIT ?", (limit,))]


def detect_lower_values(tables: dict[str, dict[str, Any]], conn: sqlite3.Connection,
                        max_tables: int = DETECT_TABLES) -> bool:
    """Whether the database holds the tables file's text lower-cased (the official release).

    Over the first ``max_tables`` tables present in both, each mixed-case text cell of the tables
    file is compared with the database cell at the same row position and ``colN``: True when more
    of them equal the lower-cased form than the original. No comparable cells: False.
    """
    existing = set(table_names(conn))
    shared = (t for table_id, t in tables.items() if table_name(table_id) in existing)
    as_lower = as_original = 0
    for table in itertools.islice(shared, max_tables):
        file_rows = table.get("rows")
        if not isinstance(file_rows, list) or not file_rows:
            continue
        for file_row, db_row in zip(file_rows, _first_rows(conn, table_name(table["id"]), len(file_rows)), strict=False):
            for text, stored in zip(file_row if isinstance(file_row, list) else [], db_row, strict=False):
                if isinstance(text, str) and text != text.lower():
                    as_lower += stored == text.lower()
                    as_original += stored == text
    return as_lower > as_original


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


class SplitReader(records.Closing):
    """One WikiSQL split open for streaming: the tables file read once (header and types kept),
    the database connected once, ``lower_values`` decided once; the questions are read line by
    line (:meth:`questions`) and loaded a batch at a time (:meth:`load`).

    Raises:
        FileNotFoundError: one of the three split files is missing.
    """

    def __init__(self, folder: Path, split: str, *, lower_values: bool | None = None, sample_rows: int = 3) -> None:
        self.split, self.sample_rows = split, sample_rows
        self.questions_path = folder / f"{split}.jsonl"
        tables_path, self.db_path = folder / f"{split}.tables.jsonl", folder / f"{split}.db"
        for path in (self.questions_path, tables_path, self.db_path):
            if not path.exists():
                raise FileNotFoundError(f"WikiSQL split {split!r} needs {path}")
        self.conn = connect_read_only(self.db_path)
        try:
            self.existing = set(table_names(self.conn))
            tables = load_tables(tables_path, self.existing, DETECT_TABLES if lower_values is None else 0)
            self.lower = detect_lower_values(tables, self.conn) if lower_values is None else lower_values
        except BaseException:
            self.conn.close()
            raise
        self.lower_values_fact = f"{str(self.lower).lower()} ({'detected' if lower_values is None else 'set'})"
        # the rows of the tables file are only needed for the detection: sample rows come from the database
        self.tables = {table_id: {"header": t["header"], "types": t["types"]} for table_id, t in tables.items()}
        self.samples = functools.lru_cache(maxsize=4096)(self._samples)  # questions of a table come together

    def _samples(self, table: str) -> list[list[Any]]:
        return _first_rows(self.conn, table, self.sample_rows)

    def questions(self, limit: int | None = None) -> Iterator[tuple[int, Any]]:
        """(line number, parsed question or ValueError) per non-blank line, the first ``limit``."""
        lines = records.read_jsonl(self.questions_path)
        return lines if limit is None else itertools.islice(lines, limit)

    def load(self, batch: list[tuple[int, Any]], pool: ProcessPoolExecutor | None = None,
             workers: int = 1) -> list[dict[str, Any]]:
        """Raw records of a batch of :meth:`questions`, in order; with ``pool``, ``workers``
        contiguous slices of it are loaded in worker processes (the same records)."""
        if pool is None or workers <= 1 or len(batch) < 2:
            return _load_items(batch, self.tables, self.existing, self.conn, self.split, self.db_path, self.lower,
                               self.samples)
        size = -(-len(batch) // workers)
        futures = [pool.submit(_load_slice, self._task(batch[start:start + size]), batch[start:start + size])
                   for start in range(0, len(batch), size)]
        return [row for future in futures for row in future.result()]

    def _task(self, items: list[tuple[int, Any]]) -> _SliceTask:
        """What a worker needs to load ``items``: only the tables they name."""
        named = {item["table_id"] for _, item in items if isinstance(item, dict)
                 and isinstance(item.get("table_id"), str) and item["table_id"] in self.tables}
        return _SliceTask(self.split, self.db_path, self.lower, self.sample_rows,
                          {t: self.tables[t] for t in named},
                          frozenset(table_name(t) for t in named) & self.existing)

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class _SliceTask:
    split: str
    db_path: Path
    lower: bool
    sample_rows: int
    tables: dict[str, dict[str, Any]]
    existing: frozenset[str]


@functools.cache
def _worker_connection(db_path: Path) -> sqlite3.Connection:
    """A worker process's connection to ``db_path``, kept for the worker's life (the stage's
    pool): opening one parses the whole schema, seconds for a file of tens of thousands of tables."""
    return connect_read_only(db_path)


def _load_slice(task: _SliceTask, items: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    """In a worker process: raw records of a slice of one split's questions."""
    conn = _worker_connection(task.db_path)
    samples = functools.cache(lambda table: _first_rows(conn, table, task.sample_rows))
    return _load_items(items, task.tables, set(task.existing), conn, task.split, task.db_path, task.lower, samples)


def _load_items(items: list[tuple[int, Any]], tables: dict[str, dict[str, Any]], existing: set[str],
                conn: sqlite3.Connection, split: str, db_path: Path, lower: bool,
                samples: Callable[[str], list[list[Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for line_no, item in items:
        source_id = f"{split}:{line_no}"
        if isinstance(item, ValueError):
            rows.append(records.unreadable(item, source_id=source_id, split=split))
            continue
        reason = _check_question(item, tables)
        if reason is None and table_name(item["table_id"]) not in existing:
            reason = "unknown_table"
        if reason is not None:
            rows.append(records.rejected(source_id=source_id, split=split, reason=reason, record=item))
            continue
        rows.append(_load_question(item, tables[item["table_id"]], conn, source_id, split, db_path, lower, samples))
    return rows


def load_split(folder: Path, split: str, *, lower_values: bool | None = None, sample_rows: int = 3,
               limit: int | None = None, facts: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Load one WikiSQL split into raw records (good ones and reject records).

    ``lower_values``: lower-case string condition values (the database holds lower-cased text);
    None detects it with :func:`detect_lower_values`, True/False override the detection. What was
    used goes into ``facts["lower_values"]`` when ``facts`` is given.

    Raises:
        FileNotFoundError: one of the three split files is missing.
    """
    with SplitReader(folder, split, lower_values=lower_values, sample_rows=sample_rows) as reader:
        if facts is not None:
            facts["lower_values"] = reader.lower_values_fact
        return reader.load(list(reader.questions(limit)))


def _load_question(item: dict[str, Any], table: dict[str, Any], conn: sqlite3.Connection, source_id: str,
                   split: str, db_path: Path, lower_values: bool,
                   samples: Callable[[str], list[list[Any]]]) -> dict[str, Any]:
    try:
        gold_sql = wikisql_to_sql(item["table_id"], item["sql"], table["types"], lower_values)
    except (ValueError, TypeError, KeyError) as err:
        return records.rejected(source_id=source_id, split=split, reason=str(err).split(":")[0], record=item,
                                detail=str(err))
    try:
        result = conn.execute(gold_sql).fetchall()
    except sqlite3.Error as err:
        return records.rejected(source_id=source_id, split=split, reason="gold_sql_failed", record=item,
                                detail=str(err))
    return records.good(
        source_id=source_id, split=split, db_id=item["table_id"], question=item["question"], gold_sql=gold_sql,
        db_path=str(db_path.resolve()), dialect="sqlite",
        schema=schema_text(item["table_id"], table["header"], table["types"]),
        sample_rows=samples(table_name(item["table_id"])), gold_empty=records.is_empty_result(result),
    )
