"""Loader for the Spider and BIRD formats.

Questions per split, the first file found of: ``{split}.json``, ``{split}/{split}.json``,
``{split}/questions.json`` and, for ``train``, Spider's ``train_spider.json``. Each is a JSON list
of ``{db_id, question, query}`` (Spider) or ``{db_id, question, SQL, evidence, difficulty}``
(BIRD). Databases: ``<db_id>/<db_id>.sqlite`` (or ``<db_id>.sqlite``) in ``database/`` (Spider),
``{split}_databases/`` or ``{split}/{split}_databases/`` (BIRD), or the folder itself.

The schema text and a bounded number of sample rows from every table come from the database
(:class:`DatabaseCatalog`); BIRD's ``evidence`` (the knowledge a question depends on) reaches
the teacher and ``canonical_input``; its ``difficulty`` is kept as a column.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastdistill_assets.config.models import ExecutionGates
from fastdistill_assets.datasets import records
from fastdistill_assets.datasets.databases import (
    DB_SUFFIXES,
    DatabaseCatalog,
    find_database,
)


def database_folders(folder: Path, split: str) -> list[Path]:
    """Where a split's databases may be, in the order they are searched."""
    return [folder / "database", folder / f"{split}_databases", folder / split / f"{split}_databases",
            folder / f"{split}_database", folder]


def database_files(folder: Path, split: str) -> list[Path]:
    """Every database file a split's questions may name (``<db>.<suffix>`` or
    ``<db>/<db>.<suffix>`` in each of :func:`database_folders`), in path order."""
    found = {path for base in database_folders(folder, split) for pattern in ("*", "*/*")
             for path in base.glob(pattern) if path.suffix in DB_SUFFIXES and path.is_file()}
    return sorted(found)


def locate_database(folder: Path, split: str, db_id: str) -> Path | None:
    for base in database_folders(folder, split):
        if (found := find_database(base, db_id)) is not None:
            return found
    return None


def questions_file(folder: Path, split: str) -> Path:
    """Raises:
        FileNotFoundError: none of the split's question files exists."""
    candidates = [folder / f"{split}.json", folder / split / f"{split}.json", folder / split / "questions.json"]
    if split == "train":
        candidates.append(folder / "train_spider.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no questions file for split {split!r} in {folder} "
                            f"({', '.join(str(c.relative_to(folder)) for c in candidates)})")


def read_items(path: Path) -> list[Any]:
    """Raises:
        ValueError: not UTF-8 (naming the first bad byte) or not a JSON list."""
    text = records.decode_utf8(path.read_bytes().removeprefix(codecs.BOM_UTF8), str(path))
    if isinstance(text, ValueError):
        raise ValueError(str(text.args[0]).partition(": ")[2])  # a JSON list is read whole: refused whole
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of questions")
    return items


class SplitSource(records.Closing):
    """One split open for loading a batch at a time: its questions file read whole (a JSON
    list cannot be read item by item), each database described once by one catalog.

    Raises:
        FileNotFoundError: the split has no questions file.
        ValueError: the questions file is not a JSON list.
    """

    def __init__(self, folder: Path, split: str, *, sample_rows: int = 3, sample_rows_total: int = 30,
                 limits: ExecutionGates | None = None) -> None:
        self.folder, self.split = folder, split
        self.items = read_items(questions_file(folder, split))
        self.catalog = DatabaseCatalog(sample_rows, sample_rows_total, limits)

    def questions(self, limit: int | None = None) -> Iterator[tuple[int, Any]]:
        """(position, item) for the first ``limit`` questions."""
        return enumerate(self.items[:limit] if limit is not None else self.items)

    def load(self, batch: list[tuple[int, Any]]) -> list[dict[str, Any]]:
        """Raw records of a batch of :meth:`questions`, in order."""
        return [_load_item(item, f"{self.split}:{index}", self.split, self.folder, self.catalog)
                for index, item in batch]

    def close(self) -> None:
        self.catalog.close()


def load_split(folder: Path, split: str, *, sample_rows: int = 3, sample_rows_total: int = 30,
               limit: int | None = None, limits: ExecutionGates | None = None) -> list[dict[str, Any]]:
    """Load one split into raw records, validating each gold query by executing it read-only
    with the run's execution ``limits``.

    Raises:
        FileNotFoundError: the split has no questions file.
        ValueError: the questions file is not a JSON list.
    """
    with SplitSource(folder, split, sample_rows=sample_rows, sample_rows_total=sample_rows_total,
                     limits=limits) as source:
        return source.load(list(source.questions(limit)))


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _load_item(item: Any, source_id: str, split: str, folder: Path, catalog: DatabaseCatalog) -> dict[str, Any]:
    if not isinstance(item, dict):
        return records.rejected(source_id=source_id, split=split, reason="malformed_record", record=item)
    query = _text(item, "query") or _text(item, "SQL")
    for key, value in (("db_id", _text(item, "db_id")), ("question", _text(item, "question")), ("query", query)):
        if value is None:
            return records.rejected(source_id=source_id, split=split, reason=f"missing_field:{key}", record=item)
    path = locate_database(folder, split, item["db_id"])
    database = catalog.get(path) if path is not None else f"no database for db_id {item['db_id']!r}"
    if isinstance(database, str):
        return records.rejected(source_id=source_id, split=split, reason="unknown_database", record=item,
                                detail=database)
    check = catalog.check_gold(database, query)
    if check.error is not None:
        return records.rejected(source_id=source_id, split=split, reason="gold_sql_failed", record=item,
                                detail=check.error)
    difficulty = item.get("difficulty")
    return records.good(source_id=source_id, split=split, db_id=item["db_id"], question=item["question"].strip(),
                        gold_sql=query, evidence=_text(item, "evidence"), db_path=str(database.path),
                        dialect=database.dialect, schema=database.schema, sample_rows=database.sample_rows,
                        difficulty=str(difficulty) if difficulty not in (None, "") else None, gold_empty=check.empty)
