"""Pacing: await permission before every HTTP attempt, so the run spends Intune's budget without overdrawing it.

A ``Pacer`` is the seam (design.md): the engine calls ``acquire()`` before each attempt (retries included),
reports each 429 with ``on_throttle()``, and asks ``window_free_in()`` when a 429 came without Retry-After.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from ..config import Rate

log = logging.getLogger("bulk_assign")


class Pacer(Protocol):
    """Rate control for one kind of request (writes, or verification reads)."""

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        """Wait until ``amount`` more requests may be sent; returns how many were granted.

        With ``partial`` (a batch's items) the grant may be smaller than ``amount``; the caller sends the
        rest later. Without it, all of ``amount`` at once.
        """
        ...

    def on_throttle(self, retry_after: float | None) -> None:
        """The server answered 429 despite our pacing."""
        ...

    def on_accepted(self, latency: float, count: int = 1) -> None:
        """``count`` requests were accepted after ``latency`` seconds (adaptive pacers learn from it)."""
        ...

    def window_free_in(self) -> float:
        """Seconds until the oldest send of the current budget window ages out (a guess at when the server
        will accept again when it did not say)."""
        ...

    @property
    def effective_rate(self) -> Rate:
        """The rate this pacer currently sends at (reported in summary.json)."""
        ...


class LimiterPacer:
    """aiolimiter's leaky bucket at ``rate``, released one request at a time.

    Why capacity 1 and not ``rate.count``: a leaky bucket whose capacity equals the budget allows a full
    burst *and then* the steady rate within the same window, i.e. almost twice the budget in the first
    window, and a sliding-window server throttles the excess. Capacity ``burst`` (default 1) keeps every
    window within budget at the cost of not using the initial burst.
    """

    def __init__(self, rate: Rate, *, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        burst = max(1, min(burst, rate.count))
        self._limiter = AsyncLimiter(burst, burst / rate.per_second)
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=rate.count)
        self.throttled = 0

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        for _ in range(amount):
            await self._limiter.acquire()
            self._sent.append(self._clock())
        return amount

    def on_throttle(self, retry_after: float | None) -> None:
        self.throttled += 1

    def on_accepted(self, latency: float, count: int = 1) -> None:
        return None

    def window_free_in(self) -> float:
        if len(self._sent) < self._rate.count:
            return self._rate.period / self._rate.count
        return max(0.0, self._sent[0] + self._rate.period - self._clock())

    @property
    def effective_rate(self) -> Rate:
        return self._rate


class WindowPacer:
    """At most ``limit`` writes in any window of ``period`` (a sliding log), adapting ``limit`` to the server.

    Why not aiolimiter here: "100 writes per 20 s" as Intune enforces it may be a sliding window, fixed
    windows or a token bucket (undocumented). A log of the last sends guarantees the budget in *every*
    window, which satisfies all three, and still uses the initial burst the budget allows (a 300-device
    job at 100/20s takes ~40 s, not 60 s). aiolimiter's leaky bucket can only do one or the other: with
    capacity N it sends almost 2N in the first window; with capacity 1 it never bursts.

    The server counts a write when it *arrives*, we when we send it. A write whose answer is back arrived
    before that answer, so its place frees one window after the answer (plus ``margin``): causality, not an
    estimate. Until the answer is in, the window is widened by the largest recent request latency, so
    network jitter can never squeeze N+1 writes into one of the server's windows. Freeing on answers
    matters after a burst: the server queues it, and its answers come back over tens of milliseconds; the
    next window's sends follow them one by one instead of all waiting for the slowest (the slowest
    answer's latency once per window: about 3 % of a 1 s window, measured).

    Adaptive (429s that arrive anyway mean the real budget is smaller: another app shares the tenant, or
    the tenant's limit is lower): the writes the server accepted in a window *are* its budget, so once its
    Retry-After has passed the limit drops to 90 % of that (``_settle``: once per burst of 429s, never
    below half, and by at most a tenth within two windows of the last drop). Then it probes upwards:
    slowly near the budget it found (one small step every few clean windows), quickly below or above it.
    A step past what the server has shown it takes waits until its possible 429s are a small share
    (``probe_cost``) of the writes since the last 429: that matters for batches, whose steps come 20
    writes at a time. The configured rate stays the hard ceiling.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        margin: float = 0.005,
        probe_every: int = 2,
        probe_cost: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ceiling = rate
        self._margin = margin
        self._probe_every = probe_every
        self._probe_cost = probe_cost
        self._limit = float(rate.count)
        self._known_budget: float | None = None  # writes the server accepted per window at the last 429
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()  # permit times of the writes in the current window
        self._answered: deque[float] = deque()  # answer times, matched to the oldest writes of ``_sent``
        self._answer = asyncio.Event()
        self._accepted: deque[float] = deque()  # send times of the writes answered 2xx (last two windows)
        self._latency = 0.0  # largest recent latency, decaying over a window
        self._latency_at = 0.0
        self._lock = asyncio.Lock()
        now = clock()
        self._last_throttle = self._last_decrease = -math.inf
        self._last_grow = now
        self._clean_windows = 0
        self._peak = 0  # most writes in the window at once since the last look at growth
        self._proved = 0  # most writes a clean window carried since the last 429 decision
        self._since_throttle = 0  # writes granted since the last 429
        self._pending: float | None = None  # time of a 429 not decided on yet
        self._decide_at = -math.inf  # not before the server takes writes again (its Retry-After)
        self.throttled = 0
        self.changes: list[tuple[float, int]] = []  # (time, new limit), for reports and tests

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def period(self) -> float:
        """The window we keep: the budget's, widened by the recent latency and the margin."""
        return self._window + self._latency

    @property
    def _window(self) -> float:
        """The window after an answer: the budget's, with the margin."""
        return self.ceiling.period * (1 + self._margin) + 0.005

    def _frees_at(self, k: int, period: float) -> float:
        """When the log's ``k + 1`` oldest writes have all left the window (it expires from its left end).

        An answered write leaves one window after its answer, even when the latency estimate would let it
        go sooner: a write can leave later than its permit (held at the shared throttle gate), and only the
        answer is sure to come after the server counted it. Answers are matched to the oldest writes, not to
        their own (the engine does not say which): the write whose answer it really was then keeps the
        estimate of a later permit, so the log never frees earlier than the true matching would.
        """
        sent, answered, window = self._sent, self._answered, self._window
        frees = 0.0
        for i in range(k + 1):
            frees = max(frees, answered[i] + window if i < len(answered) else sent[i] + period)
        return frees

    def _expire(self, now: float, period: float) -> None:
        sent, answered = self._sent, self._answered
        while sent and self._frees_at(0, period) <= now:
            sent.popleft()
            if answered:
                answered.popleft()

    def _answered_now(self, now: float, count: int) -> None:
        """``count`` writes were answered (2xx or 429): the server has counted them, if ever, by now."""
        count = min(count, len(self._sent) - len(self._answered))
        if count > 0:
            self._answered.extend(itertools.repeat(now, count))
            self._answer.set()

    async def _wait(self, delay: float, answer_may_help: bool) -> None:
        """Sleep ``delay``, or less if an answer comes in that may free the window earlier."""
        if not answer_may_help:
            await self._sleep(delay)
            return
        self._answer.clear()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        answer = asyncio.ensure_future(self._answer.wait())
        try:
            await asyncio.wait((sleeper, answer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            answer.cancel()

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        """Wait until ``amount`` writes fit in the window together, then count them all from now.

        A batch is granted whole, never item by item: the server counts its items when the batch arrives, so
        all of them must fit in one window at the moment it leaves. Granting items one at a time (and
        restamping them when the last one came) let a batch that waited across a window boundary lose its
        first items from the log: they aged out together with the writes they had queued behind, the batch
        then left with all of them, and the server counted up to 19 writes the log no longer held (probes
        at 46 of a budget of 50 drew 6-10 429s per window).

        With ``partial``, a batch need not wait for room it cannot use whole: once a fifth of the limit fits
        (or the whole batch, if smaller), it is granted as many items as fit and the caller sends the rest
        later. After a cut from 100 to 50 the workers' waiting batches of 20 otherwise went two a window
        (80 % of the budget) until all of them had drained; now a window carries 20 + 20 + 10. The fifth
        bounds the extra requests at a few per window. Without ``partial``, a batch larger than the limit
        can never fit: it waits for an empty window and goes alone; the server refuses its excess items,
        which are resent.
        """
        async with self._lock:
            while True:
                now = self._clock()
                self._settle(now)
                self._grow(now)
                period = self.period
                self._expire(now, period)
                sent = self._sent
                want = amount
                if partial:
                    room = self.limit - len(sent)
                    need = max(1, min(amount, -(-self.limit // 5)))
                    want = min(amount, room) if room >= need else need
                keep = max(0, self.limit - want)  # sends of the window that may stay in it beside this one
                if len(sent) <= keep:
                    sent.extend(itertools.repeat(now, want))
                    self._peak = max(self._peak, len(sent))
                    self._since_throttle += want
                    return want
                k = len(sent) - keep - 1
                await self._wait(self._frees_at(k, period) - now, k >= len(self._answered))

    def on_accepted(self, latency: float, count: int = 1) -> None:
        """``count`` writes were accepted (2xx) after ``latency`` seconds on the wire."""
        now = self._clock()
        decay = math.exp(-(now - self._latency_at) / self.ceiling.period) if self._latency else 0.0
        self._latency = max(latency, self._latency * decay)
        self._latency_at = now
        self._answered_now(now, count)
        # Counted by when it was *sent*: a write sent within a window before some moment surely arrived in
        # it, while one merely answered within it may have arrived (and aged out at the server) earlier.
        self._accepted.extend([now - latency] * count)
        horizon = now - 2 * self.period  # _settle looks back a window from the 429, which may be a window ago
        while self._accepted and self._accepted[0] <= horizon:
            self._accepted.popleft()

    def on_throttle(self, retry_after: float | None) -> None:
        """Note the 429; the new limit is decided once the burst's other answers are in (``_settle``)."""
        self.throttled += 1
        now = self._clock()
        self._answered_now(now, 1)
        self._last_throttle = now
        self._clean_windows = 0
        self._since_throttle = 0
        if self._pending is None:
            # Decide when the server said it takes writes again (capped at a window): before that, writes it
            # took under an old, larger budget may still fill its window and would inflate the estimate.
            # Only the episode's first 429 sets this: later ones must not keep postponing the decision.
            self._pending = now
            self._decide_at = now + min(retry_after or 0.0, self.ceiling.period)

    def _settle(self, now: float) -> None:
        """Decide on a noted 429 once the server takes writes again (its Retry-After, at most a window).

        The server's budget N lies between two counts of the writes it accepted (by send time, one budget
        period each): ``at_refusal``, its window when it refused (N at most: it was full), and ``at_resume`` + 1,
        its window when it took writes again (it had room). What aged out in between tells which is tight,
        and the Retry-After says when that was. A short one (under a quarter window) means the window was
        over budget by what was about to age out: a cut budget, whose window still held what the old one
        let in (a cut from 100 to 50 read 87 at the refusal, and converging took a window more), so the
        count at the resume is N. A long one means our own last burst had to age out at once, leaving the
        window nearly empty at the resume, so the count at the refusal is N.

        Not decided at the 429 itself: the burst's other answers may still be on the wire, and waiters
        already inside ``acquire`` would decide before the Retry-After (the gate holds only new ones)."""
        pending = self._pending
        if pending is None:
            return
        in_flight = pending + 2 * self._latency + 0.005
        resumed = max(self._decide_at, in_flight)
        if now < resumed:
            return
        self._pending = None
        if pending - self._last_decrease < self.period / 2:
            return  # a late 429 from the burst the last decision was about
        window = self.ceiling.period
        at_refusal = sum(1 for t in self._accepted if pending - window < t <= in_flight)
        # counted when the server took writes again, not now: the first permit may come later, and the
        # window drains meanwhile
        at_resume = sum(1 for t in self._accepted if resumed - window < t <= resumed)
        steady = self._decide_at - pending < window / 4
        accepted = min(at_resume + 1, at_refusal) if steady else at_refusal
        # At most halved by one event; by a tenth when the last decrease was under two windows ago: 429s
        # that soon are mostly the old budget's writes still draining from the server's window, not a
        # second cut, and halving again on them left a run at a quarter of its budget.
        floor = 0.9 if now - self._last_decrease < 2 * self.period else 0.5
        limit = max(self._limit * floor, min(self._limit * 0.9, accepted * 0.9), 1.0)
        self._known_budget = max(float(accepted), limit)  # a halving is a guess too: probe from it with care
        self._last_decrease = now
        self._proved = self._peak = 0  # what the server took before this 429 proves nothing now
        self._set(limit, now)

    def _grow(self, now: float) -> None:
        """After each full window without a 429: a careful step near the known budget, a bold one elsewhere.

        A clean window proves the server takes what the window *carried*, not the limit. Per device the two
        are the same, but ``--batch`` sends up to 20 items at a time: at a limit of 45..59 a window often
        carries two batches (40) whatever the limit, so the careful steps prove nothing, and whenever smaller
        batches (resent 429 items) or a third batch fit, the window carries up to the limit at once. So a
        step past what the server is known to take (the known budget, or the most a clean window carried
        since the last 429) may cost that excess in 429s; it waits until the writes sent since the last 429
        are large enough that this cost stays within ``probe_cost`` of them (per device, a careful step of 1
        waits for 100 writes: about as long as ``probe_every`` already does).
        """
        period = self.period
        if self._limit >= self.ceiling.count or now - self._last_grow < period or now - self._last_throttle < period:
            return
        self._last_grow = now
        self._clean_windows += 1
        self._proved = max(self._proved, self._peak)
        self._peak = 0
        known = self._known_budget
        near = known is not None and known * 0.8 <= self._limit <= known * 1.05
        if near and self._clean_windows % self._probe_every:
            return
        step = max(1.0, self.ceiling.count * (0.01 if near else 0.05))
        new = min(float(self.ceiling.count), self._limit + step)
        excess = int(new) - max(known or 0.0, float(self._proved))
        if excess > 0 and self._since_throttle * self._probe_cost < excess:
            return
        self._set(new, now)

    def _set(self, limit: float, now: float) -> None:
        old = self.limit
        self._limit = limit
        if self.limit != old:
            self.changes.append((now, self.limit))
            log.info("pacing: effective rate %d/%gs (was %d; ceiling %s)", self.limit, self.ceiling.period, old,
                     self.ceiling)

    def window_free_in(self) -> float:
        if len(self._sent) < self.limit:
            return 0.0
        return max(0.0, self._frees_at(len(self._sent) - self.limit, self.period) - self._clock())

    @property
    def effective_rate(self) -> Rate:
        return Rate(self.limit, self.ceiling.period)
