"""raw -> canonical: apply the data contract and drop exact duplicates."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from fastdistill_assets import contract
from fastdistill_assets.config import RunConfig

CANONICAL_COLUMNS = ["sample_id", "task_id", "split", "source_id", "db_id", "question", "evidence", "canonical_input",
                     "schema", "schema_hash", "decode_profile", "gold_sql", "withheld_gold_sql", "db_path", "dialect",
                     "sample_rows", "difficulty"]


@dataclass(frozen=True)
class CanonicalResult:
    frame: pl.DataFrame
    duplicates_dropped: int
    raw_rejected: dict[str, int]


def canonicalize(raw: pl.DataFrame, config: RunConfig) -> CanonicalResult:
    """Good raw rows with contract ids, first occurrence kept per sample_id.

    Reads raw columns: question, db_id, schema, reject_reason, and the rest of the raw record.
    Writes: CANONICAL_COLUMNS.
    """
    rejected = raw.filter(pl.col("reject_reason").is_not_null())
    counts = dict(rejected.group_by("reject_reason").len().iter_rows()) if rejected.height else {}
    good = raw.filter(pl.col("reject_reason").is_null())
    decode_profile = config.decode.key()
    fields = config.dataset.input_fields
    rows = []
    for rec in good.iter_rows(named=True):
        rec["question"] = contract.normalize_text(rec["question"])
        canonical = contract.canonical_input(rec, fields)
        s_hash = contract.schema_hash(rec["schema"])
        rows.append({**rec, "task_id": config.task_id, "canonical_input": canonical, "schema_hash": s_hash,
                     "decode_profile": decode_profile,
                     "sample_id": contract.sample_id(config.task_id, s_hash, canonical, decode_profile)})
    frame = pl.DataFrame(rows, schema_overrides={c: pl.String for c in CANONICAL_COLUMNS}) if rows else \
        pl.DataFrame(schema={c: pl.String for c in CANONICAL_COLUMNS})
    frame = frame.select(CANONICAL_COLUMNS)
    deduped = frame.unique(subset="sample_id", keep="first", maintain_order=True)
    return CanonicalResult(frame=deduped, duplicates_dropped=frame.height - deduped.height, raw_rejected=counts)
