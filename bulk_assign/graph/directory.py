"""Entra's side of the documented route, as pure functions: URLs, bodies and answers for group membership.

Why a module of its own: the directory is another service behind Graph, with its own budget, its own error
codes (``Request_ResourceNotFound``, ``Request_BadRequest``) and its own URL conventions. An Autopilot
device's ``azureActiveDirectoryDeviceId`` is the Entra device's ``deviceId``; a group's members are bound by
the device object's ``id``, through a ``directoryObjects`` URL on the Graph host of the cloud in use.

The directory budget (Microsoft's published Entra limits, "Identity and access service limits" on
https://learn.microsoft.com/graph/throttling-limits): per app and tenant, 3,000 writes per 2 min 30 s, and
3,500 resource units per 10 s in the smallest tenants (5,000 and 8,000 in larger ones). A GET costs one
unit (a members page three, less one with ``$select``); each ``$batch`` item is counted on its own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from ..guid import checked_guid, normalize_guid
from .outcome import Attempt

MAX_BIND = 20  # references per PATCH members@odata.bind (Graph's documented limit)
ALREADY_MEMBER_TEXT = "added object references already exist"  # in Entra's 400 for an existing member
MEMBER_PAGE = 999  # the largest $top the directory accepts


def device_lookup_path(entra_device_id: str) -> str:
    """``GET /devices(deviceId='...')``: the Entra device object of an Autopilot device, by its ``deviceId``."""
    return f"/devices(deviceId='{checked_guid(entra_device_id)}')?$select=id,deviceId"


def group_path(group_id: str) -> str:
    return f"/groups/{checked_guid(group_id)}"


def members_path(group_id: str) -> str:
    """The group's device members, one page of the largest size, only the two ids we match on."""
    return f"/groups/{checked_guid(group_id)}/members/microsoft.graph.device?$select=id,deviceId&$top={MEMBER_PAGE}"


def member_ref_path(group_id: str, object_id: str | None = None) -> str:
    """``POST .../members/$ref`` adds one member; ``DELETE .../members/{id}/$ref`` removes one."""
    if object_id is None:
        return f"/groups/{checked_guid(group_id)}/members/$ref"
    return f"/groups/{checked_guid(group_id)}/members/{checked_guid(object_id)}/$ref"


def directory_object_url(graph_url: str, object_id: str) -> str:
    """The ``@odata.id`` of a directory object on the Graph host in use (a national cloud has its own, and the
    directory refuses a reference to another cloud's host). Always ``v1.0``, as Microsoft's examples bind."""
    parts = urlsplit(graph_url)
    return f"{parts.scheme}://{parts.netloc}/v1.0/directoryObjects/{checked_guid(object_id)}"


def bind_body(graph_url: str, object_ids: list[str]) -> bytes:
    """``PATCH /groups/{id}``: add up to 20 members in one directory write."""
    if not 0 < len(object_ids) <= MAX_BIND:
        raise ValueError(f"1 to {MAX_BIND} members per request")
    return orjson.dumps({"members@odata.bind": [directory_object_url(graph_url, o) for o in object_ids]})


def ref_body(graph_url: str, object_id: str) -> bytes:
    """``POST /groups/{id}/members/$ref``: add one member."""
    return orjson.dumps({"@odata.id": directory_object_url(graph_url, object_id)})


def is_already_member(attempt: Attempt) -> bool:
    """Entra's 400 for a member that is there already. For a PATCH of several it refuses the whole request
    without saying which: the caller splits it into single adds to find out. The code is Graph's generic
    ``Request_BadRequest``, so the message has to be read; it is Entra's fixed English text."""
    return attempt.http_status == 400 and ALREADY_MEMBER_TEXT in (attempt.error_message or "").lower()


def object_id_of(body: Any) -> str | None:
    """The directory object id from a ``GET /devices(deviceId=...)`` answer (None if it carries none)."""
    return normalize_guid(str(body.get("id") or "")) if isinstance(body, dict) else None


def parse_members(body: Any) -> tuple[dict[str, str], str | None]:
    """One members page: Entra ``deviceId`` -> object ``id`` for its devices, and the next page's link."""
    found: dict[str, str] = {}
    values = body.get("value") if isinstance(body, dict) else None
    for item in values if isinstance(values, list) else ():
        if not isinstance(item, dict):
            continue
        device, obj = normalize_guid(str(item.get("deviceId") or "")), normalize_guid(str(item.get("id") or ""))
        if device is not None and obj is not None:
            found[device] = obj
    link = body.get("@odata.nextLink") if isinstance(body, dict) else None
    return found, link if isinstance(link, str) and link else None


def static_group_problem(group_id: str, body: Any) -> str | None:
    """Why devices cannot be added to this group, if they cannot: members of a dynamic group come from its
    rule, and a group synced from on-premises AD is changed there, never in the cloud."""
    if not isinstance(body, dict):
        return f"--add-to-group {group_id}: the group could not be read"
    if body.get("onPremisesSyncEnabled"):
        return (f"--add-to-group {group_id} is synced from on-premises AD: its members are managed there, not "
                "through Graph")
    if "DynamicMembership" in (body.get("groupTypes") or []):
        return (f"--add-to-group {group_id} is a dynamic group: its rule decides its members; use --group-tag TAG "
                "(with --group) for a group that matches [OrderID]:TAG, or give a static group")
    return None
