"""filtered -> distilled exports: chat-format SFT records and preference pairs (pure)."""

from __future__ import annotations

import io
import json
from typing import Any

import polars as pl

from fastdistill_assets.prompt_format import assistant_target


DISTILLED_COLUMNS = ["sample_id", "candidate_id", "split", "db_id", "question", "schema", "sql", "rationale",
                     "judge_score", "messages"]


def sft_record(row: dict[str, Any], rationale: bool) -> dict[str, Any]:
    prompt = json.loads(row["messages"])
    target = assistant_target(row["cleaned_sql"], row.get("rationale") if rationale else None)
    return {"id": row["candidate_id"], "messages": [*prompt, {"role": "assistant", "content": target}]}


def distilled_frame(filtered: pl.DataFrame) -> pl.DataFrame:
    kept = filtered.filter(pl.col("kept"))
    return kept.rename({"cleaned_sql": "sql"}).select(DISTILLED_COLUMNS)


def to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def preference_pairs(filtered: pl.DataFrame) -> list[dict[str, Any]]:
    """chosen = the kept candidate; rejected = the lowest-ranked other candidate of the same input.

    A candidate that passed every gate but was not selected (best-of-n) ranks with the kept
    ones: it is never the rejected side unless it scored lower. Ties keep a stable order.
    """
    pairs = []
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


def pairs_parquet(pairs: list[dict[str, Any]]) -> bytes:
    frame = pl.DataFrame([{**p, "prompt": json.dumps(p["prompt"], ensure_ascii=False)} for p in pairs],
                         schema={"sample_id": pl.String, "prompt": pl.String, "chosen": pl.String,
                                 "rejected": pl.String, "rejected_reason": pl.String})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
