"""``bulk-assign undo DIR --include-seed-assignments`` (issue 12, "Undo"): the seed call's assignments a folder
created and recorded are deleted, on the same engine; nothing else is.

Pure pieces first (the id grammar, the paths, the plan made from a folder's records, the DELETE batch
items), then the engine's DELETE against the emulator, then the CLI end to end under both readings of the
seed call (``seed_call_semantics`` "device" and "profile").
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_process import Cli, cli_in
from emulator_thread import threaded_emulator

from bulk_assign import BulkAssigner
from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import EmulatorConfig
from bulk_assign.graph.operations import DeleteSeedAssignment, seed_assignment_path
from bulk_assign.guid import AssignmentId, parse_assignment_id
from bulk_assign.models import DONE_SKIPS, AssignmentTarget, InputRow, SkipReason, Status
from bulk_assign.pipeline.batch import batch_payload
from bulk_assign.store.seed_undo import INVALID_ASSIGNMENT_ID, SeedRecord, plan_seed_undo, seed_records

FAST = Rate(100_000, 1.0)
G, G2 = "bbbbbbbb-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
OTHER = "bbbbbbbb-0000-4000-8000-0000000000ff"
P1 = "aaaaaaaa-0000-4000-8000-000000000001"
OLD = "aaaaaaaa-0000-4000-8000-0000000000ee"  # a profile known only from the inventory
A1 = "cccccccc-0000-4000-8000-000000000001"
DEVICES = "/deviceManagement/windowsAutopilotDeviceIdentities/"
PROFILES = "/deviceManagement/windowsAutopilotDeploymentProfiles/"


def did(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


# ------------------------------------------------------------------------------------------- pure pieces
def test_recorded_ids_pass_only_the_grammar_the_service_uses() -> None:
    assert parse_assignment_id(A1.upper()) == AssignmentId(A1)
    assert parse_assignment_id(f"{OLD}_{G}") == AssignmentId(f"{OLD}_{G}", OLD, G)
    assert parse_assignment_id(f"{OLD}_{G}_12") == AssignmentId(f"{OLD}_{G}_12", OLD, G)
    for bad in ("../../users", f"{A1}/../../users", f"{OLD}_{G}_", f"{OLD}_{G}_1234567", f"{OLD}_{G}/x",
                f"{{{A1}}}", f" {A1}", f"{A1}%2F", f"{OLD}_{G}_1?x=1", "", f"{OLD}-{G}", f"{OLD}_SMS00001"):
        assert parse_assignment_id(bad) is None, bad


def test_each_kind_of_id_goes_to_its_own_path_percent_encoded() -> None:
    assert seed_assignment_path(did(0), AssignmentId(A1)) == \
        f"{DEVICES}{did(0)}/deploymentProfile/assignments/{A1}"
    assert seed_assignment_path(did(0), AssignmentId(f"{OLD}_{G}_1", OLD, G)) == \
        f"{PROFILES}{OLD}/assignments/{OLD}_{G}_1"
    op = DeleteSeedAssignment(of="w1")
    assert op.method == "DELETE" and op.body(did(0)) is None and op.idempotent and op.gone is SkipReason.NOT_FOUND
    with pytest.raises(ValueError):  # a row whose id was never checked cannot reach a URL either
        op.path(did(0), InputRow(1, did(0), value="../../users"))
    with pytest.raises(ValueError):
        op.path("../../users", InputRow(1, "../../users", value=A1))


def test_the_plan_deletes_what_was_created_and_recorded_and_reports_the_rest() -> None:
    records = [
        SeedRecord(did(0), "succeeded", assignment_id=A1),  # per device
        SeedRecord(did(1), "succeeded", assignment_id=f"{OLD}_{G}"),  # a profile assignment...
        SeedRecord(did(2), "succeeded", assignment_id=f"{OLD}_{G}"),  # ...that another device's record names too
        SeedRecord(did(3), "succeeded", assignment_id=f"{OLD}_{G}_1"),
        SeedRecord(did(4), "skipped", "landed"),  # found by a read-back: its id was never seen
        SeedRecord(did(5), "succeeded"),  # a 2xx without a readable id
        SeedRecord(did(6), ""),  # sent, never decided
        SeedRecord(did(7), "succeeded", assignment_id="../../users"),  # tampered
        SeedRecord(did(8), "skipped", "already_assigned"),  # there before the folder
        SeedRecord(did(9), "failed"),
    ]
    plan = plan_seed_undo(records)
    assert (plan.per_device, plan.profile_assignments, plan.profile_devices, plan.deletes) == (1, 2, 3, 3)
    assert (plan.not_recorded, plan.refused) == (3, 1) and plan.profile_ids == {OLD: [f"{OLD}_{G}", f"{OLD}_{G}_1"]}
    by_device = {row.raw: row for row in plan.rows}
    assert set(by_device) == {did(n) for n in range(8)}
    writes = [r for r in plan.rows if r.skip is None and r.device_id is not None]
    assert [(r.device_id, r.value) for r in writes] == [(did(0), A1), (did(1), f"{OLD}_{G}"), (did(3), f"{OLD}_{G}_1")]
    shared = by_device[did(2)]
    assert shared.skip is SkipReason.SHARED_ASSIGNMENT and did(1) in (shared.error_message or "")
    assert {by_device[did(n)].skip for n in (4, 5, 6)} == {SkipReason.NOT_RECORDED}
    assert "never seen" in (by_device[did(4)].error_message or "")
    tampered = by_device[did(7)]
    assert tampered.device_id is None and tampered.value is None and tampered.error_code == INVALID_ASSIGNMENT_ID
    refusal = plan.refusal(Path("w1"))
    assert "created and recorded 3 assignment(s)" in refusal and "--include-seed-assignments" in refusal
    assert "for every device of the profile" in refusal and "3 more device(s)" in refusal
    warning = plan.shared_warning()
    assert warning is not None and "3 device record(s) name 2 profile assignment(s)" in warning
    assert "every device of the profile" in warning and plan_seed_undo(records[:1]).shared_warning() is None
    assert {SkipReason.NOT_RECORDED, SkipReason.SHARED_ASSIGNMENT, SkipReason.NOT_FOUND} <= DONE_SKIPS


def test_the_folders_merged_view_decides(tmp_path: Path) -> None:
    lines = [
        {"device_id": did(0), "status": "failed", "run_id": "r1"},
        {"device_id": did(1), "status": "succeeded", "assignment_id": A1, "run_id": "r1"},
        {"device_id": did(0), "status": "succeeded", "assignment_id": A1, "run_id": "r2"},  # the resume's wins
        {"device_id": did(1), "status": "skipped", "skip_reason": "already_succeeded", "run_id": "r2"},  # a pointer
        {"device_id": "junk", "status": "invalid", "run_id": "r2"},
    ]
    (tmp_path / "results.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    assert list(seed_records(tmp_path)) == [SeedRecord(did(0), "succeeded", assignment_id=A1),
                                            SeedRecord(did(1), "succeeded", assignment_id=A1)]


def test_delete_items_of_a_batch_carry_their_method_and_no_body() -> None:
    payload = orjson.loads(batch_payload([(f"{DEVICES}{did(0)}/deploymentProfile/assignments/{A1}", None)], "DELETE"))
    assert payload == {"requests": [{"id": "0", "method": "DELETE",
                                     "url": f"{DEVICES}{did(0)}/deploymentProfile/assignments/{A1}"}]}
    posted = orjson.loads(batch_payload([("/x", b'{"a":1}')]))["requests"][0]
    assert posted["method"] == "POST" and posted["body"] == {"a": 1}


# ----------------------------------------------------------------------------------- the engine's DELETEs
@pytest.mark.parametrize("batch", [False, True])
async def test_the_engine_deletes_with_the_operations_method_alone_or_batched(start_emulator: Any, tmp_path: Path,
                                                                                batch: bool) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST, read_rate=None)
    settings = Settings(graph_url=emu.base_url, rate=FAST, target=AssignmentTarget.parse(f"group:{G}"),
                        out_dir=tmp_path / "w1")
    async with BulkAssigner(settings, token_provider="t") as engine:
        records = [r async for r in engine.run([did(n) for n in range(5)])]
    ids = {r.device_id: r.assignment_id for r in records}
    gone = emu.tenant.store.assignments(did(4))[0]["id"]
    emu.tenant.store.remove(did(4), gone)  # someone removed one meanwhile: its DELETE answers 404
    rows = [InputRow(n, d, d, value=ids[d]) for n, d in enumerate(sorted(ids), start=1)]
    undo = Settings(graph_url=emu.base_url, rate=FAST, out_dir=tmp_path / "w1" / "undo", batch=batch)
    async with BulkAssigner(undo, token_provider="t", operation=DeleteSeedAssignment(of="w1")) as engine:
        undone = {r.device_id: r async for r in engine.run(rows)}
    assert emu.tenant.counters.assignments_deleted == 4 and emu.tenant.counters.batches == (1 if batch else 0)
    assert all(emu.tenant.store.assignments(did(n)) == [] for n in range(5))
    assert undone[did(4)].status is Status.SKIPPED and undone[did(4)].skip_reason is SkipReason.NOT_FOUND
    assert undone[did(4)].error_code == "ResourceNotFound"
    assert Counter(r.status for r in undone.values()) == {Status.SUCCEEDED: 4, Status.SKIPPED: 1}


# ------------------------------------------------------------------------------------------ the CLI, e2e
def _cli(cwd: Path) -> Cli:
    return cli_in(cwd)


def _records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _rewrite(results: Path, device: str, assignment_id: str) -> None:
    """Change what a folder recorded for ``device`` (its succeeded record's assignment_id)."""
    lines = _records(results)
    for line in lines:
        if line["device_id"] == device and line["status"] == "succeeded":
            line["assignment_id"] = assignment_id
    results.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def test_device_semantics_undo_deletes_exactly_what_the_folder_created_and_recorded(tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{did(i)}\n" for i in range(8)))
    (tmp_path / "one.csv").write_text(f"id\n{did(0)}\n")
    # seed 3: the first POST of devices 1 and 2 lands and answers 504; the read-back finds it: landed
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, faults=0.3,
                            fault_kinds=("ambiguous-504",), seed=3)
    with threaded_emulator(config) as emu:
        url, store, counters = emu.base_url, emu.tenant.store, emu.tenant.counters
        done = cli("run", "ids.csv", "--target", f"group:{G}", "--graph-url", url, "--out", "w1")
        assert done.returncode == 0, done.stderr
        w1 = {r["device_id"]: r for r in _records(tmp_path / "w1" / "results.jsonl")}
        assert {d for d, r in w1.items() if r.get("skip_reason") == "landed"} == {did(1), did(2)}
        emu.tenant.faults.probability = 0.0
        assert cli("run", "one.csv", "--target", f"group:{G2}", "--graph-url", url, "--out", "w2").returncode == 0
        other = [a["id"] for a in store.assignments(did(0)) if a["target"]["groupId"] == G2]  # w2's, not w1's
        _rewrite(tmp_path / "w1" / "results.jsonl", did(3), "../../users")  # tampered
        store.remove(did(4), w1[did(4)]["assignment_id"])  # someone removed one meanwhile
        before = (counters.requests, dict(counters.responses_by_status))

        refused = cli("undo", "w1", "--graph-url", url)
        assert refused.returncode == 2, refused.stderr
        assert "created and recorded 5 assignment(s)" in refused.stderr and "--include-seed-assignments" in \
            refused.stderr and "2 more device(s)" in refused.stderr
        assert counters.requests == before[0] and not (tmp_path / "w1" / "undo" / "results.jsonl").exists()

        undone = cli("undo", "w1", "--graph-url", url, "--include-seed-assignments")
        assert undone.returncode == 1, undone.stderr  # the tampered row is invalid
        assert counters.assignments_deleted == 4 and counters.deletes_per_device == {
            did(0): 1, did(5): 1, did(6): 1, did(7): 1}
        assert [a["id"] for a in store.assignments(did(0))] == other  # another folder's assignment survives
        assert all(len(store.assignments(did(n))) == 1 for n in (1, 2, 3))  # landed, tampered: not deleted
        assert all(store.assignments(did(n)) == [] for n in (4, 5, 6, 7))
        # the emulator saw the 4 DELETEs and the one 404, nothing else: the tampered id never reached a URL
        statuses = Counter(counters.responses_by_status) - Counter(before[1])
        assert counters.requests - before[0] == 5 and statuses == {204: 4, 404: 1}

        again = cli("undo", "w1", "--graph-url", url, "--include-seed-assignments", "--resume")
        assert again.returncode == 1, again.stderr
        assert counters.requests - before[0] == 5 and counters.assignments_deleted == 4  # nothing sent again
    records = {r["device_id"]: r for r in _records(tmp_path / "w1" / "undo" / "results.jsonl")}
    reasons = Counter(r["skip_reason"] for r in records.values() if r["status"] == "skipped")
    assert reasons == {"not_recorded": 2, "not_found": 1}
    assert records[did(1)]["skip_reason"] == "not_recorded" and "never seen" in records[did(1)]["error_message"]
    assert records[did(4)]["skip_reason"] == "not_found"
    assert records[did(3)]["status"] == "invalid" and records[did(3)]["error_code"] == INVALID_ASSIGNMENT_ID
    assert "../../users" in records[did(3)]["error_message"]
    assert sum(r["status"] == "succeeded" for r in records.values()) == 4
    summary = orjson.loads((tmp_path / "w1" / "undo" / "summary.json").read_bytes())
    assert summary["requests_sent"] == 0  # the resume's own


def test_profile_semantics_says_first_that_one_assignment_serves_many_devices_and_deletes_each_once(
        tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    (tmp_path / "ids.csv").write_text("id\n" + "".join(f"{did(i)}\n" for i in range(6)))
    inventory = {did(i): {"serialNumber": f"S{i}", "deploymentProfileId": OLD if i < 4 else P1} for i in range(6)}
    config = EmulatorConfig(app_rate=FAST, tenant_rate=FAST, read_rate=None, seed_call_semantics="profile",
                            profiles=(P1,), inventory=inventory)
    with threaded_emulator(config) as emu:
        url, rollout, counters = emu.base_url, emu.tenant.rollout, emu.tenant.counters
        before = rollout.add_assignment(P1, {"@odata.type": "#microsoft.graph.groupAssignmentTarget",
                                             "groupId": OTHER})  # someone else's, before the folder
        done = cli("run", "ids.csv", "--target", f"group:{G}", "--graph-url", url, "--out", "w1")
        assert done.returncode == 0, done.stderr
        assert [a["id"] for a in rollout.assignments[OLD]] == [f"{OLD}_{G}", *(f"{OLD}_{G}_{n}" for n in (1, 2, 3))]
        # a service that answers every device of a profile with its one group assignment: two records share it
        _rewrite(tmp_path / "w1" / "results.jsonl", did(1), f"{OLD}_{G}")

        refused = cli("undo", "w1", "--graph-url", url)
        assert refused.returncode == 2 and "created and recorded 5 assignment(s)" in refused.stderr
        assert "for every device of the profile" in refused.stderr and counters.profile_assignments_deleted == 0

        undone = cli("undo", "w1", "--graph-url", url, "--include-seed-assignments")
        assert undone.returncode == 0, undone.stderr
        note = "6 device record(s) name 5 profile assignment(s)"
        assert note in undone.stderr and "removes that group from that profile for every device of the profile" in \
            undone.stderr
        assert note in (tmp_path / "w1" / "undo" / "run.log").read_text()
        assert counters.profile_assignments_deleted == 5 and counters.assignments_deleted == 0
        assert [a["id"] for a in rollout.assignments[OLD]] == [f"{OLD}_{G}_1"]  # the one no record names
        assert rollout.assignments[P1] == [before]  # someone else's stays
        again = cli("undo", "w1", "--graph-url", url, "--include-seed-assignments", "--resume")
        assert again.returncode == 0 and counters.profile_assignments_deleted == 5
    records = {r["device_id"]: r for r in _records(tmp_path / "w1" / "undo" / "results.jsonl")}
    shared = records[did(1)]
    assert shared["status"] == "skipped" and shared["skip_reason"] == "shared_assignment"
    assert did(0) in shared["error_message"] and f"{OLD}_{G}" in shared["error_message"]
    assert sum(r["status"] == "succeeded" for r in records.values()) == 5 and len(records) == 6
