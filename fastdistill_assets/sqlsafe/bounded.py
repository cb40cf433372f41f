"""A query's result, fetched a few rows at a time and counted as it comes, so that a hostile result
is never pulled into memory whole: it stops past ``max_rows`` rows (``too_many_rows``) or past
``max_bytes`` bytes (``result_too_big``). Imports no more than the standard library: the DuckDB
engine process (:mod:`~fastdistill_assets.sqlsafe.duck_process`) uses it too."""

from __future__ import annotations

from typing import Any

FETCH_BATCH = 64  # rows taken from a cursor at a time, counted before the next batch is fetched


def value_bytes(value: Any) -> int:
    """About the memory one fetched value holds: its length for text and bytes, its items' for a
    list, tuple or dict (DuckDB's nested types), and 8 for anything else."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, list | tuple):
        return 8 + sum(value_bytes(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(value_bytes(k) + value_bytes(v) for k, v in value.items())
    return 8


class ResultTooLarge(Exception):
    """A result past its bounds; ``kind`` is ``too_many_rows`` or ``result_too_big``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


def fetch_bounded(cursor: Any, max_rows: int, max_bytes: int) -> list[tuple[Any, ...]]:
    """The rows of ``cursor``, FETCH_BATCH at a time; raises :class:`ResultTooLarge` as soon as
    they pass ``max_rows`` rows or ``max_bytes`` bytes (:func:`value_bytes`)."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while batch := cursor.fetchmany(FETCH_BATCH):
        size += sum(value_bytes(v) for row in batch for v in row)
        rows.extend(batch)
        if len(rows) > max_rows:
            raise ResultTooLarge("too_many_rows", f"more than {max_rows} rows")
        if size > max_bytes:
            raise ResultTooLarge("result_too_big", f"more than {max_bytes} bytes in {len(rows)} rows")
        if len(batch) < FETCH_BATCH:   # a short batch is the last (DB-API): no call (a round trip) to learn it
            break
    return rows
