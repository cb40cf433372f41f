"""Adaptive sampling: the stopping rule on hand-made answers, exact request counts against a real
local server that answers from a script, the same rows as a fixed run, and a kill between rounds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.config.models import ConsistencyGates, DatasetConfig, RunConfig
from fastdistill_assets.core.prompt_format import parse_user_prompt
from fastdistill_assets.datasets.canonical import canonicalize
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.gates.adaptive import (
    SettleRule,
    answers_needed,
    sample_adaptively,
    settled,
)
from fastdistill_assets.gates.pipeline import GateWorkers
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.candidates import generate_part
from fastdistill_assets.teacher.generation import EndpointSettings, Generator
from fastdistill_assets.teacher.server import ChatServer
from fastdistill_assets_tests.conftest import REPO_CONFIGS, wait_until, write_questions
from fastdistill_assets_tests.db_fixtures import make_shop

CONSISTENCY = ConsistencyGates()   # min_executed 2, min_agreement 0.6, degenerate results rejected


@pytest.mark.parametrize("answers, degenerate, margin, is_settled, needed", [
    (["A", "A"], None, 2, True, None),              # two agree: decided at margin 2
    (["A", "A"], None, 3, False, 1),                # margin 3: one more could make 3 to 0
    (["A", "B"], None, 3, False, 2),                # A A would make 3 to 1: kept whatever the last says
    (["A", "A", "B"], None, 3, False, 1),           # A would make 3 to 1
    (["A", "A", "A"], None, 3, True, None),         # 3 to 0
    (["A", "A", "B", "B"], None, 3, False, 1),      # a tie: the last answer decides
    (["A", "B", "C"], None, 3, False, 2),           # A could still reach 3 of 5
    (["A", "B", "C", "D"], None, 3, True, None),    # hopeless: at best 2 of 5 agree
    ([None, None, None, None], None, 3, True, None),  # hopeless: at most one could execute
    ([None, None], None, 3, False, 2),              # two new answers that agree could be kept
    (["E", "E"], [True, True], 3, False, 3),        # a degenerate majority is no evidence: 3 new could win
    (["E", "A"], [True, False], 3, False, 2),       # A A would settle it (3 to 1), though E ties A now
    (["A", "B", "A", "B", "A"], None, 3, True, None),  # nothing left to ask
])
def test_stopping_rule_on_hand_made_answers(answers, degenerate, margin, is_settled, needed):
    degenerate = degenerate or [False if a else None for a in answers]
    assert settled(answers, degenerate, 5, CONSISTENCY, margin) is is_settled
    if not is_settled:
        assert answers_needed(answers, degenerate, 5, CONSISTENCY, margin) == needed


TOTAL, TOP, BROKEN = "SELECT SUM(amount) FROM sales", "SELECT MAX(amount) FROM sales", "SELECT nope FROM sales"
SCRIPT = {   # each question's answers by generation index (the request's seed)
    "What is the total amount?": [TOTAL] * 5,                       # agree
    "What is the amount of the sales?": [TOTAL, TOP, TOTAL, TOTAL, TOP],  # split, then settled
    "What is the amount of the tea sales?": [BROKEN] * 5,           # nothing executes
}
# margin 3, two first: agree asks 2 then 1; split 2 then 2 (A A makes 3 to 1); broken 2 then 2, then hopeless
EXPECTED = {"requests_n": 6, "requests_separate": 11, "answers": 11}


def scripted(messages, params):
    question = parse_user_prompt(messages[-1]["content"])["question"]
    return SCRIPT[question][params.get("seed") or 0]


@pytest.fixture
def shop_questions(tmp_path: Path) -> tuple[RunConfig, pl.DataFrame]:
    (tmp_path / "databases").mkdir()
    make_shop(tmp_path / "databases" / "shop.sqlite")
    path = write_questions(tmp_path / "q.jsonl", [{"question": q, "db_id": "shop"} for q in SCRIPT])
    run = RunConfig(dataset=DatasetConfig(kind="questions", path=str(path), databases=str(tmp_path / "databases"),
                                          splits=["train"]),
                    decode={"name": "sampled", "temperature": 0.4, "num_generations": 5, "adaptive": True,
                            "initial_generations": 2, "stop_margin": 3})
    canon = canonicalize(load_dataset(run.dataset, tmp_path / "data").frame, run).frame
    return run, canon


def _endpoint(base_url: str, supports_n: bool) -> EndpointSettings:
    return EndpointSettings(base_url=base_url, model="scripted", concurrency=4, timeout_s=30, temperature=0.4,
                            send_seed=True, supports_n=supports_n, backoff_base_s=0.01)


def _adaptive(run, canon, generator):
    gates = load_gates(REPO_CONFIGS / "quality_gates.yaml")
    with GateWorkers(1, gates.execution) as runner:
        rule = SettleRule(gates, run.decode.num_generations, run.decode.stop_margin, False, runner)
        return sample_adaptively(canon, run, generator, "scripted", rule)


@pytest.mark.parametrize("supports_n", [True, False])
def test_exact_requests_and_the_rows_a_fixed_run_has_for_those_answers(shop_questions, supports_n):
    run, canon = shop_questions
    with ChatServer(scripted, "scripted") as server:
        generator = Generator(_endpoint(server.base_url, supports_n), None, run.decode.key())
        frame, account, summary = _adaptive(run, canon, generator)
        fixed, _ = generate_part(canon, run, Generator(_endpoint(server.base_url, True), None, run.decode.key()),
                                 "scripted")
    assert generator.calls == EXPECTED["requests_n" if supports_n else "requests_separate"]
    assert (frame.height, account.requests, summary.answers, summary.answers_fixed) == (EXPECTED["answers"],) * 3 + (15,)
    assert (summary.stopped_early, summary.rounds) == (3, 2)
    per_question = dict(frame.group_by("question").len().iter_rows())
    assert per_question == {"What is the total amount?": 3, "What is the amount of the sales?": 4,
                            "What is the amount of the tea sales?": 4}
    same = ["sample_id", "candidate_id", "generation_index", "prompt_hash", "messages", "raw_output"]
    drawn = fixed.filter(pl.col("candidate_id").is_in(frame["candidate_id"].implode()))
    assert frame.select(same).equals(drawn.select(same))   # same ids, indices, answers and order


KILLED_RUN = """
import sys, polars as pl
from pathlib import Path
from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.config.models import RunConfig
from fastdistill_assets.gates.adaptive import SettleRule, sample_adaptively
from fastdistill_assets.gates.pipeline import GateWorkers
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import EndpointSettings, Generator
run = RunConfig.model_validate_json(Path(sys.argv[1]).read_text())
canon = pl.read_parquet(sys.argv[2])
endpoint = EndpointSettings(base_url=sys.argv[4], model="scripted", concurrency=4, timeout_s=300, temperature=0.4,
                            send_seed=True, supports_n=True)
gates = load_gates(Path(sys.argv[5]))
with GateWorkers(1, gates.execution) as runner:
    rule = SettleRule(gates, 5, run.decode.stop_margin, False, runner)
    sample_adaptively(canon, run, Generator(endpoint, ResponseCache(Path(sys.argv[3])), run.decode.key()),
                      "scripted", rule)
"""


def test_a_step_killed_between_rounds_resumes_without_repeating_a_paid_request(shop_questions, tmp_path):
    run, canon = shop_questions
    hold = tmp_path / "hold"   # while it exists, the server does not answer a later round's request
    hold.touch()
    later_round: list[int] = []

    def model(messages, params):
        if (params.get("seed") or 0) >= run.decode.initial_generations:
            later_round.append(1)
            while hold.exists():
                time.sleep(0.02)
        return scripted(messages, params)

    (tmp_path / "run.json").write_text(run.model_dump_json())
    canon.write_parquet(tmp_path / "canon.parquet")
    cache = tmp_path / "responses.sqlite"
    with ChatServer(model, "scripted") as server:
        child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path / "run.json"),
                                  str(tmp_path / "canon.parquet"), str(cache), server.base_url,
                                  str(REPO_CONFIGS / "quality_gates.yaml")], start_new_session=True)
        try:
            wait_until(lambda: len(later_round) >= 3, 60, "the second round's requests to arrive")
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        first_round = {key for key, count in server.stats.completed.items() if count}
        assert len(first_round) == 3 and len(ResponseCache(cache)) == 6   # each question's first two answers
        hold.unlink()
        generator = Generator(_endpoint(server.base_url, True), ResponseCache(cache), run.decode.key())
        frame, account, _ = _adaptive(run, canon, generator)
    assert frame.height == EXPECTED["answers"] and account.cache_hits == 6
    assert generator.calls == EXPECTED["requests_n"] - 3   # the first round is not asked again
    assert all(server.stats.completed[key] == 1 for key in first_round)


def test_adaptive_settings_do_not_change_sample_ids_or_cached_answers():
    fixed = RunConfig(decode={"name": "sampled", "temperature": 0.4, "num_generations": 5})
    adaptive = RunConfig(decode={"name": "sampled", "temperature": 0.4, "num_generations": 5, "adaptive": True,
                                 "initial_generations": 3, "stop_margin": 2})
    assert fixed.decode.key() == adaptive.decode.key()
    assert json.loads(fixed.decode.key())["num_generations"] == 5


def test_initial_generations_above_the_most_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="initial_generations .* must be at most num_generations"):
        RunConfig(decode={"num_generations": 2, "adaptive": True, "initial_generations": 3})


def test_materialized_adaptive_run_reports_what_it_drew_and_the_gates_take_it(project):
    from fastdistill_assets.defs.assets.data import canonical, raw
    from fastdistill_assets.defs.assets.gates import filtered
    from fastdistill_assets.defs.assets.teacher import teacher_candidates
    from fastdistill_assets.store.storage import ArtifactStore
    from fastdistill_assets_tests.conftest import materialize, teacher_gateway

    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"],
                                               "withhold_gold": {"share": 1.0, "splits": ["train"]}},
                        decode={"num_generations": 5, "temperature": 0.4, "adaptive": True})
    project.new_run("r1")
    result = materialize(project, [raw, canonical, teacher_candidates, filtered], "r1",
                         teacher=teacher_gateway(project))
    assert result.success
    meta = result.asset_materializations_for_node("teacher_candidates")[0].metadata
    candidates = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert meta["adaptive_answers"].value == candidates.height == meta["requests"].value
    assert meta["adaptive_answers_fixed"].value == 5 * candidates["sample_id"].n_unique()
    assert candidates.height < meta["adaptive_answers_fixed"].value   # some questions settled early
    assert meta["calls"].value < candidates.height                   # the embedded teacher takes n
    per_question = candidates.group_by("sample_id").len()["len"]
    assert per_question.min() >= 2 and per_question.max() <= 5
    gated = ArtifactStore(project.artifacts).read("r1", "filtered").frame
    assert gated.height == candidates.height and gated["kept"].any()
