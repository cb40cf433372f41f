"""A teacher that is not there, hangs or trickles: the stage stops within bounded time and says why
in one line (the circuit breaker), and a trickling reply is a timeout within timeout_s."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.teacher.generation import Generator
from fastdistill_assets.teacher.stopped import TeacherUnreachable
from fastdistill_assets_tests.conftest import materialize, teacher_gateway
from fastdistill_assets_tests.teacher_helpers import (
    SilentServer,
    fast_settings,
    make_requests,
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]   # nothing listens once it is closed


class _Trickle(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[]}' + b" " * 1000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:   # one byte every 0.1 s: each read is quick, the reply never ends in time
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


BREAKER = dict(breaker_failures=5, breaker_silence_s=1.0, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)


def test_a_closed_port_stops_the_teacher_within_bounded_time_naming_it():
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(TeacherUnreachable) as stopped:
        Generator(fast_settings(base_url, concurrency=8, **BREAKER), None, "d").run(make_requests(1000))
    assert time.monotonic() - started < 10   # not 1,000 requests x their retries
    message = str(stopped.value)
    assert base_url in message and "(connection:" in message and "materializing again resumes" in message
    assert "\n" not in message


def test_a_server_that_never_answers_stops_the_teacher():
    silent = SilentServer()
    try:
        started = time.monotonic()
        with pytest.raises(TeacherUnreachable, match=r"\(timeout: "):
            Generator(fast_settings(silent.base_url, timeout_s=0.5, concurrency=8, **BREAKER), None, "d").run(
                make_requests(1000))
        assert time.monotonic() - started < 10
    finally:
        silent.close()


def test_a_trickling_reply_is_a_timeout_within_timeout_s():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        started = time.monotonic()
        [result] = Generator(fast_settings(base_url, timeout_s=1.0, max_retries=0), None, "d").run(make_requests(1))
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert result.error == "timeout" and result.content is None
    assert 1.0 <= elapsed < 2.0   # the whole reply within timeout_s, not 0.1 s per byte for 100 s


def test_a_dead_teacher_fails_the_stage_in_one_line_and_keeps_nothing_half_done(project):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    project.edit_config("provider_gateway", providers={"dead": {
        "base_url": base_url, "model": "m", "breaker_failures": 3, "breaker_silence_s": 0.5,
        "backoff_base_s": 0.01, "backoff_max_s": 0.05}})
    project.edit_config("run_config", dataset={"limit_per_split": 200, "splits": ["train"]}, teacher={"provider": "dead"})
    project.new_run("r1")
    started = time.monotonic()
    result = materialize(project, [raw, canonical, teacher_candidates], "r1", teacher=teacher_gateway(project),
                         raise_on_error=False)
    assert not result.success and time.monotonic() - started < 60
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    description = failure.step_failure_data.user_failure_data.description
    assert f"teacher dead@{base_url} at {base_url} is unreachable" in description and "\n" not in description
    assert "Traceback" not in message
