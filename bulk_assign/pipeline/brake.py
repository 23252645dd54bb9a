"""The safety brake: stop a run in which most devices fail, instead of failing all of them.

Why: when every device fails for the same reason (a wrong group id, a revoked permission, a deleted
profile), going on only writes 30,000 identical failures, burns the tenant's write budget and hides the
cause in a huge report. After a minimum sample, once the failed share exceeds ``max_failure_rate`` the
run stops (exit 4) with a message naming the most common error, and the rest of the devices stay
``remaining`` for a ``--resume`` after the cause is fixed.

Pure: the engine feeds it one observation per device decided by a request (succeeded, failed,
``already_assigned``); it never sees invalid rows or skips decided without a request, which say nothing
about whether the target works. ``window`` optionally judges only the last N decided devices, so a
failure that starts mid-run (a permission revoked at 2 a.m. after 20,000 successes) trips the brake
without waiting for the failures to outnumber the whole night's successes.
"""

from __future__ import annotations

from collections import Counter, deque

from ..errors import UsageError

__all__ = ["FailureBrake", "parse_failure_rate"]


def parse_failure_rate(text: str | float) -> float:
    """``0.5``, ``50%`` or ``50`` (read as percent when above 1) -> a share in (0, 1]; else ``UsageError``."""
    raw = str(text).strip()
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        value = -1.0
    if raw.endswith("%") or value > 1:
        value /= 100
    if not 0 < value <= 1:
        raise UsageError(f"--max-failure-rate {text!r}: expected a share such as 0.5 or 50%")
    return value


class FailureBrake:
    """Trips once at least ``min_sample`` devices are decided and more than ``max_failure_rate`` failed.

    Once tripped it stays tripped. ``describe()`` is the message for the log and the summary.
    """

    def __init__(self, max_failure_rate: float = 0.5, min_sample: int = 50, window: int | None = None) -> None:
        if not 0 < max_failure_rate <= 1:
            raise ValueError("max_failure_rate must be in (0, 1]")
        if min_sample < 1:
            raise ValueError("min_sample must be at least 1")
        if window is not None and window < min_sample:
            raise ValueError("window must be at least min_sample")
        self.max_failure_rate = max_failure_rate
        self.min_sample = min_sample
        self.window = window
        self.decided = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self._recent: deque[bool] | None = deque(maxlen=window) if window is not None else None
        self._recent_failed = 0
        self.tripped = False

    def observe(self, failed: bool, error_code: str | None = None) -> bool:
        """Count one decided device; True once the brake has tripped."""
        self.decided += 1
        if failed:
            self.failed += 1
            self.errors[error_code or "unknown"] += 1
        if self._recent is not None:
            if len(self._recent) == self._recent.maxlen and self._recent[0]:
                self._recent_failed -= 1
            self._recent.append(failed)
            self._recent_failed += failed
        if not self.tripped:
            sample, failures = self._sample()
            self.tripped = sample >= self.min_sample and failures > self.max_failure_rate * sample
        return self.tripped

    def _sample(self) -> tuple[int, int]:
        """The devices judged: all of them, or the last ``window``."""
        if self._recent is not None:
            return len(self._recent), self._recent_failed
        return self.decided, self.failed

    def describe(self) -> str:
        """E.g. ``stopped: 48 of 50 devices failed (96% > 50%); most common error: Forbidden (45)``."""
        sample, failures = self._sample()
        share = failures / sample if sample else 0.0
        scope = f" of the last {sample}" if self._recent is not None and sample < self.decided else f" of {sample}"
        text = (f"{'stopped' if self.tripped else 'running'}: {failures}{scope} devices failed "
                f"({share:.0%} {'>' if share > self.max_failure_rate else '<='} {self.max_failure_rate:.0%})")
        if self.errors:
            code, count = self.errors.most_common(1)[0]
            text += f"; most common error: {code} ({count})"
        return text
