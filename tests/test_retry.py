"""Retry decisions: Retry-After parsing, the throttle gate (fake clock and sleep), RetryPolicy and tenacity.

Nothing here waits for real time: every sleep is a fake that records the delay and advances a fake clock.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_time import FakeTime
from hypothesis import given
from hypothesis import strategies as st

from bulk_assign.errors import AuthenticationError
from bulk_assign.graph.outcome import Attempt, Kind
from bulk_assign.graph.retry_after import parse_retry_after
from bulk_assign.pipeline.gate import ThrottleGate
from bulk_assign.pipeline.retry import RetryLoop, RetryPolicy
from bulk_assign.pipeline.state import DeviceState

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ Retry-After
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10", 10.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("2.128", 2.128),
        ("30,120", 120.0),
        ("120, 30", 120.0),
        ("1, 2.5 ,2", 2.5),
        ("30,abc", 30.0),  # the usable part of a partly garbled list
        ("-5, 10", 10.0),  # negative entries are ignored, not fatal
        ("3600", 3600.0),
    ],
)
def test_parse_retry_after_numbers(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", [None, "", "   ", "abc", "-1", "-0.5", "-3,-4", "nan", "inf", "-inf", ",", "soon", "10 seconds"]
)
def test_parse_retry_after_garbage_and_negative_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_parse_retry_after_http_date_relative_to_now() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after(format_datetime(NOW + timedelta(minutes=2), usegmt=True), now=NOW) == 120.0


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 01 May 2024 11:59:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0


def test_parse_retry_after_http_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:00:05 -0000", now=NOW) == 5.0


def test_parse_retry_after_http_date_with_offset() -> None:
    # 14:00:10 at +02:00 is 12:00:10 UTC
    assert parse_retry_after("Wed, 01 May 2024 14:00:10 +0200", now=NOW) == 10.0


@given(numbers=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False), min_size=1,
                        max_size=6),
       seps=st.sampled_from([",", ", ", " , "]))
def test_parse_retry_after_any_non_negative_list_gives_its_max(numbers: list[float], seps: str) -> None:
    assert parse_retry_after(seps.join(repr(n) for n in numbers)) == max(numbers)


@given(numbers=st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
def test_parse_retry_after_integer_lists(numbers: list[int]) -> None:
    assert parse_retry_after(",".join(map(str, numbers))) == float(max(numbers))


@given(delta=st.integers(0, 10**6))
def test_parse_retry_after_any_future_http_date(delta: int) -> None:
    when = format_datetime(NOW + timedelta(seconds=delta), usegmt=True)
    assert parse_retry_after(when, now=NOW) == float(delta)


@given(text=st.text(max_size=40))
def test_parse_retry_after_never_raises_and_never_negative(text: str) -> None:
    result = parse_retry_after(text, now=NOW)
    assert result is None or (result >= 0 and result == result)


# ------------------------------------------------------------------------------------------------ ThrottleGate
async def test_open_gate_does_not_wait() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep)
    assert gate.remaining() == 0.0
    assert await gate.wait() == 0.0
    assert t.sleeps == []
    assert gate.closures == 0


async def test_closed_gate_waits_out_the_closure() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep)
    gate.close_for(5.0)
    assert gate.closures == 1
    assert gate.remaining() == 5.0
    t.now += 2.0
    assert gate.remaining() == 3.0
    assert await gate.wait() == 3.0
    assert t.sleeps == [3.0]
    assert t.now == 1005.0
    assert gate.remaining() == 0.0
    gate.release()  # the probe's answer was not a 429
    assert await gate.wait() == 0.0


async def test_a_probe_that_never_reports_back_does_not_hold_the_others_forever() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep, probe_timeout=0.01)
    gate.close_for(1.0)
    assert await gate.wait() == 1.0  # the probe, which then vanishes (cancelled)
    assert await gate.wait() == 0.0  # released after the probe timeout


async def test_close_for_never_shortens_an_earlier_closure() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep)
    gate.close_for(10.0)
    gate.close_for(2.0)
    assert gate.remaining() == 10.0
    assert gate.closures == 1
    gate.close_for(12.0)
    assert gate.remaining() == 12.0
    assert gate.closures == 2
    gate.close_for(-5.0)  # a negative wait is treated as zero
    assert gate.remaining() == 12.0
    assert gate.closures == 2


async def test_gate_extended_while_waiting_keeps_the_waiter_waiting() -> None:
    t = FakeTime()

    async def sleep_and_extend(seconds: float) -> None:
        await t.sleep(seconds)
        if len(t.sleeps) == 1:
            gate.close_for(4.0)  # another worker got a 429 while this one slept

    gate = ThrottleGate(clock=t.clock, sleep=sleep_and_extend)
    gate.close_for(6.0)
    assert await gate.wait() == 10.0
    assert t.sleeps == [6.0, 4.0]
    assert gate.closures == 2


async def test_one_closure_pauses_every_waiter_then_lets_one_probe_go_first() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep)
    gate.close_for(3.0)
    t.now += 1.0
    waiters = [asyncio.create_task(gate.wait()) for _ in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert t.sleeps == [2.0, 2.0, 2.0, 2.0]
    assert sum(w.done() for w in waiters) == 1  # the probe
    assert waiters[0].result() == 2.0
    gate.release()  # the probe got through: everyone may go
    assert await asyncio.gather(*waiters[1:]) == [2.0, 2.0, 2.0]
    assert await gate.wait() == 0.0
    assert t.now == 1003.0
    assert gate.remaining() == 0.0
    assert gate.closures == 1


async def test_a_probe_that_is_throttled_again_keeps_the_others_waiting() -> None:
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep)
    gate.close_for(1.0)
    assert await gate.wait() == 1.0  # the probe
    other = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    gate.close_for(2.0)  # the probe got another 429
    for _ in range(3):
        await asyncio.sleep(0)
    assert not other.done()
    assert await gate.wait() == 2.0  # a new probe after the new closure
    gate.release()
    assert await other >= 0.0
    assert gate.closures == 2


# ------------------------------------------------------------------------------------------------ RetryPolicy
def attempt(kind: Kind, *, retry_after: float | None = None, status: int | None = None) -> Attempt:
    return Attempt(kind, http_status=status, retry_after=retry_after, error_code=kind.value)


@pytest.mark.parametrize(
    ("kind", "retry"),
    [(Kind.SUCCESS, False), (Kind.PERMANENT, False), (Kind.THROTTLED, True), (Kind.TRANSIENT, True),
     (Kind.AUTH, True)],
)
def test_should_retry(kind: Kind, retry: bool) -> None:
    assert RetryPolicy().should_retry(attempt(kind)) is retry


def test_429s_do_not_count_against_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=2)
    state = DeviceState("d", sends=50, posts=60)
    assert policy.gives_up(attempt(Kind.THROTTLED), state) is None


def test_throttle_wait_exceeded() -> None:
    policy = RetryPolicy(max_throttle_wait=100.0)
    assert policy.gives_up(attempt(Kind.THROTTLED), DeviceState("d", throttle_waited=99.9)) is None
    assert policy.gives_up(attempt(Kind.THROTTLED), DeviceState("d", throttle_waited=100.0)) == "ThrottleWaitExceeded"


def test_retries_exhausted_after_max_attempts_sends() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.gives_up(attempt(Kind.TRANSIENT), DeviceState("d", sends=2)) is None
    assert policy.gives_up(attempt(Kind.TRANSIENT), DeviceState("d", sends=3)) == "RetriesExhausted"
    # a device that waited long on throttling still gets its transient retries
    assert policy.gives_up(attempt(Kind.TRANSIENT), DeviceState("d", sends=1, throttle_waited=1e9)) is None


def test_auth_never_gives_up_in_the_policy() -> None:
    assert RetryPolicy(max_attempts=1).gives_up(attempt(Kind.AUTH), DeviceState("d", sends=99)) is None


@pytest.mark.parametrize("kind", [Kind.THROTTLED, Kind.AUTH])
def test_throttle_and_auth_delays_are_zero(kind: Kind) -> None:
    # throttle pauses go through the shared gate, an auth retry goes at once with a fresh token
    assert RetryPolicy().delay(attempt(kind, retry_after=30.0), DeviceState("d", sends=3), random.Random(1)) == 0.0


def test_transient_retry_after_is_honoured() -> None:
    policy = RetryPolicy(max_wait=300.0)
    assert policy.delay(attempt(Kind.TRANSIENT, retry_after=7.5), DeviceState("d", sends=1), random.Random(1)) == 7.5
    assert policy.delay(attempt(Kind.TRANSIENT, retry_after=0.0), DeviceState("d", sends=5), random.Random(1)) == 0.0


def test_transient_retry_after_is_capped_by_max_wait() -> None:
    policy = RetryPolicy(max_wait=60.0)
    assert policy.delay(attempt(Kind.TRANSIENT, retry_after=3600.0), DeviceState("d"), random.Random(1)) == 60.0


@pytest.mark.parametrize(
    ("sends", "ceiling"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (30, 60.0)]
)
def test_exponential_backoff_ceiling_and_equal_jitter(sends: int, ceiling: float) -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=60.0, max_wait=300.0)
    rng = random.Random(1234)
    delays = [policy.delay(attempt(Kind.TRANSIENT), DeviceState("d", sends=sends), rng) for _ in range(200)]
    assert all(ceiling / 2 <= d < ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # jittered, not lock-step
    expected = random.Random(1234)
    assert delays[0] == pytest.approx(ceiling * (0.5 + expected.random() / 2))


def test_backoff_is_capped_by_max_wait_too() -> None:
    policy = RetryPolicy(backoff_base=10.0, backoff_cap=1000.0, max_wait=15.0)
    rng = random.Random(7)
    delays = [policy.delay(attempt(Kind.TRANSIENT), DeviceState("d", sends=5), rng) for _ in range(50)]
    assert all(7.5 <= d < 15.0 for d in delays)


@given(seed=st.integers(0, 2**32), sends=st.integers(0, 40), base=st.floats(0.01, 10), cap=st.floats(0.01, 600),
       max_wait=st.floats(0.01, 600))
def test_backoff_bounds_hold_for_any_settings(seed: int, sends: int, base: float, cap: float, max_wait: float) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_cap=cap, max_wait=max_wait)
    delay = policy.delay(attempt(Kind.TRANSIENT), DeviceState("d", sends=sends), random.Random(seed))
    ceiling = min(cap, base * 2.0 ** max(0, sends - 1), max_wait)
    assert ceiling / 2 <= delay <= ceiling
    assert delay > 0


def test_same_seed_gives_same_delays() -> None:
    policy = RetryPolicy()

    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [policy.delay(attempt(Kind.TRANSIENT), DeviceState("d", sends=s), rng) for s in range(1, 8)]

    assert run(42) == run(42)
    assert run(42) != run(43)


# ------------------------------------------------------------------------------------------------ RetryLoop
class Script:
    """A round for one device returning scripted Attempts and keeping DeviceState up to date like the engine."""

    def __init__(self, *attempts: Attempt | BaseException, throttle_cost: float = 0.0) -> None:
        self.attempts = list(attempts)
        self.calls = 0
        self.throttle_cost = throttle_cost

    async def __call__(self, states: list[DeviceState]) -> None:
        for state in states:
            self.calls += 1
            state.posts += 1
            item = self.attempts.pop(0)
            if isinstance(item, BaseException):
                raise item
            state.attempt = item
            if item.kind is Kind.THROTTLED:
                state.throttle_waited += self.throttle_cost
            elif item.kind not in (Kind.SUCCESS, Kind.AUTH):
                state.sends += 1


async def run_script(policy: RetryPolicy, script: Script, *, seed: int = 0) -> tuple[Attempt, DeviceState, FakeTime]:
    t = FakeTime()
    loop = RetryLoop(policy, sleep=t.sleep, rng=random.Random(seed))
    state = DeviceState("dev")
    await loop.run([state], script)
    assert state.attempt is not None
    return state.attempt, state, t


async def test_first_success_needs_no_retry() -> None:
    ok = Attempt(Kind.SUCCESS, 201, assignment_id="a-1")
    script = Script(ok)
    result, _, t = await run_script(RetryPolicy(), script)
    assert result is ok
    assert script.calls == 1
    assert t.sleeps == []


async def test_permanent_is_returned_at_once() -> None:
    bad = Attempt(Kind.PERMANENT, 404, error_code="ResourceNotFound")
    script = Script(bad, Attempt(Kind.SUCCESS, 201))
    result, _, t = await run_script(RetryPolicy(), script)
    assert result is bad
    assert script.calls == 1
    assert t.sleeps == []


async def test_transient_then_success_with_jittered_backoff() -> None:
    ok = Attempt(Kind.SUCCESS, 201)
    script = Script(attempt(Kind.TRANSIENT, status=503), attempt(Kind.TRANSIENT, status=502), ok)
    result, state, t = await run_script(RetryPolicy(backoff_base=1.0), script, seed=99)
    assert result is ok
    assert script.calls == 3
    assert state.sends == 2
    assert len(t.sleeps) == 2
    assert 0.5 <= t.sleeps[0] < 1.0  # after the first send: ceiling 1 s
    assert 1.0 <= t.sleeps[1] < 2.0  # after the second: ceiling 2 s
    rng = random.Random(99)
    assert t.sleeps[0] == pytest.approx(1.0 * (0.5 + rng.random() / 2))


async def test_transient_retry_after_is_slept_and_capped() -> None:
    ok = Attempt(Kind.SUCCESS, 201)
    script = Script(attempt(Kind.TRANSIENT, retry_after=7.0), attempt(Kind.TRANSIENT, retry_after=9999.0), ok)
    result, _, t = await run_script(RetryPolicy(max_wait=120.0), script)
    assert result is ok
    assert t.sleeps == [7.0, 120.0]


async def test_gives_up_after_max_attempts_with_retries_exhausted() -> None:
    last = Attempt(Kind.TRANSIENT, 500, error_code="InternalServerError", error_message="boom", request_id="r-3")
    script = Script(attempt(Kind.TRANSIENT), attempt(Kind.TRANSIENT), last, Attempt(Kind.SUCCESS, 201))
    result, state, t = await run_script(RetryPolicy(max_attempts=3), script)
    assert script.calls == 3
    assert len(t.sleeps) == 2
    assert result.error_code == "RetriesExhausted"
    assert result.error_message == "gave up after the last failure (InternalServerError: boom)"
    assert result.http_status == 500
    assert result.request_id == "r-3"
    assert result.kind is Kind.PERMANENT
    assert state.sends == 3


async def test_429s_do_not_use_up_max_attempts() -> None:
    ok = Attempt(Kind.SUCCESS, 201)
    throttles = [attempt(Kind.THROTTLED, status=429, retry_after=1.0) for _ in range(10)]
    script = Script(*throttles, attempt(Kind.TRANSIENT), ok)
    result, state, t = await run_script(RetryPolicy(max_attempts=2), script)
    assert result is ok
    assert script.calls == 12
    assert state.posts == 12
    assert state.sends == 1
    assert t.sleeps[:10] == [0.0] * 10  # throttle pauses are the gate's job, not the retry loop's
    assert len(t.sleeps) == 11


async def test_throttle_wait_exceeded_gives_up() -> None:
    throttles = [attempt(Kind.THROTTLED, status=429) for _ in range(10)]
    script = Script(*throttles, throttle_cost=100.0)
    result, state, t = await run_script(RetryPolicy(max_attempts=2, max_throttle_wait=250.0), script)
    assert script.calls == 3  # waited 100, 200, 300 >= 250
    assert state.throttle_waited == 300.0
    assert result.error_code == "ThrottleWaitExceeded"
    assert result.error_message is not None and result.error_message.startswith("gave up after the last failure")
    assert result.http_status == 429
    assert t.sleeps == [0.0, 0.0]


async def test_auth_retries_at_once_and_exceptions_propagate() -> None:
    script = Script(attempt(Kind.AUTH, status=401), AuthenticationError("refused twice"))
    t = FakeTime()
    loop = RetryLoop(RetryPolicy(), sleep=t.sleep, rng=random.Random(0))
    with pytest.raises(AuthenticationError, match="refused twice"):
        await loop.run([DeviceState("dev")], script)
    assert script.calls == 2
    assert t.sleeps == [0.0]


async def test_auth_then_success() -> None:
    ok = Attempt(Kind.SUCCESS, 201)
    script = Script(attempt(Kind.AUTH, status=401), ok)
    result, state, t = await run_script(RetryPolicy(max_attempts=1), script)
    assert result is ok
    assert script.calls == 2
    assert state.sends == 0
    assert t.sleeps == [0.0]


async def test_concurrent_groups_are_independent() -> None:
    t = FakeTime()
    loop = RetryLoop(RetryPolicy(max_attempts=2), sleep=t.sleep, rng=random.Random(0))
    first = Script(attempt(Kind.TRANSIENT), attempt(Kind.TRANSIENT), attempt(Kind.TRANSIENT))
    second = Script(attempt(Kind.TRANSIENT), Attempt(Kind.SUCCESS, 201))
    a, b = DeviceState("a"), DeviceState("b")
    await asyncio.gather(loop.run([a], first), loop.run([b], second))
    assert a.attempt is not None and a.attempt.error_code == "RetriesExhausted"
    assert b.attempt is not None and b.attempt.kind is Kind.SUCCESS
    assert first.calls == 2 and second.calls == 2


class GroupScript:
    """A round for a group (a batch): each device answers from its own script; records who was sent."""

    def __init__(self, answers: dict[str, list[Attempt]]) -> None:
        self.answers = answers
        self.rounds: list[list[str]] = []

    async def __call__(self, states: list[DeviceState]) -> None:
        self.rounds.append([s.device_id for s in states])
        for state in states:
            state.posts += 1
            state.attempt = self.answers[state.device_id].pop(0)
            if state.attempt.kind is Kind.TRANSIENT:
                state.sends += 1


async def test_a_group_resends_only_its_pending_devices_and_waits_for_the_longest_delay() -> None:
    t = FakeTime()
    loop = RetryLoop(RetryPolicy(max_attempts=3), sleep=t.sleep, rng=random.Random(0))
    ok = Attempt(Kind.SUCCESS, 201)
    script = GroupScript({
        "a": [ok],
        "b": [attempt(Kind.TRANSIENT, retry_after=2.0), attempt(Kind.TRANSIENT, retry_after=1.0), ok],
        "c": [attempt(Kind.TRANSIENT, retry_after=5.0), Attempt(Kind.PERMANENT, 404, error_code="NotFound")],
        "d": [attempt(Kind.THROTTLED, status=429), ok],
    })
    states = [DeviceState(d) for d in "abcd"]
    await loop.run(states, script)
    assert script.rounds == [["a", "b", "c", "d"], ["b", "c", "d"], ["b"]]
    assert t.sleeps == [5.0, 1.0]  # the longest delay a pending device asked for, per round
    assert [s.attempt.kind if s.attempt else None for s in states] == [Kind.SUCCESS, Kind.SUCCESS, Kind.PERMANENT,
                                                                        Kind.SUCCESS]
    assert [s.posts for s in states] == [1, 3, 2, 2]


async def test_a_group_that_outlives_its_time_gives_up_with_a_named_reason() -> None:
    """Throttled forever with no wait at the gate (Retry-After: 0): the group's wall time still ends it."""
    t = FakeTime()
    policy = RetryPolicy(max_attempts=2, max_wait=10.0, max_throttle_wait=100.0)
    loop = RetryLoop(policy, sleep=t.sleep, rng=random.Random(0), clock=t.clock)
    assert policy.max_group_seconds == 120.0

    class Throttled(GroupScript):
        async def __call__(self, states: list[DeviceState]) -> None:
            await super().__call__(states)
            t.now += 1.0  # each round takes a second of wall time, none of it at the gate

    throttled = Throttled({"a": [attempt(Kind.THROTTLED, status=429)] * 1000, "b": [attempt(Kind.TRANSIENT)] * 2})
    a, b = DeviceState("a"), DeviceState("b")
    await loop.run([a, b], throttled)
    assert a.attempt is not None and a.attempt.error_code == "ThrottleWaitExceeded"
    assert b.attempt is not None and b.attempt.error_code == "RetriesExhausted"
    assert 115 <= len(throttled.rounds) <= 125


async def test_a_probe_answered_429_hands_the_probe_to_a_waiter_without_a_release() -> None:
    """The probe's device may give up after its 429 and never send again: a waiter must become the next
    probe once the new closure ends, not wait for a release that will not come (or for the probe timeout)."""
    t = FakeTime()
    gate = ThrottleGate(clock=t.clock, sleep=t.sleep, probe_timeout=1e9)
    gate.close_for(1.0)
    assert await gate.wait() == 1.0  # the probe goes
    waiter = asyncio.create_task(gate.wait())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiter.done()  # held behind the probe
    gate.close_for(2.0)  # the probe was answered 429; its device gives up and is never heard of again
    for _ in range(10):
        await asyncio.sleep(0)
    assert waiter.done() and waiter.result() >= 2.0  # it waited out the new closure and is the next probe
