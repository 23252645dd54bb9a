"""The emulated Graph operations, independent of aiohttp: route, validate, throttle, fault, commit.

``Tenant.evaluate`` is called for standalone requests and for every ``$batch`` item alike, so an item is
judged exactly like the same request sent on its own. Order of checks (each stops the request):
auth (caller) -> route/method -> device id -> inventory -> body -> throttle -> fault -> commit.
Invalid requests therefore never consume write budget, and a throttled request is never also faulted.

Routes, matched in this order: Entra's directory (entra.py: devices, static groups and their members, under
Entra's own budget); groups and profiles (rollout.py); the listing; ``{id}/deploymentProfile/assignments``
(POST assigns, GET lists; what a POST does is ``seed_call_semantics``, see ``Tenant._commit``);
``{id}/deploymentProfile/assignments/{assignmentId}`` (DELETE: undo of the seed call, ``Tenant._delete``);
``{id}/deploymentProfile`` (GET: the profile the device has, 404 when it has none, as Graph answers);
``{id}`` (GET: the device, with the ``unknown`` status quirk when configured). The ``{id}`` patterns take
no ``/``, so a longer path never falls through to a shorter route.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..guid import normalize_guid
from .auth import Authenticator
from .bodies import validate_body
from .config import EmulatorConfig
from .directory import Directory
from .entra import EntraApi
from .faults import FaultPlan
from .inventory import ENTRA_FIELD, PROFILE_FIELD
from .listing import LISTING_PATH, listing_page
from .reach import Reach
from .responses import RESET, Outcome, RetryAfterRenderer, gateway_timeout, graph_error, intune_message
from .rollout import PROFILE_TYPE, Rollout, assignment_key, included_group
from .state import ASSIGNMENT_TYPE, Counters, Store, iso_utc, new_guid
from .throttle import Budgets, DirectoryBudgets

_ASSIGNMENTS = re.compile(
    r"/deviceManagement/windowsAutopilotDeviceIdentities/(.+)/deploymentProfile/assignments/?", re.IGNORECASE
)
_ONE_ASSIGNMENT = re.compile(
    r"/deviceManagement/windowsAutopilotDeviceIdentities/([^/]+)/deploymentProfile/assignments/([^/]+)/?",
    re.IGNORECASE,
)
_UPDATE = re.compile(r"/deviceManagement/windowsAutopilotDeviceIdentities/([^/]+)/updateDeviceProperties/?",
                     re.IGNORECASE)
_UPDATABLE = frozenset({"groupTag", "userPrincipalName", "addressableUserName", "displayName"})
_PROFILE = re.compile(r"/deviceManagement/windowsAutopilotDeviceIdentities/([^/]+)/deploymentProfile/?", re.IGNORECASE)
_DEVICE = re.compile(r"/deviceManagement/windowsAutopilotDeviceIdentities/([^/]+)/?", re.IGNORECASE)
_FAKE_URL = "https://fef.emulator.local/beta"
DEFAULT_ORIGIN = "https://graph.microsoft.com"  # the host a Tenant called without HTTP (unit tests) stands for

FAULT_RETRY_AFTER = 1.0  # seconds suggested by an injected 503
_STATUS = "deploymentProfileAssignmentStatus"


def _bad_request(message: str, rid: str, crid: str) -> Outcome:
    return graph_error(400, "BadRequest", message, rid, crid)


def _shown(value: str) -> str:
    """User input echoed in messages, cut short so a huge id cannot bloat an error body."""
    return value if len(value) <= 80 else value[:77] + "..."


class Tenant:
    """One emulated tenant: its data, budgets, fault plan and counters."""

    def __init__(self, config: EmulatorConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.counters = Counters()
        self.store = Store(clock=clock, status_delay=config.status_delay)
        self.auth = Authenticator(config.token)
        self.budgets = Budgets(config.throttle, config.app_rate, config.tenant_rate, config.read_rate, origin=clock())
        self.faults = FaultPlan(config.seed, config.faults, config.fault_kinds)
        self.retry_after = RetryAfterRenderer(config.retry_after, config.seed)
        self.inventory = config.inventory
        self.properties: dict[str, dict[str, str]] = {}  # what updateDeviceProperties set, per device
        self.profile_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-emulator-profile/{config.seed}"))
        self.created = iso_utc(time.time())  # createdDateTime of the profiles served: when this tenant began
        self.rollout = Rollout(config.profiles, config.dynamic_groups or {}, self.created)
        self.directory = Directory(config.inventory, config.static_groups, config.synced_groups)
        self.directory_budgets = DirectoryBudgets(config.directory_read_rate, config.directory_write_rate)
        self.reach = Reach(self.rollout, self.directory, self.store, config.inventory, self.properties,
                           self.profile_id)
        self.entra = EntraApi(self)

    # -- answers shared by routes -------------------------------------------------------------------

    def unauthorized(self, reason: str, rid: str, crid: str) -> Outcome:
        outcome = graph_error(401, "InvalidAuthenticationToken", reason, rid, crid)
        outcome.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
        return outcome

    def throttled(self, wait: float, path: str, rid: str, crid: str) -> Outcome:
        self.counters.throttled += 1
        outcome = graph_error(429, "TooManyRequests", intune_message(_FAKE_URL + path), rid, crid)
        value = self.retry_after.render(wait)
        if value is not None:
            outcome.headers["Retry-After"] = value
        return outcome

    def not_found(self, path: str, rid: str, crid: str) -> Outcome:
        return graph_error(404, "ResourceNotFound", f"Resource not found for the segment '{_shown(path)}'.", rid, crid)

    # -- evaluation ---------------------------------------------------------------------------------

    def evaluate(
        self, method: str, path: str, body: Any, app: str, rid: str, crid: str, *, in_batch: bool = False,
        query: Mapping[str, str] | None = None, origin: str = DEFAULT_ORIGIN,
    ) -> Outcome:
        """Judge one operation; ``path`` is relative to ``/beta`` and already percent-decoded.

        ``body`` is the raw bytes of a standalone request or the parsed JSON of a batch item; ``origin`` is
        the scheme and host the client called (directory bind references must name it).
        """
        self.counters.items += 1
        if self.entra.handles(method, path):
            return self.entra.evaluate(method, path, body, app, rid, crid, in_batch=in_batch, query=query or {},
                                       origin=origin)
        if self.rollout.handles(path):
            return self._rollout(method, path, body, app, rid, crid)
        if path.rstrip("/").lower() == LISTING_PATH.lower():
            if method == "GET":
                return self._listing(query or {}, app, path, rid, crid)
            return self._method_not_allowed(method, "GET", rid, crid)
        match = _ASSIGNMENTS.fullmatch(path)
        if match is not None:
            if method == "POST":
                return self._create(match.group(1), body, app, path, rid, crid, in_batch)
            if method == "GET":
                return self._read(match.group(1), app, path, rid, crid, listing=True)
            return self._method_not_allowed(method, "GET, POST", rid, crid)
        match = _ONE_ASSIGNMENT.fullmatch(path)
        if match is not None:
            if method == "DELETE":
                return self._delete(match.group(1), match.group(2), app, path, rid, crid, in_batch)
            return self._method_not_allowed(method, "DELETE", rid, crid)
        match = _UPDATE.fullmatch(path)
        if match is not None:
            if method == "POST":
                return self._update(match.group(1), body, app, path, rid, crid, in_batch)
            return self._method_not_allowed(method, "POST", rid, crid)
        match = _PROFILE.fullmatch(path)
        if match is not None:
            if method == "GET":
                return self._profile(match.group(1), app, path, rid, crid)
            return self._method_not_allowed(method, "GET", rid, crid)
        match = _DEVICE.fullmatch(path)
        if match is not None:
            if method == "GET":
                return self._read(match.group(1), app, path, rid, crid, listing=False)
            return self._method_not_allowed(method, "GET", rid, crid)
        return self.not_found(path, rid, crid)

    def _method_not_allowed(self, method: str, allow: str, rid: str, crid: str) -> Outcome:
        outcome = graph_error(
            405, "MethodNotAllowed", f"The HTTP method '{_shown(method)}' is not allowed for this resource.", rid, crid
        )
        outcome.headers["Allow"] = allow
        return outcome

    def _device(self, raw_id: str, rid: str, crid: str) -> tuple[str | None, Outcome | None]:
        """The normalised device id, or the 400/404 answer for it."""
        device_id = normalize_guid(raw_id) if len(raw_id) == 36 else None
        if device_id is None:
            return None, _bad_request(
                f"Invalid windowsAutopilotDeviceIdentity id '{_shown(raw_id)}': expected a GUID.", rid, crid
            )
        if self.inventory is not None and device_id not in self.inventory:
            return None, graph_error(
                404, "ResourceNotFound", f"windowsAutopilotDeviceIdentity '{device_id}' was not found.", rid, crid
            )
        return device_id, None

    def _readable(self, raw_id: str, app: str, path: str, rid: str, crid: str) -> str | Outcome:
        """The device of a read, or the answer that refuses it: id checks first, then the read budget."""
        device_id, error = self._device(raw_id, rid, crid)
        if device_id is None:
            return error or self.not_found(path, rid, crid)
        wait = self.budgets.try_read(app, self.clock())
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        return device_id

    def _read(self, raw_id: str, app: str, path: str, rid: str, crid: str, *, listing: bool) -> Outcome:
        device_id = self._readable(raw_id, app, path, rid, crid)
        if isinstance(device_id, Outcome):
            return device_id
        if listing:
            values = self.store.assignments(device_id)
            if self.config.seed_call_semantics == "profile":
                profile = self.profile_of(device_id)
                if profile is None:
                    return self._no_profile(device_id, rid, crid)
                values = [{"@odata.type": ASSIGNMENT_TYPE, **a} for a in self.rollout.assignments_of(profile)]
            context = (
                f"{_FAKE_URL}/$metadata#deviceManagement/windowsAutopilotDeviceIdentities('{device_id}')"
                "/deploymentProfile/assignments"
            )
            return Outcome(200, {"@odata.context": context, "value": values})
        device = self.device_record(device_id)
        if self.config.status_unknown_quirk and device[_STATUS] != "notAssigned":
            device[_STATUS] = "unknown"  # the single GET's quirk; the listing (device_record alone) tells the truth
        device["@odata.context"] = f"{_FAKE_URL}/$metadata#deviceManagement/windowsAutopilotDeviceIdentities/$entity"
        return Outcome(200, device)

    def device_record(self, device_id: str) -> dict[str, Any]:
        """The device as Graph shows it: the store's state with the inventory's details (serial, tag, ...).

        An inventory-given assignment status is the device's state before the emulator touched it, so it
        gives way to the store's once the device is assigned here; its enrollment state stays.
        """
        device = self.store.device(device_id)
        if isinstance(self.inventory, dict):
            details = self.inventory.get(device_id)
            if details:
                device.update(details)
                device.pop(PROFILE_FIELD, None)
                if _STATUS in details and self.store.assigned(device_id):
                    device[_STATUS], device["deploymentProfileAssignedDateTime"] = self.store.status(device_id)
        device.update(self.properties.get(device_id, ()))
        device[ENTRA_FIELD] = self.directory.entra_id_of(device_id) or ""
        return device

    def _update(self, raw_id: str, body: Any, app: str, path: str, rid: str, crid: str, in_batch: bool) -> Outcome:
        """``updateDeviceProperties``: sets the group tag (and the few other writable properties); 204.

        A write under the write budget, faulted like an assignment; committing the same tag twice changes
        nothing, so ``tag_writes_per_device`` counts writes, and a device tagged twice is harmless."""
        device_id, error = self._device(raw_id, rid, crid)
        if device_id is None:
            return error or self.not_found(path, rid, crid)
        if isinstance(body, bytes | bytearray):
            try:
                body = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                return _bad_request("Invalid JSON in the request body.", rid, crid)
        if not isinstance(body, dict) or not body or not set(body) <= _UPDATABLE or \
                not all(isinstance(v, str) for v in body.values()):
            return _bad_request("updateDeviceProperties takes string values of "
                                f"{', '.join(sorted(_UPDATABLE))}.", rid, crid)
        wait = self.budgets.try_write(app, self.clock())
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        fault = self.faults.decide(device_id, "item" if in_batch else "write") if self.faults.active else None
        if fault in ("503", "504", "reset"):
            return self._faulted(fault, device_id, None, path, rid, crid)
        self.properties.setdefault(device_id, {}).update(body)
        self.counters.tag_write(device_id)
        if self.rollout.profile_for_tag(body.get("groupTag", "")) is not None:
            self.store.target(device_id)  # the tag brings it into a group a profile is assigned to
        if fault is None or fault in ("latency", "malformed"):
            return Outcome(204, b"", delay=self.faults.latency_for(device_id) if fault == "latency" else 0.0)
        self.counters.fault(fault)
        self.counters.ambiguous_commits += 1
        return gateway_timeout(rid, crid) if fault == "ambiguous-504" else Outcome(0, action=RESET)

    def _rollout(self, method: str, path: str, body: Any, app: str, rid: str, crid: str) -> Outcome:
        """Groups and profiles (rollout.py) under the read or write budget; a new profile-to-group assignment
        targets every device whose tag the group matches."""
        now = self.clock()
        wait = self.budgets.try_read(app, now) if method == "GET" else self.budgets.try_write(app, now)
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        outcome, assigned = self.rollout.evaluate(method, path, body, rid, crid)
        if method == "DELETE" and outcome.status == 204:
            self.counters.profile_assignments_deleted += 1
        if assigned is not None:
            self.counters.profile_assignments += 1
            self.counters.group_assignment(assignment_key(assigned, outcome.body["target"]))
            for group in self.rollout.groups_of(assigned):
                self.reach.target_group(group)
        return outcome

    def profile_of(self, device_id: str) -> str | None:
        """The id of the deployment profile the device has (reach.py says how it is decided)."""
        return self.reach.profile_of(device_id)

    def _profile(self, raw_id: str, app: str, path: str, rid: str, crid: str) -> Outcome:
        """``GET {id}/deploymentProfile``: a read like the others (id checks, then the read budget)."""
        device_id = self._readable(raw_id, app, path, rid, crid)
        if isinstance(device_id, Outcome):
            return device_id
        profile_id = self.profile_of(device_id)
        if profile_id is None:
            return self._no_profile(device_id, rid, crid)
        own = profile_id == self.profile_id
        return Outcome(200, {
            "@odata.context": f"{_FAKE_URL}/$metadata#deviceManagement/windowsAutopilotDeploymentProfiles/$entity",
            "@odata.type": PROFILE_TYPE,
            "id": profile_id,
            "displayName": "Emulated profile" if own else f"Existing profile {profile_id[:8]}",
            "createdDateTime": self.created,
        })

    def _no_profile(self, device_id: str, rid: str, crid: str) -> Outcome:
        return graph_error(
            404, "ResourceNotFound", f"windowsAutopilotDeviceIdentity '{device_id}' has no deployment profile.",
            rid, crid,
        )

    def _listing(self, query: Mapping[str, str], app: str, path: str, rid: str, crid: str) -> Outcome:
        """One page of the tenant's devices: the inventory's, in its order, or those assigned so far."""
        wait = self.budgets.try_read(app, self.clock())
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        ids = list(self.inventory) if self.inventory is not None else self.store.device_ids()
        return listing_page([self.device_record(d) for d in ids], query, rid, crid)

    def _create(self, raw_id: str, body: Any, app: str, path: str, rid: str, crid: str, in_batch: bool) -> Outcome:
        device_id, error = self._device(raw_id, rid, crid)
        if device_id is None:
            return error or self.not_found(path, rid, crid)
        if isinstance(body, bytes | bytearray):
            if not body:
                return _bad_request("Empty payload: the request body must be a JSON object.", rid, crid)
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _bad_request("Invalid JSON in the request body.", rid, crid)
        problem = validate_body(body)
        if problem is not None:
            return _bad_request(problem, rid, crid)
        if self.config.seed_call_semantics == "profile" and self.profile_of(device_id) is None:
            return self._no_profile(device_id, rid, crid)  # nothing to add the target to
        wait = self.budgets.try_write(app, self.clock())
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        fault = self.faults.decide(device_id, "item" if in_batch else "write") if self.faults.active else None
        if fault is None:
            return Outcome(201, self._commit(device_id, body["target"]))
        return self._faulted(fault, device_id, body["target"], path, rid, crid)

    def _commit(self, device_id: str, target: Any) -> dict[str, Any]:
        """Store the seed call's effect and count it as the device's commit, under either semantics.

        ``device``: an assignment of the device itself (the reading the seed page suggests). ``profile``:
        what public sources infer (graph-facts.md), the target appended as a group assignment to the
        device's current profile, so a second device of the same profile appends the same group again;
        the device's own listing then shows its profile's assignments."""
        if self.config.seed_call_semantics == "profile":
            return self._commit_to_profile(device_id, target)
        assignment = {
            "@odata.type": ASSIGNMENT_TYPE,
            "id": new_guid(),
            "target": target,
            "source": "direct",
            "sourceId": self.profile_id,
        }
        self.store.add(device_id, assignment)
        self.counters.commit(device_id)
        return assignment

    def _commit_to_profile(self, device_id: str, target: dict[str, Any]) -> dict[str, Any]:
        profile = self.profile_of(device_id)
        assert profile is not None  # _create answered 404 otherwise, in this same call
        assignment = self.rollout.add_assignment(profile, target)
        self.counters.commit(device_id)
        key = assignment_key(profile, target)
        self.counters.group_assignment(key)
        group = included_group(target)
        if group is not None and assignment["id"] == key:  # the first of its kind: a repeat reaches no one new
            self.reach.target_group(group)
        return {"@odata.type": ASSIGNMENT_TYPE, **assignment}

    def _delete(self, raw_id: str, assignment_id: str, app: str, path: str, rid: str, crid: str,
                in_batch: bool) -> Outcome:
        """``DELETE .../{id}/deploymentProfile/assignments/{assignmentId}`` (undo of the seed call): 204.

        ``device`` semantics: the device's own assignment goes. ``profile`` semantics: the path navigates to the
        device's current profile, as the seed POST and GET there do, so the assignment goes from that profile
        (for every device of it). 404 ``ResourceNotFound`` when there is no such assignment (or, under
        ``profile``, no profile), before the budget is charged, as for a seed POST to a device without a
        profile. A write otherwise: Intune's write budget, then the fault plan (an ambiguous fault commits the
        delete and then fails, so the client's resend meets the 404)."""
        device_id, error = self._device(raw_id, rid, crid)
        if device_id is None:
            return error or self.not_found(path, rid, crid)
        profile = self.profile_of(device_id) if self.config.seed_call_semantics == "profile" else None
        if profile is not None:
            exists = self.rollout.find(profile, assignment_id) is not None
        else:
            exists = self.config.seed_call_semantics == "device" and \
                any(a.get("id") == assignment_id for a in self.store.assignments(device_id))
        if not exists:
            return graph_error(404, "ResourceNotFound", f"windowsAutopilotDeploymentProfileAssignment "
                               f"'{_shown(assignment_id)}' was not found for device '{device_id}'.", rid, crid)
        wait = self.budgets.try_write(app, self.clock())
        if wait > 0.0:
            return self.throttled(wait, path, rid, crid)
        fault = self.faults.decide(device_id, "item" if in_batch else "write") if self.faults.active else None
        if fault in ("503", "504", "reset"):
            return self._faulted(fault, device_id, None, path, rid, crid)  # nothing deleted
        if profile is not None:
            found = self.rollout.find(profile, assignment_id)
            assert found is not None
            self.rollout.assignments[profile].remove(found)
        else:
            self.store.remove(device_id, assignment_id)
        self.counters.assignment_deleted(device_id)
        if fault is None or fault in ("latency", "malformed"):  # a 204 has no body to garble
            return Outcome(204, b"", delay=self.faults.latency_for(device_id) if fault == "latency" else 0.0)
        self.counters.fault(fault)
        self.counters.ambiguous_commits += 1
        return gateway_timeout(rid, crid) if fault == "ambiguous-504" else Outcome(0, action=RESET)

    def _faulted(self, kind: str, device_id: str, target: Any, path: str, rid: str, crid: str) -> Outcome:
        """Apply one injected fault to an accepted write (see faults.py for which kinds apply where)."""
        self.counters.fault(kind)
        if kind == "503":
            return self.unavailable(path, rid, crid)
        if kind == "504":
            return gateway_timeout(rid, crid)
        if kind == "reset":
            return Outcome(0, action=RESET)
        assignment = self._commit(device_id, target)
        if kind == "latency":
            return Outcome(201, assignment, delay=self.faults.latency_for(device_id))
        if kind == "malformed":
            return Outcome(201, orjson.dumps(assignment)[:37])
        self.counters.ambiguous_commits += 1
        if kind == "ambiguous-504":
            return gateway_timeout(rid, crid)
        return Outcome(0, action=RESET)  # ambiguous-reset

    def unavailable(self, path: str, rid: str, crid: str) -> Outcome:
        """An injected 503 in Intune's form, with Retry-After in the configured style."""
        outcome = graph_error(503, "ServiceUnavailable", intune_message(_FAKE_URL + path), rid, crid)
        value = self.retry_after.render(FAULT_RETRY_AFTER)
        if value is not None:
            outcome.headers["Retry-After"] = value
        return outcome

    # -- administration -----------------------------------------------------------------------------

    def reset_state(self) -> None:
        """Forget assignments, tags, throttle and fault history, and put static groups back to their first
        members (a fresh tenant; counters untouched)."""
        self.store.clear()
        self.properties.clear()
        self.budgets.clear(self.clock())
        self.directory_budgets.clear()
        self.directory.reset()
        self.faults.clear()

