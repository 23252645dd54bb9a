"""Pacing: await permission before every HTTP attempt, so the run spends Intune's budget without overdrawing it.

A ``Pacer`` is the seam (design.md): the engine calls ``acquire()`` before each attempt (retries included),
reports each 429 with ``on_throttle()``, and asks ``window_free_in()`` when a 429 came without Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from .config import Rate

log = logging.getLogger("bulk_assign")


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


class WindowPacer:
    """At most ``limit`` sends in any window of ``period`` (a sliding log), with AIMD on ``limit``.

    Why not aiolimiter here: "100 writes per 20 s" as Intune enforces it may be a sliding window, fixed
    windows or a token bucket (undocumented). A log of the last sends guarantees the budget in *every*
    window, which satisfies all three, and still uses the initial burst the budget allows (a 300-device
    job at 100/20s takes ~40 s, not 60 s). aiolimiter's leaky bucket can only do one or the other: with
    capacity N it sends almost 2N in the first window; with capacity 1 it never bursts.

    The window is stretched by ``margin`` (plus 10 ms) so that jitter between our send time and the
    server's arrival time cannot squeeze N+1 requests into the server's window.

    Adaptive: a 429 that arrives anyway means the real budget is smaller than configured (another app
    shares the tenant, or the tenant's limit is lower); the limit drops multiplicatively (at most once per
    window, since the 429s of one window are one signal) and then grows back additively, one step per
    throttle-free window, up to the configured rate, which stays the hard ceiling.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        margin: float = 0.01,
        decrease: float = 0.7,
        increase: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ceiling = rate
        self._period = rate.period * (1 + margin) + 0.01
        self._limit = float(rate.count)
        self._decrease = decrease
        self._step = max(1.0, rate.count * increase)
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._last_change = -math.inf
        self.throttled = 0
        self.changes: list[tuple[float, int]] = []  # (time, new limit), for reports and tests

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    async def acquire(self, amount: int = 1) -> None:
        async with self._lock:
            for _ in range(amount):
                await self._one()

    async def _one(self) -> None:
        while True:
            now = self._clock()
            self._grow(now)
            horizon = now - self._period
            sent = self._sent
            while sent and sent[0] <= horizon:
                sent.popleft()
            limit = self.limit
            if len(sent) < limit:
                sent.append(now)
                return
            await self._sleep(sent[len(sent) - limit] + self._period - now)

    def _grow(self, now: float) -> None:
        """Additive increase: one step per full window without a 429, up to the configured ceiling."""
        if self._limit < self.ceiling.count and now - self._last_change >= self._period:
            self._set(min(float(self.ceiling.count), self._limit + self._step), now)

    def on_throttle(self, retry_after: float | None) -> None:
        self.throttled += 1
        now = self._clock()
        if now - self._last_change >= self._period / 2 or self._limit >= self.ceiling.count:
            self._set(max(1.0, self._limit * self._decrease), now)

    def _set(self, limit: float, now: float) -> None:
        old = self.limit
        self._limit = limit
        self._last_change = now
        if self.limit != old:
            self.changes.append((now, self.limit))
            log.info("pacing: effective rate %d/%gs (was %d; ceiling %s)", self.limit, self.ceiling.period, old,
                     self.ceiling)

    def window_free_in(self) -> float:
        if len(self._sent) < self.limit:
            return 0.0
        return max(0.0, self._sent[len(self._sent) - self.limit] + self._period - self._clock())

    @property
    def effective_rate(self) -> Rate:
        return Rate(self.limit, self.ceiling.period)
