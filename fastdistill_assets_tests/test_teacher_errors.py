"""The embedded teacher's error profile: each kind's mistake, seeded draws, rates, cleaning, cache
identity, and a real materialization with the shipped (calibrated) profile."""

import math
import random
import sqlite3

import pydantic
import pytest

from fastdistill_assets.config.models import (
    DecodeProfile,
    TeacherConfig,
    TeacherErrorProfile,
)
from fastdistill_assets.core.prompt_format import (
    build_messages,
    prompt_hash,
    split_rationale,
)
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.gates import filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher import errors, rule_teacher
from fastdistill_assets.teacher.generation import GenerationRequest
from fastdistill_assets_tests.conftest import GREEDY_DECODE, materialize, teacher_gateway

SCHEMA = ("CREATE TABLE table_1 (\n  col0 TEXT, -- Player\n  col1 TEXT, -- Club\n  col2 REAL, -- Goals\n"
          "  col3 REAL -- Age\n)")
ROWS = [["Ana Silva", "Porto", 12, 25], ["Ben Costa", "Lyon", 3, 31]]
QUESTION = "What is the average age with club of Porto and goals less than 5?"
CLEAN = TeacherErrorProfile.clean()
SEEDS = range(25)


def _prediction(question: str = QUESTION) -> rule_teacher.Prediction:
    return rule_teacher.predict(question, SCHEMA)


def _only(kind: str, rate: float = 1.0, seed: int = 0) -> TeacherErrorProfile:
    return CLEAN.model_copy(update={kind: rate, "seed": seed})


def _messages(i: int) -> list[dict[str, str]]:
    return build_messages(f"What is the club when player is Player {i}?", SCHEMA, ROWS)


def test_the_clean_prediction_is_what_the_kinds_perturb():
    assert _prediction().sql() == "SELECT AVG(col3) FROM table_1 WHERE col1 = 'Porto' AND col2 < 5"


@pytest.mark.parametrize("seed", SEEDS)
def test_wrong_column_selects_another_existing_column(seed):
    before = _prediction()
    after = errors.wrong_column(before, ROWS, random.Random(seed))
    assert after.column != before.column and after.column in {c.name for c in before.columns}
    assert (after.agg, after.conditions) == (before.agg, before.conditions)


@pytest.mark.parametrize("seed", SEEDS)
def test_wrong_aggregate_changes_the_aggregate_only(seed):
    before = _prediction()
    after = errors.wrong_aggregate(before, ROWS, random.Random(seed))
    assert after.agg != before.agg and after.agg in {*errors.AGGREGATES, ""}
    assert (after.column, after.conditions) == (before.column, before.conditions)


@pytest.mark.parametrize("seed", SEEDS)
def test_drop_condition_leaves_out_exactly_one(seed):
    before = _prediction()
    after = errors.drop_condition(before, ROWS, random.Random(seed))
    assert len(after.conditions) == len(before.conditions) - 1
    assert set(after.conditions) < set(before.conditions)
    plain = _prediction("What is the highest goals?")
    assert errors.drop_condition(plain, ROWS, random.Random(seed)) == plain   # nothing to drop


@pytest.mark.parametrize("seed", SEEDS)
def test_extra_condition_adds_one_on_a_sample_rows_value(seed):
    before = _prediction()
    after = errors.extra_condition(before, ROWS, random.Random(seed))
    assert after.conditions[:-1] == before.conditions and len(after.conditions) == len(before.conditions) + 1
    name, op, value = after.conditions[-1]
    assert name not in {n for n, _, _ in before.conditions}
    index = [c.name for c in before.columns].index(name)
    assert value.this in {str(row[index]) for row in ROWS} and op in {"=", "<", ">"}
    assert errors.extra_condition(before, [], random.Random(seed)) == before   # no sample rows shown


@pytest.mark.parametrize("seed", SEEDS)
def test_perturbed_value_changes_one_literal_and_keeps_its_type(seed):
    before = _prediction()
    after = errors.perturbed_value(before, ROWS, random.Random(seed))
    changed = [(b, a) for b, a in zip(before.conditions, after.conditions, strict=True) if b[2] != a[2]]
    assert len(changed) == 1
    (name, op, old), (name_after, op_after, new) = changed[0]
    assert (name, op) == (name_after, op_after) and old.is_string == new.is_string and old.this != new.this


@pytest.mark.parametrize("seed", SEEDS)
def test_hallucinated_column_does_not_execute(seed):
    after = errors.hallucinated_column(_prediction(), ROWS, random.Random(seed))
    assert after.column not in {c.name for c in after.columns}
    with sqlite3.connect(":memory:") as db:
        db.execute(SCHEMA)
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            db.execute(after.sql())


def test_a_hallucinated_name_avoids_existing_columns():
    prediction = rule_teacher.predict("What is the club when goals is 3?",
                                  "CREATE TABLE t (club TEXT, goals REAL, club_name TEXT)")
    assert errors.hallucinated_name(prediction, random.Random(0)) not in {"club", "club_name"}


@pytest.mark.parametrize("rationale", [False, True])
def test_prose_and_fences_are_cleaned_by_the_gates_cleaner(rationale):
    sql = _prediction().sql()
    outputs = set()
    for seed in range(40):
        noisy = errors.answer(build_messages(QUESTION, SCHEMA, ROWS, rationale=rationale), {},
                              _only("prose_wrap", seed=seed))
        assert noisy.applied == ("prose_wrap",)
        text = split_rationale(noisy.text)[1] if rationale else noisy.text
        assert text != sql and clean_sql(text).sql == sql
        outputs.add(text)
    assert len(outputs) == len(errors.WRAPS)


def test_the_draw_is_replayable_per_seed_prompt_and_generation():
    profile = TeacherErrorProfile(**dict.fromkeys(CLEAN.rates(), 0.5))
    messages = _messages(1)
    sampled = [errors.answer(messages, {"temperature": 0.8, "seed": g}, profile) for g in range(20)]
    assert sampled == [errors.answer(messages, {"temperature": 0.8, "seed": g}, profile) for g in range(20)]
    assert len({s.drawn for s in sampled}) > 1                                  # generations differ
    greedy = {errors.answer(messages, {"temperature": 0.0, "seed": g}, profile) for g in range(20)}
    assert len(greedy) == 1                                                     # greedy: the seed is no input
    prompts = {errors.answer(_messages(i), {}, profile).drawn for i in range(20)}
    other_seed = [errors.answer(_messages(i), {}, profile.model_copy(update={"seed": 1})).drawn for i in range(20)]
    assert len(prompts) > 1 and other_seed != [errors.answer(_messages(i), {}, profile).drawn for i in range(20)]


def test_rates_over_many_draws_match_the_profile():
    """Each kind within 4.5 binomial standard deviations of its rate over n draws, and kinds drawn
    independently (the joint rate of two kinds is the product of theirs)."""
    n = 4000
    profile = TeacherErrorProfile(wrong_column=0.05, wrong_aggregate=0.1, drop_condition=0.2, extra_condition=0.3,
                                  perturbed_value=0.5, hallucinated_column=0.7, prose_wrap=0.9, seed=7)
    draws = [errors.draw_kinds(profile, errors.draw_rng(profile, errors.draw_key(f"prompt {i}", 0.0, None)))
             for i in range(n)]

    def within(observed: float, p: float) -> bool:
        return abs(observed - p) <= 4.5 * math.sqrt(p * (1 - p) / n)

    for kind, p in profile.rates().items():
        assert within(sum(kind in d for d in draws) / n, p), kind
    assert within(sum({"perturbed_value", "hallucinated_column"} <= set(d) for d in draws) / n, 0.5 * 0.7)
    assert all(errors.draw_kinds(CLEAN, random.Random(i)) == () for i in range(100))


def test_raising_one_rate_keeps_the_other_kinds_draws():
    low, high = _only("wrong_column", 0.1), _only("wrong_column", 0.1).model_copy(update={"prose_wrap": 0.6})
    for i in range(200):
        key = errors.draw_key(f"prompt {i}", 0.0, None)
        a, b = (errors.draw_kinds(p, errors.draw_rng(p, key)) for p in (low, high))
        assert ("wrong_column" in a) == ("wrong_column" in b)


def test_no_profile_or_a_clean_one_is_the_baseline():
    for i in range(30):
        messages = _messages(i)
        assert errors.reply(messages, {}, None) == errors.reply(messages, {}, CLEAN) == rule_teacher.reply(messages)


def test_the_profile_is_typed_and_used_only_by_the_embedded_teacher_the_gateway_starts():
    with pytest.raises(pydantic.ValidationError):
        TeacherErrorProfile(wrong_column=1.5)
    with pytest.raises(pydantic.ValidationError):
        TeacherErrorProfile(typo_rate=0.1)
    assert TeacherConfig().endpoint_overrides() == {"error_profile": TeacherErrorProfile().model_dump()}
    assert not TeacherErrorProfile().is_clean and CLEAN.is_clean
    for ignored in (TeacherConfig(provider="openai"), TeacherConfig(base_url="http://127.0.0.1:9/v1"),
                    TeacherConfig(error_profile=None), TeacherConfig(error_profile=CLEAN)):
        assert "error_profile" not in ignored.endpoint_overrides()


def test_a_different_profile_is_a_different_cache_identity_and_shares_no_answers(project):
    gateway = teacher_gateway(project)
    requests = [GenerationRequest(f"q{i}", _messages(i), prompt_hash(_messages(i))) for i in range(12)]
    realistic = TeacherConfig().endpoint_overrides()
    reseeded = TeacherConfig(error_profile=TeacherErrorProfile(seed=1)).endpoint_overrides()
    identities = []
    for overrides in (realistic, reseeded, TeacherConfig(error_profile=None).endpoint_overrides()):
        with gateway.open("embedded", None, DecodeProfile(**GREEDY_DECODE), overrides) as endpoint:
            identities.append(endpoint.cache_identity)
    assert identities == [f"local:embedded:{TeacherErrorProfile().fingerprint()}",
                          f"local:embedded:{TeacherErrorProfile(seed=1).fingerprint()}", "local:embedded"]
    calls = []
    for overrides in (realistic, realistic, reseeded, {}):
        results, _, made = gateway.generate(requests, "embedded", None, DecodeProfile(**GREEDY_DECODE), overrides=overrides)
        calls.append(made)
        if overrides is realistic:   # the server the gateway started answered with the profile
            assert [r.content for r in results] == [errors.reply(r.messages, {"temperature": 0.0},
                                                                 TeacherErrorProfile()) for r in requests]
    assert calls == [12, 0, 12, 12]


def test_materialized_with_the_shipped_profile_about_half_match_gold(project):
    project.edit_config("run_config", dataset={"limit_per_split": 240, "splits": ["train"]},
                        teacher={"error_profile": TeacherErrorProfile().model_dump()})
    project.new_run("r1")
    assert project.registry.load("r1").config.teacher.error_profile == TeacherErrorProfile()
    assert materialize(project, [raw, canonical, teacher_candidates, filtered], "r1",
                       teacher=teacher_gateway(project)).success
    frame = ArtifactStore(project.artifacts).read("r1", "filtered").frame
    exec_pass, gold_match = frame["exec_ok"].fill_null(False).mean(), frame["gold_match"].fill_null(False).mean()
    assert frame.height >= 230 and 0.82 <= exec_pass <= 0.96 and 0.38 <= gold_match <= 0.62
    assert frame["clean_actions"].str.contains("code_fence").sum() > 0   # prose_wrap, recovered by cleaning
