"""How right is the gold-free path? Score its answers against gold withheld from the pipeline.

Only runs with ``dataset.withhold_gold`` (the demo's unlabeled slice, the precision
benchmark) have that gold; for a user's truly unlabeled questions nothing can be scored.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from fastdistill_assets.config.models import GatesConfig
from fastdistill_assets.evaluation.metrics import Accuracy
from fastdistill_assets.gates.pipeline import NEEDED, gate_frame


def withheld_gold_matches(candidates: pl.DataFrame, withheld: pl.DataFrame, gates: GatesConfig,
                          rationale: bool = False) -> pl.DataFrame:
    """candidate_id, sample_id, correct: whether each candidate matches its sample's withheld gold.

    The candidates are gated again on the labeled path, so "correct" is the gates' own
    gold-match rule. ``withheld`` holds sample_id and withheld_gold_sql; candidates whose
    sample has none are left out.
    """
    gold = withheld.filter(pl.col("withheld_gold_sql").is_not_null()).select(
        "sample_id", pl.col("withheld_gold_sql").alias("gold_sql"))
    frame = candidates.select("candidate_id", "sample_id", *[c for c in NEEDED if c != "gold_sql"]).join(
        gold, on="sample_id")
    oracle = gate_frame(frame, gates, rationale=rationale)
    return oracle.select("candidate_id", "sample_id", pl.col("gold_match").fill_null(False).alias("correct"))


def withheld_precision(filtered: pl.DataFrame, canonical: pl.DataFrame, gates: GatesConfig,
                       rationale: bool = False) -> dict[str, Any] | None:
    """Share of kept gold-free samples whose kept answer matches the withheld gold (with a 95 %
    Wilson interval), overall and per ``label_source`` (teacher, escalated), or None when the run
    withheld no gold."""
    withheld = canonical.select("sample_id", "withheld_gold_sql")
    kept = filtered.filter(pl.col("kept") & pl.col("gold_sql").is_null())
    matches = withheld_gold_matches(kept, withheld, gates, rationale)
    if matches.height == 0:
        return None
    per_sample = matches.join(kept.select("candidate_id", "label_source"), on="candidate_id").group_by(
        "sample_id", "label_source").agg(pl.col("correct").all())
    by_source = {source: Accuracy(int(group["correct"].sum()), group.height).as_dict()
                 for (source,), group in per_sample.sort("label_source").group_by("label_source", maintain_order=True)}
    return {**Accuracy(int(per_sample["correct"].sum()), per_sample.height).as_dict(), "by_label_source": by_source,
            "measured_on": "kept gold-free samples with withheld gold"}
