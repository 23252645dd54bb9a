"""The report's charts: matplotlib, rendered to static SVG that the page inlines.

Why matplotlib's SVG and not a JavaScript charting library inlined into the page: for the usual run the
page is smaller (three charts of a one-hour run are tens of KB; Chart.js 4's minified bundle alone is
200 KB), the charts need no script to draw (they show with scripts off and print as drawn), and every
data mark is an element of the page, so the browser test can count marks per time bucket in the DOM.
The figures are built with ``matplotlib.figure.Figure`` (no pyplot: no global state, no GUI backend).

Size stays bounded for a million-row run: above ``MAX_POINTS`` buckets, consecutive buckets are merged
(counts summed, percentiles the worst of the merged buckets), and the page says how wide a point is.
Text stays text in the SVG (``svg.fonttype: none``), so no font is embedded and none is fetched.
"""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, datetime
from typing import Any

from .timeline import BUCKET_SECONDS

__all__ = ["MAX_POINTS", "Charts", "downsample", "render_charts"]

MAX_POINTS = 720  # two hours of 10 s buckets drawn one to one; longer runs merge buckets
_COUNTED = ("succeeded", "failed", "invalid", "skipped", "planned")
_PERCENTILES = ("p50_ms", "p90_ms", "p99_ms")
_SVG_START = re.compile(r"<svg\b")


def downsample(lines: list[dict[str, Any]], max_points: int = MAX_POINTS) -> tuple[list[dict[str, Any]], int]:
    """At most ``max_points`` points: groups of ``k`` consecutive lines merged; the points and ``k``."""
    if len(lines) <= max_points:
        return lines, 1
    k = math.ceil(len(lines) / max_points)
    points = []
    for start in range(0, len(lines), k):
        group = lines[start:start + k]
        point: dict[str, Any] = {"t": group[0]["t"], "rate": group[-1].get("rate")}
        for name in (*_COUNTED, "throttled_429"):
            point[name] = sum(int(line.get(name) or 0) for line in group)
        for name in _PERCENTILES:
            values = [line[name] for line in group if line.get(name) is not None]
            point[name] = max(values) if values else None
        points.append(point)
    return points, k


class Charts:
    """The page's SVG charts (strings, each an ``<svg>`` element) and how many points each draws."""

    def __init__(self) -> None:
        self.throughput: str | None = None
        self.latency: str | None = None
        self.outcomes: str | None = None
        self.status: str | None = None
        self.points = 0
        self.merged = 1


def _svg(figure: Any, salt: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no DOCTYPE), ids unique to this chart."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    match = _SVG_START.search(text)
    return text[match.start():] if match else text


def _times(points: list[dict[str, Any]]) -> list[float]:
    """Bucket starts as matplotlib's date numbers (days since its default epoch, 1970-01-01 UTC), so that
    the axes show UTC clock times."""
    return [datetime.fromisoformat(str(p["t"]).replace("Z", "+00:00")).timestamp() / 86400 for p in points]


def _time_axis(ax: Any) -> None:
    ax.xaxis_date(tz=UTC)
    ax.set_xlabel("UTC")


def _finish_time_chart(figure: Any, ax: Any, ylabel: str, legend: str) -> None:
    """What every chart over time shares: a zero-based y axis with its label, a light grid, the legend,
    UTC clock times on x."""
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    _time_axis(ax)
    figure.autofmt_xdate()


_STATUS_COLORS = {"assigned": "#2f855a", "pending": "#d69e2e", "not_assigned": "#718096", "failed": "#c53030",
                  "unknown_device": "#805ad5", "ambiguous_serial": "#b83280", "invalid": "#4a5568",
                  "wrong_profile": "#dd6b20"}


def render_status_chart(polls: list[dict[str, Any]]) -> str | None:
    """``status --wait``: devices by state (assigned, pending, ...) at each poll, one line per state."""
    from matplotlib.figure import Figure

    if not polls:
        return None
    times = _times(polls)
    figure = Figure(figsize=(10, 3.2))
    ax = figure.add_subplot()
    for state, color in _STATUS_COLORS.items():
        values = [int((p.get("by_state") or {}).get(state, 0)) for p in polls]
        if any(values):
            ax.plot(times, values, marker="o", markersize=3, linewidth=1.2, color=color, label=state,
                    gid=f"marks-status-{state}")
    _finish_time_chart(figure, ax, "devices", "center right")
    return _svg(figure, "status")


def render_charts(timeline: list[dict[str, Any]], outcomes: list[tuple[str, int]]) -> Charts:
    """Throughput (devices/min, 429s and rate changes on the same axis), latency percentiles, outcomes."""
    from matplotlib.figure import Figure

    charts = Charts()
    points, charts.merged = downsample(timeline)
    charts.points = len(points)
    if points:
        times = _times(points)
        width = BUCKET_SECONDS * charts.merged
        per_minute = [sum(int(p.get(n) or 0) for n in _COUNTED) * 60 / width for p in points]
        figure = Figure(figsize=(10, 3.2))
        ax = figure.add_subplot()
        ax.plot(times, per_minute, marker="o", markersize=3, linewidth=1.2, color="#2b6cb0",
                label="devices/min", gid="marks-throughput")
        throttled = [(t, y) for t, y, p in zip(times, per_minute, points, strict=True) if p.get("throttled_429")]
        if throttled:
            ax.scatter([t for t, _ in throttled], [y for _, y in throttled], marker="x", s=40, color="#c53030",
                       label="429s in the bucket", gid="marks-429", zorder=3)
        previous, changes = None, 0
        for t, p in zip(times, points, strict=True):
            rate = p.get("rate")
            if previous is not None and rate != previous:
                changes += 1
                ax.axvline(t, color="#805ad5", linestyle="--", linewidth=1, gid=f"mark-rate-change-{changes}")
                ax.annotate(f"rate {rate}", (t, 1), xycoords=("data", "axes fraction"), fontsize=7,
                            color="#805ad5", rotation=90, va="top", ha="right")
            previous = rate
        _finish_time_chart(figure, ax, "devices/min", "lower right")
        charts.throughput = _svg(figure, "throughput")

        figure = Figure(figsize=(10, 3.2))
        ax = figure.add_subplot()
        for name, color in zip(_PERCENTILES, ("#2f855a", "#d69e2e", "#c53030"), strict=True):
            values = [float(p[name]) if p.get(name) is not None else math.nan for p in points]
            ax.plot(times, values, marker="o",
                    markersize=3, linewidth=1.2, color=color, label=name.removesuffix("_ms"),
                    gid=f"marks-latency-{name.removesuffix('_ms')}")
        _finish_time_chart(figure, ax, "latency (ms)", "upper right")
        charts.latency = _svg(figure, "latency")
    if outcomes:
        shown = outcomes[:20]
        figure = Figure(figsize=(10, 0.6 + 0.35 * len(shown)))
        ax = figure.add_subplot()
        labels = [label for label, _ in shown][::-1]
        bars = ax.barh(labels, [count for _, count in shown][::-1], color="#c53030")
        for i, bar in enumerate(bars):
            bar.set_gid(f"mark-outcome-{i}")
        ax.set_xlabel("failed devices")
        ax.grid(alpha=0.3, axis="x")
        charts.outcomes = _svg(figure, "outcomes")
    return charts
