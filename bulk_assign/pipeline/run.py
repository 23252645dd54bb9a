"""One ``engine.run()``: feeder -> bounded queue -> workers -> collector, and how it stops.

A run stops early in three ways, all through ``request_stop``: a signal (exit 130), a deadline or
maximum runtime, or the failure brake (exit 4). Stopping means: take no new devices, let the devices in
flight finish for at most ``drain_seconds``, then cancel what is left. Undecided devices get no record;
they count as ``remaining`` and their journaled intent makes the next ``--resume`` read them back first.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from random import Random
from typing import Any, Protocol

from ..auth import TokenProvider
from ..config import Settings
from ..errors import AuthenticationError, BulkAssignError, InternalError
from ..graph.operations import Operation
from ..graph.transport import Transport
from ..inputs.readers import Deduper, iter_ids
from ..models import DeviceResult, InputRow, SkipReason, Status, utc_now
from ..store.history import History
from ..store.reports import ResultSink, RunStats, Summary
from .batch import MAX_BATCH, BatchWorker, batch_size
from .brake import FailureBrake
from .deadline import StopClock
from .pacing import Pacer
from .retry import Sleep
from .verify import GraphVerifier, Verifier
from .worker import DeviceWorker, RunContext

log = logging.getLogger("bulk_assign")

DONE: Any = object()
IdSource = Iterable[str | InputRow] | AsyncIterable[str | InputRow]
EXIT_INTERRUPTED = 130
EXIT_STOPPED = 4


class Progress(Protocol):
    """What a run tells a progress display; the CLI picks a rich bar or plain log lines."""

    def update(self, stats: RunStats) -> None: ...

    def finish(self, summary: Summary) -> None: ...


@dataclass(frozen=True, slots=True)
class RunDeps:
    """Everything one run uses and does not own: the engine opens these, hands them in and closes them.

    Why a value and not the engine itself: the pipeline then never imports the engine, and a test can
    build a run from parts (an in-process transport, a fake clock) without an engine around it.
    """

    settings: Settings
    run_id: str
    transport: Transport | None
    tokens: TokenProvider | None
    pacer: Pacer
    read_pacer: Pacer
    operation: Operation
    sink: ResultSink
    verifier: Verifier | None = None
    progress: Progress | None = None
    sleep: Sleep = asyncio.sleep
    rng: Random | None = None


class Job:
    """The queues, counters, tasks and stop state of one run."""

    def __init__(self, deps: RunDeps, total: int | None, history: History | None) -> None:
        self.e = deps
        self.s = deps.settings
        self.run_id = deps.run_id
        self.history = history
        self.stats = RunStats(total_rows=total)
        self.started_at = utc_now()
        # Deep enough that a device's intent is on disk before a worker takes it: at ~10,000 devices/s, four
        # per worker cover the journal's 20 ms group commit. A crash leaves at most this many devices that
        # were journaled but never sent; --resume reads each back once.
        per_worker = MAX_BATCH * 2 if self.s.batch else 4
        self.work: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.s.concurrency * per_worker)
        self._out: asyncio.Queue[Any] | None = None
        self._flush_scheduled = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self.rows_seen = 0
        self.error: BulkAssignError | None = None
        self.stopped_reason: str | None = None
        self.summary: Summary | None = None
        self.brake = FailureBrake(self.s.max_failure_rate, self.s.failure_min_sample)
        self.clock = StopClock(self.s.deadline, self.s.max_runtime)
        self._feeder: asyncio.Task[None] | None = None
        self._drain: asyncio.Timeout | None = None
        self._stopping = False
        self.ctx = self._context() if not self.s.dry_run else None

    def _context(self) -> RunContext:
        e = self.e
        assert e.transport is not None and e.tokens is not None
        verifier: Verifier | None = e.verifier or GraphVerifier(
            transport=e.transport,
            graph_url=self.s.graph_url,
            target=self.s.target,
            tokens=e.tokens,
            pacer=e.read_pacer,
            timeout=self.s.request_timeout,
            on_request=self._count_verification,
        )
        return RunContext(
            settings=self.s,
            transport=e.transport,
            tokens=e.tokens,
            pacer=e.pacer,
            operation=e.operation,
            stats=self.stats,
            verifier=verifier,
            run_id=self.run_id,
            sleep=e.sleep,
            rng=e.rng or Random(),
            in_doubt=self.history.in_doubt if self.history else None,
        )

    def _count_verification(self) -> None:
        self.stats.verifications += 1

    # ------------------------------------------------------------------------------------------ stopping
    def request_stop(self, reason: str, *, drain: float | None = None) -> None:
        """Take no new devices; give those in flight ``drain`` seconds (default ``drain_seconds``), then
        cancel them. Asking again (a second signal) cancels at once."""
        loop = asyncio.get_running_loop()
        drain = self.s.drain_seconds if drain is None else drain
        if self._stopping:
            drain = 0.0
        else:
            self._stopping = True
            self.stopped_reason = self.stopped_reason or reason
            log.warning("stopping (%s): no new devices; waiting up to %.0f s for those in flight", reason, drain)
            if self._feeder is not None:
                self._feeder.cancel()
            self._release_workers()
        if self._drain is not None:
            self._drain.reschedule(loop.time() + drain)

    def _release_workers(self) -> None:
        """Empty the queue (those devices were never started) and wake every worker with a sentinel."""
        while not self.work.empty():
            self.work.get_nowait()
        for _ in range(self.s.concurrency):
            self.work.put_nowait(DONE)

    async def _watch_clock(self) -> None:
        """Stop starting devices early enough that the ones in flight can finish before the limit."""
        # A poll, not a single timer: the wall clock (deadline) can jump, e.g. on a DST or NTP correction.
        while not self.clock.should_stop_starting(self.s.drain_seconds):  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        self.request_stop(self.clock.reason or "deadline")

    # ------------------------------------------------------------------------------------------ the run
    async def execute(self, ids: IdSource, out: asyncio.Queue[Any] | None) -> None:
        """Run to the end; records go to ``out`` (the caller's ``async for``) when given."""
        sink = self.e.sink
        assert sink is not None
        self._out = out
        s = self.s
        log.info("run %s: target %s, rate %s, concurrency %d%s%s", self.run_id, s.target.describe(), s.rate,
                 s.concurrency, ", batched" if s.batch else "", " (dry run)" if s.dry_run else "")
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self._watch_clock()) if self.clock.limited else None
                await self._produce(ids, sink)
                if watcher is not None:
                    watcher.cancel()
        finally:
            if self._flush_timer is not None:  # the files close now: a late flush would hit closed files
                self._flush_timer.cancel()
                self._flush_timer = None
            self.summary = await sink.close(self._summarise())
            if self.e.progress is not None:
                self.e.progress.finish(self.summary)
        if out is not None:
            await out.put(DONE)

    async def _produce(self, ids: IdSource, sink: ResultSink) -> None:
        """Feeder and workers; a drain that runs out of time cancels them (their devices stay undecided)."""
        try:
            async with asyncio.timeout(None) as drain:
                self._drain = drain
                try:
                    async with asyncio.TaskGroup() as producers:
                        self._feeder = producers.create_task(self._feed(ids, sink))
                        if not self.s.dry_run:
                            work = self._work_batches if self.s.batch else self._work
                            for _ in range(self.s.concurrency):
                                producers.create_task(work(sink))
                except* AuthenticationError as group:
                    self.error = group.exceptions[0]  # type: ignore[assignment]
                    self.stopped_reason = "authentication"
                    log.error("run stopped: %s", self.error)
                except* Exception as group:  # a disk that fails, a bug: stop, keep the traceback in run.log
                    self._internal(group.exceptions[0])
        except TimeoutError:
            log.warning("stop: devices still in flight were cancelled; they count as remaining")
        finally:
            self._drain = None

    def _internal(self, exc: BaseException) -> None:
        """Record what stopped the run (exit 5, or the error's own code if it is one of ours)."""
        error = exc if isinstance(exc, BulkAssignError) else InternalError.wrap(exc)
        # the traceback for run.log; the terminal gets one line from the CLI (``run_log_only``)
        log.error("run stopped: %s", error, exc_info=exc, extra={"run_log_only": True})
        if self.error is None:
            self.error = error
        self.stopped_reason = self.stopped_reason or "error"

    async def _feed(self, ids: IdSource, sink: ResultSink) -> None:
        """Validate and de-duplicate rows; invalid, duplicate and already-done rows are decided here.

        A queued device's intent is journaled as it is queued, not when a worker takes it: the fsync then
        happens while earlier devices are on the wire instead of in front of every request (it halved
        throughput). The price: devices still queued when a run dies were never sent but are in doubt, so
        the next ``--resume`` reads each of them back once (at most the queue's length).
        """
        seen = Deduper()
        done_before = self.history.succeeded if self.history else None
        queued = 0
        limit = self.s.limit
        try:
            async for row in _rows(ids):
                self.rows_seen += 1
                if limit is not None and queued >= limit:
                    continue  # a canary: later rows stay undecided and count as remaining
                if row.device_id is None:
                    await self._decided(self._invalid(row))
                elif not seen.add(row.device_id):
                    await self._decided(self._simple(row, Status.SKIPPED, SkipReason.DUPLICATE))
                elif done_before is not None and row.device_id in done_before:
                    await self._decided(self._simple(row, Status.SKIPPED, SkipReason.ALREADY_SUCCEEDED))
                else:
                    queued += 1
                    if self.s.dry_run:
                        await self._decided(self._simple(row, Status.PLANNED))
                    else:
                        await self.work.put((row, sink.intent_nowait(row.device_id)))
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return
        for _ in range(self.s.concurrency if not self.s.dry_run else 0):
            await self.work.put(DONE)

    async def _work(self, sink: ResultSink) -> None:
        assert self.ctx is not None
        worker = DeviceWorker(self.ctx)
        while (item := await self.work.get()) is not DONE:
            row, durable = item
            await _durable(durable)  # the intent is on disk before the POST leaves
            await self._decided(await worker.process(row))

    async def _work_batches(self, sink: ResultSink) -> None:
        """Take up to 20 queued devices at a time and decide them together.

        A batch never waits for devices that are not there yet, with one exception: when the queue runs dry
        while the feeder is still reading, the feeder gets one turn to refill it first. The feeder hands
        the loop over every 256 rows; without that turn the workers split each 256 into twelve batches
        of 20 and one of 16, and a short batch left places in a throttled window that a whole batch could
        not use, which cost up to a window at the end of a job.
        """
        assert self.ctx is not None
        worker = BatchWorker(self.ctx)
        finished = False
        while not finished:
            rows: list[InputRow] = []
            durables: list[asyncio.Future[None] | None] = []
            # never more items than one window allows (the server would refuse the rest), sized so whole
            # batches fill the window
            size = batch_size(self.e.pacer.effective_rate.count)
            item = await self.work.get()
            refilled = False
            while item is not DONE:
                rows.append(item[0])
                durables.append(item[1])
                if len(rows) >= size:
                    break
                if self.work.empty():
                    if refilled or self._feeder is None or self._feeder.done():
                        break
                    refilled = True
                    await asyncio.sleep(0)
                    if self.work.empty():
                        break
                item = self.work.get_nowait()
            finished = item is DONE
            if rows:
                for durable in durables:  # every intent is on disk before the batch leaves
                    await _durable(durable)
                for result in await worker.process(rows):
                    await self._decided(result)

    # ---------------------------------------------------------------------------------------- collector
    async def _decided(self, result: DeviceResult) -> None:
        """The collector, called inline by whoever decided the record: count, write, watch the brake, hand on.

        Inline rather than a collector task behind a queue: on one event loop the writes are serialised
        anyway, and each queue hop costs a task switch per device (a real share of CPU at thousands of
        devices per second). Files are flushed at most every 50 ms; a record lost in a crash before that
        has its intent journaled, so the next --resume reads the device back instead of losing it.
        """
        sink = self.e.sink
        assert sink is not None
        self.stats.count(result)
        sink.outcome(result)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._flush_timer = asyncio.get_running_loop().call_later(0.05, self._flush, sink)
        if self.e.progress is not None:
            self.e.progress.update(self.stats)
        if result.status in (Status.SUCCEEDED, Status.FAILED) and self.brake.observe(
            result.status is Status.FAILED, result.error_code
        ) and not self._stopping:
            log.error("safety brake: %s", self.brake.describe())
            self.request_stop("failure-rate")
        if self._out is not None:
            await self._out.put(result)

    def _flush(self, sink: ResultSink) -> None:
        self._flush_scheduled = False
        self._flush_timer = None
        sink.flush()

    # ------------------------------------------------------------------------------------------ records
    def _simple(self, row: InputRow, status: Status, reason: SkipReason | None = None) -> DeviceResult:
        now = utc_now()
        return DeviceResult(device_id=row.device_id or "", status=status, skip_reason=reason, started_at=now,
                            finished_at=now, duration_ms=0, source_line=row.source_line, run_id=self.run_id)

    def _invalid(self, row: InputRow) -> DeviceResult:
        result = self._simple(row, Status.INVALID)
        result.device_id = row.raw
        result.error_code, result.error_message = row.error_code, row.error_message
        return result

    def _summarise(self) -> Summary:
        stats = self.stats
        elapsed = stats.elapsed()
        total = max(stats.total_rows or 0, self.rows_seen, stats.done)
        counts = {s.value: stats.statuses.get(s.value, 0) for s in Status}
        remaining = total - stats.done
        processed = counts["succeeded"] + counts["failed"]
        return Summary(
            run_id=self.run_id,
            started_at=self.started_at,
            finished_at=utc_now(),
            elapsed_seconds=round(elapsed, 3),
            total_rows=total,
            counts=counts,
            skipped_by_reason=dict(stats.skip_reasons),
            remaining=remaining,
            requests_sent=stats.requests_sent,
            throttled_429=stats.throttled,
            retries=stats.retries,
            verifications=stats.verifications,
            devices_per_minute=round(processed / elapsed * 60, 1) if elapsed > 0 else 0.0,
            effective_rate=str(self.e.pacer.effective_rate),
            stopped_reason=self.stopped_reason,
            stop_detail=self.brake.describe() if self.stopped_reason == "failure-rate"
            else str(self.error) if self.stopped_reason == "error" else None,
            exit_code=self._exit_code(counts, remaining),
            out_dir=str(self.s.out_dir) if self.s.out_dir else None,
            settings=self.s.public_dict(),
        )

    def _exit_code(self, counts: dict[str, int], remaining: int) -> int:
        """design.md's table: the first that applies wins."""
        if isinstance(self.error, AuthenticationError):
            return self.error.exit_code
        if self.stopped_reason == "interrupted":
            return EXIT_INTERRUPTED
        if self.error is not None:
            return self.error.exit_code
        if self.stopped_reason is not None and remaining:
            return EXIT_STOPPED
        return 1 if counts["failed"] or counts["invalid"] else 0


async def _durable(intent: asyncio.Future[None] | None) -> None:
    """Wait for a journaled intent; shielded, because the future is shared by the whole commit group."""
    if intent is not None:
        if not intent.done():
            await asyncio.shield(intent)
        intent.result()  # a failed journal write stops the run: nothing may be sent without its intent


async def _rows(ids: IdSource) -> AsyncIterator[InputRow]:
    """Any iterable or async iterable of ids or ``InputRow`` as rows (plain strings are normalised here)."""
    index = 0
    if isinstance(ids, AsyncIterable):
        async for item in ids:
            index += 1
            yield _as_row(item, index)
        return
    for item in ids:
        index += 1
        yield _as_row(item, index)
        if index % 256 == 0:
            await asyncio.sleep(0)  # a long synchronous source must not starve the workers


def _as_row(item: str | InputRow, index: int) -> InputRow:
    if isinstance(item, InputRow):
        return item
    row = next(iter(iter_ids([item])))
    row.source_line = index
    return row


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
