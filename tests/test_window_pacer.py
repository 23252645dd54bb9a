"""WindowPacer with a fake clock: the budget holds in every window, the initial burst is used, and the
adaptive limit falls on 429s and climbs back, never above the configured rate."""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter

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


async def test_a_429_sets_the_limit_to_what_the_server_accepted_decided_once_per_burst() -> None:
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t)
    for _ in range(60):
        pacer.on_accepted(0.05)
    t.now = 1.0
    pacer.on_throttle(2.0)
    assert pacer.limit == 100  # decided once the burst's other answers are in, at the next permit
    t.now = 1.2
    await pacer.acquire()
    assert pacer.limit == 54  # 90 % of the 60 writes the server took in this window
    pacer.on_throttle(None)  # a late 429 of the same burst is the same signal
    t.now = 1.4
    await pacer.acquire()
    assert pacer.limit == 54
    t.now = 25.0
    for _ in range(10):
        pacer.on_accepted(0.05)
    pacer.on_throttle(None)
    t.now = 25.2
    await pacer.acquire()
    assert pacer.limit == 27  # never more than halved by one event, whatever the estimate says


async def test_probing_is_careful_near_the_known_budget_and_bold_elsewhere_never_above_the_ceiling() -> None:
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t, probe_every=2)
    for _ in range(60):
        pacer.on_accepted(0.0)
    pacer.on_throttle(None)
    t.now += 0.1
    await pacer.acquire()
    assert pacer.limit == 54
    limits = []
    for _ in range(40):  # throttle-free windows
        t.now += 21.0
        await pacer.acquire()
        limits.append(pacer.limit)
    steps = [b - a for a, b in zip([54, *limits], limits, strict=False)]
    near = [step for limit, step in zip(limits, steps, strict=False) if limit <= 63]
    assert set(near) <= {0, 1} and near.count(1) * 2 <= len(near) + 1  # +1 every other clean window near 60
    assert {step for limit, step in zip(limits, steps, strict=False) if 68 < limit < 100} <= {0, 5}  # bold above it
    assert limits[-1] == 100 and max(limits) == 100  # capped by the configured rate
    assert pacer.effective_rate == Rate(100, 20.0)


async def test_converges_within_two_windows_after_the_server_halves_its_budget() -> None:
    """A simulated sliding-window server whose budget drops from 100 to 50 per window mid-run."""
    t = FakeTime()
    pacer = make(Rate(100, 1.0), t)
    accepted: list[float] = []
    throttled_at: list[float] = []
    budget = 100

    async def send_one() -> None:
        while True:
            await pacer.acquire()
            arrival = t.now + 0.004  # a little network latency
            in_window = sum(1 for a in accepted if a > arrival - 1.0)
            if in_window < budget:
                accepted.append(arrival)
                pacer.on_accepted(0.008)
                return
            throttled_at.append(t.now)
            pacer.on_throttle(None)
            await t.sleep(max(0.01, min(a for a in accepted if a > arrival - 1.0) + 1.0 - arrival))

    for _ in range(500):
        await send_one()
    assert throttled_at == []  # at the configured budget: no 429 at all
    cut = t.now
    budget = 50
    for _ in range(1500):
        await send_one()
    per_window = Counter(int(x - cut) for x in throttled_at)
    first = min(per_window)
    assert first <= 1  # the cut is noticed at once ...
    settled = sum(n for w, n in per_window.items() if w > first + 2)  # ... and two windows later it has settled:
    assert settled <= (t.now - cut) / 6  # only a careful probe's single 429 now and then
    assert sum(per_window.values()) <= 10  # of ~1,500 writes after the cut
    assert 45 <= pacer.limit <= 52


async def test_a_batch_counts_whole_in_the_window_even_when_it_waited_across_a_window_boundary() -> None:
    """At a limit of 47 a third batch of 20 gets 7 permits, then waits for the window to free. Granted item
    by item, those 7 aged out of the log together with the writes they waited behind, and the batch left
    with 20 items the log counted as 13: the server saw up to 19 writes more than the limit in a window."""
    t = FakeTime()
    pacer = make(Rate(47, 1.0), t, margin=0.0)
    times: list[float] = []
    for _ in range(12):
        await pacer.acquire(20)
        times += [t.now] * 20  # a batch leaves, and the server counts its items, once it is granted
    assert max_in_any_window(times, 1.0) <= 47
    assert max_in_any_window(times, 1.0) == 40  # two batches of 20 per window: a third never fits in 47


async def test_a_batch_larger_than_the_limit_waits_for_an_empty_window() -> None:
    t = FakeTime()
    pacer = make(Rate(10, 1.0), t, margin=0.0)
    await pacer.acquire(3)
    await pacer.acquire(20)  # formed before the limit fell: it can never fit, so it goes alone
    assert t.now > 1.0
    await pacer.acquire(1)
    assert t.now > 2.0


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
