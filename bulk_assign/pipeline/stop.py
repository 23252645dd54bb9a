"""How a run stops early: a signal (exit 130), a deadline or maximum runtime, or the failure brake (exit 4).

All three go through ``Stop.request``. Stopping means: take no new devices (the feeder is cancelled and
the queue emptied), let the devices in flight finish for at most ``drain_seconds``, then cancel what is
left. Undecided devices get no record; they count as ``remaining`` and their journaled intent makes the
next ``--resume`` read them back first. A second request (a second signal) cancels at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .deadline import StopClock

log = logging.getLogger("bulk_assign")

DONE: Any = object()  # the end-of-work sentinel in the device queue: one per worker


class Stop:
    """The stop state of one run: whether it is stopping, why, and the drain timer."""

    def __init__(self, work: asyncio.Queue[Any], *, workers: int, drain_seconds: float) -> None:
        self._work = work
        self._workers = workers
        self._drain_seconds = drain_seconds
        self.stopping = False
        self.reason: str | None = None
        self.feeder: asyncio.Task[None] | None = None
        self.drain: asyncio.Timeout | None = None

    def request(self, reason: str, *, drain: float | None = None) -> None:
        """Take no new devices; give those in flight ``drain`` seconds (default ``drain_seconds``), then
        cancel them. Asking again cancels at once."""
        loop = asyncio.get_running_loop()
        drain = self._drain_seconds if drain is None else drain
        if self.stopping:
            drain = 0.0
        else:
            self.stopping = True
            self.reason = self.reason or reason
            log.warning("stopping (%s): no new devices; waiting up to %.0f s for those in flight", reason, drain)
            if self.feeder is not None:
                self.feeder.cancel()
            self._release_workers()
        if self.drain is not None:
            self.drain.reschedule(loop.time() + drain)

    def _release_workers(self) -> None:
        """Empty the queue (those devices were never started) and wake every worker with a sentinel."""
        while not self._work.empty():
            self._work.get_nowait()
        for _ in range(self._workers):
            self._work.put_nowait(DONE)

    async def watch(self, clock: StopClock) -> None:
        """Stop starting devices early enough that the ones in flight can finish before the limit."""
        # A poll, not a single timer: the wall clock (deadline) can jump, e.g. on a DST or NTP correction.
        while not clock.should_stop_starting(self._drain_seconds):  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        self.request(clock.reason or "deadline")
