"""Persistent response cache (SQLite), written as each response arrives.

Keyed by ``prompt_hash + model + decode_profile + generation_index``. Only successful
responses are stored, so a failed call is retried on the next materialization, and a run
killed mid-stage resumes without repeating what had already come back.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from fastdistill_assets.hashing import sha256_json


def cache_key(prompt_hash: str, model: str, decode_profile: str, generation_index: int) -> str:
    return sha256_json([prompt_hash, model, decode_profile, generation_index])


@dataclass(frozen=True)
class CachedResponse:
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class ResponseCache:
    """A SQLite table of responses; safe to open from several processes (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, content TEXT NOT NULL, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL, created_at REAL)"
        )
        self._conn.commit()

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            placeholders = ",".join("?" for _ in chunk)
            rows = self._conn.execute(
                f"SELECT key, content, prompt_tokens, completion_tokens, latency_ms FROM responses "
                f"WHERE key IN ({placeholders})", chunk)
            for key, content, p, c, lat in rows:
                found[key] = CachedResponse(content, p or 0, c or 0, lat or 0.0)
        return found

    def put(self, key: str, model: str, response: CachedResponse) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, model, response.content, response.prompt_tokens, response.completion_tokens,
             response.latency_ms, time.time()))
        self._conn.commit()

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
