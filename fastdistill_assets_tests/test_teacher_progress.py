"""The teacher says how far it is while it asks (issue 24 item 7): a line at least every
``progress_every_s`` whether or not answers come back, drawn as a bar on a terminal."""

import io
import re

import pytest

from fastdistill_assets.cli.materialize import Progress
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.defs.resources import RunConfigResource
from fastdistill_assets.teacher.progress import TeacherProgress
from fastdistill_assets_tests.conftest import materialize, teacher_gateway
from fastdistill_assets_tests.teacher_helpers import SilentServer


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("resumed", "done", "errors", "elapsed", "expected"), [
    (0, 0, 0, 5.0, "teacher: 0/1,000 answers (0.0%), 0.0 answers/s, 0 errors, ETA unknown (no answer yet)"),
    (0, 250, 3, 10.0, "teacher: 250/1,000 answers (25.0%), 25.0 answers/s, 3 errors, ETA 30s"),
    (400, 500, 0, 10.0, "teacher: 500/1,000 answers (50.0%), 10.0 answers/s, 0 errors, ETA 50s"),  # rate: this attempt's
    (0, 100, 0, 100.0, "teacher: 100/1,000 answers (10.0%), 1.0 answers/s, 0 errors, ETA 15m00s"),
    (0, 1, 0, 10.0, "teacher: 1/1,000 answers (0.1%), 0.1 answers/s, 0 errors, ETA 2h46m"),
    (0, 1000, 0, 10.0, "teacher: 1,000/1,000 answers (100.0%), 100.0 answers/s, 0 errors, ETA done"),
])
def test_the_progress_line_says_done_total_rate_errors_and_eta(resumed, done, errors, elapsed, expected):
    clock = _Clock()
    progress = TeacherProgress(1000, resumed, log=print, clock=clock)
    progress.chunk_started()
    progress.call_progress(done - resumed, 1000 - resumed, elapsed, errors)
    clock.now += elapsed
    assert progress.line() == expected


def test_a_chunk_s_written_figures_replace_what_its_calls_reported():
    progress = TeacherProgress(20, 0, log=print, clock=_Clock())
    progress.chunk_started()
    progress.call_progress(7, 10, 1.0, 2)
    progress.chunk_finished(10, 1)             # what the part holds is the truth
    progress.chunk_started()
    progress.call_progress(4, 10, 1.0, 0)
    assert progress.line().startswith("teacher: 14/20 answers (70.0%)") and ", 1 errors," in progress.line()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_bar_redrawn_in_place_and_a_log_file_gets_lines():
    terminal = _Terminal()
    progress = Progress(terminal)
    progress.teacher("teacher: 5/20 answers (25.0%), 1.0 answers/s, 0 errors, ETA 15s")
    progress.teacher("teacher: 20/20 answers (100.0%), 1.0 answers/s, 0 errors, ETA done")
    progress._print("materialized teacher_candidates ...")
    assert terminal.getvalue() == (
        "\r[#######.......................] teacher: 5/20 answers (25.0%), 1.0 answers/s, 0 errors, ETA 15s\x1b[K"
        "\r[##############################] teacher: 20/20 answers (100.0%), 1.0 answers/s, 0 errors, ETA done\x1b[K"
        "\nmaterialized teacher_candidates ...\n")
    piped = io.StringIO()
    Progress(piped).teacher("teacher: 5/20 answers (25.0%), 1.0 answers/s, 0 errors, ETA 15s")
    assert piped.getvalue() == "teacher: 5/20 answers (25.0%), 1.0 answers/s, 0 errors, ETA 15s\n"


def test_a_teacher_that_answers_nothing_is_still_reported_every_few_seconds(project):
    silent = SilentServer()   # every request hangs until its timeout: a counted error
    project.edit_config("provider_gateway", providers={"silent": {
        "base_url": silent.base_url, "model": "m", "timeout_s": 2.5, "max_retries": 0, "breaker_failures": 1000}})
    project.edit_config("run_config", dataset={"limit_per_split": 12, "splits": ["train"]},
                        teacher={"provider": "silent"})
    project.new_run("r1")
    resource = RunConfigResource(artifacts_dir=str(project.artifacts), configs_dir=str(project.configs),
                                 progress_every_s=0.5)
    try:
        result = materialize(project, [raw, canonical, teacher_candidates], "r1", teacher=teacher_gateway(project),
                             run_config=resource)
    finally:
        silent.close()
    said = [e.user_message for e in project.instance.all_logs(result.run_id) if e.user_message]
    progress = [line for line in said if line.startswith("teacher: ")]
    waiting = [line for line in progress if line.startswith("teacher: 0/12 answers (0.0%)")]
    assert len(waiting) >= 5, progress    # at the start and every 0.5 s while nothing came back
    assert all(line.endswith("0 errors, ETA unknown (no answer yet)") for line in waiting)
    assert re.fullmatch(r"teacher: 12/12 answers \(100\.0%\), [\d.]+ answers/s, 12 errors, ETA done", progress[-1])
