"""What a correct label costs: fixed separate requests against `n` per request and adaptive sampling.

Takes the demo's train split with all its gold withheld (every question takes the gold-free path;
the gold is kept aside to score what is kept), the embedded teacher with the shipped error profile
behind a real local server (`fastdistill serve`'s, honouring `n` and counting tokens, cached prompt
prefixes included), priced like a small commercial teacher (provider_gateway.yaml's `embedded`
entry: 0.15 / 0.60 $ per million input / output tokens, 0.075 for cached input). Each row is a
fresh run (its own response cache) of the teacher stage's chunk function and then the filtered
stage's (`gates.stage.gate_chunk`, every shipped gate):

* ``fixed, separate``: `num_generations` requests per question (the teacher before `n`);
* ``adaptive, separate``: `decode.adaptive` where the provider has no `n` (Ollama, OpenRouter):
  every answer its own request, asked only while the question is not settled (`gates.adaptive`);
* ``fixed, n``: one request per question for all its answers;
* ``adaptive, n``: `initial_generations` answers in one request, then, while the question is not
  settled, the fewest answers that could settle it in one request per round;
* ``adaptive, n + escalation``: and the unsettled questions asked once of `embedded_strong` (the
  embedded teacher without its errors, priced 2.50 / 10.00 $);
* ``fixed, n, batch``: `teacher.mode: batch`, the Batch API (the embedded server's `/v1/files` and
  `/v1/batches`, completing a second after submission) at `batch_price_factor` 0.5.

Printed per row: HTTP requests, prompt / cached / completion tokens, dollars, kept samples, precision
against the withheld gold with its 95 % Wilson interval, correct labels, dollars per correct kept
label and wall time (teacher + gates); then the ratios the issue asks for against ``fixed, separate``.

    .venv/bin/python benchmarks/label_cost.py [--limit N] [--generations 5] [--initial 2] [--stop-margin 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl

from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.config.models import (
    DatasetConfig,
    EscalateConfig,
    RecipeConfig,
    RunConfig,
    TeacherConfig,
    TeacherErrorProfile,
    WithholdGold,
)
from fastdistill_assets.core.proportions import wilson_interval
from fastdistill_assets.datasets.canonical import canonicalize
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.evaluation.gold_free import withheld_precision
from fastdistill_assets.gates.adaptive import SettleRule, sample_adaptively
from fastdistill_assets.gates.escalation import Escalator
from fastdistill_assets.gates.label_cost import (
    CALIBRATION,
    ESCALATION,
    TEACHER,
    label_cost,
    token_counts,
)
from fastdistill_assets.gates.pipeline import GateWorkers
from fastdistill_assets.gates.stage import gate_chunk
from fastdistill_assets.teacher.batch import BatchOptions
from fastdistill_assets.teacher.candidates import generate_part
from fastdistill_assets.teacher.gateway import ProviderGateway

REPO = Path(__file__).resolve().parent.parent
VARIANTS = (("fixed, separate", False, False, False, False), ("adaptive, separate", False, True, False, False),
            ("fixed, n", True, False, False, False), ("adaptive, n", True, True, False, False),
            ("adaptive, n + escalation", True, True, True, False), ("fixed, n, batch", True, False, False, True))


def run_variant(run: RunConfig, canon: pl.DataFrame, tmp: Path, name: str, supports_n: bool, adaptive: bool,
                escalates: bool, batch: bool) -> dict:
    gates = load_gates(REPO / "configs" / "quality_gates.yaml")
    run = run.model_copy(update={"decode": run.decode.model_copy(update={"adaptive": adaptive})})
    gateway = ProviderGateway(config_path=str(REPO / "configs" / "provider_gateway.yaml"),
                              cache_path=str(tmp / f"{name}.sqlite"))
    overrides = {**run.teacher.endpoint_overrides(), "supports_n": supports_n}
    escalate = EscalateConfig(provider="embedded_strong")
    started = time.perf_counter()
    options = BatchOptions(tmp / f"{name}-batches", poll_s=0.2) if batch else None
    with gateway.session("embedded", None, run.decode, overrides=overrides, batch=options) as generator, \
            GateWorkers(1, gates.execution) as runner:
        if adaptive:
            rule = SettleRule(gates, run.decode.num_generations, run.decode.stop_margin, False, runner)
            candidates, account, _ = sample_adaptively(canon, run, generator, "embedded", rule)
        else:
            candidates, account = generate_part(canon, run, generator, "embedded")
        teacher_s = time.perf_counter() - started
        with Escalator(gateway, escalate, run.decode) as escalator:
            filtered, summary = gate_chunk(candidates, gates, run.recipe, gateway, run.teacher, runner,
                                           escalator if escalates else None)
    measured = withheld_precision(filtered, canon, gates) or {"correct": 0, "n": 0}
    prices = {TEACHER: gateway.prices("embedded", batch=batch), ESCALATION: gateway.prices(escalate.provider),
              CALIBRATION: gateway.prices(escalate.provider)}
    cost = label_cost(token_counts(filtered), prices, measured["n"])
    requests = account.calls + (summary["escalation"]["account"]["calls"] if summary["escalation"] else 0)
    tokens = [sum(counts[i] for counts in cost["tokens"].values()) for i in range(3)]
    return {"name": name, "requests": requests, "prompt": tokens[0], "cached": tokens[2], "completion": tokens[1],
            "dollars": cost["total_usd"], "kept": measured["n"], "correct": measured["correct"],
            "answers": candidates.height, "teacher_s": teacher_s, "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="questions (default: the whole train split)")
    parser.add_argument("--generations", type=int, default=5, help="decode.num_generations (adaptive: the most)")
    parser.add_argument("--initial", type=int, default=None, help="decode.initial_generations (default: typed)")
    parser.add_argument("--stop-margin", type=int, default=None, help="decode.stop_margin (default: typed)")
    parser.add_argument("--sample-rows", type=int, default=None,
                        help="dataset.sample_rows: rows per table in the prompt (default: typed; more rows, a longer "
                             "prompt, closer to a real multi-table schema's)")
    args = parser.parse_args()
    decode = {"name": "sampled", "temperature": 0.4, "num_generations": args.generations,
              **({} if args.initial is None else {"initial_generations": args.initial}),
              **({} if args.stop_margin is None else {"stop_margin": args.stop_margin})}
    dataset = DatasetConfig(splits=["train"], limit_per_split=args.limit,
                            withhold_gold=WithholdGold(share=1.0, splits=["train"]),
                            **({} if args.sample_rows is None else {"sample_rows": args.sample_rows}))
    run = RunConfig(dataset=dataset, decode=decode, recipe=RecipeConfig(multi_decode_select=True),
                    teacher=TeacherConfig(error_profile=TeacherErrorProfile()))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        canon = canonicalize(load_dataset(run.dataset, tmp / "data").frame, run).frame
        print(f"{canon.height} questions, all gold withheld; embedded teacher with the shipped error profile, "
              f"temperature {run.decode.temperature}, at most {args.generations} answers; adaptive: "
              f"{run.decode.initial_generations} first, stop_margin {run.decode.stop_margin}; "
              f"{run.dataset.sample_rows} sample rows per table in the prompt")
        rows = [run_variant(run, canon, tmp, *variant) for variant in VARIANTS]
    print(f"\n{'variant':<26} {'requests':>8} {'prompt':>8} {'cached':>7} {'complet.':>8} {'dollars':>8} {'answers':>7} "
          f"{'kept':>5} {'correct':>7} {'precision [95 % Wilson]':>24} {'$ per correct':>13} {'wall s':>7}")
    for r in rows:
        low, high = wilson_interval(r["correct"], r["kept"])
        precision = r["correct"] / r["kept"] if r["kept"] else 0.0
        per_correct = r["dollars"] / r["correct"] if r["correct"] else float("nan")
        r["per_correct"], r["precision"] = per_correct, precision
        print(f"{r['name']:<26} {r['requests']:>8} {r['prompt']:>8} {r['cached']:>7} {r['completion']:>8} "
              f"{r['dollars']:>8.4f} {r['answers']:>7} {r['kept']:>5} {r['correct']:>7} "
              f"{precision:>8.4f} [{low:.3f}, {high:.3f}] {per_correct:>13.7f} {r['wall_s']:>7.1f}")
    base = rows[0]
    print("\nagainst fixed, separate:")
    for r in rows[1:]:
        print(f"  {r['name']:<26} $ per correct label x{r['per_correct'] / base['per_correct']:.3f}, precision "
              f"{r['precision'] - base['precision']:+.4f}, correct labels {r['correct'] / base['correct']:.1%}, "
              f"requests x{r['requests'] / base['requests']:.3f}")


if __name__ == "__main__":
    main()
