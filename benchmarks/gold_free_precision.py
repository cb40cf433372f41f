"""Gold-free gate precision: how often is a label kept without gold actually right, and what does it cost?

Takes the demo's train split (a labeled dataset), hides all its gold, samples ``--generations``
answers per question from the embedded teacher with the shipped error profile (``--clean``: the
clean baseline) at ``--temperature``, and runs the filtered stage's chunk function
(``gates.stage.gate_chunk``: clean, rules, parse, read-only execution, grounding, self-consistency,
best-of-n, escalation) with the gates switched on one by one:

* ``plain vote``: self-consistency alone (what the gates were before grounding and the degenerate rule);
* ``+ degenerate``: a majority on an empty / all-NULL / lone-0 result is rejected;
* ``+ grounding``: candidates comparing a column with a string it never holds are rejected;
* ``+ escalation``: unsettled samples go to the embedded teacher without errors (``embedded_strong``,
  through a real local server and the response cache), one answer each.

Each row prints, against the hidden gold (the gates' own gold-match rule): kept samples, correct ones,
precision with its 95 % Wilson interval, the share of all questions labeled correctly, and what the
teachers' tokens cost (every answer at its provider's prices in provider_gateway.yaml, the first
teacher's tokens as the embedded server counts them) in all and per correct label; for the
escalation row also its precision per label source and its requests.
Then the shadow calibration with every gate, escalation included: half the questions (by sample_id)
keep their gold and the gold-free verdict is computed beside it, as a run with labeled questions
does; its precision estimate, overall and per label source, is printed next to the true precision
on the other half, whose gold stays hidden (they should agree within the estimate's interval).
Last, the grounding gate's own time (literal analysis, value lookups with a cold cache, the
question's numbers) as a share of the gates' time.

The first teacher is called in-process (the function `fastdistill serve` answers with, same seeds).

    .venv/bin/python benchmarks/gold_free_precision.py [--clean] [--generations 5] [--limit N]
        [--min-agreement 0.6] [--min-confirmations 1]
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
    GatesConfig,
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
from fastdistill_assets.gates.escalation import Escalator
from fastdistill_assets.gates.grounding import (
    first_ungrounded,
    missing_question_numbers,
    string_literal_uses,
)
from fastdistill_assets.gates.label_cost import (
    CALIBRATION,
    ESCALATION,
    TEACHER,
    label_cost,
    token_counts,
)
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.gates.shadow import calibration
from fastdistill_assets.gates.stage import gate_chunk
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.sqlsafe.parse import parse_sql
from fastdistill_assets.teacher import embedded
from fastdistill_assets.teacher.candidates import build_requests
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.teacher.provider_config import dollars
from fastdistill_assets.teacher.server import count_tokens

REPO = Path(__file__).resolve().parent.parent
RECIPE = RecipeConfig(multi_decode_select=True)


def sample_candidates(run: RunConfig, data_dir: Path, profile: TeacherErrorProfile | None) -> pl.DataFrame:
    """Candidates of the demo's train split, all gold hidden (kept aside in ``withheld_gold_sql``), with
    the tokens the embedded server would report for each answer (its usage accounting)."""
    canon = canonicalize(load_dataset(run.dataset, data_dir).frame, run).frame
    requests, carried = build_requests(canon, run)
    withheld = dict(canon.select("sample_id", "withheld_gold_sql").iter_rows())
    params = {"temperature": run.decode.temperature}
    rows = []
    for request, base in zip(requests, carried, strict=True):
        output = embedded.reply(request.messages, {**params, "seed": request.generation_index}, profile)
        rows.append({**base, "raw_output": output, "error": None, "withheld_gold_sql": withheld[base["sample_id"]],
                     "prompt_tokens": sum(count_tokens(str(m.get("content", ""))) for m in request.messages),
                     "completion_tokens": count_tokens(output)})
    return pl.DataFrame(rows, schema_overrides={"error": pl.String, "gold_sql": pl.String})


def gates_variant(base: GatesConfig, degenerate: bool, grounding: bool) -> GatesConfig:
    return base.model_copy(update={
        "consistency": base.consistency.model_copy(update={"degenerate_result": "reject" if degenerate else "keep"}),
        "grounding": base.grounding.model_copy(update={"enabled": grounding})})


def score(filtered: pl.DataFrame, candidates: pl.DataFrame, gates: GatesConfig, questions: int) -> dict:
    """The kept gold-free samples against the hidden gold (the eval report's own scoring), overall and
    per label source."""
    measured = withheld_precision(filtered, candidates.select("sample_id", "withheld_gold_sql").unique("sample_id"),
                                  gates) or {"correct": 0, "n": 0, "by_label_source": {}}
    by_source = {source: (acc["correct"], acc["n"]) for source, acc in measured["by_label_source"].items()}
    return {"kept": measured["n"], "correct": measured["correct"], "questions": questions, "by_source": by_source,
            "precision": measured["correct"] / measured["n"] if measured["n"] else 0.0,
            "interval": wilson_interval(measured["correct"], measured["n"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clean", action="store_true", help="the clean embedded teacher (no error profile)")
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.4)
    parser.add_argument("--limit", type=int, default=None, help="questions (default: the whole train split)")
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="consistency.min_agreement (default: shipped)")
    parser.add_argument("--min-confirmations", type=int, default=None,
                        help="teacher.escalate.min_confirmations (default: the typed default)")
    args = parser.parse_args()
    profile = None if args.clean else TeacherErrorProfile()
    dataset = DatasetConfig(splits=["train"], limit_per_split=args.limit)
    run = RunConfig(dataset=dataset.model_copy(update={"withhold_gold": WithholdGold(share=1.0, splits=["train"])}),
                    decode={"name": "sampled", "temperature": args.temperature, "num_generations": args.generations})
    shipped = load_gates(REPO / "configs" / "quality_gates.yaml")
    if args.min_agreement is not None:
        shipped = shipped.model_copy(update={"consistency": shipped.consistency.model_copy(
            update={"min_agreement": args.min_agreement})})
    escalate = EscalateConfig(provider="embedded_strong", **(
        {} if args.min_confirmations is None else {"min_confirmations": args.min_confirmations}))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        candidates = sample_candidates(run, Path(tmp), profile)
        questions = candidates["sample_id"].n_unique()
        print(f"questions {questions}, candidates {candidates.height} ({args.generations} per question, temperature "
              f"{args.temperature}, {'clean teacher' if args.clean else 'shipped error profile'}), all gold hidden; "
              f"teacher in-process {time.perf_counter() - started:.1f} s")
        gateway = ProviderGateway(config_path=str(REPO / "configs" / "provider_gateway.yaml"),
                                  cache_path=str(Path(tmp) / "responses.sqlite"))
        prices = {TEACHER: gateway.prices("embedded"), ESCALATION: gateway.prices(escalate.provider),
                  CALIBRATION: gateway.prices(escalate.provider)}
        rows = []
        for name, degenerate, grounding, escalates in (("plain vote", False, False, False),
                                                       ("+ degenerate", True, False, False),
                                                       ("+ grounding", True, True, False),
                                                       ("+ escalation", True, True, True)):
            gates = gates_variant(shipped, degenerate, grounding)
            with Escalator(gateway, escalate, run.decode) as escalator:
                filtered, summary = gate_chunk(candidates, gates, RECIPE, gateway, TeacherConfig(),
                                               escalator=escalator if escalates else None)
            measured = score(filtered, candidates, gates, questions)
            cost = label_cost(token_counts(filtered), prices, measured["kept"])["total_usd"]
            rows.append((name, {**measured, "dollars": cost}, summary["escalation"]))

        print(f"\n{'gates':<16} {'kept':>5} {'correct':>8} {'precision':>10} {'95 % Wilson':>16} {'labeled right':>14} "
              f"{'dollars':>8} {'$ per correct label':>20}")
        for name, s, _ in rows:
            low, high = s["interval"]
            per_correct = f"{s['dollars'] / s['correct']:.6f}" if s["correct"] else "-"
            print(f"{name:<16} {s['kept']:>5} {s['correct']:>8} {s['precision']:>10.4f} [{low:.3f}, {high:.3f}]"
                  f" {s['correct'] / s['questions']:>14.1%} {s['dollars']:>8.4f} {per_correct:>20}")
        print(f"  dollars: every answer's tokens at provider_gateway.yaml's prices (embedded "
              f"{prices[TEACHER][0]} / {prices[TEACHER][1]}, {escalate.provider} {prices[ESCALATION][0]} / "
              f"{prices[ESCALATION][1]} $ per million tokens)")
        _, last, escalation = rows[-1]
        for source, (correct, kept) in last["by_source"].items():
            low, high = wilson_interval(correct, kept)
            print(f"  label_source {source:<10} {correct:>4} of {kept:<4} precision {correct / kept:.4f} "
                  f"[{low:.3f}, {high:.3f}]")
        if escalation:
            account = escalation["account"]
            spent = dollars(account["input_tokens"], account["output_tokens"], prices[ESCALATION])
            print(f"  escalation: {escalation['samples']} samples asked, {escalation['kept']} kept; "
                  f"{account['requests']} requests, {account['input_tokens'] + account['output_tokens']} tokens, "
                  f"${spent:.4f} at {escalate.provider}'s prices")

        # shadow calibration: half the questions keep their gold (the estimate is made on them), the
        # other half is scored against its hidden gold (the truth it should agree with)
        labeled_half = pl.col("sample_id").str.slice(0, 8).str.to_integer(base=16) % 2 == 0
        half = candidates.with_columns(pl.when(labeled_half).then(pl.col("withheld_gold_sql")).alias("gold_sql"))
        gates = gates_variant(shipped, True, True)
        with Escalator(gateway, escalate, run.decode) as escalator:
            shadow, _ = gate_chunk(half, gates, RECIPE, gateway, TeacherConfig(), escalator=escalator)
        estimate = calibration(shadow)
        hidden = half.filter(pl.col("gold_sql").is_null())
        truth = score(shadow.filter(pl.col("gold_sql").is_null()), hidden, gates, hidden["sample_id"].n_unique())
        if estimate is None or estimate["precision"] is None:
            print("\nshadow calibration: nothing to measure on (no labeled question the gold-free gates would keep)")
        else:
            print(f"\nshadow calibration, all gates: the estimate from the {estimate['samples']} questions that keep "
                  f"their gold against the true precision on the other {truth['questions']}, their gold hidden")
            truths = {"all": (truth["correct"], truth["kept"]), **truth["by_source"]}
            measured = {"all": estimate, **estimate["by_label_source"]}
            for source, m in measured.items():
                correct, kept = truths.get(source, (0, 0))
                if not kept:
                    verdict, true = "n/a (nothing kept there)", "-"
                else:
                    inside = m["precision_lower"] <= correct / kept <= m["precision_upper"]
                    verdict, true = f"{'within' if inside else 'OUTSIDE'} the estimate's interval", f"{correct / kept:.4f}"
                print(f"  {source:<10} estimate {m['precision']:.4f} [{m['precision_lower']:.3f}, "
                      f"{m['precision_upper']:.3f}] ({m['correct']} of {m['kept']}); true {true} ({correct} of "
                      f"{kept}): {verdict}")
        gates = gates_variant(shipped, True, True)
        total = min(gated_seconds(candidates, gates) for _ in range(3))
        spent = min(grounding_seconds(candidates, gates) for _ in range(3))
        print(f"\ngrounding: {spent:.2f} s of the gates' {total:.2f} s ({spent / total:.1%}; gate_chunk over every "
              "candidate, best of 3, a fresh lookup cache each)")


def gated_seconds(candidates: pl.DataFrame, gates: GatesConfig) -> float:
    started = time.perf_counter()
    gate_chunk(candidates, gates, RECIPE, None, TeacherConfig())  # type: ignore[arg-type]  # no judge: no gateway
    return time.perf_counter() - started


def grounding_seconds(candidates: pl.DataFrame, gates: GatesConfig) -> float:
    """The time the grounding gate's own work takes over the candidates that execute: the literal
    analysis, the value lookups (a fresh executor, so a cold cache) and the question's numbers."""
    executed = gate_frame(candidates, gates).filter(pl.col("exec_ok"))
    rows = [(parse_sql(sql, dialect).expression, db, dialect, question) for sql, db, dialect, question in
            executed.select("cleaned_sql", "db_path", "dialect", "question").iter_rows()]
    case_sensitive = gates.grounding.case_sensitive
    with Executor(gates.execution) as executor:
        started = time.perf_counter()
        for expression, db, dialect, question in rows:
            first_ungrounded(string_literal_uses(expression, dialect), lambda use, db=db, dialect=dialect: executor.value_exists(
                db, dialect, use.table, use.column, use.value, case_sensitive))
            missing_question_numbers(question, expression)
        return time.perf_counter() - started


if __name__ == "__main__":
    main()
