"""Retry-After in every form Graph and Intune send it: integer, decimal, a list, an HTTP-date.

A pure function, so the classification of an answer and its tests need no clock of their own.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value in any form seen from Graph, or None when absent/unusable.

    Integer (``10``), decimal (``2.128``, from Microsoft's own docs), a list (``30,120``: the largest value
    wins, so we never come back too early) and an HTTP-date. Negative or garbage values give None, which
    callers treat like a missing header.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: list[float] = []
    for part in text.split(","):
        try:
            number = float(part.strip())
        except ValueError:
            continue
        if math.isfinite(number) and number >= 0:
            seconds.append(number)
    if seconds:
        return max(seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)
