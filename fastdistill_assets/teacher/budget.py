"""A hard teacher budget in dollars (``teacher.budget_usd``).

The teacher stops sending when what its answers cost so far, plus what the requests in flight may
cost, would pass the budget. A request in flight is reserved at its most (the prompt estimate and
``max_tokens`` for each answer it asks) and settled at what its usage says once it is back; a
request that does not fit waits while others are in flight (they may cost less than reserved) and is
not sent once nothing is in flight: its answers, and every later one, become results with
``error = budget_exhausted`` and no call. Answers served from the response cache count at the price
of the tokens they were bought with, so raising the budget and asking again pays only for what is
missing. The budget is never passed, provided a provider's usage stays within ``max_tokens``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastdistill_assets.teacher.provider_config import Prices, dollars

BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass
class SpendLimit:
    """The budget's state, shared by the requests of a stage step (across its chunks)."""

    limit_usd: float
    prices: Prices
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: bool = False
    in_flight: int = 0
    _changed: asyncio.Condition | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        return dollars(prompt_tokens, completion_tokens, self.prices, cached_tokens) or 0.0

    def charge(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        """Count answers already paid for (served from the cache)."""
        self.spent_usd += self.cost(prompt_tokens, completion_tokens, cached_tokens)

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:   # each ``Generator.run`` has its own loop
            self._changed, self._loop = asyncio.Condition(), loop
        return self._changed

    async def reserve(self, most_usd: float) -> bool:
        """Hold ``most_usd`` for a request about to be sent; False (and exhausted from now on) when it
        can never fit."""
        changed = self._condition()
        async with changed:
            while True:
                if self.exhausted:
                    return False
                if self.spent_usd + self.reserved_usd + most_usd <= self.limit_usd:
                    self.reserved_usd += most_usd
                    self.in_flight += 1
                    return True
                if self.in_flight == 0:   # nothing in flight will free any of it
                    self.exhausted = True
                    changed.notify_all()
                    return False
                await changed.wait()

    def reserve_now(self, most_usd: float) -> bool:
        """Hold ``most_usd`` at once or never (a batch holds all its requests before it is sent)."""
        if self.exhausted or self.spent_usd + self.reserved_usd + most_usd > self.limit_usd:
            self.exhausted = True
            return False
        self.reserved_usd += most_usd
        self.in_flight += 1
        return True

    async def settle(self, most_usd: float, actual_usd: float) -> None:
        """Release a reservation and count what the request cost (0 for a failed one)."""
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            self.reserved_usd = max(0.0, self.reserved_usd - most_usd) if self.in_flight else 0.0
            self.spent_usd += actual_usd
            changed.notify_all()
