"""What the kept labels cost: the teachers' tokens priced per provider, per kept sample.

Every answer in ``filtered`` carries the tokens it took when it was asked (a cached answer keeps
the tokens it was paid for once), so the cost of a run's labels does not depend on how often it
was materialized. Three roles are priced separately, each at its provider's ``price_in_per_mtok`` /
``price_out_per_mtok`` (``provider_gateway.yaml``; prompt tokens the provider served from its prompt
cache at ``price_cached_in_per_mtok``): the first teacher's answers, the escalation's
answers that could become labels, and the escalation's ``calibration_only`` answers (bought to
measure it, never a label). A teacher without prices leaves the cost unknown rather than made up.
The LLM judge's tokens are not counted here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from fastdistill_assets.gates.escalation import CALIBRATION_ONLY
from fastdistill_assets.teacher.provider_config import Prices, dollars

TEACHER, ESCALATION, CALIBRATION = "teacher", "escalation", "calibration"


def token_counts(frame: pl.DataFrame) -> dict[str, list[int]]:
    """[input tokens, output tokens, cached input tokens] per role in ``frame``: the first teacher's
    answers, the escalation's, and its calibration-only ones. Reads label_source, reject_reason,
    prompt_tokens, completion_tokens, cached_tokens."""
    role = (pl.when(pl.col("reject_reason") == CALIBRATION_ONLY).then(pl.lit(CALIBRATION))
            .when(pl.col("label_source") == "escalated").then(pl.lit(ESCALATION)).otherwise(pl.lit(TEACHER)))
    if "cached_tokens" not in frame.columns:   # candidates written before cached tokens were read
        frame = frame.with_columns(pl.lit(0, pl.Int64).alias("cached_tokens"))
    sums = frame.group_by(role.alias("role")).agg(*(pl.col(c).fill_null(0).sum() for c in (
        "prompt_tokens", "completion_tokens", "cached_tokens")))
    return {r: [int(i), int(o), int(c)] for r, i, o, c in sums.iter_rows()}


def add_counts(parts: Iterable[Mapping[str, list[int]]]) -> dict[str, list[int]]:
    total: dict[str, list[int]] = {}
    for part in parts:
        for role, counts in part.items():
            was = total.get(role, [0, 0, 0])
            total[role] = [a + b for a, b in zip(was, [*counts, 0, 0, 0][:3], strict=True)]
    return total


def label_cost(tokens: Mapping[str, list[int]], prices: Mapping[str, Prices], kept_samples: int) -> dict[str, Any]:
    """Dollars per teacher role (``teacher_cost_usd``), their sum and ``cost_per_kept_sample_usd``;
    a figure is None where a role that spent tokens has no prices (its cost is unknown)."""
    per_role = {role: dollars(counts[0], counts[1], prices.get(role, Prices(None, None)),
                              counts[2] if len(counts) > 2 else 0)
                for role, counts in sorted(tokens.items())}
    known = None not in per_role.values()
    total = round(sum(v for v in per_role.values() if v is not None), 6) if known else None
    return {"teacher_cost_usd": per_role, "total_usd": total, "tokens": dict(sorted(tokens.items())),
            "kept_samples": kept_samples,
            "cost_per_kept_sample_usd": round(total / kept_samples, 8) if total is not None and kept_samples else None}


def cost_line(cost: dict[str, Any]) -> str | None:
    """``teacher cost $T (calibration $c, escalation $e, teacher $t) for N kept samples: $P per kept
    sample``, or None when unknown (a teacher without prices in provider_gateway.yaml)."""
    if cost.get("total_usd") is None:
        return None
    parts = ", ".join(f"{role} ${value:.4f}" for role, value in cost["teacher_cost_usd"].items())
    per = cost["cost_per_kept_sample_usd"]
    return (f"teacher cost ${cost['total_usd']:.4f} ({parts}) for {cost['kept_samples']} kept samples: "
            + (f"${per:.6f} per kept sample" if per is not None else "nothing kept"))
