"""``--group-tag`` / ``--group-tag-column`` (issue 12): the documented route's first half, on the same engine.

The listing gives each device's current tag, so devices that carry it are skipped with no write; the
write is idempotent, so possibly-committed failures are resent without a read-back; the previous tag is
recorded and journaled (what undo restores). End to end against the emulator's updateDeviceProperties.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulk_assign import BulkAssigner, UsageError
from bulk_assign.config import Rate, Settings
from bulk_assign.graph.operations import WRITE, SetGroupTag
from bulk_assign.inputs.readers import read_input, scan_input
from bulk_assign.models import AssignmentTarget, InputRow, SkipReason, Status
from bulk_assign.tenant import TenantDevice

FAST = Rate(100_000, 1.0)


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


# ------------------------------------------------------------------------------------------ decisions
def test_precheck_skips_a_device_that_carries_the_tag_and_keeps_the_previous_one() -> None:
    op = SetGroupTag("wave1")
    same = InputRow(1, did(0))
    assert op.precheck(same, TenantDevice(did(0), group_tag="wave1")).skip is SkipReason.ALREADY_TAGGED
    other = InputRow(2, did(1))
    assert op.precheck(other, TenantDevice(did(1), group_tag="old")) is WRITE and other.previous == "old"
    unknown = op.precheck(InputRow(3, did(2)), None)
    assert unknown.error_code == "unknown_device" and "hardware hash" in (unknown.error_message or "")
    assert orjson.loads(op.body(did(1))) == {"groupTag": "wave1"}
    assert op.path(did(1)).endswith(f"/{did(1)}/updateDeviceProperties") and op.idempotent


def test_a_tag_per_row_from_a_column() -> None:
    op = SetGroupTag(column="Group Tag")
    row = InputRow(1, did(0), value="Sales")
    assert op.precheck(row, TenantDevice(did(0))) is WRITE and orjson.loads(op.body(did(0), row)) == \
        {"groupTag": "Sales"}
    assert op.precheck(InputRow(2, did(1), value=""), TenantDevice(did(1))).error_code == "MissingGroupTag"
    assert op.precheck(InputRow(3, did(2), value="a\tb"), TenantDevice(did(2))).error_code == "InvalidGroupTag"


def test_one_operation_per_run_and_a_checked_tag() -> None:
    with pytest.raises(UsageError, match="exclude each other"):
        Settings.build(target=AssignmentTarget.parse("all-devices"), group_tag="x")
    with pytest.raises(UsageError, match="control character"):
        Settings.build(group_tag="bad\nline")


# ------------------------------------------------------------------------------------------ end to end
def tenant(n: int, tagged: set[int]) -> dict[str, dict[str, str]]:
    return {did(i): {"serialNumber": f"PF{i:05d}", "groupTag": "wave1" if i in tagged else "old"} for i in range(n)}


async def run(emu: Any, path: Path, out: Path, **options: Any) -> tuple[list[Any], Any]:
    settings = Settings(graph_url=emu.base_url, out_dir=out, rate=FAST, **options)
    plan = scan_input(path, value_column=options.get("group_tag_column"))
    async with BulkAssigner(settings, token_provider="t") as engine:
        records = [r async for r in engine.run(read_input(plan), total=plan.total_rows)]
    return records, engine.summary


def ids_file(path: Path, ids: list[str]) -> Path:
    path.write_text("id\n" + "".join(f"{i}\n" for i in ids))
    return path


async def test_tags_are_written_once_and_a_rerun_writes_nothing(start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant(1200, {0, 1, 2}))
    path = ids_file(tmp_path / "ids.csv", [did(i) for i in range(10)] + [did(5000)])
    records, summary = await run(emu, path, tmp_path / "w1", group_tag="wave1")
    by_id = {r.device_id: r for r in records}
    assert [by_id[did(i)].status for i in range(10)] == [Status.SKIPPED] * 3 + [Status.SUCCEEDED] * 7
    assert by_id[did(0)].skip_reason is SkipReason.ALREADY_TAGGED and by_id[did(0)].previous_group_tag == "wave1"
    assert by_id[did(5)].previous_group_tag == "old" and by_id[did(5)].http_status == 204
    assert by_id[did(5000)].status is Status.INVALID and by_id[did(5000)].error_code == "unknown_device"
    counters = emu.tenant.counters
    assert counters.tag_writes == 7 and counters.writes_committed == 0  # no profile assignment was made
    assert counters.requests == 2 + 7  # two listing pages, seven writes
    listed = emu.tenant.device_record(did(5))
    assert listed["groupTag"] == "wave1"
    intents = [orjson.loads(line) for line in (tmp_path / "w1" / "journal.log").read_bytes().splitlines()]
    assert {i["intent"]: i["prev"] for i in intents} == {did(i): "old" for i in range(3, 10)}
    assert summary.skipped_by_reason == {"already_tagged": 3}

    before = counters.requests
    records, _ = await run(emu, path, tmp_path / "w2", group_tag="wave1")  # a rerun of a finished wave
    assert {r.skip_reason for r in records if r.status is Status.SKIPPED} == {SkipReason.ALREADY_TAGGED}
    assert counters.tag_writes == 7 and counters.requests - before == 2  # reads only

    with pytest.raises(UsageError, match="tag 'wave1' there, 'wave2' now"):
        await run(emu, path, tmp_path / "w1", group_tag="wave2", resume=True)


async def test_possibly_committed_tag_writes_are_resent_without_a_read_back(start_emulator: Any,
                                                                          tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant(300, set()),
                               faults=0.4, fault_kinds=("ambiguous-504", "ambiguous-reset", "503", "reset"), seed=3)
    path = ids_file(tmp_path / "ids.csv", [did(i) for i in range(300)])
    records, summary = await run(emu, path, tmp_path / "w1", group_tag="wave1", max_retry_after=0.01)
    assert {r.status for r in records} == {Status.SUCCEEDED} and len(records) == 300
    counters = emu.tenant.counters
    assert counters.ambiguous_commits > 0 and summary.verifications == 0
    assert all(emu.tenant.device_record(did(i))["groupTag"] == "wave1" for i in range(300))


async def test_group_tag_column_from_a_utf16_hardware_hash_file(start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant(5, set()))
    lines = ['#TYPE System.Management.Automation.PSCustomObject',
             '"Device Serial Number","Windows Product ID","Hardware Hash","Group Tag"',
             '"PF00001","x","y","Sales"', '"PF00002","x","y","Lab"', '"PF00003","x","y",""']
    path = tmp_path / "hash.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-16-le"))
    records, _ = await run(emu, path, tmp_path / "w1", group_tag_column="Group Tag")
    assert [(r.serial_number, r.status, r.error_code) for r in sorted(records, key=lambda r: r.source_line)] == [
        ("PF00001", Status.SUCCEEDED, None), ("PF00002", Status.SUCCEEDED, None),
        ("PF00003", Status.INVALID, "MissingGroupTag")]
    assert emu.tenant.device_record(did(1))["groupTag"] == "Sales"
    assert emu.tenant.device_record(did(2))["groupTag"] == "Lab"


# ------------------------------------------------------------------------------------------------ undo
def cli(*args: str, cwd: Path) -> Any:
    from cli_process import bulk_assign_cli

    return bulk_assign_cli(*args, cwd=cwd, token="undo-token")


def test_undo_restores_previous_tags_and_leaves_devices_changed_since(tmp_path: Path) -> None:
    from emulator_thread import threaded_emulator

    from bulk_assign.emulator import EmulatorConfig

    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, token="undo-token",
                            inventory=tenant(12, {0, 1, 2}))
    ids_file(tmp_path / "ids.csv", [did(i) for i in range(10)])
    with threaded_emulator(config) as emu:
        url = emu.base_url
        done = cli("run", "ids.csv", "--group-tag", "wave1", "--graph-url", url, "--out", "w1", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        emu.tenant.properties[did(9)] = {"groupTag": "manual"}  # someone retagged one device since
        writes = emu.tenant.counters.tag_writes
        undone = cli("undo", "w1", "--graph-url", url, cwd=tmp_path)
        assert undone.returncode == 0, undone.stderr
        tags = {i: emu.tenant.device_record(did(i))["groupTag"] for i in range(10)}
        assert tags == {0: "wave1", 1: "wave1", 2: "wave1", **dict.fromkeys(range(3, 9), "old"), 9: "manual"}
        assert emu.tenant.counters.tag_writes - writes == 6
        again = cli("undo", "w1", "--graph-url", url, "--resume", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert emu.tenant.counters.tag_writes - writes == 6  # nothing left to undo: no write
        seed = cli("run", "ids.csv", "--target", "all-devices", "--graph-url", url, "--out", "w2", cwd=tmp_path)
        refused = cli("undo", "w2", "--graph-url", url, cwd=tmp_path)
    assert seed.returncode == 0 and refused.returncode == 2 and "assign-profile" in refused.stderr
    records = [orjson.loads(line) for line in (tmp_path / "w1" / "undo" / "results.jsonl").read_bytes().splitlines()]
    by_id = {r["device_id"]: r for r in records}
    assert by_id[did(9)]["skip_reason"] == "changed_since" and by_id[did(9)]["previous_group_tag"] == "manual"
    assert {by_id[did(i)]["status"] for i in range(3, 9)} == {"succeeded"} and did(0) not in by_id


async def test_dry_run_opens_no_connection_and_plans_from_a_saved_inventory(start_emulator: Any,
                                                                            tmp_path: Path) -> None:
    from bulk_assign.store.inventory import write_inventory

    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant(10, {0}))
    path = ids_file(tmp_path / "ids.csv", [did(i) for i in range(10)])
    records, _ = await run(emu, path, tmp_path / "dry", group_tag="wave1", dry_run=True)
    assert {r.status for r in records} == {Status.PLANNED} and emu.tenant.counters.requests == 0
    saved = tmp_path / "inventory.jsonl"  # what `bulk-assign inventory --out` writes
    write_inventory(saved, [TenantDevice(did(i), group_tag="wave1" if i == 0 else "old") for i in range(10)])
    records, _ = await run(emu, path, tmp_path / "dry2", group_tag="wave1", dry_run=True, inventory_file=saved)
    by_id = {r.device_id: r for r in records}
    assert by_id[did(0)].skip_reason is SkipReason.ALREADY_TAGGED  # decided offline, from the saved listing
    assert by_id[did(1)].status is Status.PLANNED and by_id[did(1)].previous_group_tag == "old"
    assert emu.tenant.counters.requests == 0 and not (tmp_path / "dry2" / "journal.log").exists()


async def test_a_token_without_intunes_write_permission_tags_nothing(start_emulator: Any, tmp_path: Path) -> None:
    from test_preflight import jwt

    from bulk_assign import AuthenticationError

    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant(3, set()))
    path = ids_file(tmp_path / "ids.csv", [did(i) for i in range(3)])
    settings = Settings(graph_url=emu.base_url, out_dir=tmp_path / "w", rate=FAST, group_tag="wave1")
    reader = jwt({"roles": ["DeviceManagementServiceConfig.Read.All"], "exp": 4_102_444_800})
    plan = scan_input(path)
    async with BulkAssigner(settings, token_provider=reader) as engine:
        with pytest.raises(AuthenticationError, match=r"lacks DeviceManagementServiceConfig\.ReadWrite\.All"):
            await engine.run_all(read_input(plan), total=plan.total_rows)
    assert engine.summary is not None and engine.summary.exit_code == 3 and emu.tenant.counters.requests == 0
