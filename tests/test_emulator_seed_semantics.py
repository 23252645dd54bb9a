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
