"""The emulated tenant's assignment status model (issue 11): notAssigned -> pending -> assignedInSync after
``status_delay`` on the tenant's clock, the single GET's ``unknown`` quirk, starting states from a tenant
file, and ``GET {id}/deploymentProfile``. Unit tests drive a fake clock; nothing waits for real time."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fake_time import FakeTime

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.emulator.batch import evaluate_batch
from bulk_assign.emulator.inventory import load_inventory
from bulk_assign.emulator.operations import PROFILE_TYPE, Tenant
from bulk_assign.emulator.responses import Outcome
from bulk_assign.errors import InputFileError

ROOT = Path(__file__).resolve().parent.parent
NEVER = "0001-01-01T00:00:00Z"
DEVICES = "/deviceManagement/windowsAutopilotDeviceIdentities"
DEV_A = "0f6e3b4e-1111-4aaa-8bbb-123456789abc"
DEV_B = "0f6e3b4e-2222-4aaa-8bbb-123456789abc"
DEV_C = "0f6e3b4e-3333-4aaa-8bbb-123456789abc"
OLD_PROFILE = "7a7a7a7a-0000-4000-8000-000000000001"
BODY = {
    "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
    "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"},
}


def make(time: FakeTime, **config: Any) -> Tenant:
    return Tenant(EmulatorConfig(**config), clock=time.clock)


def call(tenant: Tenant, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Outcome:
    return tenant.evaluate(method, path, body, "app", "rid", "crid", query=query)


def assign(tenant: Tenant, device: str) -> None:
    assert call(tenant, "POST", f"{DEVICES}/{device}/deploymentProfile/assignments", BODY).status == 201


def single(tenant: Tenant, device: str) -> dict[str, Any]:
    outcome = call(tenant, "GET", f"{DEVICES}/{device}")
    assert outcome.status == 200
    body: dict[str, Any] = outcome.body
    return body


def listed(tenant: Tenant, device: str) -> dict[str, Any]:
    outcome = call(tenant, "GET", DEVICES)
    assert outcome.status == 200
    return next(d for d in outcome.body["value"] if d["id"] == device)


def status(tenant: Tenant, device: str) -> tuple[str, str]:
    body = single(tenant, device)
    return body["deploymentProfileAssignmentStatus"], body["deploymentProfileAssignedDateTime"]


def parsed(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- notAssigned -> pending -> assignedInSync -----------------------------------------------------------


def test_a_device_is_pending_until_the_delay_since_its_first_assignment_has_passed() -> None:
    time = FakeTime()
    tenant = make(time, status_delay=30.0)
    assert status(tenant, DEV_A) == ("notAssigned", NEVER)
    assign(tenant, DEV_A)
    assert status(tenant, DEV_A) == ("pending", NEVER)
    time.now += 29.9
    assert status(tenant, DEV_A) == ("pending", NEVER)
    assign(tenant, DEV_A)  # a second assignment does not restart the wait
    time.now += 0.1
    state, stamp = status(tenant, DEV_A)
    assert state == "assignedInSync" and stamp != NEVER
    time.now += 100.0
    assert status(tenant, DEV_A) == (state, stamp)  # the date is when it became in sync, not when read


def test_the_assigned_date_is_when_the_device_became_in_sync() -> None:
    time = FakeTime()
    tenant = make(time, status_delay=30.0)
    assign(tenant, DEV_A)
    time.now += 10.0
    assign(tenant, DEV_B)
    time.now += 60.0
    a, b = status(tenant, DEV_A)[1], status(tenant, DEV_B)[1]
    assert parsed(b) - parsed(a) == pytest.approx(10.0, abs=0.002)
    fresh = make(FakeTime(), status_delay=0.0)  # same clock start, no delay: in sync 30 s earlier
    assign(fresh, DEV_A)
    assert parsed(a) - parsed(status(fresh, DEV_A)[1]) == pytest.approx(30.0, abs=1.0)


def test_no_delay_is_in_sync_at_once_and_a_reset_forgets_the_status() -> None:
    time = FakeTime()
    tenant = make(time)
    assign(tenant, DEV_A)
    assert status(tenant, DEV_A)[0] == "assignedInSync"
    tenant.reset_state()
    assert status(tenant, DEV_A) == ("notAssigned", NEVER)


def test_a_negative_status_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="status_delay"):
        EmulatorConfig(status_delay=-1.0)
    with pytest.raises(ValueError, match="status_delay"):
        EmulatorConfig(status_delay=float("nan"))


# -- the single GET's unknown quirk ---------------------------------------------------------------------


def test_with_the_quirk_the_single_get_says_unknown_while_the_listing_tells_the_truth() -> None:
    time = FakeTime()
    tenant = make(time, status_delay=30.0, status_unknown_quirk=True)
    assign(tenant, DEV_A)
    assert single(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "unknown"
    assert listed(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "pending"
    time.now += 30.0
    assert single(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "unknown"
    assert listed(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "assignedInSync"
    assert single(tenant, DEV_B)["deploymentProfileAssignmentStatus"] == "notAssigned"  # never assigned


def test_without_the_quirk_the_single_get_tells_the_truth() -> None:
    tenant = make(FakeTime())
    assign(tenant, DEV_A)
    assert single(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "assignedInSync"


# -- starting state from a tenant file ------------------------------------------------------------------


def starting_tenant() -> dict[str, dict[str, str]]:
    return {
        DEV_A: {"serialNumber": "SNA", "deploymentProfileAssignmentStatus": "assignedInSync",
                "enrollmentState": "enrolled", "deploymentProfileId": OLD_PROFILE},
        DEV_B: {"serialNumber": "SNB", "enrollmentState": "enrolled"},
        DEV_C: {"serialNumber": "SNC"},
    }


def test_an_inventory_given_status_holds_until_the_emulator_assigns_the_device() -> None:
    time = FakeTime()
    tenant = make(time, status_delay=30.0, inventory=starting_tenant())
    a = listed(tenant, DEV_A)
    assert (a["deploymentProfileAssignmentStatus"], a["enrollmentState"]) == ("assignedInSync", "enrolled")
    assert "deploymentProfileId" not in a  # the emulator's own detail, not a Graph property of the device
    assert single(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "assignedInSync"
    b, c = listed(tenant, DEV_B), listed(tenant, DEV_C)
    assert (b["deploymentProfileAssignmentStatus"], b["enrollmentState"]) == ("notAssigned", "enrolled")
    assert (c["deploymentProfileAssignmentStatus"], c["enrollmentState"]) == ("notAssigned", "notContacted")
    assign(tenant, DEV_A)
    a = listed(tenant, DEV_A)
    assert (a["deploymentProfileAssignmentStatus"], a["enrollmentState"]) == ("pending", "enrolled")
    time.now += 30.0
    assert listed(tenant, DEV_A)["deploymentProfileAssignmentStatus"] == "assignedInSync"


def test_tenant_files_carry_starting_states_in_any_case_and_refuse_unknown_ones(tmp_path: Path) -> None:
    jsonl = tmp_path / "tenant.jsonl"
    jsonl.write_text(
        json.dumps({"id": DEV_A, "DeploymentProfileAssignmentStatus": "ASSIGNEDINSYNC", "enrollmentstate": "Enrolled",
                    "deploymentProfileId": OLD_PROFILE.upper()}) + "\n"
    )
    assert load_inventory(jsonl) == {DEV_A: {"deploymentProfileAssignmentStatus": "assignedInSync",
                                             "enrollmentState": "enrolled", "deploymentProfileId": OLD_PROFILE}}
    csv = tmp_path / "tenant.csv"
    csv.write_text(f"id,deploymentProfileAssignmentStatus,enrollmentState\n{DEV_A},pending,\n{DEV_B},,notContacted\n")
    assert load_inventory(csv) == {DEV_A: {"deploymentProfileAssignmentStatus": "pending"},
                                   DEV_B: {"enrollmentState": "notContacted"}}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,deploymentProfileAssignmentStatus\n{DEV_A},assigned\n")
    with pytest.raises(InputFileError, match=r"line 2.*'assigned' is not one of"):
        load_inventory(bad)
    bad.write_text(f"id,deploymentProfileId\n{DEV_A},profile-1\n")
    with pytest.raises(InputFileError, match=r"line 2.*not a profile id"):
        load_inventory(bad)


# -- GET {id}/deploymentProfile -------------------------------------------------------------------------


def profile(tenant: Tenant, device: str) -> Outcome:
    return call(tenant, "GET", f"{DEVICES}/{device}/deploymentProfile")


def test_the_profile_route_answers_the_inventorys_profile_then_the_emulators_after_an_assignment() -> None:
    tenant = make(FakeTime(), inventory=starting_tenant())
    got = profile(tenant, DEV_A)
    assert got.status == 200
    assert got.body["@odata.type"] == PROFILE_TYPE == "#microsoft.graph.azureADWindowsAutopilotDeploymentProfile"
    assert got.body["id"] == OLD_PROFILE and got.body["displayName"] and got.body["createdDateTime"] > "2000"
    missing = profile(tenant, DEV_B)
    assert missing.status == 404 and missing.body["error"]["code"] == "ResourceNotFound"
    assign(tenant, DEV_B)
    assign(tenant, DEV_A)
    assert profile(tenant, DEV_B).body["id"] == tenant.profile_id
    assert profile(tenant, DEV_A).body["id"] == tenant.profile_id  # the assignment replaced the old profile


def test_the_profile_route_checks_the_id_like_the_other_device_routes() -> None:
    tenant = make(FakeTime(), inventory=starting_tenant())
    assert profile(tenant, "not-a-guid").status == 400
    unknown = profile(tenant, "99999999-1111-4aaa-8bbb-123456789abc")
    assert unknown.status == 404 and "was not found" in unknown.body["error"]["message"]
    assert profile(tenant, DEV_A.upper()).body["id"] == OLD_PROFILE
    refused = call(tenant, "POST", f"{DEVICES}/{DEV_A}/deploymentProfile", BODY)
    assert refused.status == 405 and refused.headers["Allow"] == "GET"
    assert call(tenant, "GET", f"{DEVICES}/{DEV_A}/deploymentProfile/").status == 200


def test_the_profile_route_does_not_shadow_assignments_and_is_not_read_as_the_device() -> None:
    tenant = make(FakeTime())
    assert call(tenant, "GET", f"{DEVICES}/{DEV_A}/deploymentProfile/assignments").body["value"] == []
    assign(tenant, DEV_A)
    assert len(call(tenant, "GET", f"{DEVICES}/{DEV_A}/deploymentProfile/assignments").body["value"]) == 1
    body = profile(tenant, DEV_A).body
    assert body["@odata.type"] == PROFILE_TYPE and "serialNumber" not in body


def test_the_profile_route_spends_the_read_budget() -> None:
    time = FakeTime()
    tenant = make(time, read_rate=Rate(2, 60.0))
    assert profile(tenant, DEV_A).status == 404  # a 404 after the budget check still costs a read
    assert single(tenant, DEV_A)["id"] == DEV_A
    assert profile(tenant, DEV_A).status == 429
    assert tenant.counters.throttled == 1
    time.now += 60.0
    assert profile(tenant, DEV_A).status == 404


def test_the_profile_route_works_inside_a_batch() -> None:
    tenant = make(FakeTime(), inventory=starting_tenant())
    raw = orjson.dumps({"requests": [
        {"id": "a", "method": "GET", "url": f"{DEVICES}/{DEV_A}/deploymentProfile"},
        {"id": "b", "method": "GET", "url": f"{DEVICES}/{DEV_B}/deploymentProfile"},
    ]})
    result = evaluate_batch(tenant, raw, "app", "rid", "crid")
    by_id = {r["id"]: r for r in result.outcome.body["responses"]}
    assert by_id["a"]["status"] == 200 and by_id["a"]["body"]["id"] == OLD_PROFILE
    assert by_id["b"]["status"] == 404


# -- through the real server and the CLI ----------------------------------------------------------------


async def test_status_quirk_and_profile_over_http() -> None:
    config = EmulatorConfig(status_delay=3600.0, status_unknown_quirk=True, inventory=starting_tenant())
    headers = {"Authorization": "Bearer t"}
    async with Emulator(config) as emu, aiohttp.ClientSession(headers=headers) as http:
        assert emu.base_url.startswith("http://127.0.0.1:")
        url = f"{emu.base_url}{DEVICES}/{DEV_C}"
        async with http.post(url + "/deploymentProfile/assignments", json=BODY) as response:
            assert response.status == 201
        async with http.get(url) as response:
            assert (await response.json())["deploymentProfileAssignmentStatus"] == "unknown"
        async with http.get(emu.base_url + DEVICES) as response:
            devices = {d["id"]: d for d in (await response.json())["value"]}
        assert devices[DEV_C]["deploymentProfileAssignmentStatus"] == "pending"
        assert devices[DEV_A]["deploymentProfileAssignmentStatus"] == "assignedInSync"
        async with http.get(url + "/deploymentProfile") as response:
            assert response.status == 200
            assert (await response.json())["id"] == emu.tenant.profile_id
        batch = {"requests": [{"id": "1", "method": "GET", "url": f"{DEVICES}/{DEV_A}/deploymentProfile"}]}
        async with http.post(emu.base_url + "/$batch", json=batch) as response:
            item = (await response.json())["responses"][0]
        assert item["status"] == 200 and item["body"]["id"] == OLD_PROFILE


def emulator_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_assign", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def fetch(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_the_cli_flags_reach_the_tenant() -> None:
    proc = emulator_cli("--status-delay", "1h", "--status-unknown-quirk")
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        fetch(f"{base_url}{DEVICES}/{DEV_A}/deploymentProfile/assignments", BODY)
        assert fetch(f"{base_url}{DEVICES}/{DEV_A}")["deploymentProfileAssignmentStatus"] == "unknown"
        assert fetch(base_url + DEVICES)["value"][0]["deploymentProfileAssignmentStatus"] == "pending"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "status delay 3600s, unknown-status quirk" in err


@pytest.mark.parametrize(("value", "fragment"), [("30", "needs a unit"), ("soon", "not a duration")])
def test_a_bad_status_delay_exits_2_with_a_message(value: str, fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bulk_assign", "emulator", "--port", "0", "--status-delay", value],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert fragment in result.stderr and "--status-delay" in result.stderr
    assert "Traceback" not in result.stderr
