"""A fake monotonic clock and sleep for tests of time-dependent logic: no test ever waits for real time."""

from __future__ import annotations

import asyncio


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Suspend (without real waiting), then let the clock reach this sleeper's deadline."""
        self.sleeps.append(seconds)
        deadline = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, deadline)
