"""Live progress that never looks hung (issue 13): a timer refreshes it, a pause says what it is and when it
ends, the last frame has the final counts, and run.log ends with the summary and the exit code's meaning."""

from __future__ import annotations

import io
import logging
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bulk_assign import BulkAssigner
from bulk_assign.cli.progress import LogProgress, RichProgress, pause_note
from bulk_assign.config import Rate, Settings
from bulk_assign.models import AssignmentTarget
from bulk_assign.store.reports import RunStats, Summary

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")


def test_a_pause_says_what_it_is_and_when_it_ends() -> None:
    stats = RunStats(paused_until=1_000_120.0, pause_retry_after=120.0)
    until = datetime.fromtimestamp(1_000_120.0).strftime("%H:%M:%S")
    assert pause_note(stats, now=1_000_000.0) == f"throttled: all workers paused until {until} (Retry-After 120 s)"
    assert pause_note(stats, now=1_000_121.0) == ""


def test_log_progress_logs_on_time_without_results_and_tells_each_pause_once(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = LogProgress(10.0, clock=lambda: now[0], wall=lambda: 1_000_000.0 + now[0])
    stats = RunStats(total_rows=100)
    caplog.set_level(logging.INFO, logger="bulk_assign")
    for second in range(1, 31):  # the ticker calls every second; no record arrives
        now[0] = float(second)
        if second == 5:
            stats.paused_until, stats.pause_retry_after = 1_000_000.0 + 125, 120.0
        progress.update(stats)
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line.startswith("progress 0/100") for line in lines) == 3  # at 10, 20 and 30 s
    assert sum("all workers paused until" in line for line in lines) == 1


def summary(**counts: int) -> Summary:
    return Summary(run_id="r", started_at="", finished_at="", elapsed_seconds=1.0, total_rows=2009,
                   counts={"succeeded": 0, "failed": 0, **counts}, skipped_by_reason={}, remaining=0,
                   requests_sent=0, throttled_429=8, retries=0, verifications=0, devices_per_minute=0.0,
                   effective_rate="100/20s", exit_code=1, settings={})


def test_the_last_frame_shows_the_final_counts() -> None:
    out = io.StringIO()
    bar = RichProgress(Console(file=out, force_terminal=True, width=200))
    bar.update(RunStats(total_rows=2009))
    bar.finish(summary(succeeded=2000, failed=9))
    frame = out.getvalue().rsplit("\r", 1)[-1]
    assert "2009/2009" in frame and "ok 2000" in frame and "failed 9" in frame and "429s 8" in frame


class Recorder:
    """A Progress that keeps what it was shown and when."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def update(self, stats: RunStats) -> None:
        self.seen.append((stats.done, stats.paused_until))

    def finish(self, summary: Summary) -> None:
        return None


async def test_the_display_refreshes_during_a_pause_and_run_log_ends_with_the_exit(start_emulator: Any,
                                                                                   tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=Rate(5, 2.5), tenant_rate=Rate(100, 1.0), retry_after="int")
    recorder = Recorder()
    settings = Settings(target=TARGET, graph_url=emu.base_url, rate="1000/1s", concurrency=4, preflight=False,
                        out_dir=tmp_path / "out")
    async with BulkAssigner(settings, token_provider="t", progress=recorder) as engine:
        summary = await engine.run_all([str(uuid.uuid4()) for _ in range(12)])
    assert summary.counts["succeeded"] == 12 and summary.throttled_429 > 0
    paused = [done for done, until in recorder.seen if until > 0]
    assert len(paused) >= 2 and len(set(paused)) < len(paused)  # refreshed while nothing was decided
    last = (tmp_path / "out" / "run.log").read_text().splitlines()[-1]
    assert "finished run" in last and "succeeded 12" in last and "exit 0 (every device succeeded" in last


async def test_report_html_is_rebuilt_while_the_run_goes_on_without_rereading_the_records(
        start_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bulk_assign.pipeline.run as run_module
    import bulk_assign.store.report_data as report_data

    monkeypatch.setattr(run_module, "REBUILD_EVERY", 0.6)
    monkeypatch.setattr(run_module, "TICK", 0.2)
    scans: list[Path] = []
    real_scan = report_data._add_record_details
    monkeypatch.setattr(report_data, "_add_record_details", lambda out, view: (scans.append(out), real_scan(out, view)))
    emu = await start_emulator(app_rate=Rate(10, 1.0), tenant_rate=Rate(100, 1.0))
    out = tmp_path / "out"
    seen_live: list[bool] = []

    class Watch(Recorder):
        def update(self, stats: RunStats) -> None:
            page = out / "report.html"
            if page.exists():
                seen_live.append('id="live"' in page.read_text())

    settings = Settings(target=TARGET, graph_url=emu.base_url, rate="10/1s", concurrency=2, preflight=False,
                        out_dir=out)
    async with BulkAssigner(settings, token_provider="t", progress=Watch()) as engine:
        await engine.run_all([str(uuid.uuid4()) for _ in range(30)])
    assert True in seen_live  # a page existed, marked as live, before the run ended
    final = (out / "report.html").read_text()
    assert 'id="live"' not in final and "Exit" in final
    assert scans == [out]  # the records were scanned once, for the final page, never by a minute rebuild
