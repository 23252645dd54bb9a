"""Progress for people: a live rich display on a terminal, plain periodic log lines for cron and CI."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..store.reports import RunStats, Summary

log = logging.getLogger("bulk_assign")


def pause_note(stats: RunStats, now: float | None = None) -> str:
    """"throttled: all workers paused until 07:43:31 (Retry-After 120 s)" while a 429's pause lasts, else ""."""
    now = time.time() if now is None else now
    if stats.paused_until <= now:
        return ""
    until = datetime.fromtimestamp(stats.paused_until).strftime("%H:%M:%S")
    asked = f" (Retry-After {stats.pause_retry_after:g} s)" if stats.pause_retry_after is not None else ""
    return f"throttled: all workers paused until {until}{asked}"


def _fields(stats: RunStats) -> dict[str, Any]:
    elapsed = max(stats.elapsed(), 1e-9)
    done = stats.done
    rate = done / elapsed
    total = stats.total_rows
    eta = (total - done) / rate if total and rate > 0 else None
    return {
        "done": done,
        "total": total,
        "succeeded": stats.statuses.get("succeeded", 0),
        "failed": stats.statuses.get("failed", 0),
        "throttled": stats.throttled,
        "rate": rate,
        "eta": eta,
    }


class LogProgress:
    """One INFO line every ``interval`` seconds (the run's ticker calls ``update`` every second, so a run that
    waits still logs), and one line when a 429 pauses every worker: what a scheduled job's log should show."""

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._interval = interval
        self._clock, self._wall = clock, wall
        self._next = clock() + interval
        self._pause_told = 0.0

    def update(self, stats: RunStats) -> None:
        if stats.paused_until > self._pause_told and (note := pause_note(stats, self._wall())):
            self._pause_told = stats.paused_until
            log.info("%s", note)
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        f = _fields(stats)
        eta = f"{f['eta']:.0f}s" if f["eta"] is not None else "?"
        log.info("progress %d/%s succeeded=%d failed=%d throttled=%d rate=%.1f/s eta=%s",
                 f["done"], f["total"] if f["total"] is not None else "?", f["succeeded"], f["failed"],
                 f["throttled"], f["rate"], eta)

    def finish(self, summary: Summary) -> None:
        return None


class RichProgress:
    """A live bar with done/total, succeeded, failed, throttled, rate and ETA (stderr, terminals only)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar = Progress(
            TextColumn("[bold]assigning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]ok {task.fields[ok]}[/] [red]failed {task.fields[failed]}[/] "
                       "[yellow]429s {task.fields[throttled]}[/] {task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[yellow]{task.fields[note]}"),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("run", total=None, ok=0, failed=0, throttled=0, rate=0.0, note="")
        self._last = 0.0
        self._bar.start()

    def update(self, stats: RunStats) -> None:
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self._push(stats)

    def _push(self, stats: RunStats) -> None:
        f = _fields(stats)
        self._bar.update(self._task, completed=f["done"], total=f["total"], ok=f["succeeded"], failed=f["failed"],
                         throttled=f["throttled"], rate=f["rate"], note=pause_note(stats))

    def finish(self, summary: Summary) -> None:
        """The last frame shows the final counts (the summary's, as the table below it), not the last refresh's."""
        counts = summary.counts
        self._bar.update(self._task, completed=summary.total_rows - summary.remaining, total=summary.total_rows,
                         ok=counts.get("succeeded", 0), failed=counts.get("failed", 0), throttled=summary.throttled_429,
                         note="")
        self._bar.refresh()
        self._bar.stop()


def summary_table(summary: Summary) -> Table:
    """The end-of-run table printed by the CLI."""
    table = Table(title=f"bulk-assign run {summary.run_id}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for status, count in summary.counts.items():
        if count or status in ("succeeded", "failed"):
            table.add_row(status, str(count))
    for reason, count in summary.skipped_by_reason.items():
        table.add_row(f"  skipped: {reason}", str(count))
    table.add_row("remaining", str(summary.remaining))
    table.add_row("requests sent", str(summary.requests_sent))
    table.add_row("429s received", str(summary.throttled_429))
    table.add_row("retries", str(summary.retries))
    table.add_row("elapsed", f"{summary.elapsed_seconds:.1f} s")
    table.add_row("devices/min", f"{summary.devices_per_minute:.0f}")
    table.add_row("exit code", str(summary.exit_code))
    return table
