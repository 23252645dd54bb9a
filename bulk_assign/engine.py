"""The engine: rows -> bounded queue -> paced workers with retries -> one collector -> caller and reports.

``BulkAssigner`` owns every resource (HTTP session, tasks, report files) in one ``async with``; a run's
tasks live in a task group that the ``async with`` owns, not the generator, so a caller that breaks out of
``engine.run()`` or is cancelled leaves no running task and no open session behind.

A device failing is a value (a ``DeviceResult``), never an exception. Only what must stop the whole run
raises: authentication lost (``AuthenticationError``), or a programming error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import urllib.request
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sized
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import aiohttp

from .auth import StaticTokenProvider, TokenProvider
from .batching import MAX_BATCH, BatchWorker
from .config import Settings, is_loopback
from .errors import AuthenticationError, BulkAssignError, UsageError
from .graph import AssignProfile, Operation
from .models import DeviceResult, InputRow, SkipReason, Status
from .pacing import LimiterPacer, Pacer, WindowPacer
from .readers import Deduper, iter_ids
from .reports import NullSink, ReportWriter, ResultSink, RunStats, Summary, utc_now
from .retry import Sleep
from .verify import GraphVerifier, Verifier
from .worker import DeviceWorker, RunContext

log = logging.getLogger("bulk_assign")

_DONE: Any = object()
IdSource = Iterable[str | InputRow] | AsyncIterable[str | InputRow]


class Progress(Protocol):
    """What the engine tells a progress display; the CLI picks a rich bar or plain log lines."""

    def update(self, stats: RunStats) -> None: ...

    def finish(self, summary: Summary) -> None: ...


class BulkAssigner:
    """Assign one target to many devices. Use as ``async with BulkAssigner(settings) as engine``.

    Pass ``session`` to reuse your own ``aiohttp.ClientSession`` (the engine does not close it) and
    ``token_provider`` for your own tokens; otherwise ``BULK_ASSIGN_ACCESS_TOKEN``-style static tokens must
    be given by the caller (the CLI builds MSAL providers).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        token_provider: TokenProvider | str | None = None,
        session: aiohttp.ClientSession | None = None,
        pacer: Pacer | None = None,
        read_pacer: Pacer | None = None,
        sink: ResultSink | None = None,
        verifier: Verifier | None = None,
        operation: Operation | None = None,
        progress: Progress | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        if isinstance(token_provider, str):
            token_provider = StaticTokenProvider(token_provider, source="the token_provider argument")
        self._tokens = token_provider
        self._own_session = session is None
        self._session = session
        self.pacer: Pacer = pacer or WindowPacer(settings.rate, sleep=sleep)
        self._read_pacer: Pacer = read_pacer or LimiterPacer(settings.read_rate)
        self._sink = sink
        self._verifier = verifier
        self.operation: Operation = operation or AssignProfile(settings.target)
        self._progress = progress
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "new"
        self.summary: Summary | None = None
        self.stats = RunStats()

    # ----------------------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a BulkAssigner can be entered once")
        self._state = "open"
        if not self.settings.dry_run:
            if self._tokens is None:
                raise UsageError("no token provider: pass token_provider=... or set BULK_ASSIGN_ACCESS_TOKEN")
            if self._session is None:
                self._session = open_session(self.settings)
        if self._sink is None:
            self._sink = ReportWriter(self.settings.out_dir) if self.settings.out_dir else NullSink()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cancel_runs()
        if self._own_session and self._session is not None:
            await self._session.close()
        self._state = "closed"

    async def _cancel_runs(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ----------------------------------------------------------------------------------------------- run
    async def run(self, ids: IdSource, *, total: int | None = None) -> AsyncIterator[DeviceResult]:
        """Yield one record per input row as devices are decided; raises ``AuthenticationError`` when the
        run had to stop for lack of a token (records already yielded stand; the rest count as remaining)."""
        if self._state != "open":
            raise RuntimeError("use `async with BulkAssigner(...) as engine:` before engine.run()")
        if total is None and isinstance(ids, Sized):
            total = len(ids)
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(64, self.settings.concurrency * 4))
        job = _Job(self, total)
        task = asyncio.get_running_loop().create_task(job.execute(ids, out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            while True:
                item = await out.get()
                if item is _DONE:
                    break
                yield item
        finally:
            if not task.done():
                task.cancel()
        await task
        self.summary = job.summary
        if job.error is not None:
            raise job.error


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """One shared session: the environment's proxy for Graph, and a private CA via ``--ca-bundle``.

    The proxy (``HTTPS_PROXY``/``NO_PROXY``) is looked up once here instead of with ``trust_env=True``:
    aiohttp then resolves proxy and netrc in a worker thread on *every* request, which halved throughput.
    """
    ssl_context: ssl.SSLContext | bool = True
    if settings.ca_bundle is not None:
        ssl_context = ssl.create_default_context(cafile=str(settings.ca_bundle))
    connector = aiohttp.TCPConnector(limit=settings.concurrency + 4, ssl=ssl_context, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        proxy=env_proxy(settings.graph_url),
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout),
        headers={"User-Agent": "bulk-assign/0.1"},
    )


def env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``; ``NO_PROXY`` honoured)."""
    parts = urlsplit(url)
    if not parts.hostname or is_loopback(parts.hostname) or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _Job:
    """One ``engine.run()``: its queues, counters and tasks."""

    def __init__(self, engine: BulkAssigner, total: int | None) -> None:
        self.e = engine
        self.s = engine.settings
        self.run_id = self.s.run_id or uuid.uuid4().hex[:12]
        self.stats = engine.stats = RunStats(total_rows=total)
        self.started_at = utc_now()
        per_worker = MAX_BATCH if self.s.batch else 1
        self.work: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.s.concurrency * per_worker * 2)
        self.results: asyncio.Queue[Any] = asyncio.Queue(maxsize=1024)
        self.rows_seen = 0
        self.error: BulkAssignError | None = None
        self.stopped_reason: str | None = None
        self.summary: Summary | None = None
        self.verifier = engine._verifier
        if self.verifier is None and self.s.verify and not self.s.dry_run:
            assert engine._session is not None and engine._tokens is not None
            self.verifier = GraphVerifier(
                session=engine._session,
                graph_url=self.s.graph_url,
                target=self.s.target,
                tokens=engine._tokens,
                pacer=engine._read_pacer,
                timeout=self.s.request_timeout,
                on_request=self._count_verification,
            )

        self.ctx: RunContext | None = None
        if not self.s.dry_run:
            assert engine._session is not None and engine._tokens is not None
            self.ctx = RunContext(
                settings=self.s,
                session=engine._session,
                tokens=engine._tokens,
                pacer=engine.pacer,
                operation=engine.operation,
                stats=self.stats,
                verifier=self.verifier,
                run_id=self.run_id,
                sleep=engine._sleep,
                rng=engine._rng,
            )

    def _count_verification(self) -> None:
        self.stats.verifications += 1

    async def execute(self, ids: IdSource, out: asyncio.Queue[Any]) -> None:
        sink = self.e._sink
        assert sink is not None
        log.info("run %s: target %s, rate %s, concurrency %d%s", self.run_id, self.s.target.describe(),
                 self.s.rate, self.s.concurrency, " (dry run)" if self.s.dry_run else "")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._collect(out, sink))
                try:
                    async with asyncio.TaskGroup() as producers:
                        producers.create_task(self._feed(ids))
                        if not self.s.dry_run:
                            work = self._work_batches if self.s.batch else self._work
                            for _ in range(self.s.concurrency):
                                producers.create_task(work(sink))
                except* AuthenticationError as group:
                    self.error = group.exceptions[0]  # type: ignore[assignment]
                    self.stopped_reason = "authentication"
                    log.error("run stopped: %s", self.error)
                await self.results.put(_DONE)
        finally:
            self.summary = self._summarise()
            sink.flush()
            sink.close(self.summary)
            if self.e._progress is not None:
                self.e._progress.finish(self.summary)
        await out.put(_DONE)

    # ------------------------------------------------------------------------------------------ feeder
    async def _feed(self, ids: IdSource) -> None:
        """Validate and de-duplicate rows; invalid and duplicate rows are decided here, the rest queued."""
        seen = Deduper()
        queued = 0
        limit = self.s.limit
        async for row in _rows(ids):
            self.rows_seen += 1
            if limit is not None and queued >= limit:
                continue  # a canary: later rows stay undecided and count as remaining
            if row.device_id is None:
                await self.results.put(self._invalid(row))
            elif not seen.add(row.device_id):
                await self.results.put(self._simple(row, Status.SKIPPED, SkipReason.DUPLICATE))
            else:
                queued += 1
                if self.s.dry_run:
                    await self.results.put(self._simple(row, Status.PLANNED))
                else:
                    await self.work.put(row)
        for _ in range(self.s.concurrency if not self.s.dry_run else 0):
            await self.work.put(_DONE)

    # ------------------------------------------------------------------------------------------ workers
    async def _work(self, sink: ResultSink) -> None:
        assert self.ctx is not None
        worker = DeviceWorker(self.ctx)
        while (row := await self.work.get()) is not _DONE:
            await sink.intent(row.device_id)
            await self.results.put(await worker.process(row))

    async def _work_batches(self, sink: ResultSink) -> None:
        """Take up to 20 queued devices at a time (never waiting to fill a batch) and decide them together."""
        assert self.ctx is not None
        worker = BatchWorker(self.ctx)
        finished = False
        while not finished:
            rows: list[InputRow] = []
            item = await self.work.get()
            while item is not _DONE:
                rows.append(item)
                if len(rows) == MAX_BATCH or self.work.empty():
                    break
                item = self.work.get_nowait()
            finished = item is _DONE
            if rows:
                await asyncio.gather(*(sink.intent(row.device_id or "") for row in rows))
                for result in await worker.process(rows):
                    await self.results.put(result)

    def _simple(self, row: InputRow, status: Status, reason: SkipReason | None = None) -> DeviceResult:
        now = utc_now()
        return DeviceResult(device_id=row.device_id or "", status=status, skip_reason=reason, started_at=now,
                            finished_at=now, duration_ms=0, source_line=row.source_line, run_id=self.run_id)

    def _invalid(self, row: InputRow) -> DeviceResult:
        result = self._simple(row, Status.INVALID)
        result.device_id = row.raw
        result.error_code, result.error_message = row.error_code, row.error_message
        return result

    # ---------------------------------------------------------------------------------------- collector
    async def _collect(self, out: asyncio.Queue[Any], sink: ResultSink) -> None:
        """The only writer: count, write, flush when caught up, then hand the record to the caller."""
        progress = self.e._progress
        while (result := await self.results.get()) is not _DONE:
            self.stats.count(result)
            sink.outcome(result)
            if self.results.empty():
                sink.flush()
            if progress is not None:
                progress.update(self.stats)
            await out.put(result)

    def _summarise(self) -> Summary:
        stats = self.stats
        elapsed = stats.elapsed()
        total = max(stats.total_rows or 0, self.rows_seen, stats.done)
        counts = {s.value: stats.statuses.get(s.value, 0) for s in Status}
        remaining = total - stats.done
        if self.error is not None:
            code = self.error.exit_code
        elif self.stopped_reason is not None and remaining:
            code = 4
        elif counts["failed"] or counts["invalid"]:
            code = 1
        else:
            code = 0
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
            exit_code=code,
            out_dir=str(self.s.out_dir) if self.s.out_dir else None,
            settings=self.s.public_dict(),
        )


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


async def assign_profiles(
    ids: IdSource,
    *,
    target: Any,
    token_provider: TokenProvider | str | None = None,
    session: aiohttp.ClientSession | None = None,
    **settings: Any,
) -> Summary:
    """Assign ``target`` to every id in ``ids`` and return the summary (files only if ``out_dir`` is given)."""
    from .models import AssignmentTarget

    if isinstance(target, str):
        target = AssignmentTarget.parse(target)
    config = Settings.build(target=target, **settings)
    async with BulkAssigner(config, token_provider=token_provider, session=session) as engine:
        async for _ in engine.run(ids):
            pass
    assert engine.summary is not None
    return engine.summary
