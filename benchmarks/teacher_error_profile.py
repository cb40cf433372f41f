"""The embedded teacher's error profile, measured: how often do its answers execute and match gold?

Runs the embedded teacher with the run config's ``teacher.error_profile`` (and, for reference,
the clean baseline) over the demo dataset's train split, one greedy decode per question, through
the real gates (clean, rules, parse, read-only execution, gold match). Prints, per profile:

* exec pass: share of answers that execute after cleaning;
* gold match: share of all answers whose result matches the gold's;
* per kind: answers it was drawn for, answers it changed, and of those the exec pass and gold match.

The teacher is called in-process (the same function the embedded server answers with, same
seeds), so no HTTP time is measured. ``--seed`` replaces the profile's seed (``--seeds 0 1 2``
shows the spread between seeds).

    .venv/bin/python benchmarks/teacher_error_profile.py [--config configs/run_config.yaml] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

from fastdistill_assets.config.loading import load_run_config
from fastdistill_assets.config.models import (
    DatasetConfig,
    GatesConfig,
    RunConfig,
    TeacherErrorProfile,
)
from fastdistill_assets.datasets.canonical import canonicalize
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.teacher import errors
from fastdistill_assets.teacher.candidates import build_requests

REPO = Path(__file__).resolve().parents[1]
CLEAN = TeacherErrorProfile.clean()


def demo_canonical(split: str, limit: int | None, data_dir: Path) -> tuple[RunConfig, pl.DataFrame]:
    """The demo split with every gold shown, and a greedy single-decode run config."""
    run = RunConfig(dataset=DatasetConfig(splits=[split], limit_per_split=limit, withhold_gold={"share": 0.0}),
                    decode={"name": "greedy", "temperature": 0.0, "num_generations": 1})
    return run, canonicalize(load_dataset(run.dataset, data_dir).frame, run).frame


def noisy_candidates(run: RunConfig, canonical: pl.DataFrame, profile: TeacherErrorProfile) -> pl.DataFrame:
    """One teacher answer per question under ``profile``; ``drawn`` / ``applied`` list its kinds."""
    requests, carried = build_requests(canonical, run)
    params = {"temperature": run.decode.temperature}
    rows = []
    for request, base in zip(requests, carried, strict=True):
        noisy = errors.answer(request.messages, {**params, "seed": request.generation_index}, profile)
        rows.append({**base, "raw_output": noisy.text, "error": None,
                     "drawn": list(noisy.drawn), "applied": list(noisy.applied)})
    return pl.DataFrame(rows, schema_overrides={"error": pl.String, "gold_sql": pl.String,
                                                "drawn": pl.List(pl.String), "applied": pl.List(pl.String)})


def rate(frame: pl.DataFrame, column: str) -> float:
    """Share of rows where a boolean gate column is true (null: false)."""
    return float(frame[column].fill_null(False).mean() or 0.0) if frame.height else 0.0


def report(name: str, gated: pl.DataFrame) -> None:
    """Print one profile's exec pass, gold match and per-kind breakdown."""
    print(f"\n{name}: {gated.height} answers, exec pass {rate(gated, 'exec_ok'):.3f}, "
          f"gold match {rate(gated, 'gold_match'):.3f}")
    drawn = Counter(k for kinds in gated["drawn"] for k in kinds)
    applied = Counter(k for kinds in gated["applied"] for k in kinds)
    if not drawn:
        return
    print(f"  {'kind':<20} {'drawn':>6} {'applied':>8} {'exec':>6} {'gold':>6}")
    for kind in CLEAN.rates():
        changed = gated.filter(pl.col("applied").list.contains(kind))
        print(f"  {kind:<20} {drawn[kind]:>6} {applied[kind]:>8} {rate(changed, 'exec_ok'):>6.3f} "
              f"{rate(changed, 'gold_match'):>6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "run_config.yaml",
                        help="run config whose teacher.error_profile is measured")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="profile seeds (default: the config's)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None, help="questions (default: the whole split)")
    args = parser.parse_args()
    profile = load_run_config(args.config).teacher.error_profile or CLEAN
    profiles = [("clean baseline", CLEAN)] + [
        (f"profile seed={seed}", profile.model_copy(update={"seed": seed}))
        for seed in (args.seeds if args.seeds is not None else [profile.seed])]
    print(f"profile {profile.model_dump()} from {args.config}")
    gates = GatesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        run, canonical = demo_canonical(args.split, args.limit, Path(tmp))
        for name, each in profiles:
            started = time.perf_counter()
            gated = gate_frame(noisy_candidates(run, canonical, each), gates)
            report(f"{name} (demo {args.split}, greedy, {time.perf_counter() - started:.1f} s)", gated)


if __name__ == "__main__":
    main()
