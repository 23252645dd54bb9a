"""timeline.jsonl: what a run decided per 10 s bucket, for the report's charts.

Why a time series of its own: the report must show throughput, 429s, the pacing rate and latency over
time without rereading the per-device records (a million-row folder has a million of them). The run
already counts every record in ``RunStats``, so a bucket's counts are the counters' delta since the last
bucket, and its 429s the delta of ``RunStats.throttled``; per device this costs one clock read and one
``list.append`` of the record's ``duration_ms``. A bucket is written when a record arrives in a later
bucket and when the run closes; buckets in which nothing was decided (a long 429 pause) have no line.

Each line carries ``run_id``: a resumed folder appends to the same file, and the report draws one
section per run from it. A timeline that cannot be written (disk full) is dropped with one warning: it
is the report's input, never the run's, so it must not stop the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from ..models import Status
from ..safefs import open_append, open_read

__all__ = ["BUCKET_SECONDS", "TIMELINE_NAME", "Timeline", "bucket_line", "percentile", "read_timeline"]

TIMELINE_NAME = "timeline.jsonl"
BUCKET_SECONDS = 10
_STATUSES = tuple(s.value for s in Status)
log = logging.getLogger("bulk_assign")


def percentile(sorted_values: Sequence[int], share: float) -> int | None:
    """Nearest-rank percentile (``share`` in 0..1) of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bucket_line(run_id: str, bucket: int, counts: Counter[str], throttled: int, rate: str | None,
                latencies: list[int]) -> dict[str, Any]:
    """One timeline line: bucket ``bucket`` (epoch seconds // BUCKET_SECONDS), its counts and latencies."""
    latencies.sort()
    start = datetime.fromtimestamp(bucket * BUCKET_SECONDS, UTC).isoformat().replace("+00:00", "Z")
    line: dict[str, Any] = {"run_id": run_id, "t": start}
    for status in _STATUSES:
        line[status] = counts.get(status, 0)
    line.update(throttled_429=throttled, rate=rate, p50_ms=percentile(latencies, 0.5),
                p90_ms=percentile(latencies, 0.9), p99_ms=percentile(latencies, 0.99))
    return line


class Timeline:
    """Buckets one run's decisions; ``observe`` per record, ``close`` at the end of the run.

    ``statuses`` and ``throttled`` read the run's live counters (``RunStats``); ``rate`` the pacer's
    effective rate. ``clock`` is wall time in epoch seconds (injectable for tests).
    """

    def __init__(self, out_dir: Path, run_id: str, *, statuses: Counter[str], throttled: Callable[[], int],
                 rate: Callable[[], str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = out_dir / TIMELINE_NAME
        self.run_id = run_id
        self._statuses = statuses
        self._throttled = throttled
        self._rate = rate
        self._clock = clock
        self._bucket: int | None = None
        self._latencies: list[int] = []
        self._seen: Counter[str] = Counter()
        self._seen_throttled = throttled()
        self._file: IO[Any] | None = None
        self._broken = False

    def observe(self, duration_ms: int | None) -> None:
        """A record was decided now; call it *before* the record is counted in ``RunStats``, so that a record
        opening a new bucket is not in the delta written for the previous one. ``duration_ms`` joins it."""
        bucket = int(self._clock()) // BUCKET_SECONDS
        if bucket != self._bucket:
            self._roll(bucket)
        if duration_ms:
            self._latencies.append(duration_ms)

    def tick(self) -> None:
        """A record decided without a latency (the cheap planned path; call before counting it)."""
        bucket = int(self._clock()) // BUCKET_SECONDS
        if bucket != self._bucket:
            self._roll(bucket)

    def _roll(self, bucket: int) -> None:
        if self._bucket is not None:
            self._write()
        self._bucket = bucket

    def _write(self) -> None:
        """Write the current bucket: the live counters' delta since the last bucket was written."""
        assert self._bucket is not None
        now = Counter({k: v for k, v in self._statuses.items() if v})
        delta = now - self._seen
        throttled = self._throttled()
        line = bucket_line(self.run_id, self._bucket, delta, throttled - self._seen_throttled,
                           self._rate() if self._rate is not None else None, self._latencies)
        self._seen, self._seen_throttled, self._latencies = now, throttled, []
        if self._broken or (not any(line[s] for s in _STATUSES) and not line["throttled_429"]):
            return
        try:
            if self._file is None:
                self._file = open_append(self.path)
            self._file.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
            self._file.flush()
        except OSError as exc:
            self._broken = True
            log.warning("timeline.jsonl could not be written (the report will lack its charts): %s", exc)

    def close(self) -> None:
        """Write the last bucket and close the file."""
        if self._bucket is not None:
            self._write()
            self._bucket = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                log.warning("timeline.jsonl could not be closed: %s", exc)
            self._file = None


def read_timeline(out_dir: Path) -> list[dict[str, Any]]:
    """Every parseable line of the folder's timeline.jsonl (a torn last line is skipped); [] when none."""
    try:
        with open_read(out_dir / TIMELINE_NAME) as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = []
    for raw in data.splitlines():
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and "t" in value:
            lines.append(value)
    return lines
