"""``bulk-assign status`` (issue 11): Intune's assignment status out, read from the listing, polled with back-off.

Pure decisions and the polling loop run on a fake clock; the command runs as a real process against the
emulator (loopback), whose devices go pending -> assignedInSync after ``status_delay``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from emulator_thread import threaded_emulator
from fake_time import FakeTime

from bulk_assign.config import Rate
from bulk_assign.emulator import EmulatorConfig
from bulk_assign.models import InputRow
from bulk_assign.pipeline.status import (
    ASSIGNED,
    NOT_ASSIGNED,
    PENDING,
    UNKNOWN_DEVICE,
    StatusBook,
    classify,
    next_interval,
    watch,
)
from bulk_assign.tenant import TenantDevice

GROUP = "11111111-2222-3333-4444-555555555555"
TOKEN = "status-token"
FAST = Rate(100_000, 1.0)


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


@pytest.mark.parametrize(("graph", "ours"), [
    ("assignedInSync", ASSIGNED), ("assignedOutOfSync", ASSIGNED), ("assignedUnkownSyncState", ASSIGNED),
    ("pending", PENDING), ("unknown", PENDING), ("", PENDING), ("notAssigned", NOT_ASSIGNED), ("failed", "failed"),
])
def test_graphs_values_map_to_states(graph: str, ours: str) -> None:
    assert classify(graph) == ours


def test_polling_backs_off_up_to_five_minutes() -> None:
    steps = [30.0]
    for _ in range(10):
        steps.append(next_interval(steps[-1], 30.0))
    assert steps[:3] == [30.0, 45.0, 67.5] and max(steps) == 300.0
    assert next_interval(600.0, 600.0) == 600.0  # a first interval above the cap is kept


def book_of(*rows: InputRow) -> StatusBook:
    return StatusBook(rows)


def test_exit_codes_first_that_applies_wins() -> None:
    devices = [TenantDevice(did(0), "S0", assignment_status="assignedInSync"),
               TenantDevice(did(1), "S1", assignment_status="pending"),
               TenantDevice(did(2), "S2", assignment_status="notAssigned")]
    book = book_of(InputRow(1, did(0)), InputRow(2, did(1)))
    book.update(devices)
    assert book.exit_code() == 4
    book = book_of(InputRow(1, did(0)), InputRow(2, did(1)), InputRow(3, None, "S2", serial="s2"))
    book.update(devices)
    assert book.exit_code() == 1 and book.records[2].device_id == did(2)
    book = book_of(InputRow(1, did(0)), InputRow(2, None, " s0 ", serial="s0"))
    book.update(devices)
    assert book.exit_code() == 0 and book.counts() == {ASSIGNED: 2}
    book = book_of(InputRow(1, did(9)))
    book.update(devices)
    assert book.records[0].state == UNKNOWN_DEVICE and book.exit_code() == 1


def test_an_enrolled_device_is_flagged() -> None:
    book = book_of(InputRow(1, did(0)))
    book.update([TenantDevice(did(0), assignment_status="assignedInSync", enrollment_state="enrolled")])
    assert "ignores a new profile" in book.records[0].note


async def test_watch_polls_until_nothing_moves_and_lands_the_last_poll_on_the_deadline() -> None:
    time = FakeTime()
    states = iter(["pending", "pending", "assignedInSync"])

    async def poll() -> list[TenantDevice]:
        return [TenantDevice(did(0), assignment_status=next(states))]

    book = book_of(InputRow(1, did(0)))
    assert await watch(book, poll, wait=600, interval=10, sleep=time.sleep, clock=time.clock) == 3
    assert time.sleeps == [10, 15] and book.exit_code() == 0

    time = FakeTime()

    async def never() -> list[TenantDevice]:
        return [TenantDevice(did(0), assignment_status="pending")]

    book = book_of(InputRow(1, did(0)))
    polls = await watch(book, never, wait=100, interval=40, sleep=time.sleep, clock=time.clock)
    assert time.sleeps == [40, 60] and polls == 3 and book.exit_code() == 4  # 40 + 60 = the whole wait
    book = book_of(InputRow(1, did(0)))
    assert await watch(book, never, wait=None, interval=40, sleep=time.sleep, clock=time.clock) == 1


# ------------------------------------------------------------------------------------------ end to end
def bulk_assign(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    env["BULK_ASSIGN_ACCESS_TOKEN"] = TOKEN
    return subprocess.run([sys.executable, "-m", "bulk_assign", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_status_wait_exits_4_when_too_short_and_0_once_every_device_is_in_sync(tmp_path: Path) -> None:
    tenant = {did(i): {"serialNumber": f"PF{i:05d}", "groupTag": "wave1"} for i in range(1200)}
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, token=TOKEN, inventory=tenant,
                            status_delay=12.0)  # longer than the commands before the wait take to start, also when busy
    serials = tmp_path / "serials.csv"
    serials.write_text("Serial number,Model\n" + "".join(f"PF{i:05d},m\n" for i in range(0, 1200, 100)))
    with threaded_emulator(config) as emu:
        url = emu.base_url
        before = bulk_assign("status", "serials.csv", "--graph-url", url, "--out", "s0", cwd=tmp_path)
        assert before.returncode == 1, before.stderr  # nothing assigned yet
        done = bulk_assign("run", "serials.csv", "--target", f"group:{GROUP}", "--graph-url", url, "--out", "w1",
                           cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        short = bulk_assign("status", "serials.csv", "--graph-url", url, "--wait", "300ms", "--interval", "100ms",
                            "--out", "s1", cwd=tmp_path)
        assert short.returncode == 4, short.stderr
        requests = emu.tenant.counters.requests
        waited = bulk_assign("status", "serials.csv", "--graph-url", url, "--wait", "20s", "--interval", "500ms",
                             "--out", "s2", cwd=tmp_path)
        assert waited.returncode == 0, waited.stderr
        summary = orjson.loads((tmp_path / "s2" / "status-summary.json").read_bytes())
        assert summary["by_assignment_status"] == {"assignedInSync": 12} and summary["polls"] >= 2
        assert emu.tenant.counters.requests - requests == 2 * summary["polls"]  # 2 listing pages per poll
    with (tmp_path / "s2" / "status.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["serial_number"] for r in rows] == [f"PF{i:05d}" for i in range(0, 1200, 100)]
    assert {r["group_tag"] for r in rows} == {"wave1"} and all(r["assigned_at"] and r["checked_at"] for r in rows)
    pending = [orjson.loads(line) for line in (tmp_path / "s1" / "status.jsonl").read_bytes().splitlines()]
    assert {r["assignment_status"] for r in pending} == {"pending"}
    page = (tmp_path / "s2" / "report.html").read_text()
    assert 'id="chart-status"' in page and 'id="no-summary"' not in page  # a status folder is not a killed run
    assert page.count('id="marks-status-') >= 1 and 'data-state="assigned">12<' in page
    assert len(summary["polls_over_time"]) == summary["polls"]


def test_run_wait_assigned_chains_the_status_and_expect_profile_finds_the_wrong_one(tmp_path: Path) -> None:
    other = "7a7a7a7a-0000-4000-8000-000000000001"
    tenant = {did(i): {"serialNumber": f"PF{i:05d}"} for i in range(30)}
    tenant[did(29)].update(deploymentProfileAssignmentStatus="assignedInSync", deploymentProfileId=other,
                           enrollmentState="enrolled")
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, token=TOKEN, inventory=tenant,
                            status_delay=1.0)
    ids = tmp_path / "ids.csv"
    ids.write_text("id\n" + "".join(f"{did(i)}\n" for i in range(10)))
    with threaded_emulator(config) as emu:
        url = emu.base_url
        done = bulk_assign("run", "ids.csv", "--target", f"group:{GROUP}", "--graph-url", url, "--out", "w1",
                           "--wait-assigned", "20s", "--wait-interval", "300ms", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        summary = orjson.loads((tmp_path / "w1" / "summary.json").read_bytes())
        assert summary["counts"]["succeeded"] == 10 and summary["status"]["by_state"] == {"assigned": 10}
        assert (tmp_path / "w1" / "status.csv").is_file()
        too_short = bulk_assign("run", "ids.csv", "--target", f"group:{GROUP}", "--graph-url", url, "--out", "w2",
                                "--wait-assigned", "0s", cwd=tmp_path)
        assert too_short.returncode == 0, too_short.stderr  # already in sync: nothing left to wait for
        mine = emu.tenant.profile_id
        both = tmp_path / "both.csv"
        both.write_text(f"id\n{did(0)}\n{did(29)}\n")
        checked = bulk_assign("status", "both.csv", "--graph-url", url, "--expect-profile", mine.upper(), "--out",
                              "s1", cwd=tmp_path)
        assert checked.returncode == 1, checked.stderr
    records = [orjson.loads(line) for line in (tmp_path / "s1" / "status.jsonl").read_bytes().splitlines()]
    assert [r["state"] for r in records] == ["assigned", "wrong_profile"]
    assert other in records[1]["note"]
    summary = orjson.loads((tmp_path / "s1" / "status-summary.json").read_bytes())
    assert summary["profiles_read"] == 2


def test_run_wait_assigned_exits_4_when_the_wait_runs_out(tmp_path: Path) -> None:
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, token=TOKEN,
                            inventory={did(i): {"serialNumber": f"S{i}"} for i in range(5)}, status_delay=60.0)
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{did(i)}\n" for i in range(5)))
    with threaded_emulator(config) as emu:
        done = bulk_assign("run", "ids.csv", "--target", f"group:{GROUP}", "--graph-url", emu.base_url, "--out",
                           "w1", "--wait-assigned", "500ms", "--wait-interval", "200ms", cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    summary = orjson.loads((tmp_path / "w1" / "summary.json").read_bytes())
    assert summary["exit_code"] == 0 and summary["status"]["exit_code"] == 4  # the run's own code stays in it


def test_inventory_writes_the_whole_listing_as_csv_or_jsonl(tmp_path: Path) -> None:
    tenant = {did(i): {"serialNumber": f"PF{i:05d}", "groupTag": "t"} for i in range(2100)}
    config = EmulatorConfig(read_rate=None, token=TOKEN, inventory=tenant)
    with threaded_emulator(config) as emu:
        for name in ("tenant.csv", "tenant.jsonl"):
            done = bulk_assign("inventory", "--graph-url", emu.base_url, "--out", name, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert "2,100 devices in 3 page(s)" in done.stdout
        assert emu.tenant.counters.requests == 6
    with (tmp_path / "tenant.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(tenant) and rows[0]["serialNumber"] == "PF00000"
    lines = (tmp_path / "tenant.jsonl").read_bytes().splitlines()
    assert len(lines) == 2100 and orjson.loads(lines[-1])["groupTag"] == "t"
