"""WindowBudget with plain numbers: the budget holds in every window, the initial burst is used, every answer
(failures too) frees its own write's place one window after it, and the adaptive limit falls on 429s and
climbs back, never above the configured rate. A few tests drive WindowPacer, the asyncio adapter, where
waiting itself is what they test."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
import selectors
from collections import deque
from typing import Any

import pytest

from bulk_assign.config import Rate
from bulk_assign.pipeline.budget import WindowBudget
from bulk_assign.pipeline.pacing import Pacer, WindowPacer


def make(rate: Rate, **kw: Any) -> WindowBudget:
    return WindowBudget(rate, now=0.0, **kw)


def grant(budget: WindowBudget, now: float, amount: int = 1, partial: bool = False) -> tuple[int, float]:
    """Grant ``amount`` writes at ``now`` or as soon as the budget allows: (granted, when)."""
    for _ in range(10_000):
        decision = budget.grant(now, amount, partial)
        if decision.granted:
            return decision.granted, now
        assert decision.wait > 0
        now += decision.wait
    raise AssertionError("never granted")


def grant_times(budget: WindowBudget, n: int, now: float = 0.0) -> list[float]:
    times = []
    for _ in range(n):
        _, now = grant(budget, now)
        times.append(now)
    return times


def max_in_any_window(times: list[float], period: float) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered))


def accept(budget: WindowBudget, now: float, count: int, latency: float = 0.05) -> None:
    for _ in range(count):
        budget.answered(now, accepted=True, latency=latency)


def test_initial_burst_then_never_more_than_the_budget_in_any_window() -> None:
    times = grant_times(make(Rate(100, 20.0)), 400)
    assert times[:100] == [0.0] * 100  # the burst the budget allows, at once
    assert max_in_any_window(times, 20.0) == 100
    # 400 writes at 100/20 s need three full windows after the burst: ~60 s, not 80 s
    assert 60.0 <= max(times) <= 60.0 * 1.02 + 0.05


def test_a_300_device_job_at_100_per_20s_takes_about_40s_not_60s() -> None:
    times = grant_times(make(Rate(100, 20.0)), 300)
    assert 40.0 <= max(times) <= 40.0 * 1.02 + 0.05


def test_a_429_sets_the_limit_to_what_the_server_accepted_decided_once_per_burst() -> None:
    budget = make(Rate(100, 20.0))
    accept(budget, 0.0, 60)
    budget.throttled(1.0, 2.0)
    assert budget.limit == 100  # decided at the first grant once the server takes writes again
    budget.grant(2.9)
    assert budget.limit == 100  # not before its Retry-After: its window may still hold an old budget's writes
    budget.grant(3.0)
    assert budget.limit == 54  # 90 % of the 60 writes the server took in this window
    budget.throttled(3.0, None)  # a late 429 of the same burst is the same signal
    budget.grant(3.2)
    assert budget.limit == 54
    # within two windows of the last decrease: by a tenth at most (old writes draining)
    assert limit_after_a_429(budget, at=25.0, accepted=10) == 48
    # later: never more than halved by one event, whatever the estimate says
    assert limit_after_a_429(budget, at=70.0, accepted=10) == 24


def limit_after_a_429(budget: WindowBudget, *, at: float, accepted: int) -> int:
    """At ``at``: ``accepted`` writes answered 2xx, then a 429 without Retry-After; the limit decided at the
    next grant."""
    accept(budget, at, accepted)
    budget.throttled(at, None)
    budget.grant(at + 0.2)
    return budget.limit


def test_failed_answers_never_count_as_accepted() -> None:
    """A 5xx or a reset may have been counted by the server, but it is not a write the server took: the
    budget read at a 429 counts the accepted ones only."""
    budget = make(Rate(100, 20.0))
    accept(budget, 0.0, 60)
    for _ in range(30):
        budget.answered(0.0, accepted=False, latency=0.05)
    budget.throttled(1.0, None)
    budget.grant(1.2)
    assert budget.limit == 54  # 90 % of 60, not of 90


def test_probing_is_careful_near_the_known_budget_and_bold_elsewhere_never_above_the_ceiling() -> None:
    budget = make(Rate(100, 20.0), probe_every=2)
    accept(budget, 0.0, 60, latency=0.0)
    budget.throttled(0.0, None)
    now = 0.1
    budget.grant(now)
    assert budget.limit == 54
    limits = []
    for _ in range(40):  # throttle-free windows, each filled to the limit (a window the limit held back)
        now += 21.0
        _, now = grant(budget, now)
        limits.append(budget.limit)
        for _ in range(budget.limit - 1):
            _, now = grant(budget, now)
    steps = [b - a for a, b in zip([54, *limits], limits, strict=False)]
    near = [step for limit, step in zip(limits, steps, strict=False) if limit <= 63]
    assert set(near) <= {0, 1} and near.count(1) * 2 <= len(near) + 1  # +1 every other clean window near 60
    assert {step for limit, step in zip(limits, steps, strict=False) if 68 < limit < 100} <= {0, 5}  # bold above it
    assert limits[-1] == 100 and max(limits) == 100  # capped by the configured rate


def test_windows_that_carry_less_than_the_limit_do_not_push_it_past_the_known_budget() -> None:
    """A clean window proves the server takes what it carried, not the limit: while a run sends a trickle the
    limit may climb back to the budget the server showed, but not beyond it on no evidence."""
    budget = make(Rate(100, 20.0))
    accept(budget, 0.0, 60, latency=0.0)
    budget.throttled(0.0, None)
    now = 0.1
    budget.grant(now)
    for _ in range(40):  # one write per window
        now += 21.0
        grant(budget, now)
    assert budget.limit == 60


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


def send_paced(budget: WindowBudget, now: float, server: HalvingServer, size: int) -> float:
    """One request of ``size`` items (a $batch when > 1); throttled items wait their Retry-After and go again
    together, never with the items that were accepted (as ``BatchWorker`` does). Returns the time after."""
    while size:
        _, now = grant(budget, now, size)
        arrival = now + 0.004  # a little network latency
        waits = [server.take(arrival) for _ in range(size)]
        answered = now + 0.008
        retry_after = [w for w in waits if w is not None]
        accept(budget, answered, size - len(retry_after), latency=0.008)
        for w in retry_after:
            budget.answered(answered, accepted=False, latency=0.008)
            budget.throttled(answered, w)
        size = len(retry_after)
        if size:
            now += max(retry_after)
    return now


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
def test_converges_within_two_windows_after_the_server_halves_its_budget(size: int) -> None:
    """The server's budget drops from 100 to 50 per window mid-run; per device and with batches of 20 items."""
    budget = make(Rate(100, 1.0))
    server = HalvingServer(100)
    now = 0.0
    for _ in range(500 // size):
        now = send_paced(budget, now, server, size)
    assert not any(throttled for _, throttled in server.items)  # at the configured budget: no 429 at all
    cut = now
    server.budget = 50
    for _ in range(1500 // size):
        now = send_paced(budget, now, server, size)
    settled, per_window = settled_after(server.items, cut)
    assert per_window[0] + per_window[1] > 0  # the cut is noticed at once ...
    assert settled <= 2, per_window  # ... and two windows later it has settled
    assert sum(per_window[2:]) <= 10  # only a careful probe's few 429s now and then (of ~1,500 writes)
    assert 45 <= budget.limit <= 60
    # and the settled windows still use most of the budget: a pacer that gave up on it would show no 429s too
    used = sum(1 for a, throttled in server.items if a > cut + 2 and not throttled) / (now - cut - 2)
    assert used >= 40


def test_a_batch_counts_whole_in_the_window_even_when_it_waited_across_a_window_boundary() -> None:
    """At a limit of 47 a third batch of 20 does not fit: it waits for the window to free and then counts
    whole. Granted item by item, its first items could age out of the log while it waited, and the server
    would count writes the log no longer held."""
    budget = make(Rate(47, 1.0), margin=0.0)
    times: list[float] = []
    now = 0.0
    for _ in range(12):
        _, now = grant(budget, now, 20)
        times += [now] * 20  # a batch leaves, and the server counts its items, once it is granted
    assert max_in_any_window(times, 1.0) == 40  # two batches of 20 per window: a third never fits in 47


def test_a_batch_larger_than_the_limit_waits_for_an_empty_window() -> None:
    budget = make(Rate(10, 1.0), margin=0.0)
    budget.grant(0.0, 3)
    _, now = grant(budget, 0.0, 20)  # formed before the limit fell: it can never fit, so it goes alone
    assert now > 1.0
    _, later = grant(budget, now, 1)
    assert later > 2.0


def test_batches_probe_for_a_third_batch_only_when_its_429s_stay_within_one_percent() -> None:
    """With batches of 20 a limit of 45..59 sends two batches per window whatever its value: those clean
    windows prove 40, not the limit, and the step that lets a third batch in may overshoot a known budget of
    50 by 10. That step waits until 10 429s are at most 1 % of what was sent since the last one."""
    budget = make(Rate(100, 1.0))
    accept(budget, 0.0, 50, latency=0.0)
    budget.throttled(0.0, None)
    _, now = grant(budget, 0.1, 20)
    assert budget.limit == 50  # halved (the server took 50: the known budget)
    sent, limits = 20, []
    while sent < 2000:
        for _ in range(2):
            _, now = grant(budget, now, 20)
            sent += 20
        # smaller batches (resent 429 items) could fill any limit: past the known budget of 50 it never
        # grows by more than 1 % of the writes sent since the 429
        assert budget.limit - 50 <= sent * 0.01
        if budget.limit >= 60:
            break
        limits.append(budget.limit)
        now += 1.1  # the rest of a clean window
    assert max(limits) < 60  # the limit crept up, but never so far that a third batch fitted ...
    assert sent >= 1000  # ... until 10 429s would be at most 1 % of the writes since the last 429
    assert budget.limit >= 60  # and then it does probe (a budget that rose again is found)


def test_an_answered_write_frees_its_place_one_window_after_its_answer() -> None:
    """The server counted a write before it answered: one window after the answer, it is out of every one of
    the server's windows, however slow other answers of its burst were. A write without an answer keeps the
    window widened by the slowest recent latency."""
    budget = make(Rate(2, 1.0))
    budget.grant(0.0, 2)
    budget.answered(0.01, accepted=True, latency=0.01)  # the first write's answer
    budget.answered(0.3, accepted=True, latency=0.3)  # the second's: a slow one (the server queued the burst)
    _, third = grant(budget, 0.3)
    assert third == pytest.approx(0.01 + 1.0 * 1.005 + 0.005)  # not 0.0 + 1.01 + 0.3
    _, fourth = grant(budget, third)  # the second write's place frees one window after its own answer
    assert fourth == pytest.approx(0.3 + 1.01)
    _, fifth = grant(budget, fourth)  # the third write has no answer: it frees after the latency-widened window
    assert fifth == pytest.approx(third + 1.01 + 0.3)


def test_a_slow_answer_holds_its_own_place_only() -> None:
    """One slow answer (the server delayed it) keeps one place a little longer, not every place behind it."""
    budget = make(Rate(3, 1.0))
    budget.grant(0.0, 3)
    budget.answered(0.01, accepted=True, latency=0.01)
    budget.answered(0.01, accepted=True, latency=0.01)
    budget.answered(0.5, accepted=True, latency=0.5)
    assert budget.grant(1.02, 2).granted == 2  # the two fast ones' places
    assert budget.grant(1.02).wait == pytest.approx(0.5 + 1.01 - 1.02)


def test_a_failed_answer_frees_its_place_one_window_after_it_like_any_answer() -> None:
    """A 5xx or a reset may come after the server counted the write: its place is held for a window after
    the answer, not forgotten at once; and not longer either."""
    budget = make(Rate(2, 1.0))
    budget.grant(0.0, 2)
    budget.answered(0.01, accepted=True, latency=0.01)
    budget.answered(0.02, accepted=False, latency=0.02)  # a 503
    assert budget.grant(1.0).granted == 0  # both still in the window
    assert budget.grant(1.021).granted == 1  # the success's place, a window after its answer
    assert budget.grant(1.021).wait == pytest.approx(0.02 + 1.01 - 1.021)  # the failure's: after its own
    assert budget.grant(1.031).granted == 1


def paced_with_faults(budget: WindowBudget, *, report_failures: bool, writes: int = 3000) -> list[float]:
    """32 workers, each sending one write at a time, answered 5-30 ms later; one write in ten fails (a 503,
    a reset), reported as failed or (a lost report) never. An event simulation in plain numbers, waiters in
    turn as under the adapter's lock: returns the grant times."""
    rng = random.Random(3)
    waiting = deque(range(32))  # workers waiting for a grant, in order
    answers: list[tuple[float, float, bool | None, int]] = []  # (when, latency, accepted or not reported, worker)
    grants: list[float] = []
    now = 0.0
    while len(grants) < writes:
        while answers and answers[0][0] <= now:
            at, latency, accepted, worker = heapq.heappop(answers)
            if accepted is not None:
                budget.answered(at, accepted=accepted, latency=latency)
            waiting.append(worker)
        if not waiting:
            now = answers[0][0]
            continue
        decision = budget.grant(now)
        if decision.granted:
            grants.append(now)
            latency = rng.uniform(0.005, 0.03)
            failed = len(grants) % 10 == 3
            report = (not failed) if report_failures or not failed else None
            heapq.heappush(answers, (now + latency, latency, report, waiting.popleft()))
            continue
        now += decision.wait
        if decision.answer_may_help and answers:
            now = min(now, answers[0][0])
    return grants


@pytest.mark.parametrize("report_failures", [True, False], ids=["failures reported", "failures never answered"])
def test_faults_do_not_erode_the_budget_over_many_windows(report_failures: bool) -> None:
    """Every window carries the whole limit, however many writes failed before. Matched to the oldest writes
    by count (the old pacer, which heard of successes and 429s only), each fault shifted all later answers by
    one write for good, and in this very scenario the windows carried 100, 90, 81, 73, ... 3."""
    grants = paced_with_faults(make(Rate(100, 1.0)), report_failures=report_failures)
    per_window = [sum(1 for t in grants if k <= t < k + 1) for k in range(int(grants[-1]))]
    assert min(per_window) >= 97, per_window  # 100 per 1.01 s plus the latency, every window
    assert max_in_any_window(grants, 1.0) <= 100


def test_an_answer_whose_write_already_left_the_window_frees_no_other() -> None:
    """A timeout reported long after its write aged out of the log must not mark a write in flight as
    answered (it would then free a window after that answer, whenever the write really arrives)."""
    budget = make(Rate(10, 1.0))
    budget.grant(0.0)
    assert budget.grant(5.0).granted == 1  # the first write is out of the window by now; this one is in flight
    assert budget.answered(100.0, accepted=False, latency=100.0) is False  # the first one's timeout
    assert budget.answered(5.02, accepted=True, latency=0.02) is True  # the second write's own answer


def test_window_free_in_points_at_the_oldest_send_of_the_full_window() -> None:
    budget = make(Rate(3, 10.0))
    assert budget.window_free_in(0.0) == 0.0
    for at in (0.0, 1.0, 2.0):
        budget.grant(at)
    assert 6.0 < budget.window_free_in(4.0) <= 6.0 + 10.0 * 0.01 + 0.01 + 1e-9


def test_batches_count_items_not_requests() -> None:
    budget = make(Rate(40, 20.0))
    assert budget.grant(0.0, 20).granted == 20
    assert budget.grant(0.0, 20).granted == 20
    _, now = grant(budget, 0.0, 20)  # the third batch of 20 waits for the window
    assert now >= 20.0


def test_a_cut_under_steady_traffic_is_read_when_the_server_takes_writes_again() -> None:
    """Steady traffic (100 writes spread over the last second), then the budget drops to 81: the server's
    window still holds ~100 writes of the old budget, so the 429's own window says 100. Decided at its
    (short) Retry-After, when the window has drained to the new budget, the estimate is 81, not 100."""
    budget = make(Rate(100, 1.0))
    now = 0.0
    for _ in range(100):
        now += 0.01
        budget.answered(now, accepted=True, latency=0.004)
    budget.throttled(now, 0.2)  # the server drains 20 of its 100 before it takes another write
    budget.grant(now + 0.05)  # a write already waiting for a grant: too early to read the budget
    assert budget.limit == 100
    budget.grant(now + 0.2)
    assert budget.limit == 72  # 90 % of the 80 (+1) the window held when the server took writes again


def test_a_burst_that_drains_at_once_is_read_at_the_refusal() -> None:
    """A burst of 50 then a 429 whose Retry-After is the whole window: when the server takes writes again
    its window is empty, which says nothing; the 50 it held at the refusal are the budget."""
    budget = make(Rate(100, 1.0))
    accept(budget, 0.0, 50, latency=0.004)
    budget.throttled(0.005, 1.0)
    budget.grant(1.005)
    assert budget.limit == 50  # max(half of 100, 90 % of 50 = 45)


def test_a_batch_formed_for_an_older_limit_is_granted_what_fits() -> None:
    """After a cut a worker still holds a batch of 20 formed at the old limit. With ``partial`` the budget
    grants as many of its items as fit once a fifth of the limit does, so a window of 50 carries 20 + 20 +
    10; all or nothing, two batches of 20 a window would use 80 % of the budget."""
    budget = make(Rate(50, 1.0))
    assert budget.grant(0.0, 20, partial=True).granted == 20
    assert budget.grant(0.0, 20, partial=True).granted == 20
    assert budget.grant(0.0, 20, partial=True).granted == 10  # 10 places left, a fifth of 50 fits: all 10 go
    assert budget.in_window == 50
    granted, now = grant(budget, 0.0, 20)  # without partial: all or nothing (here once the window freed)
    assert granted == 20 and now >= 1.0
    other = make(Rate(50, 1.0))
    other.grant(0.0, 45)
    assert other.grant(0.0, 20, partial=True).granted == 0  # 5 places: less than a fifth, so it waits for room


# -- the asyncio adapter ------------------------------------------------------------------------------


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


def run_virtual(scenario: asyncio.Future[float] | object) -> float:
    loop = VirtualLoop()
    try:
        return float(loop.run_until_complete(scenario))  # type: ignore[arg-type]
    finally:
        loop.close()


def test_window_pacer_is_a_pacer() -> None:
    pacer: Pacer = WindowPacer(Rate(100, 20.0))
    assert pacer.effective_rate == Rate(100, 20.0)


def test_concurrent_waiters_take_turns_and_keep_the_budget() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(100, 20.0), clock=loop.time)
        times: list[float] = []

        async def worker() -> None:
            for _ in range(50):
                await pacer.acquire()
                times.append(loop.time())

        await asyncio.gather(*(worker() for _ in range(8)))
        assert max_in_any_window(times, 20.0) == 100
        return max(times)

    assert 60.0 <= run_virtual(scenario()) <= 60.0 * 1.02 + 0.05


def test_an_answer_wakes_a_pacer_that_was_waiting_for_the_latency_widened_window() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(1, 1.0), clock=loop.time)
        await pacer.acquire()
        await asyncio.sleep(0.3)
        pacer.on_accepted(0.3)  # a slow answer: the window is widened by 0.3 s
        await asyncio.sleep(5.0)
        await pacer.acquire()  # at 5.3; its answer comes quickly, and is a failure (a 503)
        loop.call_later(0.01, pacer.on_failed, 0.01)
        await pacer.acquire()  # waits, first for 5.3 + 1.01 + ~0.3, then, woken by the answer, for less
        return loop.time()

    assert run_virtual(scenario()) == pytest.approx(5.31 + 1.01, abs=0.001)


def test_a_refused_batch_frees_all_its_places() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(20, 1.0), clock=loop.time)
        await pacer.acquire(20)
        await asyncio.sleep(0.01)
        pacer.on_throttle(None, 20)  # one 429 for the whole batch: 20 answers
        assert pacer.throttled == 1 and pacer.budget.window_free_in(loop.time()) == pytest.approx(1.01)
        return loop.time()

    run_virtual(scenario())


def test_a_new_caller_never_overtakes_one_waiting_for_its_turn() -> None:
    """The lock-free first decision is only taken when nobody holds or waits for the turn: a caller that
    arrives while another waits for room is granted after it, in the order of arrival."""
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(3, 1.0), clock=loop.time)
        order: list[str] = []

        async def take(name: str, amount: int = 1) -> None:
            await pacer.acquire(amount)
            order.append(name)

        await take("burst", 2)  # one place left until t = 1.01 (no answer will come)
        first = asyncio.ensure_future(take("first", 2))
        await asyncio.sleep(0.1)  # "first" (2) now waits for the window under the lock
        second = asyncio.ensure_future(take("second"))  # 1 would fit, but "first" came first: it queues
        await asyncio.gather(first, second)
        assert order == ["burst", "first", "second"] and pacer._queued == 0
        return loop.time()

    assert run_virtual(scenario()) > 1.0  # "second" waited for the window "first" waited for


def test_the_first_decision_without_the_lock_is_the_budgets() -> None:
    """A caller alone gets its grant without the lock and without yielding, and a refused one then waits
    under the lock as before."""
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pacer = WindowPacer(Rate(3, 1.0), clock=loop.time)
        assert [await pacer.acquire() for _ in range(3)] == [1, 1, 1]
        assert not pacer._lock.locked() and pacer.budget.in_window == 3
        await pacer.acquire()  # refused at once, granted when the first write leaves the window
        assert pacer._queued == 0 and pacer.budget.in_window == 1
        return loop.time()

    assert run_virtual(scenario()) == pytest.approx(1.01 * 1 + 0.005, abs=0.01)
