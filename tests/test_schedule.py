"""Deadline and max-runtime parsing, and the stop clock (injected clocks only)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bulk_assign.errors import UsageError
from bulk_assign.pipeline.deadline import StopClock, parse_deadline, parse_max_runtime

BERLIN = ZoneInfo("Europe/Berlin")


class Clocks:
    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.wall_now = wall
        self.mono_now = 500.0

    def wall(self) -> float:
        return self.wall_now

    def mono(self) -> float:
        return self.mono_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds


def test_deadline_later_today() -> None:
    now = datetime(2024, 5, 10, 22, 15, tzinfo=BERLIN)
    assert parse_deadline("23:30", now) == datetime(2024, 5, 10, 23, 30, tzinfo=BERLIN)


def test_deadline_already_past_means_tomorrow() -> None:
    now = datetime(2024, 5, 10, 22, 15, tzinfo=BERLIN)
    assert parse_deadline("06:00", now) == datetime(2024, 5, 11, 6, 0, tzinfo=BERLIN)
    assert parse_deadline("22:15", now) == datetime(2024, 5, 11, 22, 15, tzinfo=BERLIN)  # exactly now: tomorrow
    assert parse_deadline(" 6:05 ", now) == datetime(2024, 5, 11, 6, 5, tzinfo=BERLIN)


def test_deadline_across_a_dst_change_keeps_the_wall_clock_time() -> None:
    now = datetime(2024, 3, 30, 22, 0, tzinfo=BERLIN)  # clocks go forward at 02:00 tonight
    deadline = parse_deadline("06:00", now)
    assert deadline.astimezone(BERLIN).hour == 6
    assert deadline.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=7)  # one hour of the night is skipped


def test_deadline_with_a_fixed_offset_uses_system_local_rules() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC).astimezone()  # what the CLI passes
    deadline = parse_deadline("00:00", now)
    assert deadline > now and deadline - now <= timedelta(days=1)
    assert deadline.astimezone().hour == 0 and deadline.astimezone().minute == 0


def test_deadline_keeps_the_zone_of_an_aware_fixed_offset_now_correct() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    deadline = parse_deadline("13:00", now)
    assert deadline > now and deadline.tzinfo is not None


@pytest.mark.parametrize("text", ["6", "24:00", "06:60", "6am", "", "06:00:00", "-1:00", "ab:cd"])
def test_bad_deadlines(text: str) -> None:
    with pytest.raises(UsageError, match=r"HH:MM.*e\.g\. --deadline 06:30"):
        parse_deadline(text, datetime(2024, 1, 1, tzinfo=BERLIN))


def test_max_runtime() -> None:
    assert parse_max_runtime("6h") == 6 * 3600
    assert parse_max_runtime("1h30m") == 5400
    for bad in ("0s", "soon", "", "-1h"):
        with pytest.raises(UsageError, match="--max-runtime"):
            parse_max_runtime(bad)


def test_max_runtime_needs_a_unit() -> None:
    """Hardening #11: ``--max-runtime 6`` meant six seconds."""
    for bare in ("6", "90", "0"):
        with pytest.raises(UsageError, match=r"--max-runtime '\d+': needs a unit of time"):
            parse_max_runtime(bare)


def test_stop_clock_max_runtime() -> None:
    clocks = Clocks()
    clock = StopClock(max_runtime=3600, wall=clocks.wall, monotonic=clocks.mono)
    assert clock.limited and clock.reason == "max-runtime"
    clocks.advance(3600 - 31)
    assert not clock.should_stop_starting(30)
    clocks.advance(1)
    assert clock.should_stop_starting(30)
    assert clock.reason == "max-runtime"


def test_stop_clock_deadline_and_the_earlier_limit_wins() -> None:
    clocks = Clocks()
    deadline = datetime.fromtimestamp(clocks.wall_now + 1000, UTC)
    clock = StopClock(deadline, max_runtime=2000, wall=clocks.wall, monotonic=clocks.mono)
    assert clock.reason == "deadline"
    remaining = clock.remaining()
    assert remaining is not None and remaining == (1000.0, "deadline")
    clocks.advance(969)
    assert not clock.should_stop_starting(30)
    clocks.advance(1)
    assert clock.should_stop_starting(30) and clock.reason == "deadline"

    clocks = Clocks()
    deadline = datetime.fromtimestamp(clocks.wall_now + 5000, UTC)
    clock = StopClock(deadline, max_runtime=100, wall=clocks.wall, monotonic=clocks.mono)
    clocks.advance(95)
    assert clock.should_stop_starting(10) and clock.reason == "max-runtime"


def test_deadline_uses_the_wall_clock_and_max_runtime_the_monotonic_one() -> None:
    clocks = Clocks()
    clock = StopClock(datetime.fromtimestamp(clocks.wall_now + 1000, UTC), wall=clocks.wall, monotonic=clocks.mono)
    clocks.mono_now += 5000  # monotonic time does not move a deadline
    assert not clock.should_stop_starting(0)
    clocks.wall_now += 1000  # e.g. the machine slept through the night
    assert clock.should_stop_starting(0)

    clocks = Clocks()
    clock = StopClock(max_runtime=100, wall=clocks.wall, monotonic=clocks.mono)
    clocks.wall_now += 5000  # an NTP step does not end a max-runtime
    assert not clock.should_stop_starting(0)


def test_stop_is_latched_even_if_the_wall_clock_steps_back() -> None:
    clocks = Clocks()
    clock = StopClock(datetime.fromtimestamp(clocks.wall_now + 10, UTC), wall=clocks.wall, monotonic=clocks.mono)
    clocks.advance(10)
    assert clock.should_stop_starting(0)
    clocks.wall_now -= 3600
    assert clock.should_stop_starting(0) and clock.reason == "deadline"


def test_unlimited_clock_never_stops() -> None:
    clocks = Clocks()
    clock = StopClock(wall=clocks.wall, monotonic=clocks.mono)
    clocks.advance(10**9)
    assert not clock.limited and not clock.should_stop_starting(10**9)
    assert clock.reason is None and clock.remaining() is None


def test_stop_clock_rejects_naive_deadline_and_bad_runtime() -> None:
    with pytest.raises(ValueError, match="aware"):
        StopClock(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        StopClock(max_runtime=0)


def test_deadline_with_a_fixed_offset_follows_system_dst_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        now = datetime(2024, 3, 30, 21, 0, tzinfo=UTC).astimezone()  # 22:00 +01:00, as datetime.now().astimezone()
        assert now.utcoffset() == timedelta(hours=1)
        deadline = parse_deadline("06:00", now)
        assert deadline.utcoffset() == timedelta(hours=2)  # tomorrow 06:00 is summer time
        assert deadline.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=7)
    finally:
        monkeypatch.undo()
        time.tzset()
