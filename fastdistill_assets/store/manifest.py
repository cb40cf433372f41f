"""A stage's manifest, computable chunk by chunk: :class:`ManifestBuilder` and :func:`build_manifest`.

Fields: ``count``, ``columns``, ``field_hash`` (sha256 of the column names and dtypes),
``min_sample_id`` / ``max_sample_id`` (None without a ``sample_id`` column or without non-null
ids) and ``content_hash``, an order-independent hash of the rows' contents::

    content_hash = sha256(f"{field_hash}:{count}:{row_sum:064x}")
    row_sum      = sum of int(sha256(canonical row bytes), big-endian) over the rows, mod 2**256

A sum is a multiset hash: the same rows in any order, in any chunking, or split across shards
whose builders are merged give the same hash; changing, adding or removing a row changes it.

Canonical row bytes (UTF-8, stable across processes and polars versions; polars' own row hash
is not): the cells in column order, each written as ``<byte length of its text>:<text>``, a null
cell as ``-``. A cell's text, by column dtype:

- String, Categorical, Enum: the string; integers: decimal; Boolean: ``true`` / ``false``;
- Float32/Float64: the value as an IEEE-754 binary64 bit pattern, an unsigned decimal integer
  (every NaN as 0x7ff8000000000000);
- Date, Datetime, Duration, Time: the physical integer (days, or ticks of the dtype's unit;
  the unit and time zone are in ``field_hash``);
- Binary: lowercase hex;
- anything else (List, Array, Struct, Decimal, ...): stable JSON (sorted keys, no spaces) of the
  Python value, bytes as hex and dates/times as ISO strings inside.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, time, timedelta
from typing import Any

import numpy as np
import polars as pl

from fastdistill_assets.core.hashing import sha256_json, sha256_text, stable_json

SAMPLE_ID = "sample_id"
NULL_TOKEN = "-"
ROW_SUM_MODULUS = 2**256
CANONICAL_NAN_BITS = 0x7FF8000000000000
SLICE_ROWS = 65_536  # rows encoded and hashed at a time (bounds the memory of the row texts)


class ManifestBuilder:
    """Builds a manifest from chunks (all with the same schema); equal to the whole-frame one.

    ``update`` each chunk in any order, ``merge`` the builders of other shards, then ``finish``.
    """

    def __init__(self) -> None:
        self._schema: list[tuple[str, str]] | None = None
        self._count = 0
        self._row_sum = 0
        self._min_id: Any = None
        self._max_id: Any = None

    def update(self, chunk: pl.DataFrame) -> None:
        """Add a chunk's rows.

        Raises:
            ValueError: its schema differs from the first chunk's (names the first differing column).
        """
        self._adopt_schema([(name, str(dtype)) for name, dtype in chunk.schema.items()])
        for piece in chunk.iter_slices(SLICE_ROWS) if chunk.height else ():
            self._row_sum = (self._row_sum + row_hash_sum(piece)) % ROW_SUM_MODULUS
        self._count += chunk.height
        if SAMPLE_ID in chunk.columns:
            ids = chunk.get_column(SAMPLE_ID).drop_nulls()
            if ids.len():
                self._add_id_range(ids.min(), ids.max())

    def merge(self, other: ManifestBuilder) -> None:
        """Add the rows another builder (another shard of the same stage) has seen.

        Raises:
            ValueError: the two schemas differ.
        """
        if other._schema is None:
            return
        self._adopt_schema(other._schema)
        self._count += other._count
        self._row_sum = (self._row_sum + other._row_sum) % ROW_SUM_MODULUS
        if other._min_id is not None:
            self._add_id_range(other._min_id, other._max_id)

    def finish(self) -> dict[str, Any]:
        """The manifest (a builder that saw no chunk describes an empty frame without columns)."""
        schema = self._schema or []
        field_hash = sha256_json([{"name": name, "dtype": dtype} for name, dtype in schema])
        return {
            "count": self._count,
            "columns": [name for name, _ in schema],
            "field_hash": field_hash,
            "content_hash": sha256_text(f"{field_hash}:{self._count}:{self._row_sum:064x}"),
            "min_sample_id": self._min_id,
            "max_sample_id": self._max_id,
        }

    def _adopt_schema(self, schema: list[tuple[str, str]]) -> None:
        if self._schema is None:
            self._schema = schema
            return
        if schema == self._schema:
            return
        for index in range(max(len(schema), len(self._schema))):
            new = schema[index] if index < len(schema) else None
            old = self._schema[index] if index < len(self._schema) else None
            if new != old:
                name = (new or old or ("?", ""))[0]
                raise ValueError(f"chunk schema differs from the first chunk's at column {index} {name!r}: "
                                 f"{_describe(new)} here, {_describe(old)} before")

    def _add_id_range(self, low: Any, high: Any) -> None:
        self._min_id = low if self._min_id is None else min(self._min_id, low)
        self._max_id = high if self._max_id is None else max(self._max_id, high)


def build_manifest(frame: pl.DataFrame) -> dict[str, Any]:
    """count, columns, field_hash, content_hash, min/max sample_id of a whole frame (one chunk)."""
    builder = ManifestBuilder()
    builder.update(frame)
    return builder.finish()


def row_hash_sum(frame: pl.DataFrame) -> int:
    """Sum of the rows' sha256 (big-endian integers) over their canonical bytes, not reduced."""
    sha, to_int = hashlib.sha256, int.from_bytes
    if not frame.width:
        return frame.height * to_int(sha(b"").digest(), "big")
    return sum(to_int(sha(row.encode()).digest(), "big") for row in canonical_rows(frame).to_list())


def canonical_rows(frame: pl.DataFrame) -> pl.Series:
    """Each row's canonical text (see the module docstring); the hash is over its UTF-8 bytes."""
    texts = pl.DataFrame({f"c{i}": _cell_texts(frame.to_series(i)) for i in range(frame.width)})
    tokens = [pl.concat_str([pl.col(name).str.len_bytes().cast(pl.String), pl.lit(":"), pl.col(name)])
              .fill_null(NULL_TOKEN) for name in texts.columns]
    return texts.select(pl.concat_str(tokens).alias("row")).to_series()


def _cell_texts(series: pl.Series) -> pl.Series:
    """A column's cell texts (String; null where the cell is null)."""
    dtype = series.dtype
    if dtype == pl.String:
        return series
    if isinstance(dtype, (pl.Categorical, pl.Enum)) or dtype.is_integer():
        return series.cast(pl.String)
    if dtype == pl.Boolean:
        return pl.select(pl.when(series).then(pl.lit("true")).when(~series).then(pl.lit("false"))).to_series()
    if dtype.is_float():
        return _float_texts(series)
    if dtype.is_temporal():
        return series.to_physical().cast(pl.String)
    if dtype == pl.Binary:
        return series.bin.encode("hex")
    return pl.Series([None if v is None else stable_json(_plain(v)) for v in series.to_list()], dtype=pl.String)


def _float_texts(series: pl.Series) -> pl.Series:
    values = series.cast(pl.Float64).to_numpy()  # a null becomes NaN here and is nulled again below
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).copy()
    bits[np.isnan(values)] = CANONICAL_NAN_BITS
    texts = pl.Series(bits).cast(pl.String)
    if not series.null_count():
        return texts
    return pl.select(pl.when(series.is_null()).then(pl.lit(None, pl.String)).otherwise(texts)).to_series()


def _plain(value: Any) -> Any:
    """A Python value from a nested column as JSON-able data."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.days}d{value.seconds}s{value.microseconds}us"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _describe(column: tuple[str, str] | None) -> str:
    return "absent" if column is None else f"{column[0]!r} {column[1]}"
