"""The teacher through the Batch API against the embedded server's /v1/files and /v1/batches:
the answers of online requests at the batch price, failed requests resubmitted alone, and a step
killed while its batch is pending that resumes the same batch."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastdistill_assets.config.models import TeacherErrorProfile
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.batch import BatchOptions
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets.teacher.provider_config import dollars
from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher
from fastdistill_assets_tests.conftest import materialize, teacher_gateway, wait_until
from fastdistill_assets_tests.teacher_helpers import fast_settings, sampled_requests

NOISY = TeacherErrorProfile(wrong_column=0.3, perturbed_value=0.3, seed=1)
SAMPLED = dict(temperature=0.8, send_seed=True, supports_n=True)


def test_batch_answers_are_the_online_ones_and_a_rerun_pays_nothing(tmp_path):
    requests = sampled_requests(8, 3)
    options = BatchOptions(tmp_path / "batches", poll_s=0.05)
    with embedded_teacher(FaultConfig(batch_delay_s=0.3), error_profile=NOISY) as server:
        online = Generator(fast_settings(server.base_url, **SAMPLED), None, "d").run(requests)
        cache = ResponseCache(tmp_path / "c.sqlite")
        generator = Generator(fast_settings(server.base_url, **SAMPLED), cache, "d", batch=options)
        results = generator.run(requests)
        assert [r.content for r in results] == [r.content for r in online] and all(r.error is None for r in results)
        assert server.stats.batches == [8] and (generator.batches, generator.calls) == (1, 8)   # a line per question
        assert sum(r.prompt_tokens for r in results) == sum(r.prompt_tokens for r in online)
        assert list(options.folder.glob("*.json")) == []   # the record goes once the answers are cached
        again = Generator(fast_settings(server.base_url, **SAMPLED), cache, "d", batch=options)
        assert [r.content for r in again.run(requests)] == [r.content for r in online] and again.batches == 0
    assert server.stats.batches == [8]


def test_failed_batch_requests_are_resubmitted_alone_and_counted(tmp_path):
    requests = sampled_requests(20, 2)
    with embedded_teacher(FaultConfig(batch_delay_s=0.1, batch_fail_once=0.4, seed=2)) as server:
        generator = Generator(fast_settings(server.base_url, **SAMPLED), None, "d",
                              batch=BatchOptions(tmp_path / "batches", poll_s=0.05))
        results = generator.run(requests)
    failed = server.stats.batch_failed
    assert 0 < failed < 20 and server.stats.batches == [20, failed]   # the second batch: the failed ones only
    assert generator.batch_resubmitted == failed and generator.calls == 20 + failed
    assert all(r.error is None and r.content for r in results)


KILLED = """
import sys
from pathlib import Path
from fastdistill_assets.teacher.batch import BatchOptions
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets_tests.teacher_helpers import fast_settings, sampled_requests
Generator(fast_settings(sys.argv[1], temperature=0.8, send_seed=True, supports_n=True), None, "d",
          batch=BatchOptions(Path(sys.argv[2]), poll_s=0.05)).run(sampled_requests(6, 2))
"""


def _killed_once_its_batch_is_recorded(server, folder: Path) -> None:
    """Run KILLED in a process of its own and SIGKILL it once its batch is submitted and recorded."""
    child = subprocess.Popen([sys.executable, "-c", KILLED, server.base_url, str(folder)],
                             start_new_session=True, cwd=Path(__file__).resolve().parents[1])
    try:
        wait_until(lambda: server.stats.batches and list(folder.glob("batch-*.json")), 60,
                   "the batch to be submitted and recorded")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_a_step_killed_while_its_batch_is_pending_resumes_the_same_batch(tmp_path):
    folder = tmp_path / "batches"
    with embedded_teacher(FaultConfig(batch_delay_s=4.0)) as server:
        _killed_once_its_batch_is_recorded(server, folder)
        generator = Generator(fast_settings(server.base_url, **SAMPLED), None, "d",
                              batch=BatchOptions(folder, poll_s=0.05))
        results = generator.run(sampled_requests(6, 2))
    assert server.stats.batches == [6]   # polled again, not submitted again
    assert (generator.batches, generator.batches_resumed, generator.calls) == (1, 1, 0)
    assert all(r.error is None for r in results) and list(folder.glob("*.json")) == []


def test_materialized_batch_run_is_priced_at_the_batch_price(project):
    project.edit_config("run_config", dataset={"limit_per_split": 12, "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 0.4},
                        teacher={"mode": "batch", "batch_poll_s": 0.1})
    project.new_run("r1")
    result = materialize(project, [raw, canonical, teacher_candidates], "r1", teacher=teacher_gateway(project))
    meta = result.asset_materializations_for_node("teacher_candidates")[0].metadata
    frame = ArtifactStore(project.artifacts).read("r1", "teacher_candidates")
    assert frame.height == 36 and frame["error"].is_null().all()
    assert meta["batches"].value == 1 and meta["calls"].value == 12
    online = dollars(meta["input_tokens"].value, meta["output_tokens"].value, (0.15, 0.60))
    assert meta["cost_usd"].value == pytest.approx(online / 2, abs=2e-6)   # batch_price_factor 0.5


def test_a_resumed_step_follows_its_recorded_batch_and_submits_only_what_is_new(tmp_path):
    folder = tmp_path / "batches"
    with embedded_teacher(FaultConfig(batch_delay_s=4.0)) as server:
        _killed_once_its_batch_is_recorded(server, folder)
        # the resumed step has two more questions than the killed one (e.g. a larger chunk)
        generator = Generator(fast_settings(server.base_url, **SAMPLED), None, "d",
                              batch=BatchOptions(folder, poll_s=0.05))
        results = generator.run(sampled_requests(8, 2))
    assert server.stats.batches == [6, 2]   # the recorded batch followed, only the new questions submitted
    assert (generator.batches, generator.batches_resumed, generator.calls) == (2, 1, 2)
    assert all(r.error is None for r in results)


def test_a_batch_that_cannot_be_followed_fails_the_step_and_is_resumed_later(tmp_path):
    import threading

    from fastdistill_assets.teacher.batch import BatchPollError

    folder, outcome = tmp_path / "batches", {}
    with embedded_teacher(FaultConfig(batch_delay_s=1.0)) as server:
        settings = fast_settings(server.base_url, max_retries=0, **SAMPLED)

        def run() -> None:
            try:
                Generator(settings, None, "d", batch=BatchOptions(folder, poll_s=0.05)).run(sampled_requests(3, 2))
            except BatchPollError as err:
                outcome["error"] = str(err)

        worker = threading.Thread(target=run)
        worker.start()
        wait_until(lambda: list(folder.glob("batch-*.json")), 30, "the batch to be recorded")
        server.faults.batch_unavailable = True   # the provider's batch service goes down while the step waits
        worker.join(30)
        assert "following it failed (server_error" in outcome["error"] and "resumes it" in outcome["error"]
        assert len(list(folder.glob("batch-*.json"))) == 1
        server.faults.batch_unavailable = False
        generator = Generator(settings, None, "d", batch=BatchOptions(folder, poll_s=0.05))
        results = generator.run(sampled_requests(3, 2))
    assert server.stats.batches == [3] and (generator.batches_resumed, generator.calls) == (1, 0)
    assert all(r.error is None for r in results) and list(folder.glob("batch-*.json")) == []
