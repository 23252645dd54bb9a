"""Entra's directory routes in the emulated tenant: device lookups, static group membership, member pages.

``Tenant.evaluate`` hands these here, ahead of rollout.py, for standalone requests and ``$batch`` items alike:

- ``GET /devices(deviceId='{deviceId}')`` and ``GET /devices/{objectId}``: the device object (``$select``
  honoured); 404 ``Request_ResourceNotFound`` when unknown, 400 ``Request_BadRequest`` for a malformed key;
- ``GET /groups/{id}`` of a static group (dynamic groups stay with rollout.py);
- ``GET /groups/{id}/members`` and ``.../members/microsoft.graph.device`` (only the devices): pages of
  ``$top`` (default 100, 1..999) with an absolute ``@odata.nextLink`` on the request's own host;
- ``PATCH /groups/{id}`` ``{"members@odata.bind": [<= 20 references]}``, ``POST /groups/{id}/members/$ref``
  ``{"@odata.id": reference}`` and ``DELETE /groups/{id}/members/{objectId}/$ref``: 204 with no body.

Order of checks, each stopping the request: route/method -> ids -> for writes the group (404 unknown, 400
dynamic or synced) and the body -> Entra's budget (directory reads and writes have their own, throttle.py
``DirectoryBudgets``) -> for writes a fault -> the directory's state (404 unknown object, 400 existing member:
the whole request refused, nothing added; 404 removing a non-member) -> commit. So a syntactically bad
request costs nothing, while a lookup that finds nothing or a refused add has been charged, as Entra would.
Writes are faulted like Intune writes (faults.py), keyed by their first object id: the ambiguous kinds commit
and then lose the answer, so a client's "did it land?" logic is exercised on memberships too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from ..guid import normalize_guid
from .directory import (
    ALREADY_MEMBER,
    DEVICE_PROPERTIES,
    DEVICE_TYPE,
    MAX_REFERENCES,
    MEMBERS_COST,
    Directory,
    EntraDevice,
    bad_request,
    bind_target,
    member_item,
    not_found,
    page_size,
    read_cost,
    selected,
    skip_offset,
    skiptoken,
)
from .faults import FaultPlan
from .reach import Reach
from .responses import RESET, Outcome, gateway_timeout, graph_error
from .rollout import Rollout
from .state import Counters
from .throttle import DirectoryBudgets


class TenantParts(Protocol):
    """What the directory's routes use of the ``Tenant`` (operations.py), named here so that this module
    does not import the one that routes to it."""

    directory: Directory
    directory_budgets: DirectoryBudgets
    counters: Counters
    rollout: Rollout
    reach: Reach
    faults: FaultPlan
    clock: Callable[[], float]

_DEVICE_KEY = re.compile(r"/devices\((.*)\)/?", re.IGNORECASE)
_KEY = re.compile(r"deviceId='([^']*)'", re.IGNORECASE)
_DEVICE = re.compile(r"/devices/([^/]+)/?", re.IGNORECASE)
_GROUP = re.compile(r"/groups/([^/]+)/?", re.IGNORECASE)
_MEMBERS = re.compile(r"/groups/([^/]+)/members(/microsoft\.graph\.device)?/?", re.IGNORECASE)
_REF = re.compile(r"/groups/([^/]+)/members/\$ref/?", re.IGNORECASE)
_MEMBER_REF = re.compile(r"/groups/([^/]+)/members/([^/]+)/\$ref/?", re.IGNORECASE)
_BIND = "members@odata.bind"
_UNSUPPORTED_OPTIONS = ("$filter", "$search", "$orderby", "$expand", "$count")
FAULT_RETRY_AFTER = "1"  # seconds an injected 503 suggests
DYNAMIC_MESSAGE = ("Members cannot be added to or removed from group '{group}': it has dynamic membership "
                   "(its membership rule decides who is a member).")
SYNCED_MESSAGE = ("Unable to update the specified properties for on-premises mastered Directory Sync objects or "
                  "objects currently undergoing migration: group '{group}' is synced from on-premises and its "
                  "members cannot be changed in the cloud.")


def _invalid_id(raw: str, rid: str, crid: str) -> Outcome:
    return bad_request(f"Invalid object identifier '{raw[:80]}'.", rid, crid)


def _json(body: Any) -> tuple[Any, bool]:
    """A standalone request's raw bytes parsed (a batch item's body already is); False when not JSON."""
    if isinstance(body, bytes | bytearray):
        try:
            return (orjson.loads(body) if body else None), True
        except orjson.JSONDecodeError:
            return None, False
    return body, True


class EntraApi:
    """The directory's answers for one ``Tenant`` (its directory, budgets, faults, counters, rollout)."""

    def __init__(self, tenant: TenantParts) -> None:
        self.tenant = tenant
        self.directory = tenant.directory

    def handles(self, method: str, path: str) -> bool:
        if _DEVICE_KEY.fullmatch(path) or _DEVICE.fullmatch(path) or _MEMBERS.fullmatch(path) \
                or _REF.fullmatch(path) or _MEMBER_REF.fullmatch(path):
            return True
        match = _GROUP.fullmatch(path)
        if match is None:
            return False
        group = normalize_guid(match.group(1))
        return method != "GET" or (group is not None and self.directory.is_static(group))

    def evaluate(self, method: str, path: str, body: Any, app: str, rid: str, crid: str, *, in_batch: bool,
                 query: Mapping[str, str], origin: str) -> Outcome:
        if (match := _DEVICE_KEY.fullmatch(path)) is not None:
            return self._device_by_key(method, match.group(1), query, app, rid, crid, origin)
        if (match := _DEVICE.fullmatch(path)) is not None:
            return self._device_by_id(method, match.group(1), query, app, rid, crid, origin)
        if (match := _MEMBERS.fullmatch(path)) is not None:
            if method != "GET":
                return _not_allowed(method, "GET", rid, crid)
            return self._members(match.group(1), bool(match.group(2)), query, app, rid, crid, origin)
        if (match := _REF.fullmatch(path)) is not None:
            if method != "POST":
                return _not_allowed(method, "POST", rid, crid)
            return self._add(match.group(1), body, "ref", app, rid, crid, in_batch, origin)
        if (match := _MEMBER_REF.fullmatch(path)) is not None:
            if method != "DELETE":
                return _not_allowed(method, "DELETE", rid, crid)
            return self._remove(match.group(1), match.group(2), app, rid, crid, in_batch)
        match = _GROUP.fullmatch(path)
        assert match is not None
        if method == "GET":
            return self._group(match.group(1), app, rid, crid, origin)
        if method != "PATCH":
            return _not_allowed(method, "GET, PATCH", rid, crid)
        return self._add(match.group(1), body, "bind", app, rid, crid, in_batch, origin)

    # -- reads --------------------------------------------------------------------------------------

    def _charge_read(self, app: str, cost: int, rid: str, crid: str) -> Outcome | None:
        wait = self.tenant.directory_budgets.try_read(app, self.tenant.clock(), cost)
        if wait > 0.0:
            return self._throttled(wait, "ResourceUnitLimitExceeded", rid, crid)
        self.tenant.counters.directory_reads += 1
        return None

    def _device_by_key(self, method: str, raw_key: str, query: Mapping[str, str], app: str, rid: str, crid: str,
                       origin: str) -> Outcome:
        if method != "GET":
            return _not_allowed(method, "GET", rid, crid)
        key = _KEY.fullmatch(raw_key.strip())
        device_id = normalize_guid(key.group(1)) if key is not None else None
        if device_id is None:
            return bad_request(f"Invalid key: devices({raw_key[:80]}) needs deviceId='{{GUID}}'.", rid, crid)
        return self._device_answer(self.directory.by_device_id(device_id), device_id, query, app, rid, crid, origin)

    def _device_by_id(self, method: str, raw_id: str, query: Mapping[str, str], app: str, rid: str, crid: str,
                      origin: str) -> Outcome:
        if method != "GET":
            return _not_allowed(method, "GET", rid, crid)
        object_id = normalize_guid(raw_id)
        if object_id is None:
            return _invalid_id(raw_id, rid, crid)
        return self._device_answer(self.directory.device(object_id), object_id, query, app, rid, crid, origin)

    def _device_answer(self, device: EntraDevice | None, key: str, query: Mapping[str, str], app: str, rid: str,
                       crid: str, origin: str) -> Outcome:
        select = selected(query, DEVICE_PROPERTIES, "microsoft.graph.device")
        if isinstance(select, str):
            return bad_request(select, rid, crid)
        if (refused := self._charge_read(app, read_cost(1, query), rid, crid)) is not None:
            return refused
        if device is None:
            return not_found(key, rid, crid)
        shape = f"devices({','.join(p for p in DEVICE_PROPERTIES if p in select)})" if select else "devices"
        return Outcome(200, {"@odata.context": f"{origin}/beta/$metadata#{shape}/$entity", **device.body(select)})

    def _group(self, raw: str, app: str, rid: str, crid: str, origin: str) -> Outcome:
        """A static group (``handles`` sends only those here for GET)."""
        group = normalize_guid(raw)
        assert group is not None
        if (refused := self._charge_read(app, 1, rid, crid)) is not None:
            return refused
        synced = group in self.directory.synced
        return Outcome(200, {"@odata.context": f"{origin}/beta/$metadata#groups/$entity", "id": group,
                             "displayName": f"{'Synced' if synced else 'Static'} group {group[:8]}",
                             "groupTypes": [], "membershipRule": None, "membershipRuleProcessingState": None,
                             "onPremisesSyncEnabled": True if synced else None, "securityEnabled": True,
                             "mailEnabled": False})

    def _members(self, raw: str, devices_only: bool, query: Mapping[str, str], app: str, rid: str, crid: str,
                 origin: str) -> Outcome:
        group = normalize_guid(raw)
        if group is None:
            return _invalid_id(raw, rid, crid)
        unsupported = next((o for o in _UNSUPPORTED_OPTIONS if o in query), None)
        if unsupported is not None:
            return bad_request(f"The emulator does not support {unsupported} on group members.", rid, crid)
        select = selected(query, DEVICE_PROPERTIES, "microsoft.graph.device")
        top = page_size(query)
        start = skip_offset(query.get("$skiptoken"))
        if isinstance(select, str) or isinstance(top, str) or start is None:
            problem = select if isinstance(select, str) else top if isinstance(top, str) else "Invalid $skiptoken."
            return bad_request(problem, rid, crid)
        if (refused := self._charge_read(app, read_cost(MEMBERS_COST, query), rid, crid)) is not None:
            return refused
        member_ids = self._member_ids(group)
        if member_ids is None:
            return not_found(group, rid, crid)
        items = [member_item(m, self.directory.device(m), select) for m in member_ids]
        if devices_only:
            items = [i for i in items if i["@odata.type"] == DEVICE_TYPE]
        path = f"/groups/{group}/members" + ("/microsoft.graph.device" if devices_only else "")
        body: dict[str, Any] = {
            "@odata.context": f"{origin}/beta/$metadata#{'devices' if devices_only else 'directoryObjects'}",
            "value": items[start:start + top],
        }
        if start + top < len(items):
            link = f"{origin}/beta{path}?$top={top}&$skiptoken={skiptoken(start + top)}"
            if "$select" in query:
                link += "&$select=" + quote(query["$select"], safe=",")
            body["@odata.nextLink"] = link
        return Outcome(200, body)

    def _member_ids(self, group: str) -> list[str] | None:
        """A static group's members, a dynamic group's (the Entra objects of the devices its tag matches),
        or None for a group the tenant does not have."""
        if self.directory.is_static(group):
            return self.directory.members(group)
        tag = self.tenant.rollout.groups.get(group)
        if tag is None:
            return None
        return [d.object_id for d in self.directory.devices_of(self.tenant.reach.tagged(tag))]

    # -- writes -------------------------------------------------------------------------------------

    def _writable(self, raw: str, rid: str, crid: str) -> str | Outcome:
        """The group a write may change, or the answer refusing it."""
        group = normalize_guid(raw)
        if group is None:
            return _invalid_id(raw, rid, crid)
        if group in self.tenant.rollout.groups:
            return bad_request(DYNAMIC_MESSAGE.format(group=group), rid, crid)
        if group in self.directory.synced:
            return bad_request(SYNCED_MESSAGE.format(group=group), rid, crid)
        if not self.directory.is_static(group):
            return not_found(group, rid, crid)
        return group

    def _references(self, body: Any, form: str, origin: str, rid: str, crid: str) -> list[str] | Outcome:
        """The object ids a PATCH (``bind``) or a ``$ref`` POST (``ref``) adds, or the 400 for its body."""
        body, parsed = _json(body)
        if not parsed:
            return bad_request("Invalid JSON in the request body.", rid, crid)
        if form == "ref":
            if not isinstance(body, dict) or set(body) != {"@odata.id"}:
                return bad_request('The request body must be {"@odata.id": "<directoryObject URL>"}.', rid, crid)
            references = [body["@odata.id"]]
        else:
            if not isinstance(body, dict) or set(body) != {_BIND}:
                return bad_request(f"The emulator's PATCH /groups/{{id}} takes exactly one property, {_BIND}.",
                                   rid, crid)
            references = body[_BIND]
            if not isinstance(references, list) or not references:
                return bad_request(f"{_BIND} must be a non-empty array of directoryObject URLs.", rid, crid)
            if len(references) > MAX_REFERENCES:
                return bad_request(f"Too many references in {_BIND}: {len(references)}; at most {MAX_REFERENCES} "
                                   "objects can be added in one request.", rid, crid)
        object_ids = []
        for reference in references:
            object_id = bind_target(reference, origin)
            if object_id is None:
                return _invalid_id(str(reference), rid, crid)
            object_ids.append(object_id)
        return object_ids

    def _add(self, raw: str, body: Any, form: str, app: str, rid: str, crid: str, in_batch: bool,
             origin: str) -> Outcome:
        group = self._writable(raw, rid, crid)
        if isinstance(group, Outcome):
            return group
        object_ids = self._references(body, form, origin, rid, crid)
        if isinstance(object_ids, Outcome):
            return object_ids
        return self._write(object_ids[0], lambda: self._commit_add(group, object_ids, rid, crid), app, rid, crid,
                           in_batch)

    def _commit_add(self, group: str, object_ids: list[str], rid: str, crid: str) -> Outcome:
        unknown = next((o for o in object_ids if not self.directory.known(o)), None)
        if unknown is not None:
            return not_found(unknown, rid, crid)
        if len(set(object_ids)) < len(object_ids) or any(self.directory.is_member(group, o) for o in object_ids):
            self.tenant.counters.member_refusals += 1
            return bad_request(ALREADY_MEMBER, rid, crid)
        self.directory.add(group, object_ids)
        counters = self.tenant.counters
        counters.directory_commits += 1
        for object_id in object_ids:
            counters.member_added(group, object_id)
        self.tenant.reach.members_joined(group, object_ids)
        return Outcome(204, b"")

    def _remove(self, raw: str, raw_member: str, app: str, rid: str, crid: str, in_batch: bool) -> Outcome:
        group = self._writable(raw, rid, crid)
        if isinstance(group, Outcome):
            return group
        member = normalize_guid(raw_member)
        if member is None:
            return _invalid_id(raw_member, rid, crid)

        def commit() -> Outcome:
            if not self.directory.remove(group, member):
                return not_found(member, rid, crid)
            self.tenant.counters.member_removes += 1
            self.tenant.counters.directory_commits += 1
            return Outcome(204, b"")  # the device stays targeted (Reach.members_joined says why)

        return self._write(member, commit, app, rid, crid, in_batch)

    def _write(self, key: str, commit: Callable[[], Outcome], app: str, rid: str, crid: str,
               in_batch: bool) -> Outcome:
        """Budget, then fault, then ``commit``: the kinds that commit run it and may lose its answer."""
        tenant = self.tenant
        wait, reason = tenant.directory_budgets.try_write(app, tenant.clock())
        if wait > 0.0:
            return self._throttled(wait, reason, rid, crid)
        tenant.counters.directory_writes += 1
        fault = tenant.faults.decide(key, "item" if in_batch else "write") if tenant.faults.active else None
        if fault is not None:
            tenant.counters.fault(fault)
        if fault == "503":
            outcome = graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable.", rid, crid)
            outcome.headers["Retry-After"] = FAULT_RETRY_AFTER
            return outcome
        if fault == "504":
            return gateway_timeout(rid, crid)
        if fault == "reset":
            return Outcome(0, action=RESET)
        outcome = commit()
        if fault == "latency":
            outcome.delay = tenant.faults.latency_for(key)
        if fault not in ("ambiguous-504", "ambiguous-reset"):
            return outcome  # "malformed": a 204 has no body to break, so it is answered as it is
        if outcome.status == 204:
            tenant.counters.ambiguous_commits += 1
        return gateway_timeout(rid, crid) if fault == "ambiguous-504" else Outcome(0, action=RESET)

    def _throttled(self, wait: float, reason: str, rid: str, crid: str) -> Outcome:
        """Entra's 429: Retry-After in whole seconds (always sent, unlike Intune's) and which quota ran out."""
        counters = self.tenant.counters
        counters.throttled += 1
        counters.directory_throttled += 1
        seconds = max(1, math.ceil(wait))
        quota = "write quota" if reason == "WriteLimitExceeded" else "resource unit quota"
        outcome = graph_error(429, "TooManyRequests", f"Too many requests: the {quota} of this application in this "
                              f"tenant is used up. Retry after {seconds} seconds.", rid, crid)
        outcome.headers["Retry-After"] = str(seconds)
        outcome.headers["x-ms-throttle-information"] = reason
        return outcome


def _not_allowed(method: str, allow: str, rid: str, crid: str) -> Outcome:
    outcome = graph_error(405, "Request_BadRequest",
                          f"The HTTP method '{method[:20]}' is not allowed for this resource.", rid, crid)
    outcome.headers["Allow"] = allow
    return outcome
