"""The write budget's arithmetic, without I/O: every method takes ``now``, nothing waits or sleeps.

``WindowBudget`` decides when writes may go; ``pacing.WindowPacer`` is the asyncio adapter that waits
for it. Kept apart like the emulator's ``throttle.py``, so the decisions are tested with plain numbers.

At most ``limit`` writes in any window of ``period`` (a sliding log), the limit adapting to the server.
Why a log: "100 writes per 20 s" as Intune enforces it may be a sliding window, fixed windows or a token
bucket (undocumented). A log of the last sends keeps the budget in *every* window, which satisfies all
three, and still uses the initial burst the budget allows (300 devices at 100/20s take ~40 s, not 60 s).

The server counts a write when it *arrives*, we when we grant it. A write whose answer is back arrived
before that answer, so its place frees one window after the answer (plus ``margin``): causality, not an
estimate. That holds for every answer, a failure too: a 5xx, a reset or a timeout may come after the
server counted the write, so it keeps its place for a window after its answer, like a success; it is not
an acceptance, though, and never counts towards the budget the server is seen to take. Until the answer
is in, the window is widened by the largest recent latency of an accepted write, so network jitter can
never squeeze N+1 writes into one of the server's windows. Freeing on answers matters after a burst: the
server queues it and its answers come back over tens of milliseconds; the next window's sends follow
them one by one instead of all waiting for the slowest.

Every granted write must be answered exactly once (``answered``), and each answer is matched to its own
write by time: the newest unanswered write granted before the answer's send (``now - latency``). A
matching by count alone drifts for good as soon as one answer is missing or comes for a write that already
left the log (a timeout, long after): every later answer then frees a write other than its own, and with
answers one window apart the log holds a growing share of the window for writes long done. A write whose
answer never comes still leaves the log after the latency-widened window.

Adaptive (429s that arrive anyway mean the real budget is smaller: another app shares the tenant, or the
tenant's limit is lower): the writes the server accepted in a window *are* its budget, so once its
Retry-After has passed the limit drops to 90 % of that (``_settle``: once per burst of 429s, never below
half, and by at most a tenth within two windows of the last drop). Then it probes upwards: slowly near the
budget it found (one small step every few clean windows), quickly below or above it. A step past what the
server has shown it takes waits until its possible 429s are a small share (``probe_cost``) of the writes
since the last 429: that matters for batches, whose steps come 20 writes at a time. The configured rate
stays the hard ceiling.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import deque
from typing import NamedTuple

from ..config import Rate

log = logging.getLogger("bulk_assign")

_UNANSWERED = math.inf
_SKEW = 0.001  # seconds: a send measured by the caller may read a clock a hair behind the grant's


class _Write:
    """One granted write: when it was granted, and when its answer came (``_UNANSWERED`` until then)."""

    __slots__ = ("answered", "granted")

    def __init__(self, granted: float) -> None:
        self.granted = granted
        self.answered = _UNANSWERED


class Grant(NamedTuple):
    """What ``WindowBudget.grant`` decided: writes granted now, else how long to wait and whether an answer
    may end the wait sooner (when a write of the log is still unanswered)."""

    granted: int
    wait: float = 0.0
    answer_may_help: bool = False


_ONE = Grant(1)


class WindowBudget:
    """At most ``limit`` writes in any window of ``period``, adapting ``limit`` to the server (see the module)."""

    def __init__(
        self, rate: Rate, *, now: float, margin: float = 0.005, probe_every: int = 2, probe_cost: float = 0.01
    ) -> None:
        self.ceiling = rate
        self._margin = margin
        # the window after an answer: the budget's, with the margin (constant: read for every grant and answer)
        self._window = rate.period * (1 + margin) + 0.005
        self._probe_every = probe_every
        self._probe_cost = probe_cost
        self._limit = float(rate.count)
        self._known_budget: float | None = None  # writes the server accepted per window at the last 429
        self._log: deque[_Write] = deque()  # the writes in the current window, in grant order
        self._open: list[_Write] = []  # those of them not answered yet, in grant order
        self._open_at: list[float] = []  # their grant times (for bisect)
        self._accepted: deque[float] = deque()  # send times of the writes answered 2xx (last two windows)
        self._latency = 0.0  # largest recent latency of an accepted write, decaying over a window
        self._latency_at = 0.0
        self._last_throttle = self._last_decrease = -math.inf
        self._last_grow = now
        self._clean_windows = 0
        self._peak = 0  # most writes in the window at once since the last look at growth
        self._proved = 0  # most writes a clean window carried since the last 429 decision
        self._since_throttle = 0  # writes granted since the last 429
        self._pending: float | None = None  # time of a 429 not decided on yet
        self._decide_at = -math.inf  # not before the server takes writes again (its Retry-After)
        self.changes: list[tuple[float, int]] = []  # (time, new limit), for reports and tests

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_window(self) -> int:
        """Writes the log holds (granted within the current window, or not yet aged out)."""
        return len(self._log)

    @property
    def period(self) -> float:
        """The window we keep for an unanswered write: the budget's, widened by the recent latency and the margin."""
        return self._window + self._latency

    # -- granting ------------------------------------------------------------------------------------

    def grant(self, now: float, amount: int = 1, partial: bool = False) -> Grant:
        """Grant ``amount`` writes that fit in the window together (counted from ``now``), or say how long to wait.

        A batch is granted whole, never item by item: the server counts its items when the batch arrives, so
        all of them must fit in one window at the moment it leaves. Items granted one at a time, and
        restamped when the last one came, could age out of the log while the batch still waited, and the
        server then counted writes the log no longer held.

        With ``partial``, a batch need not wait for room it cannot use whole: once a fifth of the limit fits
        (or the whole batch, if smaller), it is granted as many items as fit and the caller sends the rest
        later. Batches formed before a cut (20 each, at a limit of 50) would otherwise go two a window, 80 %
        of the budget, until all of them had drained; the fifth bounds the extra requests at a few per
        window. Without ``partial``, a batch larger than the limit can never fit: it waits for an empty
        window and goes alone; the server refuses its excess items, which are resent.
        """
        if self._pending is not None:  # (both return at once otherwise: the usual case, checked here)
            self._settle(now)
        if self._limit < self.ceiling.count:
            self._grow(now)
        period = self.period
        self._expire(now, period)
        limit = self.limit
        want = amount
        if partial:
            room = limit - len(self._log)
            need = max(1, min(amount, -(-limit // 5)))
            want = min(amount, room) if room >= need else need
        keep = max(0, limit - want)  # writes of the window that may stay in it beside these
        log = self._log
        if len(log) > keep:
            self._sweep(now, period)
        if len(log) <= keep and want == 1:  # one device: the same as below, without the lists
            write = _Write(now)
            log.append(write)
            self._open.append(write)
            self._open_at.append(now)
            if len(log) > self._peak:
                self._peak = len(log)
            self._since_throttle += 1
            return _ONE
        if len(log) <= keep:
            writes = [_Write(now) for _ in range(want)]
            log.extend(writes)
            self._open.extend(writes)
            self._open_at.extend(itertools.repeat(now, want))
            self._peak = max(self._peak, len(log))
            self._since_throttle += want
            return Grant(want)
        return Grant(0, max(0.0, self._nth_free(len(log) - keep, period) - now), bool(self._open))

    def _frees(self, period: float) -> list[float]:
        """When each write of the log leaves the window, oldest first.

        An answered write leaves one window after its answer, even when the latency estimate would let it
        go sooner: a write can leave later than its grant (held at the shared throttle gate), and only the
        answer is sure to come after the server counted it. Each write leaves on its own: a slow answer
        holds its own place, not those of the writes granted after it.
        """
        window = self._window
        return [w.granted + period if w.answered == _UNANSWERED else w.answered + window for w in self._log]

    def _nth_free(self, n: int, period: float) -> float:
        """When ``n`` more writes of the log will have left the window."""
        return sorted(self._frees(period))[n - 1]

    def _expire(self, now: float, period: float) -> None:
        """Drop the writes that left the window from the log's old end (cheap; ``_sweep`` does the rest)."""
        log, window = self._log, self._window
        while log:
            oldest = log[0]
            if oldest.answered == _UNANSWERED:
                if oldest.granted + period > now:
                    return
                del self._open[0], self._open_at[0]  # the oldest unanswered write is the oldest open one
            elif oldest.answered + window > now:
                return
            log.popleft()

    def _sweep(self, now: float, period: float) -> None:
        """Drop every write that left the window, also those behind an older one that has not."""
        frees = self._frees(period)
        if all(f > now for f in frees):
            return
        kept = [w for w, f in zip(self._log, frees, strict=True) if f > now]
        self._log.clear()
        self._log.extend(kept)
        self._open = [w for w in kept if w.answered == _UNANSWERED]
        self._open_at = [w.granted for w in self._open]

    def window_free_in(self, now: float) -> float:
        """Seconds until the window has room for one more write (a guess at when the server will accept again
        when a 429 did not say)."""
        period = self.period
        self._sweep(now, period)
        if len(self._log) < self.limit:
            return 0.0
        return max(0.0, self._nth_free(len(self._log) - self.limit + 1, period) - now)

    # -- answers -------------------------------------------------------------------------------------

    def answered(self, now: float, count: int = 1, *, accepted: bool = False, latency: float | None = None) -> bool:
        """``count`` granted writes were answered at ``now``, sent ``latency`` seconds earlier; ``accepted``:
        with a 2xx. Returns whether a write of the log was matched (a waiter may now be granted sooner).

        Any answer: the server has counted the write, if ever, by now. A failure (5xx, reset, timeout) may
        have been counted too, so it is matched like a success; only an acceptance teaches the latency and
        counts towards the budget the server is seen to take.
        """
        if accepted and latency is not None:
            if latency < self._latency or now < self._latency_at:  # else the decayed estimate is below latency
                decay = math.exp(-(now - self._latency_at) / self.ceiling.period) if self._latency else 0.0
                self._latency = max(latency, self._latency * decay)
            else:
                self._latency = latency
            self._latency_at = now
            # Counted by when it was *sent*: a write sent within a window before some moment surely arrived
            # in it, while one merely answered within it may have arrived (and aged out at the server) earlier.
            if count == 1:
                self._accepted.append(now - latency)
            else:
                self._accepted.extend(itertools.repeat(now - latency, count))
            horizon = now - 2 * self.period  # _settle looks back a window from the 429, maybe a window ago
            while self._accepted and self._accepted[0] <= horizon:
                self._accepted.popleft()
        return self._match(now, count, None if latency is None else now - latency)

    def _match(self, now: float, count: int, sent_at: float | None) -> bool:
        """Mark ``count`` unanswered writes answered at ``now``: the newest granted by ``sent_at`` (their own:
        the caller sends right after the grant), or the oldest ones when the send time is unknown. Writes
        granted after ``sent_at`` are not theirs; when none is left, their writes already left the log."""
        open_, open_at = self._open, self._open_at
        if count <= 0 or not open_:
            return False
        if sent_at is None:
            first, end = 0, min(count, len(open_))
        else:
            end = bisect.bisect_right(open_at, sent_at + _SKEW)
            first = max(0, end - count)
        for write in open_[first:end]:
            write.answered = now
        del open_[first:end], open_at[first:end]
        return end > first

    def throttled(self, now: float, retry_after: float | None) -> None:
        """A 429: decided on once the burst's other answers are in (``_settle``). Its write's answer is
        reported through ``answered`` like any other."""
        self._last_throttle = now
        self._clean_windows = 0
        self._since_throttle = 0
        if self._pending is None:
            # Decide when the server said it takes writes again (capped at a window): before that, writes it
            # took under an old, larger budget may still fill its window and would inflate the estimate.
            # Only the episode's first 429 sets this: later ones must not keep postponing the decision.
            self._pending = now
            self._decide_at = now + min(retry_after or 0.0, self.ceiling.period)

    # -- adapting the limit --------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        """Decide on a noted 429 once the server takes writes again (its Retry-After, at most a window).

        The server's budget N lies between two counts of the writes it accepted (by send time, one budget
        period each): ``at_refusal``, its window when it refused (N at most: it was full), and ``at_resume`` + 1,
        its window when it took writes again (it had room). What aged out in between tells which is tight,
        and the Retry-After says when that was. A short one (under a quarter window) means the window was
        over budget by what was about to age out: a cut budget, whose window still held what the old one
        let in, so the count at the resume is N. A long one means our own last burst had to age out at
        once, leaving the window nearly empty at the resume, so the count at the refusal is N.

        Not decided at the 429 itself: the burst's other answers may still be on the wire, and writes
        already waiting for a grant would be decided on before the Retry-After (the gate holds only new ones).
        """
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
        # counted when the server took writes again, not now: the first grant may come later, and the
        # window drains meanwhile
        at_resume = sum(1 for t in self._accepted if resumed - window < t <= resumed)
        steady = self._decide_at - pending < window / 4
        accepted = min(at_resume + 1, at_refusal) if steady else at_refusal
        # At most halved by one event; by a tenth when the last decrease was under two windows ago: 429s
        # that soon are mostly the old budget's writes still draining from the server's window, not a
        # second cut, and halving again on them would leave a run at a quarter of its budget.
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
