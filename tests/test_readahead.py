"""Read-before-write, the seed call's default (issue 12): no device assigned twice, across folders too.

Before each write the device's assignments are read under the read budget; a device that already carries
the target is ``skipped``/``already_assigned`` with no write. The reads run ahead of the writes
(``pipeline/readahead.py``). These tests count every request, reads included.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from bulk_assign import BulkAssigner
from bulk_assign.auth import StaticTokenProvider
from bulk_assign.config import Rate, Settings
from bulk_assign.graph.mock import MockTransport, Request, json_response
from bulk_assign.graph.operations import AssignProfile
from bulk_assign.graph.transport import Response
from bulk_assign.models import AssignmentTarget, DeviceResult, SkipReason, Status
from bulk_assign.pipeline.run import Job, RunDeps
from bulk_assign.store.reports import NullSink

FAST = Rate(100_000, 1.0)
GROUP = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"
FILTER = "f1f1f1f1-0000-4000-8000-000000000001"
TARGET = AssignmentTarget.parse(f"group:{GROUP}")


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def settings(url: str, **values: Any) -> Settings:
    return Settings(**{"target": TARGET, "graph_url": url, "rate": FAST, "preflight": False, **values})


async def test_the_readme_sequence_assigns_no_device_twice_across_folders(start_emulator: Any,
                                                                           tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    ids = [did(i) for i in range(50)]
    async with BulkAssigner(settings(emu.base_url, out_dir=tmp_path / "canary", limit=20), token_provider="t") as e:
        await e.run_all(ids)
    # the full run in a folder of its own (a user who forgot --out): the canary's 20 are read, not written
    async with BulkAssigner(settings(emu.base_url, out_dir=tmp_path / "full"), token_provider="t") as engine:
        records = [r async for r in engine.run(ids)]
    skipped = {r.device_id for r in records if r.skip_reason is SkipReason.ALREADY_ASSIGNED}
    assert skipped == set(ids[:20]) and all(r.attempts == 0 for r in records if r.device_id in skipped)
    assert sum(r.status is Status.SUCCEEDED for r in records) == 30
    assert emu.tenant.counters.devices_assigned_twice == 0 and emu.tenant.counters.writes_committed == 50
    summary = engine.summary
    assert summary is not None and summary.exit_code == 0 and summary.skipped_by_reason == {"already_assigned": 20}
    assert (summary.verifications, summary.requests_sent) == (50, 30)

    # a rerun of the finished wave costs reads, not writes
    emu.reset_counters()
    async with BulkAssigner(settings(emu.base_url, out_dir=tmp_path / "again"), token_provider="t") as engine:
        summary = await engine.run_all(ids)
    assert summary.skipped_by_reason == {"already_assigned": 50} and summary.exit_code == 0
    assert emu.tenant.counters.requests == 50 and emu.tenant.counters.writes_committed == 0

    # --no-read-before-write: nothing read, every device written again (what read-before-write prevents)
    emu.reset_counters()
    off = settings(emu.base_url, out_dir=tmp_path / "off", read_before_write=False)
    async with BulkAssigner(off, token_provider="t") as engine:
        summary = await engine.run_all(ids[:5])
    assert summary.verifications == 0 and emu.tenant.counters.requests == emu.tenant.counters.writes_committed == 5
    assert [len(emu.assignments(d)) for d in ids[:6]] == [2, 2, 2, 2, 2, 1]


async def test_already_carries_means_type_group_and_filter(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    before = {
        did(0): AssignmentTarget.parse(f"group:{GROUP}", f"{FILTER}:include"),  # same group, with a filter
        did(1): AssignmentTarget.parse(f"group:{OTHER}"),  # another group
        did(2): AssignmentTarget.parse(f"exclude-group:{GROUP}"),  # the group, excluded
        did(3): AssignmentTarget.parse(f"group:{GROUP.upper()}"),  # the target itself (ids in any case)
    }
    for device, target in before.items():
        async with BulkAssigner(settings(emu.base_url, target=target), token_provider="t") as engine:
            await engine.run_all([device])
    emu.reset_counters()
    async with BulkAssigner(settings(emu.base_url), token_provider="t") as engine:
        records = {r.device_id: r async for r in engine.run([*before, did(4)])}
    assert {d for d, r in records.items() if r.status is Status.SKIPPED} == {did(3)}
    assert records[did(3)].skip_reason is SkipReason.ALREADY_ASSIGNED
    assert emu.tenant.counters.writes_committed == 4
    filtered = settings(emu.base_url, target=before[did(0)])
    async with BulkAssigner(filtered, token_provider="t") as engine:  # the filter matches too: skipped
        records = {r.device_id: r async for r in engine.run([did(0), did(3)])}
    assert records[did(0)].skip_reason is SkipReason.ALREADY_ASSIGNED and records[did(3)].status is Status.SUCCEEDED


async def test_batched_reads_go_20_to_a_batch(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    async with BulkAssigner(settings(emu.base_url, batch=True), token_provider="t") as engine:
        summary = await engine.run_all([did(i) for i in range(100)])
    assert summary.counts["succeeded"] == 100
    # 5 $batch of 20 reads, then 5 $batch of 20 writes: 0.1 requests per device
    assert (summary.verifications, summary.requests_sent) == (5, 5)
    assert emu.tenant.counters.requests == emu.tenant.counters.batches == 10
    async with BulkAssigner(settings(emu.base_url, batch=True), token_provider="t") as engine:
        summary = await engine.run_all([did(i) for i in range(100)])
    assert summary.skipped_by_reason == {"already_assigned": 100} and summary.requests_sent == 0


async def test_a_throttled_read_waits_for_its_retry_after_and_is_no_attempt(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=Rate(10, 1.0), retry_after="decimal")
    ids = [did(i) for i in range(25)]
    async with BulkAssigner(settings(emu.base_url, max_attempts=1), token_provider="t") as engine:
        records = [r async for r in engine.run(ids)]
    assert all(r.status is Status.SUCCEEDED and r.attempts == 1 for r in records), records
    assert emu.tenant.counters.throttled > 0 and emu.tenant.counters.writes_committed == 25
    summary = engine.summary
    assert summary is not None and summary.throttled_429 == emu.tenant.counters.throttled  # read 429s count too


# ------------------------------------------------------------------------------ in-process: the stage itself
class FreePacer:
    effective_rate = Rate(1_000_000, 1.0)

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        return amount

    def on_throttle(self, retry_after: float | None, count: int = 1) -> None:
        return None

    def on_failed(self, latency: float, count: int = 1) -> None:
        return None

    def on_accepted(self, latency: float, count: int = 1) -> None:
        return None

    def window_free_in(self) -> float:
        return 0.0


class HeldPacer(FreePacer):
    """A write budget that grants nothing until ``release``: the writers wait as at the throttle floor."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def acquire(self, amount: int = 1, *, partial: bool = False) -> int:
        await self.open.wait()
        return amount


class Records(NullSink):
    def __init__(self) -> None:
        self.records: list[DeviceResult] = []

    def outcome(self, result: DeviceResult) -> None:
        self.records.append(result)


def job(handler: Any, pacer: FreePacer, sink: Records, **values: Any) -> Job:
    s = Settings.build(target=TARGET, graph_url="http://127.0.0.1:9/beta", preflight=False, **values)
    deps = RunDeps(settings=s, run_id="run-1", transport=MockTransport(handler), tokens=StaticTokenProvider("tok"),
                   pacer=pacer, read_pacer=FreePacer(), operation=AssignProfile(TARGET), sink=sink)
    return Job(deps, None, None)


def answer(reads: list[str], writes: list[str], unreadable: str = "", refused: str = "") -> Any:
    """Graph in a function: reads (none of the devices has an assignment), writes, and ``$batch`` of either."""
    def one(method: str, url: str) -> tuple[int, dict[str, Any]]:
        device = url.split("windowsAutopilotDeviceIdentities/")[1].split("/")[0]
        if method == "GET":
            reads.append(device)
            if device == unreadable:
                return 500, {"error": {"code": "InternalServerError", "message": "try later"}}
            if device == refused:
                return 403, {"error": {"code": "Forbidden", "message": "not for you"}}
            return 200, {"value": []}
        writes.append(device)
        return 201, {"id": f"a-{device}"}

    def handler(request: Request) -> Response:
        if request.url.endswith("/$batch"):
            body = request.json()
            assert isinstance(body, dict)
            items = []
            for item in body["requests"]:
                status, data = one(item["method"], item["url"])
                items.append({"id": item["id"], "status": status, "body": data})
            return json_response(200, {"responses": items})
        return json_response(*one(request.method, request.url))

    return handler


async def test_reads_run_ahead_while_the_writers_wait_for_the_write_budget() -> None:
    reads: list[str] = []
    writes: list[str] = []
    pacer, sink = HeldPacer(), Records()
    run = job(answer(reads, writes), pacer, sink, concurrency=2)
    task = asyncio.create_task(run.execute([did(i) for i in range(40)], None))
    for _ in range(200):  # until the readers stop: the writers' queue is full
        count = len(reads)
        await asyncio.sleep(0.005)
        if count and len(reads) == count:
            break
    # a worker that read its own device first would have read 2 (one per worker); the readers filled the
    # writers' queue (2 x 4) and hold one more each, and each writer holds one at the pacer
    assert writes == [] and len(reads) >= 10
    pacer.open.set()
    await task
    assert sorted(writes) == sorted(did(i) for i in range(40)) and sorted(reads) == sorted(writes)
    assert run.summary is not None and run.summary.counts["succeeded"] == 40


async def test_a_device_whose_state_cannot_be_read_is_never_written_blind() -> None:
    reads: list[str] = []
    writes: list[str] = []
    sink = Records()
    run = job(answer(reads, writes, unreadable=did(0)), FreePacer(), sink, concurrency=2, max_attempts=2)
    await run.execute([did(i) for i in range(3)], None)
    by_id = {r.device_id: r for r in sink.records}
    failed = by_id[did(0)]
    assert failed.status is Status.FAILED and failed.error_code == "RetriesExhausted" and failed.attempts == 0
    assert "VerificationFailed" in (failed.error_message or "") and "HTTP 500" in (failed.error_message or "")
    assert did(0) not in writes and reads.count(did(0)) == 3  # read ahead, then twice by its worker
    assert by_id[did(1)].status is Status.SUCCEEDED and by_id[did(2)].status is Status.SUCCEEDED


async def test_a_read_refused_for_good_fails_the_device_with_that_answer_and_no_write() -> None:
    reads: list[str] = []
    writes: list[str] = []
    sink = Records()
    run = job(answer(reads, writes, refused=did(0)), FreePacer(), sink, concurrency=2, batch=True)
    await run.execute([did(i) for i in range(3)], None)
    by_id = {r.device_id: r for r in sink.records}
    refused = by_id[did(0)]
    assert (refused.status, refused.http_status, refused.error_code, refused.attempts) == (Status.FAILED, 403,
                                                                                          "Forbidden", 0)
    assert "before its write; nothing was written" in (refused.error_message or "")
    assert did(0) not in writes and reads.count(did(0)) == 1  # a 403 is not read again
    assert by_id[did(1)].status is Status.SUCCEEDED and by_id[did(2)].status is Status.SUCCEEDED
