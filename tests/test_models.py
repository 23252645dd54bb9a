"""Pure tests for GUID normalisation, assignment targets, the request body and the result record."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bulk_assign.errors import UsageError
from bulk_assign.guid import is_guid, normalize_guid
from bulk_assign.models import (
    ASSIGNMENT_ODATA_TYPE,
    RESULT_COLUMNS,
    AssignmentTarget,
    DeviceResult,
    SkipReason,
    Status,
    assignment_body,
)

GROUP = "#microsoft.graph.groupAssignmentTarget"
EXCLUDE = "#microsoft.graph.exclusionGroupAssignmentTarget"
ALL_DEVICES = "#microsoft.graph.allDevicesAssignmentTarget"
ALL_USERS = "#microsoft.graph.allLicensedUsersAssignmentTarget"
COLLECTION = "#microsoft.graph.configurationManagerCollectionAssignmentTarget"

G = "0f8fad5b-d9cb-469f-a165-70867728950e"
F = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


# ------------------------------------------------------------------------------------------------ GUIDs
HEX = "0123456789abcdefABCDEF"


@st.composite
def guids_any_case(draw: st.DrawFn) -> str:
    """A GUID of random hex digits (any version) in random mixed case."""
    groups = [draw(st.text(HEX, min_size=n, max_size=n)) for n in (8, 4, 4, 4, 12)]
    return "-".join(groups)


WS = st.text(" \t\r\n", max_size=3)


@given(guid=guids_any_case(), braces=st.booleans(), lead=WS, trail=WS, inner_lead=WS, inner_trail=WS)
def test_any_guid_in_any_case_with_braces_and_whitespace_normalises_to_lower_case(
    guid: str, braces: bool, lead: str, trail: str, inner_lead: str, inner_trail: str
) -> None:
    text = f"{{{inner_lead}{guid}{inner_trail}}}" if braces else guid
    result = normalize_guid(lead + text + trail)
    assert result == guid.lower()
    assert result is not None and is_guid(result)
    assert normalize_guid(result) == result  # idempotent


@given(u=st.uuids())
def test_uuid_module_forms_normalise(u: uuid.UUID) -> None:
    assert normalize_guid(str(u).upper()) == str(u)
    assert normalize_guid("{" + str(u) + "}") == str(u)
    assert normalize_guid(u.hex) is None  # 32 digits without dashes is not the accepted spelling
    assert normalize_guid(u.urn) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "{}",
        "../../users",
        f"{G}/../../users",
        f"../{G}",
        f"{G}/",
        f"{G}?x=1",
        f"{G}#x",
        f"{G}%2F",
        f"{G}0",  # one digit too many in the last group
        f"0{G}",
        G[:-1],  # one digit short
        G.replace("-", ""),
        G.replace("-", "_"),
        "0f8fad5-bd9cb-469f-a165-70867728950e",  # wrong group lengths, same total
        "0f8fad5bd-9cb-469f-a165-70867728950e",
        "0f8fad5g-d9cb-469f-a165-70867728950e",  # 'g' is not hex
        "{" + G,
        G + "}",
        "{{" + G + "}}",
        "(" + G + ")",
        G + " x",
        f"{G}\x00",
        "０f8fad5b-d9cb-469f-a165-70867728950e",  # full-width digit zero
        "٠f8fad5b-d9cb-469f-a165-70867728950e",  # Arabic-Indic digit zero
        f"urn:uuid:{G}",
    ],
)
def test_non_guids_never_normalise(text: str) -> None:
    assert normalize_guid(text) is None


@given(guid=guids_any_case(), extra=st.text(min_size=1, max_size=5).filter(lambda s: s.strip() != ""))
def test_guid_with_extra_characters_never_normalises(guid: str, extra: str) -> None:
    assert normalize_guid(guid + extra) is None
    assert normalize_guid(extra + guid) is None


@given(lengths=st.tuples(*(st.integers(0, 14) for _ in range(5))).filter(lambda t: t != (8, 4, 4, 4, 12)))
def test_wrong_group_lengths_never_normalise(lengths: tuple[int, ...]) -> None:
    text = "-".join("a" * n for n in lengths)
    assert normalize_guid(text) is None


@given(text=st.text(max_size=60))
def test_whatever_normalises_is_a_bare_lower_case_guid(text: str) -> None:
    result = normalize_guid(text)
    if result is not None:
        assert is_guid(result)
        assert "/" not in result and "." not in result
        assert result == text.strip().strip("{}").strip().lower()


def test_is_guid_only_accepts_the_normalised_form() -> None:
    assert is_guid(G)
    assert not is_guid(G.upper())
    assert not is_guid("{" + G + "}")
    assert not is_guid(" " + G)
    assert not is_guid("../../users")


# ------------------------------------------------------------------------------------------------ targets
def test_parse_group_normalises_the_guid() -> None:
    target = AssignmentTarget.parse(f"group:{{{G.upper()}}}")
    assert target.odata_type == GROUP
    assert target.group_id == G
    assert target.collection_id is None
    assert target.filter_id is None
    assert target.filter_type == "none"


def test_parse_strips_surrounding_whitespace() -> None:
    assert AssignmentTarget.parse(f"  exclude-group:{G}  ") == AssignmentTarget(odata_type=EXCLUDE, group_id=G)


@pytest.mark.parametrize(
    ("spec", "odata_type"),
    [("all-devices", ALL_DEVICES), ("all-licensed-users", ALL_USERS), ("all-devices:", ALL_DEVICES)],
)
def test_parse_targets_without_id(spec: str, odata_type: str) -> None:
    target = AssignmentTarget.parse(spec)
    assert target.odata_type == odata_type
    assert target.group_id is None and target.collection_id is None


def test_parse_collection_upper_cases_the_id() -> None:
    target = AssignmentTarget.parse("collection: sms00001 ")
    assert target.odata_type == COLLECTION
    assert target.collection_id == "SMS00001"


def test_parse_with_filter() -> None:
    target = AssignmentTarget.parse(f"group:{G}", f"{{{F.upper()}}}:exclude")
    assert target.filter_id == F
    assert target.filter_type == "exclude"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("groups:" + G, "unknown target kind 'groups'"),
        ("", "unknown target kind ''"),
        ("group:", "group needs a group object id"),
        ("group:../../users", "group needs a group object id"),
        ("group:" + G + "x", "group needs a group object id"),
        ("exclude-group:nope", "exclude-group needs a group object id"),
        ("all-devices:" + G, "all-devices takes no value"),
        ("all-licensed-users:x", "all-licensed-users takes no value"),
        ("collection:", "collection needs a collection id"),
        ("collection:SMS-0001", "collection needs a collection id"),
        ("collection:../x", "collection needs a collection id"),
        ("collection:" + "A" * 33, "collection needs a collection id"),
    ],
)
def test_parse_rejects_bad_targets_with_a_usage_error(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match="--target") as info:
        AssignmentTarget.parse(spec)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_target_kind_in_any_case_and_a_bare_guid_suggests_group() -> None:
    """Hardening #11: ``Group:`` is accepted; a bare GUID is refused with the spelling that was meant."""
    assert AssignmentTarget.parse(f"Group:{G}") == AssignmentTarget.parse(f"group:{G}")
    assert AssignmentTarget.parse("ALL-Devices") == AssignmentTarget.parse("all-devices")
    with pytest.raises(UsageError, match=f"--target group:{G}"):
        AssignmentTarget.parse(G.upper())


def test_unknown_kind_lists_the_choices() -> None:
    with pytest.raises(UsageError) as info:
        AssignmentTarget.parse("everyone")
    assert "group:<id>, exclude-group:<id>, all-devices, all-licensed-users, collection:<id>" in str(info.value)


@pytest.mark.parametrize(
    "filter_spec", [G, f"{G}:both", f"{G}:none", f"{G}:Include", "nope:include", f":{G}", f"{G}x:include"]
)
def test_parse_rejects_bad_filters(filter_spec: str) -> None:
    with pytest.raises(UsageError, match="--filter"):
        AssignmentTarget.parse(f"group:{G}", filter_spec)


@pytest.mark.parametrize(
    "fields",
    [
        {"odata_type": GROUP},  # group without its id
        {"odata_type": GROUP, "group_id": G.upper()},  # not normalised
        {"odata_type": GROUP, "group_id": "../../users"},
        {"odata_type": ALL_DEVICES, "group_id": G},  # id on a type that takes none
        {"odata_type": GROUP, "group_id": G, "collection_id": "SMS00001"},
        {"odata_type": COLLECTION},
        {"odata_type": COLLECTION, "collection_id": "a/b"},
        {"odata_type": ALL_DEVICES, "filter_id": F},  # filter id without include/exclude
        {"odata_type": ALL_DEVICES, "filter_type": "include"},  # filter type without id
        {"odata_type": ALL_DEVICES, "filter_id": F.upper(), "filter_type": "include"},
        {"odata_type": "#microsoft.graph.somethingElse"},
        {"odata_type": "microsoft.graph.groupAssignmentTarget", "group_id": G},  # needs the leading '#'
        {"odata_type": ALL_DEVICES, "extra": 1},
    ],
)
def test_direct_construction_is_validated(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AssignmentTarget(**fields)  # type: ignore[arg-type]


def test_targets_are_frozen() -> None:
    target = AssignmentTarget.parse("all-devices")
    with pytest.raises(ValidationError):
        target.group_id = G  # type: ignore[misc]


def test_to_graph_group_with_filter() -> None:
    target = AssignmentTarget.parse(f"group:{G}", f"{F}:include")
    assert target.to_graph() == {
        "@odata.type": GROUP,
        "groupId": G,
        "deviceAndAppManagementAssignmentFilterId": F,
        "deviceAndAppManagementAssignmentFilterType": "include",
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all-devices", {"@odata.type": ALL_DEVICES}),
        ("all-licensed-users", {"@odata.type": ALL_USERS}),
        (f"exclude-group:{G}", {"@odata.type": EXCLUDE, "groupId": G}),
        ("collection:SMS00001", {"@odata.type": COLLECTION, "collectionId": "SMS00001"}),
    ],
)
def test_to_graph_shapes(spec: str, expected: dict[str, str]) -> None:
    assert AssignmentTarget.parse(spec).to_graph() == expected


def test_assignment_body() -> None:
    target = AssignmentTarget.parse(f"group:{G}")
    body = assignment_body(target)
    assert body == {
        "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
        "target": {"@odata.type": GROUP, "groupId": G},
    }
    assert body["@odata.type"] == ASSIGNMENT_ODATA_TYPE
    assert "id" not in body
    json.dumps(body)  # JSON-serialisable as is


def test_matches_same_target_with_or_without_hash() -> None:
    target = AssignmentTarget.parse(f"group:{G}")
    assert target.matches({"@odata.type": GROUP, "groupId": G})
    assert target.matches({"@odata.type": GROUP.lstrip("#"), "groupId": G, "extra": 1})


@pytest.mark.parametrize(
    "graph_target",
    [
        None,
        "group",
        [],
        {},
        {"@odata.type": EXCLUDE, "groupId": G},  # other type, same group
        {"@odata.type": GROUP, "groupId": F},  # other group
        {"@odata.type": GROUP},  # no group
        {"@odata.type": GROUP, "groupId": G, "collectionId": "SMS00001"},
    ],
)
def test_matches_rejects_other_targets(graph_target: object) -> None:
    assert not AssignmentTarget.parse(f"group:{G}").matches(graph_target)


def test_matches_collection_and_all_devices() -> None:
    collection = AssignmentTarget.parse("collection:SMS00001")
    assert collection.matches({"@odata.type": COLLECTION, "collectionId": "SMS00001"})
    assert not collection.matches({"@odata.type": COLLECTION, "collectionId": "SMS00002"})
    everyone = AssignmentTarget.parse("all-devices")
    assert everyone.matches({"@odata.type": ALL_DEVICES, "groupId": None, "collectionId": ""})
    assert not everyone.matches({"@odata.type": ALL_DEVICES, "groupId": G})


def test_matches_compares_the_assignment_filter() -> None:
    target = AssignmentTarget.parse(f"group:{G}", f"{F}:include")
    assert target.matches(target.to_graph())
    assert not target.matches({"@odata.type": GROUP, "groupId": G})
    assert not target.matches({**target.to_graph(), "deviceAndAppManagementAssignmentFilterType": "exclude"})
    plain = AssignmentTarget.parse(f"group:{G}")
    assert plain.matches({"@odata.type": GROUP, "groupId": G.upper(), "deviceAndAppManagementAssignmentFilterId": None,
                          "deviceAndAppManagementAssignmentFilterType": "none"})
    assert not plain.matches(target.to_graph())


@pytest.mark.parametrize(
    ("spec", "filter_spec", "text"),
    [
        (f"group:{G.upper()}", None, f"group:{G}"),
        (f"exclude-group:{G}", f"{F}:exclude", f"exclude-group:{G} filter {F}:exclude"),
        ("all-devices", None, "all-devices"),
        ("all-licensed-users", f"{F}:include", f"all-licensed-users filter {F}:include"),
        ("collection:abc00012", None, "collection:ABC00012"),
    ],
)
def test_describe(spec: str, filter_spec: str | None, text: str) -> None:
    assert AssignmentTarget.parse(spec, filter_spec).describe() == text


@given(guid=guids_any_case(), kind=st.sampled_from(["group", "exclude-group"]))
def test_describe_round_trips_through_parse(guid: str, kind: str) -> None:
    target = AssignmentTarget.parse(f"{kind}:{guid}")
    assert AssignmentTarget.parse(target.describe()) == target


# ------------------------------------------------------------------------------------------------ records
DESIGN_COLUMNS = [
    "device_id", "status", "skip_reason", "http_status", "error_code", "error_message", "assignment_id",
    "attempts", "request_id", "client_request_id", "started_at", "finished_at", "duration_ms", "source_line",
    "run_id", "serial_number", "previous_group_tag",
]


def test_result_columns_follow_design_md() -> None:
    assert list(RESULT_COLUMNS) == DESIGN_COLUMNS


def test_to_dict_is_plain_and_ordered() -> None:
    result = DeviceResult(
        device_id=G,
        status=Status.SKIPPED,
        skip_reason=SkipReason.ALREADY_ASSIGNED,
        http_status=201,
        attempts=2,
        source_line=7,
        run_id="abc",
    )
    data = result.to_dict()
    assert list(data) == DESIGN_COLUMNS
    assert data["status"] == "skipped" and type(data["status"]) is str
    assert data["skip_reason"] == "already_assigned" and type(data["skip_reason"]) is str
    assert data["http_status"] == 201
    assert data["attempts"] == 2
    assert data["source_line"] == 7
    assert data["error_code"] is None
    assert json.loads(json.dumps(data)) == data


def test_to_dict_defaults() -> None:
    data = DeviceResult(device_id=G, status=Status.FAILED).to_dict()
    assert data == {
        "device_id": G, "status": "failed", "skip_reason": None, "http_status": None, "error_code": None,
        "error_message": None, "assignment_id": None, "attempts": 0, "request_id": None,
        "client_request_id": None, "started_at": None, "finished_at": None, "duration_ms": None,
        "source_line": None, "run_id": None, "serial_number": None, "previous_group_tag": None,
    }


def test_status_and_skip_reason_values_follow_design_md() -> None:
    assert {s.value for s in Status} == {"succeeded", "failed", "invalid", "skipped", "planned"}
    assert {s.value for s in SkipReason} == {"duplicate", "already_succeeded", "already_assigned", "already_tagged",
                                             "changed_since", "landed", "already_member", "not_member",
                                             "not_recorded", "shared_assignment", "not_found"}


@pytest.mark.parametrize("now", [1_764_583_200.0, 1_764_583_200.0005, 1_764_583_200.999, 1_764_583_201.9999999, 0.25])
def test_utc_now_is_iso_with_milliseconds_and_z(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """The cached date part and the table of milliseconds give what strftime and truncation would."""
    from datetime import UTC, datetime

    import bulk_assign.models as models

    monkeypatch.setattr(models.time, "time", lambda: now)
    second = int(now)
    expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{int((now - second) * 1000):03d}Z"
    assert models.utc_now() == expected
