"""``--batch`` against the emulator: per-device results from $batch, per-item 429s, whole-batch failures."""

from __future__ import annotations

import random
import uuid

import orjson

from bulk_assign import Settings, Status
from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner
from bulk_assign.graph.operations import AssignProfile, classify_item
from bulk_assign.graph.outcome import Kind
from bulk_assign.models import AssignmentTarget, DeviceResult
from bulk_assign.pipeline.batch import MAX_BATCH, batch_payload, batch_size

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
TOKEN = "batch-token"
FAST = {"app_rate": Rate(100_000, 1.0), "tenant_rate": Rate(100_000, 1.0)}


def guids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


async def run_batch(
    emulator: Emulator, devices: list[str], **overrides: object
) -> tuple[list[DeviceResult], BulkAssigner]:
    values: dict[str, object] = {
        "target": TARGET,
        "graph_url": emulator.base_url,
        "rate": "100000/1s",
        "concurrency": 4,
        "batch": True,
        "max_retry_after": 1.0,
        "preflight": False,  # the canary's reads (tests/test_preflight.py) stay out of the request counts
    }
    values.update(overrides)
    async with BulkAssigner(Settings.build(**values), token_provider=TOKEN) as engine:
        records = [r async for r in engine.run(devices)]
    return records, engine


def test_batch_payload_is_valid_json_with_one_item_per_device() -> None:
    op = AssignProfile(TARGET)
    devices = guids(3, seed=1)
    payload = orjson.loads(batch_payload([(op.path(d), op.body(d)) for d in devices]))
    assert [r["id"] for r in payload["requests"]] == ["0", "1", "2"]
    assert (
        payload["requests"][2]["url"] == f"/deviceManagement/windowsAutopilotDeviceIdentities/{devices[2]}"
        "/deploymentProfile/assignments"
    )
    assert payload["requests"][0]["body"]["target"] == TARGET.to_graph()
    assert all(r["method"] == "POST" for r in payload["requests"])


def test_a_missing_batch_item_may_have_landed() -> None:
    attempt = classify_item(None)
    assert attempt.kind is Kind.TRANSIENT and attempt.maybe_committed
    throttled = classify_item({"id": "1", "status": 429, "headers": {"retry-after": "2.5"}, "body": {}})
    assert throttled.kind is Kind.THROTTLED and throttled.retry_after == 2.5


async def test_every_device_succeeds_with_one_request_per_twenty_devices() -> None:
    devices = guids(400, seed=2)
    async with Emulator(EmulatorConfig(**FAST)) as emulator:  # type: ignore[arg-type]
        records, engine = await run_batch(emulator, devices)
        counters = emulator.counters
        stored = {d: emulator.assignments(d) for d in devices}
    assert all(r.status is Status.SUCCEEDED and r.attempts == 1 for r in records)
    # responses come back shuffled: each device still gets its own assignment id
    assert all(r.assignment_id == stored[r.device_id][0]["id"] for r in records)
    assert counters.batches == counters.requests
    # read-before-write: one $batch of 20 reads and one of 20 writes per 20 devices
    assert counters.requests / len(devices) <= 0.1
    assert engine.summary is not None and engine.summary.requests_sent / len(devices) <= 0.05
    assert engine.summary.requests_sent + engine.summary.verifications == counters.requests


async def test_mixed_item_outcomes_are_reported_per_device_and_permanent_ones_not_resent() -> None:
    known = guids(90, seed=3)
    unknown = guids(10, seed=4)
    devices = known + unknown
    random.Random(5).shuffle(devices)
    async with Emulator(EmulatorConfig(inventory=frozenset(known), **FAST)) as emulator:  # type: ignore[arg-type]
        records, _ = await run_batch(emulator, devices)
        counters = emulator.counters
    by_device = {r.device_id: r for r in records}
    assert all(by_device[d].status is Status.SUCCEEDED for d in known)
    for d in unknown:
        assert (by_device[d].status, by_device[d].http_status, by_device[d].error_code) == (
            Status.FAILED,
            404,
            "ResourceNotFound",
        )
        assert by_device[d].attempts == 1
    assert counters.items == 100 + 100  # each device read once (404: nothing to duplicate) and written once


async def test_per_item_429_resends_only_the_throttled_items() -> None:
    devices = guids(200, seed=6)
    config = EmulatorConfig(app_rate=Rate(30, 0.5), tenant_rate=Rate(60, 0.5), retry_after="decimal")
    async with Emulator(config) as emulator:
        records, _ = await run_batch(emulator, devices, rate="1000/1s", concurrency=3)
        counters = emulator.counters
    assert all(r.status is Status.SUCCEEDED for r in records)
    assert counters.throttled > 0
    assert counters.writes_committed == 200 and counters.devices_assigned_twice == 0
    # every evaluated item is a read (one per device: 200 fit the emulator's read budget), a first send or the
    # resend of a throttled item: successes are never resent
    assert counters.items == 200 + 200 + counters.throttled
    assert max(r.attempts for r in records) > 1


async def test_whole_batch_failures_are_verified_before_any_resend() -> None:
    devices = guids(300, seed=7)
    config = EmulatorConfig(
        faults=0.25, fault_kinds=("ambiguous-504", "ambiguous-reset", "504", "reset", "503"), seed=9, **FAST
    )  # type: ignore[arg-type]
    async with Emulator(config) as emulator:
        records, engine = await run_batch(emulator, devices, max_attempts=20)
        counters = emulator.counters
    assert counters.ambiguous_commits > 0
    assert counters.devices_assigned_twice == 0
    assert set(counters.commits_per_device) == set(devices)
    assert all(
        r.status is Status.SUCCEEDED or (r.skip_reason and r.skip_reason.value == "landed") for r in records
    )
    assert engine.summary is not None and engine.summary.verifications > 0


def test_batch_size_fills_the_window_with_the_fewest_requests() -> None:
    for limit in range(1, 401):
        size = batch_size(limit)
        assert 1 <= size <= min(MAX_BATCH, limit)
        assert (limit // size) * size >= 0.9 * limit, limit  # whole batches carry ≥ 90 % of the window
        bigger = range(size + 1, min(MAX_BATCH, limit) + 1)
        assert all((limit // s) * s < 0.9 * limit for s in bigger), limit  # and no bigger batch would


def test_batch_size_examples() -> None:
    assert [batch_size(n) for n in (20, 25, 45, 50, 100, 1_000_000)] == [20, 12, 15, 16, 20, 20]
