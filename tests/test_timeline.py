"""timeline.jsonl: 10 s buckets from the run's counters, latency percentiles, appended per run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bulk_assign.store.timeline import Timeline, percentile, read_timeline


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.9) == 90
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) is None
    assert percentile([1, 2], 0.5) == 1


def _feed(timeline: Timeline, statuses: Counter[str], status: str, ms: int) -> None:
    timeline.observe(ms)  # before counting, as the collector does
    statuses[status] += 1


def test_records_land_in_their_bucket_and_each_bucket_has_its_own_counts(tmp_path: Path) -> None:
    now = [1_700_000_000.0]  # a multiple of 10
    statuses: Counter[str] = Counter()
    throttled = [0]
    rate = ["100/20s"]
    tl = Timeline(tmp_path, "run-1", statuses=statuses, throttled=lambda: throttled[0], rate=lambda: rate[0],
                  clock=lambda: now[0])
    for ms in (100, 200, 300):
        _feed(tl, statuses, "succeeded", ms)
    throttled[0] = 2
    now[0] += 9.9
    _feed(tl, statuses, "failed", 900)       # still the first bucket
    now[0] += 0.2                            # the next bucket: the first is written, without this record
    rate[0] = "80/20s"
    _feed(tl, statuses, "succeeded", 50)
    now[0] += 35                             # two empty buckets, then one more record
    _feed(tl, statuses, "invalid", 0)
    tl.close()
    lines = read_timeline(tmp_path)
    assert [line["t"] for line in lines] == ["2023-11-14T22:13:20Z", "2023-11-14T22:13:30Z", "2023-11-14T22:14:00Z"]
    first, second, third = lines
    assert (first["succeeded"], first["failed"], first["throttled_429"]) == (3, 1, 2)
    assert (first["p50_ms"], first["p90_ms"], first["p99_ms"]) == (200, 900, 900)
    assert first["rate"] == "80/20s"  # the rate when the bucket was written
    assert (second["succeeded"], second["failed"], second["throttled_429"], second["p50_ms"]) == (1, 0, 0, 50)
    assert (third["invalid"], third["p50_ms"]) == (1, None)
    assert {line["run_id"] for line in lines} == {"run-1"}
    assert sum(line["succeeded"] + line["failed"] + line["invalid"] for line in lines) == statuses.total()


def test_a_resumed_folder_appends_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    for run in ("a", "b"):
        statuses: Counter[str] = Counter()
        tl = Timeline(tmp_path, run, statuses=statuses, throttled=lambda: 0, clock=lambda: 1_700_000_000.0)
        _feed(tl, statuses, "succeeded", 10)
        tl.close()
    with open(tmp_path / "timeline.jsonl", "ab") as f:
        f.write(b'{"run_id":"c","t":')
    assert [line["run_id"] for line in read_timeline(tmp_path)] == ["a", "b"]


def test_a_run_that_decided_nothing_writes_no_line(tmp_path: Path) -> None:
    tl = Timeline(tmp_path, "r", statuses=Counter(), throttled=lambda: 0)
    tl.close()
    assert not (tmp_path / "timeline.jsonl").exists()
