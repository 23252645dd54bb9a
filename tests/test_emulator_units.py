"""Emulator building blocks without HTTP: throttle windows on an injected clock, Retry-After rendering,
seeded fault decisions, token inspection, inventory files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bulk_assign.config import Rate
from bulk_assign.emulator import EmulatorConfig
from bulk_assign.emulator.auth import Authenticator, inspect_token
from bulk_assign.emulator.faults import FaultPlan
from bulk_assign.emulator.inventory import load_inventory
from bulk_assign.emulator.responses import RetryAfterRenderer, render_retry_after
from bulk_assign.emulator.state import Counters
from bulk_assign.emulator.throttle import Budgets, FixedWindow, SlidingWindow, TokenBucket
from bulk_assign.errors import InputFileError


def accept_all(window: SlidingWindow | FixedWindow | TokenBucket, now: float, limit: int = 1000) -> int:
    """Take writes at ``now`` until refused; returns how many were accepted."""
    accepted = 0
    while accepted < limit and window.wait(now) == 0.0:
        window.take(now)
        accepted += 1
    return accepted


# -- sliding window -------------------------------------------------------------------------------------


def test_sliding_accepts_n_then_waits_for_the_oldest_to_age_out() -> None:
    window = SlidingWindow(Rate(3, 10.0))
    window.take(0.0)
    window.take(4.0)
    window.take(6.0)
    assert window.wait(6.0) == pytest.approx(4.0)  # the write at t=0 leaves the window at t=10
    assert window.wait(9.999) == pytest.approx(0.001)
    assert window.wait(10.0) == 0.0
    window.take(10.0)
    assert window.wait(10.0) == pytest.approx(4.0)  # next out: the write at t=4, at t=14


def test_sliding_never_allows_more_than_n_in_any_interval() -> None:
    window = SlidingWindow(Rate(5, 1.0))
    times = [i * 0.05 for i in range(400)]
    accepted = []
    for now in times:
        if window.wait(now) == 0.0:
            window.take(now)
            accepted.append(now)
    for i in range(len(accepted) - 5):
        assert accepted[i + 5] - accepted[i] >= 1.0 - 1e-9
    assert len(accepted) == pytest.approx(100, abs=6)  # ~5 per second for 20 s


def test_sliding_budget_cut_counts_history_already_accepted() -> None:
    window = SlidingWindow(Rate(10, 10.0))
    for t in range(6):
        window.take(float(t))
    window.set_rate(Rate(3, 10.0), 6.0)
    # 6 writes in the window, only 3 allowed: the 4th newest (t=3) must age out first, at t=13
    assert window.wait(6.0) == pytest.approx(7.0)
    window.set_rate(Rate(20, 10.0), 6.0)
    assert window.wait(6.0) == 0.0


# -- fixed window ---------------------------------------------------------------------------------------


def test_fixed_window_resets_on_aligned_boundaries_from_origin() -> None:
    window = FixedWindow(Rate(2, 10.0), origin=100.0)
    assert accept_all(window, 101.0) == 2
    assert window.wait(101.0) == pytest.approx(9.0)  # window [100, 110)
    assert window.wait(109.5) == pytest.approx(0.5)
    assert accept_all(window, 110.0) == 2  # new window [110, 120): full budget again
    assert window.wait(119.0) == pytest.approx(1.0)


def test_fixed_window_allows_a_double_burst_across_a_boundary() -> None:
    """The known weakness of fixed windows, emulated on purpose: 2N writes within a moment."""
    window = FixedWindow(Rate(3, 1.0), origin=0.0)
    assert accept_all(window, 0.999) == 3
    assert accept_all(window, 1.0) == 3


# -- token bucket ---------------------------------------------------------------------------------------


def test_bucket_starts_full_and_refills_at_n_over_t() -> None:
    bucket = TokenBucket(Rate(4, 2.0), now=0.0)  # 2 tokens per second
    assert accept_all(bucket, 0.0) == 4
    assert bucket.wait(0.0) == pytest.approx(0.5)
    assert bucket.wait(0.25) == pytest.approx(0.25)
    assert accept_all(bucket, 0.5) == 1
    assert accept_all(bucket, 100.0) == 4  # never more than the capacity


def test_bucket_rate_change_clamps_to_new_capacity() -> None:
    bucket = TokenBucket(Rate(10, 1.0), now=0.0)
    bucket.set_rate(Rate(2, 1.0), 0.0)
    assert accept_all(bucket, 0.0) == 2
    assert bucket.wait(0.0) == pytest.approx(0.5)


# -- budgets: app vs tenant -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sliding", "fixed", "bucket"])
def test_app_budget_and_tenant_budget(kind: str) -> None:
    budgets = Budgets(kind, Rate(3, 10.0), Rate(5, 10.0), None, origin=0.0)
    assert [budgets.try_write("a", 1.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert budgets.try_write("a", 1.0) > 0.0  # app a used its 3
    assert budgets.try_write("b", 1.0) == 0.0
    assert budgets.try_write("b", 1.0) == 0.0
    assert budgets.try_write("b", 1.0) > 0.0  # b has room (2 of 3) but the tenant's 5 are used
    assert budgets.try_write("c", 1.0) > 0.0


def test_rejected_writes_do_not_consume_budget() -> None:
    budgets = Budgets("sliding", Rate(2, 10.0), Rate(100, 10.0), None, origin=0.0)
    budgets.try_write("a", 0.0)
    budgets.try_write("a", 5.0)
    for t in (6.0, 7.0, 8.0, 9.0):
        assert budgets.try_write("a", t) > 0.0
    assert budgets.try_write("a", 10.0) == 0.0  # t=0 aged out; the refusals left no trace


def test_reads_have_their_own_budget() -> None:
    budgets = Budgets("sliding", Rate(1, 10.0), Rate(1, 10.0), Rate(2, 10.0), origin=0.0)
    assert budgets.try_write("a", 0.0) == 0.0
    assert budgets.try_write("a", 0.0) > 0.0
    assert budgets.try_read("a", 0.0) == 0.0
    assert budgets.try_read("a", 0.0) == 0.0
    assert budgets.try_read("a", 0.0) == pytest.approx(10.0)
    assert Budgets("sliding", Rate(1, 1.0), Rate(1, 1.0), None, origin=0.0).try_read("a", 0.0) == 0.0


# -- Retry-After ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "style", "expected"),
    [
        (2.128, "int", "3"),
        (0.01, "int", "1"),
        (2.0, "int", "2"),
        (2.1284, "decimal", "2.128"),
        (0.0001, "decimal", "0.001"),
        (2.5, "list", "3,120"),
        (2.5, "missing", None),
    ],
)
def test_retry_after_styles(seconds: float, style: str, expected: str | None) -> None:
    assert render_retry_after(seconds, style) == expected


def test_mixed_retry_after_is_seeded_and_uses_every_style() -> None:
    first = [RetryAfterRenderer("mixed", 7).render(2.5) for _ in range(1)]
    a = RetryAfterRenderer("mixed", 7)
    b = RetryAfterRenderer("mixed", 7)
    seq_a = [a.render(2.5) for _ in range(60)]
    assert seq_a == [b.render(2.5) for _ in range(60)]
    assert seq_a[0] == first[0]
    assert set(seq_a) == {"3", "2.500", "3,120", None}


# -- faults ---------------------------------------------------------------------------------------------


def test_fault_decisions_depend_on_device_history_not_arrival_order() -> None:
    devices = [f"00000000-0000-4000-8000-{i:012d}" for i in range(200)]
    one = FaultPlan(42, 0.3, ("503", "504", "reset"))
    two = FaultPlan(42, 0.3, ("503", "504", "reset"))
    forward = {d: [one.decide(d) for _ in range(3)] for d in devices}
    backward = {d: [two.decide(d) for _ in range(3)] for d in reversed(devices)}
    assert forward == backward
    decided = [k for ks in forward.values() for k in ks]
    assert 0.2 < sum(k is not None for k in decided) / len(decided) < 0.4
    assert {k for k in decided if k} == {"503", "504", "reset"}
    other = FaultPlan(43, 0.3, ("503", "504", "reset"))
    assert {d: [other.decide(d) for _ in range(3)] for d in devices} != forward


def test_fault_scopes_only_offer_kinds_that_make_sense() -> None:
    plan = FaultPlan(1, 1.0, ("reset", "latency", "malformed"))
    assert {plan.decide(f"d{i}", "item") for i in range(50)} == {"malformed"}
    assert {plan.decide(f"d{i}", "batch") for i in range(50)} == {"reset", "latency"}
    assert FaultPlan(1, 1.0, ("reset",)).decide("x", "item") is None
    assert FaultPlan(1, 0.0, ("503",)).decide("x") is None


# -- auth -----------------------------------------------------------------------------------------------


def jwt(claims: dict[str, object]) -> str:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}.c2ln"


def test_token_inspection_reads_app_and_expiry() -> None:
    assert inspect_token(jwt({"appid": "app-1", "exp": 2000})) == inspect_token(jwt({"azp": "app-1", "exp": 2000}))
    info = inspect_token(jwt({"appid": "app-1", "exp": 2000}))
    assert (info.app, info.expires) == ("app-1", 2000.0)
    assert inspect_token("opaque-token").app == "default"
    assert inspect_token("a.b.c").expires is None  # three segments but no JSON payload: opaque


def test_authenticator_reasons() -> None:
    auth = Authenticator(None)
    assert auth.check(None, 0)[0] is None
    assert auth.check("Basic abc", 0)[0] is None
    assert auth.check("Bearer   ", 0)[0] is None
    assert auth.check("bearer abc", 0)[0] is not None
    assert auth.check(f"Bearer {jwt({'exp': 100})}", 99.0)[0] is not None
    assert "expired" in auth.check(f"Bearer {jwt({'exp': 100})}", 100.0)[1]
    strict = Authenticator("right")
    assert strict.check("Bearer right", 0)[0] is not None
    assert strict.check("Bearer wrong", 0)[0] is None


# -- config, counters, inventory ------------------------------------------------------------------------


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="faults"):
        EmulatorConfig(faults=1.5)
    with pytest.raises(ValueError, match="fault kind"):
        EmulatorConfig(fault_kinds=("503", "teapot"))
    with pytest.raises(ValueError, match="throttle"):
        EmulatorConfig(throttle="leaky")  # type: ignore[arg-type]


def test_counters_track_devices_assigned_twice_incrementally() -> None:
    counters = Counters()
    for device in ("a", "b", "a", "a", "c", "b"):
        counters.commit(device)
    assert counters.writes_committed == 6
    assert counters.devices_assigned_twice == 2
    counters.status(201)
    snap = counters.snapshot()
    assert snap["responses_by_status"] == {"201": 1}
    assert json.loads(json.dumps(snap))["commits_per_device"] == {"a": 3, "b": 2, "c": 1}
    counters.reset()
    assert counters.snapshot()["writes_committed"] == 0 and counters.devices_assigned_twice == 0


def test_inventory_plain_csv_and_comments(tmp_path: Path) -> None:
    plain = tmp_path / "inv.txt"
    plain.write_text("# devices\n\n0F6E3B4E-1111-4AAA-8BBB-123456789ABC\n{11111111-2222-3333-4444-555555555555}\n")
    assert load_inventory(plain) == {"0f6e3b4e-1111-4aaa-8bbb-123456789abc", "11111111-2222-3333-4444-555555555555"}
    csv_file = tmp_path / "inv.csv"
    csv_file.write_text('Device ID,Serial\n"0f6e3b4e-1111-4aaa-8bbb-123456789abc",SN1\n')
    assert load_inventory(csv_file) == {"0f6e3b4e-1111-4aaa-8bbb-123456789abc"}


def test_inventory_bad_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("0f6e3b4e-1111-4aaa-8bbb-123456789abc\n# ok\nnot-a-guid\n")
    with pytest.raises(InputFileError) as caught:
        load_inventory(bad)
    assert caught.value.line == 3 and str(bad) in str(caught.value) and "not-a-guid" in str(caught.value)
    with pytest.raises(InputFileError, match="line 1"):
        (tmp_path / "damaged.txt").write_text("0f6e3b4e-1111-4aaa-8bbb-123456789ab\n")
        load_inventory(tmp_path / "damaged.txt")
    with pytest.raises(InputFileError, match="cannot read"):
        load_inventory(tmp_path / "missing.txt")


def test_guid_source_gives_unique_well_formed_v4_guids() -> None:
    import uuid

    from bulk_assign.emulator.state import GuidSource

    source = GuidSource()
    ids = [source() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert GuidSource()()[:24] != ids[0][:24]  # a fresh random prefix per source
