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
import time
from collections.abc import AsyncIterator, Sized
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

from .auth import StaticTokenProvider, TokenProvider
from .config import Settings, SettingsOptions, rate_warning
from .errors import UsageError
from .graph.operations import AddToGroup, AssignProfile, Operation, SetGroupTag
from .graph.transport import AiohttpTransport, Transport, open_transport
from .models import AssignmentTarget, DeviceResult
from .pipeline.pacing import LimiterPacer, Pacer, WindowPacer
from .pipeline.resolve import SerialResolver
from .pipeline.retry import Sleep
from .pipeline.run import DONE, IdSource, Job, Progress, RunDeps, new_run_id
from .pipeline.verify import Verifier
from .safefs import remove_stale_temporaries
from .store.folderlock import FolderLock
from .store.history import RESULTS_NAME, History, load_history
from .store.journal import JOURNAL_NAME, IntentJournal
from .store.pin import check_pin
from .store.report_html import write_report_quietly
from .store.reports import NullSink, ReportWriter, ResultSink, RunStats, Summary

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("bulk_assign")


class BulkAssigner:
    """Assign one target to many devices. Use as ``async with BulkAssigner(settings) as engine``.

    Pass ``session`` to reuse your own ``aiohttp.ClientSession`` (the engine does not close it; requests
    still go only to the Graph URL's origin and redirects are still not followed), else the engine opens its
    own (``graph.transport.open_transport``). Pass ``token_provider`` for your own tokens; otherwise
    ``BULK_ASSIGN_ACCESS_TOKEN``-style static tokens must be given by the caller (the CLI builds MSAL
    providers).
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
        self._transport: Transport | None = (
            AiohttpTransport(session, own=False, origin=settings.graph_url) if session is not None else None
        )
        self.operation: Operation = operation or operation_for(settings)
        directory = self.operation.budget == "directory"  # Entra's budget, not Intune's (--add-to-group)
        self.pacer: Pacer = pacer or WindowPacer(settings.directory_rate if directory else settings.rate, sleep=sleep)
        # Reads may burst one window's writes: read-before-write reads the devices of a window's burst of
        # writes at once instead of at the read budget's steady pace (25/s at 500/20s, so 4 s for 100). Worst
        # case in any window: that burst + the read budget + the writes = 7x the write budget, inside
        # Intune's "any request" budget of 10x (config.READS_PER_WRITE).
        self._read_pacer: Pacer = read_pacer or LimiterPacer(settings.read_rate, burst=settings.rate.count)
        self._directory_reads: Pacer = LimiterPacer(settings.directory_read_rate)
        self._sink = sink
        self._verifier = verifier
        self._progress = progress
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "new"
        self.run_id = settings.run_id or new_run_id()
        self._lock: FolderLock | None = None
        self._history: History | None = None
        self._job: Job | None = None
        self._opened: float | None = None
        self.summary: Summary | None = None
        self.stats = RunStats()
        self.input_note: str | None = None  # what the reader detected (the CLI sets it), for summary.json

    # ----------------------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a BulkAssigner can be entered once")
        self._state = "open"
        self._opened = time.monotonic()
        if not self.settings.dry_run:
            if self._tokens is None:
                raise UsageError("no token provider: pass token_provider=... or set BULK_ASSIGN_ACCESS_TOKEN")
            if self._transport is None:
                self._transport = open_transport(self.settings)
        out_dir = self.settings.out_dir
        try:
            if out_dir is not None:
                self._lock = FolderLock(out_dir)
                self._lock.acquire()
                if stale := remove_stale_temporaries(out_dir):
                    log.info("removed %d temporary file(s) a killed run left: %s", len(stale), ", ".join(stale))
                self._history = self._load_history(out_dir)
                route = {k: v for k, v in (("profile", self.settings.profile), ("group", self.settings.group)) if v}
                check_pin(out_dir, {**self.operation.pin(), **route}, resume=self.settings.resume)
            if self._sink is None:
                self._sink = self._report_writer(out_dir) if out_dir is not None else NullSink()
            if (warning := rate_warning(self.settings.rate, self.settings.graph_url)) is not None:
                log.warning("%s", warning)  # once per run: on the terminal (CLI) and in run.log
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def _load_history(self, out_dir: Path) -> History | None:
        """With ``--resume`` what earlier runs decided; without it, refuse a folder an earlier run wrote to.

        Any sign of an earlier run counts, not only results: a run killed before its first answer leaves
        intents in ``journal.log`` and no result, and its POSTs may have landed, so a fresh run into the
        folder would assign those devices again. ``summary.json`` counts too (a run that decided nothing).
        """
        signs = [name for name in (RESULTS_NAME, JOURNAL_NAME, "summary.json") if _has_content(out_dir / name)]
        if self.settings.resume:
            return load_history(out_dir) if signs else None
        if signs:
            raise UsageError(f"{out_dir} holds an earlier run ({', '.join(signs)}): continue it with --resume "
                             "(devices done there are skipped, those in doubt read back) or choose another --out")
        return None

    def _report_writer(self, out_dir: Path) -> ReportWriter:
        journal = IntentJournal(out_dir, self.run_id) if self.settings.writes else None
        return ReportWriter(out_dir, journal=journal, merge=self._history is not None, report=write_report_quietly,
                            in_order=not self.settings.writes)  # nothing in flight: see RunEntries

    def request_stop(self, reason: str = "interrupted", *, drain: float | None = None) -> None:
        """Stop taking devices and drain (signals, deadlines); a second call cancels what is in flight."""
        if self._job is not None:
            self._job.request_stop(reason, drain=drain)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._cancel_runs()
        if self._transport is not None:
            await self._transport.close()
        if self._lock is not None:
            self._lock.release()
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
    def _start(
        self, ids: IdSource, total: int | None, out: asyncio.Queue[Any] | None
    ) -> tuple[Job, asyncio.Task[None]]:
        """The run's task, owned by this engine (cancelled by ``__aexit__``, not by a generator)."""
        if self._state != "open":
            raise RuntimeError("use `async with BulkAssigner(...) as engine:` before running it")
        if self._job is not None:
            raise RuntimeError("one run per BulkAssigner: its reports, journal and lock belong to that run")
        if total is None and isinstance(ids, Sized):
            total = len(ids)
        assert self._sink is not None
        resolver = SerialResolver(self.settings, transport=self._transport, tokens=self._tokens,
                                  pacer=self._read_pacer, sleep=self._sleep, rng=self._rng,
                                  operation=self.operation)
        deps = RunDeps(
            settings=self.settings, run_id=self.run_id, transport=self._transport, tokens=self._tokens,
            pacer=self.pacer, read_pacer=self._read_pacer, operation=self.operation, sink=self._sink,
            verifier=self._verifier, progress=self._progress, sleep=self._sleep, rng=self._rng,
            opened=self._opened, resolver=resolver, input_note=self.input_note,
            directory_reads=self._directory_reads,
            live_report=_live_report if isinstance(self._sink, ReportWriter) else None,
        )
        job = self._job = Job(deps, total, self._history)
        self.stats = job.stats
        task = asyncio.get_running_loop().create_task(job.execute(ids, out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job, task

    async def run(self, ids: IdSource, *, total: int | None = None) -> AsyncIterator[DeviceResult]:
        """Yield one record per input row as devices are decided; raises ``AuthenticationError`` when the
        run had to stop for lack of a token (records already yielded stand; the rest count as remaining)."""
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(64, self.settings.concurrency * 4))
        job, task = self._start(ids, total, out)
        try:
            while True:
                item = await out.get()
                if item is DONE:
                    break
                yield item
        finally:
            if not task.done():
                task.cancel()
        await task
        self._finished(job)

    async def run_all(self, ids: IdSource, *, total: int | None = None) -> Summary:
        """Run to the end without yielding records (the CLI, ``assign_profiles``): the summary, or the
        ``AuthenticationError`` that stopped the run (``engine.summary`` is set either way)."""
        job, task = self._start(ids, total, None)
        await task
        return self._finished(job)

    def _finished(self, job: Job) -> Summary:
        """Publish the run's summary, then raise what stopped it, if anything."""
        assert job.summary is not None
        self.summary = job.summary
        if job.error is not None:
            raise job.error
        return job.summary


def _live_report(out_dir: Path, summary: dict[str, Any]) -> None:
    """The minute rebuild of report.html while a run goes on (in a thread: rendering takes a second)."""
    write_report_quietly(out_dir, live=summary)


def operation_for(settings: Settings) -> Operation:
    """The one device operation a run's settings ask for (the CLI allows exactly one)."""
    if settings.group_tag is not None or settings.group_tag_column is not None:
        return SetGroupTag(settings.group_tag, column=settings.group_tag_column)
    if settings.add_to_group is not None:
        return AddToGroup(settings.add_to_group, profile=settings.profile is not None)
    if settings.target is not None:
        return AssignProfile(settings.target)
    raise UsageError("nothing to do: give a target (--target group:<guid>), a group tag (--group-tag TAG) or a "
                     "group to add the devices to (--add-to-group GROUP_ID)")


def _has_content(path: Path) -> bool:
    """A non-empty file (an empty one is left by a run that wrote nothing: nothing was sent)."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


async def assign_profiles(
    ids: IdSource,
    *,
    target: AssignmentTarget | str,
    token_provider: TokenProvider | str | None = None,
    session: aiohttp.ClientSession | None = None,
    **settings: Unpack[SettingsOptions],
) -> Summary:
    """Assign ``target`` to every id in ``ids`` and return the summary (files only if ``out_dir`` is given)."""
    if isinstance(target, str):
        target = AssignmentTarget.parse(target)
    config = Settings.build(target=target, **settings)
    async with BulkAssigner(config, token_provider=token_provider, session=session) as engine:
        return await engine.run_all(ids)
