"""``seed_call_semantics``: what the seed call ``POST .../{id}/deploymentProfile/assignments`` does.

``device`` (the default) stores an assignment on the device. ``profile`` is what public sources infer: the
target is added as a group assignment to the device's *current* profile (404 when it has none), so a second
device of the same profile adds the same group again, and the device's own listing shows its profile's
assignments. Unit tests call ``Tenant.evaluate`` on a fake clock."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from fake_time import FakeTime

from bulk_assign.config import Rate
from bulk_assign.emulator import EmulatorConfig
from bulk_assign.emulator.directory import entra_device_id, object_id
from bulk_assign.emulator.operations import Tenant
from bulk_assign.emulator.responses import Outcome

DEVICES = "/deviceManagement/windowsAutopilotDeviceIdentities"
PROFILES = "/deviceManagement/windowsAutopilotDeploymentProfiles"
P1, P2 = "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"
OLD = "aaaaaaaa-0000-4000-8000-0000000000ff"  # a profile from before, known only from the inventory
GROUP = "11111111-2222-3333-4444-555555555555"
STATIC = "5a5a5a5a-0000-4000-8000-000000000001"
DYNAMIC = "6b6b6b6b-0000-4000-8000-000000000001"
FAST = Rate(100_000, 1.0)


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def body(group: str = GROUP, kind: str = "groupAssignmentTarget") -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
            "target": {"@odata.type": f"#microsoft.graph.{kind}", "groupId": group}}


def make(time: FakeTime | None = None, **config: Any) -> Tenant:
    tenant_file = {did(0): {"deploymentProfileId": OLD}, did(1): {"deploymentProfileId": OLD}, did(2): {},
                   did(3): {"groupTag": "wave1"}, did(4): {}}
    values: dict[str, Any] = {"inventory": tenant_file, "seed_call_semantics": "profile", "profiles": (P1, P2),
                              "dynamic_groups": {DYNAMIC: "wave1"}, "static_groups": {STATIC: frozenset()},
                              "app_rate": FAST, "tenant_rate": FAST}
    values.update(config)
    return Tenant(EmulatorConfig(**values), clock=(time or FakeTime()).clock)


def call(tenant: Tenant, method: str, path: str, payload: Any = None) -> Outcome:
    raw = orjson.dumps(payload) if payload is not None else None
    return tenant.evaluate(method, path, raw, "app", "rid", "crid")


def seed(tenant: Tenant, device: str, payload: dict[str, Any] | None = None) -> Outcome:
    return call(tenant, "POST", f"{DEVICES}/{device}/deploymentProfile/assignments", payload or body())


def listed(tenant: Tenant, device: str) -> Outcome:
    return call(tenant, "GET", f"{DEVICES}/{device}/deploymentProfile/assignments")


def test_device_semantics_is_the_default_and_unchanged() -> None:
    assert EmulatorConfig().seed_call_semantics == "device"
    tenant = make(seed_call_semantics="device")
    created = seed(tenant, did(2))  # no profile: the device semantics does not care
    assert created.status == 201 and uuid.UUID(created.body["id"]).version == 4
    assert listed(tenant, did(2)).body["value"] == [created.body]
    assert tenant.rollout.assignments == {P1: [], P2: []} and tenant.counters.profile_group_assignments == {}
    assert tenant.profile_of(did(2)) == tenant.profile_id


def test_a_device_without_a_profile_answers_404_and_spends_nothing() -> None:
    tenant = make(app_rate=Rate(1, 60.0))
    refused = seed(tenant, did(2))
    assert refused.status == 404 and refused.body["error"]["code"] == "ResourceNotFound"
    assert "has no deployment profile" in refused.body["error"]["message"]
    assert listed(tenant, did(2)).status == 404
    assert tenant.counters.writes_committed == 0
    assert seed(tenant, did(0)).status == 201  # the write budget (1 per minute) was not spent by the 404


def test_the_target_joins_the_devices_current_profile_once_per_device() -> None:
    tenant = make()
    first = seed(tenant, did(0))
    assert first.status == 201
    assert first.body == {"@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
                          "id": f"{OLD}_{GROUP}", "target": body()["target"], "source": "direct", "sourceId": OLD}
    second = seed(tenant, did(1))  # same profile: the same group assignment again
    assert second.status == 201 and second.body["id"] == f"{OLD}_{GROUP}_1"
    assert [a["id"] for a in tenant.rollout.assignments[OLD]] == [f"{OLD}_{GROUP}", f"{OLD}_{GROUP}_1"]
    assert listed(tenant, did(0)).body["value"] == [first.body, second.body]
    counters = tenant.counters
    assert counters.commits_per_device == {did(0): 1, did(1): 1} and counters.devices_assigned_twice == 0
    assert counters.profile_group_assignments == {f"{OLD}_{GROUP}": 2} and counters.profile_group_duplicates == 1
    assert tenant.store.assignments(did(0)) == []  # nothing is stored on the device itself


def test_a_profile_reached_through_a_group_is_the_one_extended() -> None:
    tenant = make()
    assert call(tenant, "POST", f"{PROFILES}/{P2}/assignments", body(DYNAMIC)).status == 201
    assert tenant.profile_of(did(3)) == P2
    created = seed(tenant, did(3), body(STATIC))
    assert created.status == 201 and created.body["id"] == f"{P2}_{STATIC}" and created.body["sourceId"] == P2
    assert [a["target"]["groupId"] for a in call(tenant, "GET", f"{PROFILES}/{P2}/assignments").body["value"]] == \
        [DYNAMIC, STATIC]
    assert tenant.counters.profile_group_assignments == {f"{P2}_{DYNAMIC}": 1, f"{P2}_{STATIC}": 1}


def test_the_new_group_assignment_reaches_the_groups_members() -> None:
    time = FakeTime()
    tenant = make(time, status_delay=60.0)
    member = object_id(entra_device_id(did(4)))
    bind = {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/directoryObjects/{member}"]}
    assert call(tenant, "PATCH", f"/groups/{STATIC}", bind).status == 204
    assert tenant.device_record(did(4))["deploymentProfileAssignmentStatus"] == "notAssigned"
    assert seed(tenant, did(0), body(STATIC)).status == 201
    assert tenant.device_record(did(4))["deploymentProfileAssignmentStatus"] == "pending"
    assert tenant.profile_of(did(4)) == OLD


@pytest.mark.parametrize("kind", ["allDevicesAssignmentTarget", "exclusionGroupAssignmentTarget"])
def test_other_targets_are_appended_too_and_reach_no_group(kind: str) -> None:
    tenant = make()
    payload = body(STATIC, kind)
    if kind == "allDevicesAssignmentTarget":
        del payload["target"]["groupId"]
    created = seed(tenant, did(0), payload)
    assert created.status == 201 and created.body["target"] == payload["target"]
    assert created.body["id"] == (f"{OLD}_{STATIC}" if "groupId" in payload["target"] else f"{OLD}_{kind}")
    assert tenant.rollout.groups_of(OLD) == set()


def test_write_budget_and_faults_apply_as_for_the_device_semantics() -> None:
    tenant = make(app_rate=Rate(1, 60.0))
    assert seed(tenant, did(0)).status == 201
    assert seed(tenant, did(1)).status == 429
    ambiguous = make(faults=1.0, fault_kinds=("ambiguous-504",))
    assert seed(ambiguous, did(0)).status == 504
    assert ambiguous.counters.ambiguous_commits == 1 and len(ambiguous.rollout.assignments[OLD]) == 1
    lost = make(faults=1.0, fault_kinds=("503",))
    assert seed(lost, did(0)).status == 503 and lost.rollout.assignments.get(OLD, []) == []
    malformed = make(faults=1.0, fault_kinds=("malformed",))
    answer = seed(malformed, did(0))
    assert answer.status == 201 and isinstance(answer.body, bytes) and malformed.counters.commits_per_device == {
        did(0): 1}


# -- undo of the seed call: DELETE .../{id}/deploymentProfile/assignments/{assignmentId} ---------------------
def delete(tenant: Tenant, device: str, assignment: str) -> Outcome:
    return call(tenant, "DELETE", f"{DEVICES}/{device}/deploymentProfile/assignments/{assignment}")


def test_device_semantics_deletes_the_devices_own_assignment_and_only_it() -> None:
    tenant = make(seed_call_semantics="device", app_rate=Rate(3, 60.0))
    mine, other = seed(tenant, did(2)).body["id"], seed(tenant, did(4)).body["id"]
    assert delete(tenant, did(4), mine).status == 404  # another device's id is not this device's assignment
    gone = delete(tenant, did(2), mine)
    assert gone.status == 204 and gone.body == b"" and listed(tenant, did(2)).body["value"] == []
    assert [a["id"] for a in tenant.store.assignments(did(4))] == [other]
    again = delete(tenant, did(2), mine)
    assert again.status == 404 and again.body["error"]["code"] == "ResourceNotFound"
    assert tenant.counters.assignments_deleted == 1 and tenant.counters.deletes_per_device == {did(2): 1}
    assert tenant.counters.snapshot()["assignments_deleted"] == 1
    assert delete(tenant, did(4), other).status == 429  # a write: the budget (3 a minute) is spent
    assert call(tenant, "POST", f"{DEVICES}/{did(2)}/deploymentProfile/assignments/{mine}", body()).status == 405
    assert delete(tenant, "not-a-guid", mine).status == 400


def test_a_delete_meets_the_fault_plan_like_other_writes() -> None:
    lost = make(seed_call_semantics="device", faults=1.0, fault_kinds=("503",))
    lost.faults.probability = 0.0
    assignment = seed(lost, did(2)).body["id"]
    lost.faults.probability = 1.0
    assert delete(lost, did(2), assignment).status == 503 and len(lost.store.assignments(did(2))) == 1
    ambiguous = make(seed_call_semantics="device", faults=1.0, fault_kinds=("ambiguous-504",))
    ambiguous.faults.probability = 0.0
    assignment = seed(ambiguous, did(2)).body["id"]
    ambiguous.faults.probability = 1.0
    assert delete(ambiguous, did(2), assignment).status == 504  # deleted, but the client is not told
    assert ambiguous.store.assignments(did(2)) == [] and ambiguous.counters.ambiguous_commits == 1
    assert delete(ambiguous, did(2), assignment).status == 404  # the resend: gone already


def test_profile_semantics_deletes_from_the_devices_current_profile() -> None:
    tenant = make()
    first, second = seed(tenant, did(0)).body["id"], seed(tenant, did(1)).body["id"]  # both of profile OLD
    assert delete(tenant, did(2), first).status == 404  # a device without a profile has no such assignment
    assert delete(tenant, did(1), first).status == 204  # the path navigates to the device's profile: OLD
    assert [a["id"] for a in tenant.rollout.assignments[OLD]] == [second]
    assert delete(tenant, did(0), first).status == 404 and tenant.counters.assignments_deleted == 1
    # the profiles' own route deletes too, and is counted apart
    assert call(tenant, "DELETE", f"{PROFILES}/{OLD}/assignments/{second}").status == 204
    assert tenant.rollout.assignments[OLD] == [] and tenant.counters.profile_assignments_deleted == 1


def test_a_repeat_after_a_delete_gets_an_unused_id() -> None:
    tenant = make()
    ids = [seed(tenant, did(n)).body["id"] for n in (0, 1)]
    assert call(tenant, "DELETE", f"{PROFILES}/{OLD}/assignments/{ids[0]}").status == 204
    again = seed(tenant, did(0)).body["id"]
    assert again not in ids and len({a["id"] for a in tenant.rollout.assignments[OLD]}) == 2
