"""The seed call's request body as Graph accepts it: the assignment type, a known target type, and the
properties each target needs. Pure; ``Tenant`` answers 400 with the message this returns."""

from __future__ import annotations

from typing import Any

from ..guid import normalize_guid
from .state import ASSIGNMENT_TYPE

_GROUP_TYPES = frozenset({"microsoft.graph.groupAssignmentTarget", "microsoft.graph.exclusionGroupAssignmentTarget"})
_COLLECTION_TYPE = "microsoft.graph.configurationManagerCollectionAssignmentTarget"
TARGET_TYPES = frozenset(
    {
        "microsoft.graph.deviceAndAppManagementAssignmentTarget",  # the seed's (abstract) example type
        "microsoft.graph.allDevicesAssignmentTarget",
        "microsoft.graph.allLicensedUsersAssignmentTarget",
        _COLLECTION_TYPE,
        *_GROUP_TYPES,
    }
)
_FILTER_TYPES = frozenset({"none", "include", "exclude"})


def validate_body(body: Any) -> str | None:
    """The 400 message for an assignment body Graph would refuse, or None when it is acceptable."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    kind = body.get("@odata.type")
    if not isinstance(kind, str) or kind.lstrip("#") != ASSIGNMENT_TYPE[1:]:
        return f"@odata.type must be {ASSIGNMENT_TYPE}, not {kind!r}."
    target = body.get("target")
    if not isinstance(target, dict):
        return "The property 'target' is required and must be an object."
    target_kind = target.get("@odata.type")
    bare = target_kind.lstrip("#") if isinstance(target_kind, str) else None
    if bare not in TARGET_TYPES:
        return f"Unknown assignment target type {target_kind!r}."
    if bare in _GROUP_TYPES and normalize_guid(str(target.get("groupId") or "")) is None:
        return f"{target_kind} requires 'groupId', a group object id (GUID)."
    if bare == _COLLECTION_TYPE and not (isinstance(target.get("collectionId"), str) and target["collectionId"]):
        return f"{target_kind} requires 'collectionId'."
    filter_id = target.get("deviceAndAppManagementAssignmentFilterId")
    if filter_id is not None and normalize_guid(str(filter_id)) is None:
        return "deviceAndAppManagementAssignmentFilterId must be a GUID."
    filter_type = target.get("deviceAndAppManagementAssignmentFilterType")
    if filter_type is not None and filter_type not in _FILTER_TYPES:
        return "deviceAndAppManagementAssignmentFilterType must be none, include or exclude."
    return None
