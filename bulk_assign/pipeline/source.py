"""The source: input rows -> the bounded device queue, deciding on the spot what needs no request.

Invalid rows, duplicates and (in a dry run) every valid device are decided here and go straight to the
collector. Devices an earlier run of the folder already succeeded with are only counted
(``Collector.already_done``): a scheduled job resumes the same folder night after night, and a record
per done device per night would make every resume cost the folder's history instead of the work left.
They are checked before de-duplication, so they never enter this run's ``seen`` set either: a resume's
memory grows with the devices it still has to decide. A scanned file (``InputRows``) is asked to leave them
out itself, so that no row is even built for them. The rest are queued as
``DeviceState``s, each with its intent journaled as it is queued rather than when a worker takes it: the
fsync then happens while earlier devices are on the wire instead of in front of every request. The
price: devices still queued when a run dies were never sent but are in doubt, so the next ``--resume``
reads each of them back once (at most the queue's length).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from ..config import Settings
from ..graph.operations import WRITE, Precheck
from ..inputs.keys import key_of
from ..inputs.readers import Deduper, InputRows, iter_ids
from ..inputs.serials import NOT_RESOLVED
from ..models import DeviceResult, InputRow, SkipReason, Status
from ..store.history import History
from ..store.reports import ResultSink
from .collector import Collector
from .preflight import CANARY, ProfileCanary
from .state import DeviceState
from .stop import DONE, Stop

IdSource = Iterable[str | InputRow] | AsyncIterable[str | InputRow]
Resolver = Callable[[InputRow], Awaitable[InputRow]]
Planner = Callable[[InputRow, DeviceResult], Awaitable[DeviceResult]]
Prechecker = Callable[[InputRow], Awaitable[Precheck]]
BATCH = 256  # rows of a synchronous source read between two turns of the event loop


class Source:
    """Feeds one run's queue from ``ids``; ``rows_seen`` counts every row read (for ``remaining``)."""

    def __init__(self, settings: Settings, *, work: asyncio.Queue[Any], collector: Collector, sink: ResultSink,
                 history: History | None, stop: Stop, resolver: Resolver | None = None,
                 plan: Planner | None = None, precheck: Prechecker | None = None,
                 canary: ProfileCanary | None = None) -> None:
        self._s = settings
        self._work = work
        self._collector = collector
        self._sink = sink
        self._history = history
        self._stop = stop
        self._resolve = resolver
        self._plan = plan
        self._precheck = precheck
        self._canary = canary
        self._held: list[DeviceState] = []  # the canary's devices wait for its reads before they are queued
        self._canary_ids: list[str] = []
        self.rows_seen = 0

    async def feed(self, ids: IdSource) -> None:
        """Read every row; decide or queue it; then one end-of-work sentinel per worker."""
        s, collector, work = self._s, self._collector, self._work
        seen = Deduper()
        done_before = self._history.succeeded if self._history else None
        queued = done_uncounted = 0
        limit = s.limit
        # not for a caller that takes a record per row, nor with --limit (rows past it are remaining, done or not)
        skip = done_before if done_before is not None and not collector.hands_on and limit is None else None
        # looked up once, not per row: settings are a pydantic model and ``writes`` a property
        writes, planner, resolve, precheck, add = s.writes, self._plan if s.plan else None, self._resolve, \
            self._precheck, seen.add_key
        done = done_before.has_key if done_before is not None else None
        canary = self._canary
        try:
            async for rows in _batches(ids, serials=s.id_type == "serial", skip=skip):
                self.rows_seen += len(rows)
                if done_uncounted >= 1024:  # counted in bulk: the progress display stays current
                    collector.count_done(done_uncounted)
                    done_uncounted = 0
                for row in rows:
                    if row is None:  # left out by the reader: done in an earlier run
                        done_uncounted += 1
                        continue
                    if limit is not None and queued >= limit:
                        continue  # a canary: later rows stay undecided and count as remaining
                    if (device := row.device_id) is None:
                        if row.serial is not None and row.error_code is None and resolve is not None:
                            row = await resolve(row)  # a serial: its id from the tenant's listing
                            device = row.device_id
                        if device is None:
                            await collector.decided(collector.invalid(row) if row.error_code != NOT_RESOLVED
                                                    else collector.unresolved(row))
                            continue
                    key = row.key or key_of(device)  # the readers make it; a resolved serial has none
                    if key is None:
                        raise ValueError(f"{device!r} is not a GUID")
                    if done is not None and done(key):
                        if collector.hands_on:
                            await collector.already_done(row)
                        else:
                            done_uncounted += 1
                    elif not add(key):
                        await collector.decided(collector.simple(row, Status.SKIPPED, SkipReason.DUPLICATE))
                    elif row.skip is not None:  # decided by whoever made the row (undo), with no request
                        decided = Precheck(row.skip, error_message=row.error_message)
                        await collector.decided(collector.prechecked(row, decided))
                    elif precheck is not None and (check := await precheck(row)) is not WRITE:
                        await collector.decided(collector.prechecked(row, check))  # no write: already there, or cannot
                    else:
                        queued += 1
                        if canary is not None and len(self._canary_ids) < CANARY:
                            self._canary_ids.append(device)
                        if planner is not None:
                            await collector.decided(await planner(row, collector.simple(row, Status.PLANNED)))
                            if len(self._canary_ids) == CANARY:
                                await self._read_canary()
                        elif not writes:
                            if row.serial is not None or not collector.planned(row):
                                await collector.decided(collector.simple(row, Status.PLANNED))
                        else:
                            intent = self._sink.intent_nowait(device, row.previous, row.value)
                            state = DeviceState.queued(row, intent)
                            if canary is None or canary.info is not None:
                                await work.put(state)
                                continue
                            self._held.append(state)
                            if len(self._held) == CANARY:
                                await self._read_canary()
        except asyncio.CancelledError:
            if not self._stop.stopping:
                raise
            return
        finally:
            collector.count_done(done_uncounted)
            collector.settle()  # the planned rows it holds are counted before the run's summary is made
        await self._read_canary()
        for _ in range(s.concurrency if writes else 0):
            await work.put(DONE)


    async def _read_canary(self) -> None:
        """Read the canary's profiles (once), then queue the devices that waited for it."""
        if self._canary is not None and self._canary.info is None and self._canary_ids:
            await self._canary.read(self._canary_ids)
        held, self._held = self._held, []
        for state in held:
            await self._work.put(state)


async def _batches(ids: IdSource, *, serials: bool = False,
                   skip: Deduper | None = None) -> AsyncIterator[Sequence[InputRow | None]]:
    """Any iterable or async iterable of ids or ``InputRow`` as rows (plain strings are normalised here;
    with ``serials`` they are serial numbers), a batch at a time.

    A synchronous source comes ``BATCH`` rows at a time, and the loop gets a turn between batches: a long
    file must not starve the workers, and a turn per row cost more than a planned row itself. An
    asynchronous one comes a row at a time (its next row may be slow to come). With ``skip``, a scanned
    file leaves out the rows of those devices, as None (``InputRows.skipping``).
    """
    if isinstance(ids, AsyncIterable):
        index = 0
        async for item in ids:
            index += 1
            yield (_as_row(item, index, serials),)
        return
    rows: Iterator[InputRow | None]
    if isinstance(ids, InputRows):
        rows = ids.skipping(skip) if skip is not None else iter(ids)
    else:
        rows = (_as_row(item, index, serials) for index, item in enumerate(ids, 1))
    while batch := list(islice(rows, BATCH)):
        yield batch
        await asyncio.sleep(0)


def _as_row(item: str | InputRow, index: int, serials: bool = False) -> InputRow:
    if isinstance(item, InputRow):
        return item
    if serials and isinstance(item, str) and item.strip():
        return InputRow(index, None, item[:200], serial=item.strip())
    row = next(iter(iter_ids([item])))
    row.source_line = index
    return row
