"""Persistent response cache (SQLite), written as each response arrives.

Keyed by ``prompt_hash + model + decode_profile + generation_index + endpoint identity``. The
endpoint identity names who answers: ``<provider>@<normalized base URL>`` for a served endpoint,
``local:embedded`` for the embedded teacher and ``local:student:<weights sha256>`` for a student
(local servers listen on a random port, so their URL is no identity). Two providers serving a
model of the same name, or a retrained student, never share answers. Only successful responses
are stored, so a failed call is retried on the next materialization, and a run killed mid-stage
resumes without repeating what had already come back. Each row keeps when it arrived
(``created_at``), for the throughput of the run that produced it.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fastdistill_assets.core.diskspace import named_if_full
from fastdistill_assets.core.hashing import sha256_json

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_base_url(url: str) -> str:
    """A base URL in one spelling: scheme and host lower-cased; default port, credentials, fragment
    and trailing ``/`` dropped."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = host if parts.port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{parts.port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def endpoint_identity(provider: str, base_url: str) -> str:
    """The cache identity of a served endpoint: ``<provider>@<normalized base URL>``."""
    return f"{provider}@{normalize_base_url(base_url)}"


def local_identity(provider: str, fingerprint: str | None = None) -> str:
    """The cache identity of a server the gateway starts itself (its port changes every time):
    ``local:<provider>`` or ``local:<provider>:<fingerprint>`` (a student's weights hash)."""
    return f"local:{provider}" + (f":{fingerprint}" if fingerprint else "")


def cache_key(prompt_hash: str, model: str, decode_profile: str, generation_index: int, endpoint: str) -> str:
    """The key of one response; ``endpoint`` is the identity of who answers (see the module docstring)."""
    return sha256_json([prompt_hash, model, decode_profile, generation_index, endpoint])


@dataclass(frozen=True)
class CachedResponse:
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cached_tokens: int = 0            # prompt tokens the provider served from its prompt cache
    created_at: float | None = None   # epoch seconds when the response arrived (set by the cache)


class ResponseCache:
    """A SQLite table of responses; safe to open from several processes (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with named_if_full(path.parent):   # the table cannot even be made: say where
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, content TEXT NOT NULL, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL, created_at REAL, "
                "cached_tokens INTEGER)"
            )
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(responses)")}
            if "cached_tokens" not in columns:   # a cache written before cached tokens were counted
                try:
                    self._conn.execute("ALTER TABLE responses ADD COLUMN cached_tokens INTEGER")
                except sqlite3.OperationalError as err:   # another process added it first
                    if "duplicate column" not in str(err):
                        raise
            self._conn.commit()

    def get_many(self, keys: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            placeholders = ",".join("?" for _ in chunk)
            rows = self._conn.execute(
                f"SELECT key, content, prompt_tokens, completion_tokens, latency_ms, cached_tokens, created_at "
                f"FROM responses WHERE key IN ({placeholders})", chunk)
            for key, content, p, c, lat, cached, created in rows:
                found[key] = CachedResponse(content, p or 0, c or 0, lat or 0.0, cached or 0, created)
        return found

    def put(self, key: str, model: str, response: CachedResponse) -> None:
        """Store a response that has just arrived (``created_at`` is now).

        Raises:
            DiskFull: no space for it (the transaction is rolled back)."""
        # ``with self._conn``: committed, or rolled back when it fails
        with named_if_full(self.path.parent, len(response.content.encode()) + 256), self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, content, prompt_tokens, completion_tokens, latency_ms, "
                "created_at, cached_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, response.content, response.prompt_tokens, response.completion_tokens,
                 response.latency_ms, time.time(), response.cached_tokens))

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
