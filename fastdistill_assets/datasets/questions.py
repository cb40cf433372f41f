"""Loader for the generic ``questions`` kind: a user's own questions, with or without gold.

One question per row in a JSONL, CSV or parquet file (``dataset.path``):

* ``question`` (required; ``instruction`` is read where there is no ``question``, as in files
  prepared for the reference workflow);
* ``db_path`` (a SQLite or DuckDB file, relative to the questions file's folder; it is also
  the row's ``db_id`` unless one is given), ``db_url`` (a PostgreSQL database,
  ``postgresql://user@host:port/dbname``: no password in it, see ``dataset.password_env``) or ``db_id``
  (found as ``<db_id>.sqlite|.db|.duckdb|.sqlite3`` in the ``dataset.databases`` folder, or
  in a ``<db_id>/`` sub-folder of it); a row with none uses ``dataset.db_path`` or ``dataset.db_url``;
* optional ``gold_sql``, ``evidence`` (extra knowledge shown to the teacher), ``question_id``
  (``task_id`` is read where there is none), ``split`` (default ``train``), ``difficulty``,
  ``table`` or ``table_id`` (the one table the question is about: a WikiSQL database holds
  thousands) and ``schema`` (schema text to show instead of the database's CREATE statements).

The schema text and a few rows of every table (or of the named table) come from the database
itself. A row with no gold is a good row (it takes the gold-free gates); a row that cannot be
used (malformed, no question, no or unknown database, gold that does not execute) is a counted
reject record.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from fastdistill_assets.config.models import (
    DatasetConfig,
    ExecutionGates,
    checked_postgres_url,
)
from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.databases import DatabaseCatalog, find_database
from fastdistill_assets.sqlsafe.postgres import with_password_env

FORMATS = (".jsonl", ".csv", ".parquet")
DEFAULT_SPLIT = "train"
UNKNOWN_SPLIT = "unknown"  # the split of a row too malformed to say


def _text(record: dict[str, Any], key: str) -> str | None:
    """A non-blank string field, else None (CSV and parquet give empty strings and nulls)."""
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # NaN from a parquet writer
        return None
    value = str(value).strip()
    return value or None


def read_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(position, record) for each row of a JSONL, CSV or parquet file; a row that is not UTF-8
    or not JSON is a ValueError as in :func:`records.read_jsonl` (a CSV row with a field that is
    not UTF-8: ``malformed_encoding``, the row with its bad bytes shown as U+FFFD).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not one of the supported formats, or a file that cannot be read as one.
    """
    if not path.is_file():
        raise FileNotFoundError(f"questions file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line_no, item in records.read_jsonl(path):
            yield f"line {line_no}", item
        return
    if suffix not in FORMATS:
        raise ValueError(f"dataset.path {path} must be a {', '.join(FORMATS)} file")
    marker = None
    try:
        if suffix == ".csv":
            data = path.read_bytes()
            if isinstance(records.decode_utf8(data, str(path)), ValueError):
                data, marker = _mark_bad_bytes(data)
            frame = pl.read_csv(data, infer_schema=False)
        else:
            frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise ValueError(f"cannot read {path}: {str(err).splitlines()[0]}") from err
    for index, record in enumerate(frame.iter_rows(named=True), start=1):
        bad = marker and next((k for k, v in record.items() if isinstance(v, str) and marker in v), None)
        if bad:
            shown = {k: v.replace(marker, "\ufffd") if isinstance(v, str) else v for k, v in record.items()}
            yield f"row {index}", ValueError(f"malformed_encoding: invalid UTF-8 in column {bad!r}", shown)
        else:
            yield f"row {index}", record


def _mark_bad_bytes(data: bytes) -> tuple[bytes, str]:
    """``data`` with each run of bytes that are not UTF-8 replaced by a character the file does
    not hold (a private-use one), and that character: the rows holding it are the bad ones."""
    text = data.decode("utf-8", errors="surrogateescape")
    marker = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in text)
    return re.sub("[\udc80-\udcff]+", marker, text).encode(), marker


def questions_path(config: DatasetConfig) -> Path:
    """Raises:
        ValueError: ``dataset.path`` is not set."""
    if config.path is None:
        raise ValueError("dataset kind 'questions' needs dataset.path (a .jsonl, .csv or .parquet file)")
    return Path(config.path)


class QuestionsSource(records.Closing):
    """The questions file open for loading a batch at a time: rows read as :func:`read_rows`
    reads them (a JSONL line by line; a CSV or parquet file whole), databases described once.

    Raises:
        ValueError: ``dataset.path`` is not set.
    """

    def __init__(self, config: DatasetConfig, limits: ExecutionGates | None = None) -> None:
        self.config = config
        self.path = questions_path(config)
        self.databases: Path | dict[str, str] | None = (
            {db_id: with_password_env(url, config.password_env) for db_id, url in config.databases.items()}
            if isinstance(config.databases, dict) else Path(config.databases) if config.databases else None)
        self.default_db: Path | str | None = (Path(config.db_path) if config.db_path
                                              else with_password_env(config.db_url, config.password_env)
                                              if config.db_url else None)
        self.password_env = config.password_env
        self.catalog = DatabaseCatalog(config.sample_rows, config.sample_rows_total, limits,
                                       schemas=tuple(config.schemas), max_tables=config.max_tables)

    def questions(self) -> Iterator[tuple[str, str, Any]]:
        """(position, split, item) for the rows whose split is in ``config.splits``, at most
        ``config.limit_per_split`` per split; a row whose split cannot be read is in split ``unknown``.
        A question_id seen before in these rows makes the later row a ``duplicate_id`` ValueError
        (every row is read in order, so the verdict does not depend on which batches are loaded).

        Raises:
            ValueError: not a supported file.
            FileNotFoundError: the questions file does not exist.
        """
        per_split: dict[str, int] = {}
        first_seen: dict[str, str] = {}  # question_id: the position of its first row
        limit = self.config.limit_per_split
        for position, item in read_rows(self.path):
            if not isinstance(item, dict):
                yield position, UNKNOWN_SPLIT, item
                continue
            split = _text(item, "split") or DEFAULT_SPLIT
            if split not in self.config.splits:
                continue
            if limit is not None and per_split.get(split, 0) >= limit:
                continue
            per_split[split] = per_split.get(split, 0) + 1
            question_id = _question_id(item)
            if question_id is not None and question_id in first_seen:
                item = ValueError(f"duplicate_id: question_id {question_id!r} is also at {first_seen[question_id]}",
                                  item)
            elif question_id is not None:
                first_seen[question_id] = position
            yield position, split, item

    def load(self, batch: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
        """Raw records of a batch of :meth:`questions`, in order."""
        return [_load_row(item, position, split, _Where(self.path.parent, self.databases, self.default_db,
                                                        self.password_env), self.catalog)
                for position, split, item in batch]

    def close(self) -> None:
        self.catalog.close()


def load(config: DatasetConfig, limits: ExecutionGates | None = None) -> list[dict[str, Any]]:
    """Raw records for the rows whose split is in ``config.splits``, at most
    ``config.limit_per_split`` per split. A row whose split cannot be read (a malformed line) is
    always kept as a reject record, in split ``unknown``. Gold SQL is checked with ``limits``.

    Raises:
        ValueError: ``dataset.path`` is not set or not a supported file.
        FileNotFoundError: the questions file does not exist.
    """
    with QuestionsSource(config, limits) as source:
        return source.load(list(source.questions()))


@dataclass(frozen=True)
class _Where:
    """Where a row's database is looked for: files relative to ``base``, ``databases`` by db_id,
    the dataset's own database (a file, or a PostgreSQL URL), the password's environment variable."""

    base: Path
    databases: Path | dict[str, str] | None
    default_db: Path | str | None
    password_env: str | None


def _load_row(item: Any, position: str, split: str, where: _Where, catalog: DatabaseCatalog) -> dict[str, Any]:
    source_id = f"{split}:{position}"
    if isinstance(item, ValueError):
        return records.unreadable(item, source_id=source_id, split=split)
    if not isinstance(item, dict):
        return records.rejected(source_id=source_id, split=split, reason="malformed_record", record=item)
    source_id = _question_id(item) or source_id
    key = "question" if item.get("question") is not None else "instruction"
    if item.get(key) is not None and not isinstance(item[key], str):
        return records.rejected(source_id=source_id, split=split, reason="malformed_field:question", record=item)
    question = _text(item, key)
    if question is None:
        return records.rejected(source_id=source_id, split=split, reason="missing_field:question", record=item)
    try:
        db_path, db_id = _locate(item, where)
    except _Unusable as err:
        return records.rejected(source_id=source_id, split=split, reason=err.reason, record=item, detail=err.detail)
    database = catalog.get(db_path, _text(item, "table") or _text(item, "table_id"))
    if isinstance(database, str):
        return records.rejected(source_id=source_id, split=split, reason="unknown_database", record=item,
                                detail=database)
    gold = _text(item, "gold_sql")
    check = catalog.check_gold(database, gold) if gold is not None else None
    if check is not None and check.error is not None:
        return records.rejected(source_id=source_id, split=split, reason="gold_sql_failed", record=item,
                                detail=check.error)
    return records.good(source_id=source_id, split=split, db_id=db_id, question=question, gold_sql=gold,
                        evidence=_text(item, "evidence"), db_path=str(database.path), dialect=database.dialect,
                        schema=_text(item, "schema") or database.schema, sample_rows=database.sample_rows,
                        difficulty=_text(item, "difficulty"), gold_empty=check.empty if check else None)


def _question_id(item: dict[str, Any]) -> str | None:
    return _text(item, "question_id") or _text(item, "task_id")


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


class _Unusable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _locate(item: dict[str, Any], where: _Where) -> tuple[Path | str, str]:
    """(database file or PostgreSQL URL, db_id).

    Raises:
        _Unusable: no database named, or none found.
    """
    db_path, db_id, db_url = _text(item, "db_path"), _text(item, "db_id"), _text(item, "db_url")
    base, databases, default_db = where.base, where.databases, where.default_db
    if db_path is not None:
        path = Path(db_path)
        # the path as written identifies the database: two files with one name stay two databases
        return (path if path.is_absolute() else base / path), db_id or db_path
    if db_url is not None:
        try:
            checked_postgres_url(db_url)
        except ValueError as err:
            raise _Unusable("malformed_field:db_url", str(err)) from None
        return with_password_env(db_url, where.password_env), db_id or _database_name(db_url)
    if db_id is None and default_db is not None:  # one database for all: the table tells questions apart
        name = _database_name(default_db) if isinstance(default_db, str) else default_db.stem
        return default_db, _text(item, "table") or _text(item, "table_id") or name
    if db_id is None:
        raise _Unusable("missing_field:db_path_or_db_id",
                        "a row needs db_path, or db_id with dataset.databases (or set dataset.db_path)")
    if databases is None:
        raise _Unusable("unknown_database", f"db_id {db_id!r} given but dataset.databases is not set")
    if isinstance(databases, dict):   # db_id: a PostgreSQL database's URL
        if db_id not in databases:
            raise _Unusable("unknown_database", f"db_id {db_id!r} is not among dataset.databases "
                                                f"({', '.join(sorted(databases))})")
        return databases[db_id], db_id
    found = find_database(databases, db_id)
    if found is None:
        raise _Unusable("unknown_database", f"no database file for db_id {db_id!r} in {databases} "
                                            "(db_id is a file name without suffix, not a path)")
    return found, db_id


def gold_counts(config: DatasetConfig) -> Counter[str]:
    """Questions with gold SQL per split, over every row of the file (a split with rows but no
    gold counts 0); reads the file only.

    Raises:
        ValueError, FileNotFoundError: as :func:`read_rows`.
    """
    counts: Counter[str] = Counter()
    for _, item in read_rows(questions_path(config)):
        if isinstance(item, dict):
            split = _text(item, "split") or DEFAULT_SPLIT
            counts[split] += _text(item, "gold_sql") is not None
    return counts
