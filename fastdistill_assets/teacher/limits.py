"""Async limits: requests/tokens per minute and an in-flight token budget."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class PerMinuteLimiter:
    """Sliding 60 s window: ``acquire(n)`` waits until n more units fit under the limit."""

    def __init__(self, limit: float | None, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: deque[tuple[float, float]] = deque()
        self._used = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.limit:
            return
        amount = min(amount, self.limit)
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._events and now - self._events[0][0] >= self.window_s:
                    self._used -= self._events.popleft()[1]
                if self._used + amount <= self.limit:
                    self._events.append((now, amount))
                    self._used += amount
                    return
                await asyncio.sleep(self.window_s - (now - self._events[0][0]) + 1e-3)


class TokenBudget:
    """Backpressure: at most ``limit`` estimated tokens in flight at once."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight = 0
        self._cond = asyncio.Condition()

    async def acquire(self, tokens: int) -> int:
        if not self.limit:
            return 0
        tokens = min(tokens, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self._in_flight + tokens <= self.limit)
            self._in_flight += tokens
        return tokens

    async def release(self, tokens: int) -> None:
        if not self.limit or not tokens:
            return
        async with self._cond:
            self._in_flight -= tokens
            self._cond.notify_all()
