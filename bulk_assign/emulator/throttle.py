"""Throttle windows: three plausible readings of "N writes per T seconds", as small pure classes.

Microsoft does not document how Intune's window works, so the emulator offers each candidate and the
engine's pacing can be tested against all of them. Every method takes ``now`` (monotonic seconds) as an
argument: the classes never read a clock, so unit tests drive them with made-up times instead of sleeping.

Protocol: ``wait(now)`` is 0.0 when one more write would be accepted right now, else the seconds until it
would be; ``take(now)`` records an accepted write. Rejected writes are never recorded, so hammering a
throttled tenant does not push the window further out (the emulator is kinder than some real services
here, on purpose: the engine's pacing, not the emulator's punishment, should decide run time).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from ..config import Rate


class Window(Protocol):
    """One budget (an app's writes, the tenant's writes, an app's reads)."""

    rate: Rate

    def wait(self, now: float) -> float: ...

    def take(self, now: float) -> None: ...

    def set_rate(self, rate: Rate, now: float) -> None: ...


class SlidingWindow:
    """At most ``count`` accepted writes in any interval of ``period`` seconds (a deque of timestamps)."""

    __slots__ = ("_accepted", "rate")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._accepted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        horizon = now - self.rate.period
        accepted = self._accepted
        while accepted and accepted[0] <= horizon:
            accepted.popleft()

    def wait(self, now: float) -> float:
        self._expire(now)
        excess = len(self._accepted) - self.rate.count
        if excess < 0:
            return 0.0
        # The write that has to age out before one more fits; after a budget cut there may be several.
        return max(0.0, self._accepted[excess] + self.rate.period - now)

    def take(self, now: float) -> None:
        self._accepted.append(now)

    def set_rate(self, rate: Rate, now: float) -> None:
        """Keep the accepted history: a cut budget takes effect at once against what was already sent."""
        self.rate = rate


class FixedWindow:
    """``count`` writes per aligned window ``[origin + k*period, origin + (k+1)*period)``."""

    __slots__ = ("_count", "_index", "origin", "rate")

    def __init__(self, rate: Rate, origin: float) -> None:
        self.rate = rate
        self.origin = origin
        self._index = 0
        self._count = 0

    def _roll(self, now: float) -> None:
        index = math.floor((now - self.origin) / self.rate.period)
        if index != self._index:
            self._index, self._count = index, 0

    def wait(self, now: float) -> float:
        self._roll(now)
        if self._count < self.rate.count:
            return 0.0
        return max(0.0, self.origin + (self._index + 1) * self.rate.period - now)

    def take(self, now: float) -> None:
        self._roll(now)
        self._count += 1

    def set_rate(self, rate: Rate, now: float) -> None:
        """Windows stay aligned to the origin; the current window's count is re-indexed on the new period."""
        self._roll(now)
        count = self._count
        self.rate = rate
        self._index = math.floor((now - self.origin) / rate.period)
        self._count = count


class TokenBucket:
    """A bucket of ``count`` tokens refilled at ``count/period`` per second; starts full (a burst is allowed)."""

    __slots__ = ("_tokens", "_updated", "rate")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate.count)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.rate.count), self._tokens + (now - self._updated) * self.rate.per_second)
            self._updated = now

    def wait(self, now: float, cost: float = 1.0) -> float:
        """``cost`` tokens (Entra's resource units) are needed; one more than the bucket holds never fits,
        so the cost is capped at the capacity (a lone expensive request waits for a full bucket)."""
        self._refill(now)
        cost = min(cost, float(self.rate.count))
        if self._tokens >= cost:
            return 0.0
        return (cost - self._tokens) / self.rate.per_second

    def take(self, now: float, cost: float = 1.0) -> None:
        self._refill(now)
        self._tokens -= min(cost, float(self.rate.count))

    def set_rate(self, rate: Rate, now: float) -> None:
        """Refill at the old rate up to now, then clamp to the new capacity."""
        self._refill(now)
        self.rate = rate
        self._tokens = min(self._tokens, float(rate.count))


def make_window(kind: str, rate: Rate, *, origin: float, now: float) -> Window:
    """The window for ``--throttle kind``; ``origin`` aligns fixed windows (server start)."""
    if kind == "sliding":
        return SlidingWindow(rate)
    if kind == "fixed":
        return FixedWindow(rate, origin)
    if kind == "bucket":
        return TokenBucket(rate, now)
    raise ValueError(f"unknown throttle kind {kind!r}")


class Budgets:
    """Every write and read budget of one emulated tenant: per app, per tenant, reads per app.

    A write is accepted only when both its app's window and the tenant's window have room; then both are
    charged. Windows for new apps are created on first use with the current per-app rate.
    """

    def __init__(self, kind: str, app_rate: Rate, tenant_rate: Rate, read_rate: Rate | None, *, origin: float) -> None:
        self.kind = kind
        self.origin = origin
        self.app_rate = app_rate
        self.read_rate = read_rate
        self.tenant = make_window(kind, tenant_rate, origin=origin, now=origin)
        self._apps: dict[str, Window] = {}
        self._reads: dict[str, Window] = {}

    def _app(self, app: str, now: float) -> Window:
        window = self._apps.get(app)
        if window is None:
            window = self._apps[app] = make_window(self.kind, self.app_rate, origin=self.origin, now=now)
        return window

    def try_write(self, app: str, now: float) -> float:
        """0.0 and charged when accepted; otherwise the seconds until a write would be accepted."""
        window = self._app(app, now)
        wait = max(window.wait(now), self.tenant.wait(now))
        if wait > 0.0:
            return wait
        window.take(now)
        self.tenant.take(now)
        return 0.0

    def try_read(self, app: str, now: float) -> float:
        """Like ``try_write`` for GETs, against the app's (larger, separate) read budget."""
        if self.read_rate is None:
            return 0.0
        window = self._reads.get(app)
        if window is None:
            window = self._reads[app] = make_window(self.kind, self.read_rate, origin=self.origin, now=now)
        wait = window.wait(now)
        if wait > 0.0:
            return wait
        window.take(now)
        return 0.0

    def set_rates(self, now: float, *, app: Rate | None = None, tenant: Rate | None = None) -> None:
        """Change budgets while running; history already accepted keeps counting against the new budget."""
        if app is not None:
            self.app_rate = app
            for window in self._apps.values():
                window.set_rate(app, now)
        if tenant is not None:
            self.tenant.set_rate(tenant, now)

    def clear(self, now: float) -> None:
        """Forget all history (admin reset of the whole state)."""
        self.origin = now
        self.tenant = make_window(self.kind, self.tenant.rate, origin=now, now=now)
        self._apps.clear()
        self._reads.clear()


class DirectoryBudgets:
    """Entra's quotas for the directory (devices, groups, memberships), separate from Intune's ``Budgets``.

    Microsoft documents these as a token bucket per application+tenant pair ("Identity and access service
    limits", https://learn.microsoft.com/graph/throttling-limits): every request costs resource units
    (``read_rate``, 3,500 per 10 s for a small tenant), and a write also costs one unit of the write quota
    (``write_rate``, 3,000 requests per 2 min 30 s). So the directory is always a bucket, whatever
    ``--throttle`` says: that option picks a reading of Intune's undocumented window, not Entra's. ``None``
    switches a quota off. Like ``Budgets``, refused requests are never charged.
    """

    def __init__(self, read_rate: Rate | None, write_rate: Rate | None) -> None:
        self.read_rate = read_rate
        self.write_rate = write_rate
        self._units: dict[str, TokenBucket] = {}  # per app, created full on first use
        self._writes: dict[str, TokenBucket] = {}

    @staticmethod
    def _bucket(buckets: dict[str, TokenBucket], rate: Rate | None, app: str, now: float) -> TokenBucket | None:
        if rate is None:
            return None
        bucket = buckets.get(app)
        if bucket is None:
            bucket = buckets[app] = TokenBucket(rate, now)
        return bucket

    def try_read(self, app: str, now: float, cost: int = 1) -> float:
        """0.0 and charged ``cost`` resource units when accepted; otherwise the seconds until it would be."""
        units = self._bucket(self._units, self.read_rate, app, now)
        if units is None:
            return 0.0
        wait = units.wait(now, cost)
        if wait == 0.0:
            units.take(now, cost)
        return wait

    def try_write(self, app: str, now: float) -> tuple[float, str]:
        """A write costs 1 resource unit and 1 of the write quota, charged together or not at all.

        Returns ``(0.0, "")`` when accepted, else the wait and which quota refused it (Entra's
        ``x-ms-throttle-information`` values ``ResourceUnitLimitExceeded`` / ``WriteLimitExceeded``)."""
        units = self._bucket(self._units, self.read_rate, app, now)
        writes = self._bucket(self._writes, self.write_rate, app, now)
        unit_wait = units.wait(now) if units is not None else 0.0
        write_wait = writes.wait(now) if writes is not None else 0.0
        if write_wait > 0.0 or unit_wait > 0.0:
            if write_wait >= unit_wait:
                return write_wait, "WriteLimitExceeded"
            return unit_wait, "ResourceUnitLimitExceeded"
        if units is not None:
            units.take(now)
        if writes is not None:
            writes.take(now)
        return 0.0, ""

    def clear(self) -> None:
        """Forget all history: every bucket starts full again."""
        self._units.clear()
        self._writes.clear()
