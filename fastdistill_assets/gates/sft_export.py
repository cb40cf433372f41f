"""filtered -> distilled exports: chat-format SFT records and preference pairs (pure functions),
and :class:`Exports`, which writes them chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from fastdistill_assets.core.prompt_format import assistant_target
from fastdistill_assets.gates.escalation import label_candidates
from fastdistill_assets.gates.pipeline import TIMING_COLUMNS
from fastdistill_assets.store.manifest import ManifestBuilder
from fastdistill_assets.store.storage import StageScan

DISTILLED_COLUMNS = ["sample_id", "candidate_id", "split", "db_id", "question", "schema", "sql", "rationale",
                     "judge_score", "label_source", "messages"]


def sft_record(row: dict[str, Any], rationale: bool) -> dict[str, Any]:
    prompt = json.loads(row["messages"])
    target = assistant_target(row["cleaned_sql"], row.get("rationale") if rationale else None)
    return {"id": row["candidate_id"], "messages": [*prompt, {"role": "assistant", "content": target}]}


DISTILLED_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in DISTILLED_COLUMNS}, "judge_score": pl.Float64()}
PAIRS_SCHEMA: dict[str, pl.DataType] = {c: pl.String() for c in ("sample_id", "prompt", "chosen", "rejected",
                                                                 "rejected_reason")}


def distilled_frame(filtered: pl.DataFrame) -> pl.DataFrame:
    kept = filtered.filter(pl.col("kept"))
    return kept.rename({"cleaned_sql": "sql"}).select(DISTILLED_COLUMNS).cast(DISTILLED_SCHEMA)  # type: ignore[arg-type]  # polars' stubs want a Mapping of one dtype kind


def untimed_content_hash(filtered: StageScan) -> str:
    """filtered's content hash over every column but its per-row timings (``TIMING_COLUMNS``):
    what distilled is made from, the same each time the gates reach the same verdicts."""
    columns = [c for c in filtered.manifest["columns"] if c not in TIMING_COLUMNS]
    builder = ManifestBuilder()
    for chunk in filtered.row_groups(columns=columns):
        assert chunk is not None
        builder.update(chunk)
    return str(builder.finish()["content_hash"])


def to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def preference_pairs(filtered: pl.DataFrame) -> list[dict[str, Any]]:
    """chosen = the kept candidate; rejected = the lowest-ranked other candidate of the same input.

    A candidate that passed every gate but was not selected (best-of-n) ranks with the kept
    ones: it is never the rejected side unless it scored lower. Ties keep a stable order. A
    ``calibration_only`` answer (escalated only to measure the gates) is never a side.
    """
    pairs = []
    filtered = label_candidates(filtered)
    passed = pl.col("kept") | (pl.col("reject_reason") == "not_selected")
    ranked = filtered.with_columns(pl.col("judge_score").fill_null(-1.0), passed.alias("_passed")).sort(
        ["sample_id", "kept", "_passed", "gold_match", "judge_score", "candidate_id"],
        descending=[False, True, True, True, True, False], nulls_last=True)
    for (sample_id,), group in ranked.group_by(["sample_id"], maintain_order=True):
        if group.height < 2 or not group["kept"][0]:
            continue
        chosen, rejected = group.row(0, named=True), group.row(group.height - 1, named=True)
        if rejected["_passed"] and rejected["judge_score"] >= chosen["judge_score"]:
            continue
        if (rejected["cleaned_sql"] or rejected["raw_output"]) == chosen["cleaned_sql"]:
            continue  # the same answer twice teaches no preference
        pairs.append({"sample_id": sample_id, "prompt": json.loads(chosen["messages"]),
                      "chosen": chosen["cleaned_sql"], "rejected": rejected["cleaned_sql"] or rejected["raw_output"] or "",
                      "rejected_reason": rejected["reject_reason"] or "lower_score"})
    return pairs


def pairs_frame(pairs: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{**p, "prompt": json.dumps(p["prompt"], ensure_ascii=False)} for p in pairs],
                        schema=PAIRS_SCHEMA)


class Exports:
    """The distilled stage's side files, written chunk by chunk into ``folder``: ``sft.jsonl``
    and, with ``pairs``, ``preference_pairs.jsonl`` / ``.parquet``. Each chunk must hold whole
    samples. Use as a context manager; :meth:`files` names the finished files."""

    def __init__(self, folder: Path, rationale: bool, pairs: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.rationale, self.with_pairs = folder, rationale, pairs
        self.kept = self.pairs = 0
        self._sft = (folder / "sft.jsonl").open("w")
        self._pairs_jsonl = (folder / "preference_pairs.jsonl").open("w") if pairs else None
        self._pairs_parquet: pq.ParquetWriter | None = None

    def add(self, filtered: pl.DataFrame) -> None:
        kept = filtered.filter(pl.col("kept"))
        self.kept += kept.height
        self._sft.write(to_jsonl([sft_record(r, self.rationale) for r in kept.iter_rows(named=True)]))
        if self._pairs_jsonl is None:
            return
        pairs = preference_pairs(filtered)
        self.pairs += len(pairs)
        self._pairs_jsonl.write(to_jsonl(pairs))
        table = pairs_frame(pairs).to_arrow()
        if self._pairs_parquet is None:
            self._pairs_parquet = pq.ParquetWriter(self.folder / "preference_pairs.parquet", table.schema)
        self._pairs_parquet.write_table(table)

    def files(self) -> dict[str, Path]:
        names = ["sft.jsonl", *(["preference_pairs.jsonl", "preference_pairs.parquet"] if self.with_pairs else [])]
        return {name: self.folder / name for name in names}

    def __enter__(self) -> Exports:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sft.close()
        if self._pairs_jsonl is not None:
            self._pairs_jsonl.close()
            if self._pairs_parquet is None:
                pairs_frame([]).write_parquet(self.folder / "preference_pairs.parquet")
            else:
                self._pairs_parquet.close()
