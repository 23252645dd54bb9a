"""One ``engine.run()``: source -> bounded queue -> workers -> collector, wired in one task group.

The stages are their own modules (``source``, ``worker``/``batch``, ``collector``, ``stop``); this one
builds them for a run from ``RunDeps``, runs them under structured concurrency and turns how the run
ended into its summary and exit code. A run stops early through ``Stop.request`` (signals, deadline,
brake): see ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from ..auth import TokenProvider
from ..auth.options import missing_permissions
from ..config import Settings
from ..errors import AuthenticationError, BulkAssignError, InternalError
from ..graph.operations import INTUNE_READ, AddToGroup, Operation, Precheck
from ..graph.transport import Transport
from ..models import InputRow, SkipReason, Status, utc_now
from ..store.history import History
from ..store.reports import ReportWriter, ResultSink, RunStats, Summary
from ..store.timeline import Timeline
from .batch import MAX_BATCH, BatchWorker, batch_size
from .brake import FailureBrake
from .collector import Collector, Progress
from .deadline import StopClock
from .listing import ListingReader
from .membership import GroupMembers, MembershipWorker
from .pacing import LimiterPacer, Pacer
from .preflight import CANARY, ProfileCanary
from .profile_group import ProfileToGroup, poster
from .readahead import ReadAhead
from .resolve import SerialResolver
from .retry import Sleep
from .source import IdSource, Source
from .state import DeviceState
from .stop import DONE, Stop
from .verify import GraphVerifier, Verifier
from .worker import DeviceWorker, RunContext

__all__ = ["DONE", "IdSource", "Job", "Progress", "RunDeps", "new_run_id"]

log = logging.getLogger("bulk_assign")

TICK = 1.0  # seconds between refreshes of the progress display
REBUILD_EVERY = 60.0  # seconds between rebuilds of report.html while a run goes on
EXIT_INTERRUPTED = 130
EXIT_STOPPED = 4
BEFORE_FOLDER = frozenset({SkipReason.ALREADY_TAGGED, SkipReason.ALREADY_MEMBER})  # state the listing shows


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
    opened: float | None = None
    """``time.monotonic()`` when the engine started (before the folder's history was loaded): the start of
    ``summary.json``'s ``elapsed_seconds``."""
    resolver: SerialResolver | None = None
    live_report: Callable[[Path, dict[str, Any]], object] | None = None
    """Rebuilds report.html from the folder and the summary so far (the engine's, with an output folder)."""
    input_note: str | None = None
    """What the reader detected in the input (``InputPlan.describe``), for summary.json."""
    directory_reads: Pacer | None = None
    """Entra's read budget (``--directory-read-rate``): the group's members and the device lookups."""


class Job:
    """One run: its queue, counters, stages and how it ended."""

    def __init__(self, deps: RunDeps, total: int | None, history: History | None) -> None:
        self.e = deps
        self.s = deps.settings
        self.run_id = deps.run_id
        self.history = history
        self.stats = RunStats(total_rows=total)
        self.started_at = utc_now()
        # Deep enough that a device's intent is on disk before a worker takes it: four per worker cover
        # the journal's 20 ms group commit at thousands of devices per second. A crash leaves at most this
        # many devices that were journaled but never sent; --resume reads each back once.
        per_worker = MAX_BATCH * 2 if self.s.batch or deps.operation.grouped else 4
        self.work: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.s.concurrency * per_worker)
        self.error: BulkAssignError | None = None
        self.summary: Summary | None = None
        self.brake = FailureBrake(self.s.max_failure_rate, self.s.failure_min_sample)
        self.clock = StopClock(self.s.deadline, self.s.max_runtime)
        self.stop = Stop(self.work, workers=self.s.concurrency, drain_seconds=self.s.drain_seconds)
        self.collector: Collector | None = None
        self.source: Source | None = None
        self.readahead: ReadAhead | None = None
        self.ctx = self._context() if self.s.writes else None
        self.canary = self._canary()
        self.profile_step: ProfileToGroup | None = None
        self.members: GroupMembers | None = None
        self._objects: dict[str, str] = {}  # --add-to-group: Entra deviceId -> object id, shared by the workers
        # Entra's read budget: one limiter for the member listing and every worker's device lookups
        self._directory_reads = deps.directory_reads or LimiterPacer(self.s.directory_read_rate)

    def _context(self) -> RunContext:
        e = self.e
        assert e.transport is not None and e.tokens is not None
        verifier: Verifier | None = e.verifier or (GraphVerifier(
            transport=e.transport,
            graph_url=self.s.graph_url,
            target=self.s.target,
            tokens=e.tokens,
            pacer=e.read_pacer,
            timeout=self.s.request_timeout,
            on_request=self._count_verification,
            on_throttle=self._count_read_throttles,
            on_retry=self._count_read_retry,
            max_wait=self.s.max_retry_after,
            max_throttle_wait=self.s.max_throttle_wait,
            sleep=e.sleep,
        ) if self.s.target is not None and not e.operation.idempotent else None)  # idempotent: resent, not read
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

    def _canary(self) -> ProfileCanary | None:
        """The seed call's preflight (``preflight.py``): online runs and plans, not dry runs."""
        e = self.e
        if self.s.dry_run or not self.s.preflight or self.s.target is None or e.operation.name != "assign-profile" or \
                e.transport is None or e.tokens is None:
            return None
        # Its own limiter, whose burst is the canary: the 20 reads go at once instead of at the read budget's
        # steady 25/s, which held the first writes back 0.8 s (a 300-device throttled run took 1.48x its
        # floor). 20 reads once, at the start, stay far inside Intune's 1,000 requests per 20 s.
        burst = LimiterPacer(self.s.read_rate, burst=CANARY)
        reader = ListingReader(self.s, transport=e.transport, tokens=e.tokens, pacer=burst, sleep=e.sleep)
        return ProfileCanary(reader.get, self.s.graph_url)

    def _count_verification(self) -> None:
        self.stats.verifications += 1

    def _count_read_throttles(self, count: int) -> None:
        self.stats.throttled += count  # summary.json's throttled_429 counts every 429 received, reads too

    def _count_read_retry(self) -> None:
        self.stats.retries += 1

    @property
    def stopped_reason(self) -> str | None:
        return self.stop.reason

    def request_stop(self, reason: str, *, drain: float | None = None) -> None:
        """Take no new devices and drain (signals, deadlines); a second call cancels what is in flight."""
        self.stop.request(reason, drain=drain)

    def _brake(self) -> None:
        if not self.stop.stopping:
            log.error("safety brake: %s", self.brake.describe())
            self.stop.request("failure-rate")

    # ------------------------------------------------------------------------------------------ the run
    async def execute(self, ids: IdSource, out: asyncio.Queue[Any] | None) -> None:
        """Run to the end; records go to ``out`` (the caller's ``async for``) when given."""
        s, sink = self.s, self.e.sink
        collector = self.collector = Collector(run_id=self.run_id, sink=sink, stats=self.stats, brake=self.brake,
                                               progress=self.e.progress, on_brake=self._brake, out=out,
                                               timeline=self._timeline(sink))
        self.readahead = self._read_ahead(collector)
        work = self.readahead.unread if self.readahead is not None else self.work
        self.source = Source(s, work=work, collector=collector, sink=sink, history=self.history,
                             stop=self.stop, resolver=self.e.resolver, canary=self.canary,
                             plan=self.e.resolver.plan if self.e.resolver is not None else None,
                             precheck=self._precheck
                             if self.e.resolver is not None and self.e.operation.needs_inventory else None)
        what = s.target.describe() if s.target is not None else self.e.operation.name
        rate = s.directory_rate if self.e.operation.budget == "directory" else s.rate
        log.info("run %s: target %s, rate %s, concurrency %d%s%s", self.run_id, what, rate,
                 s.concurrency, ", batched" if s.batch else "",
                 " (dry run)" if s.dry_run else " (plan: reads only)" if s.plan else "")
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self.stop.watch(self.clock)) if self.clock.limited else None
                ticks = self.e.progress is not None or self.e.live_report is not None
                ticker = tg.create_task(self._tick()) if ticks else None
                await self._produce(ids, self.source)
                for task in (watcher, ticker):
                    if task is not None:
                        task.cancel()
        finally:
            self.summary = await collector.close(self._summarise())
        if out is not None:
            await out.put(DONE)

    async def _precheck(self, row: InputRow) -> Precheck:
        """The operation's decision from the listing, with one correction only the folder can make: a device
        this folder may have changed already (journaled, no decision: the run before was killed) that now
        carries the change is this folder's own write that landed (``landed``, which undo reverses), not
        state from before the folder (``already_tagged``/``already_member``, which undo leaves alone)."""
        assert self.e.resolver is not None
        check = await self.e.resolver.precheck(row)
        doubt = self.history.in_doubt if self.history is not None else None
        if check.skip in BEFORE_FOLDER and doubt is not None and row.device_id is not None and \
                row.device_id in doubt:
            return Precheck(skip=SkipReason.LANDED)
        return check

    def _read_ahead(self, collector: Collector) -> ReadAhead | None:
        """Read-before-write (the seed call's default, ``readahead.py``): readers between the source's queue
        and the writers' (``self.work``, which ``Stop`` empties), so the reads run ahead of the writes."""
        ctx = self.ctx
        if ctx is None or ctx.verifier is None or not self.s.read_before_write:
            return None
        hint = self.e.operation.failure_hint

        async def decided(state: DeviceState) -> None:
            await collector.decided(state.record(self.run_id, hint))

        return ReadAhead(ctx, unread=asyncio.Queue(maxsize=self.work.maxsize), ready=self.work,
                         workers=self.s.concurrency, batch=self.s.batch, decided=decided)

    def _timeline(self, sink: ResultSink) -> Timeline | None:
        """timeline.jsonl in the output folder: only a ``ReportWriter`` has one (``NullSink`` has none)."""
        if not isinstance(sink, ReportWriter):
            return None
        stats, pacer = self.stats, self.e.pacer
        return Timeline(sink.out_dir, self.run_id, statuses=stats.statuses, throttled=lambda: stats.throttled,
                        rate=lambda: str(pacer.effective_rate))

    async def _tick(self) -> None:
        """Refresh the display every second, not only when a record arrives: a run that waits (a 429's
        pause, a slow answer) must not look hung, on a terminal or in a cron log; and rebuild report.html
        about once a minute (``live_report``), so the page is never more than a minute stale. Real time
        on purpose: it only shows what the counters say and decides nothing."""
        progress, live = self.e.progress, self.e.live_report
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            if progress is not None:
                progress.update(self.stats)
            if live is not None and self.s.out_dir is not None and time.monotonic() - last >= REBUILD_EVERY:
                last = time.monotonic()
                summary = {**self._summarise().model_dump(), "live": True}
                await asyncio.to_thread(live, self.s.out_dir, summary)  # rendering must not stall the sends

    async def _produce(self, ids: IdSource, source: Source) -> None:
        """Source and workers; a drain that runs out of time cancels them (their devices stay undecided)."""
        stop = self.stop
        try:
            await self._check_permissions()
            await self._membership()
            await self._profile_to_group()
        except AuthenticationError as exc:
            self.error, stop.reason = exc, "authentication"
            log.error("run stopped before any request: %s", exc)
            return
        except BulkAssignError as exc:  # a missing group or profile (exit 2), an assignment that failed (exit 4)
            self.error, stop.reason = exc, "preflight"
            log.error("run stopped before any device was written: %s", exc)
            return
        try:
            async with asyncio.timeout(None) as drain:
                stop.drain = drain
                try:
                    async with asyncio.TaskGroup() as producers:
                        feed = source.feed(ids)
                        stop.feeder = producers.create_task(feed if self.readahead is None
                                                            else self.readahead.run(feed))
                        if self.s.writes:
                            work = self._work_batches if self.s.batch or self.e.operation.grouped else self._work
                            for _ in range(self.s.concurrency):
                                producers.create_task(work())
                except* AuthenticationError as group:
                    self.error = group.exceptions[0]  # type: ignore[assignment]
                    stop.reason = "authentication"
                    log.error("run stopped: %s", self.error)
                except* Exception as group:  # a disk that fails, a bug: stop, keep the traceback in run.log
                    self._internal(group.exceptions[0])
        except TimeoutError:
            log.warning("stop: devices still in flight were cancelled; they count as remaining")
        finally:
            stop.drain = None

    async def _check_permissions(self) -> None:
        """Preflight: the token's ``scp``/``roles`` hold what the operation needs (exit 3 naming what is
        missing), before the listing or any write. A token that does not say (not a JWT) is not checked."""
        e = self.e
        if e.tokens is None or self.s.dry_run:
            return
        needed = (INTUNE_READ,) if self.s.plan else e.operation.permissions
        missing = missing_permissions(await e.tokens.get_token(), needed)
        if missing is None:
            log.info("preflight: the token does not list its permissions (not a JWT): not checked")
        elif missing:
            raise AuthenticationError(f"the token lacks {', '.join(missing)} (its scp/roles claims): grant it to the "
                                      "app and admin-consent, then sign in again; nothing was sent")

    async def _profile_to_group(self) -> None:
        """``--group`` (and ``--profile``): the group checked, the profile assigned to it once
        (``profile_group.py``), before any device is written. A plan reads and reports, writing nothing."""
        e, s = self.e, self.s
        group = s.group or s.add_to_group
        if group is None or s.dry_run or e.transport is None or e.tokens is None:
            return
        if s.add_to_group is not None and s.profile is None:
            return  # the group was checked with its members (``_membership``)
        reader = ListingReader(s, transport=e.transport, tokens=e.tokens, pacer=e.read_pacer, sleep=e.sleep)
        # Intune's write budget for the profile assignment, whatever paces the devices' writes
        intune = LimiterPacer(s.rate) if e.operation.budget != "intune" else e.pacer
        step = ProfileToGroup(s.graph_url, s.profile or "", group, s.group_tag, get=reader.get,
                              post=poster(e.transport, e.tokens, s.request_timeout, lambda: intune.acquire(1)),
                              attempts=s.max_attempts, out_dir=s.out_dir)
        self.profile_step = step
        if s.add_to_group is None:
            await step.check_group()
        if s.profile is not None and s.writes:
            await step.ensure()
        elif s.profile is not None:
            step.info = {"profile": s.profile, "group": s.group, "planned": True}

    async def _membership(self) -> None:
        """``--add-to-group`` (and its undo): the group checked, and its members read once, before the listing
        and any write, so every row's precheck knows who is in it already (``membership.py``)."""
        e, s, op = self.e, self.s, self.e.operation
        if not isinstance(op, AddToGroup) or s.dry_run or e.transport is None or e.tokens is None:
            return
        reader = ListingReader(s, transport=e.transport, tokens=e.tokens, pacer=self._directory_reads, sleep=e.sleep)
        self.members = GroupMembers(s.graph_url, op.group, get=reader.get)
        await self.members.check()
        op.members = await self.members.read()
        self._objects.update(op.members.items())

    def _internal(self, exc: BaseException) -> None:
        """Record what stopped the run (exit 5, or the error's own code if it is one of ours)."""
        if isinstance(exc, BulkAssignError):  # one of ours (a certificate that did not verify): its message says all
            error: BulkAssignError = exc
            log.error("run stopped: %s", error)
        else:  # the traceback for run.log; the terminal gets one line from the CLI (``run_log_only``)
            error = InternalError.wrap(exc)
            log.error("run stopped: %s", error, exc_info=exc, extra={"run_log_only": True})
        if self.error is None:
            self.error = error
        self.stop.reason = self.stop.reason or "error"

    async def _work(self) -> None:
        assert self.ctx is not None and self.collector is not None
        worker, collector = DeviceWorker(self.ctx), self.collector
        while (state := await self.work.get()) is not DONE:
            await _durable(state.intent)  # the intent is on disk before the POST leaves
            await worker.process(state)
            await collector.decided(state.record(self.run_id, self.e.operation.failure_hint))

    async def _work_batches(self) -> None:
        """Take up to 20 queued devices at a time and decide them together.

        A batch never waits for devices that are not there yet, with one exception: when the queue runs dry
        while the source is still reading, the source gets one turn to refill it first. The source hands
        the loop over every 256 rows; without that turn the workers would split each 256 into twelve
        batches of 20 and one of 16, and a short batch leaves places in a throttled window that a whole
        batch could not use.
        """
        assert self.ctx is not None and self.collector is not None
        worker: BatchWorker | MembershipWorker = BatchWorker(self.ctx)
        if self.e.operation.grouped:
            worker = MembershipWorker(self.ctx, reads=self._directory_reads, objects=self._objects)
        collector = self.collector
        finished = False
        while not finished:
            states: list[DeviceState] = []
            # never more items than one window allows (the server would refuse the rest), sized so whole
            # batches fill the window
            # (a members PATCH is one write whatever it carries: always 20)
            size = MAX_BATCH if self.e.operation.grouped else batch_size(self.e.pacer.effective_rate.count)
            item = await self.work.get()
            refilled = False
            while item is not DONE:
                states.append(item)
                if len(states) >= size:
                    break
                if self.work.empty():
                    feeder = self.stop.feeder
                    if refilled or feeder is None or feeder.done():
                        break
                    refilled = True
                    await asyncio.sleep(0)
                    if self.work.empty():
                        break
                item = self.work.get_nowait()
            finished = item is DONE
            if states:
                for state in states:  # every intent is on disk before the batch leaves
                    await _durable(state.intent)
                await worker.process(states)
                for state in states:
                    await collector.decided(state.record(self.run_id, self.e.operation.failure_hint))

    # ------------------------------------------------------------------------------------------ the end
    def _summarise(self) -> Summary:
        stats = self.stats
        elapsed = stats.elapsed()  # the sending part: source, workers, collector
        opened = self.e.opened if self.e.opened is not None else stats.started
        rows_seen = self.source.rows_seen if self.source is not None else 0
        total = max(stats.total_rows or 0, rows_seen, stats.done)
        counts = {s.value: stats.statuses.get(s.value, 0) for s in Status}
        remaining = total - stats.done
        processed = counts["succeeded"] + counts["failed"]
        return Summary(
            run_id=self.run_id,
            started_at=self.started_at,
            finished_at=utc_now(),
            # the sink adds the time it takes to close (the merge, the index): see ReportWriter.close
            elapsed_seconds=round(time.monotonic() - opened, 3),
            sending_seconds=round(elapsed, 3),
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
            input=self.e.input_note,
            inventory=self.e.resolver.info if self.e.resolver is not None else None,
            preflight=self.canary.info if self.canary is not None else None,
            profile_assignment=self.profile_step.info if self.profile_step is not None else None,
            membership=self.members.info if self.members is not None else None,
        )

    def _exit_code(self, counts: dict[str, int], remaining: int) -> int:
        """The exit-code table (docs/architecture.md): the first that applies wins."""
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


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
