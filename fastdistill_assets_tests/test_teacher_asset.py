import dagster as dg
import polars as pl
import pytest

from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.candidates import accounting
from fastdistill_assets.teacher.generation import GenerationResult
from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher
from fastdistill_assets_tests.conftest import GREEDY_DECODE, materialize, teacher_gateway

ASSETS = [raw, canonical, teacher_candidates]
SECRET = "sk-test-7f3a9c1e5b2d4a60"


def _meta(result):
    [event] = [e for e in result.get_asset_materialization_events()
               if e.event_specific_data.materialization.asset_key.path[-1] == "teacher_candidates"]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def test_embedded_teacher_candidates_and_zero_calls_on_rematerialize(project):
    project.edit_config("run_config", dataset={"limit_per_split": 40})
    project.new_run("r1")
    first = materialize(project, ASSETS, "r1", teacher=teacher_gateway(project))
    frame = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert frame.height == 40 and frame["split"].unique().to_list() == ["train"]
    assert frame["error"].null_count() == 40 and frame["raw_output"].null_count() == 0
    assert frame["candidate_id"].n_unique() == 40
    meta = _meta(first)
    assert meta["calls"] == 40 and meta["cache_hits"] == 0 and meta["teacher_tokens_per_sec"] > 0
    assert meta["teacher_cached_share"] == 0.0 and "teacher_tokens_per_sec_cold" not in meta
    assert meta["output_tokens"] == frame["completion_tokens"].sum()
    assert {"latency_p50_ms", "latency_p95_ms", "timing_wall_s"} <= meta.keys()
    cold_run_rate = meta["teacher_tokens_per_sec"]

    again = materialize(project, ASSETS, "r1", selection=[teacher_candidates], teacher=teacher_gateway(project))
    meta = _meta(again)
    assert meta["calls"] == 0 and meta["cache_hits"] == 40 and meta["teacher_cached_share"] == 1.0
    assert "teacher_tokens_per_sec" not in meta and "teacher_output_tokens_per_sec" not in meta
    # The first run's tokens over the span its answers arrived in: at least its rate over its whole wall time.
    assert meta["teacher_tokens_per_sec_cold"] >= 0.99 * cold_run_rate > 0
    assert ArtifactStore(project.artifacts).read("r1", "teacher_candidates")["raw_output"].equals(frame["raw_output"])


def test_multi_decode_gives_num_generations_rows_per_sample(project):
    project.edit_config("run_config", dataset={"limit_per_split": 10, "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 0.8})
    project.new_run("r1")
    assert materialize(project, ASSETS, "r1", teacher=teacher_gateway(project)).success
    frame = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert frame.height == 30 and frame["sample_id"].n_unique() == 10
    assert sorted(frame.group_by("sample_id").agg(pl.col("generation_index").sort())["generation_index"][0]) == [0, 1, 2]


def test_failed_calls_are_rows_not_crashes_and_secrets_never_leak(project, monkeypatch, capfd):
    monkeypatch.setenv("TEST_TEACHER_KEY", SECRET)
    with embedded_teacher(FaultConfig(server_error=0.5, seed=1), api_key=SECRET) as server:
        project.edit_config("provider_gateway", defaults={"max_retries": 0, "backoff_base_s": 0.01},
                            providers={"local": {"base_url": server.base_url, "model": "teacher"}})
        project.edit_config("run_config", dataset={"limit_per_split": 30, "splits": ["train"]},
                            teacher={"provider": "local"})
        project.new_run("r1")
        result = materialize(project, ASSETS, "r1", teacher=teacher_gateway(project, api_key=dg.EnvVar("TEST_TEACHER_KEY")))
    assert result.success
    frame = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert frame.height == 30
    errors = frame.filter(pl.col("error").is_not_null())
    assert 0 < errors.height < 30 and set(errors["error"]) == {"server_error"}
    assert _meta(result)["errors_by_reason"] == {"server_error": errors.height}

    logs = "\n".join(str(entry) for entry in project.instance.all_logs(result.run_id))
    captured = capfd.readouterr()
    assert SECRET not in logs and SECRET not in captured.out + captured.err
    for path in project.artifacts.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_unknown_provider_is_a_clear_error(project):
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        teacher_gateway(project).settings("nope")


def test_env_overrides_are_frozen_into_the_run_and_used_by_the_gateway(project, monkeypatch):
    monkeypatch.setenv("FASTDISTILL_PROVIDER", "openai")
    monkeypatch.setenv("FASTDISTILL_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FASTDISTILL_CONCURRENCY", "3")
    monkeypatch.setenv("FASTDISTILL_MAX_TOKENS", "77")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    teacher = project.new_run("env-run").config.teacher
    for name in ("FASTDISTILL_PROVIDER", "FASTDISTILL_BASE_URL", "FASTDISTILL_CONCURRENCY", "FASTDISTILL_MAX_TOKENS"):
        monkeypatch.delenv(name)  # a step reads the frozen run, not its own environment
    frozen = project.registry.load("env-run")
    endpoint = teacher_gateway(project).endpoint(teacher.provider, teacher.model, frozen.config.decode,
                                                 teacher.endpoint_overrides())
    assert (endpoint.base_url, endpoint.concurrency, endpoint.max_tokens, endpoint.model) == (
        "http://127.0.0.1:9/v1", 3, 77, "gpt-4o-mini")
    assert endpoint.api_key == SECRET and SECRET not in repr(endpoint)


def test_missing_api_key_is_a_clear_error_before_any_call(project, monkeypatch):
    from fastdistill_assets.config.models import DecodeProfile

    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="needs an API key: set OPENROUTER_API_KEY"):
        teacher_gateway(project).endpoint("openrouter", None, DecodeProfile(**GREEDY_DECODE))


def _result(request_id, tokens=(0, 0), latency_ms=None, cached_at=None, error=None):
    return GenerationResult(request_id, None if error else "SELECT 1", tokens[0], tokens[1], latency_ms,
                            0 if cached_at else 1, {}, cached_at is not None, error, cached_at=cached_at)


def test_accounting_counts_fresh_calls_and_the_cached_answers_own_run():
    fresh = [_result("a", (30, 10), 100.0), _result("b", (20, 20), 300.0), _result("c", error="server_error")]
    cached = [_result("d", (50, 10), 500.0, cached_at=1000.0), _result("e", (30, 10), 200.0, cached_at=1001.5)]
    acc = accounting(fresh + cached, wall_s=2.0, calls=4, prices=(1.0, 2.0))
    # fresh: 50 in + 30 out over 2 s; cached: 100 tokens from 0.5 s before the first arrival (its
    # latency) to the last arrival 1.5 s later, so 100 / 2.0 s.
    assert (acc["teacher_tokens_per_sec"], acc["teacher_output_tokens_per_sec"]) == (40.0, 15.0)
    assert (acc["teacher_cached_share"], acc["teacher_tokens_per_sec_cold"]) == (0.4, 50.0)
    assert (acc["input_tokens"], acc["output_tokens"], acc["cost_usd"]) == (50, 30, 0.00011)

    all_cached = accounting(cached, wall_s=0.01, calls=0, prices=(None, None))
    assert all_cached["teacher_cached_share"] == 1.0 and all_cached["teacher_tokens_per_sec_cold"] == 50.0
    assert not {"teacher_tokens_per_sec", "teacher_output_tokens_per_sec"} & all_cached.keys()
    all_fresh = accounting(fresh, wall_s=2.0, calls=3, prices=(None, None))
    assert all_fresh["teacher_cached_share"] == 0.0 and "teacher_tokens_per_sec_cold" not in all_fresh
    failed = accounting(fresh[2:], wall_s=2.0, calls=1, prices=(None, None))
    assert "teacher_tokens_per_sec" not in failed and failed["teacher_cached_share"] == 0.0
