"""WindowPacer with a fake clock: the budget holds in every window, the initial burst is used, and the
adaptive limit falls on 429s and climbs back, never above the configured rate."""

from __future__ import annotations

import asyncio
import bisect

from bulk_assign.config import Rate
from bulk_assign.pacing import Pacer, WindowPacer


class FakeTime:
    """Time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def max_in_any_window(times: list[float], period: float) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered))


async def send_times(pacer: WindowPacer, t: FakeTime, n: int, workers: int = 8) -> list[float]:
    times: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            await pacer.acquire()
            times.append(t.now)

    await asyncio.gather(*(worker(n // workers) for _ in range(workers)))
    return times


def make(rate: Rate, t: FakeTime, **kw: float) -> WindowPacer:
    return WindowPacer(rate, clock=t.clock, sleep=t.sleep, **kw)


def test_window_pacer_is_a_pacer() -> None:
    pacer: Pacer = WindowPacer(Rate(100, 20.0))
    assert pacer.effective_rate == Rate(100, 20.0)


async def test_initial_burst_then_never_more_than_the_budget_in_any_window() -> None:
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t)
    times = await send_times(pacer, t, 400)
    assert times[:100] == [0.0] * 100  # the burst the budget allows, at once
    assert max_in_any_window(times, 20.0) == 100
    # 400 writes at 100/20 s need three full windows after the burst: ~60 s, not 80 s
    assert 60.0 <= max(times) <= 60.0 * 1.02 + 0.05


async def test_a_300_device_job_at_100_per_20s_takes_about_40s_not_60s() -> None:
    t = FakeTime()
    times = await send_times(make(Rate(100, 20.0), t), t, 300, workers=10)
    assert 40.0 <= max(times) <= 40.0 * 1.02 + 0.05


async def test_throttle_lowers_the_limit_once_per_window_and_it_climbs_back_to_the_ceiling() -> None:
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t, decrease=0.5, increase=0.1)
    pacer.on_throttle(2.0)
    assert pacer.limit == 50
    pacer.on_throttle(2.0)  # the same window's 429s are one signal
    assert pacer.limit == 50
    t.now += 15.0  # more than half a window later, another 429: down again
    pacer.on_throttle(None)
    assert pacer.limit == 25
    # throttle-free windows: +10 per window, up to the ceiling and never above it
    for _ in range(20):
        t.now += 21.0
        await pacer.acquire()
    assert pacer.limit == 100
    assert pacer.effective_rate == Rate(100, 20.0)
    assert [limit for _, limit in pacer.changes][:3] == [50, 25, 35]
    assert max(limit for _, limit in pacer.changes) == 100


async def test_after_a_decrease_the_lower_limit_holds_and_grows_one_step_per_window() -> None:
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t, decrease=0.5, increase=0.0001)  # step: 1 write per window
    pacer.on_throttle(None)
    times = await send_times(pacer, t, 200)
    assert sum(1 for x in times if x < 20.0) == 50
    windows = max(times) / 20.0
    assert max_in_any_window(times, 20.0) <= 50 + windows + 1
    assert pacer.limit < 100


async def test_window_free_in_points_at_the_oldest_send_of_the_full_window() -> None:
    t = FakeTime()
    pacer = make(Rate(3, 10.0), t)
    assert pacer.window_free_in() == 0.0
    for at in (0.0, 1.0, 2.0):
        t.now = at
        await pacer.acquire()
    t.now = 4.0
    assert 6.0 < pacer.window_free_in() <= 6.0 + 10.0 * 0.01 + 0.01 + 1e-9


async def test_batches_count_items_not_requests() -> None:
    t = FakeTime()
    pacer = make(Rate(40, 20.0), t)
    await pacer.acquire(20)
    await pacer.acquire(20)
    assert t.now == 0.0
    await pacer.acquire(20)  # the third batch of 20 waits for the window
    assert t.now >= 20.0
