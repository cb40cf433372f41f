"""Requests, an echo model and a teacher that never answers, for the teacher tests."""

from __future__ import annotations

import socket
import threading

from fastdistill_assets.core.prompt_format import build_messages, prompt_hash
from fastdistill_assets.teacher.generation import EndpointSettings, GenerationRequest

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 REAL -- Goals\n)"


def make_requests(n: int, prefix: str = "P") -> list[GenerationRequest]:
    out = []
    for i in range(n):
        messages = build_messages(f"What is the goals when player is {prefix}{i}?", SCHEMA, [["Ana", 1]])
        out.append(GenerationRequest(f"{prefix}{i}", messages, prompt_hash(messages)))
    return out


def fast_settings(base_url: str, **overrides) -> EndpointSettings:
    values = dict(base_url=base_url, model="teacher", timeout_s=1.0, max_retries=3, concurrency=8,
                  backoff_base_s=0.01, backoff_max_s=0.05)
    values.update(overrides)
    return EndpointSettings(**values)


def sampled_requests(questions: int, generations: int, long_prompt: bool = False) -> list[GenerationRequest]:
    """``generations`` requests per question (one prompt, consecutive generation indices);
    ``long_prompt``: 400 sample rows, over the 1,024 tokens a provider caches."""
    rows = [[f"Player {i}", i] for i in range(400 if long_prompt else 1)]
    out = []
    for q in range(questions):
        messages = build_messages(f"What is the goals when player is P{q}?", SCHEMA, rows)
        out += [GenerationRequest(f"P{q}:{g}", messages, prompt_hash(messages), g) for g in range(generations)]
    return out


class SilentServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
