"""Pacing: await permission before every HTTP attempt, so the run spends Intune's budget without overdrawing it.

A ``Pacer`` is the seam (docs/architecture.md): the engine calls ``acquire()`` before each attempt (retries included),
reports every answer of a granted write (``on_accepted``, ``on_throttle`` or ``on_failed``: a window-based
pacer holds a write's place until its answer is in), and asks ``window_free_in()`` when a 429 came without
Retry-After. ``WindowPacer`` is the asyncio side of ``budget.WindowBudget``, which makes the decisions.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from ..config import Rate
from .budget import WindowBudget


class Pacer(Protocol):
    """Rate control for one kind of request (writes, or verification reads)."""

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        """Wait until ``amount`` more requests may be sent; returns how many were granted.

        With ``partial`` (a batch's items) the grant may be smaller than ``amount``; the caller sends the
        rest later. Without it, all of ``amount`` at once.
        """
        ...

    def on_throttle(self, retry_after: float | None, count: int = 1) -> None:
        """The server answered 429 despite our pacing (``count``: the items of a refused batch)."""
        ...

    def on_accepted(self, latency: float, count: int = 1) -> None:
        """``count`` requests were accepted after ``latency`` seconds (adaptive pacers learn from it)."""
        ...

    def on_failed(self, latency: float, count: int = 1) -> None:
        """``count`` requests failed ``latency`` seconds after they were sent: any answer other than 2xx or
        429, a reset, a timeout. The server may have counted them; it did not accept them."""
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

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        for _ in range(amount):
            await self._limiter.acquire()
            self._sent.append(self._clock())
        return amount

    def on_throttle(self, retry_after: float | None, count: int = 1) -> None:
        self.throttled += 1

    def on_accepted(self, latency: float, count: int = 1) -> None:
        return None

    def on_failed(self, latency: float, count: int = 1) -> None:
        return None

    def window_free_in(self) -> float:
        if len(self._sent) < self._rate.count:
            return self._rate.period / self._rate.count
        return max(0.0, self._sent[0] + self._rate.period - self._clock())

    @property
    def effective_rate(self) -> Rate:
        return self._rate


class WindowPacer:
    """The asyncio adapter of ``WindowBudget`` (at most ``limit`` writes in any window, adapting the limit):
    waiters take turns under a lock, sleep as long as the budget says, and wake early when an answer comes
    in that may free the window sooner."""

    def __init__(
        self,
        rate: Rate,
        *,
        margin: float = 0.005,
        probe_every: int = 2,
        probe_cost: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.budget = WindowBudget(rate, now=clock(), margin=margin, probe_every=probe_every, probe_cost=probe_cost)
        self.ceiling = rate
        self._clock = clock
        self._sleep = sleep
        self._answer = asyncio.Event()
        self._lock = asyncio.Lock()
        self._queued = 0  # callers holding or waiting for the lock
        self.throttled = 0

    @property
    def limit(self) -> int:
        return self.budget.limit

    @property
    def changes(self) -> list[tuple[float, int]]:
        """(time, new limit) of every change, for reports and tests."""
        return self.budget.changes

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        """Wait until ``amount`` writes (or, with ``partial``, part of them) fit in the window; see
        ``WindowBudget.grant``. One waiter decides at a time, so grants go in the order of arrival.

        With nobody holding or waiting for the turn, the first decision is made without taking the lock
        (it would be taken without waiting, and no one can come between: there is no ``await`` before the
        grant); an unhurried run never touches the lock."""
        grant = self.budget.grant(self._clock(), amount, partial) if not self._queued else None
        if grant is not None and grant.granted:
            return grant.granted
        self._queued += 1
        try:
            async with self._lock:
                while True:
                    if grant is None:
                        grant = self.budget.grant(self._clock(), amount, partial)
                    if grant.granted:
                        return grant.granted
                    await self._wait(grant.wait, grant.answer_may_help)
                    grant = None
        finally:
            self._queued -= 1

    async def _wait(self, delay: float, answer_may_help: bool) -> None:
        """Sleep ``delay``, or less if an answer comes in that may free the window earlier."""
        if not answer_may_help:
            await self._sleep(delay)
            return
        self._answer.clear()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        answer = asyncio.ensure_future(self._answer.wait())
        try:
            await asyncio.wait((sleeper, answer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            answer.cancel()

    def _answered(self, count: int, accepted: bool, latency: float | None) -> None:
        if self.budget.answered(self._clock(), count, accepted=accepted, latency=latency):
            self._answer.set()

    def on_accepted(self, latency: float, count: int = 1) -> None:
        """``count`` writes were accepted (2xx) after ``latency`` seconds on the wire."""
        self._answered(count, True, latency)

    def on_failed(self, latency: float, count: int = 1) -> None:
        """``count`` writes failed after ``latency`` seconds: their places free one window after this answer."""
        self._answered(count, False, latency)

    def on_throttle(self, retry_after: float | None, count: int = 1) -> None:
        """A 429 (``count`` writes refused); the new limit is decided once the burst's other answers are in."""
        self.throttled += 1
        self._answered(count, False, None)
        self.budget.throttled(self._clock(), retry_after)

    def window_free_in(self) -> float:
        return self.budget.window_free_in(self._clock())

    @property
    def effective_rate(self) -> Rate:
        return Rate(self.limit, self.ceiling.period)
