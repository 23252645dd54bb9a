"""The directory's side of --add-to-group as pure functions: paths, bind URLs per cloud, Entra's answers."""

from __future__ import annotations

import orjson
import pytest

from bulk_assign.graph.directory import (
    MAX_BIND,
    bind_body,
    device_lookup_path,
    directory_object_url,
    is_already_member,
    member_ref_path,
    members_path,
    parse_members,
    ref_body,
    static_group_problem,
)
from bulk_assign.graph.operations import NO_ENTRA_DEVICE, UNKNOWN_DEVICE, AddToGroup, RemoveFromGroup, classify
from bulk_assign.graph.outcome import Attempt, Kind
from bulk_assign.models import InputRow, SkipReason
from bulk_assign.tenant import TenantDevice

G = "11111111-2222-3333-4444-555555555555"
O1 = "aaaaaaaa-0000-0000-0000-000000000001"
O2 = "aaaaaaaa-0000-0000-0000-000000000002"
E1 = "eeeeeeee-0000-0000-0000-000000000001"
D1 = "dddddddd-0000-0000-0000-000000000001"


@pytest.mark.parametrize(("graph_url", "host"), [
    ("https://graph.microsoft.com/beta", "https://graph.microsoft.com"),
    ("https://graph.microsoft.us/beta", "https://graph.microsoft.us"),
    ("https://dod-graph.microsoft.us/v1.0", "https://dod-graph.microsoft.us"),
    ("https://microsoftgraph.chinacloudapi.cn/beta", "https://microsoftgraph.chinacloudapi.cn"),
    ("http://127.0.0.1:8123/beta", "http://127.0.0.1:8123"),
])
def test_bind_urls_name_the_directory_objects_of_the_cloud_in_use(graph_url: str, host: str) -> None:
    assert directory_object_url(graph_url, O1) == f"{host}/v1.0/directoryObjects/{O1}"
    body = orjson.loads(bind_body(graph_url, [O1, O2]))
    assert body == {"members@odata.bind": [f"{host}/v1.0/directoryObjects/{O1}",
                                           f"{host}/v1.0/directoryObjects/{O2}"]}
    assert orjson.loads(ref_body(graph_url, O2)) == {"@odata.id": f"{host}/v1.0/directoryObjects/{O2}"}


def test_a_bind_carries_one_to_twenty_members() -> None:
    bind_body("https://graph.microsoft.com/beta", [O1] * MAX_BIND)
    with pytest.raises(ValueError):
        bind_body("https://graph.microsoft.com/beta", [O1] * (MAX_BIND + 1))
    with pytest.raises(ValueError):
        bind_body("https://graph.microsoft.com/beta", [])


@pytest.mark.parametrize("bad", ["../users", "AAAAAAAA-0000-0000-0000-000000000001", "x') or (1 eq 1", ""])
def test_only_normalised_guids_reach_a_path(bad: str) -> None:
    for build in (device_lookup_path, members_path, member_ref_path):
        with pytest.raises(ValueError):
            build(bad)
    with pytest.raises(ValueError):
        member_ref_path(G, bad)
    with pytest.raises(ValueError):
        directory_object_url("https://graph.microsoft.com/beta", bad)


def test_paths() -> None:
    assert device_lookup_path(E1) == f"/devices(deviceId='{E1}')?$select=id,deviceId"
    assert members_path(G) == f"/groups/{G}/members/microsoft.graph.device?$select=id,deviceId&$top=999"
    assert member_ref_path(G) == f"/groups/{G}/members/$ref"
    assert member_ref_path(G, O1) == f"/groups/{G}/members/{O1}/$ref"


def _error(status: int, code: str, message: str) -> Attempt:
    return classify(status, {}, orjson.dumps({"error": {"code": code, "message": message}}))


def test_entras_existing_member_refusal_is_told_apart_from_other_bad_requests() -> None:
    exists = _error(400, "Request_BadRequest", "One or more added object references already exist for the "
                    "following modified properties: 'members'.")
    assert exists.kind is Kind.PERMANENT and is_already_member(exists)
    assert not is_already_member(_error(400, "Request_BadRequest", "Invalid object identifier 'x'."))
    assert not is_already_member(_error(404, "Request_ResourceNotFound", "already exist"))


def test_members_pages_map_device_ids_to_object_ids() -> None:
    body = {"value": [{"@odata.type": "#microsoft.graph.device", "id": O1.upper(), "deviceId": E1},
                      {"id": O2},  # no deviceId: cannot be matched with an Autopilot device
                      {"id": "not-a-guid", "deviceId": E1}, "junk"],
            "@odata.nextLink": "https://graph.microsoft.com/beta/groups/x/members?$skiptoken=abc"}
    found, link = parse_members(body)
    assert found == {E1: O1}
    assert link is not None and link.endswith("$skiptoken=abc")
    assert parse_members({"value": []}) == ({}, None)


def test_dynamic_and_synced_groups_are_refused_with_what_to_do() -> None:
    dynamic = static_group_problem(G, {"groupTypes": ["DynamicMembership"], "membershipRule": "x"})
    assert dynamic is not None and "dynamic" in dynamic and "--group-tag" in dynamic
    synced = static_group_problem(G, {"groupTypes": [], "onPremisesSyncEnabled": True})
    assert synced is not None and "on-premises" in synced
    assert static_group_problem(G, {"groupTypes": ["Unified"], "onPremisesSyncEnabled": None}) is None


def test_the_precheck_reads_entra_ids_from_the_listing_and_members_from_the_group() -> None:
    op = AddToGroup(G)
    op.members = {E1: O1}
    assert op.precheck(InputRow(1, D1), None).error_code == UNKNOWN_DEVICE
    assert op.precheck(InputRow(1, D1), TenantDevice(D1)).error_code == NO_ENTRA_DEVICE
    member = InputRow(1, D1)
    assert op.precheck(member, TenantDevice(D1, entra_device_id=E1.upper())).skip is SkipReason.ALREADY_MEMBER
    assert member.value == E1  # normalised: what the worker resolves and the journal keeps
    other = InputRow(2, D1)
    assert op.precheck(other, TenantDevice(D1, entra_device_id=O2)).skip is None
    assert op.pin() == {"operation": "add-to-group", "group": G}


def test_undo_removes_only_current_members() -> None:
    op = RemoveFromGroup(G, of="/folder")
    op.members = {E1: O1}
    assert op.precheck(InputRow(1, D1, value=E1), None).skip is None
    assert op.precheck(InputRow(1, D1, value=O2), None).skip is SkipReason.NOT_MEMBER
    assert op.pin() == {"operation": "undo-add-to-group", "of": "/folder"}
