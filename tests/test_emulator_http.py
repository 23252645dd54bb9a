"""The emulator through real HTTP on 127.0.0.1: success shape, validation, auth, reads, throttling, admin."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yarl

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator

StartEmulator = Callable[..., Awaitable[Emulator]]
AUTH = {"Authorization": "Bearer test-token"}
DEVICE = "0f6e3b4e-1111-4aaa-8bbb-123456789abc"
GROUP = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
ASSIGNMENT = "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment"
SEED_EXAMPLE = {
    "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
    "target": {"@odata.type": "microsoft.graph.deviceAndAppManagementAssignmentTarget"},
}
CONCRETE_TARGETS: list[dict[str, Any]] = [
    {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": GROUP},
    {"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": GROUP},
    {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"},
    {"@odata.type": "#microsoft.graph.allLicensedUsersAssignmentTarget"},
    {"@odata.type": "#microsoft.graph.configurationManagerCollectionAssignmentTarget", "collectionId": "SMS00001"},
    {
        "@odata.type": "microsoft.graph.groupAssignmentTarget",  # without the '#'
        "groupId": GROUP,
        "deviceAndAppManagementAssignmentFilterId": "11111111-2222-3333-4444-555555555555",
        "deviceAndAppManagementAssignmentFilterType": "include",
    },
]


def assign_url(emu: Emulator, device: str = DEVICE) -> str:
    return f"{emu.base_url}/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"


def device_url(emu: Emulator, device: str = DEVICE) -> str:
    return f"{emu.base_url}/deviceManagement/windowsAutopilotDeviceIdentities/{device}"


def body_for(target: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": ASSIGNMENT, "target": target}


def jwt(claims: dict[str, Any]) -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'RS256', 'typ': 'JWT'})}.{seg(claims)}.bm90LWNoZWNrZWQ"


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = SEED_EXAMPLE, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=AUTH if headers is None else headers) as response:
        raw = await response.read()
        return response.status, dict(response.headers), json.loads(raw) if raw else None


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, headers=AUTH) as response:
        return response.status, await response.json()


def assert_graph_error(body: Any, code: str) -> None:
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    inner = error["innerError"]
    assert uuid.UUID(inner["request-id"]) and inner["client-request-id"] and inner["date"].startswith("20")


# -- success --------------------------------------------------------------------------------------------


async def test_seed_example_verbatim_creates_assignment(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    status, headers, body = await post(http, assign_url(emu), headers={**AUTH, "client-request-id": "abc-123"})
    assert status == 201
    assert body["@odata.type"] == ASSIGNMENT
    assert uuid.UUID(body["id"]).version == 4
    assert body["target"] == SEED_EXAMPLE["target"]
    assert body["source"] == "direct" and uuid.UUID(body["sourceId"])
    assert headers["client-request-id"] == "abc-123"
    assert uuid.UUID(headers["request-id"])
    assert headers["Content-Type"].startswith("application/json")
    assert emu.assignments(DEVICE) == [body]
    assert emu.counters.writes_committed == 1 and emu.counters.responses_by_status == {201: 1}


@pytest.mark.parametrize("target", CONCRETE_TARGETS, ids=lambda t: t["@odata.type"].rsplit(".", 1)[-1])
async def test_every_concrete_target_type(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, target: dict[str, Any]
) -> None:
    emu = await start_emulator()
    status, headers, body = await post(http, assign_url(emu), body_for(target))
    assert status == 201, body
    assert body["target"] == target
    assert uuid.UUID(headers["client-request-id"])  # generated when the client sent none


async def test_uppercase_guid_in_path_is_the_same_device(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    assert (await post(http, assign_url(emu, DEVICE.upper())))[0] == 201
    assert len(emu.assignments(DEVICE)) == 1


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Empty payload"),
        ([1, 2], "JSON object"),
        ({"target": SEED_EXAMPLE["target"]}, "@odata.type"),
        ({"@odata.type": "#microsoft.graph.somethingElse", "target": SEED_EXAMPLE["target"]}, "@odata.type"),
        ({"@odata.type": ASSIGNMENT}, "target"),
        (body_for({"@odata.type": "#microsoft.graph.userAssignmentTarget"}), "Unknown assignment target"),
        (body_for({"groupId": GROUP}), "Unknown assignment target"),
        (body_for({"@odata.type": "#microsoft.graph.groupAssignmentTarget"}), "groupId"),
        (body_for({"@odata.type": "#microsoft.graph.exclusionGroupAssignmentTarget", "groupId": "x"}), "groupId"),
        (body_for({"@odata.type": "#microsoft.graph.configurationManagerCollectionAssignmentTarget"}), "collectionId"),
        (
            body_for(
                {
                    "@odata.type": "#microsoft.graph.allDevicesAssignmentTarget",
                    "deviceAndAppManagementAssignmentFilterId": "nope",
                }
            ),
            "FilterId",
        ),
    ],
)
async def test_invalid_bodies_are_400(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, body: Any, fragment: str
) -> None:
    emu = await start_emulator()
    status, _, answer = await post(http, assign_url(emu), body)
    assert status == 400
    assert_graph_error(answer, "BadRequest")
    assert fragment in answer["error"]["message"]
    assert emu.counters.writes_committed == 0


@pytest.mark.parametrize(
    "raw_id",
    ["not-a-guid", "..%2F..%2Fusers", "../../users", "{0f6e3b4e-1111-4aaa-8bbb-123456789abc}", "0f6e3b4e1111"],
)
async def test_non_guid_device_ids_are_400(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, raw_id: str
) -> None:
    emu = await start_emulator()
    url = yarl.URL(assign_url(emu, raw_id), encoded=True)  # sent as written: no client-side '..' folding
    async with http.post(url, json=SEED_EXAMPLE, headers=AUTH) as response:
        assert response.status == 400
        assert_graph_error(await response.json(), "BadRequest")
    assert emu.counters.writes_committed == 0


async def test_ids_outside_the_inventory_are_404(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    other = "99999999-1111-4aaa-8bbb-123456789abc"
    emu = await start_emulator(inventory=frozenset({DEVICE}))
    status, _, body = await post(http, assign_url(emu, other))
    assert status == 404
    assert_graph_error(body, "ResourceNotFound")
    assert (await get(http, device_url(emu, other)))[0] == 404
    assert (await post(http, assign_url(emu)))[0] == 201


async def test_unknown_paths_and_wrong_methods(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator()
    for url in (f"{emu.base_url}/users", f"{emu.base_url}/deviceManagement/managedDevices", emu.base_url + "/"):
        async with http.get(url, headers=AUTH) as response:
            assert response.status == 404
            assert_graph_error(await response.json(), "ResourceNotFound")
    async with http.delete(assign_url(emu), headers=AUTH) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, POST"
    async with http.post(device_url(emu), json={}, headers=AUTH) as response:
        assert response.status == 405
    async with http.get(f"{emu.base_url}/$batch", headers=AUTH) as response:
        assert response.status == 405
    async with http.get(emu.base_url.replace("/beta", "/v1.0/anything"), headers=AUTH) as response:
        assert response.status == 404


# -- auth -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "test-token"],
)
async def test_missing_or_malformed_authorization_is_401(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, header: str | None
) -> None:
    emu = await start_emulator()
    headers = {} if header is None else {"Authorization": header}
    status, response_headers, body = await post(http, assign_url(emu), headers=headers)
    assert status == 401
    assert_graph_error(body, "InvalidAuthenticationToken")
    assert "WWW-Authenticate" in response_headers
    assert emu.counters.writes_committed == 0 and emu.counters.responses_by_status == {401: 1}


async def test_expired_jwt_is_401_and_a_valid_one_passes(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    expired = jwt({"appid": "app", "exp": int(time.time()) - 5})
    valid = jwt({"appid": "app", "exp": int(time.time()) + 3600})
    status, _, body = await post(http, assign_url(emu), headers={"Authorization": f"Bearer {expired}"})
    assert status == 401 and "expired" in body["error"]["message"]
    assert (await post(http, assign_url(emu), headers={"Authorization": f"Bearer {valid}"}))[0] == 201


async def test_configured_token_must_match(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(token="s3cret")
    assert (await post(http, assign_url(emu)))[0] == 401
    assert (await post(http, assign_url(emu), headers={"Authorization": "Bearer s3cret"}))[0] == 201


async def test_auth_is_checked_before_throttling(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(1, 60.0))
    assert (await post(http, assign_url(emu)))[0] == 201
    assert (await post(http, assign_url(emu)))[0] == 429
    assert (await post(http, assign_url(emu), headers={}))[0] == 401
    assert emu.counters.throttled == 1


# -- reads ----------------------------------------------------------------------------------------------


async def test_device_status_before_and_after_assignment(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    status, before = await get(http, device_url(emu))
    assert status == 200
    assert before["id"] == DEVICE
    assert before["deploymentProfileAssignmentStatus"] == "notAssigned"
    assert before["deploymentProfileAssignedDateTime"] == "0001-01-01T00:00:00Z"
    assert before["serialNumber"] == (await get(http, device_url(emu)))[1]["serialNumber"]
    assert (await post(http, assign_url(emu)))[0] == 201
    _, after = await get(http, device_url(emu))
    assert after["deploymentProfileAssignmentStatus"] == "assignedInSync"
    assert after["deploymentProfileAssignedDateTime"] > "2000"
    assert after["serialNumber"] == before["serialNumber"]
    other = "22222222-1111-4aaa-8bbb-123456789abc"
    assert (await get(http, device_url(emu, other)))[1]["serialNumber"] != before["serialNumber"]


async def test_list_assignments(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator()
    status, empty = await get(http, assign_url(emu))
    assert status == 200 and empty["value"] == [] and "@odata.context" in empty
    _, _, first = await post(http, assign_url(emu), body_for(CONCRETE_TARGETS[0]))
    _, _, second = await post(http, assign_url(emu), body_for(CONCRETE_TARGETS[2]))
    _, listed = await get(http, assign_url(emu))
    assert listed["value"] == [first, second]
    assert emu.counters.devices_assigned_twice == 1


async def test_reads_use_the_read_budget_not_the_write_budget(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(app_rate=Rate(1, 60.0), read_rate=Rate(3, 60.0))
    assert (await post(http, assign_url(emu)))[0] == 201
    assert [(await get(http, device_url(emu)))[0] for _ in range(4)] == [200, 200, 200, 429]
    assert (await post(http, assign_url(emu)))[0] == 429
    assert emu.counters.throttled == 2


# -- throttling -----------------------------------------------------------------------------------------


async def burst(http: aiohttp.ClientSession, emu: Emulator, n: int, headers: dict[str, str] = AUTH) -> list[int]:
    statuses = []
    for i in range(n):
        device = f"{i:08d}-1111-4aaa-8bbb-123456789abc"
        statuses.append((await post(http, assign_url(emu, device), headers=headers))[0])
    return statuses


@pytest.mark.parametrize("kind", ["sliding", "fixed", "bucket"])
async def test_write_budget_per_algorithm(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, kind: str
) -> None:
    emu = await start_emulator(app_rate=Rate(5, 30.0), tenant_rate=Rate(100, 30.0), throttle=kind)
    statuses = await burst(http, emu, 8)
    assert statuses == [201] * 5 + [429] * 3
    assert emu.counters.throttled == 3 and emu.counters.writes_committed == 5


async def test_budget_recovers_after_the_window(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    import asyncio

    emu = await start_emulator(app_rate=Rate(5, 1.0), retry_after="decimal")
    assert await burst(http, emu, 5) == [201] * 5
    status, headers, _ = await post(http, assign_url(emu))
    assert status == 429
    wait = float(headers["Retry-After"])
    assert 0.0 < wait <= 1.0
    await asyncio.sleep(wait + 0.02)  # exactly as long as the emulator said, and the budget is back
    assert (await post(http, assign_url(emu)))[0] == 201


async def test_app_budget_vs_tenant_budget(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(3, 60.0), tenant_rate=Rate(5, 60.0))
    app_a = {"Authorization": f"Bearer {jwt({'appid': 'app-a'})}"}
    app_b = {"Authorization": f"Bearer {jwt({'azp': 'app-b'})}"}
    assert await burst(http, emu, 4, app_a) == [201, 201, 201, 429]
    assert await burst(http, emu, 3, app_b) == [201, 201, 429]  # app b has room, the tenant does not


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("int", lambda v: v is not None and v.isdigit() and int(v) >= 1),
        ("decimal", lambda v: v is not None and len(v.split(".")[1]) == 3 and 0 < float(v) <= 60),
        ("list", lambda v: v is not None and v.endswith(",120") and int(v.split(",")[0]) >= 1),
        ("missing", lambda v: v is None),
    ],
)
async def test_retry_after_styles_on_429(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, style: str, check: Callable[[str | None], bool]
) -> None:
    emu = await start_emulator(app_rate=Rate(1, 60.0), retry_after=style)
    await post(http, assign_url(emu))
    status, headers, body = await post(http, assign_url(emu))
    assert status == 429
    assert check(headers.get("Retry-After")), headers.get("Retry-After")
    assert_graph_error(body, "TooManyRequests")
    inner = json.loads(body["error"]["message"])  # Intune's JSON-inside-message
    assert inner["_version"] == 3 and "Activity ID" in inner["Message"] and inner["RetryAfter"] is None


async def test_retry_after_is_the_real_wait(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(1, 30.0), retry_after="decimal")
    await post(http, assign_url(emu))
    _, headers, _ = await post(http, assign_url(emu))
    assert 29.0 < float(headers["Retry-After"]) <= 30.0


async def test_mixed_retry_after_varies(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(1, 60.0), retry_after="mixed", seed=3)
    await post(http, assign_url(emu))
    seen = set()
    for _ in range(40):
        _, headers, _ = await post(http, assign_url(emu))
        value = headers.get("Retry-After")
        seen.add("missing" if value is None else "list" if "," in value else "decimal" if "." in value else "int")
    assert seen == {"int", "decimal", "list", "missing"}


async def test_set_rates_mid_run(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(3, 60.0), tenant_rate=Rate(100, 60.0))
    assert await burst(http, emu, 4) == [201, 201, 201, 429]
    emu.set_rates(app=Rate(5, 60.0))
    assert await burst(http, emu, 3) == [201, 201, 429]  # the 3 accepted earlier still count
    emu.set_rates(tenant=Rate(2, 60.0))
    emu.set_rates(app=Rate(50, 60.0))
    assert await burst(http, emu, 1) == [429]  # tenant cut below what was already sent


# -- admin ----------------------------------------------------------------------------------------------


async def test_admin_counters_rates_and_reset(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(app_rate=Rate(2, 60.0))
    await burst(http, emu, 3)
    async with http.get(f"{emu.admin_url}/counters") as response:
        snap = await response.json()
    assert snap["requests"] == 3 and snap["items"] == 3 and snap["throttled"] == 1
    assert snap["responses_by_status"] == {"201": 2, "429": 1}
    assert snap == emu.counters.snapshot()
    async with http.post(f"{emu.admin_url}/rates", json={"app": "4/60s", "tenant": "100/1m"}) as response:
        assert response.status == 200
        assert await response.json() == {"app": "4/60s", "tenant": "100/60s"}
    assert await burst(http, emu, 3) == [201, 201, 429]
    async with http.post(f"{emu.admin_url}/rates", json={"app": "lots"}) as response:
        assert response.status == 400 and "not a rate" in (await response.json())["error"]
    async with http.post(f"{emu.admin_url}/reset") as response:
        assert (await response.json())["requests"] == 0
    assert emu.counters.requests == 0 and emu.counters.commits_per_device == {}
    assert len(emu.assignments(f"{0:08d}-1111-4aaa-8bbb-123456789abc")) == 2  # data survives a counter reset
    async with http.post(f"{emu.admin_url}/reset?state=1") as response:
        assert response.status == 200
    assert emu.assignments(f"{0:08d}-1111-4aaa-8bbb-123456789abc") == []
    assert await burst(http, emu, 1) == [201]  # throttle history forgotten too
    emu.reset_counters()
    assert emu.counters.snapshot()["writes_committed"] == 0


async def test_concurrent_burst_never_exceeds_the_budget(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    import asyncio

    emu = await start_emulator(app_rate=Rate(10, 60.0), tenant_rate=Rate(1000, 60.0))
    urls = [assign_url(emu, f"{i:08d}-3333-4aaa-8bbb-123456789abc") for i in range(40)]
    statuses = await asyncio.gather(*(post(http, url) for url in urls))
    assert sorted(s for s, _, _ in statuses) == [201] * 10 + [429] * 30
    assert emu.counters.writes_committed == 10 and emu.counters.throttled == 30


async def test_build_app_serves_on_its_own(http: aiohttp.ClientSession) -> None:
    """``build_app`` is what a process (or another runner) serves; it carries its own tenant."""
    from aiohttp import web

    from bulk_assign.emulator import EmulatorConfig, build_app

    runner = web.AppRunner(build_app(EmulatorConfig(token="tok")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/beta"
        url = f"{base}/deviceManagement/windowsAutopilotDeviceIdentities/{DEVICE}/deploymentProfile/assignments"
        async with http.post(url, json=SEED_EXAMPLE, headers={"Authorization": "Bearer tok"}) as response:
            assert response.status == 201
        async with http.get(base.replace("/beta", "/_emulator/counters")) as response:
            assert (await response.json())["writes_committed"] == 1
    finally:
        await runner.cleanup()


def test_public_names() -> None:
    import bulk_assign.emulator as package

    assert set(package.__all__) == {
        "FAULT_KINDS",
        "RETRY_AFTER_STYLES",
        "THROTTLE_KINDS",
        "Counters",
        "Emulator",
        "EmulatorConfig",
        "build_app",
    }
    assert all(hasattr(package, name) for name in package.__all__)


async def test_urls_need_a_running_emulator() -> None:
    from bulk_assign.errors import EmulatorError

    emu = Emulator()
    with pytest.raises(EmulatorError, match="not running"):
        _ = emu.base_url
    async with emu:
        assert emu.base_url.startswith("http://127.0.0.1:") and emu.base_url.endswith("/beta")
        assert emu.admin_url == emu.base_url.replace("/beta", "/_emulator")
    with pytest.raises(EmulatorError):
        _ = emu.admin_url
