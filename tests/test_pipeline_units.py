"""The worker, the batch and the collector against an in-process transport: scripted answers, no sockets, no waiting.

The end-to-end tests run the same code against the emulator on loopback; these pin down the decisions.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from fake_time import FakeTime

from bulk_assign.auth import StaticTokenProvider
from bulk_assign.config import Rate, Settings
from bulk_assign.graph.mock import MockTransport, Request, json_response
from bulk_assign.graph.operations import AssignProfile
from bulk_assign.graph.transport import ConnectionLost, NotSent, Response
from bulk_assign.models import AssignmentTarget, DeviceResult, InputRow, SkipReason, Status
from bulk_assign.pipeline.batch import BatchWorker
from bulk_assign.pipeline.run import Job, RunDeps
from bulk_assign.pipeline.state import DeviceState
from bulk_assign.pipeline.worker import DeviceWorker, RunContext
from bulk_assign.store.reports import NullSink, RunStats

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
DEV = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 30)]


class FreePacer:
    """Grants everything at once: these tests are about decisions, not pacing."""

    effective_rate = Rate(1_000_000, 1.0)

    def __init__(self) -> None:
        self.accepted = 0
        self.throttles: list[float | None] = []

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        return amount

    def on_throttle(self, retry_after: float | None, count: int = 1) -> None:
        self.throttles.append(retry_after)

    def on_failed(self, latency: float, count: int = 1) -> None:
        return None

    def on_accepted(self, latency: float, count: int = 1) -> None:
        self.accepted += count

    def window_free_in(self) -> float:
        return 0.0


class ScriptedVerifier:
    def __init__(self, answers: dict[str, bool | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def already_assigned(self, device_id: str) -> bool | None:
        self.asked.append(device_id)
        return self.answers.get(device_id, False)

    async def already_assigned_many(self, device_ids: list[str]) -> dict[str, bool | None]:
        self.asked.extend(device_ids)
        return {d: self.answers.get(d, False) for d in device_ids}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def context(transport: MockTransport, *, verifier: ScriptedVerifier | None = None, **settings: object) -> RunContext:
    """A worker's context. These units test the read-back of a write that may have landed, so read-before-write
    is off unless a test turns it on (the read before the first write is tests/test_readahead.py's)."""
    sleeps = Sleeps()
    settings.setdefault("read_before_write", False)
    return RunContext(
        settings=Settings.build(target=TARGET, graph_url="http://127.0.0.1:9/beta", **settings),
        transport=transport, tokens=StaticTokenProvider("t0ken-for-units"), pacer=FreePacer(),
        operation=AssignProfile(TARGET), stats=RunStats(), verifier=verifier, run_id="run-1", sleep=sleeps,
        rng=random.Random(0),
    )


def device_of(request: Request) -> str:
    return request.url.split("windowsAutopilotDeviceIdentities/")[1].split("/")[0]


def created(n: int = 1) -> Response:
    return json_response(201, {"id": f"assignment-{n}"}, {"request-id": f"req-{n}"})


def state(n: int) -> DeviceState:
    return DeviceState.queued(InputRow(source_line=n + 1, device_id=DEV[n]))


# ------------------------------------------------------------------------------------------------ DeviceWorker
async def test_a_transient_failure_is_retried_and_counted_once_per_send() -> None:
    answers = iter([json_response(503, {"error": {"code": "ServiceUnavailable", "message": "busy"}}), created()])
    transport = MockTransport(lambda request: next(answers))
    ctx = context(transport, verify=False)
    s = state(0)
    await DeviceWorker(ctx).process(s)
    record = s.record("run-1")
    assert (record.status, record.attempts, record.assignment_id, record.request_id) == (
        Status.SUCCEEDED, 2, "assignment-1", "req-1")
    assert (ctx.stats.requests_sent, ctx.stats.retries) == (2, 1)
    assert record.client_request_id == transport.requests[-1].headers["client-request-id"]
    assert "t0ken-for-units" not in repr(s) and "t0ken-for-units" not in repr(record)


async def test_a_record_is_timed_from_when_a_worker_took_the_device() -> None:
    """Two timestamps per device: ``started_at`` when a worker takes it (not when it was queued), and
    ``finished_at`` when its record is made; a state that was never started took no time."""
    s = state(0)
    assert s.started_at is None
    await asyncio.sleep(0.01)
    await DeviceWorker(context(MockTransport(lambda request: created()), verify=False)).process(s)
    started = s.started_at
    assert started is not None
    record = s.record("run-1")
    assert record.started_at == started and record.finished_at is not None and started <= record.finished_at
    never = DeviceState(DEV[1], attempt=s.attempt)
    again = never.record("run-1")
    assert again.started_at == again.finished_at


async def test_a_possibly_committed_failure_is_read_back_before_any_resend() -> None:
    def handler(request: Request) -> Response:
        raise ConnectionLost("reset after the request was written")

    transport = MockTransport(handler)
    verifier = ScriptedVerifier({DEV[0]: True})
    ctx = context(transport, verifier=verifier)
    s = state(0)
    await DeviceWorker(ctx).process(s)
    record = s.record("run-1")
    assert (record.status, record.skip_reason, record.attempts) == (Status.SKIPPED, SkipReason.LANDED, 1)
    assert len(transport.requests) == 1 and verifier.asked == [DEV[0]]


async def test_not_sent_is_resent_without_a_read_back() -> None:
    calls = iter([NotSent("refused"), created()])

    def handler(request: Request) -> Response:
        answer = next(calls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    verifier = ScriptedVerifier({})
    ctx = context(MockTransport(handler), verifier=verifier)
    s = state(0)
    await DeviceWorker(ctx).process(s)
    assert s.record("run-1").status is Status.SUCCEEDED
    assert verifier.asked == []


async def test_a_device_in_doubt_from_an_earlier_run_is_read_back_first() -> None:
    from bulk_assign.inputs.readers import Deduper

    transport = MockTransport(lambda request: created())
    ctx = context(transport, verifier=ScriptedVerifier({DEV[0]: False}))
    ctx.in_doubt = Deduper()
    ctx.in_doubt.add(DEV[0])
    s = state(0)
    await DeviceWorker(ctx).process(s)
    assert s.record("run-1").status is Status.SUCCEEDED
    assert len(transport.requests) == 1


async def test_a_permanent_failure_keeps_graphs_code_and_a_permission_hint() -> None:
    body = {"error": {"code": "Forbidden", "message": "no permission"}}
    ctx = context(MockTransport(lambda request: json_response(403, body)))
    s = state(0)
    await DeviceWorker(ctx).process(s)
    record = s.record("run-1")
    assert (record.status, record.http_status, record.error_code, record.attempts) == (
        Status.FAILED, 403, "Forbidden", 1)
    assert "DeviceManagementServiceConfig.ReadWrite.All" in (record.error_message or "")


# ------------------------------------------------------------------------------------------------- BatchWorker
async def test_a_batch_resends_only_its_failed_items_and_reads_back_the_doubtful_ones() -> None:
    rounds: list[list[str]] = []

    def handler(request: Request) -> Response:
        body = request.json()
        assert isinstance(body, dict)
        items = body["requests"]
        ids = [item["url"].split("windowsAutopilotDeviceIdentities/")[1].split("/")[0] for item in items]
        rounds.append(ids)
        answers = []
        for item, device in zip(items, ids, strict=True):
            if len(rounds) == 1 and device == DEV[1]:
                status, answer = 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}
                headers = {"Retry-After": "0"}
            elif len(rounds) == 1 and device == DEV[2]:
                status, answer, headers = 500, {"error": {"code": "InternalServerError", "message": "x"}}, {}
            else:
                status, answer, headers = 201, {"id": f"a-{device}"}, {}
            answers.append({"id": item["id"], "status": status, "headers": headers, "body": answer})
        return json_response(200, {"responses": answers})

    verifier = ScriptedVerifier({DEV[2]: False})
    ctx = context(MockTransport(handler), verifier=verifier)
    states = [state(n) for n in range(4)]
    await BatchWorker(ctx).process(states)
    assert rounds == [DEV[:4], [DEV[1], DEV[2]]]
    assert verifier.asked == [DEV[2]]  # the 500 may have landed; the 429 did not
    records = [s.record("run-1") for s in states]
    assert [r.status for r in records] == [Status.SUCCEEDED] * 4
    assert [r.attempts for r in records] == [1, 2, 2, 1]
    assert ctx.stats.requests_sent == 2 and ctx.stats.retries == 2


async def test_an_unreadable_batch_answer_puts_every_item_in_doubt() -> None:
    answers = iter([Response(200, {}, b"{not json"), None])

    def handler(request: Request) -> Response:
        answer = next(answers)
        assert answer is not None, "nothing may be resent: every item was found by the read-back"
        return answer

    verifier = ScriptedVerifier({d: True for d in DEV[:3]})
    ctx = context(MockTransport(handler), verifier=verifier)
    states = [state(n) for n in range(3)]
    await BatchWorker(ctx).process(states)
    assert [s.record("run-1").skip_reason for s in states] == [SkipReason.LANDED] * 3
    assert sorted(verifier.asked) == sorted(DEV[:3])


# --------------------------------------------------------------------------------------------------- collector
class ListSink(NullSink):
    def __init__(self) -> None:
        self.records: list[DeviceResult] = []

    def outcome(self, result: DeviceResult) -> None:
        self.records.append(result)


@pytest.mark.parametrize("batch", [False, True])
async def test_every_row_ends_as_exactly_one_record(batch: bool) -> None:
    seen: list[str] = []

    def handler(request: Request) -> Response:
        if request.url.endswith("/$batch"):
            body = request.json()
            assert isinstance(body, dict)
            out = []
            for item in body["requests"]:
                seen.append(item["url"])
                out.append({"id": item["id"], "status": 201, "body": {"id": "a"}})
            return json_response(200, {"responses": out})
        seen.append(device_of(request))
        return created()

    settings = Settings.build(target=TARGET, graph_url="http://127.0.0.1:9/beta", batch=batch, concurrency=3,
                              preflight=False)
    sink = ListSink()
    deps = RunDeps(settings=settings, run_id="run-1", transport=MockTransport(handler),
                   tokens=StaticTokenProvider("tok"), pacer=FreePacer(), read_pacer=FreePacer(),
                   operation=AssignProfile(TARGET), sink=sink, verifier=ScriptedVerifier({}))
    rows = [*DEV[:10], "junk", DEV[3], "{" + DEV[11].upper() + "}"]
    job = Job(deps, len(rows), None)
    await job.execute(rows, None)
    assert len(sink.records) == len(rows)
    by_status = sorted((r.status.value, r.skip_reason.value if r.skip_reason else "") for r in sink.records)
    assert by_status.count(("succeeded", "")) == 11
    assert ("invalid", "") in by_status and ("skipped", "duplicate") in by_status
    assert len(seen) == 11
    assert job.summary is not None and job.summary.remaining == 0


# ------------------------------------------------- hardening #7: a malformed batch item answer is in doubt
@pytest.mark.parametrize(
    "bad_item",
    [
        {"id": "1", "body": {}},  # no status
        {"id": "1", "status": "two hundred", "body": {}},
        {"id": "1", "status": None},
        {"id": "1", "status": 2010},
        {"id": "1", "status": True},
    ],
)
def test_a_batch_item_without_a_valid_status_is_in_doubt(bad_item: dict[str, object]) -> None:
    from bulk_assign.graph.operations import classify_item
    from bulk_assign.graph.outcome import Kind

    attempt = classify_item(bad_item)
    assert (attempt.kind, attempt.maybe_committed, attempt.error_code) == (Kind.TRANSIENT, True, "MalformedBatchItem")


def test_an_item_answered_twice_is_in_doubt_and_the_others_stand() -> None:
    from bulk_assign.graph.operations import classify_item, item_responses
    from bulk_assign.graph.outcome import Kind

    by_id = item_responses({"responses": [{"id": "0", "status": 201}, {"id": "1", "status": 201},
                                          {"id": "1", "status": 404}]})
    assert by_id is not None
    assert classify_item(by_id.get("0")).kind is Kind.SUCCESS
    doubtful = classify_item(by_id.get("1"))
    assert (doubtful.kind, doubtful.maybe_committed, doubtful.error_code) == (Kind.TRANSIENT, True,
                                                                              "DuplicateBatchItem")


async def test_malformed_items_are_read_back_before_they_are_reported_or_resent() -> None:
    sent: list[list[int]] = []

    def handler(request: Request) -> Response:
        body = request.json()
        assert isinstance(body, dict)
        ids = [int(item["id"]) for item in body["requests"]]
        sent.append(ids)
        if len(sent) == 1:  # item 0 fine, item 1 without status, item 2 answered twice
            responses = [{"id": "0", "status": 201, "body": {"id": "a"}}, {"id": "1", "body": {}},
                         {"id": "2", "status": 201}, {"id": "2", "status": 500}]
        else:
            responses = [{"id": str(n), "status": 201, "body": {"id": "b"}} for n in ids]
        return json_response(200, {"responses": responses})

    verifier = ScriptedVerifier({DEV[1]: True, DEV[2]: False})
    ctx = context(MockTransport(handler), verifier=verifier)
    states = [state(n) for n in range(3)]
    await BatchWorker(ctx).process(states)
    assert sorted(verifier.asked) == [DEV[1], DEV[2]]
    assert len(sent) == 2 and len(sent[1]) == 1  # only the one found not assigned is sent again
    records = [s.record("run-1") for s in states]
    assert [r.status for r in records] == [Status.SUCCEEDED, Status.SKIPPED, Status.SUCCEEDED]
    assert records[1].skip_reason is SkipReason.LANDED


# -------------------------------------------------- hardening #2: a 429 that carries no usable wait ends
@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT", None])
@pytest.mark.parametrize("batch", [False, True])
async def test_a_429_without_a_usable_wait_is_bounded_in_requests_and_time(retry_after: str | None,
                                                                             batch: bool) -> None:
    requests = 0

    def handler(request: Request) -> Response:
        nonlocal requests
        requests += 1
        if requests > 500:
            raise AssertionError("a 429 with no usable wait was resent without end")
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return json_response(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, headers)

    t = FakeTime()
    ctx = context(MockTransport(handler), max_throttle_wait=120.0, max_retry_after=30.0)
    ctx = RunContext(settings=ctx.settings, transport=ctx.transport, tokens=ctx.tokens, pacer=ctx.pacer,
                     operation=ctx.operation, stats=ctx.stats, verifier=None, run_id="run-1", sleep=t.sleep,
                     rng=random.Random(0), clock=t.clock)
    states = [state(n) for n in range(3 if batch else 1)]
    if batch:
        await BatchWorker(ctx).process(states)
    else:
        await DeviceWorker(ctx).process(states[0])
    records = [s.record("run-1") for s in states]
    assert {r.error_code for r in records} == {"ThrottleWaitExceeded"}
    assert {r.http_status for r in records} == {429}
    assert requests <= 30  # doubling waits from 50 ms reach the 120 s cap within a few dozen requests
    assert 120.0 <= t.now - 1000.0 <= 200.0  # the cap counts the wall time spent throttled


def test_the_floor_after_a_429_doubles_while_429s_come_in_a_row_and_is_capped() -> None:
    ctx = context(MockTransport(lambda request: created()), max_retry_after=30.0)
    for streak in range(1, 15):
        ceiling = min(30.0, 0.05 * 2 ** (streak - 1))
        assert ceiling / 2 <= ctx.throttle_floor(streak) <= ceiling


async def test_an_answer_other_than_429_resets_the_throttle_streak() -> None:
    answers = iter([json_response(429, {}, {"Retry-After": "0"})] * 3 + [created()])
    t = FakeTime()
    base = context(MockTransport(lambda request: next(answers)))
    ctx = RunContext(settings=base.settings, transport=base.transport, tokens=base.tokens, pacer=base.pacer,
                     operation=base.operation, stats=base.stats, verifier=None, run_id="run-1", sleep=t.sleep,
                     rng=random.Random(0), clock=t.clock)
    s = state(0)
    await DeviceWorker(ctx).process(s)
    assert s.record("run-1").status is Status.SUCCEEDED
    assert ctx._throttle_streak == 0
    gate_waits = [w for w in t.sleeps if w > 0]
    assert len(gate_waits) == 3 and min(gate_waits) >= 0.05  # "Retry-After: 0" still waited: window + jitter


# ------------------------------------------------ hardening #3: no secret in a stored or yielded record
async def test_records_carry_no_proxy_password_and_no_echoed_authorization(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: Request) -> Response:
        device = device_of(request)
        if device == DEV[0]:
            raise NotSent("Cannot connect to host 127.0.0.1:9 ssl:default via proxy "
                          "http://ops:Pr0xyPa55@127.0.0.1:9 [Connect call failed]")
        echoed = f"invalid header Authorization: {request.headers['Authorization']}"
        return json_response(400, {"error": {"code": "BadRequest", "message": echoed}})

    settings = Settings.build(target=TARGET, graph_url="http://127.0.0.1:9/beta", max_attempts=1)
    sink = ListSink()
    deps = RunDeps(settings=settings, run_id="run-1", transport=MockTransport(handler),
                   tokens=StaticTokenProvider("distinctive-T0KEN-value"), pacer=FreePacer(), read_pacer=FreePacer(),
                   operation=AssignProfile(TARGET), sink=sink, verifier=None)
    job = Job(deps, 2, None)
    await job.execute(DEV[:2], None)
    messages = [r.error_message or "" for r in sink.records]
    assert len(messages) == 2 and all(messages)
    assert not any("Pr0xyPa55" in m or "distinctive-T0KEN-value" in m for m in messages), messages
    assert any("http://<redacted>@127.0.0.1:9" in m for m in messages)


async def test_a_timed_flush_that_fails_stops_the_run_instead_of_printing_a_loop_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    from bulk_assign.errors import InternalError
    from bulk_assign.pipeline.brake import FailureBrake
    from bulk_assign.pipeline.collector import FLUSH_EVERY, Collector

    class FullDisk(ListSink):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    collector = Collector(run_id="r", sink=FullDisk(), stats=RunStats(), brake=FailureBrake(0.5, 50), progress=None,
                          on_brake=lambda: None, out=None)
    row = InputRow(source_line=2, device_id=DEV[0])
    await collector.decided(collector.simple(row, Status.PLANNED))
    await asyncio.sleep(FLUSH_EVERY * 3)  # the timer fires and fails
    with pytest.raises(OSError, match="No space left"):
        await collector.decided(collector.simple(row, Status.PLANNED))
    assert not [r for r in caplog.records if r.name == "asyncio"]  # no "Exception in callback" from the loop
    assert InternalError.exit_code == 5
