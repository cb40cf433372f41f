"""Self-consistency: the semantic gate for samples without gold.

Independent decodes that reach the same result agree; disagreement signals a wrong or
ambiguous answer. Per sample, among the candidates that executed (and passed the earlier
gates), candidates are grouped by result signature; the largest group is the majority and
its share is the sample's ``agreement``.

A degenerate majority is no evidence (``consistency.degenerate_result``): different wrong
queries (a misspelled literal, a dropped condition) all return nothing, a lone NULL or a
COUNT of 0, and agree by accident.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from numbers import Number
from typing import Any

import polars as pl

from fastdistill_assets.config.models import ConsistencyGates

TOO_FEW = "too_few_executed"
NO_MAJORITY = "no_majority"
LOW_AGREEMENT = "low_agreement"
MINORITY = "minority_result"
DEGENERATE = "degenerate_result"


def is_degenerate(rows: Sequence[Sequence[Any]]) -> bool:
    """No rows, every value NULL, or one row whose values are all 0 or NULL (a count of nothing)."""
    if not rows:
        return True
    if all(value is None for row in rows for value in row):
        return True
    return len(rows) == 1 and all(value is None or (isinstance(value, Number) and not isinstance(value, bool)
                                                    and not value) for value in rows[0])


def sample_verdicts(signatures: Sequence[str | None], config: ConsistencyGates,
                    degenerate: Sequence[bool | None] | None = None) -> tuple[float | None, list[str | None]]:
    """(agreement, reject reason per candidate) for one sample.

    ``signatures[i]`` is candidate i's result signature, None when it did not get this far
    (its earlier reject reason stands, and the returned reason for it is None too).
    ``degenerate[i]``: whether that result is degenerate (:func:`is_degenerate`); a degenerate
    majority rejects the sample when ``config.degenerate_result`` is ``reject``.
    Agreement is None when no candidate executed.
    """
    executed = [s for s in signatures if s is not None]
    if not executed:
        return None, [None] * len(signatures)
    counts = Counter(executed).most_common()
    top = counts[0][1]
    agreement = top / len(executed)
    majority = counts[0][0]
    majority_degenerate = degenerate is not None and bool(degenerate[list(signatures).index(majority)])
    if len(executed) < config.min_executed:
        sample_reason: str | None = TOO_FEW
    elif len(counts) > 1 and counts[1][1] == top:
        sample_reason = NO_MAJORITY
    elif agreement < config.min_agreement:
        sample_reason = LOW_AGREEMENT
    elif majority_degenerate and config.degenerate_result == "reject":
        sample_reason = DEGENERATE
    else:
        sample_reason = None
    reasons = [None if s is None else sample_reason or (None if s == majority else MINORITY) for s in signatures]
    return agreement, reasons


def apply_consistency(frame: pl.DataFrame, config: ConsistencyGates) -> pl.DataFrame:
    """Add ``agreement`` (per sample, null for samples with gold) and set the reject reason of
    gold-free candidates that the gate rejects. Reads sample_id, gold_sql, reject_reason,
    result_signature, result_degenerate; one output row per input row, same order.
    """
    reasons = frame["reject_reason"].to_list()
    agreement: list[float | None] = [None] * frame.height
    gold_free = (frame.with_row_index("_i").filter(pl.col("gold_sql").is_null())
                 .with_columns(pl.when(pl.col("reject_reason").is_null()).then(pl.col("result_signature"))
                               .alias("_alive"))
                 .group_by("sample_id", maintain_order=True).agg("_i", "_alive", "result_degenerate"))
    for indices, signatures, degenerate in gold_free.select("_i", "_alive", "result_degenerate").iter_rows():
        share, verdicts = sample_verdicts(signatures, config, degenerate)
        for i, verdict in zip(indices, verdicts, strict=True):
            agreement[i] = share
            if verdict is not None:
                reasons[i] = verdict
    return frame.with_columns(pl.Series("reject_reason", reasons, pl.String),
                              pl.Series("agreement", agreement, pl.Float64))
