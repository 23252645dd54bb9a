"""Retry decisions: when to send a device again and when to give up, through tenacity.

Everything here is a pure decision or takes an injected clock and sleep, so tests never wait for real time.
What to do after each HTTP attempt (success, throttled, transient, auth, permanent) is decided by
``graph.classify``; this module only decides *when* to try again and *when to give up*.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from ..graph.outcome import Attempt, Kind

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


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
