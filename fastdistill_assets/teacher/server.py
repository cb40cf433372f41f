"""An OpenAI-compatible HTTP server that ships in the package.

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` for a chat model (the embedded
baseline teacher, or a trained student), on 127.0.0.1. It honours OpenAI's ``n`` (choice ``i``
sampled with ``seed + i``, so it equals a separate request with that seed; ``ignore_n`` answers
one choice, like a provider without ``n``), and reports ``prompt_tokens_details.cached_tokens``
the way OpenAI's prompt caching does: a prompt of at least 1,024 tokens whose prefix it has seen
before has that prefix, in steps of 128 tokens, served from its cache. A fault-injecting mode adds fixed or
random latency and a share of 429s (with Retry-After), 500s, timeouts (a reply slower than
the client's timeout), truncated bodies and non-JSON bodies, for the tests and benchmarks.
"""

from __future__ import annotations

import email
import email.policy
import functools
import hashlib
import importlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai

from fastdistill_assets.config.models import TeacherErrorProfile
from fastdistill_assets.core.hashing import sha256_json

ChatModel = Callable[[list[dict[str, Any]], dict[str, Any]], str]  # (messages, decode params) -> reply
FAULTS = ("rate_limit", "server_error", "timeout", "truncated", "non_json")


@dataclass
class FaultConfig:
    """Injected behaviour. Rates are probabilities per request (seeded, so runs repeat).

    ``fail_first`` makes the first N attempts of every distinct request fail with
    ``fail_first_kind``; later attempts succeed (retries must recover).
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_limit: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    truncated: float = 0.0
    non_json: float = 0.0
    timeout_sleep_s: float = 5.0
    retry_after_s: float = 0.05
    fail_first: int = 0
    fail_first_kind: str = "server_error"
    seed: int = 0
    ignore_n: bool = False   # answer one choice whatever ``n`` asks (a provider without ``n``)
    batch_delay_s: float = 1.0   # the Batch API: a batch completes this long after it was created
    batch_fail_once: float = 0.0  # share of batch requests whose first attempt fails (in the error file)
    batch_unavailable: bool = False  # answer 503 to every Batch API request (a provider outage)
    refuse_n: bool = False   # answer HTTP 400 to a request with ``n`` > 1 (a model that does not take ``n``)


EMBEDDED_MODEL_NAME = "baseline-schema-linker"


def count_tokens(text: str) -> int:
    """Whitespace token count: the embedded server's usage accounting."""
    return len(text.split())


@dataclass
class ServerStats:
    """What the server saw: calls per request key and faults injected."""

    calls: Counter[str] = field(default_factory=Counter)
    answers: int = 0          # choices returned (an ``n`` request returns several)
    batches: list[int] = field(default_factory=list)   # requests in each batch created, in order
    batch_failed: int = 0     # batch requests answered with an error
    faults: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    server: _ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              content_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.server.api_key is None or self.headers.get("Authorization") == f"Bearer {self.server.api_key}":
            return True
        self._send(401, b'{"error":{"message":"invalid api key","type":"authentication_error"}}')
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.rstrip("/").removeprefix("/v1")
        if path.startswith(("/files/", "/batches/")) and not self._authorized():
            return
        if path.startswith(("/files/", "/batches/")) and self.server.faults.batch_unavailable:
            self._send(503, b'{"error":{"message":"batch service unavailable","type":"server_error"}}')
            return
        if path.startswith("/files/") and path.endswith("/content"):
            content = self.server.batch_store.file_content(path.split("/")[2])
            self._send(200, content) if content is not None else self._send(404, b'{"error":{"message":"no file"}}')
            return
        if path.startswith("/batches/"):
            batch = self.server.batch_store.retrieve(path.split("/")[2], self.server)
            self._send(200, json.dumps(batch).encode()) if batch else self._send(404, b'{"error":{"message":"no batch"}}')
            return
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, json.dumps({"object": "list", "data": [
                {"id": self.server.model_name, "object": "model", "owned_by": "fastdistill"}]}).encode())
        elif self.path == "/health":
            self._send(200, b'{"status":"ok"}')
        else:
            self._send(404, b'{"error":{"message":"not found"}}')

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        path = self.path.rstrip("/").removeprefix("/v1")
        if path in ("/files", "/batches"):
            if self._authorized():
                self._batch_api(path, raw)
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, b'{"error":{"message":"not found"}}')
            return
        try:
            request = json.loads(raw)
            messages = request["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            self._send(400, b'{"error":{"message":"invalid request body","type":"invalid_request_error"}}')
            return
        key = sha256_json({"messages": messages, "seed": request.get("seed")})
        server = self.server
        if server.faults.refuse_n and (request.get("n") or 1) > 1:
            self._send(400, b'{"error":{"message":"n is not supported","type":"invalid_request_error"}}')
            return
        if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            self._send(401, b'{"error":{"message":"invalid api key","type":"authentication_error"}}')
            return
        with server.stats.lock:
            server.stats.in_flight += 1
            server.stats.max_in_flight = max(server.stats.max_in_flight, server.stats.in_flight)
        try:
            self._complete(request, messages, key)
        finally:
            with server.stats.lock:
                server.stats.in_flight -= 1

    def _batch_api(self, path: str, raw: bytes) -> None:
        """``POST /v1/files`` (a multipart upload) and ``POST /v1/batches``: OpenAI's Batch API."""
        store = self.server.batch_store
        try:
            if path == "/files":
                form = email.message_from_bytes(f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw,
                                                policy=email.policy.default)
                upload = next(part for part in form.iter_parts() if part.get_param("name", header="content-disposition")
                              == "file")
                self._send(200, json.dumps(store.add_file(upload.get_payload(decode=True) or b"",
                                                          upload.get_filename() or "batch.jsonl")).encode())
                return
            body = json.loads(raw)
            batch = store.create(body["input_file_id"], body.get("endpoint", "/v1/chat/completions"),
                                 body.get("completion_window", "24h"))
        except (StopIteration, KeyError, TypeError, ValueError):
            self._send(400, b'{"error":{"message":"invalid request body","type":"invalid_request_error"}}')
            return
        if batch is None:
            self._send(404, b'{"error":{"message":"no such input file"}}')
            return
        with self.server.stats.lock:
            self.server.stats.batches.append(batch["request_counts"]["total"])
        self._send(200, json.dumps(batch).encode())

    def _complete(self, request: dict[str, Any], messages: list[dict[str, Any]], key: str) -> None:
        server = self.server
        with server.stats.lock:
            server.stats.calls[key] += 1
            attempt = server.stats.calls[key]
            fault = server.choose_fault(attempt)
            delay = server.latency_s()
        if fault:
            with server.stats.lock:
                server.stats.faults[fault] += 1
        time.sleep(delay)
        if fault == "rate_limit":
            self._send(429, b'{"error":{"message":"rate limited","type":"rate_limit_error"}}',
                       {"Retry-After": str(server.faults.retry_after_s)})
            return
        if fault == "server_error":
            self._send(500, b'{"error":{"message":"internal error","type":"server_error"}}')
            return
        if fault == "timeout":
            time.sleep(server.faults.timeout_sleep_s)
        try:
            contents = sample_choices(server.model, request, server.faults.ignore_n)
        except Exception as err:  # a model failure is the server's 500, never a crash
            self._send(500, json.dumps({"error": {"message": f"model failed: {type(err).__name__}"}}).encode())
            return
        body = json.dumps(_completion(request, contents, server.model_name, server.prompt_cache)).encode()
        if fault == "truncated":
            self._send(200, body[: len(body) // 2], content_length=len(body))
            self.close_connection = True
            return
        if fault == "non_json":
            self._send(200, b"<html>upstream proxy error</html>")
            return
        with server.stats.lock:
            server.stats.completed[key] += 1
            server.stats.answers += len(contents)
        self._send(200, body)
        server.prompt_cache.remember(messages)


def sample_choices(model: ChatModel, request: dict[str, Any], ignore_n: bool = False) -> list[str]:
    """The model's choices for a request: ``n`` of them (1 with ``ignore_n``), choice ``i`` with
    ``seed + i`` (seed 0 when the request has none), so it equals a separate request with that seed."""
    params = {k: request.get(k) for k in ("temperature", "top_p", "seed", "max_tokens")}
    n = 1 if ignore_n else max(1, int(request.get("n") or 1))
    if n == 1:
        return [model(request["messages"], params)]
    return [model(request["messages"], {**params, "seed": (params["seed"] or 0) + i}) for i in range(n)]


class PromptCache:
    """OpenAI's prompt caching, emulated: a prompt of at least ``min_tokens`` tokens is served from
    the cache for its longest prefix seen before, counted in steps of ``step`` tokens."""

    def __init__(self, min_tokens: int = 1024, step: int = 128) -> None:
        self.min_tokens, self.step = min_tokens, step
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def _prefixes(self, messages: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
        tokens = [t for m in messages for t in (str(m.get("role", "")), *str(m.get("content", "")).split())]
        digest, prefixes, done = hashlib.sha256(), [], 0
        for end in range(self.min_tokens, len(tokens) + 1, self.step):
            digest.update("".join(f"{token}\x00" for token in tokens[done:end]).encode())
            done = end
            prefixes.append((end, digest.copy().digest()))
        return prefixes

    def cached_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of ``messages``' prefix served from the cache (prefixes of answered prompts)."""
        with self._lock:
            return max((end for end, key in self._prefixes(messages) if key in self._seen), default=0)

    def remember(self, messages: list[dict[str, Any]]) -> None:
        """Cache the prefixes of a prompt once it has been answered (as a provider does: requests
        that arrive together do not find each other's prefix)."""
        prefixes = self._prefixes(messages)
        with self._lock:
            self._seen.update(key for _, key in prefixes)


def _completion(request: dict[str, Any], contents: list[str], model: str,
                prompt_cache: PromptCache | None = None) -> dict[str, Any]:
    prompt_tokens = sum(count_tokens(str(m.get("content", ""))) for m in request["messages"])
    completion_tokens = sum(count_tokens(content) for content in contents)
    cached = prompt_cache.cached_tokens(request["messages"]) if prompt_cache else 0
    return {
        "id": "chatcmpl-" + sha256_json([request["messages"], contents])[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    for i, content in enumerate(contents)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": min(cached, prompt_tokens)}},
    }


class BatchStore:
    """The Batch API's files and batches, in memory: a batch completes ``batch_delay_s`` after it was
    created (answered when it is next retrieved); a request whose first attempt is drawn to fail
    (``batch_fail_once``) goes to the error file with a 500."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add_file(self, content: bytes, filename: str) -> dict[str, Any]:
        with self.lock:
            file_id = f"file-{len(self.files) + 1:06d}"
            self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": "batch", "status": "processed"}

    def file_content(self, file_id: str) -> bytes | None:
        with self.lock:
            return self.files.get(file_id)

    def create(self, input_file_id: str, endpoint: str, window: str) -> dict[str, Any] | None:
        with self.lock:
            content = self.files.get(input_file_id)
            if content is None:
                return None
            batch_id = f"batch_{len(self.batches) + 1:06d}"
            total = sum(1 for line in content.splitlines() if line.strip())
            self.batches[batch_id] = batch = {
                "id": batch_id, "object": "batch", "endpoint": endpoint, "input_file_id": input_file_id,
                "completion_window": window, "status": "in_progress", "created_at": int(time.time()),
                "request_counts": {"total": total, "completed": 0, "failed": 0},
                "_created": time.monotonic()}
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def retrieve(self, batch_id: str, server: _ChatServer) -> dict[str, Any] | None:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            if batch["status"] == "in_progress" and time.monotonic() - batch["_created"] >= server.faults.batch_delay_s:
                self._answer(batch, server)
            return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _answer(self, batch: dict[str, Any], server: _ChatServer) -> None:
        """Answer every request of a batch (under the store's lock) into its output and error files."""
        output, errors = [], []
        for line in self.files[batch["input_file_id"]].splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            custom_id, request = item["custom_id"], item["body"]
            self.attempts[custom_id] += 1
            fail = self.attempts[custom_id] == 1 and server._rng.random() < server.faults.batch_fail_once
            try:
                contents = None if fail else sample_choices(server.model, request, server.faults.ignore_n)
            except Exception:  # noqa: BLE001 - a model failure is that request's 500, as online
                contents = None
            if contents is None:
                errors.append({"id": f"resp_{custom_id}", "custom_id": custom_id, "error": None, "response": {
                    "status_code": 500, "body": {"error": {"message": "internal error", "type": "server_error"}}}})
                continue
            output.append({"id": f"resp_{custom_id}", "custom_id": custom_id, "error": None, "response": {
                "status_code": 200, "body": _completion(request, contents, server.model_name, server.prompt_cache)}})
            with server.stats.lock:
                server.stats.answers += len(contents)
        with server.stats.lock:
            server.stats.batch_failed += len(errors)
        for key, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{len(self.files) + 1:06d}"
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                batch[key] = file_id
        batch.update(status="completed", completed_at=int(time.time()),
                     request_counts={"total": len(output) + len(errors), "completed": len(output),
                                     "failed": len(errors)})


class _ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], model: ChatModel, model_name: str, faults: FaultConfig,
                 api_key: str | None) -> None:
        super().__init__(address, _Handler)
        self.model, self.model_name, self.faults, self.api_key = model, model_name, faults, api_key
        self.stats = ServerStats()
        self.prompt_cache = PromptCache()
        self.batch_store = BatchStore()
        self._rng = random.Random(faults.seed)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeout, reset) is normal here: stay quiet about it."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def latency_s(self) -> float:
        jitter = self._rng.uniform(-1, 1) * self.faults.latency_jitter_ms if self.faults.latency_jitter_ms else 0.0
        return max(0.0, self.faults.latency_ms + jitter) / 1000.0

    def choose_fault(self, attempt: int) -> str | None:
        if attempt <= self.faults.fail_first:
            return self.faults.fail_first_kind
        roll = self._rng.random()
        for name in FAULTS:
            rate = getattr(self.faults, name)
            if roll < rate:
                return name
            roll -= rate
        return None


class ChatServer:
    """Runs the OpenAI-compatible server in a background thread (a context manager)."""

    def __init__(self, model: ChatModel, model_name: str, faults: FaultConfig | None = None,
                 host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self._server = _ChatServer((host, port), model, model_name, faults or FaultConfig(), api_key)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fastdistill-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def model_name(self) -> str:
        return self._server.model_name

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    @property
    def faults(self) -> FaultConfig:
        """The injected behaviour, live: a change applies to the requests that come after it."""
        return self._server.faults

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The HTTP library of the installed openai package (httpx, or httpx2 in newer releases).
_HTTP = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])


class InProcessChat(_HTTP.AsyncBaseTransport):  # type: ignore[name-defined,misc]  # httpx, imported lazily
    """The same OpenAI-compatible chat completions answered in this process, without a socket:
    an httpx transport for the gateway's client (``in_process: true`` on a local provider). The
    client, retries and parsing are the ones a real endpoint gets; only the network is gone.
    Used to measure the pipeline where HTTP to a local model would dominate (the scale benchmark)."""

    base_url = "http://in-process/v1"

    def __init__(self, model: ChatModel, model_name: str) -> None:
        self.model, self.model_name = model, model_name
        self.prompt_cache = PromptCache()

    async def handle_async_request(self, request: Any) -> Any:
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/chat/completions"):
            return _HTTP.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(await request.aread())
        try:
            contents = sample_choices(self.model, body)
        except Exception as err:  # a model failure is a 500, as from the server
            return _HTTP.Response(500, json={"error": {"message": f"model failed: {type(err).__name__}"}})
        response = _HTTP.Response(200, json=_completion(body, contents, self.model_name, self.prompt_cache))
        self.prompt_cache.remember(body["messages"])
        return response


def embedded_model(error_profile: TeacherErrorProfile | None = None) -> ChatModel:
    """The embedded teacher's chat function (baseline and judge) with ``error_profile``'s mistakes."""
    from fastdistill_assets.teacher import embedded

    return functools.partial(embedded.reply, profile=error_profile)


def embedded_teacher(faults: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                     api_key: str | None = None, error_profile: TeacherErrorProfile | None = None) -> ChatServer:
    """The offline default teacher: the schema-linking baseline (and judge) behind the OpenAI API,
    with the random mistakes of ``error_profile`` (None or all zeros: the clean baseline)."""
    return ChatServer(embedded_model(error_profile), EMBEDDED_MODEL_NAME, faults, host=host, port=port, api_key=api_key)
