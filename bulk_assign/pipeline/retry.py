"""Retry decisions: when to send a device again and when to give up, through tenacity.

Everything here is a pure decision or takes an injected clock and sleep, so tests never wait for real time.
What to do after each HTTP attempt (success, throttled, transient, auth, permanent) is decided by
``graph.operations.classify``; this module only decides *when* to try again and *when to give up*.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from ..graph.outcome import Attempt, Kind
from .state import DeviceState

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a device again and when to give up; small and pure, used through tenacity."""

    max_attempts: int = 8
    max_wait: float = 300.0  # cap on any single wait
    max_throttle_wait: float = 3600.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0

    @property
    def max_group_seconds(self) -> float:
        """A bound on how long one group (a device, or a batch) may keep retrying, whatever the answers say:
        the throttle cap plus every allowed attempt at its longest wait."""
        return self.max_throttle_wait + self.max_attempts * self.max_wait

    def should_retry(self, attempt: Attempt) -> bool:
        return attempt.kind in (Kind.THROTTLED, Kind.TRANSIENT, Kind.AUTH)

    def gives_up(self, attempt: Attempt, state: DeviceState) -> str | None:
        """The error code to give up with, or None to go on."""
        if attempt.kind is Kind.THROTTLED:
            return "ThrottleWaitExceeded" if state.throttle_waited >= self.max_throttle_wait else None
        if attempt.kind is Kind.AUTH:
            return None  # the engine decides: one refresh, then the run stops
        return "RetriesExhausted" if state.sends >= self.max_attempts else None

    def delay(self, attempt: Attempt, state: DeviceState, rng: random.Random) -> float:
        """How long this device waits before its next attempt (throttle pauses go through the gate)."""
        if attempt.kind is Kind.THROTTLED or attempt.kind is Kind.AUTH:
            return 0.0
        if attempt.retry_after is not None:
            return min(attempt.retry_after, self.max_wait)
        ceiling: float = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, state.sends - 1), self.max_wait)
        return ceiling * (0.5 + rng.random() / 2)  # "equal jitter": never zero, never in lock-step


# A round sends (or reads back) the devices it is given once; it must not change the list itself
Round = Callable[[list[DeviceState]], Awaitable[None]]


class RetryLoop:
    """The one retry loop: per-device sends and a batch's items alike, driven by ``RetryPolicy`` through tenacity.

    A *round* sends (or reads back) every pending device of a group once and leaves each one's answer in
    ``state.attempt``. After a round each device is settled on its own: final (success, permanent),
    given up (``RetryPolicy.gives_up``), or pending again. tenacity then decides for the group:
    ``retry`` while any device is pending, ``wait`` the longest delay a pending device asked for (throttle
    pauses are the shared gate's, so 0 for those), and ``stop`` as a safety net on the group's wall time
    (``RetryPolicy.max_group_seconds``, on the injected clock), after which every device still pending
    gives up: whatever a server answers, no device retries forever. tenacity's
    own attempt counter is not used for giving up, because 429s must not count as attempts.

    The first round runs before tenacity is involved: nearly every device is decided by it, and building
    a tenacity controller per group is a measurable share of CPU when Graph answers fast.
    """

    def __init__(self, policy: RetryPolicy, *, sleep: Sleep, rng: random.Random,
                 clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._retrying = AsyncRetrying(
            stop=self._out_of_time,
            wait=self._wait,
            retry=retry_if_result(bool),
            sleep=sleep,
            reraise=True,
            retry_error_callback=self._stopped,
        )

    async def run(self, states: list[DeviceState], round_: Round) -> None:
        """Decide every device of ``states``: afterwards each holds its final attempt."""
        started = self._clock()
        await round_(states)  # the first round, as ``_round`` does it
        pending = self.settle(states)
        if pending:
            await self._sleep(self._delay(pending))
            await self._retrying.copy()(self._round, pending, round_, started=started)

    async def _round(self, pending: list[DeviceState], round_: Round, started: float = 0.0) -> list[DeviceState]:
        """One round over ``pending``, which is narrowed in place to the devices that go again: tenacity
        calls this with the same arguments every time."""
        await round_(pending)
        pending[:] = self.settle(pending)
        return pending

    def settle(self, states: list[DeviceState]) -> list[DeviceState]:
        """Final devices stay as they are, exhausted ones give up; returns those that go again."""
        policy = self.policy
        again: list[DeviceState] = []
        for state in states:
            attempt = state.attempt
            assert attempt is not None
            if not policy.should_retry(attempt):
                continue
            if (code := policy.gives_up(attempt, state)) is not None:
                state.give_up(code)
            else:
                again.append(state)
        return again

    def _delay(self, pending: list[DeviceState]) -> float:
        delay = 0.0
        for state in pending:
            assert state.attempt is not None
            delay = max(delay, self.policy.delay(state.attempt, state, self._rng))
        return delay

    def _out_of_time(self, rs: RetryCallState) -> bool:
        """tenacity's stop: the group's wall time on the injected clock (tenacity's own clock is not injectable)."""
        started: float = rs.kwargs["started"]
        return self._clock() - started >= self.policy.max_group_seconds

    def _wait(self, rs: RetryCallState) -> float:
        assert rs.outcome is not None
        pending: list[DeviceState] = rs.outcome.result()
        return self._delay(pending)

    def _stopped(self, rs: RetryCallState) -> list[DeviceState]:
        """The group ran out of time: every device still pending gives up, named by its last answer."""
        assert rs.outcome is not None
        pending: list[DeviceState] = rs.outcome.result()
        for state in pending:
            throttled = state.attempt is not None and state.attempt.kind is Kind.THROTTLED
            state.give_up("ThrottleWaitExceeded" if throttled else "RetriesExhausted")
        return []
