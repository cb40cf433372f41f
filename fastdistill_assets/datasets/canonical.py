"""raw -> canonical: apply the data contract and drop exact duplicates."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from fastdistill_assets.config.models import RunConfig
from fastdistill_assets.core import contract
from fastdistill_assets.store.chunks import ChunkSpool

CANONICAL_COLUMNS = ["sample_id", "task_id", "split", "source_id", "db_id", "question", "evidence", "canonical_input",
                     "schema", "schema_hash", "decode_profile", "gold_sql", "withheld_gold_sql", "db_path", "dialect",
                     "sample_rows", "difficulty"]
CANONICAL_SCHEMA: dict[str, pl.DataType] = {c: pl.String() for c in CANONICAL_COLUMNS}


@dataclass(frozen=True)
class CanonicalResult:
    frame: pl.DataFrame
    duplicates_dropped: int
    raw_rejected: dict[str, int]


def canonicalize(raw: pl.DataFrame, config: RunConfig, seen: set[bytes] | None = None) -> CanonicalResult:
    """Good raw rows with contract ids, first occurrence kept per sample_id.

    ``seen``: the :func:`id_digest` of the sample_ids kept from earlier chunks of the same stage
    (a row with one of them is a duplicate); the ids kept here are added to it. Canonicalizing
    a stage chunk by chunk with one ``seen`` keeps exactly the rows a whole-frame call keeps.

    Reads raw columns: question, db_id, schema, reject_reason, and the rest of the raw record.
    Writes: CANONICAL_COLUMNS.
    """
    rejected = raw.filter(pl.col("reject_reason").is_not_null())
    counts = dict(rejected.group_by("reject_reason").len().iter_rows()) if rejected.height else {}
    good = raw.filter(pl.col("reject_reason").is_null())
    decode_profile = config.decode.key()
    fields = config.dataset.input_fields
    seen = set() if seen is None else seen
    rows = []
    duplicates = 0
    for rec in good.iter_rows(named=True):
        rec["question"] = contract.normalize_text(rec["question"])
        canonical = contract.canonical_input(rec, fields)
        s_hash = contract.schema_hash(rec["schema"])
        sample_id = contract.sample_id(config.task_id, s_hash, canonical, decode_profile)
        digest = id_digest(sample_id)
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        rows.append({**rec, "task_id": config.task_id, "canonical_input": canonical, "schema_hash": s_hash,
                     "decode_profile": decode_profile, "sample_id": sample_id})
    frame = pl.DataFrame(rows, schema_overrides={c: pl.String for c in CANONICAL_COLUMNS}) if rows else \
        pl.DataFrame(schema=CANONICAL_SCHEMA)
    return CanonicalResult(frame=frame.select(CANONICAL_COLUMNS), duplicates_dropped=duplicates, raw_rejected=counts)


def id_digest(sample_id: str) -> bytes:
    """16 bytes standing for a sample_id in a set of seen ids (a third of the memory of the text)."""
    return hashlib.blake2b(sample_id.encode(), digest_size=16).digest()


def keep_first_across_parts(spool: ChunkSpool, count: int) -> list[int]:
    """Keep the first row of each sample_id across parts 0..count-1 of ``spool``, each part
    already free of duplicates of its own (parts canonicalized independently, e.g. by shards): a
    part holding ids of an earlier part is rewritten without those rows. Returns each part's
    rows after the pass. Reads one column at a time; safe to repeat after a kill (a part already
    rewritten has nothing left to drop)."""
    seen: set[bytes] = set()
    rows: list[int] = []
    for index in range(count):
        part = spool.part(index)
        keep = []
        for sample_id in pl.read_parquet(part, columns=["sample_id"])["sample_id"]:
            digest = id_digest(sample_id)
            keep.append(digest not in seen)
            seen.add(digest)
        if not all(keep):
            spool.write(index, pl.read_parquet(part).filter(pl.Series(keep, dtype=pl.Boolean)), spool.summary(index))
        rows.append(sum(keep))
    return rows
