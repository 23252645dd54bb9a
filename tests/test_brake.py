"""The failure brake: minimum sample, threshold, latch, window, message."""

from __future__ import annotations

import pytest

from bulk_assign.errors import UsageError
from bulk_assign.pipeline.brake import FailureBrake, parse_failure_rate


def test_does_not_trip_before_the_minimum_sample() -> None:
    brake = FailureBrake(0.5, min_sample=50)
    assert not any(brake.observe(True, "Forbidden") for _ in range(49))
    assert brake.observe(True, "Forbidden")
    assert brake.tripped


def test_trips_only_above_the_rate() -> None:
    brake = FailureBrake(0.5, min_sample=10)
    for i in range(10):
        assert not brake.observe(i % 2 == 0, "X")  # exactly 50% is not more than 50%
    assert brake.observe(True, "X")  # 6 of 11


def test_mostly_successes_never_trip() -> None:
    brake = FailureBrake()
    for i in range(10_000):
        assert not brake.observe(i % 3 == 0, "ServiceUnavailable")


def test_stays_tripped() -> None:
    brake = FailureBrake(0.5, min_sample=2)
    brake.observe(True)
    assert brake.observe(True)
    for _ in range(100):
        assert brake.observe(False)


def test_describe_names_the_share_and_the_most_common_error() -> None:
    brake = FailureBrake(0.5, min_sample=50)
    for _ in range(2):
        brake.observe(False)
    for _ in range(45):
        brake.observe(True, "Forbidden")
    for _ in range(3):
        brake.observe(True, "ResourceNotFound")
    assert brake.tripped
    assert brake.describe() == "stopped: 48 of 50 devices failed (96% > 50%); most common error: Forbidden (45)"


def test_describe_before_any_failure() -> None:
    brake = FailureBrake(0.5, min_sample=5)
    assert brake.describe() == "running: 0 of 0 devices failed (0% <= 50%)"
    brake.observe(True)
    assert brake.describe().endswith("most common error: unknown (1)")


def test_window_catches_a_failure_that_starts_mid_run() -> None:
    cumulative = FailureBrake(0.5, min_sample=50)
    windowed = FailureBrake(0.5, min_sample=50, window=100)
    for _ in range(5000):
        cumulative.observe(False)
        windowed.observe(False)
    tripped_after = None
    for i in range(1, 200):
        cumulative.observe(True, "Forbidden")
        if windowed.observe(True, "Forbidden") and tripped_after is None:
            tripped_after = i
    assert tripped_after == 51  # 51 of the last 100 failed
    assert not cumulative.tripped
    assert windowed.describe().startswith("stopped: 100 of the last 100 devices failed (100% > 50%)")


@pytest.mark.parametrize(("args", "message"), [((0.0, 50), "max_failure_rate"), ((1.5, 50), "max_failure_rate"),
                                               ((0.5, 0), "min_sample")])
def test_rejects_bad_settings(args: tuple[float, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FailureBrake(*args)
    with pytest.raises(ValueError, match="window"):
        FailureBrake(0.5, 50, window=10)


def test_parse_failure_rate() -> None:
    assert parse_failure_rate("0.5") == 0.5
    assert parse_failure_rate("50%") == 0.5
    assert parse_failure_rate("80") == 0.8
    assert parse_failure_rate(1) == 1.0
    assert parse_failure_rate(" 25% ") == 0.25
    for bad in ("0", "-0.5", "150%", "half", "", "101"):
        with pytest.raises(UsageError, match="--max-failure-rate"):
            parse_failure_rate(bad)
