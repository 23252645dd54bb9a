"""``--add-to-group G [--profile P]`` (issue 12): static membership on the same engine, end to end.

The listing gives each device's Entra ``deviceId``, the group's member listing (read once) marks members
``already_member``, the rest are added 20 to a ``PATCH`` under Entra's budget, and an Entra refusal of an
existing member is split into single adds to find it. Against the emulator's directory (its own budget,
Entra's error bodies, ambiguous faults on directory writes).
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_process import cli_in
from emulator_thread import threaded_emulator

from bulk_assign import AuthenticationError, BulkAssigner, UsageError
from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import EmulatorConfig
from bulk_assign.emulator.directory import entra_device_id, object_id
from bulk_assign.models import SkipReason, Status

FAST = Rate(100_000, 1.0)
G = "bbbbbbbb-0000-4000-8000-00000000000a"  # static
DYN = "bbbbbbbb-0000-4000-8000-00000000000d"  # dynamic, [OrderID]:wave1
SYNCED = "bbbbbbbb-0000-4000-8000-00000000000e"
P = "aaaaaaaa-0000-4000-8000-000000000001"


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def obj(n: int) -> str:
    return object_id(entra_device_id(did(n)))


def tenant(n: int, *, no_entra: set[int] = frozenset()) -> dict[str, dict[str, str]]:  # type: ignore[assignment]
    out = {did(i): {"serialNumber": f"S{i:05d}"} for i in range(n)}
    for i in no_entra:
        out[did(i)]["azureActiveDirectoryDeviceId"] = ""
    return out


def config(n: int, members: set[int] = frozenset(), **more: Any) -> dict[str, Any]:  # type: ignore[assignment]
    return {"app_rate": FAST, "tenant_rate": FAST, "read_rate": None, "directory_read_rate": None,
            "directory_write_rate": None, "profiles": (P,), "dynamic_groups": {DYN: "wave1"},
            "static_groups": {G: frozenset(obj(i) for i in members)}, "synced_groups": (SYNCED,),
            **{"inventory": tenant(n), **more}}


async def run(emu: Any, out: Path | None, ids: list[str], token: str = "t", **options: Any) -> tuple[list[Any], Any]:
    settings = Settings(graph_url=emu.base_url, out_dir=out, **{"add_to_group": G, "rate": FAST, **options})
    async with BulkAssigner(settings, token_provider=token) as engine:
        records = [r async for r in engine.run(ids)]
    return records, engine.summary


async def test_devices_join_the_group_20_to_a_request_and_a_rerun_writes_nothing(start_emulator: Any,
                                                                                  tmp_path: Path) -> None:
    emu = await start_emulator(**config(60, members={0, 1, 2}, inventory=tenant(60, no_entra={3})))
    ids = [did(i) for i in range(50)] + [did(5000)]
    records, summary = await run(emu, tmp_path / "w1", ids, profile=P)
    by_id = {r.device_id: r for r in records}
    assert [by_id[did(i)].skip_reason for i in range(3)] == [SkipReason.ALREADY_MEMBER] * 3
    assert by_id[did(3)].status is Status.INVALID and by_id[did(3)].error_code == "no_entra_device"
    assert by_id[did(5000)].status is Status.INVALID and by_id[did(5000)].error_code == "unknown_device"
    added = [by_id[did(i)] for i in range(4, 50)]
    assert {r.status for r in added} == {Status.SUCCEEDED} and {r.http_status for r in added} == {204}
    assert [r.assignment_id for r in added] == [obj(i) for i in range(4, 50)]  # the member's object id
    directory, counters = emu.tenant.directory, emu.tenant.counters
    assert set(directory.members(G)) == {obj(i) for i in range(50) if i != 3}
    assert counters.directory_writes == 3 and counters.member_refusals == 0  # 46 devices: 20 + 20 + 6
    assert counters.member_adds_max == 1 and counters.profile_assignments == 1
    assert summary.membership["members_before"] == 3 and summary.profile_assignment["created"] is True
    assert summary.skipped_by_reason == {"already_member": 3}
    # Intune's status through the group: every device added is assignedInSync, with the profile
    listed = {d: emu.tenant.device_record(d)["deploymentProfileAssignmentStatus"] for d in ids[:50]}
    assert {listed[did(i)] for i in range(50) if i != 3} == {"assignedInSync"} and listed[did(3)] == "notAssigned"
    assert {emu.tenant.profile_of(did(i)) for i in range(50) if i != 3} == {P}
    intents = [orjson.loads(line) for line in (tmp_path / "w1" / "journal.log").read_bytes().splitlines()]
    assert {i["intent"]: i["new"] for i in intents} == {did(i): entra_device_id(did(i)) for i in range(4, 50)}

    writes = counters.directory_writes
    records, summary = await run(emu, tmp_path / "w2", ids, profile=P)  # a rerun of the finished wave
    assert counters.directory_writes == writes and counters.profile_assignments == 1
    assert summary.skipped_by_reason == {"already_member": 49} and summary.profile_assignment["created"] is False
    assert summary.counts["invalid"] == 2

    with pytest.raises(UsageError, match="group"):  # the folder is pinned to its group
        await run(emu, tmp_path / "w1", ids, add_to_group=SYNCED.replace("e", "f"), resume=True)


async def test_status_shows_the_group_route_reaching_assigned_in_sync(start_emulator: Any, tmp_path: Path) -> None:
    from bulk_assign.cli.status import check_status
    from bulk_assign.inputs.readers import scan_input

    emu = await start_emulator(**config(30))
    ids = [did(i) for i in range(30)]
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{d}\n" for d in ids))
    await run(emu, tmp_path / "w1", ids, profile=P)
    settings = Settings(graph_url=emu.base_url, out_dir=tmp_path / "w1")
    from bulk_assign.auth import StaticTokenProvider

    status = await check_status(scan_input(tmp_path / "ids.csv"), settings, StaticTokenProvider("t"),
                                tmp_path / "status", wait=0.0, interval=1.0)
    assert status["by_state"] == {"assigned": 30}


async def test_members_added_once_through_ambiguous_faults_and_existing_members_found(start_emulator: Any,
                                                                                     tmp_path: Path) -> None:
    emu = await start_emulator(**config(400, members={7, 250}, faults=0.3, seed=4,
                                         fault_kinds=("ambiguous-504", "ambiguous-reset", "503", "reset")))
    ids = [did(i) for i in range(400)]
    records, summary = await run(emu, tmp_path / "w1", ids, max_retry_after=0.01)
    statuses = Counter((r.status, r.skip_reason) for r in records)
    assert statuses[(Status.SKIPPED, SkipReason.ALREADY_MEMBER)] == 2
    assert statuses[(Status.SUCCEEDED, None)] + statuses[(Status.SKIPPED, SkipReason.LANDED)] == 398
    counters = emu.tenant.counters
    assert counters.ambiguous_commits > 0 and statuses[(Status.SKIPPED, SkipReason.LANDED)] > 0
    assert counters.member_refusals > 0  # resends met their own earlier adds, and were split to find them
    assert set(emu.tenant.directory.members(G)) == {obj(i) for i in range(400)}
    assert counters.member_adds_max == 1 and summary.verifications > 0  # device lookups are reads


async def test_someone_adding_a_member_meanwhile_is_already_member_not_ours(start_emulator: Any,
                                                                           tmp_path: Path) -> None:
    """A device that joined between the member listing and the write: Entra refuses the PATCH, the split
    finds it, and it is already_member (undo leaves it), not landed."""
    emu = await start_emulator(**config(25))
    directory = emu.tenant.directory
    original = directory.members

    def members_then_join(group: str) -> list[str]:  # the listing is read, then another admin adds device 5
        listed = original(group)
        directory.members = original  # type: ignore[method-assign]
        directory.add(G, [obj(5)])
        return listed

    directory.members = members_then_join  # type: ignore[method-assign]
    records, _ = await run(emu, tmp_path / "w1", [did(i) for i in range(25)])
    by_id = {r.device_id: r for r in records}
    assert by_id[did(5)].skip_reason is SkipReason.ALREADY_MEMBER
    assert sum(r.status is Status.SUCCEEDED for r in records) == 24
    assert emu.tenant.counters.member_refusals == 2  # the PATCH of 20 and the single add of device 5


async def test_preflight_failures_stop_before_any_write(start_emulator: Any) -> None:
    from test_preflight import jwt

    emu = await start_emulator(**config(5))
    ids = [did(i) for i in range(5)]
    missing = "bbbbbbbb-0000-4000-8000-0000000000ff"
    with pytest.raises(UsageError, match="no such group"):
        await run(emu, None, ids, add_to_group=missing)
    with pytest.raises(UsageError, match="dynamic group"):
        await run(emu, None, ids, add_to_group=DYN)
    with pytest.raises(UsageError, match="synced from on-premises"):
        await run(emu, None, ids, add_to_group=SYNCED)
    with pytest.raises(UsageError, match="no such deployment profile"):
        await run(emu, None, ids, profile=missing)
    intune_only = jwt({"scp": "DeviceManagementServiceConfig.ReadWrite.All", "exp": 4_102_444_800})
    with pytest.raises(AuthenticationError, match=r"lacks GroupMember\.ReadWrite\.All or Group\.ReadWrite\.All"):
        await run(emu, None, ids, token=intune_only)
    enough = jwt({"roles": ["DeviceManagementServiceConfig.Read.All", "GroupMember.ReadWrite.All",
                            "Device.Read.All"], "exp": 4_102_444_800})
    records, _ = await run(emu, None, ids[:2], token=enough)
    assert {r.status for r in records} == {Status.SUCCEEDED}
    with pytest.raises(AuthenticationError, match=r"lacks DeviceManagementServiceConfig\.ReadWrite\.All"):
        await run(emu, None, ids, token=enough, profile=P)  # assigning the profile is an Intune write
    assert emu.tenant.counters.directory_writes == 1 and emu.tenant.counters.profile_assignments == 0


async def test_dry_run_opens_no_connection_and_plan_reads_only(start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(**config(10, members={0}))
    ids = [did(i) for i in range(10)]
    records, _ = await run(emu, tmp_path / "dry", ids, dry_run=True)
    assert {r.status for r in records} == {Status.PLANNED} and emu.tenant.counters.requests == 0
    records, _ = await run(emu, tmp_path / "plan", ids, plan=True)
    by_id = {r.device_id: r for r in records}
    assert by_id[did(0)].skip_reason is SkipReason.ALREADY_MEMBER
    assert by_id[did(1)].status is Status.PLANNED and f"would add to group {G}" in (by_id[did(1)].error_message or "")
    assert emu.tenant.counters.directory_writes == 0 and not (tmp_path / "plan" / "journal.log").exists()


async def test_the_directory_budget_paces_the_adds_not_intunes(start_emulator: Any, tmp_path: Path) -> None:
    """Intune's write budget (--rate 1/20s) would take 20 minutes for 60 devices; the adds go at Entra's."""
    emu = await start_emulator(**config(60, directory_write_rate=Rate(2, 1.0)))
    records, summary = await run(emu, tmp_path / "w1", [did(i) for i in range(60)], rate=Rate(1, 20.0),
                                 directory_rate=Rate(2, 1.0))
    assert {r.status for r in records} == {Status.SUCCEEDED}
    assert emu.tenant.counters.directory_writes == 3 and summary.sending_seconds < 30


def test_undo_removes_the_members_this_folder_added_and_only_those(tmp_path: Path) -> None:
    cli = cli_in(tmp_path)
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{did(i)}\n" for i in range(30)))
    with threaded_emulator(EmulatorConfig(**config(30, members={0, 1}))) as emu:
        url, directory = emu.base_url, emu.tenant.directory
        done = cli("run", "ids.csv", "--add-to-group", G, "--profile", P, "--graph-url", url, "--out", "w1")
        assert done.returncode == 0, done.stderr
        assert len(directory.members(G)) == 30
        directory.remove(G, obj(9))  # someone removed one meanwhile: undo skips it
        undone = cli("undo", "w1", "--graph-url", url)
        assert undone.returncode == 0, undone.stderr
        assert set(directory.members(G)) == {obj(0), obj(1)}  # the members from before the run stay
        assert emu.tenant.counters.member_removes == 27 and emu.tenant.rollout.assignments[P] == []
        again = cli("undo", "w1", "--graph-url", url, "--resume")
        assert again.returncode == 0, again.stderr
        assert emu.tenant.counters.member_removes == 27
    records = [orjson.loads(line) for line in (tmp_path / "w1" / "undo" / "results.jsonl").read_bytes().splitlines()]
    reasons = Counter(r["skip_reason"] for r in records if r["status"] == "skipped")
    assert reasons == {"not_member": 1} and sum(r["status"] == "succeeded" for r in records) == 27
