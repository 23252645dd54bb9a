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
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sized
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp

from .auth import StaticTokenProvider, TokenProvider
from .config import Settings
from .errors import AuthenticationError, BulkAssignError, UsageError
from .graph import AssignProfile, Operation, send
from .models import DeviceResult, InputRow, SkipReason, Status
from .outcome import Attempt, Kind
from .pacing import LimiterPacer, Pacer, WindowPacer
from .readers import Deduper, iter_ids
from .reports import NullSink, ReportWriter, ResultSink, RunStats, Summary, utc_now
from .retry import DeviceTry, RetryPolicy, Sleep, ThrottleGate, tenacity_retrying
from .verify import GraphVerifier, Verifier

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
    """One shared session: proxy variables honoured (``trust_env``), a private CA via ``--ca-bundle``."""
    ssl_context: ssl.SSLContext | bool = True
    if settings.ca_bundle is not None:
        ssl_context = ssl.create_default_context(cafile=str(settings.ca_bundle))
    connector = aiohttp.TCPConnector(limit=settings.concurrency + 4, ssl=ssl_context, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=True,
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout),
        headers={"User-Agent": "bulk-assign/0.1"},
    )


class _Job:
    """One ``engine.run()``: its queues, counters and tasks."""

    def __init__(self, engine: BulkAssigner, total: int | None) -> None:
        self.e = engine
        self.s = engine.settings
        self.run_id = self.s.run_id or uuid.uuid4().hex[:12]
        self.stats = engine.stats = RunStats(total_rows=total)
        self.started_at = utc_now()
        self.work: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.s.concurrency * 2)
        self.results: asyncio.Queue[Any] = asyncio.Queue(maxsize=1024)
        self.gate = ThrottleGate(sleep=engine._sleep)
        self.policy = RetryPolicy(
            max_attempts=self.s.max_attempts,
            max_wait=self.s.max_retry_after,
            max_throttle_wait=self.s.max_throttle_wait,
        )
        self.retrying = tenacity_retrying(self.policy, sleep=engine._sleep, rng=engine._rng, on_give_up=_give_up)
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
                            for _ in range(self.s.concurrency):
                                producers.create_task(self._work(sink))
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
        while (row := await self.work.get()) is not _DONE:
            await sink.intent(row.device_id)
            await self.results.put(await self._device(row))

    async def _device(self, row: InputRow) -> DeviceResult:
        assert row.device_id is not None
        state = DeviceTry(row.device_id)
        started_at, t0 = utc_now(), time.monotonic()
        attempt = await self._attempt(state)
        if self.policy.should_retry(attempt):
            # tenacity from the second attempt on: nearly every device succeeds at once, and building a
            # tenacity controller per device costs ~25 µs, a real share of CPU at thousands of devices/s.
            code = self.policy.gives_up(attempt, state)
            if code is not None:
                attempt = _give_up(attempt, code)
            else:
                await self.e._sleep(self.policy.delay(attempt, state, self.e._rng))
                attempt = await self.retrying.copy()(self._attempt, state)
        return self._record(row, state, attempt, started_at, t0)

    async def _attempt(self, state: DeviceTry) -> Attempt:
        """One try for one device: verify if the last try may have landed, wait for gate and pacer, send."""
        if state.verify_next and self.verifier is not None:
            found = await self.verifier.already_assigned(state.device_id)
            if found:
                return Attempt(Kind.SUCCESS, verified=True)
            if found is None:  # could not tell: do not risk a duplicate, try again later
                state.sends += 1
                return Attempt(Kind.TRANSIENT, error_code="VerificationFailed",
                               error_message="could not read back the device's assignments", maybe_committed=True)
            state.verify_next = False
        state.throttle_waited += await self.gate.wait()
        await self.e.pacer.acquire()
        if self.gate.remaining() > 0:  # another worker hit a 429 while we waited for the pacer
            state.throttle_waited += await self.gate.wait()
        tokens = self.e._tokens
        session = self.e._session
        assert tokens is not None and session is not None
        token = await tokens.get_token()
        client_request_id = str(uuid.uuid4())
        state.posts += 1
        self.stats.requests_sent += 1
        if state.posts > 1:
            self.stats.retries += 1
        op = self.e.operation
        attempt = await send(
            session,
            "POST",
            self.s.graph_url + op.path(state.device_id),
            token=token,
            client_request_id=client_request_id,
            body=op.body(state.device_id),
            timeout=self.s.request_timeout,
        )
        state.client_request_id = client_request_id
        state.request_id = attempt.request_id
        kind = attempt.kind
        if kind is not Kind.THROTTLED:
            self.gate.release()
        if kind is Kind.SUCCESS:
            attempt.assignment_id = op.success_id(attempt.body)
        elif kind is Kind.THROTTLED:
            self._throttled(attempt)
        elif kind is Kind.AUTH:
            if state.auth_retries >= 1:
                raise AuthenticationError(
                    f"Graph rejected a freshly acquired token ({attempt.error_code}: {attempt.error_message})"
                )
            state.auth_retries += 1
            tokens.invalidate(token)
        else:
            state.sends += 1
            if attempt.maybe_committed and self.verifier is not None:
                state.verify_next = True
        return attempt

    def _throttled(self, attempt: Attempt) -> None:
        """Close the shared gate: for Retry-After if given, else until our pacing window frees, plus jitter."""
        self.stats.throttled += 1
        self.e.pacer.on_throttle(attempt.retry_after)
        wait = attempt.retry_after
        if wait is None:
            wait = self.e.pacer.window_free_in() + self.e._rng.uniform(0.05, 0.5)
        self.gate.close_for(min(wait, self.s.max_retry_after))

    # ------------------------------------------------------------------------------------------ records
    def _record(self, row: InputRow, state: DeviceTry, attempt: Attempt, started_at: str, t0: float) -> DeviceResult:
        assert row.device_id is not None
        result = DeviceResult(
            device_id=row.device_id,
            status=Status.SUCCEEDED if attempt.kind is Kind.SUCCESS else Status.FAILED,
            http_status=attempt.http_status,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            assignment_id=attempt.assignment_id,
            attempts=state.posts,
            request_id=state.request_id,
            client_request_id=state.client_request_id,
            started_at=started_at,
            finished_at=utc_now(),
            duration_ms=int((time.monotonic() - t0) * 1000),
            source_line=row.source_line,
            run_id=self.run_id,
        )
        if attempt.verified:
            result.status, result.skip_reason = Status.SKIPPED, SkipReason.ALREADY_ASSIGNED
            result.http_status = None
        elif attempt.http_status == 403:
            result.error_message = f"{attempt.error_message} (the signed-in user or app lacks " \
                "DeviceManagementServiceConfig.ReadWrite.All: grant it and consent)"
        return result

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


def _give_up(attempt: Attempt, code: str) -> Attempt:
    """The final attempt of a device that ran out of tries: keep its HTTP details, name why we stopped."""
    detail = f"{attempt.error_code}: {attempt.error_message}" if attempt.error_code else "no detail"
    return Attempt(
        Kind.PERMANENT,
        attempt.http_status,
        error_code=code,
        error_message=f"gave up after the last failure ({detail})",
        request_id=attempt.request_id,
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
