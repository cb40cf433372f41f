"""The raw record: one question per row, good or rejected with a reason."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import polars as pl

RAW_SCHEMA: dict[str, pl.DataType] = {
    "source_id": pl.String(),
    "split": pl.String(),
    "db_id": pl.String(),
    "question": pl.String(),
    "evidence": pl.String(),
    "gold_sql": pl.String(),
    "withheld_gold_sql": pl.String(),
    "db_path": pl.String(),
    "dialect": pl.String(),
    "schema": pl.String(),
    "sample_rows": pl.String(),
    "difficulty": pl.String(),       # as the dataset labels it (BIRD: simple / moderate / challenging)
    "gold_empty": pl.Boolean(),      # the gold query returned no rows or only NULLs (null: no gold)
    "reject_reason": pl.String(),
    "reject_detail": pl.String(),
    "raw_record": pl.String(),
}

SampleRows = list[list[Any]] | dict[str, list[list[Any]]]  # one table's rows, or rows by table


def good(
    *, source_id: str, split: str, db_id: str, question: str, gold_sql: str | None, db_path: str,
    dialect: str, schema: str, sample_rows: SampleRows, evidence: str | None = None,
    difficulty: str | None = None, gold_empty: bool | None = None,
) -> dict[str, Any]:
    """A loadable question; ``gold_sql`` is None for a question nobody has labeled yet.
    ``gold_empty``: what :func:`is_empty_result` said of the gold query's rows."""
    return {
        "source_id": source_id, "split": split, "db_id": db_id, "question": question, "evidence": evidence,
        "gold_sql": gold_sql, "withheld_gold_sql": None, "db_path": db_path, "dialect": dialect, "schema": schema,
        "sample_rows": json.dumps(sample_rows, default=str), "difficulty": difficulty, "gold_empty": gold_empty,
        "reject_reason": None, "reject_detail": None, "raw_record": None,
    }


def is_empty_result(rows: list[Any] | None) -> bool:
    """No rows, or only NULLs: a gold query that says nothing about a candidate's answer."""
    return not rows or all(value is None for row in rows for value in row)


def rejected(*, source_id: str, split: str, reason: str, record: Any, detail: str | None = None) -> dict[str, Any]:
    """A bad row kept as a counted, reasoned reject record (never silently dropped).

    ``reason`` is a short category used for counting; ``detail`` holds the specific message.
    """
    row: dict[str, Any] = dict.fromkeys(RAW_SCHEMA)
    question = record.get("question") if isinstance(record, dict) else None
    db_id = record.get("table_id", record.get("db_id")) if isinstance(record, dict) else None
    row.update(
        source_id=source_id, split=split, reject_reason=reason, reject_detail=detail,
        question=question if isinstance(question, str) else None,
        db_id=db_id if isinstance(db_id, str) else None,
        raw_record=json.dumps(record, default=str) if not isinstance(record, str) else record,
    )
    return row


def unreadable(error: ValueError, *, source_id: str, split: str) -> dict[str, Any]:
    """The reject record of a row that could not be read as it was written (a ValueError from
    :func:`read_jsonl` or a loader): its reason is the message's prefix before ``:``."""
    message = str(error.args[0])
    return rejected(source_id=source_id, split=split, reason=message.partition(":")[0], record=error.args[1],
                    detail=message)


def decode_utf8(data: bytes, where: str) -> str | ValueError:
    """``data`` as UTF-8 text, or a ``malformed_encoding`` ValueError (args: reason with the
    first bad byte's offset in ``where``, the text with bad bytes shown as U+FFFD): input is
    never changed silently."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        return ValueError(f"malformed_encoding: invalid UTF-8 at byte {err.start} of {where}",
                          data.decode("utf-8", errors="replace").strip())


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) per non-blank line; a line that is not UTF-8 or not JSON yields
    a ValueError whose args are (reason with detail, the line) instead of the value."""
    with path.open("rb") as handle:
        for line_no, data in enumerate(handle, start=1):
            if line_no == 1:
                data = data.removeprefix(codecs.BOM_UTF8)  # a leading BOM is no data
            line = decode_utf8(data, "the line")
            if isinstance(line, ValueError):
                yield line_no, line
                continue
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, ValueError(f"malformed_json: {err.msg} at column {err.colno}", line.strip())


def to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row") if rows else pl.DataFrame(schema=RAW_SCHEMA)


class Closing:
    """``with`` support for a source that holds connections: ``close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
