"""Injected faults and $batch through real HTTP: what the client sees, and what the counters say happened."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator
from bulk_assign.emulator.batch import _content_key
from bulk_assign.emulator.faults import FaultPlan

StartEmulator = Callable[..., Awaitable[Emulator]]
AUTH = {"Authorization": "Bearer test-token"}
BODY = {
    "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
    "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"},
}
PATH = "/deviceManagement/windowsAutopilotDeviceIdentities/{}/deploymentProfile/assignments"


def device(i: int) -> str:
    return f"{i:08d}-2222-4aaa-8bbb-123456789abc"


async def send(http: aiohttp.ClientSession, emu: Emulator, dev: str) -> tuple[int | str, dict[str, str], bytes]:
    """POST one assignment; a dropped connection comes back as status 'reset'."""
    try:
        async with http.post(emu.base_url + PATH.format(dev), json=BODY, headers=AUTH) as response:
            return response.status, dict(response.headers), await response.read()
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "reset", {}, b""


# -- standalone faults ----------------------------------------------------------------------------------


async def test_503_fault_is_intune_shaped_with_retry_after_and_not_committed(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("503",), retry_after="decimal")
    status, headers, raw = await send(http, emu, device(1))
    assert status == 503
    assert headers["Retry-After"] == "1.000"
    error = json.loads(raw)["error"]
    assert error["code"] == "ServiceUnavailable" and json.loads(error["message"])["_version"] == 3
    assert emu.counters.writes_committed == 0 and emu.counters.faults_injected == {"503": 1}


async def test_504_fault_has_no_retry_after_and_is_not_committed(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("504",))
    status, headers, raw = await send(http, emu, device(1))
    assert status == 504 and "Retry-After" not in headers
    assert json.loads(raw)["error"]["code"] == "GatewayTimeout"
    assert emu.counters.writes_committed == 0 and emu.counters.ambiguous_commits == 0


async def test_reset_fault_is_a_client_error_and_not_committed(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("reset",))
    assert (await send(http, emu, device(1)))[0] == "reset"
    assert emu.counters.writes_committed == 0
    assert emu.counters.faults_injected == {"reset": 1}
    assert emu.counters.responses_by_status == {}  # nothing was delivered


async def test_latency_fault_delays_then_answers_normally(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("latency",))
    started = time.perf_counter()
    status, _, raw = await send(http, emu, device(1))
    elapsed = time.perf_counter() - started
    assert status == 201 and json.loads(raw)["target"] == BODY["target"]
    assert 0.19 < elapsed < 2.0
    assert emu.counters.writes_committed == 1 and emu.counters.faults_injected == {"latency": 1}


async def test_configured_latency_applies_to_every_response(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(latency_ms=150)
    started = time.perf_counter()
    assert (await send(http, emu, device(1)))[0] == 201
    assert time.perf_counter() - started >= 0.15


async def test_malformed_fault_commits_and_answers_201_with_broken_json(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("malformed",))
    status, headers, raw = await send(http, emu, device(1))
    assert status == 201 and headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert emu.counters.writes_committed == 1 and len(emu.assignments(device(1))) == 1
    assert emu.counters.ambiguous_commits == 0


@pytest.mark.parametrize(("kind", "seen"), [("ambiguous-504", 504), ("ambiguous-reset", "reset")])
async def test_ambiguous_faults_commit_but_the_client_sees_failure(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, kind: str, seen: int | str
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=(kind,))
    assert (await send(http, emu, device(1)))[0] == seen
    assert (await send(http, emu, device(1)))[0] == seen  # a blind re-send: a duplicate
    assert emu.counters.writes_committed == 2
    assert emu.counters.ambiguous_commits == 2
    assert emu.counters.devices_assigned_twice == 1
    assert emu.counters.faults_injected == {kind: 2}
    assert len(emu.assignments(device(1))) == 2


async def test_throttled_requests_are_not_also_faulted(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("503",), app_rate=Rate(1, 60.0))
    assert [(await send(http, emu, device(i)))[0] for i in range(3)] == [503, 429, 429]
    assert emu.counters.faults_injected == {"503": 1} and emu.counters.throttled == 2


async def outcomes(emu: Emulator, http: aiohttp.ClientSession, order: list[int]) -> dict[int, list[int | str]]:
    seen: dict[int, list[int | str]] = {}
    for i in order:
        seen.setdefault(i, []).append((await send(http, emu, device(i)))[0])
    return seen


async def test_same_seed_same_faults_regardless_of_order(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    kinds = ("503", "504", "malformed", "ambiguous-504")
    order = [i for i in range(30) for _ in range(2)]
    first = await outcomes(await start_emulator(faults=0.4, fault_kinds=kinds, seed=11), http, order)
    second = await outcomes(await start_emulator(faults=0.4, fault_kinds=kinds, seed=11), http, order[::-1])
    other = await outcomes(await start_emulator(faults=0.4, fault_kinds=kinds, seed=12), http, order)
    assert first == second
    assert first != other
    statuses = {s for v in first.values() for s in v}
    assert {201, 503, 504} <= statuses


async def test_fault_rate_is_roughly_the_probability(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(faults=0.2, fault_kinds=("503", "504"), seed=5, app_rate=Rate(10**6, 1.0))
    statuses = [(await send(http, emu, device(i)))[0] for i in range(200)]
    faulted = sum(s != 201 for s in statuses)
    assert 20 <= faulted <= 60
    assert sum(emu.counters.faults_injected.values()) == faulted


# -- $batch ---------------------------------------------------------------------------------------------


def item(item_id: str, dev: str, *, leading_slash: bool = True, body: Any = BODY) -> dict[str, Any]:
    url = PATH.format(dev) if leading_slash else PATH.format(dev).lstrip("/")
    return {"id": item_id, "method": "POST", "url": url, "headers": {"Content-Type": "application/json"}, "body": body}


async def batch(
    http: aiohttp.ClientSession, emu: Emulator, requests: list[dict[str, Any]]
) -> tuple[int | str, dict[str, Any]]:
    try:
        async with http.post(f"{emu.base_url}/$batch", json={"requests": requests}, headers=AUTH) as response:
            return response.status, await response.json()
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "reset", {}


async def test_batch_evaluates_each_item_and_maps_by_id(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    requests = [
        item("a", device(1)),
        item("b", device(2), leading_slash=False),
        item("c", "not-a-guid"),
        item("d", device(3), body={"@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment"}),
        {"id": "e", "method": "GET", "url": f"/deviceManagement/windowsAutopilotDeviceIdentities/{device(1)}"},
    ]
    status, body = await batch(http, emu, requests)
    assert status == 200
    by_id = {r["id"]: r for r in body["responses"]}
    assert {k: v["status"] for k, v in by_id.items()} == {"a": 201, "b": 201, "c": 400, "d": 400, "e": 200}
    assert by_id["a"]["body"]["target"] == BODY["target"]
    assert by_id["c"]["body"]["error"]["code"] == "BadRequest"
    assert by_id["e"]["body"]["deploymentProfileAssignmentStatus"] == "assignedInSync"
    assert emu.assignments(device(1)) == [by_id["a"]["body"]]
    counters = emu.counters
    assert (counters.requests, counters.batches, counters.items) == (1, 1, 5)
    assert counters.responses_by_status == {200: 2, 201: 2, 400: 2}


async def test_batch_limits_are_400_for_the_whole_batch(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator()
    too_many = [item(str(i), device(i)) for i in range(21)]
    duplicate = [item("1", device(1)), item("1", device(2))]
    for requests in (
        too_many,
        duplicate,
        [],
        [{"id": "1", "method": "POST"}],
        [item("1", device(1)) | {"url": "https://evil/x"}],
    ):
        status, body = await batch(http, emu, requests)
        assert status == 400, requests
        assert body["error"]["code"] == "BadRequest"
    assert emu.counters.writes_committed == 0
    assert (await batch(http, emu, [item(str(i), device(i)) for i in range(20)]))[0] == 200
    assert emu.counters.writes_committed == 20
    async with http.post(f"{emu.base_url}/$batch", data=b"{oops", headers=AUTH) as response:
        assert response.status == 400


async def test_batch_needs_auth(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator()
    async with http.post(f"{emu.base_url}/$batch", json={"requests": [item("1", device(1))]}) as response:
        assert response.status == 401
    assert emu.counters.writes_committed == 0


async def test_batch_items_are_throttled_individually_with_their_own_retry_after(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await start_emulator(app_rate=Rate(5, 60.0), retry_after="list")
    status, body = await batch(http, emu, [item(str(i), device(i)) for i in range(8)])
    assert status == 200
    throttled = [r for r in body["responses"] if r["status"] == 429]
    assert len(throttled) == 3
    for response in throttled:
        assert response["headers"]["Retry-After"].endswith(",120")
        assert response["body"]["error"]["code"] == "TooManyRequests"
    assert emu.counters.throttled == 3 and emu.counters.writes_committed == 5
    # items are evaluated in request order: the first five got the budget
    assert {r["id"] for r in body["responses"] if r["status"] == 201} == {"0", "1", "2", "3", "4"}


async def test_batch_responses_are_shuffled_reproducibly(
    start_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    requests = [item(str(i), device(i)) for i in range(20)]
    orders = []
    for _ in range(2):
        emu = await start_emulator(seed=9)
        orders.append([r["id"] for r in (await batch(http, emu, requests))[1]["responses"]])
    assert orders[0] == orders[1]
    assert orders[0] != [str(i) for i in range(20)]
    assert sorted(orders[0], key=int) == [str(i) for i in range(20)]


async def test_batch_item_faults(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=("malformed",))
    # whole-batch faults cannot be "malformed", so only items are faulted here
    status, body = await batch(http, emu, [item("1", device(1)), item("2", device(2))])
    assert status == 200
    for response in body["responses"]:
        assert response["status"] == 201 and isinstance(response["body"], str)
        with pytest.raises(json.JSONDecodeError):
            json.loads(response["body"])
    assert emu.counters.writes_committed == 2 and emu.counters.faults_injected == {"malformed": 2}


async def test_batch_item_ambiguous_504(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    requests = [item(str(i), device(i)) for i in range(10)]
    # find a seed where the batch as a whole is spared but some items get an ambiguous 504 (pure decisions)
    plan = FaultPlan(0, 0.5, ("ambiguous-504",))
    for seed in range(100):
        plan.seed = seed
        items = [plan.kind_for(device(i), 0, "item") for i in range(10)]
        if plan.kind_for(_content_key(requests), 0, "batch") is None and "ambiguous-504" in items:
            break
    emu = await start_emulator(faults=0.5, fault_kinds=("ambiguous-504",), seed=seed)
    status, body = await batch(http, emu, requests)
    assert status == 200
    timeouts = [r for r in body["responses"] if r["status"] == 504]
    assert timeouts and all("Retry-After" not in r["headers"] for r in timeouts)
    assert emu.counters.writes_committed == 10
    assert emu.counters.ambiguous_commits == len(timeouts) == items.count("ambiguous-504")


@pytest.mark.parametrize(("kind", "seen"), [("503", 503), ("504", 504), ("reset", "reset")])
async def test_whole_batch_faults_commit_nothing(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, kind: str, seen: int | str
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=(kind,))
    assert (await batch(http, emu, [item("1", device(1)), item("2", device(2))]))[0] == seen
    assert emu.counters.writes_committed == 0 and emu.counters.faults_injected == {kind: 1}


@pytest.mark.parametrize(("kind", "seen"), [("ambiguous-504", 504), ("ambiguous-reset", "reset")])
async def test_whole_batch_ambiguous_commits_every_item(
    start_emulator: StartEmulator, http: aiohttp.ClientSession, kind: str, seen: int | str
) -> None:
    emu = await start_emulator(faults=1.0, fault_kinds=(kind,))
    status, _ = await batch(http, emu, [item(str(i), device(i)) for i in range(5)])
    assert status == seen
    assert emu.counters.writes_committed == 5
    assert emu.counters.ambiguous_commits == 5  # counted once even when items were also answered 504
    assert emu.counters.faults_injected[kind] >= 1
    assert all(len(emu.assignments(device(i))) == 1 for i in range(5))
    assert 201 not in emu.counters.responses_by_status  # the client never saw the items


async def test_request_ids_are_unique(start_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    emu = await start_emulator()
    ids = {(await send(http, emu, device(i)))[1]["request-id"] for i in range(5)}
    assert len(ids) == 5 and all(uuid.UUID(i) for i in ids)
