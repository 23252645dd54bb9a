"""``--group-tag T --group G --profile P`` (issue 12): the documented route end to end on the emulator.

The profile is assigned to the dynamic group exactly once (read before write, also after a write that may
have landed), the devices get the tag, and Intune's status reaches assignedInSync through the group.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulk_assign import BulkAssigner, UsageError
from bulk_assign.config import Rate, Settings
from bulk_assign.graph.outcome import Attempt, Kind
from bulk_assign.models import Status
from bulk_assign.pipeline.profile_group import RECORD_NAME, ProfileToGroup, tag_in_rule

FAST = Rate(100_000, 1.0)
P1, P2 = "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002"
G = "bbbbbbbb-0000-4000-8000-000000000001"


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


async def run(emu: Any, out: Path | None, ids: list[str], **options: Any) -> Any:
    settings = Settings(graph_url=emu.base_url, rate=FAST, out_dir=out, **options)
    async with BulkAssigner(settings, token_provider="t") as engine:
        records = [r async for r in engine.run(ids)]
    return records, engine.summary


async def test_the_profile_reaches_tagged_devices_through_the_group_and_is_assigned_once(
        start_emulator: Any, tmp_path: Path) -> None:
    tenant = {did(i): {"serialNumber": f"S{i}"} for i in range(30)}
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None, inventory=tenant,
                               profiles=(P1, P2), dynamic_groups={G: "wave1"})
    ids = [did(i) for i in range(30)]
    route = {"group_tag": "wave1", "group": G.upper(), "profile": "{" + P2 + "}"}
    records, summary = await run(emu, tmp_path / "w1", ids, **route)
    assert {r.status for r in records} == {Status.SUCCEEDED}
    assert summary.profile_assignment["created"] is True and summary.profile_assignment["group"] == G
    assert orjson.loads((tmp_path / "w1" / RECORD_NAME).read_bytes())["profile"] == P2
    tenant_state = emu.tenant
    assert tenant_state.counters.profile_assignments == 1 and tenant_state.counters.tag_writes == 30
    statuses = {tenant_state.device_record(d)["deploymentProfileAssignmentStatus"] for d in ids}
    assert statuses == {"assignedInSync"}
    assert {tenant_state.profile_of(d) for d in ids} == {P2}

    records, summary = await run(emu, tmp_path / "w2", ids, **route)  # a rerun of the finished wave
    assert summary.profile_assignment["created"] is False
    assert tenant_state.counters.profile_assignments == 1 and tenant_state.counters.tag_writes == 30
    assert {r.skip_reason.value for r in records if r.skip_reason} == {"already_tagged"}

    with pytest.raises(UsageError, match="profile"):
        await run(emu, tmp_path / "w1", ids, group_tag="wave1", group=G, profile=P1, resume=True)


async def test_a_missing_group_or_profile_stops_before_any_write(start_emulator: Any) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None,
                               inventory={did(0): {"serialNumber": "S"}}, profiles=(P1,), dynamic_groups={G: "t"})
    other = "cccccccc-0000-4000-8000-000000000009"
    with pytest.raises(UsageError, match="no such group"):
        await run(emu, None, [did(0)], group_tag="t", group=other, profile=P1)
    with pytest.raises(UsageError, match="no such deployment profile"):
        await run(emu, None, [did(0)], group_tag="t", group=G, profile=other)
    assert emu.tenant.counters.tag_writes == 0 and emu.tenant.counters.profile_assignments == 0


def test_route_options_go_together() -> None:
    with pytest.raises(UsageError, match="--profile goes with"):
        Settings.build(profile=P1, group_tag="t")
    with pytest.raises(UsageError, match="not an object id"):
        Settings.build(group_tag="t", group="all-devices")


# ----------------------------------------------------------------------------------------- the one write
def answer(status: int, body: Any = None) -> Attempt:
    kinds = {200: Kind.SUCCESS, 201: Kind.SUCCESS, 404: Kind.PERMANENT, 504: Kind.TRANSIENT}
    return Attempt(kinds[status], status, body=body, maybe_committed=status == 504)


async def test_a_write_that_may_have_landed_is_read_again_not_resent() -> None:
    assignments: list[dict[str, Any]] = []
    posts: list[str] = []

    async def get(url: str) -> Attempt:
        if url.endswith("/assignments"):
            return answer(200, {"value": list(assignments)})
        return answer(200, {"id": G, "groupTypes": ["DynamicMembership"],
                            "membershipRule": '(device.devicePhysicalIds -any (_ -eq "[OrderID]:t"))'})

    async def post(url: str, body: bytes) -> Attempt:
        posts.append(url)
        assignments.append({"id": "a1", "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget",
                                                   "groupId": G}})
        return answer(504)  # it landed, but the answer was lost

    step = ProfileToGroup("http://127.0.0.1:1/beta", P1, G, "t", get=get, post=post, attempts=5, out_dir=None)
    await step.check_group()
    info = await step.ensure()
    assert len(posts) == 1 and info == {"profile": P1, "group": G, "created": False, "id": "a1"}


@pytest.mark.parametrize(("group", "problem"), [
    ({"groupTypes": [], "membershipRule": None}, "not a dynamic group"),
    ({"groupTypes": ["DynamicMembership"], "onPremisesSyncEnabled": True}, "synced from on-premises"),
])
async def test_a_static_or_synced_group_is_refused(group: dict[str, Any], problem: str) -> None:
    async def get(url: str) -> Attempt:
        return answer(200, {"id": G, **group})

    async def post(url: str, body: bytes) -> Attempt:
        raise AssertionError("no write")

    with pytest.raises(UsageError, match=problem):
        await ProfileToGroup("http://127.0.0.1:1/beta", P1, G, "t", get=get, post=post, attempts=3,
                             out_dir=None).check_group()


def test_the_rule_check_matches_the_documented_form() -> None:
    assert tag_in_rule('(device.devicePhysicalIds -any (_ -eq "[OrderID]:Wave1"))', "wave1")
    assert not tag_in_rule('(device.devicePhysicalIds -any (_ -eq "[OrderID]:Wave2"))', "wave1")


def test_undo_removes_the_profile_assignment_this_folder_created_and_only_that(tmp_path: Path) -> None:
    from cli_process import cli_in
    from emulator_thread import threaded_emulator

    from bulk_assign.emulator import EmulatorConfig

    cli = cli_in(tmp_path)
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{did(i)}\n" for i in range(6)))
    tenant = {did(i): {"serialNumber": f"S{i}"} for i in range(6)}
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, profiles=(P1, P2),
                            dynamic_groups={G: "wave1"}, inventory=tenant)
    with threaded_emulator(config) as emu:
        url = emu.base_url
        route = ["--group-tag", "wave1", "--group", G, "--graph-url", url]
        assert cli("run", "ids.csv", *route, "--profile", P2, "--out", "w1").returncode == 0
        assert cli("run", "ids.csv", *route, "--profile", P2, "--out", "w2").returncode == 0  # found, not created
        assert len(emu.tenant.rollout.assignments[P2]) == 1
        kept = cli("undo", "w2", "--graph-url", url)  # w2 created nothing: the assignment stays
        assert kept.returncode == 0, kept.stderr
        assert len(emu.tenant.rollout.assignments[P2]) == 1
        undone = cli("undo", "w1", "--graph-url", url)
        assert undone.returncode == 0, undone.stderr
        assert "removed" in undone.stdout and emu.tenant.rollout.assignments[P2] == []
        assert {emu.tenant.device_record(did(i))["groupTag"] for i in range(6)} == {""}
        record = tmp_path / "w1" / RECORD_NAME
        record.write_bytes(orjson.dumps({"profile": P2, "group": G, "created": True, "id": "../../groups/x"}))
        tampered = cli("undo", "w1", "--graph-url", url, "--resume")
    assert tampered.returncode == 2 and "not a profile assignment this tool recorded" in tampered.stderr
