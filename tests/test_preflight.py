"""The seed call's preflight (issue 12): which profile(s) the first 20 devices have, read before their writes."""

from __future__ import annotations

import uuid
from typing import Any

from bulk_assign import BulkAssigner
from bulk_assign.config import Rate, Settings
from bulk_assign.models import AssignmentTarget, Status

FAST = Rate(100_000, 1.0)
OLD = "7a7a7a7a-0000-4000-8000-000000000001"
TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


async def test_the_canary_reads_the_first_20_profiles_before_their_writes(start_emulator: Any) -> None:
    tenant = {did(i): ({"deploymentProfileId": OLD} if i % 4 else {}) for i in range(30)}
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant)
    ids = [did(i) for i in range(30)] + [did(999)]
    async with BulkAssigner(Settings(target=TARGET, graph_url=emu.base_url, rate=FAST), token_provider="t") as engine:
        records = [r async for r in engine.run(ids)]
    summary = engine.summary
    assert summary is not None and summary.preflight is not None
    preflight = summary.preflight
    assert preflight["canary_devices"] == 20 and preflight["no_profile"] == 5 and preflight["unreadable"] == 0
    assert list(preflight["profiles"]) == [OLD] and preflight["profiles"][OLD]["devices"] == 15
    # read before the writes: once assigned here, a device reports the emulator's own profile instead
    assert emu.tenant.profile_id not in preflight["profiles"]
    assert sum(r.status is Status.SUCCEEDED for r in records) == 30
    unknown = next(r for r in records if r.device_id == did(999))
    assert unknown.http_status == 404 and "no deployment profile yet" in (unknown.error_message or "")
    assert "--group-tag" in (unknown.error_message or "")
    # every write, the read before each (read-before-write), and the 20 canary reads
    assert emu.tenant.counters.requests == 31 + 31 + 20
    assert summary.requests_sent == 31 and summary.verifications == 31


async def test_no_preflight_sends_no_canary_reads_and_no_read_before_write_no_reads(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    settings = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, preflight=False)
    async with BulkAssigner(settings, token_provider="t") as engine:
        await engine.run_all([did(i) for i in range(5)])
    assert engine.summary is not None and engine.summary.preflight is None
    assert emu.tenant.counters.requests == 5 + 5  # the writes and, by default, the read before each
    emu.reset_counters()
    off = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, preflight=False, read_before_write=False)
    async with BulkAssigner(off, token_provider="t") as engine:
        await engine.run_all([did(i) for i in range(5, 10)])
    assert emu.tenant.counters.requests == 5 and engine.summary is not None and engine.summary.verifications == 0


async def test_a_short_input_is_its_own_canary(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    async with BulkAssigner(Settings(target=TARGET, graph_url=emu.base_url, rate=FAST), token_provider="t") as engine:
        summary = await engine.run_all([did(i) for i in range(3)])
    assert summary.preflight == {"canary_devices": 3, "profiles": {}, "no_profile": 3, "unreadable": 0}
    assert summary.counts["succeeded"] == 3


def jwt(claims: dict[str, Any]) -> str:
    import base64
    import json

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


async def test_a_token_without_the_permission_stops_before_any_request(start_emulator: Any) -> None:
    import pytest

    from bulk_assign import AuthenticationError

    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    settings = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST)
    token = jwt({"scp": "DeviceManagementManagedDevices.Read.All User.Read", "exp": 4_102_444_800})
    async with BulkAssigner(settings, token_provider=token) as engine:
        with pytest.raises(AuthenticationError, match=r"lacks DeviceManagementServiceConfig\.ReadWrite\.All"):
            await engine.run_all([did(i) for i in range(3)])
    assert engine.summary is not None and engine.summary.exit_code == 3 and engine.summary.remaining == 3
    assert emu.tenant.counters.requests == 0
    plan = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, plan=True)
    reader = jwt({"roles": ["DeviceManagementServiceConfig.Read.All"], "exp": 4_102_444_800})
    async with BulkAssigner(plan, token_provider=reader) as engine:  # a plan only reads: Read.All is enough
        summary = await engine.run_all([did(0)])
    assert summary.exit_code == 1 and summary.counts["invalid"] == 1  # the device is unknown to this tenant


async def test_read_before_write_skips_devices_assigned_elsewhere_and_tells_them_from_our_own(
        start_emulator: Any, tmp_path: Any) -> None:
    from bulk_assign.models import SkipReason

    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    ids = [did(i) for i in range(10)]
    first = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, preflight=False, out_dir=tmp_path / "a")
    async with BulkAssigner(first, token_provider="t") as engine:
        await engine.run_all(ids[:4])  # a canary in its own folder, as the README's old sequence did
    again = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, preflight=False, out_dir=tmp_path / "b",
                     read_before_write=True)
    async with BulkAssigner(again, token_provider="t") as engine:
        records = [r async for r in engine.run(ids)]
    skipped = {r.device_id for r in records if r.skip_reason is SkipReason.ALREADY_ASSIGNED}
    assert skipped == set(ids[:4]) and emu.tenant.counters.devices_assigned_twice == 0
    assert emu.tenant.counters.writes_committed == 10
    for batch in (False, True):  # batched reads too, 20 to a $batch
        settings = Settings(target=TARGET, graph_url=emu.base_url, rate=FAST, preflight=False, batch=batch,
                            read_before_write=True)
        async with BulkAssigner(settings, token_provider="t") as engine:
            records = [r async for r in engine.run(ids)]
        assert {r.skip_reason for r in records} == {SkipReason.ALREADY_ASSIGNED}
    assert emu.tenant.counters.writes_committed == 10
