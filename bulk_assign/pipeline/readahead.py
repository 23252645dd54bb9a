"""Read-before-write (the seed call's default): each device's assignments are read ahead of its write.

Why a stage of its own and not a read at the start of each worker's turn: a worker that reads and then
writes sits idle on its own read while the write budget has room, so a run at the throttle floor
is read-bound whenever the writes could go faster than the workers can read and write in turn (a window's
burst, or Graph's real latency: eight workers at 0.5 s a read and 0.5 s a write send at most 8 writes a
second, Intune allows 5). Here ``concurrency`` readers take devices from the source's queue, read them
(one GET each, or 20 to a ``$batch`` with ``--batch``) under the read budget, and queue the devices that
still need their write for the writers, who never wait for a read in the usual case; the readers run
ahead while the writers wait for the write pacer.

What a read decides:
- the device already carries the target (``AssignmentTarget.matches``): it is decided here, ``skipped``
  ``already_assigned`` (or ``landed``, when an earlier run of this folder left it in doubt), with no write;
- it does not: queued for its write, which then needs no read of its own;
- the read could not tell (a 5xx, a timeout; 429s wait inside the verifier): queued as it was, so the
  writer reads it back first under the usual rules (the attempt counts, and no write goes without a read);
- the read was refused for good (a redirect, 400, 403): the device fails with that answer, unwritten.

How far ahead: the writers' queue (``Job.work``) is bounded, so the readers stop when it is full; a
device read long before its write could be assigned in between by someone else, and the bound keeps
that window to a few seconds of writes. A stop cancels the readers with the source (they are the
run's feeder): devices read but not written get no record and are read again by ``--resume``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .batch import MAX_BATCH
from .state import DeviceState
from .stop import DONE
from .worker import RunContext

Decided = Callable[[DeviceState], Awaitable[None]]


class ReadAhead:
    """Readers between the source's queue (``unread``) and the writers' (``ready``)."""

    def __init__(self, ctx: RunContext, *, unread: asyncio.Queue[Any], ready: asyncio.Queue[Any], workers: int,
                 batch: bool, decided: Decided) -> None:
        """``workers``: the readers, as many as there are writers (and sentinels the source sends)."""
        assert ctx.verifier is not None, "read-before-write needs a verifier"
        self._ctx = ctx
        self.unread = unread  # the source's queue
        self._ready = ready
        self._workers = workers
        self._batch = batch
        self._decided = decided
        self.reads = 0  # devices read here (a $batch of 20 is 20)
        self.skipped = 0  # devices decided here: they already carried the target

    async def run(self, feed: Coroutine[Any, Any, None]) -> None:
        """The source (``feed``, which ends with one sentinel per reader) and the readers; then one sentinel
        per writer. Cancelled (a stop), it leaves the writers' sentinels to ``Stop``."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed)
                for _ in range(self._workers):
                    group.create_task(self._reader())
        except BaseExceptionGroup as failed:  # the run handles a reader's error as a worker's: not nested
            raise _first(failed) from None
        for _ in range(self._workers):
            await self._ready.put(DONE)

    async def _reader(self) -> None:
        while True:
            states, finished = await self._take()
            if states:
                await self._read(states)
            if finished:
                return

    async def _take(self) -> tuple[list[DeviceState], bool]:
        """The next device (up to 20 with ``--batch``, never waiting for more than the queue holds, but
        giving the source one turn to refill it); True when the source's sentinel came."""
        item = await self.unread.get()
        if item is DONE:
            return [], True
        states = [item]
        if not self._batch:
            return states, False
        refilled = False
        while len(states) < MAX_BATCH:
            if self.unread.empty():
                if refilled:
                    break
                refilled = True
                await asyncio.sleep(0)
                continue
            item = self.unread.get_nowait()
            if item is DONE:
                return states, True
            states.append(item)
        return states, False

    async def _read(self, states: list[DeviceState]) -> None:
        ctx, verifier = self._ctx, self._ctx.verifier
        assert verifier is not None
        ctx.start(states)
        doubtful = [s for s in states if s.verify_next]
        if len(doubtful) > 1:
            found = await verifier.already_assigned_many([s.device_id for s in doubtful])
        elif doubtful:
            found = {doubtful[0].device_id: await verifier.already_assigned(doubtful[0].device_id)}
        else:
            found = {}
        self.reads += len(doubtful)
        for state in states:
            answer = found.get(state.device_id) if state.verify_next else None
            if answer is not None and ctx.verified(state, answer):  # already there: no write
                self.skipped += 1
                await self._decided(state)
            elif answer is None and state.verify_next and ctx.refused(state):  # a redirect, 400, 403: no write
                await self._decided(state)
            else:  # not there (verify_next is now False), or could not tell: the writer reads it back first
                await self._ready.put(state)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group, however deeply nested (``Job._produce`` looks at one, like a worker's)."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
