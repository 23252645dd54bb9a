"""Retry decisions: Retry-After parsing, the shared throttle gate, and the tenacity policy for one device.

Everything here is a pure decision or takes an injected clock and sleep, so tests never wait for real time.
What to do after each HTTP attempt (success, throttled, transient, auth, permanent) is decided by
``graph.classify``; this module only decides *when* to try again and *when to give up*.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from .outcome import Attempt, Kind

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value in any form seen from Graph, or None when absent/unusable.

    Integer (``10``), decimal (``2.128``, from Microsoft's own docs), a list (``30,120``: the largest value
    wins, so we never come back too early) and an HTTP-date. Negative or garbage values give None, which
    callers treat like a missing header.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: list[float] = []
    for part in text.split(","):
        try:
            number = float(part.strip())
        except ValueError:
            continue
        if math.isfinite(number) and number >= 0:
            seconds.append(number)
    if seconds:
        return max(seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


class ThrottleGate:
    """One gate shared by every worker: a 429 anywhere closes it until its Retry-After has passed.

    Without it each worker would discover the throttle on its own and waste one request each. When the
    closure ends the gate is *half open*: one request goes first as a probe, the others wait until an
    answer other than 429 arrives (``release``). So one throttle event costs one wasted request (plus
    whatever was already in flight), not one per worker, even when the server frees its window slowly.
    """

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 probe_timeout: float = 30.0) -> None:
        self._clock = clock
        self._sleep = sleep
        self._open_at = 0.0
        self._probing = False  # closed once: the next request out is a probe
        self._probe_out = False
        self._released = asyncio.Event()
        self._probe_timeout = probe_timeout
        self.closures = 0

    def close_for(self, seconds: float) -> None:
        """Keep the gate closed for at least ``seconds`` from now (never shortens an earlier closure)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._open_at:
            self._open_at = until
            self.closures += 1
        self._probing, self._probe_out = True, False
        self._released.clear()

    def release(self) -> None:
        """An answer other than 429 arrived: the server accepts again, so open fully."""
        if self._probing:
            self._probing = False
            self._released.set()

    def remaining(self) -> float:
        return max(0.0, self._open_at - self._clock())

    async def wait(self) -> float:
        """Sleep until the gate is open (or this caller is the probe); returns how long it waited."""
        start = self._clock()
        while True:
            left = self._open_at - self._clock()
            if left > 0:
                await self._sleep(left)
                continue
            if not self._probing:
                break
            if not self._probe_out:
                self._probe_out = True
                break
            try:
                await asyncio.wait_for(self._released.wait(), self._probe_timeout)
            except TimeoutError:  # the probe never reported back (cancelled): do not hold everyone forever
                self.release()
        return self._clock() - start


@dataclass(slots=True)
class DeviceTry:
    """Per-device retry bookkeeping shared by the stop and wait strategies."""

    device_id: str
    sends: int = 0  # attempts that count against --max-attempts (429s don't)
    posts: int = 0  # every POST actually sent (the record's ``attempts``)
    throttle_waited: float = 0.0
    auth_retries: int = 0
    verify_next: bool = False  # the last attempt may have landed: read back before sending again
    client_request_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a device again and when to give up; small and pure, used through tenacity."""

    max_attempts: int = 8
    max_wait: float = 300.0  # cap on any single wait
    max_throttle_wait: float = 3600.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0

    def should_retry(self, attempt: Attempt) -> bool:
        return attempt.kind in (Kind.THROTTLED, Kind.TRANSIENT, Kind.AUTH)

    def gives_up(self, attempt: Attempt, state: DeviceTry) -> str | None:
        """The error code to give up with, or None to go on."""
        if attempt.kind is Kind.THROTTLED:
            return "ThrottleWaitExceeded" if state.throttle_waited >= self.max_throttle_wait else None
        if attempt.kind is Kind.AUTH:
            return None  # the engine decides: one refresh, then the run stops
        return "RetriesExhausted" if state.sends >= self.max_attempts else None

    def delay(self, attempt: Attempt, state: DeviceTry, rng: random.Random) -> float:
        """How long this device waits before its next attempt (throttle pauses go through the gate)."""
        if attempt.kind is Kind.THROTTLED or attempt.kind is Kind.AUTH:
            return 0.0
        if attempt.retry_after is not None:
            return min(attempt.retry_after, self.max_wait)
        ceiling: float = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, state.sends - 1), self.max_wait)
        return ceiling * (0.5 + rng.random() / 2)  # "equal jitter": never zero, never in lock-step


def tenacity_retrying(
    policy: RetryPolicy, *, sleep: Sleep, rng: random.Random, on_give_up: Callable[[Attempt, str], Attempt]
) -> AsyncRetrying:
    """Build the tenacity controller for one device's retries (called with ``(attempt_fn, state)``).

    tenacity's own attempt counter would count 429s; the stop and wait strategies read ``DeviceTry``
    instead, which the attempt function keeps up to date.
    """

    def _attempt(rs: RetryCallState) -> Attempt:
        assert rs.outcome is not None
        result: Attempt = rs.outcome.result()
        return result

    def _state(rs: RetryCallState) -> DeviceTry:
        state: DeviceTry = rs.args[0]
        return state

    def stop(rs: RetryCallState) -> bool:
        return policy.gives_up(_attempt(rs), _state(rs)) is not None

    def wait(rs: RetryCallState) -> float:
        return policy.delay(_attempt(rs), _state(rs), rng)

    def give_up(rs: RetryCallState) -> Any:
        attempt = _attempt(rs)
        return on_give_up(attempt, policy.gives_up(attempt, _state(rs)) or "RetriesExhausted")

    return AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_result(policy.should_retry),
        sleep=sleep,
        reraise=True,
        retry_error_callback=give_up,
    )
