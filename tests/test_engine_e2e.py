"""End to end: the real engine against the project's Graph emulator on loopback (no mocks of aiohttp).

The seed call's core tests run under both readings of what it does (the emulator's ``seed_call_semantics``):
``device``, an assignment on the device, and ``profile``, the target added to the device's current profile
(what public sources infer). Under ``profile`` every device needs a profile, so the tenant gives each one of
a few shared profiles, as a real tenant would; the assertions count per device, so they mean the same under
both readings.
"""

from __future__ import annotations

import asyncio
import csv
import random
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest

from bulk_assign import AuthenticationError, Settings, Status
from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner, assign_profiles
from bulk_assign.models import AssignmentTarget
from bulk_assign.pipeline.pacing import WindowPacer
from bulk_assign.store.reports import read_jsonl

GROUP = "11111111-2222-3333-4444-555555555555"
TARGET = AssignmentTarget.parse(f"group:{GROUP}")
TOKEN = "test-token-e2e"


SEMANTICS = pytest.mark.parametrize("semantics", ["device", "profile"])
SHARED_PROFILES = tuple(f"aaaaaaaa-0000-4000-8000-00000000000{n}" for n in range(1, 5))


def seed_tenant(semantics: str, devices: list[str]) -> dict[str, object]:
    """Emulator settings for a seed-call reading: none for ``device``; for ``profile`` an inventory in which
    every device already has one of a few shared profiles (the call answers 404 for a device with none)."""
    if semantics == "device":
        return {}
    return {"seed_call_semantics": "profile",
            "inventory": {d: {"deploymentProfileId": SHARED_PROFILES[i % len(SHARED_PROFILES)]}
                          for i, d in enumerate(devices)}}


def created_for(emulator: Emulator, device: str) -> list[dict[str, object]]:
    """The assignments the device's own listing shows: its own (``device``) or its profile's (``profile``)."""
    tenant = emulator.tenant
    if tenant.config.seed_call_semantics == "device":
        return emulator.assignments(device)
    profile = tenant.profile_of(device)
    return tenant.rollout.assignments_of(profile) if profile is not None else []


def guids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def fast(**overrides: object) -> EmulatorConfig:
    """An emulator whose budgets are out of the way unless a test sets them."""
    values: dict[str, object] = {"app_rate": Rate(100_000, 1.0), "tenant_rate": Rate(100_000, 1.0)}
    values.update(overrides)
    return EmulatorConfig(**values)  # type: ignore[arg-type]


def settings(url: str, **overrides: object) -> Settings:
    # the seed call's canary reads (tests/test_preflight.py) stay out of these request counts
    values: dict[str, object] = {"target": TARGET, "graph_url": url, "rate": "5000/1s", "concurrency": 16,
                                 "preflight": False}
    values.update(overrides)
    return Settings.build(**values)


def engine_tasks() -> list[asyncio.Task[object]]:
    """Tasks the engine created that are still alive (the emulator's own server tasks are ignored)."""
    names = ("Job.", "BulkAssigner.", "DeviceWorker.", "BatchWorker.")
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__.startswith(names)]  # type: ignore[union-attr]


async def test_5000_devices_faults_and_throttling_every_row_one_record(tmp_path: Path) -> None:
    """Device semantics only, for a reason in the engine: under ``profile``, with devices sharing a profile, a
    503/504/reset that did NOT commit is verified by reading the device's assignments, which are its profile's;
    another device of that profile has already added the same group, so the read-back says "landed" and the
    device is skipped without its own write (measured: 318 of 5000 skipped as "landed", 4682 succeeded). The
    profile does carry the target then, but the record claims a write that never happened, and the test's
    "every device succeeded, each committed once" cannot hold. The ambiguous-only fault test below does run
    under both readings (there every verified write did land)."""
    valid = guids(5000, seed=1)
    rows: list[str] = []
    for i, device in enumerate(valid):
        rows.append(device.upper() if i % 3 == 0 else device)
        if i % 250 == 0:
            rows.append(f"bad-row-{i}")  # 20 invalid rows
        if i % 200 == 7:
            rows.append(valid[i - 7])  # 25 duplicates
    config = EmulatorConfig(
        # well below what the engine asks for (1200/s), so that 429s come even on a busy machine, where the
        # engine with its reads before the writes may send fewer than 600 writes a second
        app_rate=Rate(200, 0.5),
        tenant_rate=Rate(400, 0.5),
        read_rate=Rate(2000, 0.5),  # Intune's ratio: reads 10x writes (its default, 1000/20s, is not scaled)
        retry_after="mixed",
        faults=0.10,
        fault_kinds=("503", "504", "reset", "latency", "malformed"),
        seed=11,
        token=TOKEN,
    )
    async with Emulator(config) as emulator:
        s = settings(emulator.base_url, rate="1200/1s", concurrency=32, max_retry_after=1.0,
                     out_dir=tmp_path / "out", max_attempts=12)
        records = []
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            async for record in engine.run(rows):
                records.append(record)
        counters = emulator.counters
        summary = engine.summary

    assert summary is not None
    assert len(records) == len(rows)
    assert sorted(r.source_line for r in records) == list(range(1, len(rows) + 1))
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
    assert by_status == {"succeeded": 5000, "invalid": 20, "skipped": 25}
    assert {r.device_id for r in records if r.status is Status.SUCCEEDED} == set(valid)
    assert all(r.skip_reason.value == "duplicate" for r in records if r.status is Status.SKIPPED)  # type: ignore[union-attr]
    # the server really throttled and really injected faults, and nothing was assigned twice
    assert counters.throttled > 0
    assert sum(counters.faults_injected.values()) > 300
    assert counters.devices_assigned_twice == 0
    assert len(counters.commits_per_device) == 5000
    assert summary.throttled_429 == counters.throttled
    assert summary.exit_code == 1  # invalid rows present
    assert summary.remaining == 0
    # a few 429s per throttle event, not one per worker per event
    assert summary.throttled_429 < 0.05 * summary.requests_sent
    # report files: one line per row, failures/invalid split out, summary written
    out = tmp_path / "out"
    assert len(read_jsonl(out / "results.jsonl")) == len(rows)
    with open(out / "results.csv", newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == len(rows)
    with open(out / "invalid.csv", newline="") as handle:
        invalid = list(csv.DictReader(handle))
    assert len(invalid) == 20 and invalid[0]["error_code"] == "InvalidGuid" and invalid[0]["source_line"] == "2"
    saved = orjson.loads((out / "summary.json").read_bytes())
    assert saved["counts"]["succeeded"] == 5000 and saved["remaining"] == 0
    assert (out / "run.log").read_text().count("run ") >= 1


@SEMANTICS
async def test_permanent_errors_are_reported_once_and_not_retried(semantics: str) -> None:
    known = guids(40, seed=2)
    unknown = guids(10, seed=3)
    tenant = seed_tenant(semantics, known) or {"inventory": frozenset(known)}
    async with Emulator(fast(token=TOKEN, **tenant)) as emulator:
        records = []
        async with BulkAssigner(settings(emulator.base_url), token_provider=TOKEN) as engine:
            async for record in engine.run(known + unknown):
                records.append(record)
        counters = emulator.counters
    failed = [r for r in records if r.status is Status.FAILED]
    assert {r.device_id for r in failed} == set(unknown)
    for r in failed:
        assert (r.http_status, r.error_code, r.attempts) == (404, "ResourceNotFound", 1)
        assert r.request_id and r.client_request_id and r.error_message
    # each unknown device: its read before the write (404: nothing there, so the write goes) and the write
    assert counters.responses_by_status.get(404) == 2 * 10
    assert engine.summary is not None and engine.summary.exit_code == 1
    assert engine.summary.verifications == 50 and engine.summary.requests_sent == 50


@SEMANTICS
async def test_records_carry_request_ids_and_assignment_ids(semantics: str) -> None:
    devices = guids(5, seed=4)
    async with Emulator(fast(**seed_tenant(semantics, devices))) as emulator:
        async with BulkAssigner(settings(emulator.base_url), token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        stored = {d: {str(a["id"]): a for a in created_for(emulator, d)} for d in devices}
        assert emulator.counters.commits_per_device == dict.fromkeys(devices, 1)
    for r in records:
        assert r.status is Status.SUCCEEDED and r.attempts == 1 and r.http_status == 201
        assert r.assignment_id in stored[r.device_id]
        assert uuid.UUID(r.client_request_id or "") and r.request_id
        assert stored[r.device_id][r.assignment_id]["target"] == TARGET.to_graph()
    assert len({r.assignment_id for r in records}) == 5
    assert len({r.client_request_id for r in records}) == 5


async def test_dry_run_plans_and_opens_no_connection(tmp_path: Path) -> None:
    devices = guids(20, seed=5)
    async with Emulator(fast()) as emulator:
        s = settings(emulator.base_url, dry_run=True, out_dir=tmp_path)
        async with BulkAssigner(s) as engine:
            records = [r async for r in engine.run([*devices, "junk"])]
            assert engine._transport is None
        assert emulator.counters.requests == 0
    assert [r.status for r in records].count(Status.PLANNED) == 20
    assert records[-1].status is Status.INVALID
    assert engine.summary is not None and engine.summary.requests_sent == 0


async def test_limit_runs_a_canary_and_counts_the_rest_as_remaining() -> None:
    devices = guids(30, seed=6)
    async with Emulator(fast()) as emulator:
        async with BulkAssigner(settings(emulator.base_url, limit=5), token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        assert len(emulator.counters.commits_per_device) == 5
    assert [r.device_id for r in records] == devices[:5] or {r.device_id for r in records} == set(devices[:5])
    assert engine.summary is not None and engine.summary.remaining == 25


async def test_breaking_out_of_run_leaves_no_task_and_no_session() -> None:
    devices = guids(300, seed=7)
    async with Emulator(fast(latency_ms=5)) as emulator:
        async with BulkAssigner(settings(emulator.base_url, concurrency=8), token_provider=TOKEN) as engine:
            seen = 0
            async for _ in engine.run(devices):
                seen += 1
                if seen == 10:
                    break
            assert engine_tasks(), "the run is still alive inside the async with (it was not closed)"
        assert engine_tasks() == []
        assert engine._transport is not None and engine._transport.closed
        committed = len(emulator.counters.commits_per_device)
        await asyncio.sleep(0.1)
        assert len(emulator.counters.commits_per_device) == committed  # nothing is still sending
        assert committed < 300


async def test_cancelling_the_caller_leaves_no_task_and_no_session() -> None:
    devices = guids(500, seed=8)
    async with Emulator(fast(latency_ms=5)) as emulator:
        holder: dict[str, BulkAssigner] = {}
        got_some = asyncio.Event()

        async def consume() -> None:
            async with BulkAssigner(settings(emulator.base_url), token_provider=TOKEN) as engine:
                holder["engine"] = engine
                async for _ in engine.run(devices):
                    got_some.set()

        task = asyncio.create_task(consume())
        await got_some.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine_tasks() == []
        transport = holder["engine"]._transport
        assert transport is not None and transport.closed


async def test_callers_own_session_is_used_and_not_closed() -> None:
    async with Emulator(fast()) as emulator, aiohttp.ClientSession() as session:
        summary = await assign_profiles(guids(12, seed=9), target=f"group:{GROUP}", graph_url=emulator.base_url,
                                        token_provider=TOKEN, session=session)
        assert not session.closed
        assert summary.counts["succeeded"] == 12 and summary.exit_code == 0 and summary.out_dir is None


async def test_async_iterable_input_and_summary_without_files(tmp_path: Path) -> None:
    devices = guids(25, seed=10)

    async def source():  # type: ignore[no-untyped-def]
        for d in devices:
            yield d
            await asyncio.sleep(0)

    async with Emulator(fast()) as emulator:
        summary = await assign_profiles(source(), target=TARGET, graph_url=emulator.base_url, token_provider=TOKEN)
    assert summary.counts["succeeded"] == 25
    assert list(tmp_path.iterdir()) == []


async def test_rejected_token_stops_the_run_with_auth_error_and_remaining_devices() -> None:
    devices = guids(50, seed=11)
    async with Emulator(fast(token="the-right-token")) as emulator:
        async with BulkAssigner(settings(emulator.base_url), token_provider="a-wrong-token") as engine:
            with pytest.raises(AuthenticationError) as caught:
                async for _ in engine.run(devices):
                    pass
        assert emulator.counters.writes_committed == 0
    assert "a-wrong-token" not in str(caught.value)
    assert engine.summary is not None
    assert engine.summary.exit_code == 3
    assert engine.summary.remaining == 50
    assert engine.summary.counts["failed"] == 0


@SEMANTICS
async def test_possibly_committed_failures_are_verified_not_reposted(semantics: str) -> None:
    devices = guids(400, seed=12)
    config = fast(faults=0.3, fault_kinds=("ambiguous-504", "ambiguous-reset"), seed=5,
                  **seed_tenant(semantics, devices))
    async with Emulator(config) as emulator:
        # the write path's own read-back after a lost answer, without the reads before every write (under the
        # profile reading those would find the devices' shared profiles assigned and skip most writes)
        s = settings(emulator.base_url, read_before_write=False)
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    assert counters.ambiguous_commits > 50
    assert counters.devices_assigned_twice == 0
    assert len(counters.commits_per_device) == 400
    already = [r for r in records if r.skip_reason is not None]
    assert len(already) == counters.ambiguous_commits
    assert all(r.skip_reason.value == "landed" for r in already)  # type: ignore[union-attr]
    assert engine.summary is not None and engine.summary.exit_code == 0


@SEMANTICS
async def test_a_batched_run_resends_only_throttled_items_and_commits_each_device_once(semantics: str) -> None:
    devices = guids(200, seed=21)
    config = EmulatorConfig(app_rate=Rate(30, 0.5), tenant_rate=Rate(60, 0.5), retry_after="decimal",
                            **seed_tenant(semantics, devices))  # type: ignore[arg-type]
    async with Emulator(config) as emulator:
        s = settings(emulator.base_url, batch=True, rate="1000/1s", concurrency=3, max_retry_after=1.0,
                     read_before_write=False)  # the items counted below are the writes alone
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    assert all(r.status is Status.SUCCEEDED for r in records)
    assert counters.throttled > 0 and counters.batches == counters.requests
    assert counters.requests < len(devices) / 4  # up to 20 devices per request, resends included
    assert counters.commits_per_device == dict.fromkeys(devices, 1)
    assert counters.items == len(devices) + counters.throttled  # a success is never sent again


@SEMANTICS
async def test_a_batched_run_with_lost_answers_verifies_and_commits_each_device_once(semantics: str) -> None:
    devices = guids(300, seed=22)
    config = fast(faults=0.25, fault_kinds=("ambiguous-504", "ambiguous-reset"), seed=9,
                  **seed_tenant(semantics, devices))
    async with Emulator(config) as emulator:
        s = settings(emulator.base_url, batch=True, concurrency=4, max_attempts=20, max_retry_after=1.0,
                     read_before_write=False)  # lost answers of writes, read back in batches
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    landed = [r for r in records if r.skip_reason is not None]
    assert counters.ambiguous_commits > 20 and len(landed) == counters.ambiguous_commits
    assert all(r.skip_reason.value == "landed" for r in landed)  # type: ignore[union-attr]
    assert all(r.status is Status.SUCCEEDED for r in records if r.skip_reason is None)
    assert counters.commits_per_device == dict.fromkeys(devices, 1)
    assert engine.summary is not None and engine.summary.exit_code == 0


@SEMANTICS
async def test_a_canary_its_resume_and_a_rerun_commit_each_device_once(tmp_path: Path, semantics: str) -> None:
    devices = guids(60, seed=23)
    async with Emulator(fast(**seed_tenant(semantics, devices))) as emulator:
        options: dict[str, object] = {"graph_url": emulator.base_url, "rate": "5000/1s", "concurrency": 8,
                                      "out_dir": tmp_path / "out", "preflight": False}
        canary = await assign_profiles(devices, target=TARGET, token_provider=TOKEN, limit=20, **options)
        done = canary.counts["succeeded"] + canary.skipped_by_reason.get("already_assigned", 0)
        assert done == 20 and canary.remaining == 40
        canary_writes = emulator.counters.writes_committed
        rest = await assign_profiles(devices, target=TARGET, token_provider=TOKEN, resume=True, **options)
        assert rest.remaining == 0 and rest.exit_code == 0
        if semantics == "device":
            assert rest.counts["succeeded"] == 60
            assert emulator.counters.commits_per_device == dict.fromkeys(devices, 1)
        else:  # the canary's 20 devices carry all four shared profiles: the resume's reads find the target on
            # the other 40 devices' profiles and write nothing. (Within the canary, devices of one profile may be
            # read before any of their writes lands, and the profile then gets the group more than once: the
            # seed call's problem under this reading, which the documented routes do not have.)
            assert rest.skipped_by_reason.get("already_assigned", 0) >= 40
            assert emulator.counters.writes_committed == canary_writes
        sent = emulator.counters.requests
        again = await assign_profiles(devices, target=TARGET, token_provider=TOKEN, resume=True, **options)
        assert again.exit_code == 0 and again.run_counts is not None and again.run_counts["skipped"] == 60
        assert emulator.counters.requests == sent  # a finished folder's rerun sends nothing


async def test_under_profile_semantics_a_device_without_a_profile_fails_404_with_the_route_hint() -> None:
    with_profile, without = guids(6, seed=24), guids(4, seed=25)
    tenant = {**{d: {"deploymentProfileId": SHARED_PROFILES[0]} for d in with_profile}, **{d: {} for d in without}}
    async with Emulator(fast(seed_call_semantics="profile", inventory=tenant)) as emulator:
        async with BulkAssigner(settings(emulator.base_url), token_provider=TOKEN) as engine:
            records = {r.device_id: r async for r in engine.run(with_profile + without)}
        counters = emulator.counters
    for device in without:
        r = records[device]
        assert (r.status, r.http_status, r.error_code, r.attempts) == (Status.FAILED, 404, "ResourceNotFound", 1)
        assert "has no deployment profile" in (r.error_message or "")
        assert "--group-tag or --add-to-group" in (r.error_message or "")
    assert all(records[d].status is Status.SUCCEEDED for d in with_profile)
    assert counters.commits_per_device == dict.fromkeys(with_profile, 1)
    assert counters.profile_group_assignments == {f"{SHARED_PROFILES[0]}_{GROUP}": 6}
    assert engine.summary is not None and engine.summary.exit_code == 1


async def test_paced_at_the_budget_almost_nothing_is_throttled() -> None:
    """Paced at the server's own budget (sliding window), 20 workers waste (almost) no request."""
    devices = guids(300, seed=13)
    config = EmulatorConfig(app_rate=Rate(100, 1.0), tenant_rate=Rate(200, 1.0), retry_after="decimal")
    async with Emulator(config) as emulator:
        s = settings(emulator.base_url, rate="100/1s", concurrency=20)
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    assert all(r.status is Status.SUCCEEDED for r in records)
    assert counters.throttled <= 0.02 * counters.requests
    assert counters.devices_assigned_twice == 0


async def test_an_overdrawn_budget_is_paid_with_few_429s() -> None:
    """Configured at twice the real budget: the gate stops every worker at the first 429 of an event and
    the pacer lowers its rate, so the waste stays a small share instead of half of all requests."""
    devices = guids(400, seed=14)
    config = EmulatorConfig(app_rate=Rate(50, 0.5), tenant_rate=Rate(100, 0.5), retry_after="decimal")
    async with Emulator(config) as emulator:
        s = settings(emulator.base_url, rate="200/1s", concurrency=20)
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    assert all(r.status is Status.SUCCEEDED for r in records)
    assert 0 < counters.throttled < 0.25 * counters.requests
    assert counters.devices_assigned_twice == 0
    pacer = engine.pacer
    assert isinstance(pacer, WindowPacer) and pacer.changes and min(limit for _, limit in pacer.changes) <= 100


@SEMANTICS
async def test_resume_reads_back_a_device_named_only_in_a_torn_record(tmp_path: Path, semantics: str) -> None:
    """Hardening #8: the last record torn and the journal's tail damaged too: the fragment still names
    the device, so the resumed run reads it back instead of assigning it a second time."""
    devices = guids(3, seed=81)
    out = tmp_path / "out"
    async with Emulator(fast(**seed_tenant(semantics, devices))) as emulator:
        options: dict[str, object] = {"graph_url": emulator.base_url, "rate": "5000/1s", "concurrency": 1,
                                      "out_dir": out}
        await assign_profiles(devices, target=TARGET, token_provider=TOKEN, **options)
        results = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
        last = orjson.loads(results[-1])["device_id"]
        (out / "results.jsonl").write_bytes(b"".join(results[:-1]) + results[-1][:70])
        journal = [line for line in (out / "journal.log").read_bytes().splitlines(keepends=True)
                   if last.encode() not in line]
        (out / "journal.log").write_bytes(b"".join(journal) + b'{"intent":"')
        (out / "summary.json").unlink()
        resumed = await assign_profiles(devices, target=TARGET, token_provider=TOKEN, **options, resume=True)
        assert emulator.counters.devices_assigned_twice == 0
        assert emulator.counters.commits_per_device == dict.fromkeys(devices, 1)
    assert resumed.skipped_by_reason.get("landed") == 1


async def test_a_rate_above_intunes_budget_is_warned_once_through_the_api(caplog: pytest.LogCaptureFixture) -> None:
    """Hardening #11: the library path warns too (the CLI shows the same log line)."""
    s = Settings.build(target=TARGET, rate="100/1s", dry_run=True)
    with caplog.at_level("WARNING", logger="bulk_assign"):
        async with BulkAssigner(s) as engine:
            await engine.run_all(guids(2, seed=5))
    assert sum("Intune's documented budget" in r.getMessage() for r in caplog.records) == 1
