"""Serial numbers resolved by one paged listing (issue 11): pure matching, the listing reader, end to end.

End-to-end tests run the engine against the emulator on loopback with a tenant file that gives each device
a serial; request counts are asserted against the emulator's own counters.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_time import FakeTime

from bulk_assign import BulkAssigner
from bulk_assign.auth import StaticTokenProvider
from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import Emulator
from bulk_assign.errors import AuthenticationError, InputFileError, ListingError
from bulk_assign.graph.listing import rebase_next_link
from bulk_assign.graph.mock import MockTransport, json_response
from bulk_assign.inputs.readers import read_input, scan_input
from bulk_assign.inputs.serials import AMBIGUOUS_SERIAL, UNKNOWN_SERIAL, SerialDirectory
from bulk_assign.models import AssignmentTarget, InputRow, Status
from bulk_assign.pipeline.listing import ListingReader, ListingStats
from bulk_assign.pipeline.pacing import LimiterPacer
from bulk_assign.store.inventory import read_inventory, write_inventory
from bulk_assign.tenant import TenantDevice

GROUP = "11111111-2222-3333-4444-555555555555"
TARGET = AssignmentTarget.parse(f"group:{GROUP}")
FAST = Rate(100_000, 1.0)


def device_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def tenant(n: int, *, shared: dict[int, str] | None = None) -> dict[str, dict[str, str]]:
    """``n`` devices with serials PF00000...; ``shared`` gives some devices the same serial."""
    out = {device_id(i): {"serialNumber": f"PF{i:05d}", "groupTag": ""} for i in range(n)}
    for i, serial in (shared or {}).items():
        out[device_id(i)]["serialNumber"] = serial
    return out


def utf16_hash_csv(path: Path, serials: list[str]) -> Path:
    """What Windows PowerShell 5.1 writes: UTF-16LE with a BOM, a #TYPE line, quoted cells, CRLF."""
    lines = ['#TYPE System.Management.Automation.PSCustomObject',
             '"Device Serial Number","Windows Product ID","Hardware Hash","Group Tag"']
    lines += [f'"{s}","00330-80000-00000-AA{i:03d}","T0FhAQEAHAAAAAoA","wave1"' for i, s in enumerate(serials)]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-16-le"))
    return path


# ------------------------------------------------------------------------------------------- matching
def test_serials_match_exactly_ignoring_case_and_surrounding_space() -> None:
    directory = SerialDirectory([TenantDevice(device_id(0), "PF1abc"), TenantDevice(device_id(1), "PF1ABCD")])
    row = directory.resolve(InputRow(3, None, " pf1ABC ", serial="pf1ABC"))
    assert row.device_id == device_id(0) and row.error_code is None
    unknown = directory.resolve(InputRow(4, None, "PF1AB", serial="PF1AB"))  # a substring is not a match
    assert unknown.device_id is None and unknown.error_code == UNKNOWN_SERIAL
    assert "hardware hash may not be imported" in (unknown.error_message or "")


def test_a_shared_serial_is_ambiguous_and_names_the_ids() -> None:
    devices = [TenantDevice(device_id(i), "Default string") for i in range(3)] + [TenantDevice(device_id(9), "X")]
    row = SerialDirectory(devices).resolve(InputRow(2, None, "Default string", serial="Default string"))
    assert row.device_id is None and row.error_code == AMBIGUOUS_SERIAL
    message = row.error_message or ""
    assert all(device_id(i) in message for i in range(3)) and "placeholder" in message


def test_devices_without_a_serial_are_never_matched() -> None:
    directory = SerialDirectory([TenantDevice(device_id(0), "")])
    assert directory.resolve(InputRow(1, None, "x", serial="x")).error_code == UNKNOWN_SERIAL


# ------------------------------------------------------------------------------------------ nextLinks
@pytest.mark.parametrize(("link", "graph_url", "expected"), [
    ("https://graph.microsoft.com/beta/deviceManagement/windowsAutopilotDeviceIdentities?$skiptoken=5",
     "https://graph.microsoft.com/beta",
     "https://graph.microsoft.com/beta/deviceManagement/windowsAutopilotDeviceIdentities?$skiptoken=5"),
    ("https://graph.microsoft.com/beta/deviceManagement/windowsAutopilotDeviceIdentities?$top=1000&$skiptoken=5",
     "http://127.0.0.1:8080/beta",
     "http://127.0.0.1:8080/beta/deviceManagement/windowsAutopilotDeviceIdentities?$top=1000&$skiptoken=5"),
    ("https://graph.microsoft.com/beta/deviceManagement/x?$skiptoken=5", "https://proxy.example/graph/beta",
     "https://proxy.example/graph/beta/deviceManagement/x?$skiptoken=5"),
    ("/beta/deviceManagement/x?$skiptoken=5", "https://proxy.example/graph/beta",
     "https://proxy.example/graph/beta/deviceManagement/x?$skiptoken=5"),
])
def test_next_links_are_kept_or_rebased_onto_the_graph_url(link: str, graph_url: str, expected: str) -> None:
    assert rebase_next_link(link, graph_url) == expected


@pytest.mark.parametrize("link", [
    "https://graph.microsoft.com/v1.0/deviceManagement/x?$skiptoken=5",  # another versioned root
    "https://evil.example/steal?token=1",
    "ftp://graph.microsoft.com/beta/x",
])
def test_next_links_outside_the_versioned_root_are_refused(link: str) -> None:
    with pytest.raises(ListingError, match="not followed"):
        rebase_next_link(link, "http://127.0.0.1:8080/beta")


# ------------------------------------------------------------------------------------- listing reader
class Refreshing:
    """A token provider that hands out a new token after each invalidation."""

    def __init__(self) -> None:
        self.issued = 0

    async def get_token(self) -> str:
        return f"tok{self.issued}"

    def invalidate(self, stale_token: str) -> None:
        self.issued += 1


def reader(handler: Any, *, tokens: Any = None) -> tuple[ListingReader, MockTransport, FakeTime]:
    time = FakeTime()
    transport = MockTransport(handler)
    s = Settings(target=TARGET, graph_url="http://127.0.0.1:1/beta", max_attempts=3)
    return ListingReader(s, transport=transport, tokens=tokens or StaticTokenProvider("tok", source="test"),
                         pacer=LimiterPacer(FAST), sleep=time.sleep, rng=random.Random(1),
                         clock=time.clock), transport, time


def page(start: int, count: int, *, more: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"value": [{"id": device_id(i), "serialNumber": f"PF{i:05d}"} for i in
                                      range(start, start + count)]}
    if more:
        body["@odata.nextLink"] = ("https://graph.microsoft.com/beta/deviceManagement/"
                                   f"windowsAutopilotDeviceIdentities?$skiptoken={start + count}")
    return body


async def test_reader_follows_pages_and_retries_transient_failures_and_429s() -> None:
    answers = iter([json_response(200, page(0, 2, more=True)), json_response(503, {"error": {"code": "x"}}),
                    json_response(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "7"}),
                    json_response(200, page(2, 1, more=False))])
    listing, transport, time = reader(lambda request: next(answers))
    stats = ListingStats()
    devices = await listing.read_all(stats)
    assert [d.id for d in devices] == [device_id(i) for i in range(3)]
    assert stats.pages == 2 and stats.requests == 4 and stats.throttled == 1
    assert 7.0 in time.sleeps
    assert all("$select" not in r.url for r in transport.requests)
    assert transport.requests[1].url.startswith("http://127.0.0.1:1/beta/deviceManagement/")  # rebased


async def test_reader_gives_up_after_max_attempts_with_listing_error() -> None:
    listing, transport, _ = reader(lambda request: json_response(500, {"error": {"code": "Boom", "message": "m"}}))
    with pytest.raises(ListingError, match="Boom") as caught:
        await listing.read_all()
    assert len(transport.requests) == 3 and "nothing was written" in str(caught.value)


async def test_reader_refreshes_a_token_once_then_stops_with_exit_3() -> None:
    tokens = Refreshing()
    refused = {"error": {"code": "InvalidAuthenticationToken"}}
    listing, transport, _ = reader(lambda request: json_response(401, refused), tokens=tokens)
    with pytest.raises(AuthenticationError, match="twice"):
        await listing.read_all()
    assert [r.headers["Authorization"] for r in transport.requests] == ["Bearer tok0", "Bearer tok1"]


async def test_a_403_names_the_missing_permission() -> None:
    listing, _, _ = reader(lambda request: json_response(403, {"error": {"code": "Forbidden", "message": "no"}}))
    with pytest.raises(AuthenticationError, match="DeviceManagementServiceConfig"):
        await listing.read_all()


async def test_a_body_that_is_not_a_page_is_refused() -> None:
    listing, _, _ = reader(lambda request: json_response(200, {"items": []}))
    with pytest.raises(ListingError, match="not a page"):
        await listing.read_all()


def test_inventory_files_round_trip_as_jsonl_and_csv(tmp_path: Path) -> None:
    devices = [TenantDevice(device_id(i), f"PF{i}", group_tag="t,1", assignment_status="pending") for i in range(3)]
    for name in ("inv.jsonl", "inv.csv"):
        assert write_inventory(tmp_path / name, devices) == 3
        assert read_inventory(tmp_path / name) == devices
    (tmp_path / "bad.jsonl").write_text('{"id": "nope"}\n')
    with pytest.raises(InputFileError) as caught:
        read_inventory(tmp_path / "bad.jsonl")
    assert caught.value.line == 1


# ------------------------------------------------------------------------------------------ end to end
async def run(emu: Emulator, path: Path, out: Path | None, **options: Any) -> tuple[list[Any], Any]:
    options.setdefault("preflight", False)  # the canary's reads (tests/test_preflight.py) stay out of the counts
    settings = Settings(target=TARGET, graph_url=emu.base_url, out_dir=out, rate=FAST, **options)
    plan = scan_input(path)
    async with BulkAssigner(settings, token_provider="t") as engine:
        engine.input_note = plan.describe()
        records = [r async for r in engine.run(read_input(plan), total=plan.total_rows)]
    return records, engine.summary


@pytest.fixture
def serial_tenant() -> Iterator[dict[str, dict[str, str]]]:
    yield tenant(2500, shared={7: "PF00006"})  # device 7 shares device 6's serial


async def test_a_utf16_hardware_hash_file_is_resolved_and_assigned_with_one_listing(
        start_emulator: Any, tmp_path: Path, serial_tenant: dict[str, dict[str, str]]) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=serial_tenant)
    serials = ["PF00001", "pf00002 ", "PF02499", "NOPE-1", "PF00006", "PF00001"]
    path = utf16_hash_csv(tmp_path / "hash.csv", serials)
    records, summary = await run(emu, path, tmp_path / "out")
    by_line = {r.source_line: r for r in records}
    assert len(records) == len(serials)
    assert [by_line[n].status for n in range(3, 9)] == [Status.SUCCEEDED] * 3 + [Status.INVALID] * 2 + \
        [Status.SKIPPED]
    assert by_line[3].device_id == device_id(1) and by_line[4].serial_number == "pf00002"
    assert by_line[6].error_code == UNKNOWN_SERIAL and by_line[6].serial_number == "NOPE-1"
    assert by_line[7].error_code == AMBIGUOUS_SERIAL
    counters = emu.tenant.counters
    assert counters.commits_per_device.keys() == {device_id(1), device_id(2), device_id(2499)}  # none to 6 or 7
    assert summary.inventory == {"source": "listing", "devices": 2500, "pages": 3, "requests": 3,
                                 "throttled_429": 0, "seconds": summary.inventory["seconds"]}
    # three pages, then each device's read before its write, and three writes: one listing, no per-serial query
    assert counters.requests == 3 + 3 + 3 and summary.verifications == 3 and summary.requests_sent == 3
    assert "serial numbers from column" in (summary.input or "")
    saved = read_inventory(tmp_path / "out" / "inventory.jsonl")
    assert len(saved) == 2500
    jsonl = [orjson.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_bytes().splitlines()]
    assert {r["serial_number"] for r in jsonl} == {"PF00001", "pf00002", "PF02499", "NOPE-1", "PF00006"}

    # --resume neither lists again nor resends: one new serial appended costs one write (and the read before it)
    with path.open("ab") as f:
        f.write('"PF00100","x","y","wave1"\r\n'.encode("utf-16-le"))
    before, writes = counters.requests, counters.writes_committed
    records, summary = await run(emu, path, tmp_path / "out", resume=True)
    assert counters.requests - before == 2 and summary.inventory["source"] == "folder"
    assert counters.writes_committed - writes == 1 and summary.verifications == 1
    assert device_id(100) in counters.commits_per_device

    # --refresh-inventory lists again
    before = counters.requests
    await run(emu, path, tmp_path / "out", resume=True, refresh_inventory=True)
    assert counters.requests - before == 3


async def test_a_dry_run_resolves_offline_from_an_inventory_file_or_says_it_cannot(
        start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(inventory=tenant(5))
    path = tmp_path / "serials.csv"
    path.write_text("Serial number,Model\nPF00001,m\nPF00042,m\n")
    inventory = tmp_path / "tenant.csv"
    write_inventory(inventory, [TenantDevice(device_id(i), f"PF{i:05d}") for i in range(5)])
    records, summary = await run(emu, path, tmp_path / "dry1", dry_run=True, inventory_file=inventory)
    assert [(r.status, r.device_id, r.error_code) for r in records] == [
        (Status.PLANNED, device_id(1), None), (Status.INVALID, "PF00042", UNKNOWN_SERIAL)]
    assert summary.inventory["source"] == "inventory-file"
    records, summary = await run(emu, path, tmp_path / "dry2", dry_run=True)
    assert {(r.status, r.error_code) for r in records} == {(Status.PLANNED, "serial_not_resolved")}
    assert emu.tenant.counters.requests == 0  # a dry run opens no connection


async def test_plan_reads_the_tenant_once_writes_nothing_and_says_what_would_change(
        start_emulator: Any, tmp_path: Path) -> None:
    devices = tenant(1500)
    devices[device_id(3)].update(deploymentProfileAssignmentStatus="assignedInSync", enrollmentState="enrolled")
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=devices)
    ids = tmp_path / "ids.csv"
    ids.write_text("id\n" + "".join(f"{device_id(i)}\n" for i in (1, 3)) + f"{device_id(99_999)}\n")
    records, summary = await run(emu, ids, tmp_path / "plan1", plan=True)
    assert [(r.status, r.error_code) for r in records] == [(Status.PLANNED, None), (Status.PLANNED, None),
                                                           (Status.INVALID, "unknown_device")]
    assert "notAssigned" in (records[0].error_message or "")
    assert "enrolled" in (records[1].error_message or "") and "assignedInSync" in (records[1].error_message or "")
    counters = emu.tenant.counters
    assert counters.writes_committed == 0 and counters.requests == 2  # two listing pages, nothing else
    assert summary.inventory["plan"] == {"now notAssigned": 1, "now assignedInSync": 1, "enrolled": 1,
                                         "unknown_device": 1}
    assert not (tmp_path / "plan1" / "journal.log").exists() or not (tmp_path / "plan1" / "journal.log").stat().st_size
    serials = utf16_hash_csv(tmp_path / "hash.csv", ["PF00001", "NOPE"])
    records, _ = await run(emu, serials, tmp_path / "plan2", plan=True)
    assert [(r.status, r.device_id, r.serial_number) for r in records] == [
        (Status.PLANNED, device_id(1), "PF00001"), (Status.INVALID, "NOPE", "NOPE")]
    assert counters.writes_committed == 0


def test_plan_and_dry_run_exclude_each_other() -> None:
    with pytest.raises(Exception, match="exclude each other"):
        Settings.build(target=TARGET, plan=True, dry_run=True)
