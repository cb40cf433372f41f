"""Generation over real HTTP against the package's OpenAI-compatible server."""

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from fastdistill_assets.config.models import DecodeProfile, TeacherErrorProfile
from fastdistill_assets.store.storage import ArtifactStore, StageOutput
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets.teacher.limits import PerMinuteLimiter
from fastdistill_assets.teacher.server import (
    FAULTS,
    ChatServer,
    FaultConfig,
    embedded_teacher,
)
from fastdistill_assets.training.serving import weights_sha256
from fastdistill_assets.training.sketch import Example, SketchModel, train_sketch
from fastdistill_assets_tests.conftest import GREEDY_DECODE, teacher_gateway
from fastdistill_assets_tests.teacher_helpers import (
    SCHEMA,
    fast_settings,
    make_requests,
    sampled_requests,
)

LOCAL = "local:embedded"  # what the gateway names a server it starts: the port changes, the identity does not
EXPECTED_REASON = {"rate_limit": "rate_limited", "server_error": "server_error", "timeout": "timeout",
                   "truncated": "connection", "non_json": "bad_response"}


def _assert_nothing_lost(requests, results):
    assert [r.request_id for r in results] == [r.request_id for r in requests]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_and_recovered(fault):
    requests = make_requests(24)
    faults = FaultConfig(fail_first=1, fail_first_kind=fault, timeout_sleep_s=1.0, retry_after_s=0.01)
    with embedded_teacher(faults) as server:
        results = Generator(fast_settings(server.base_url, timeout_s=0.5), None, "d").run(requests)
    _assert_nothing_lost(requests, results)
    assert all(r.error is None and r.content.strip() for r in results)
    assert all(r.attempts == 2 and r.retries_by_reason == {EXPECTED_REASON[fault]: 1} for r in results)
    assert server.stats.faults[fault] == 24


def test_exhausted_retries_become_error_rows_and_the_run_goes_on():
    requests = make_requests(60)
    faults = FaultConfig(server_error=0.3, non_json=0.2, rate_limit=0.1, retry_after_s=0.01, seed=3)
    with embedded_teacher(faults) as server:
        results = Generator(fast_settings(server.base_url, max_retries=1), None, "d").run(requests)
    _assert_nothing_lost(requests, results)
    failed = [r for r in results if r.error]
    assert failed and len(failed) < len(results)
    assert {r.error for r in failed} <= {"server_error", "bad_response", "rate_limited"}
    assert all(r.content is None and r.attempts == 2 for r in failed)
    assert all(r.content for r in results if not r.error)


def test_client_errors_are_not_retried():
    with embedded_teacher(api_key="right-key") as server:
        [result] = Generator(fast_settings(server.base_url, api_key="wrong-key"), None, "d").run(make_requests(1))
    assert result.error == "http_401" and result.attempts == 1 and result.retries_by_reason == {}
    assert "wrong-key" not in (result.error_detail or "")


def test_retry_after_is_honoured():
    with embedded_teacher(FaultConfig(fail_first=1, fail_first_kind="rate_limit", retry_after_s=0.4)) as server:
        started = time.perf_counter()
        [result] = Generator(fast_settings(server.base_url), None, "d").run(make_requests(1))
    assert result.error is None and time.perf_counter() - started >= 0.4


def test_sliding_window_keeps_exactly_concurrency_requests_in_flight():
    with embedded_teacher(FaultConfig(latency_ms=40)) as server:
        results = Generator(fast_settings(server.base_url, concurrency=6), None, "d").run(make_requests(60))
    assert all(r.error is None for r in results)
    assert server.stats.max_in_flight == 6


def test_per_minute_limiter_spaces_requests():
    import asyncio

    async def take(n):
        limiter = PerMinuteLimiter(limit=5, window_s=0.3)
        for _ in range(n):
            await limiter.acquire(1)

    started = time.perf_counter()
    asyncio.run(take(10))
    assert time.perf_counter() - started >= 0.3


def test_cache_gives_zero_calls_on_rerun_and_never_caches_failures(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    requests = make_requests(30)
    with embedded_teacher(FaultConfig(fail_first=10, fail_first_kind="server_error")) as server:
        failed = Generator(fast_settings(server.base_url, max_retries=1), cache, "d").run(requests[:10])
    assert all(r.error == "server_error" for r in failed) and len(cache) == 0
    with embedded_teacher() as server:
        first = Generator(fast_settings(server.base_url), cache, "d").run(requests)
        calls_after_first = server.stats.total_calls
        generator = Generator(fast_settings(server.base_url), cache, "d")
        second = generator.run(requests)
    assert calls_after_first == 30 and server.stats.total_calls == 30 and generator.calls == 0
    assert all(r.cache_hit for r in second) and [r.content for r in second] == [r.content for r in first]
    with embedded_teacher() as server:
        Generator(fast_settings(server.base_url), cache, "other-decode-profile").run(requests[:5])
    assert server.stats.total_calls == 5


def test_a_local_server_is_known_by_its_identity_not_its_port(tmp_path):
    cache, requests = ResponseCache(tmp_path / "cache.sqlite"), make_requests(6)
    with embedded_teacher() as server:
        Generator(fast_settings(server.base_url, cache_identity=LOCAL), cache, "d").run(requests)
    with embedded_teacher() as server:  # another port, the same identity: answered from the cache
        again = Generator(fast_settings(server.base_url, cache_identity=LOCAL), cache, "d").run(requests)
        Generator(fast_settings(server.base_url, cache_identity=LOCAL), cache, "other-decode-profile").run(requests[:5])
    assert all(r.cache_hit for r in again) and server.stats.total_calls == 5


RESUME_SCRIPT = """
import sys
from pathlib import Path
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher
from fastdistill_assets_tests.teacher_helpers import fast_settings, make_requests
with embedded_teacher(FaultConfig(latency_ms=30)) as server:
    settings = fast_settings(server.base_url, concurrency=4, cache_identity="local:embedded")
    Generator(settings, ResponseCache(Path(sys.argv[1])), "d").run(make_requests(300))
"""


def test_killed_run_resumes_without_repeating_finished_calls(tmp_path):
    path = tmp_path / "cache.sqlite"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(path)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or len(ResponseCache(path)) < 40):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(ResponseCache(path))
    assert 40 <= done_before < 300
    with embedded_teacher() as server:
        results = Generator(fast_settings(server.base_url, cache_identity=LOCAL), ResponseCache(path), "d").run(
            make_requests(300))
    assert server.stats.total_calls == 300 - done_before
    assert sum(r.cache_hit for r in results) == done_before
    assert all(r.error is None for r in results) and len({r.request_id for r in results}) == 300


def test_token_budget_applies_backpressure():
    requests = make_requests(20)
    per_request = sum(len(m["content"]) for m in requests[0].messages) // 4 + 256
    with embedded_teacher(FaultConfig(latency_ms=30)) as server:
        settings = fast_settings(server.base_url, concurrency=8, max_inflight_tokens=2 * per_request + 10)
        results = Generator(settings, None, "d").run(requests)
    assert all(r.error is None for r in results)
    assert server.stats.max_in_flight == 2


def _answering(text: str):
    return lambda messages, params=None: text


def test_two_providers_serving_a_model_of_the_same_name_do_not_share_answers(project):
    requests = make_requests(4)
    with ChatServer(_answering("SELECT 'alpha'"), "same-model") as alpha, \
            ChatServer(_answering("SELECT 'beta'"), "same-model") as beta:
        def run(provider: str, **alpha_entry):
            project.edit_config("provider_gateway", providers={
                "alpha": {"base_url": alpha.base_url, "model": "same-model", **alpha_entry},
                "beta": {"base_url": beta.base_url, "model": "same-model"}})
            results, _, calls = teacher_gateway(project).generate(requests, provider, None, DecodeProfile(**GREEDY_DECODE))
            return {r.content for r in results}, calls, all(r.cache_hit for r in results)

        assert run("alpha") == ({"SELECT 'alpha'"}, 4, False)
        assert run("beta") == ({"SELECT 'beta'"}, 4, False)
        assert run("alpha") == ({"SELECT 'alpha'"}, 0, True)      # the same provider, URL and model: cached
        assert run("alpha", base_url=alpha.base_url.replace("http:", "HTTP:") + "/") == (
            {"SELECT 'alpha'"}, 0, True)                               # the same URL spelled differently
        assert run("alpha", base_url=beta.base_url) == ({"SELECT 'beta'"}, 4, False)  # another server


def _publish_student(project, run_id: str, model: SketchModel, version: str):
    """Write ``model`` as run_id's student_model, as the training asset does; returns its folder."""
    folder = project.root / f"student-{version}"
    model.save(folder)
    ArtifactStore(project.artifacts).write(run_id, "student_model",
                                           StageOutput(pl.DataFrame({"trainer": ["sketch"]}), {"model": folder}))
    return ArtifactStore(project.artifacts).read(run_id, "student_model").files["model"]


def test_a_retrained_student_is_not_answered_from_the_old_students_cache(project):
    project.new_run("parent")
    requests = make_requests(5)
    ask = lambda: teacher_gateway(project).generate(requests, "student", "parent", DecodeProfile(**GREEDY_DECODE))  # noqa: E731 - asked twice below
    _publish_student(project, "parent", SketchModel(), "untrained")
    first, _, first_calls = ask()
    again, _, again_calls = ask()  # a new server on a new port: answered from the cache
    examples = [Example(f"What is the goals when player is {n}?", SCHEMA, f"SELECT col1 FROM t WHERE col0 = '{n}'")
                for n in ("Ana", "Ben", "Cai", "Dee")]
    folder = _publish_student(project, "parent", train_sketch(examples, epochs=5)[0], "retrained")
    retrained, endpoint, retrained_calls = ask()
    assert (first_calls, again_calls, retrained_calls) == (5, 0, 5)
    assert all(r.cache_hit for r in again) and not any(r.cache_hit for r in retrained)
    assert [r.content for r in first] == [f"SELECT col0 FROM t WHERE col0 = 'P{i}'" for i in range(5)]
    assert [r.content for r in retrained] == [f"SELECT col1 FROM t WHERE col0 = 'P{i}'" for i in range(5)]
    assert endpoint.cache_identity == f"local:student:{weights_sha256(folder)}"


SAMPLED = dict(temperature=0.8, send_seed=True)
NOISY = TeacherErrorProfile(wrong_column=0.3, perturbed_value=0.3, seed=1)


def test_n_asks_once_per_question_with_the_answers_of_separate_seeded_requests():
    requests = sampled_requests(6, 4)
    with embedded_teacher(error_profile=NOISY) as server:
        separate = Generator(fast_settings(server.base_url, **SAMPLED), None, "d").run(requests)
        calls_separate = server.stats.total_calls
        generator = Generator(fast_settings(server.base_url, supports_n=True, **SAMPLED), None, "d")
        together = generator.run(requests)
    assert (calls_separate, generator.calls, generator.n_fallbacks) == (24, 6, 0)
    assert server.stats.answers == 48
    assert [r.content for r in together] == [r.content for r in separate]
    assert len({r.content for r in together}) > 6   # sampled: the answers of a question differ
    # the prompt is paid once per question; the completion tokens are the same in sum
    assert sum(r.prompt_tokens for r in together) * 4 == sum(r.prompt_tokens for r in separate)
    assert sum(r.completion_tokens for r in together) == sum(r.completion_tokens for r in separate)
    assert all(r.prompt_tokens == 0 for r in together if not r.request_id.endswith(":0"))


def test_a_provider_that_ignores_n_is_completed_by_separate_requests_counted(tmp_path):
    requests = sampled_requests(5, 3)
    with embedded_teacher(error_profile=NOISY) as reference:
        expected = [r.content for r in Generator(fast_settings(reference.base_url, **SAMPLED), None, "d").run(requests)]
    cache = ResponseCache(tmp_path / "c.sqlite")
    with embedded_teacher(FaultConfig(ignore_n=True), error_profile=NOISY) as server:
        generator = Generator(fast_settings(server.base_url, supports_n=True, **SAMPLED), cache, "d")
        results = generator.run(requests)
        assert (generator.calls, generator.n_fallbacks, server.stats.answers) == (5 + 10, 10, 15)
        assert [r.content for r in results] == expected and all(r.error is None for r in results)
        # every answer is cached under its own key: a re-run, with or without n, makes no call
        for supports_n in (True, False):
            again = Generator(fast_settings(server.base_url, supports_n=supports_n, **SAMPLED), cache, "d")
            assert [r.content for r in again.run(requests)] == expected and again.calls == 0
    assert server.stats.total_calls == 15


def test_a_provider_that_refuses_n_gets_separate_requests_counted():
    requests = sampled_requests(3, 3)
    with embedded_teacher(FaultConfig(refuse_n=True), error_profile=NOISY) as server:
        expected = [r.content for r in Generator(fast_settings(server.base_url, **SAMPLED), None, "d").run(requests)]
        generator = Generator(fast_settings(server.base_url, supports_n=True, **SAMPLED), None, "d")
        results = generator.run(requests)
    assert [r.content for r in results] == expected and all(r.error is None for r in results)
    assert (generator.calls, generator.n_fallbacks) == (3 + 9, 9)   # each refused n request, then one per answer


def test_a_failed_n_request_is_an_error_row_per_answer_and_nothing_is_lost():
    requests = sampled_requests(4, 3)
    with embedded_teacher(FaultConfig(server_error=1.0)) as server:
        generator = Generator(fast_settings(server.base_url, supports_n=True, max_retries=1, **SAMPLED), None, "d")
        results = generator.run(requests)
    _assert_nothing_lost(requests, results)
    assert all(r.error == "server_error" and r.attempts == 2 for r in results)
    # a retry is one call, counted once per request (on its first answer)
    assert generator.calls == 8 and sum(sum(r.retries_by_reason.values()) for r in results) == 4


def test_cached_prompt_tokens_are_read_from_the_usage():
    requests = sampled_requests(3, 2, long_prompt=True)
    with embedded_teacher() as server:
        results = Generator(fast_settings(server.base_url, concurrency=1, **SAMPLED), None, "d").run(requests)
    # the first request of the shared schema pays it; later ones find its prefix in the provider's cache
    assert results[0].cached_tokens == 0
    assert all(1024 <= r.cached_tokens < r.prompt_tokens for r in results[1:])
    assert all(r.cached_tokens % 128 == 0 for r in results)


@pytest.mark.parametrize("seen, prompt, expected", [
    ([], 2000, 0),                 # nothing seen
    ([2000], 2000, 1920),          # the whole prompt seen: its prefix in steps of 128 past 1,024
    ([2000], 900, 0),              # under 1,024 tokens: never cached
    ([1100], 2000, 1024),          # a shorter prompt with the same start: its 1,024-token prefix
    ([1000], 2000, 0),             # that start is too short to have been cached
])
def test_prompt_cache_serves_the_longest_prefix_seen_in_steps(seen, prompt, expected):
    from fastdistill_assets.teacher.server import PromptCache

    def messages(length: int):
        return [{"role": "user", "content": " ".join(f"w{i}" for i in range(length - 1))}]   # + the role token

    cache = PromptCache()
    for length in seen:
        assert cache.cached_tokens(messages(length)) == 0   # nothing is cached before it is answered
        cache.remember(messages(length))
    assert cache.cached_tokens(messages(prompt)) == expected
