"""Result signatures and gold matching by result, never by SQL text."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from fastdistill_assets.config.models import GoldGates
from fastdistill_assets.core.hashing import sha256_json

_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.IGNORECASE)
Value = float | str | None


def normalize_value(value: Any) -> Value:
    """Numbers become floats (3 == 3.0 == Decimal('3')); bytes hex; everything else text."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, Decimal)):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _sort_key(row: tuple[Value, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, 0.0) if v is None else (1, v) if isinstance(v, float) else (2, v) for v in row)


def normalize_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Value, ...]]:
    return [tuple(normalize_value(v) for v in row) for row in rows]


def result_signature(rows: Sequence[Sequence[Any]]) -> str:
    """Order-insensitive multiset hash; floats rounded to 6 significant digits."""
    rounded = [tuple(float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v for v in row)
               for row in normalize_rows(rows)]
    return sha256_json(sorted(rounded, key=_sort_key))


def _same(a: Value, b: Value, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol) or (math.isnan(a) and math.isnan(b))
    return a == b


def results_match(candidate: Sequence[Sequence[Any]], gold: Sequence[Sequence[Any]], *, semantics: str = "bag",
                  ordered: bool = False, tolerance: float = 1e-6) -> bool:
    """Compare two results as bags (or sets), in order only when ``ordered``."""
    cand, ref = normalize_rows(candidate), normalize_rows(gold)
    if semantics == "set":
        cand, ref = list(dict.fromkeys(cand)), list(dict.fromkeys(ref))
    if len(cand) != len(ref):
        return False
    if not ordered:
        cand, ref = sorted(cand, key=_sort_key), sorted(ref, key=_sort_key)
    return all(len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b, strict=True))
               for a, b in zip(cand, ref, strict=True))


def gold_is_ordered(gold_sql: str) -> bool:
    """A gold query with ORDER BY asks for order-sensitive comparison (Spider convention)."""
    return _ORDER_BY.search(gold_sql) is not None


def matches_gold(rows: Sequence[Sequence[Any]], gold_rows: Sequence[Sequence[Any]], gold_sql: str,
                 config: GoldGates) -> bool:
    """The gold-match rule used by the gates and by evaluation alike, from the run's gold config."""
    return results_match(rows, gold_rows, semantics=config.semantics, ordered=gold_is_ordered(gold_sql),
                         tolerance=config.float_tolerance)
