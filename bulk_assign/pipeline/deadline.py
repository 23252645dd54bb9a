"""When an unattended run must stop starting devices: ``--deadline HH:MM`` and ``--max-runtime 6h``.

Why stop *starting* early instead of stopping at the limit: a device in flight has an intent on disk and
possibly a request at Graph; cutting it off leaves it in doubt (verified, at a cost, by the next run).
So the engine stops taking new devices once the time left is no more than the time it needs to drain
(requests in flight, retries, report flush), and the run ends near the limit, not after it. The devices
left are ``remaining``; ``--resume`` carries on the next night.

The deadline is wall-clock time (what the operator means by "stop before 06:00", and it keeps counting
while a machine sleeps); the maximum runtime is measured on the monotonic clock (immune to clock steps
and DST). Both clocks are injectable, so tests never wait.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Literal
from zoneinfo import ZoneInfo

from ..config import parse_duration
from ..errors import UsageError

__all__ = ["StopClock", "StopReason", "parse_deadline", "parse_max_runtime"]

StopReason = Literal["deadline", "max-runtime"]
_HHMM = re.compile(r"\s*(\d{1,2}):(\d{2})\s*")


def parse_deadline(text: str, now: datetime) -> datetime:
    """``HH:MM`` local time -> the next such moment after ``now`` (today, or tomorrow if already past).

    ``now`` is an aware datetime; with a ``ZoneInfo`` zone the deadline follows that zone's rules (so
    "06:00" stays 06:00 across a DST change tonight), otherwise the system's local time rules. The result
    is aware. A bad spelling raises ``UsageError`` with an example.
    """
    match = _HHMM.fullmatch(text)
    hour, minute = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise UsageError(f"--deadline {text!r}: expected a local time as HH:MM (24-hour), e.g. --deadline 06:30")
    if now.tzinfo is None:
        now = now.astimezone()  # naive means local time
    zone = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else None
    local_now = now.astimezone(zone)  # zone None: the system's local time
    for days in (0, 1, 2):  # 2: a nonexistent local time (DST gap) can resolve to before ``now``
        day = local_now.date() + timedelta(days=days)
        wall = datetime.combine(day, dtime(hour, minute))
        candidate = wall.replace(tzinfo=zone) if zone is not None else wall.astimezone()
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a later day always has the time")  # pragma: no cover


def parse_max_runtime(text: str) -> float:
    """``6h``, ``90m``, ``1h30m`` -> seconds, positive; else ``UsageError``.

    A bare number is refused: ``--max-runtime 6`` would otherwise mean six seconds.
    """
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        unit = " needs a unit of time;" if "unit" in str(exc) else ""
        raise UsageError(f"--max-runtime {text!r}:{unit} expected a duration such as 6h, 90m or 1h30m") from None
    if seconds <= 0:
        raise UsageError(f"--max-runtime {text!r}: must be more than zero, e.g. 6h")
    return seconds


class StopClock:
    """Decides when a run must stop starting devices, given an optional deadline and maximum runtime.

    Started (``max_runtime`` counted from) when constructed. Once ``should_stop_starting`` has said True it
    keeps saying True: a wall clock stepped backwards must not restart a run that began draining.
    """

    def __init__(
        self,
        deadline: datetime | None = None,
        max_runtime: float | None = None,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if deadline is not None and deadline.tzinfo is None:
            raise ValueError("the deadline must be an aware datetime")
        if max_runtime is not None and max_runtime <= 0:
            raise ValueError("max_runtime must be positive")
        self._deadline = deadline.timestamp() if deadline is not None else None
        self._max_runtime = max_runtime
        self._wall = wall
        self._monotonic = monotonic
        self._started = monotonic()
        self._stopped: StopReason | None = None

    @property
    def limited(self) -> bool:
        """False when neither limit is set (then nothing here ever stops a run)."""
        return self._deadline is not None or self._max_runtime is not None

    def remaining(self) -> tuple[float, StopReason] | None:
        """Seconds until the earlier limit, and which one it is; None without limits. May be negative."""
        options: list[tuple[float, StopReason]] = []
        if self._deadline is not None:
            options.append((self._deadline - self._wall(), "deadline"))
        if self._max_runtime is not None:
            options.append((self._started + self._max_runtime - self._monotonic(), "max-runtime"))
        return min(options, key=lambda option: option[0]) if options else None

    def should_stop_starting(self, drain_seconds: float) -> bool:
        """True once now + ``drain_seconds`` reaches the earlier limit (and from then on)."""
        if self._stopped is not None:
            return True
        left = self.remaining()
        if left is not None and left[0] <= drain_seconds:
            self._stopped = left[1]
            return True
        return False

    @property
    def reason(self) -> StopReason | None:
        """Why the run stopped (``"deadline"`` / ``"max-runtime"``); before that, the limit that binds first."""
        if self._stopped is not None:
            return self._stopped
        left = self.remaining()
        return None if left is None else left[1]
