"""The documented route in the emulated tenant: deployment profiles assigned to groups, and dynamic groups
that match a group tag with Intune's rule ``(device.devicePhysicalIds -any (_ -eq "[OrderID]:TAG"))``.

What the emulator answers (Tenant routes here, after its auth, budget and fault checks):

- ``GET /groups/{id}``: the group, ``DynamicMembership`` with its rule; unknown ids answer Entra's 404
  ``Request_ResourceNotFound``;
- ``GET /deviceManagement/windowsAutopilotDeploymentProfiles/{id}``: the profile, or 404;
- ``GET`` and ``POST .../windowsAutopilotDeploymentProfiles/{id}/assignments``: a profile's group assignments;
  a POST adds one (201), a second one for the same group too (the real service is not known to refuse it,
  so a client must read before it writes); ``GET`` and ``DELETE .../assignments/{assignmentId}`` (204, or
  404 ``ResourceNotFound``): one of them;
- a device whose group tag matches a dynamic group that a profile is assigned to, or whose Entra object is a
  member of a static group one is assigned to (directory.py), is *targeted* (its status goes ``pending`` ->
  ``assignedInSync``, see ``state.Store``), and its profile is the oldest-created of those.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..guid import normalize_guid
from .responses import Outcome, graph_error

PROFILES_PATH = "/deviceManagement/windowsAutopilotDeploymentProfiles"
PROFILE_TYPE = "#microsoft.graph.azureADWindowsAutopilotDeploymentProfile"
GROUP_TARGET = "#microsoft.graph.groupAssignmentTarget"
_GROUP = re.compile(r"/groups/([^/]+)/?", re.IGNORECASE)
_PROFILE = re.compile(re.escape(PROFILES_PATH) + r"/([^/]+)/?", re.IGNORECASE)
_ASSIGNMENTS = re.compile(re.escape(PROFILES_PATH) + r"/([^/]+)/assignments/?", re.IGNORECASE)
_ASSIGNMENT = re.compile(re.escape(PROFILES_PATH) + r"/([^/]+)/assignments/([^/]+)/?", re.IGNORECASE)


def tag_rule(tag: str) -> str:
    """The dynamic membership rule Intune documents for an Autopilot group tag."""
    return f'(device.devicePhysicalIds -any (_ -eq "[OrderID]:{tag}"))'


class Rollout:
    """Profiles (in creation order), their group assignments, and the dynamic groups' tags."""

    def __init__(self, profiles: tuple[str, ...], dynamic_groups: dict[str, str], created: str) -> None:
        self.profiles = {p: {"@odata.type": PROFILE_TYPE, "id": p, "displayName": f"Profile {n}",
                             "createdDateTime": created} for n, p in enumerate(profiles, start=1)}
        self.groups = dict(dynamic_groups)  # group id -> the tag its rule matches
        self.assignments: dict[str, list[dict[str, Any]]] = {p: [] for p in profiles}

    def handles(self, path: str) -> bool:
        return bool(_GROUP.fullmatch(path) or _PROFILE.fullmatch(path) or _ASSIGNMENTS.fullmatch(path)
                    or _ASSIGNMENT.fullmatch(path))

    def profile_for_tag(self, tag: str) -> str | None:
        """The oldest-created profile assigned to a dynamic group matching ``tag`` (None: the tag brings none)."""
        return self.profile_for_groups(self.groups_for_tag(tag))

    def groups_for_tag(self, tag: str) -> set[str]:
        """The dynamic groups whose rule matches ``tag``."""
        return {g for g, t in self.groups.items() if t == tag} if tag else set()

    def profile_for_groups(self, groups: set[str] | frozenset[str]) -> str | None:
        """The oldest-created profile assigned to any of ``groups`` (dynamic or static), or None."""
        if not groups:
            return None
        for profile, assigned in self.assignments.items():  # creation order
            if any(included_group(a["target"]) in groups for a in assigned):
                return profile
        return None

    def groups_of(self, profile: str) -> set[str]:
        """The groups a profile is assigned to (exclusions left out)."""
        return {g for a in self.assignments.get(profile, ()) if (g := included_group(a["target"])) is not None}

    def assignments_of(self, profile: str) -> list[dict[str, Any]]:
        return [dict(a) for a in self.assignments.get(profile, ())]

    def add_assignment(self, profile: str, target: dict[str, Any]) -> dict[str, Any]:
        """Append a group assignment to ``profile`` and return it; the id is Graph's ``{profileId}_{groupId}``,
        with ``_n`` for the n-th repeat (the service is not known to refuse a repeat). A profile the tenant
        was not configured with (an inventory's ``deploymentProfileId``) gets its list here, after the others."""
        key = assignment_key(profile, target)
        assigned = self.assignments.setdefault(profile, [])
        same = sum(assignment_key(profile, a["target"]) == key for a in assigned)
        new_id = key + (f"_{same}" if same else "")
        if same and any(a["id"] == new_id for a in assigned):  # after a delete (undo): the next unused number
            taken = {a["id"] for a in assigned}
            new_id = next(f"{key}_{n}" for n in range(same + 1, same + len(taken) + 2) if f"{key}_{n}" not in taken)
        assignment = {"id": new_id, "target": target, "source": "direct", "sourceId": profile}
        assigned.append(assignment)
        return dict(assignment)

    def tags_of(self, profile: str) -> set[str]:
        """The tags whose devices a profile reaches through its group assignments."""
        return {self.groups[g] for g in self.groups_of(profile) if g in self.groups}

    def evaluate(self, method: str, path: str, body: Any, rid: str, crid: str) -> tuple[Outcome, str | None]:
        """The answer, and the profile a POST just assigned (so the tenant can target its devices)."""
        if (match := _GROUP.fullmatch(path)) is not None:
            answer = self._group(match.group(1), rid, crid) if method == "GET" else _not_allowed(method, rid, crid)
            return answer, None
        if (match := _ASSIGNMENT.fullmatch(path)) is not None:
            return self._one_assignment(method, match.group(1), match.group(2), rid, crid), None
        if (match := _ASSIGNMENTS.fullmatch(path)) is not None:
            profile = self._known(match.group(1))
            if profile is None:
                return _no_profile(match.group(1), rid, crid), None
            if method == "GET":
                return Outcome(200, {"value": list(self.assignments[profile])}), None
            if method == "POST":
                return self._assign(profile, body, rid, crid)
            return _not_allowed(method, rid, crid), None
        match = _PROFILE.fullmatch(path)
        assert match is not None
        profile = self._known(match.group(1))
        if method != "GET":
            return _not_allowed(method, rid, crid), None
        return (Outcome(200, dict(self.profiles[profile])) if profile else _no_profile(match.group(1), rid, crid)), None

    def find(self, profile: str, assignment_id: str) -> dict[str, Any] | None:
        """The group assignment ``assignment_id`` of ``profile`` (one the tenant was configured with, or one an
        inventory's ``deploymentProfileId`` names that got assignments here), or None."""
        return next((a for a in self.assignments.get(profile, ()) if a["id"] == assignment_id), None)

    def _one_assignment(self, method: str, raw_profile: str, assignment_id: str, rid: str, crid: str) -> Outcome:
        """``GET`` or ``DELETE .../assignments/{id}`` (undo removes the one a folder created)."""
        profile = normalize_guid(raw_profile)
        found = self.find(profile, assignment_id) if profile is not None else None
        if profile is None or found is None:
            return graph_error(404, "ResourceNotFound", f"assignment '{assignment_id[:80]}' was not found.", rid, crid)
        if method == "GET":
            return Outcome(200, dict(found))
        if method == "DELETE":
            self.assignments[profile].remove(found)
            return Outcome(204, b"")
        return _not_allowed(method, rid, crid)

    def _known(self, raw: str) -> str | None:
        profile = normalize_guid(raw)
        return profile if profile in self.profiles else None

    def _group(self, raw: str, rid: str, crid: str) -> Outcome:
        group = normalize_guid(raw)
        if group is None or group not in self.groups:
            return graph_error(404, "Request_ResourceNotFound",
                               f"Resource '{raw[:80]}' does not exist or one of its queried reference-property "
                               "objects are not present.", rid, crid)
        return Outcome(200, {"id": group, "displayName": f"Autopilot {self.groups[group]}",
                             "groupTypes": ["DynamicMembership"], "membershipRule": tag_rule(self.groups[group]),
                             "membershipRuleProcessingState": "On", "onPremisesSyncEnabled": None,
                             "securityEnabled": True, "mailEnabled": False})

    def _assign(self, profile: str, body: Any, rid: str, crid: str) -> tuple[Outcome, str | None]:
        if isinstance(body, bytes | bytearray):
            try:
                body = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                body = None
        target = body.get("target") if isinstance(body, dict) else None
        group = normalize_guid(str(target.get("groupId") or "")) if isinstance(target, dict) else None
        if not isinstance(target, dict) or str(target.get("@odata.type", "")).lstrip("#") != GROUP_TARGET[1:] \
                or group is None:
            return graph_error(400, "BadRequest", "A profile assignment needs a groupAssignmentTarget with a groupId.",
                               rid, crid), None
        return Outcome(201, self.add_assignment(profile, {"@odata.type": GROUP_TARGET, "groupId": group})), profile


def included_group(target: dict[str, Any]) -> str | None:
    """The group a target brings the profile to: a ``groupAssignmentTarget``'s, normalised; else None."""
    if str(target.get("@odata.type", "")).lstrip("#") != GROUP_TARGET[1:]:
        return None
    return normalize_guid(str(target.get("groupId") or ""))


def assignment_key(profile: str, target: dict[str, Any]) -> str:
    """``{profileId}_{groupId}``: what a group assignment's id is made of (for a target without a group, its
    collection id or its type), and how the counters tell a repeated group assignment."""
    group = target.get("groupId")
    normalized = normalize_guid(str(group)) if group else None
    other = normalized or target.get("collectionId") or str(target.get("@odata.type", "")).rsplit(".", 1)[-1]
    return f"{profile}_{other}"


def _no_profile(raw: str, rid: str, crid: str) -> Outcome:
    return graph_error(404, "ResourceNotFound", f"windowsAutopilotDeploymentProfile '{raw[:80]}' was not found.",
                       rid, crid)


def _not_allowed(method: str, rid: str, crid: str) -> Outcome:
    return graph_error(405, "MethodNotAllowed", f"The HTTP method '{method[:20]}' is not allowed for this resource.",
                       rid, crid)
