"""The filtered stage over one chunk of whole samples: every gate in order, then selection."""

from __future__ import annotations

import polars as pl

from fastdistill_assets.config import GatesConfig, RecipeConfig, TeacherConfig
from fastdistill_assets.gates.consistency import apply_consistency
from fastdistill_assets.gates.judge import run_judge
from fastdistill_assets.gates.pipeline import GateWorkers, gate_frame
from fastdistill_assets.gates.select import attach_judge, select
from fastdistill_assets.teacher.gateway import ProviderGateway


def gate_chunk(candidates: pl.DataFrame, gates: GatesConfig, recipe: RecipeConfig, gateway: ProviderGateway,
               teacher: TeacherConfig, runner: GateWorkers | None = None) -> tuple[pl.DataFrame, int]:
    """Verdicts for a chunk holding every candidate of its samples (self-consistency and
    best-of-n look across a sample's candidates). ``runner``: the stage's gate workers (None: this
    process). Returns (frame, judge calls)."""
    gated = apply_consistency(gate_frame(candidates, gates, rationale=recipe.rationale, runner=runner),
                              gates.consistency)
    scores, judge_calls = None, 0
    if gates.judge.enabled:
        scores, judge_calls = run_judge(gated, gateway, gates.judge, teacher)
    return select(attach_judge(gated, scores), gates, recipe.multi_decode_select), judge_calls
