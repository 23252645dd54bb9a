"""The emulator's Autopilot listing and tenant files (issue 11): pages, $top, the $filter and $select quirks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.emulator.inventory import load_inventory
from bulk_assign.errors import InputFileError

LISTING = "/deviceManagement/windowsAutopilotDeviceIdentities"


def tenant(n: int) -> dict[str, dict[str, str]]:
    return {str(uuid.UUID(int=i + 1, version=4)): {"serialNumber": f"SN-{i:05d}".replace("-", ""),
                                                     "groupTag": "wave1" if i % 2 else ""} for i in range(n)}


@pytest.fixture
async def listing_emulator() -> AsyncIterator[tuple[Emulator, dict[str, dict[str, str]]]]:
    devices = tenant(2500)
    async with Emulator(EmulatorConfig(inventory=devices)) as emu:
        yield emu, devices


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url, headers={"Authorization": "Bearer t"}) as response:
        return response.status, orjson.loads(await response.read())


async def test_the_listing_pages_by_1000_with_an_absolute_next_link_on_graphs_host(
        listing_emulator: tuple[Emulator, dict[str, dict[str, str]]]) -> None:
    emu, devices = listing_emulator
    seen: list[str] = []
    url = emu.base_url + LISTING
    pages = 0
    async with aiohttp.ClientSession() as session:
        while url:
            status, body = await get(session, url)
            assert status == 200
            pages += 1
            page = body["value"]
            assert isinstance(page, list) and len(page) <= 1000
            seen += [d["id"] for d in page]
            link = body.get("@odata.nextLink")
            if not isinstance(link, str):
                break
            parts = urlsplit(link)
            assert parts.netloc == "graph.microsoft.com" and "$skiptoken=" in parts.query
            url = emu.base_url + parts.path.removeprefix("/beta") + "?" + parts.query  # rebased, as a client must
    assert pages == 3 and seen == list(devices)
    first = next(iter(devices))
    async with aiohttp.ClientSession() as session:
        _, one = await get(session, f"{emu.base_url}{LISTING}/{first}")
    assert one["serialNumber"] == devices[first]["serialNumber"] and one["groupTag"] == devices[first]["groupTag"]


@pytest.mark.parametrize(("query", "status"), [
    ("$top=10", 200),
    ("$filter=contains(serialNumber,'SN0001')", 200),
    ("$filter=serialNumber eq 'SN00010'", 400),
    ("$filter=contains(serialNumber,'SN-0001')", 400),
    ("$select=id,serialNumber", 500),
])
async def test_the_listings_query_quirks(listing_emulator: tuple[Emulator, dict[str, dict[str, str]]], query: str,
                                         status: int) -> None:
    emu, _ = listing_emulator
    async with aiohttp.ClientSession() as session:
        got, body = await get(session, f"{emu.base_url}{LISTING}?{query}")
    assert got == status
    if query.startswith("$top"):
        assert len(body["value"]) == 10  # type: ignore[arg-type]
    if "contains" in query and status == 200:
        serials = [d["serialNumber"] for d in body["value"]]  # type: ignore[union-attr]
        assert serials and all("SN0001" in s for s in serials)  # a substring match, not equality


def test_tenant_files_as_csv_and_jsonl(tmp_path: Path) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    csv_file = tmp_path / "tenant.csv"
    csv_file.write_text(f"Id,SerialNumber,GroupTag,Model\n{a},PF1,wave1,Surface\n{b.upper()},PF2,,Latitude\n")
    assert load_inventory(csv_file) == {a: {"serialNumber": "PF1", "groupTag": "wave1", "model": "Surface"},
                                        b: {"serialNumber": "PF2", "groupTag": "", "model": "Latitude"}}
    jsonl = tmp_path / "tenant.jsonl"
    jsonl.write_text(orjson.dumps({"id": a, "serialNumber": "PF1"}).decode() + "\n")
    assert load_inventory(jsonl) == {a: {"serialNumber": "PF1"}}
    (tmp_path / "plain.txt").write_text(f"{a}\n{b}\n")
    assert load_inventory(tmp_path / "plain.txt") == frozenset({a, b})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "nope"}\n')
    with pytest.raises(InputFileError) as caught:
        load_inventory(bad)
    assert caught.value.line == 1
