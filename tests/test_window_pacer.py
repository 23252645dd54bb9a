"""WindowPacer with a fake clock: the budget holds in every window, the initial burst is used, and the
adaptive limit falls on 429s and climbs back, never above the configured rate."""

from __future__ import annotations

import asyncio
import bisect
import selectors

import pytest

from bulk_assign.config import Rate
from bulk_assign.pipeline.pacing import Pacer, WindowPacer


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


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of waiting for it: concurrent tasks, timers
    and events behave as in real time, without real sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        loop = self

        class Selector(selectors.DefaultSelector):
            def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
                assert timeout is not None, "deadlock: nothing scheduled"
                loop.now += max(1e-6, timeout)  # a tick per turn, as a real clock would move
                return super().select(0)

        super().__init__(Selector())

    def time(self) -> float:
        return self.now


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
    assert pacer.limit == 100  # decided at the first permit once the server takes writes again
    t.now = 2.9
    await pacer.acquire()
    assert pacer.limit == 100  # not before its Retry-After: its window may still hold an old budget's writes
    t.now = 3.0
    await pacer.acquire()
    assert pacer.limit == 54  # 90 % of the 60 writes the server took in this window
    pacer.on_throttle(None)  # a late 429 of the same burst is the same signal
    t.now = 3.2
    await pacer.acquire()
    assert pacer.limit == 54
    # within two windows of the last decrease: by a tenth at most (old writes draining)
    assert await limit_after_a_429(pacer, t, at=25.0, accepted=10) == 48
    # later: never more than halved by one event, whatever the estimate says
    assert await limit_after_a_429(pacer, t, at=70.0, accepted=10) == 24


async def limit_after_a_429(pacer: WindowPacer, t: FakeTime, *, at: float, accepted: int) -> int:
    """At ``at``: ``accepted`` writes answered 2xx, then a 429 without Retry-After; the limit decided at the
    next permit."""
    t.now = at
    for _ in range(accepted):
        pacer.on_accepted(0.05)
    pacer.on_throttle(None)
    t.now = at + 0.2
    await pacer.acquire()
    return pacer.limit


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
    for _ in range(40):  # throttle-free windows, each filled to the limit (a window the limit held back)
        t.now += 21.0
        await pacer.acquire()
        limits.append(pacer.limit)
        for _ in range(pacer.limit - 1):
            await pacer.acquire()
    steps = [b - a for a, b in zip([54, *limits], limits, strict=False)]
    near = [step for limit, step in zip(limits, steps, strict=False) if limit <= 63]
    assert set(near) <= {0, 1} and near.count(1) * 2 <= len(near) + 1  # +1 every other clean window near 60
    assert {step for limit, step in zip(limits, steps, strict=False) if 68 < limit < 100} <= {0, 5}  # bold above it
    assert limits[-1] == 100 and max(limits) == 100  # capped by the configured rate
    assert pacer.effective_rate == Rate(100, 20.0)


async def test_windows_that_carry_less_than_the_limit_do_not_push_it_past_the_known_budget() -> None:
    """A clean window proves the server takes what it carried, not the limit: while a run sends a trickle the
    limit may climb back to the budget the server showed, but not beyond it on no evidence."""
    t = FakeTime()
    pacer = make(Rate(100, 20.0), t)
    for _ in range(60):
        pacer.on_accepted(0.0)
    pacer.on_throttle(None)
    t.now += 0.1
    await pacer.acquire()
    for _ in range(40):  # one write per window
        t.now += 21.0
        await pacer.acquire()
    assert pacer.limit == 60


class HalvingServer:
    """A simulated sliding-window server (budget per 1 s) that throttles each item on its own, like the
    emulator's ``sliding`` window: rejected items are not counted, Retry-After is when the window frees."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.accepted: list[float] = []
        self.items: list[tuple[float, bool]] = []  # (arrival, throttled)

    def take(self, arrival: float) -> float | None:
        """None if the item was accepted, else its Retry-After."""
        window = [a for a in self.accepted[-self.budget * 2:] if a > arrival - 1.0]
        excess = len(window) - self.budget
        self.items.append((arrival, excess >= 0))
        if excess < 0:
            self.accepted.append(arrival)
            return None
        return max(0.01, window[excess] + 1.0 - arrival)


async def send_paced(pacer: WindowPacer, t: FakeTime, server: HalvingServer, size: int) -> None:
    """One request of ``size`` items (a $batch when > 1); throttled items wait their Retry-After and go again
    together, never with the items that were accepted (as ``BatchWorker`` does)."""
    while size:
        await pacer.acquire(size)
        arrival = t.now + 0.004  # a little network latency
        waits = [server.take(arrival) for _ in range(size)]
        retry_after = [w for w in waits if w is not None]
        for w in waits:
            if w is None:
                pacer.on_accepted(0.008)
            else:
                pacer.on_throttle(w)
        size = len(retry_after)
        if size:
            await t.sleep(max(retry_after))


def settled_after(items: list[tuple[float, bool]], cut: float) -> tuple[int, list[int]]:
    """The benchmark's measure: the first window after the cut from which the 429 share of all remaining
    windows stays <= 1 %, and the 429s per window."""
    windows = int(max(a for a, _ in items) - cut) + 1
    sent, refused = [0] * windows, [0] * windows
    for arrival, throttled in items:
        if arrival >= cut:
            sent[int(arrival - cut)] += 1
            refused[int(arrival - cut)] += throttled
    k = next(k for k in range(windows) if sum(refused[k:]) <= 0.01 * sum(sent[k:]))
    return k, refused


@pytest.mark.parametrize("size", [1, 20], ids=["per device", "batch of 20"])
async def test_converges_within_two_windows_after_the_server_halves_its_budget(size: int) -> None:
    """The server's budget drops from 100 to 50 per window mid-run; per device and with batches of 20 items."""
    t = FakeTime()
    pacer = make(Rate(100, 1.0), t)
    server = HalvingServer(100)
    for _ in range(500 // size):
        await send_paced(pacer, t, server, size)
    assert not any(throttled for _, throttled in server.items)  # at the configured budget: no 429 at all
    cut = t.now
    server.budget = 50
    for _ in range(1500 // size):
        await send_paced(pacer, t, server, size)
    settled, per_window = settled_after(server.items, cut)
    assert per_window[0] + per_window[1] > 0  # the cut is noticed at once ...
    assert settled <= 2, per_window  # ... and two windows later it has settled
    assert sum(per_window[2:]) <= 10  # only a careful probe's few 429s now and then (of ~1,500 writes)
    assert 45 <= pacer.limit <= 60
    # and the settled windows still use most of the budget: a pacer that gave up on it would show no 429s too
    used = sum(1 for a, throttled in server.items if a > cut + 2 and not throttled) / (t.now - cut - 2)
    assert used >= 40


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


async def test_batches_probe_for_a_third_batch_only_when_its_429s_stay_within_one_percent() -> None:
    """With batches of 20 a limit of 45..59 sends two batches per window whatever its value: those clean
    windows prove 40, not the limit, and the step that lets a third batch in may overshoot a known budget of
    50 by 10. That step waits until 10 429s are at most 1 % of what was sent since the last one."""
    t = FakeTime()
    pacer = make(Rate(100, 1.0), t)
    for _ in range(50):
        pacer.on_accepted(0.0)
    pacer.on_throttle(None)
    t.now += 0.1
    await pacer.acquire(20)
    assert pacer.limit == 50  # halved (the server took 50: the known budget)
    sent, limits = 20, []
    while sent < 2000:
        for _ in range(2):
            await pacer.acquire(20)
            sent += 20
        # smaller batches (resent 429 items) could fill any limit: past the known budget of 50 it never
        # grows by more than 1 % of the writes sent since the 429
        assert pacer.limit - 50 <= sent * 0.01
        if pacer.limit >= 60:
            break
        limits.append(pacer.limit)
        t.now += 1.1  # the rest of a clean window
    assert max(limits) < 60  # the limit crept up, but never so far that a third batch fitted ...
    assert sent >= 1000  # ... until 10 429s would be at most 1 % of the writes since the last 429
    assert pacer.limit >= 60  # and then it does probe (a budget that rose again is found)


async def test_an_answered_write_frees_its_place_one_window_after_its_answer() -> None:
    """The server counted a write before it answered: one window after the answer, it is out of every one of
    the server's windows, however slow other answers of its burst were. A write without an answer keeps the
    window widened by the slowest recent latency."""
    t = FakeTime()
    pacer = make(Rate(2, 1.0), t)
    await pacer.acquire(2)
    t.now = 0.01
    pacer.on_accepted(0.01)  # the first write's answer
    t.now = 0.3
    pacer.on_accepted(0.3)  # the second's: a slow one (the server queued the burst)
    await pacer.acquire()
    assert t.now == pytest.approx(0.01 + 1.0 * 1.005 + 0.005)  # not 0.0 + 1.01 + 0.3
    await pacer.acquire()  # the second write's place frees one window after its own answer
    assert t.now == pytest.approx(0.3 + 1.01)
    third = 0.01 + 1.01
    await pacer.acquire()  # the third write has no answer: its place frees after the latency-widened window
    assert t.now == pytest.approx(third + 1.01 + 0.3)


def test_an_answer_wakes_a_pacer_that_was_waiting_for_the_latency_widened_window() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(1, 1.0), clock=loop.time)
        await pacer.acquire()
        await asyncio.sleep(0.3)
        pacer.on_accepted(0.3)  # a slow answer: the window is widened by 0.3 s
        await asyncio.sleep(5.0)
        await pacer.acquire()  # at 5.3; its answer comes quickly
        loop.call_later(0.01, pacer.on_accepted, 0.01)
        await pacer.acquire()  # waits, first for 5.3 + 1.01 + ~0.3, then, woken by the answer, for less
        return loop.time()

    loop = VirtualLoop()
    try:
        granted = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert granted == pytest.approx(5.31 + 1.01, abs=0.001)


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


async def test_a_cut_under_steady_traffic_is_read_when_the_server_takes_writes_again() -> None:
    """Steady traffic (100 writes spread over the last second), then the budget drops to 81: the server's
    window still holds ~100 writes of the old budget, so the 429's own window says 100. Decided at its
    (short) Retry-After, when the window has drained to the new budget, the estimate is 81, not 100."""
    t = FakeTime()
    pacer = make(Rate(100, 1.0), t)
    for _ in range(100):
        t.now += 0.01
        pacer.on_accepted(0.004)
    pacer.on_throttle(0.2)  # the server drains 20 of its 100 before it takes another write
    t.now += 0.05
    await pacer.acquire()  # a waiter already inside acquire: too early to read the budget
    assert pacer.limit == 100
    t.now += 0.15
    await pacer.acquire()
    assert pacer.limit == 72  # 90 % of the 80 (+1) the window held when the server took writes again


async def test_a_burst_that_drains_at_once_is_read_at_the_refusal() -> None:
    """A burst of 50 then a 429 whose Retry-After is the whole window: when the server takes writes again
    its window is empty, which says nothing; the 50 it held at the refusal are the budget."""
    t = FakeTime()
    pacer = make(Rate(100, 1.0), t)
    for _ in range(50):
        pacer.on_accepted(0.004)
    t.now += 0.005
    pacer.on_throttle(1.0)
    t.now += 1.0
    await pacer.acquire()
    assert pacer.limit == 50  # max(half of 100, 90 % of 50 = 45)


async def test_a_batch_formed_for_an_older_limit_is_granted_what_fits() -> None:
    """After a cut a worker still holds a batch of 20 formed at the old limit. With ``partial`` the pacer grants
    as many of its items as fit once a fifth of the limit does, so a window of 50 carries 20 + 20 + 10; all
    or nothing, two batches of 20 a window would use 80 % of the budget."""
    t = FakeTime()
    pacer = make(Rate(50, 1.0), t)
    assert await pacer.acquire(20, partial=True) == 20
    assert await pacer.acquire(20, partial=True) == 20
    assert await pacer.acquire(20, partial=True) == 10  # 10 places left, a fifth of 50 fits: all 10 go
    assert len(pacer.budget._sent) == 50 and t.now == 0.0
    assert await pacer.acquire(20) == 20  # without partial: all or nothing (here once the window freed)
    assert t.now >= 1.0
    pacer2 = make(Rate(50, 1.0), t)
    await pacer2.acquire(45)
    started = t.now
    assert await pacer2.acquire(20, partial=True) == 20  # 5 places: less than a fifth, so it waits for room
    assert t.now > started
