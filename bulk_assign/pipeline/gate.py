"""The throttle gate every worker passes before a send: one 429 pauses all of them, then one probe goes.

Clock and sleep are injected, so tests drive it with a fake clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ThrottleGate:
    """One gate shared by every worker: a 429 anywhere closes it until its Retry-After has passed.

    Without it each worker would discover the throttle on its own and waste one request each. When the
    closure ends the gate is *half open*: one request goes first as a probe, the others wait until an
    answer other than 429 arrives (``release``). So one throttle event costs one wasted request (plus
    whatever was already in flight), not one per worker, even when the server frees its window slowly.

    A probe answered 429 closes the gate again, and the waiters are woken to wait out the new closure:
    one of them is the next probe. (Waiting only for a release kept them behind a probe whose device had
    given up, until ``probe_timeout``.)
    """

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 probe_timeout: float = 30.0) -> None:
        self._clock = clock
        self._sleep = sleep
        self._open_at = 0.0
        self._probing = False  # closed once: the next request out is a probe
        self._probe_out = False
        self._changed = asyncio.Event()  # set (and replaced) whenever a closure starts or the gate opens
        self._probe_timeout = probe_timeout
        self.closures = 0

    def close_for(self, seconds: float) -> None:
        """Keep the gate closed for at least ``seconds`` from now (never shortens an earlier closure)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._open_at:
            self._open_at = until
            self.closures += 1
        self._probing, self._probe_out = True, False
        self._notify()

    def release(self) -> None:
        """An answer other than 429 arrived: the server accepts again, so open fully."""
        if self._probing:
            self._probing = False
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def is_open(self) -> bool:
        """Open, and not waiting for a probe's answer: ``wait`` would return at once (and 0.0)."""
        return not self._probing and self._open_at <= self._clock()

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
                await asyncio.wait_for(self._changed.wait(), self._probe_timeout)
            except TimeoutError:  # the probe never reported back (cancelled): do not hold everyone forever
                self.release()
        return self._clock() - start
