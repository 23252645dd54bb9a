"""LimiterPacer: window bookkeeping driven by an injected clock; acquire only at rates that need ~no real waiting."""

from __future__ import annotations

import asyncio

import pytest

from bulk_assign.config import Rate
from bulk_assign.pipeline.pacing import LimiterPacer, Pacer


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_limiter_pacer_is_a_pacer() -> None:
    pacer: Pacer = LimiterPacer(Rate(100, 20.0))
    assert pacer.effective_rate == Rate(100, 20.0)


def test_window_free_in_before_the_window_is_full_is_one_slot() -> None:
    clock = Clock()
    assert LimiterPacer(Rate(100, 20.0), clock=clock).window_free_in() == pytest.approx(0.2)
    assert LimiterPacer(Rate(3, 60.0), clock=clock).window_free_in() == pytest.approx(20.0)


async def test_window_free_in_after_a_full_window_waits_for_the_oldest_send() -> None:
    clock = Clock(100.0)
    # burst == count: the whole budget is available at once, so no real waiting
    pacer = LimiterPacer(Rate(3, 60.0), burst=3, clock=clock)
    for t in (100.0, 101.0, 102.0):
        clock.now = t
        await pacer.acquire()
        if t < 102.0:
            assert pacer.window_free_in() == pytest.approx(20.0)  # not full yet
    clock.now = 110.0
    assert pacer.window_free_in() == pytest.approx(50.0)  # 100 + 60 - 110
    clock.now = 159.5
    assert pacer.window_free_in() == pytest.approx(0.5)
    clock.now = 200.0
    assert pacer.window_free_in() == 0.0  # never negative


async def test_window_slides_with_each_send() -> None:
    clock = Clock(0.0)
    pacer = LimiterPacer(Rate(2, 0.002), burst=2, clock=clock)  # 3rd acquire waits ~1 ms for real
    for t in (0.0, 0.0005, 0.001):
        clock.now = t
        await pacer.acquire()
    # the oldest of the last two sends (0.0005) ages out at 0.0025
    assert pacer.window_free_in() == pytest.approx(0.0015)


async def test_acquire_amount_records_every_send() -> None:
    clock = Clock(5.0)
    pacer = LimiterPacer(Rate(4, 60.0), burst=4, clock=clock)
    await pacer.acquire(4)
    clock.now = 35.0
    assert pacer.window_free_in() == pytest.approx(30.0)  # 5 + 60 - 35: all four counted


async def test_acquire_paces_one_at_a_time_at_the_rate() -> None:
    pacer = LimiterPacer(Rate(1000, 1.0))  # capacity 1, one slot per ms
    loop = asyncio.get_running_loop()
    start = loop.time()
    await pacer.acquire(6)
    elapsed = loop.time() - start
    assert elapsed >= 0.004  # the first is free, the next five each wait for a ~1 ms slot
    assert elapsed < 1.0


async def test_burst_is_clamped_to_the_count() -> None:
    pacer = LimiterPacer(Rate(3, 60.0), burst=50)
    await asyncio.wait_for(pacer.acquire(3), timeout=1.0)  # the full budget at once
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pacer.acquire(), timeout=0.05)  # the 4th would wait ~20 s


async def test_default_burst_is_one() -> None:
    pacer = LimiterPacer(Rate(3, 60.0))
    await asyncio.wait_for(pacer.acquire(), timeout=1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pacer.acquire(), timeout=0.05)  # the 2nd waits ~20 s, not a burst of 3


def test_on_throttle_counts() -> None:
    pacer = LimiterPacer(Rate(10, 1.0))
    assert pacer.throttled == 0
    pacer.on_throttle(2.0)
    pacer.on_throttle(None)
    assert pacer.throttled == 2
    assert pacer.effective_rate == Rate(10, 1.0)  # the basic pacer does not slow down on its own
