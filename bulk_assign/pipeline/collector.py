"""The collector: the one place a decided record goes through, whoever decided it.

It counts the record, appends it to the sink (files flushed at most every 50 ms), updates the progress
display, feeds the failure brake and hands the record on to an ``engine.run()`` caller. It is called
inline by whoever decided the record rather than being a task behind a queue: on one event loop the
writes are serialised anyway, and each queue hop would cost a task switch per device. A record lost in a
crash before its flush has its intent journaled, so the next ``--resume`` reads the device back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..graph.operations import Precheck
from ..models import DeviceResult, InputRow, SkipReason, Status, utc_now
from ..redact import redact
from ..store.reports import ResultSink, RunStats, Summary
from ..store.timeline import Timeline
from .brake import FailureBrake

log = logging.getLogger("bulk_assign")
FLUSH_EVERY = 0.05  # seconds: how stale the files may be behind the decisions
_PLANNED = Status.PLANNED.value


class Progress(Protocol):
    """What a run tells a progress display; the CLI picks a rich bar or plain log lines."""

    def update(self, stats: RunStats) -> None: ...

    def finish(self, summary: Summary) -> None: ...


class Collector:
    """Counts, writes and hands on every record of one run; trips the brake when most devices fail."""

    def __init__(self, *, run_id: str, sink: ResultSink, stats: RunStats, brake: FailureBrake,
                 progress: Progress | None, on_brake: Callable[[], None], out: asyncio.Queue[Any] | None,
                 timeline: Timeline | None = None) -> None:
        self.run_id = run_id
        self.sink = sink
        self.stats = stats
        self.brake = brake
        self._progress = progress
        self._on_brake = on_brake
        self._out = out
        self._timeline = timeline  # timeline.jsonl, only with an output folder (store/timeline.py)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_failed: OSError | None = None
        # a caller of engine.run() takes every record, so it needs DeviceResults
        self._planned_sink: Callable[[list[InputRow], str], None] | None = (
            getattr(sink, "planned", None) if out is None else None)
        self._held: list[InputRow] = []  # planned rows not yet counted nor handed to the sink (``settle``)

    async def decided(self, result: DeviceResult) -> None:
        """Redact, count, write, watch the brake, hand on (every record of a run passes here)."""
        if self._flush_failed is not None:
            raise self._flush_failed
        if self._held:
            self.settle()  # the records keep the order they were decided in
        if result.error_message:
            result.error_message = redact(result.error_message)
        if self._timeline is not None:
            self._timeline.observe(result.duration_ms)  # before counting: see Timeline.observe
        self.stats.count(result)
        self.sink.outcome(result)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._flush)
        if self._progress is not None:
            self._progress.update(self.stats)
        if result.status in (Status.SUCCEEDED, Status.FAILED) and self.brake.observe(
            result.status is Status.FAILED, result.error_code
        ):
            self._on_brake()
        if self._out is not None:
            await self._out.put(result)

    def planned(self, row: InputRow) -> bool:
        """A dry run's device, written by the sink's cheap ``planned`` path; False when that path does not
        apply (a caller takes every record, or the sink has none) and the record must go through ``decided``.

        Held, and counted and handed to the sink 256 at a time (``settle``, also before the next ``decided``
        record and at every flush): a dry run of a million rows is all planned records, and the bookkeeping
        per record cost as much as writing it.
        """
        if self._planned_sink is None or row.device_id is None:
            return False
        held = self._held
        held.append(row)
        if len(held) >= 256:
            self.settle()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._flush)
        return True

    def settle(self) -> None:
        """Count the planned rows held so far and hand them to the sink (which only queues them: no I/O)."""
        held, self._held = self._held, []
        if not held or self._planned_sink is None:
            return
        if self._timeline is not None:
            self._timeline.tick()
        statuses = self.stats.statuses
        before = statuses[_PLANNED]
        statuses[_PLANNED] = before + len(held)
        self._planned_sink(held, self.run_id)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._flush)
        if self._progress is not None and before >> 10 != statuses[_PLANNED] >> 10:
            self._progress.update(self.stats)

    @property
    def hands_on(self) -> bool:
        """True when an ``engine.run()`` caller takes every record (then done devices need one too)."""
        return self._out is not None

    def count_done(self, devices: int = 1) -> None:
        """Devices an earlier run of the folder finished: counted as ``skipped``/``already_succeeded``,
        never written (the folder's merged view shows their real outcome from that run)."""
        if devices:
            self.stats.statuses[Status.SKIPPED.value] += devices
            self.stats.skip_reasons[SkipReason.ALREADY_SUCCEEDED.value] += devices
            if self._progress is not None:
                self._progress.update(self.stats)

    async def already_done(self, row: InputRow) -> None:
        """``count_done``, and the record handed to the caller of ``engine.run()`` (not to the sink)."""
        self.count_done()
        if self._out is not None:
            await self._out.put(self.simple(row, Status.SKIPPED, SkipReason.ALREADY_SUCCEEDED))

    def _flush(self) -> None:
        """The timer's flush. A disk that fills can fail it: the error is kept and raised by the next
        ``decided`` (so the run stops with exit 5 as for a failed write), not left to the event loop."""
        self._flush_timer = None
        try:
            self.settle()
            self.sink.flush()
        except OSError as exc:
            self._flush_failed = exc

    async def close(self, summary: Summary) -> Summary:
        """Cancel the pending flush (the sink flushes as it closes), write the timeline's last bucket, close
        the sink (which builds report.html from the files), show the summary."""
        self.settle()  # the source settles as it ends (before the summary is made); this is for any other caller
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._timeline is not None:
            self._timeline.close()
        summary = await self.sink.close(summary)
        if self._progress is not None:
            self._progress.finish(summary)
        return summary

    # ------------------------------------------------------------------------------ records without a send
    def simple(self, row: InputRow, status: Status, reason: SkipReason | None = None) -> DeviceResult:
        """The record of a row decided without a request (duplicate, already done, planned)."""
        now = utc_now()
        return DeviceResult(device_id=row.device_id or "", status=status, serial_number=row.serial,
                            skip_reason=reason, started_at=now, finished_at=now, duration_ms=0,
                            source_line=row.source_line, run_id=self.run_id, previous_group_tag=row.previous)

    def prechecked(self, row: InputRow, check: Precheck) -> DeviceResult:
        """A row the operation decided from the listing without a write: skipped, or invalid with why."""
        if check.skip is not None:
            result = self.simple(row, Status.SKIPPED, check.skip)
            result.error_message = check.error_message  # why, where the skip reason alone does not say it
            return result
        result = self.simple(row, Status.INVALID)
        result.error_code, result.error_message = check.error_code, check.error_message
        return result

    def unresolved(self, row: InputRow) -> DeviceResult:
        """A dry run's serial row it could not resolve offline: planned, saying what would resolve it."""
        result = self.simple(row, Status.PLANNED)
        result.error_code, result.error_message = row.error_code, row.error_message
        return result

    def invalid(self, row: InputRow) -> DeviceResult:
        """The record of an unusable row: its raw text stands in for the id, with the reason."""
        result = self.simple(row, Status.INVALID)
        result.device_id = row.raw
        result.error_code, result.error_message = row.error_code, row.error_message
        return result
