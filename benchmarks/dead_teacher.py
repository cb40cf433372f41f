"""How long a dead teacher takes to end the teacher stage, with the shipped gateway defaults.

Three probes against 127.0.0.1, each 1,000 questions x 5 answers (5,000 requests, 32 in flight):
a closed port, a server that accepts connections and never answers, and (one request with
`timeout_s` 5) a reply that trickles in at one byte a second. Prints the seconds until the
Generator stops (the circuit breaker's one-line error) or the request ends.

    .venv/bin/python benchmarks/dead_teacher.py
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastdistill_assets.core.prompt_format import build_messages, prompt_hash
from fastdistill_assets.teacher.generation import (
    EndpointSettings,
    GenerationRequest,
    Generator,
)
from fastdistill_assets.teacher.stopped import TeacherUnreachable


def requests(questions: int = 1000, answers: int = 5) -> list[GenerationRequest]:
    out = []
    for q in range(questions):
        messages = build_messages(f"What is the goals when player is P{q}?", "CREATE TABLE t (col0 TEXT)", [["a"]])
        out += [GenerationRequest(f"{q}:{g}", messages, prompt_hash(messages), g) for g in range(answers)]
    return out


def until_stopped(base_url: str, **settings: float) -> str:
    started = time.monotonic()
    try:
        Generator(EndpointSettings(base_url=base_url, model="m", **settings), None, "d").run(requests())
        outcome = "finished"
    except TeacherUnreachable as err:
        outcome = "stopped: " + str(err).split(" failed (", 1)[1].split(")", 1)[0]
    return f"{time.monotonic() - started:6.1f} s ({outcome})"


class Trickle(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "320")
        self.end_headers()
        try:
            for _ in range(320):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    print(f"closed port:       {until_stopped(f'http://127.0.0.1:{port}/v1')}")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1024)
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in iter(int, 1)], daemon=True).start()
    print(f"never answers:     {until_stopped(f'http://127.0.0.1:{silent.getsockname()[1]}/v1')}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    [result] = Generator(EndpointSettings(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m",
                                          timeout_s=5, max_retries=0), None, "d").run(requests(1, 1))
    print(f"trickle, timeout 5: {time.monotonic() - started:5.1f} s ({result.error})")


if __name__ == "__main__":
    main()
