"""Pacing: await permission before every HTTP attempt, so the run spends Intune's budget without overdrawing it.

A ``Pacer`` is the seam (design.md): the engine calls ``acquire()`` before each attempt (retries included),
reports each 429 with ``on_throttle()``, and asks ``window_free_in()`` when a 429 came without Retry-After.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from .config import Rate


class Pacer(Protocol):
    """Rate control for one kind of request (writes, or verification reads)."""

    async def acquire(self, amount: int = 1) -> None:
        """Wait until ``amount`` more requests may be sent."""
        ...

    def on_throttle(self, retry_after: float | None) -> None:
        """The server answered 429 despite our pacing."""
        ...

    def window_free_in(self) -> float:
        """Seconds until the oldest send of the current budget window ages out (a guess at when the server
        will accept again when it did not say)."""
        ...

    @property
    def effective_rate(self) -> Rate:
        """The rate this pacer currently sends at (reported in summary.json)."""
        ...


class LimiterPacer:
    """aiolimiter's leaky bucket at ``rate``, released one request at a time.

    Why capacity 1 and not ``rate.count``: a leaky bucket whose capacity equals the budget allows a full
    burst *and then* the steady rate within the same window, i.e. almost twice the budget in the first
    window, and a sliding-window server throttles the excess. Capacity ``burst`` (default 1) keeps every
    window within budget at the cost of not using the initial burst.
    """

    def __init__(self, rate: Rate, *, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        burst = max(1, min(burst, rate.count))
        self._limiter = AsyncLimiter(burst, burst / rate.per_second)
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=rate.count)
        self.throttled = 0

    async def acquire(self, amount: int = 1) -> None:
        for _ in range(amount):
            await self._limiter.acquire()
            self._sent.append(self._clock())

    def on_throttle(self, retry_after: float | None) -> None:
        self.throttled += 1

    def window_free_in(self) -> float:
        if len(self._sent) < self._rate.count:
            return self._rate.period / self._rate.count
        return max(0.0, self._sent[0] + self._rate.period - self._clock())

    @property
    def effective_rate(self) -> Rate:
        return self._rate
