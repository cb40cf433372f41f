"""Gold-free gate precision: how often is a sample kept without gold actually right?

Takes the demo's train split (a labeled dataset), withholds all its gold, samples
``--generations`` answers per question from the embedded teacher at ``--temperature``, runs
the gold-free gates (clean, rules, parse, read-only execution, self-consistency, best-of-n
selection) and scores the kept samples against the withheld gold with the gates' own
gold-match rule. Prints, for each ``min_agreement`` in the sweep:

* precision: share of kept samples whose kept answer matches the gold;
* recall: of the samples with at least one gold-matching sampled candidate, the share kept
  with a gold-matching answer (one denominator for every row);
* kept: samples kept, and their share of all samples.

The reference rows keep what executes with no agreement gate: "greedy" is one decode at
temperature 0 (a single-decode run), "first sampled" the first of the sampled candidates
that executes.
The embedded teacher is called in-process (the same function `fastdistill serve` answers
with, same seeds), so no HTTP time is measured here.

    .venv/bin/python benchmarks/gold_free_precision.py [--generations 5] [--temperature 0.8] [--limit N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl

from fastdistill_assets.teacher.candidates import build_requests
from fastdistill_assets.canonical import canonicalize
from fastdistill_assets.config import ConsistencyGates, DatasetConfig, GatesConfig, RunConfig
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.evaluation.gold_free import withheld_gold_matches
from fastdistill_assets.gates.consistency import apply_consistency
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.gates.select import attach_judge, select
from fastdistill_assets.teacher import embedded

SWEEP = (0.4, 0.5, 0.6, 0.8, 1.0)


def sample_candidates(run: RunConfig, data_dir: Path) -> pl.DataFrame:
    """Candidates of the demo's train split with all gold withheld (column ``withheld_gold_sql``)."""
    canon = canonicalize(load_dataset(run.dataset, data_dir).frame, run).frame
    requests, carried = build_requests(canon, run)
    withheld = dict(canon.select("sample_id", "withheld_gold_sql").iter_rows())
    params = {"temperature": run.decode.temperature}
    rows = []
    for request, base in zip(requests, carried, strict=True):
        output = embedded.reply(request.messages, {**params, "seed": request.generation_index})
        rows.append({**base, "raw_output": output, "error": None, "withheld_gold_sql": withheld[base["sample_id"]]})
    return pl.DataFrame(rows, schema_overrides={"error": pl.String, "gold_sql": pl.String})


def score(kept: pl.DataFrame, matches: pl.DataFrame, n_samples: int, reachable: int) -> dict[str, float]:
    """Precision / recall of one kept set (one candidate per sample) against the hidden gold;
    ``reachable``: the samples with at least one gold-matching sampled candidate."""
    kept = kept.join(matches.select("candidate_id", "correct"), on="candidate_id")
    correct = int(kept["correct"].sum())
    return {"kept": kept.height, "kept_share": kept.height / n_samples,
            "precision": correct / kept.height if kept.height else 0.0,
            "recall": correct / reachable if reachable else 0.0}


def gate_with_oracle(candidates: pl.DataFrame, gates: GatesConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The gold-free verdicts, and per candidate whether it matches the withheld gold."""
    gated = gate_frame(candidates, gates, workers=2)
    withheld = candidates.select("sample_id", "withheld_gold_sql").unique("sample_id")
    return gated, withheld_gold_matches(candidates, withheld, gates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--min-executed", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="questions (default: the whole train split)")
    args = parser.parse_args()
    run = RunConfig(dataset=DatasetConfig(splits=["train"], limit_per_split=args.limit,
                                          withhold_gold={"share": 1.0, "splits": ["train"]}),
                    decode={"name": "sampled", "temperature": args.temperature, "num_generations": args.generations})
    greedy_run = run.model_copy(update={"decode": run.decode.model_copy(
        update={"name": "greedy", "temperature": 0.0, "num_generations": 1})})
    gates = GatesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        candidates = sample_candidates(run, Path(tmp))
        greedy = sample_candidates(greedy_run, Path(tmp))
        n_samples = candidates["sample_id"].n_unique()
        print(f"questions {n_samples}, candidates {candidates.height} ({args.generations} per question, "
              f"temperature {args.temperature}) + {greedy.height} greedy, embedded teacher in-process, "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        gated, matches = gate_with_oracle(candidates, gates)
        greedy_gated, greedy_matches = gate_with_oracle(greedy, gates)
        print(f"gates (gold-free and oracle passes) {time.perf_counter() - started:.1f} s")
    reachable = matches.group_by("sample_id").agg(pl.col("correct").any())["correct"].sum()
    executed = gated.filter(pl.col("reject_reason").is_null())
    rows = [("greedy, exec only (1 decode, T=0)",
             score(greedy_gated.filter(pl.col("reject_reason").is_null()), greedy_matches, n_samples, reachable)),
            ("first sampled that executes", score(
                executed.sort("generation_index").unique("sample_id", keep="first"), matches, n_samples, reachable))]
    for min_agreement in SWEEP:
        config = ConsistencyGates(min_agreement=min_agreement, min_executed=args.min_executed)
        chosen = select(attach_judge(apply_consistency(gated, config), None), gates, multi_decode=True)
        rows.append((f"self-consistency min_agreement={min_agreement:.1f}",
                     score(chosen.filter(pl.col("kept")), matches, n_samples, reachable)))
    print(f"\n{'gate':<40} {'kept':>6} {'kept %':>7} {'precision':>10} {'recall':>7}")
    for name, s in rows:
        print(f"{name:<40} {s['kept']:>6} {s['kept_share']:>7.1%} {s['precision']:>10.4f} {s['recall']:>7.4f}")
    print(f"\nmin_executed={args.min_executed}; precision = kept samples whose answer matches the withheld gold / "
          f"kept; recall = kept with a matching answer / {reachable} samples with any gold-matching sampled candidate")


if __name__ == "__main__":
    main()
