"""Concurrent generation against an OpenAI-compatible endpoint, with no batch barriers.

A sliding window of ``concurrency`` workers pulls requests one at a time, so a slow request
never holds up the others. Each request is retried with exponential backoff and jitter on
429 (honouring Retry-After), 5xx, timeouts, connection errors and unparseable bodies; after
the last retry it becomes a result with ``error`` set and the run goes on. Cached responses
are served without a call, and each new response is cached the moment it arrives. Results
come back in request order, one per request: nothing is lost or duplicated.

Where the provider accepts OpenAI's ``n`` (``supports_n``), the consecutive answers of one prompt
(same ``prompt_hash``, consecutive ``generation_index``) go as one request for ``n`` choices: the
prompt is paid once. Choice ``i`` is the answer of ``generation_index`` = first index + ``i`` (with
``seed`` = the first index, as a separate request for that index would send), and each is cached
under its own key, so a re-run makes no call either way. A reply with fewer choices than asked
(a provider that ignores ``n``) is completed by separate seeded requests for the rest, counted in
``n_fallbacks``; so is an ``n`` request refused as invalid (HTTP 400 or 422: a model without ``n``). The usage of an ``n`` request is split over its answers (the prompt's tokens on
the first, the completion tokens evenly), so sums stay exact.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from fastdistill_assets.teacher.batch import (
    BATCH_FAILED,
    BatchOptions,
    BatchOutcome,
    BatchPollError,
    BatchRecords,
    batch_key,
    batch_lines,
    completion,
    submit,
    wait_for,
)
from fastdistill_assets.teacher.budget import BUDGET_EXHAUSTED, SpendLimit
from fastdistill_assets.teacher.cache import (
    CachedResponse,
    ResponseCache,
    cache_key,
    normalize_base_url,
)
from fastdistill_assets.teacher.limits import PerMinuteLimiter, TokenBudget
from fastdistill_assets.teacher.provider_config import DEFAULTS
from fastdistill_assets.teacher.stopped import TeacherUnreachable

RETRYABLE = {"rate_limited", "server_error", "timeout", "connection", "bad_response"}
UNREACHABLE = {"timeout", "connection"}   # what the circuit breaker counts
N_REFUSED = {"http_400", "http_422"}   # an ``n`` request refused as invalid: asked again without ``n``


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    messages: list[dict[str, str]]
    prompt_hash: str
    generation_index: int = 0


@dataclass
class GenerationResult:
    request_id: str
    content: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    attempts: int = 0
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    cache_hit: bool = False
    error: str | None = None
    error_detail: str | None = None
    cached_at: float | None = None   # a cache hit: epoch seconds when the cached answer arrived
    cached_tokens: int = 0     # prompt tokens the provider served from its prompt cache (usage's cached_tokens)


@dataclass(frozen=True)
class EndpointSettings:
    """Everything needed to call one endpoint. ``api_key`` is never logged or stored.

    ``cache_identity`` names who answers, for the response cache (see ``teacher.cache``): the
    gateway sets ``<provider>@<base URL>`` or, for a server it starts on a random port, a stable
    ``local:...`` name. Empty: the normalized ``base_url``.
    """

    base_url: str
    model: str
    cache_identity: str = ""
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULTS.timeout_s
    max_retries: int = DEFAULTS.max_retries
    concurrency: int = DEFAULTS.concurrency
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_inflight_tokens: int | None = None
    backoff_base_s: float = DEFAULTS.backoff_base_s
    backoff_max_s: float = DEFAULTS.backoff_max_s
    breaker_failures: int = DEFAULTS.breaker_failures
    breaker_silence_s: float = DEFAULTS.breaker_silence_s
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    send_seed: bool = False
    supports_n: bool = False   # one request for several answers of a prompt (OpenAI's ``n``)
    transport: Any = field(default=None, repr=False, compare=False)  # an httpx transport (in-process answers)


ProgressFn = Callable[[int, int, float, int], None]   # (answers done, of, seconds, errors among them)


class _CallError(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def redact(text: str, secret: str | None) -> str:
    """Remove a secret from text before it is logged or stored."""
    return text.replace(secret, "***") if secret else text


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify(err: BaseException) -> _CallError:
    """Map a client exception to (reason, detail, retry_after)."""
    if isinstance(err, _CallError):
        return err
    if isinstance(err, openai.RateLimitError):
        return _CallError("rate_limited", "HTTP 429", _retry_after(err.response.headers))
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status >= 500:
            return _CallError("server_error", f"HTTP {status}")
        if status == 408:
            return _CallError("timeout", "HTTP 408")
        return _CallError(f"http_{status}", f"HTTP {status}: {type(err).__name__}")
    if isinstance(err, (openai.APITimeoutError, asyncio.TimeoutError)):
        return _CallError("timeout", "request timed out")
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err
        return _CallError("connection", f"{type(cause).__name__}")
    if isinstance(err, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError, TypeError,
                        AttributeError, KeyError, IndexError)):
        return _CallError("bad_response", f"unparseable response: {type(err).__name__}")
    return _CallError("unexpected", type(err).__name__)


@dataclass(frozen=True)
class _Limiters:
    rpm: PerMinuteLimiter
    tpm: PerMinuteLimiter
    budget: TokenBudget


def _most_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A prompt's tokens at most, for the budget: UTF-8 bytes / 3 (a token is 3 bytes or more in
    common tokenizers: ~4 for English, ~3 for CJK) and 8 per message for the chat format."""
    return sum(len(m.get("content", "").encode()) for m in messages) // 3 + 8 * len(messages)


def _estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    return sum(len(m.get("content", "")) for m in messages) // 4 + max_tokens


def _groups(requests: Sequence[GenerationRequest], pending: list[int], supports_n: bool) -> list[list[int]]:
    """Pending requests in groups that one ``n`` request can answer: consecutive generation indices
    of one prompt (singletons where the provider does not accept ``n``)."""
    groups: list[list[int]] = []
    for i in pending:
        last = groups[-1][-1] if groups else None
        if (supports_n and last is not None and requests[last].prompt_hash == requests[i].prompt_hash
                and requests[last].generation_index + 1 == requests[i].generation_index):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _failed(group: Sequence[GenerationRequest], error: str, detail: str, attempts: int = 0) -> list[GenerationResult]:
    """An error result for each request of ``group`` (asked as one, failed as one)."""
    return [GenerationResult(r.request_id, attempts=attempts, error=error, error_detail=detail) for r in group]


NOT_ASKED = "not asked: teacher.budget_usd reached"


def _most_usd(spend: SpendLimit, group: Sequence[GenerationRequest], max_tokens: int) -> float:
    """What a request for ``group``'s answers may cost at most: its prompt and ``max_tokens`` each."""
    return spend.cost(_most_prompt_tokens(group[0].messages), max_tokens * len(group))


def _paid_usd(spend: SpendLimit, results: Sequence[GenerationResult | None]) -> float:
    """What the answers among ``results`` cost at the tokens they were bought with."""
    return sum(spend.cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens)
               for r in results if r is not None and r.error is None)


def _split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers that sum to it (the remainder first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class _Reply:
    contents: list[str]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


def _reply(completion: ChatCompletion | str) -> _Reply:
    """A chat completion's choices (in order) and usage.

    Raises:
        _CallError: no choices, or a choice without text.
    """
    if isinstance(completion, str) or not getattr(completion, "choices", None):
        raise _CallError("bad_response", "response has no choices")
    contents: list[str] = []
    for choice in sorted(completion.choices, key=lambda c: c.index):
        if not isinstance(choice.message.content, str):
            raise _CallError("bad_response", "response has no message content")
        contents.append(choice.message.content)
    usage = completion.usage
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = getattr(details, "cached_tokens", None) or 0
    return _Reply(contents, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0, int(cached))


class Generator:
    """Runs requests against one endpoint with a cache; see the module docstring.

    ``calls`` counts HTTP requests made, ``n_fallbacks`` the answers asked separately because an
    ``n`` reply came back short."""

    def __init__(self, settings: EndpointSettings, cache: ResponseCache | None, decode_profile: str,
                 progress: ProgressFn | None = None, progress_every_s: float = 0.0,
                 spend: SpendLimit | None = None, batch: BatchOptions | None = None) -> None:
        self.settings, self.cache, self.decode_profile = settings, cache, decode_profile
        self.progress, self.progress_every_s = progress, progress_every_s
        self.spend = spend   # a hard budget (``teacher.budget``): None, no limit
        self.batch = batch   # through the Batch API (``teacher.mode: batch``): None, online
        self.batches = self.batches_resumed = self.batch_resubmitted = 0
        self._failures_in_a_row, self._last_success = 0, time.monotonic()
        self.calls = 0
        self.n_fallbacks = 0
        self._rng = random.Random(0)

    def key(self, request: GenerationRequest) -> str:
        endpoint = self.settings.cache_identity or normalize_base_url(self.settings.base_url)
        return cache_key(request.prompt_hash, self.settings.model, self.decode_profile, request.generation_index,
                         endpoint)

    def run(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return asyncio.run(self.run_async(requests))

    async def run_async(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request_id values must be unique")
        results: list[GenerationResult | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        pending: list[int] = []
        for i, request in enumerate(requests):
            hit = cached.get(keys[i])
            if hit:
                if self.spend is not None:
                    self.spend.charge(hit.prompt_tokens, hit.completion_tokens, hit.cached_tokens)
                results[i] = GenerationResult(request.request_id, hit.content, hit.prompt_tokens,
                                              hit.completion_tokens, hit.latency_ms, 0, {}, True,
                                              cached_at=hit.created_at, cached_tokens=hit.cached_tokens)
            else:
                pending.append(i)
        if pending and self.batch is not None:
            await self._batch_all(requests, pending, results, len(requests) - len(pending))
        elif pending:
            await self._call_all(requests, pending, results, len(requests) - len(pending))
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]  # no None left, as asserted

    def _client(self, max_retries: int = 0) -> openai.AsyncOpenAI:
        s = self.settings
        # The openai package's own HTTP client type (httpx or httpx2, by version), sized to the window.
        limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=s.concurrency,
                                                        max_keepalive_connections=s.concurrency)
        http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=s.timeout_s,
                                              **({'transport': s.transport} if s.transport else {}))
        return openai.AsyncOpenAI(base_url=s.base_url, api_key=s.api_key or "not-needed", max_retries=max_retries,
                                  timeout=s.timeout_s, http_client=http)

    async def _batch_all(self, requests: Sequence[GenerationRequest], pending: list[int],
                         results: list[GenerationResult | None], already_done: int) -> None:
        """The pending requests through the Batch API (``teacher.batch``): recorded batches that ask
        some of them are followed first, then the rest is submitted. Every request ends as a result:
        an answer (cached at once), ``budget_exhausted``, or an error after its resubmissions.

        Raises:
            BatchPollError: a submitted batch could not be followed to its end (it stays recorded).
        """
        assert self.batch is not None
        s, options, spend = self.settings, self.batch, self.spend
        groups = {requests[g[0]].request_id: [requests[i] for i in g] for g in _groups(requests, pending, s.supports_n)}
        index = {r.request_id: i for i, r in enumerate(requests)}
        records, identity = BatchRecords(options.folder), self.settings.cache_identity or s.base_url
        total, started = len(requests), time.monotonic()
        held: dict[str, float] = {}

        def progress(done: int, of: int) -> None:   # a batch's answers: errors are counted when it ends
            if self.progress:
                self.progress(min(total, already_done + done), total, time.monotonic() - started, 0)

        def place(found: list[GenerationResult]) -> None:
            for result in found:
                results[index[result.request_id]] = result

        def reserve(custom_id: str) -> bool:
            if spend is None:
                return True
            most = _most_usd(spend, groups[custom_id], s.max_tokens)
            if not spend.reserve_now(most):
                place(_failed(groups.pop(custom_id), BUDGET_EXHAUSTED, NOT_ASKED))
                return False
            held[custom_id] = most
            return True

        def take(asked: dict[str, list[GenerationRequest]], outcome: BatchOutcome, attempt: int) -> list[str]:
            """Cache and place a batch's answers; the custom_ids to ask again (failed, expired, the
            rest of a short ``n`` reply as requests of their own)."""
            again = [c for c in outcome.failed if c in asked]
            for custom_id, group in asked.items():
                body = outcome.answers.get(custom_id)
                if body is None:
                    if custom_id not in outcome.failed:
                        again.append(custom_id)   # expired: in neither file
                    continue
                try:
                    answered = self._answered(group, _reply(completion(body)), outcome.seconds * 1000, attempt, {})
                except (_CallError, ValueError):
                    again.append(custom_id)
                    continue
                place(answered)
                for r in group[len(answered):]:
                    groups[r.request_id] = [r]
                    self.n_fallbacks += 1
                    if reserve(r.request_id):
                        again.append(r.request_id)
            return again

        async def follow(batch_id: str, key: str) -> BatchOutcome:
            try:
                return await wait_for(client, batch_id, options, progress)
            except Exception as err:
                failure = classify(err)
                raise BatchPollError(f"teacher batch {batch_id}: following it failed ({failure.reason}: "
                                     f"{redact(failure.detail, s.api_key)}); it stays recorded in {records.folder}, "
                                     "so materializing again resumes it") from None

        async def one(custom_ids: list[str], attempt: int) -> list[str]:
            """Submit one batch and take its answers; the custom_ids to ask again."""
            asked = {c: groups[c] for c in custom_ids}
            key = batch_key(identity, s.model, self.decode_profile, custom_ids)
            try:
                batch_id = await submit(client, records, key, batch_lines(asked, self._body), custom_ids)
            except Exception as err:  # noqa: BLE001 - a batch that could not be submitted becomes error rows
                failure = classify(err)
                for group in asked.values():
                    place(_failed(group, failure.reason, redact(failure.detail, s.api_key), attempt))
                return []
            self.batches += 1
            self.calls += len(custom_ids)
            again = take(asked, await follow(batch_id, key), attempt)
            records.forget(key)
            return again

        client = self._client(max_retries=s.max_retries)
        try:
            todo = list(groups)
            for key, batch_id, custom_ids in records.all():   # a killed step's batches, paid for already
                waiting = set(todo)
                mine = [c for c in custom_ids if c in waiting]
                if not mine:
                    continue
                try:
                    await client.batches.retrieve(batch_id)
                except openai.NotFoundError:
                    records.forget(key)   # the provider no longer has it (a restarted local server)
                    continue
                self.batches += 1
                self.batches_resumed += 1
                asked = {c: groups[c] for c in mine}
                again = take(asked, await follow(batch_id, key), 1)
                if spend is not None:   # paid when that step submitted it
                    spend.spent_usd += _paid_usd(spend, [results[index[r.request_id]] for g in asked.values() for r in g])
                records.forget(key)
                todo = [c for c in todo if c not in asked] + again
            todo = [c for c in todo if c in held or reserve(c)]
            attempt = 1
            while todo:
                chunks = [todo[i:i + options.max_requests] for i in range(0, len(todo), options.max_requests)]
                failed = [c for part in await asyncio.gather(*(one(chunk, attempt) for chunk in chunks)) for c in part]
                if failed and attempt > options.max_resubmits:
                    for custom_id in failed:
                        place(_failed(groups[custom_id], BATCH_FAILED, f"failed in {attempt} batches", attempt))
                    break
                self.batch_resubmitted += len(failed)
                todo, attempt = failed, attempt + 1
        finally:
            await client.close()
            if spend is not None:
                for custom_id, most in held.items():
                    await spend.settle(most, _paid_usd(spend, [results[index[r.request_id]]
                                                               for r in groups.get(custom_id, [])]))

    async def _call_all(self, requests: Sequence[GenerationRequest], pending: list[int],
                        results: list[GenerationResult | None], already_done: int) -> None:
        s = self.settings
        client = self._client()
        limiter = _Limiters(PerMinuteLimiter(s.requests_per_minute), PerMinuteLimiter(s.tokens_per_minute),
                            TokenBudget(s.max_inflight_tokens))
        groups = _groups(requests, pending, s.supports_n)
        queue = iter(groups)
        total, started = len(requests), time.monotonic()
        state = {"done": already_done, "last": started, "errors": 0}

        async def worker() -> None:
            for group in queue:
                answered = await self._request(client, [requests[i] for i in group], limiter)
                missing = group[len(answered):]   # an ``n`` reply came back short (or ``n`` was refused)
                self.n_fallbacks += len(missing)
                for index in missing:   # an ``n`` reply with fewer choices: the rest one by one
                    answered += await self._request(client, [requests[index]], limiter)
                for index, result in zip(group, answered, strict=True):
                    results[index] = result
                state["done"] += len(group)
                state["errors"] += sum(result.error is not None for result in answered)
                now = time.monotonic()
                if self.progress and (now - state["last"] >= self.progress_every_s or state["done"] == total):
                    state["last"] = now
                    self.progress(state["done"], total, now - started, state["errors"])

        try:
            await asyncio.gather(*(worker() for _ in range(min(s.concurrency, len(groups)))))
        finally:
            await client.close()

    async def _request(self, client: openai.AsyncOpenAI, group: list[GenerationRequest],
                       limiter: _Limiters) -> list[GenerationResult]:
        """One request for ``group``'s answers (``n`` = its size), retried. Returns a result per
        answer that came back, in order (fewer than asked when an ``n`` reply is short); on a
        final failure, an error result for each of the group. With a budget (``spend``), the request
        is held at its most before it is sent and settled at its usage; one that can no longer fit
        is not sent: a ``budget_exhausted`` result for each of the group, no call."""
        s, spend = self.settings, self.spend
        outputs = s.max_tokens * len(group)
        estimate = _estimate_tokens(group[0].messages, outputs)
        if spend is None:
            return await self._attempts(client, group, limiter, estimate)
        most_usd = _most_usd(spend, group, s.max_tokens)
        if not await spend.reserve(most_usd):
            return _failed(group, BUDGET_EXHAUSTED, NOT_ASKED)
        results: list[GenerationResult] = []
        try:
            results = await self._attempts(client, group, limiter, estimate)
            return results
        finally:
            await spend.settle(most_usd, _paid_usd(spend, results))

    async def _attempts(self, client: openai.AsyncOpenAI, group: list[GenerationRequest], limiter: _Limiters,
                        estimate: int) -> list[GenerationResult]:
        s, head = self.settings, group[0]
        attempts, retries = 0, Counter[str]()
        for attempt in range(1, s.max_retries + 2):
            attempts = attempt
            await limiter.rpm.acquire(1)
            await limiter.tpm.acquire(estimate)
            held = await limiter.budget.acquire(estimate)
            started = time.perf_counter()
            try:
                # the whole reply within timeout_s: connect, first byte and every byte after it
                reply = await asyncio.wait_for(self._call(client, head, len(group)), s.timeout_s)
            except Exception as err:  # noqa: BLE001 - every failure is classified, none escapes
                failure = classify(err)
                await limiter.budget.release(held)
                self._breaker(failure)
                if len(group) > 1 and failure.reason in N_REFUSED:
                    return []   # a provider that refuses ``n``: the answers are asked one by one (counted)
                if failure.reason not in RETRYABLE or attempt > s.max_retries:
                    failed = _failed(group, failure.reason, redact(failure.detail, s.api_key), attempts)
                    failed[0].retries_by_reason = dict(retries)
                    return failed
                retries[failure.reason] += 1
                await asyncio.sleep(self._backoff(attempt, failure.retry_after))
                continue
            await limiter.budget.release(held)
            self._failures_in_a_row, self._last_success = 0, time.monotonic()
            latency_ms = (time.perf_counter() - started) * 1000
            return self._answered(group, reply, latency_ms, attempts, dict(retries))
        raise AssertionError("unreachable")

    def _answered(self, group: list[GenerationRequest], reply: _Reply, latency_ms: float, attempts: int,
                  retries: dict[str, int]) -> list[GenerationResult]:
        """Results for the choices that came back, the usage split over them, each cached."""
        contents = reply.contents[:len(group)]
        completion = _split(reply.completion_tokens, len(contents))
        results = []
        for i, (request, content) in enumerate(zip(group, contents, strict=False)):
            first = i == 0
            result = GenerationResult(request.request_id, content, reply.prompt_tokens if first else 0, completion[i],
                                      latency_ms, attempts, retries if first else {},
                                      cached_tokens=reply.cached_tokens if first else 0)
            results.append(result)
            if self.cache is not None:
                self.cache.put(self.key(request), self.settings.model, CachedResponse(
                    content, result.prompt_tokens, result.completion_tokens, latency_ms, result.cached_tokens))
        return results

    def _body(self, request: GenerationRequest, n: int = 1) -> dict[str, Any]:
        """The chat completion request for ``n`` answers of ``request``'s prompt."""
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": request.messages, "temperature": s.temperature,
                                "top_p": s.top_p, "max_tokens": s.max_tokens}
        if n > 1:
            body["n"] = n
        if s.send_seed:
            body["seed"] = request.generation_index
        return body

    async def _call(self, client: openai.AsyncOpenAI, request: GenerationRequest, n: int = 1) -> _Reply:
        self.calls += 1
        # The client's documented raw ``post``: same auth, errors and parsing as
        # ``chat.completions.create`` without re-walking the already plain JSON body.
        return _reply(await client.post("/chat/completions", body=self._body(request, n), cast_to=ChatCompletion))

    def _breaker(self, failure: _CallError) -> None:
        """Count an attempt that failed; stop asking (``TeacherUnreachable``) once
        ``breaker_failures`` attempts in a row could not connect or timed out and none has succeeded
        for ``breaker_silence_s`` (since the last success, or since this generator was made)."""
        s = self.settings
        if failure.reason not in UNREACHABLE:
            return
        self._failures_in_a_row += 1
        silent = time.monotonic() - self._last_success
        if self._failures_in_a_row >= s.breaker_failures and silent >= s.breaker_silence_s:
            who = s.cache_identity or normalize_base_url(s.base_url)
            raise TeacherUnreachable(
                f"teacher {who} at {normalize_base_url(s.base_url)} is unreachable: {self._failures_in_a_row} "
                f"attempts in a row failed ({failure.reason}: {redact(failure.detail, s.api_key)}) and none "
                f"succeeded for {silent:.0f} s; its answers so far are cached: materializing again resumes")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_s)
        base = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        return base * (0.5 + self._rng.random() / 2)
