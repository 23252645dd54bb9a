"""The emulated tenant's Entra directory (directory.py, entra.py): device objects for the Autopilot devices,
static groups and their members, Entra's own budget and faults, and the documented route's effect (a member
of a static group that a profile is assigned to is targeted). Most tests call ``Tenant.evaluate`` on a fake
clock; the ones about hosts, next links and batches go through real HTTP on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from fake_time import FakeTime

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.emulator.batch import evaluate_batch
from bulk_assign.emulator.directory import ALREADY_MEMBER, entra_device_id, object_id, read_cost
from bulk_assign.emulator.inventory import load_inventory
from bulk_assign.emulator.operations import DEFAULT_ORIGIN, Tenant
from bulk_assign.emulator.responses import Outcome
from bulk_assign.emulator.throttle import DirectoryBudgets
from bulk_assign.errors import InputFileError

DEVICES = "/deviceManagement/windowsAutopilotDeviceIdentities"
STATIC = "5a5a5a5a-0000-4000-8000-000000000001"
OTHER_STATIC = "5a5a5a5a-0000-4000-8000-000000000002"
SYNCED = "5a5a5a5a-0000-4000-8000-000000000003"
DYNAMIC = "6b6b6b6b-0000-4000-8000-000000000001"
UNKNOWN_GROUP = "7c7c7c7c-0000-4000-8000-000000000001"
P1, P2 = "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"
USER = "99999999-0000-4000-8000-0000000000aa"  # a member that is not a device (a user)
GIVEN_ENTRA = "e0e0e0e0-1111-4222-8333-444455556666"
FAST = Rate(100_000, 1.0)


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def oid(n: int) -> str:
    """The object id of device ``n`` in ``inventory()`` (its Entra deviceId derived)."""
    return object_id(entra_device_id(did(n)))


def inventory(n: int = 30) -> dict[str, dict[str, str]]:
    devices = {did(i): {"serialNumber": f"SN{i:04d}", "groupTag": "wave1" if i % 3 == 0 else ""} for i in range(n)}
    devices[did(n)] = {"serialNumber": "GIVEN", "azureActiveDirectoryDeviceId": GIVEN_ENTRA.upper()}
    devices[did(n + 1)] = {"serialNumber": "NOENTRA", "azureActiveDirectoryDeviceId": ""}
    return devices


def make(time: FakeTime | None = None, **config: Any) -> Tenant:
    values: dict[str, Any] = {"inventory": inventory(), "static_groups": {STATIC: frozenset({USER}),
                              OTHER_STATIC: frozenset()}, "synced_groups": (SYNCED,),
                              "dynamic_groups": {DYNAMIC: "wave1"}, "app_rate": FAST, "tenant_rate": FAST}
    values.update(config)
    return Tenant(EmulatorConfig(**values), clock=(time or FakeTime()).clock)


def call(tenant: Tenant, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
         origin: str = DEFAULT_ORIGIN, in_batch: bool = False) -> Outcome:
    raw = orjson.dumps(body) if body is not None and not isinstance(body, bytes) else body
    return tenant.evaluate(method, path, raw, "app", "rid", "crid", query=query, origin=origin, in_batch=in_batch)


def ref(object_id_: str, origin: str = DEFAULT_ORIGIN, version: str = "v1.0") -> str:
    return f"{origin}/{version}/directoryObjects/{object_id_}"


def bind(*object_ids: str, origin: str = DEFAULT_ORIGIN) -> dict[str, Any]:
    return {"members@odata.bind": [ref(o, origin) for o in object_ids]}


def error(outcome: Outcome, status: int, code: str) -> str:
    assert outcome.status == status, outcome.body
    assert outcome.body["error"]["code"] == code
    assert outcome.body["error"]["innerError"]["request-id"] == "rid"
    message: str = outcome.body["error"]["message"]
    return message


def members(tenant: Tenant, group: str, query: dict[str, str] | None = None, cast: bool = False) -> list[str]:
    outcome = call(tenant, "GET", f"/groups/{group}/members" + ("/microsoft.graph.device" if cast else ""),
                   query=query)
    assert outcome.status == 200, outcome.body
    return [item["id"] for item in outcome.body["value"]]


def status(tenant: Tenant, device: str) -> str:
    value: str = tenant.device_record(device)["deploymentProfileAssignmentStatus"]
    return value


# -- ids and device objects -----------------------------------------------------------------------------


def test_the_id_helpers_are_the_documented_uuid5s() -> None:
    device = "0f6e3b4e-1111-4aaa-8bbb-123456789abc"
    entra = entra_device_id(device)
    assert entra == str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-emulator-entra/{device}"))
    assert object_id(entra) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-emulator-object/{entra}"))
    assert entra != device and object_id(entra) != entra


def test_the_fast_uuid5_agrees_with_the_standard_library_and_two_records_may_share_an_entra_device() -> None:
    for n in range(200):
        assert entra_device_id(did(n)) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-emulator-entra/{did(n)}"))
    shared = {did(n): {"azureActiveDirectoryDeviceId": GIVEN_ENTRA} for n in (0, 1)}
    tenant = make(inventory=shared)
    assert [d["azureActiveDirectoryDeviceId"] for d in call(tenant, "GET", DEVICES).body["value"]] == [GIVEN_ENTRA] * 2
    found = tenant.directory.by_device_id(GIVEN_ENTRA)
    assert found is not None and found.autopilot_id == did(0)  # the first record keeps the object


def test_every_autopilot_device_shows_its_entra_device_id_in_the_listing_and_the_single_get() -> None:
    tenant = make()
    listed = {d["id"]: d for d in call(tenant, "GET", DEVICES).body["value"]}
    assert listed[did(0)]["azureActiveDirectoryDeviceId"] == entra_device_id(did(0))
    assert listed[did(30)]["azureActiveDirectoryDeviceId"] == GIVEN_ENTRA  # the tenant file's, lower-cased
    assert listed[did(31)]["azureActiveDirectoryDeviceId"] == ""  # no Entra device
    single = call(tenant, "GET", f"{DEVICES}/{did(5)}").body
    assert single["azureActiveDirectoryDeviceId"] == entra_device_id(did(5))
    plain = make(inventory=frozenset({did(0)}))
    assert call(plain, "GET", f"{DEVICES}/{did(0)}").body["azureActiveDirectoryDeviceId"] == entra_device_id(did(0))


def test_devices_by_device_id_and_by_object_id() -> None:
    tenant = make()
    entra = entra_device_id(did(2))
    got = call(tenant, "GET", f"/devices(deviceId='{entra}')")
    assert got.status == 200
    assert {k: v for k, v in got.body.items() if k != "@odata.context"} == {
        "id": oid(2), "deviceId": entra, "displayName": "SN0002", "accountEnabled": True,
        "onPremisesSyncEnabled": None}
    assert call(tenant, "GET", f"/devices/{oid(2).upper()}").body["deviceId"] == entra
    given = call(tenant, "GET", f"/devices(deviceId='{GIVEN_ENTRA}')").body
    assert given["id"] == object_id(GIVEN_ENTRA) and given["displayName"] == "GIVEN"
    picked = call(tenant, "GET", f"/devices(deviceId='{entra}')", query={"$select": "id,deviceId"}).body
    assert set(picked) == {"@odata.context", "id", "deviceId"} and picked["id"] == oid(2)
    assert "devices(id,deviceId)" in picked["@odata.context"]
    wrong = call(tenant, "GET", f"/devices(deviceId='{entra}')", query={"$select": "id,serial"})
    assert "serial" in error(wrong, 400, "Request_BadRequest")


def test_unknown_and_malformed_device_keys() -> None:
    tenant = make()
    unknown = "12345678-1234-4234-8234-123456789abc"
    message = error(call(tenant, "GET", f"/devices(deviceId='{unknown}')"), 404, "Request_ResourceNotFound")
    assert message == (f"Resource '{unknown}' does not exist or one of its queried reference-property objects "
                       "are not present.")
    for key in ("deviceId=abc", f"deviceId={entra_device_id(did(1))}", "deviceId='not-a-guid'", "id='x'", ""):
        error(call(tenant, "GET", f"/devices({key})"), 400, "Request_BadRequest")
    error(call(tenant, "GET", "/devices/not-a-guid"), 400, "Request_BadRequest")
    error(call(tenant, "GET", f"/devices/{unknown}"), 404, "Request_ResourceNotFound")
    assert call(tenant, "POST", f"/devices/{oid(1)}", {}).status == 405


def test_a_device_without_an_entra_object_cannot_be_found_or_added() -> None:
    tenant = make()
    assert tenant.directory.entra_id_of(did(31)) is None
    assert tenant.directory.devices_of([did(31)]) == []
    entra_of_listed = {d["azureActiveDirectoryDeviceId"] for d in call(tenant, "GET", DEVICES).body["value"]}
    assert len(tenant.directory.devices_of([did(i) for i in range(32)])) == len(entra_of_listed - {""}) == 31


# -- groups and members ---------------------------------------------------------------------------------


def test_static_synced_and_dynamic_groups_read_as_entra_shows_them() -> None:
    tenant = make()
    static = call(tenant, "GET", f"/groups/{STATIC}").body
    assert (static["id"], static["groupTypes"], static["membershipRule"], static["onPremisesSyncEnabled"]) == \
        (STATIC, [], None, None)
    assert call(tenant, "GET", f"/groups/{SYNCED.upper()}").body["onPremisesSyncEnabled"] is True
    dynamic = call(tenant, "GET", f"/groups/{DYNAMIC}").body
    assert dynamic["groupTypes"] == ["DynamicMembership"] and "[OrderID]:wave1" in dynamic["membershipRule"]
    error(call(tenant, "GET", f"/groups/{UNKNOWN_GROUP}"), 404, "Request_ResourceNotFound")
    assert members(tenant, STATIC) == [USER] and members(tenant, STATIC, cast=True) == []
    tagged = [oid(i) for i in range(30) if i % 3 == 0]
    assert members(tenant, DYNAMIC) == tagged == members(tenant, DYNAMIC, cast=True)


def test_patch_binds_up_to_20_members_and_answers_204_with_no_body() -> None:
    tenant = make()
    added = call(tenant, "PATCH", f"/groups/{STATIC}", bind(*(oid(i) for i in range(20))))
    assert (added.status, added.body) == (204, b"")
    assert members(tenant, STATIC) == [USER, *(oid(i) for i in range(20))]
    assert members(tenant, STATIC, cast=True) == [oid(i) for i in range(20)]
    beta = call(tenant, "PATCH", f"/groups/{STATIC}", {"members@odata.bind": [ref(oid(20), version="beta")]})
    assert beta.status == 204
    too_many = call(tenant, "PATCH", f"/groups/{OTHER_STATIC}", bind(*(oid(i) for i in range(21))))
    assert "20" in error(too_many, 400, "Request_BadRequest")
    counters = tenant.counters
    assert counters.member_adds == {o: 1 for o in [*(oid(i) for i in range(21))]}
    assert counters.member_adds_max == 1 and counters.directory_writes == 2 and counters.directory_commits == 2
    assert members(tenant, OTHER_STATIC) == []


def test_an_existing_member_refuses_the_whole_patch_and_adds_nothing() -> None:
    tenant = make()
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1))).status == 204
    again = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(2), oid(1), oid(3)))
    assert error(again, 400, "Request_BadRequest") == ALREADY_MEMBER == (
        "One or more added object references already exist for the following modified properties: 'members'.")
    assert members(tenant, STATIC) == [USER, oid(1)]
    twice_in_one = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(4), oid(4)))
    assert error(twice_in_one, 400, "Request_BadRequest") == ALREADY_MEMBER
    unknown = "12345678-1234-4234-8234-123456789abc"
    missing = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(5), unknown))
    assert unknown in error(missing, 404, "Request_ResourceNotFound")
    assert members(tenant, STATIC) == [USER, oid(1)]
    counters = tenant.counters
    assert counters.member_refusals == 2 and counters.directory_writes == 4 and counters.directory_commits == 1
    assert counters.member_adds == {oid(1): 1}
    # the same object may join another group once
    assert call(tenant, "PATCH", f"/groups/{OTHER_STATIC}", bind(oid(1))).status == 204
    assert counters.member_adds == {oid(1): 2} and counters.member_adds_max == 1


def test_dynamic_synced_and_unknown_groups_refuse_members() -> None:
    tenant = make()
    dynamic = call(tenant, "PATCH", f"/groups/{DYNAMIC}", bind(oid(1)))
    assert "dynamic membership" in error(dynamic, 400, "Request_BadRequest")
    synced = call(tenant, "POST", f"/groups/{SYNCED}/members/$ref", {"@odata.id": ref(oid(1))})
    assert "on-premises" in error(synced, 400, "Request_BadRequest")
    assert "on-premises" in error(call(tenant, "DELETE", f"/groups/{SYNCED}/members/{oid(1)}/$ref"), 400,
                                  "Request_BadRequest")
    error(call(tenant, "PATCH", f"/groups/{UNKNOWN_GROUP}", bind(oid(1))), 404, "Request_ResourceNotFound")
    error(call(tenant, "PATCH", "/groups/not-a-guid", bind(oid(1))), 400, "Request_BadRequest")
    assert tenant.counters.directory_writes == 0 and tenant.counters.member_adds == {}


@pytest.mark.parametrize("body", [
    b"{oops", [1], {}, {"members@odata.bind": []}, {"members@odata.bind": "x"},
    {"members@odata.bind": [ref(oid(1))], "displayName": "renamed"},
    {"members@odata.bind": [f"https://graph.microsoft.us/v1.0/directoryObjects/{oid(1)}"]},  # another cloud
    {"members@odata.bind": [f"http://graph.microsoft.com/v1.0/directoryObjects/{oid(1)}"]},
    {"members@odata.bind": [f"{DEFAULT_ORIGIN}/v1.0/users/{oid(1)}"]},
    {"members@odata.bind": [f"{DEFAULT_ORIGIN}/v1.0/directoryObjects/not-a-guid"]},
])
def test_malformed_bodies_and_foreign_references_are_400_and_cost_nothing(body: Any) -> None:
    tenant = make()
    error(call(tenant, "PATCH", f"/groups/{STATIC}", body), 400, "Request_BadRequest")
    assert tenant.counters.directory_writes == 0 and members(tenant, STATIC) == [USER]


def test_the_reference_must_name_the_host_the_request_was_sent_to() -> None:
    tenant = make()
    local = "http://127.0.0.1:8080"
    refused = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1)), origin=local)
    assert error(refused, 400, "Request_BadRequest").startswith("Invalid object identifier 'https://graph.microsoft")
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1), origin=local), origin=local).status == 204
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(2), origin="HTTP://127.0.0.1:8080"),
                origin=local).status == 204


def test_post_ref_and_delete_ref() -> None:
    tenant = make()
    assert call(tenant, "POST", f"/groups/{STATIC}/members/$ref", {"@odata.id": ref(oid(7))}).status == 204
    again = call(tenant, "POST", f"/groups/{STATIC}/members/$ref", {"@odata.id": ref(oid(7))})
    assert error(again, 400, "Request_BadRequest") == ALREADY_MEMBER
    error(call(tenant, "POST", f"/groups/{STATIC}/members/$ref", bind(oid(8))), 400, "Request_BadRequest")
    removed = call(tenant, "DELETE", f"/groups/{STATIC}/members/{oid(7)}/$ref")
    assert (removed.status, removed.body) == (204, b"")
    error(call(tenant, "DELETE", f"/groups/{STATIC}/members/{oid(7)}/$ref"), 404, "Request_ResourceNotFound")
    error(call(tenant, "DELETE", f"/groups/{STATIC}/members/nope/$ref"), 400, "Request_BadRequest")
    assert call(tenant, "GET", f"/groups/{STATIC}/members/$ref").status == 405
    assert call(tenant, "POST", f"/groups/{STATIC}/members/$ref", {"@odata.id": ref(oid(7))}).status == 204
    counters = tenant.counters
    assert counters.member_removes == 1 and counters.member_adds == {oid(7): 2}
    assert counters.member_adds_per_group == {f"{STATIC}/{oid(7)}": 2} and counters.member_adds_max == 2
    assert members(tenant, STATIC) == [USER, oid(7)]


def test_member_pages_top_skiptoken_select() -> None:
    tenant = make(inventory=inventory(300))
    for start in range(0, 250, 20):
        assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(*(oid(i) for i in range(start, start + 20)))) \
            .status == 204
    first = call(tenant, "GET", f"/groups/{STATIC}/members").body
    assert len(first["value"]) == 100 and first["value"][0] == {"@odata.type": "#microsoft.graph.user", "id": USER}
    assert first["value"][1] == {"@odata.type": "#microsoft.graph.device", "id": oid(0),
                                 "deviceId": entra_device_id(did(0)), "displayName": "SN0000",
                                 "accountEnabled": True, "onPremisesSyncEnabled": None}
    seen: list[str] = []
    query: dict[str, str] | None = {"$top": "999", "$select": "id,deviceId"}
    pages = 0
    while query is not None:
        page = call(tenant, "GET", f"/groups/{STATIC}/members/microsoft.graph.device", query=query).body
        assert all(set(item) == {"@odata.type", "id", "deviceId"} for item in page["value"])
        seen += [item["id"] for item in page["value"]]
        pages += 1
        link = page.get("@odata.nextLink")
        query = dict(p.split("=", 1) for p in urlsplit(link).query.split("&")) if link else None
    assert pages == 1 and seen == [oid(i) for i in range(260)]
    small = call(tenant, "GET", f"/groups/{STATIC}/members", query={"$top": "7"}).body
    link = small["@odata.nextLink"]
    assert link.startswith(f"{DEFAULT_ORIGIN}/beta/groups/{STATIC}/members?$top=7&$skiptoken=")
    for bad in ({"$top": "1000"}, {"$top": "0"}, {"$top": "x"}, {"$skiptoken": "garbage"}, {"$filter": "x"}):
        error(call(tenant, "GET", f"/groups/{STATIC}/members", query=bad), 400, "Request_BadRequest")
    error(call(tenant, "GET", f"/groups/{UNKNOWN_GROUP}/members"), 404, "Request_ResourceNotFound")


def test_read_costs_follow_microsofts_table() -> None:
    assert read_cost(3, {}) == 3
    assert read_cost(3, {"$select": "id"}) == 2
    assert read_cost(3, {"$select": "id", "$top": "5"}) == 1
    assert read_cost(3, {"$top": "999"}) == 3
    assert read_cost(1, {"$select": "id", "$top": "1"}) == 1  # never below 1


# -- Entra's own budget ---------------------------------------------------------------------------------


def test_directory_budgets_are_token_buckets_charged_by_cost() -> None:
    budgets = DirectoryBudgets(Rate(10, 10.0), Rate(3, 150.0))
    assert [budgets.try_read("a", 0.0, 3) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(2.0)]
    assert budgets.try_read("b", 0.0, 3) == 0.0  # per app
    assert budgets.try_read("a", 2.0, 3) == 0.0
    assert budgets.try_write("c", 0.0) == (0.0, "") and budgets.try_write("c", 0.0) == (0.0, "")
    assert budgets.try_write("c", 0.0) == (0.0, "")
    wait, reason = budgets.try_write("c", 0.0)
    assert reason == "WriteLimitExceeded" and wait == pytest.approx(50.0)
    assert budgets.try_read("c", 0.0, 7) == 0.0  # 3 writes cost 3 units of the 10
    assert budgets.try_read("c", 0.0, 1) > 0.0
    budgets.clear()
    assert budgets.try_write("c", 0.0) == (0.0, "")
    off = DirectoryBudgets(None, None)
    assert all(off.try_read("a", 0.0, 3) == 0.0 and off.try_write("a", 0.0) == (0.0, "") for _ in range(100))


def test_directory_reads_and_writes_are_throttled_apart_from_intune() -> None:
    time = FakeTime()
    tenant = make(time, directory_read_rate=Rate(7, 10.0), directory_write_rate=Rate(2, 150.0),
                  app_rate=Rate(1, 60.0), read_rate=Rate(1, 60.0))
    body = {"@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
            "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}}
    assert call(tenant, "POST", f"{DEVICES}/{did(0)}/deploymentProfile/assignments", body).status == 201
    assert call(tenant, "GET", DEVICES).status == 200  # Intune's budgets are now spent
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1))).status == 204
    assert call(tenant, "POST", f"/groups/{STATIC}/members/$ref", {"@odata.id": ref(oid(2))}).status == 204
    throttled = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(3)))
    assert "write quota" in error(throttled, 429, "TooManyRequests")
    assert throttled.headers["Retry-After"] == "75" and throttled.headers["x-ms-throttle-information"] == \
        "WriteLimitExceeded"
    assert call(tenant, "GET", f"/groups/{STATIC}/members").status == 200  # 3 units: 2 + 3 of 7 spent
    read = call(tenant, "GET", f"/groups/{STATIC}/members")
    error(read, 429, "TooManyRequests")
    assert read.headers["Retry-After"] == "2" and read.headers["x-ms-throttle-information"] == \
        "ResourceUnitLimitExceeded"
    assert call(tenant, "GET", f"/devices/{oid(1)}").status == 200  # 1 unit still fits
    counters = tenant.counters
    assert counters.directory_throttled == 2 and counters.throttled == 2
    assert counters.directory_reads == 2 and counters.directory_writes == 2
    assert call(tenant, "POST", f"{DEVICES}/{did(1)}/deploymentProfile/assignments", body).status == 429
    time.now += 75.0
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(3))).status == 204


# -- faults ---------------------------------------------------------------------------------------------


def test_directory_writes_meet_the_fault_plan_and_ambiguous_ones_commit() -> None:
    tenant = make(faults=1.0, fault_kinds=("ambiguous-504",))
    lost = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1), oid(2)))
    assert error(lost, 504, "GatewayTimeout")
    assert members(tenant, STATIC) == [USER, oid(1), oid(2)]  # it landed; the answer did not
    again = call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1), oid(2)))
    assert again.status == 504  # faulted again; the refusal behind it committed nothing
    assert tenant.counters.ambiguous_commits == 1 and tenant.counters.member_refusals == 1
    assert tenant.counters.faults_injected == {"ambiguous-504": 2}
    plain = make(faults=1.0, fault_kinds=("503", "504", "reset"))
    answers = [call(plain, "PATCH", f"/groups/{STATIC}", bind(oid(i))) for i in range(12)]
    assert {a.status for a in answers} <= {503, 504, 0} and members(plain, STATIC) == [USER]
    assert any(a.status == 503 and a.headers["Retry-After"] == "1" for a in answers)
    in_batch = make(faults=1.0, fault_kinds=("reset", "ambiguous-reset", "malformed"))
    assert call(in_batch, "PATCH", f"/groups/{STATIC}", bind(oid(1)), in_batch=True).status == 204  # malformed
    reset = make(faults=1.0, fault_kinds=("ambiguous-reset",))
    assert call(reset, "DELETE", f"/groups/{STATIC}/members/{USER}/$ref").action == "reset"
    assert members(reset, STATIC) == [] and reset.counters.member_removes == 1


# -- the documented route: members of a group a profile is assigned to are targeted ----------------------


def assign_profile(tenant: Tenant, profile: str, group: str) -> None:
    body = {"target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": group}}
    assert call(tenant, "POST", f"/deviceManagement/windowsAutopilotDeploymentProfiles/{profile}/assignments",
                body).status == 201


def test_a_member_added_to_a_group_with_a_profile_is_targeted_like_a_tagged_device() -> None:
    time = FakeTime()
    tenant = make(time, profiles=(P1, P2), status_delay=30.0)
    assign_profile(tenant, P2, STATIC)
    assert status(tenant, did(1)) == "notAssigned" and tenant.profile_of(did(1)) is None
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1))).status == 204
    assert status(tenant, did(1)) == "pending" and tenant.profile_of(did(1)) == P2
    time.now += 30.0
    assert status(tenant, did(1)) == "assignedInSync"
    assert call(tenant, "GET", f"{DEVICES}/{did(1)}/deploymentProfile").body["id"] == P2
    # a device in two groups gets the oldest-created profile of them
    assert call(tenant, "PATCH", f"/groups/{OTHER_STATIC}", bind(oid(1), oid(2))).status == 204
    assign_profile(tenant, P1, OTHER_STATIC)
    assert tenant.profile_of(did(1)) == P1 and tenant.profile_of(did(2)) == P1
    assert status(tenant, did(2)) == "pending"  # assigning the profile targeted the group's current members
    assert call(tenant, "DELETE", f"/groups/{OTHER_STATIC}/members/{oid(2)}/$ref").status == 204
    assert status(tenant, did(2)) == "pending"  # removing does not un-target
    assert status(tenant, did(4)) == "notAssigned"


def test_a_tagged_device_in_a_static_group_takes_the_older_of_both_profiles() -> None:
    tenant = make(profiles=(P1, P2))
    assign_profile(tenant, P2, DYNAMIC)
    assert tenant.profile_of(did(3)) == P2 and status(tenant, did(3)) == "assignedInSync"  # tag wave1
    assign_profile(tenant, P1, STATIC)
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(3))).status == 204
    assert tenant.profile_of(did(3)) == P1


def test_reset_state_puts_static_groups_back_to_their_first_members() -> None:
    tenant = make()
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1))).status == 204
    assert call(tenant, "DELETE", f"/groups/{STATIC}/members/{USER}/$ref").status == 204
    tenant.reset_state()
    assert members(tenant, STATIC) == [USER] and tenant.directory.groups_of(oid(1)) == frozenset()
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind(oid(1))).status == 204


# -- config, tenant files -------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "fragment"), [
    ({"static_groups": {"nope": frozenset()}}, "not a GUID"),
    ({"static_groups": {STATIC: frozenset({"x"})}}, "not an object id"),
    ({"synced_groups": ("x",)}, "not a GUID"),
    ({"static_groups": {DYNAMIC: frozenset()}, "dynamic_groups": {DYNAMIC: "t"}}, "both dynamic and static"),
    ({"inventory": {did(0): {"azureActiveDirectoryDeviceId": "zz"}}}, "not a GUID"),
    ({"seed_call_semantics": "group"}, "seed_call_semantics"),
])
def test_bad_directory_settings_are_refused(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        EmulatorConfig(**config)


def test_tenant_files_carry_entra_device_ids(tmp_path: Path) -> None:
    csv_file = tmp_path / "tenant.csv"
    csv_file.write_text(f"id,serialNumber,azureActiveDirectoryDeviceId\n{did(0)},A,{GIVEN_ENTRA.upper()}\n"
                        f"{did(1)},B,\n")
    loaded = load_inventory(csv_file)
    assert isinstance(loaded, dict)
    assert loaded[did(0)]["azureActiveDirectoryDeviceId"] == GIVEN_ENTRA
    assert loaded[did(1)]["azureActiveDirectoryDeviceId"] == ""
    jsonl = tmp_path / "tenant.jsonl"
    jsonl.write_text(orjson.dumps({"id": did(2), "azureActiveDirectoryDeviceId": "not-a-guid"}).decode() + "\n")
    with pytest.raises(InputFileError, match="azureActiveDirectoryDeviceId 'not-a-guid' is not"):
        load_inventory(jsonl)
    tenant = make(inventory=loaded)
    assert tenant.directory.by_device_id(GIVEN_ENTRA) is not None and tenant.directory.entra_id_of(did(1)) is None


def test_without_an_inventory_the_directory_knows_the_devices_shown_so_far() -> None:
    tenant = make(inventory=None)
    device = "0f6e3b4e-1111-4aaa-8bbb-123456789abc"
    entra = entra_device_id(device)
    assert call(tenant, "GET", f"/devices(deviceId='{entra}')").status == 404
    assert call(tenant, "GET", f"{DEVICES}/{device}").body["azureActiveDirectoryDeviceId"] == entra
    assert call(tenant, "GET", f"/devices(deviceId='{entra}')").body["id"] == object_id(entra)


# -- through real HTTP: the request's own host, next links, $batch ---------------------------------------


async def test_over_http_binds_name_the_emulators_host_and_next_links_point_back_to_it() -> None:
    config = EmulatorConfig(inventory=inventory(60), static_groups={STATIC: frozenset()})
    async with Emulator(config) as emu, aiohttp.ClientSession(headers={"Authorization": "Bearer t"}) as http:
        root = emu.root_url
        async with http.patch(f"{emu.base_url}/groups/{STATIC}", json=bind(oid(1))) as response:
            assert response.status == 400  # graph.microsoft.com while talking to 127.0.0.1
            assert (await response.json())["error"]["message"].startswith("Invalid object identifier")
        for start in (0, 20, 40):
            body = bind(*(oid(i) for i in range(start, start + 20)), origin=root)
            async with http.patch(f"{emu.base_url}/groups/{STATIC}", json=body) as response:
                assert response.status == 204 and await response.read() == b""
        url: str | None = f"{emu.base_url}/groups/{STATIC}/members/microsoft.graph.device?$top=25&$select=id,deviceId"
        seen: list[str] = []
        while url is not None:
            assert url.startswith(root + "/beta/")
            async with http.get(url) as response:
                page = await response.json()
            seen += [item["id"] for item in page["value"]]
            url = page.get("@odata.nextLink")
        assert seen == [oid(i) for i in range(60)]
        async with http.get(f"{emu.admin_url}/counters") as response:
            snap = await response.json()
        assert snap["directory_reads"] == 3 and snap["directory_writes"] == 3 and snap["member_adds_max"] == 1
        assert len(snap["member_adds"]) == 60 and snap["member_refusals"] == 0 and snap["member_removes"] == 0


async def test_over_http_twenty_device_lookups_and_a_bind_in_one_batch() -> None:
    config = EmulatorConfig(inventory=inventory(40), static_groups={STATIC: frozenset()})
    async with Emulator(config) as emu, aiohttp.ClientSession(headers={"Authorization": "Bearer t"}) as http:
        requests = [{"id": str(i), "method": "GET",
                     "url": f"/devices(deviceId='{entra_device_id(did(i))}')?$select=id,deviceId"} for i in range(19)]
        requests.append({"id": "bind", "method": "PATCH", "url": f"/groups/{STATIC}",
                         "headers": {"Content-Type": "application/json"}, "body": bind(oid(0), origin=emu.root_url)})
        async with http.post(f"{emu.base_url}/$batch", json={"requests": requests}) as response:
            answers = {r["id"]: r for r in (await response.json())["responses"]}
        assert all(answers[str(i)]["status"] == 200 and set(answers[str(i)]["body"]) ==
                   {"@odata.context", "id", "deviceId"} and answers[str(i)]["body"]["id"] == oid(i) for i in range(19))
        assert answers["bind"]["status"] == 204
        assert emu.tenant.directory.members(STATIC) == [oid(0)]
        assert emu.counters.directory_reads == 19 and emu.counters.directory_writes == 1


def test_whole_batch_ambiguous_faults_count_directory_commits() -> None:
    tenant = make(faults=1.0, fault_kinds=("ambiguous-504",))
    raw = orjson.dumps({"requests": [{"id": "1", "method": "PATCH", "url": f"/groups/{STATIC}",
                                      "body": bind(oid(1))}]})
    result = evaluate_batch(tenant, raw, "app", "rid", "crid")
    assert result.outcome.status == 504
    assert tenant.directory.members(STATIC) == [USER, oid(1)] and tenant.counters.ambiguous_commits == 1
