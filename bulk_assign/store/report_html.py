"""report.html: one self-contained page over an output folder, for the person who opens it next morning.

Why one file with everything inlined (CSS, the SVG charts, a few lines of script for the failures table):
it is mailed, attached to tickets and opened from a share, offline; no CDN, no external font, no request
of any kind. The page is built from the folder's files only (``report_data.py``), so it is the same
whether the run wrote it as it closed or ``bulk-assign report DIR`` rebuilt it, also for a killed run.

The template (``templates/report.html.j2``) is rendered by Jinja2 with autoescaping on: error messages
come from Graph and the input, and a message holding ``<script>`` must show as text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..models import utc_now
from ..safefs import write_atomic
from .report_charts import render_charts, render_status_chart
from .report_data import FAILURE_CAP, ReportData, load_report_data
from .timeline import BUCKET_SECONDS

__all__ = ["REPORT_NAME", "build_report", "render_report", "write_report", "write_report_quietly"]

REPORT_NAME = "report.html"
log = logging.getLogger("bulk_assign")


def render_report(data: ReportData) -> str:
    """The page's HTML for ``data``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("bulk_assign.store", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    classes = sorted(data.failures.classes.values(), key=lambda c: -c.count)
    charts = render_charts(data.timeline, [(c.label, c.count) for c in classes])
    if data.status is not None:
        charts.status = render_status_chart(list(data.status.get("polls_over_time") or []))
    summary = data.summary
    settings: list[tuple[str, Any]] = sorted((summary.get("settings") or {}).items()) if summary else []
    title = f"run {summary['run_id']}" if summary and summary.get("run_id") else data.out_dir.name
    return env.get_template("report.html.j2").render(
        title=title, out_dir=str(data.out_dir), built_at=utc_now(), files=data.files, summary=summary,
        counts=data.counts, skipped_by_reason=data.skipped_by_reason, pace=data.pace,
        exit_meaning=data.exit_meaning, settings=settings, charts=charts, classes=classes,
        failures=data.failures, runs=data.runs, bucket_seconds=BUCKET_SECONDS, status=data.status)


def build_report(out_dir: Path, cap: int = FAILURE_CAP, *, live: dict[str, Any] | None = None) -> str:
    """Read the folder and render its page (``live``: the summary so far of a run still going)."""
    return render_report(load_report_data(out_dir, cap, live=live))


def write_report(out_dir: Path, *, live: dict[str, Any] | None = None) -> Path:
    """Build the page and write it (atomically) as ``out_dir/report.html``; its path."""
    path = out_dir / REPORT_NAME
    write_atomic(path, build_report(out_dir, live=live).encode())
    return path


def write_report_quietly(out_dir: Path, *, live: dict[str, Any] | None = None) -> Path | None:
    """``write_report`` for the end of a run (and its minute rebuilds): a page that cannot be built never
    fails the run, it is a warning (in run.log and on stderr) and None."""
    try:
        return write_report(out_dir, live=live)
    except Exception as exc:  # any failure of the page, also a bug in it, must not change the run's outcome
        log.warning("report.html could not be built (bulk-assign report %s retries): %s: %s", out_dir,
                    type(exc).__name__, exc)
        return None
