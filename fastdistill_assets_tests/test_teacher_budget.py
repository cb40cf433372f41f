"""The hard teacher budget: it stops at the right request, publishes what it bought and says so in
one line, and a raised budget pays only for what is missing."""

import os
import subprocess

import polars as pl
import pytest

from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.budget import BUDGET_EXHAUSTED, SpendLimit
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets.teacher.provider_config import Prices
from fastdistill_assets.teacher.server import embedded_teacher
from fastdistill_assets_tests.conftest import BIN, materialize, teacher_gateway
from fastdistill_assets_tests.teacher_helpers import fast_settings, make_requests

PRICES = Prices(1000.0, 1000.0)   # $0.001 a token: a handful of requests fill a dollar
MAX_TOKENS = 64


def _expected_calls(requests, answered, limit_usd: float) -> int:
    """The rule, one request at a time: a request is sent while what was spent plus its most
    (its prompt at 3 UTF-8 bytes a token and 8 tokens a message, and max_tokens answered) fits the budget."""
    spent = 0.0
    for count, (request, result) in enumerate(zip(requests, answered, strict=True)):
        prompt_estimate = sum(len(m["content"].encode()) for m in request.messages) // 3 + 8 * len(request.messages)
        if spent + (prompt_estimate + MAX_TOKENS) * 1000 / 1e6 > limit_usd:
            return count
        spent += (result.prompt_tokens + result.completion_tokens) * 1000 / 1e6
    return len(requests)


def test_budget_stops_at_the_right_request_and_a_raised_budget_pays_only_what_is_missing(tmp_path):
    requests = make_requests(30)
    with embedded_teacher() as server:
        settings = fast_settings(server.base_url, concurrency=1, max_tokens=MAX_TOKENS)
        unlimited = Generator(settings, None, "d").run(requests)   # what each answer costs
        assert server.stats.total_calls == 30
        cache = ResponseCache(tmp_path / "c.sqlite")

        spend = SpendLimit(1.0, PRICES)
        generator = Generator(settings, cache, "d", spend=spend)
        results = generator.run(requests)
        asked = _expected_calls(requests, unlimited, 1.0)
        assert 0 < asked < 30 and generator.calls == asked
        assert [r.error for r in results] == [None] * asked + [BUDGET_EXHAUSTED] * (30 - asked)
        assert spend.exhausted and spend.spent_usd <= 1.0 and spend.reserved_usd == pytest.approx(0.0)

        raised = SpendLimit(2.0, PRICES)
        again = Generator(settings, cache, "d", spend=raised).run(requests)
        more = _expected_calls(requests, unlimited, 2.0)
        assert more > asked and server.stats.total_calls == 30 + more   # the first `asked` came from the cache
        assert sum(r.cache_hit for r in again) == asked and raised.spent_usd <= 2.0
        assert [r.content for r in again[:more]] == [r.content for r in unlimited[:more]]


def test_a_budget_concurrent_requests_never_pass():
    requests = make_requests(60)
    with embedded_teacher() as server:
        spend = SpendLimit(1.5, PRICES)
        results = Generator(fast_settings(server.base_url, concurrency=16, max_tokens=MAX_TOKENS), None, "d",
                            spend=spend).run(requests)
    paid = sum(r.prompt_tokens + r.completion_tokens for r in results if r.error is None) * 1000 / 1e6
    assert paid == pytest.approx(spend.spent_usd) and paid <= 1.5
    assert server.stats.total_calls == sum(r.error is None for r in results) < 60
    assert {r.error for r in results} == {None, BUDGET_EXHAUSTED}


def test_the_stage_publishes_what_it_bought_says_so_and_resumes_after_the_budget_is_raised(project):
    project.edit_config("run_config", dataset={"limit_per_split": 60, "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 0.4}, teacher={"budget_usd": 0.001})
    project.new_run("r1")
    first = materialize(project, [raw, canonical, teacher_candidates], "r1", teacher=teacher_gateway(project))
    meta = first.asset_materializations_for_node("teacher_candidates")[0].metadata
    frame = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert meta["budget_exhausted"].value and meta["budget_unasked_questions"].value > 0
    assert meta["budget_spent_usd"].value <= 0.001
    assert frame["sample_id"].n_unique() + meta["budget_unasked_questions"].value == 60
    assert frame.group_by("sample_id").len()["len"].to_list() == [3] * frame["sample_id"].n_unique()  # whole questions
    assert BUDGET_EXHAUSTED not in frame["error"].drop_nulls().to_list()
    assert "teacher budget $0.001 reached" in meta["budget_note"].value and "fastdistill run budget r1" in \
        meta["budget_note"].value

    project.registry.set_budget("r1", 1.0)
    second = materialize(project, [raw, canonical, teacher_candidates], "r1", teacher=teacher_gateway(project))
    meta2 = second.asset_materializations_for_node("teacher_candidates")[0].metadata
    full = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert not meta2["budget_exhausted"].value and "budget_note" not in meta2
    assert full.height == 180 and meta2["cache_hits"].value >= frame.height   # what was bought is not paid again
    assert meta2["calls"].value == 60 - frame["sample_id"].n_unique()   # n: one call per question asked now
    kept = full.filter(pl.col("sample_id").is_in(frame["sample_id"].implode()))
    assert kept.sort("candidate_id")["raw_output"].equals(frame.sort("candidate_id")["raw_output"])


def test_cli_sets_the_budget_refuses_a_bad_one_and_materialize_says_when_it_is_reached(project):
    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"]}, eval_split=None)
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home")}
    made = subprocess.run([str(BIN / "fastdistill"), "run", "new", "r1"], env=env, cwd=project.root,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    ok = subprocess.run([str(BIN / "fastdistill"), "run", "budget", "r1", "2.5"], env=env, capture_output=True,
                        text=True, cwd=project.root)
    assert ok.returncode == 0 and "teacher budget $2.5" in ok.stdout
    assert project.registry.load("r1").config.teacher.budget_usd == 2.5
    for value in ("-1", "lots"):
        bad = subprocess.run([str(BIN / "fastdistill"), "run", "budget", "r1", value], env=env, capture_output=True,
                             text=True, cwd=project.root)
        assert bad.returncode != 0 and "teacher.budget_usd" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert project.registry.load("r1").config.teacher.budget_usd == 2.5

    subprocess.run([str(BIN / "fastdistill"), "run", "budget", "r1", "0.0005"], env=env, check=True, cwd=project.root)
    out = subprocess.run([str(BIN / "fastdistill"), "materialize", "r1", "--select", "raw,canonical,teacher_candidates"],
                         env=env, capture_output=True, text=True, cwd=project.root)
    notes = [line for line in out.stdout.splitlines() if line.startswith("teacher budget $0.0005 reached")]
    assert out.returncode == 0 and len(notes) == 1 and "`fastdistill run budget r1 USD`" in notes[0]
