"""The emulated tenant's Entra directory: a device object per Autopilot device, static groups and their
members, and the pure rules of Entra's membership API (bind references, member pages, request costs).

Why it exists: besides group tags, the documented way to bring devices to a profile is static membership of
their Entra device objects (graph-facts.md, "How profiles really reach devices"). A client reads an Autopilot
device's ``azureActiveDirectoryDeviceId`` (Entra's ``deviceId``), resolves it to the directory object id with
``GET /devices(deviceId='...')`` and adds that object to a group with ``PATCH /groups/{id}``
``members@odata.bind``. The HTTP side (routes, budgets, faults) is entra.py; nothing here does I/O.

Ids are deterministic so that tests on both sides can compute them: an Autopilot device's Entra ``deviceId``
is the inventory's ``azureActiveDirectoryDeviceId`` when it gives one (an empty value means the device has
no Entra object at all), else ``entra_device_id(autopilot_id)``; the object id is ``object_id(deviceId)``.
With no inventory (any GUID is a device) the directory knows the devices the tenant has shown so far.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..guid import normalize_guid
from .inventory import ENTRA_FIELD, Inventory
from .responses import Outcome, graph_error
from .state import serial_number

DEVICE_TYPE = "#microsoft.graph.device"
USER_TYPE = "#microsoft.graph.user"
DEVICE_PROPERTIES = ("id", "deviceId", "displayName", "accountEnabled", "onPremisesSyncEnabled")
ALREADY_MEMBER = "One or more added object references already exist for the following modified properties: 'members'."
MAX_REFERENCES = 20  # members@odata.bind per PATCH
PAGE_DEFAULT, PAGE_MAX = 100, 999  # Entra's $top for directory collections
MEMBERS_COST = 3  # "GET groups/{id}/members": base cost 3 resource units in Microsoft's table
_BIND_PATH = re.compile(r"/(?:v1\.0|beta)/directoryObjects/([^/]+)", re.IGNORECASE)
_SKIP_PREFIX = "emu-members:"
_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def entra_device_id(autopilot_id: str) -> str:
    """The Entra ``deviceId`` the emulator gives an Autopilot device whose inventory names none:
    ``uuid5(NAMESPACE_URL, f"bulk-assign-emulator-entra/{autopilot_id}")``."""
    return _uuid5(f"bulk-assign-emulator-entra/{autopilot_id}")


def object_id(entra_device_id: str) -> str:
    """The directory object ``id`` of the Entra device with this ``deviceId`` (what group members are):
    ``uuid5(NAMESPACE_URL, f"bulk-assign-emulator-object/{entra_device_id}")``."""
    return _uuid5(f"bulk-assign-emulator-object/{entra_device_id}")


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without building UUID objects: every device of a listing
    page shows its Entra id, and ``uuid.uuid5`` made the first page of a large tenant several times slower."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True, slots=True)
class EntraDevice:
    """One Entra device object and the Autopilot device it belongs to."""

    object_id: str
    device_id: str
    autopilot_id: str
    display_name: str  # Autopilot names the Entra object after the serial number until the device is renamed

    def body(self, select: frozenset[str] | None = None) -> dict[str, Any]:
        """The ``device`` resource, cut to ``$select``'s properties when one was given."""
        full: dict[str, Any] = {"id": self.object_id, "deviceId": self.device_id, "displayName": self.display_name,
                                "accountEnabled": True, "onPremisesSyncEnabled": None}
        return full if select is None else {k: v for k, v in full.items() if k in select}


class Directory:
    """Entra device objects (indexed on first use, so a tenant that never touches them pays nothing) and
    the members of the static groups, kept in the order they were added (member pages are stable)."""

    def __init__(self, inventory: Inventory | None, static_groups: Mapping[str, Iterable[str]] | None,
                 synced_groups: Iterable[str]) -> None:
        self._inventory = inventory
        self.synced = frozenset(_guid(g) for g in synced_groups)
        initial = {_guid(g): tuple(dict.fromkeys(_guid(m) for m in members))
                   for g, members in (static_groups or {}).items()}
        for group in sorted(self.synced - set(initial)):
            initial[group] = ()
        self._initial = initial
        self._others = frozenset(m for members in initial.values() for m in members)  # may be users
        self._entra_of: dict[str, str | None] = {}  # Autopilot id -> Entra deviceId (None: no Entra object)
        self._devices: dict[str, EntraDevice] = {}  # object id -> device
        self._by_device_id: dict[str, str] = {}  # Entra deviceId -> object id
        self._indexed = False
        self._members: dict[str, dict[str, None]] = {}
        self._groups_of: dict[str, set[str]] = {}
        self.reset()

    # -- devices ------------------------------------------------------------------------------------

    def entra_id_of(self, autopilot_id: str) -> str | None:
        """The Autopilot device's Entra ``deviceId``, or None when it has no Entra object."""
        if autopilot_id not in self._entra_of:
            if self._inventory is not None and autopilot_id not in self._inventory:
                return None
            self._register(autopilot_id)
        return self._entra_of[autopilot_id]

    def by_device_id(self, device_id: str) -> EntraDevice | None:
        self._index()
        found = self._by_device_id.get(device_id)
        return self._devices[found] if found is not None else None

    def device(self, object_id_: str) -> EntraDevice | None:
        self._index()
        return self._devices.get(object_id_)

    def known(self, object_id_: str) -> bool:
        """An object a group may reference: one of the tenant's device objects, or a configured member."""
        return self.device(object_id_) is not None or object_id_ in self._others

    def devices_of(self, autopilot_ids: Iterable[str]) -> list[EntraDevice]:
        """The Entra objects of these Autopilot devices, in their order (devices without one left out)."""
        found = []
        for autopilot_id in autopilot_ids:
            entra = self.entra_id_of(autopilot_id)
            if entra is not None and (device := self.by_device_id(entra)) is not None:
                found.append(device)
        return found

    def _register(self, autopilot_id: str) -> None:
        details = self._inventory.get(autopilot_id, {}) if isinstance(self._inventory, dict) else {}
        given = details.get(ENTRA_FIELD)
        if given is None:
            entra: str | None = entra_device_id(autopilot_id)
        else:
            entra = normalize_guid(given) if given.strip() else None  # "": the device has no Entra object
        self._entra_of[autopilot_id] = entra
        if self._indexed:
            self._add_object(autopilot_id, entra)

    def _add_object(self, autopilot_id: str, entra: str | None) -> None:
        if entra is None or entra in self._by_device_id:
            return  # no Entra object, or one shared with an earlier Autopilot record (the first keeps it)
        details = self._inventory.get(autopilot_id, {}) if isinstance(self._inventory, dict) else {}
        device = EntraDevice(object_id(entra), entra, autopilot_id, details.get("serialNumber")
                             or serial_number(autopilot_id))
        self._devices[device.object_id] = device
        self._by_device_id[entra] = device.object_id

    def _index(self) -> None:
        """The object ids, built on the first lookup (the listing needs only the Entra ids)."""
        if self._indexed:
            return
        self._indexed = True
        for autopilot_id in self._inventory if self._inventory is not None else list(self._entra_of):
            if autopilot_id in self._entra_of:
                self._add_object(autopilot_id, self._entra_of[autopilot_id])
            else:
                self._register(autopilot_id)

    # -- static groups ------------------------------------------------------------------------------

    def is_static(self, group: str) -> bool:
        return group in self._initial

    def members(self, group: str) -> list[str]:
        return list(self._members.get(group, ()))

    def is_member(self, group: str, object_id_: str) -> bool:
        return object_id_ in self._members.get(group, ())

    def groups_of(self, object_id_: str) -> frozenset[str]:
        """The static groups the object is a member of."""
        return frozenset(self._groups_of.get(object_id_, ()))

    def add(self, group: str, object_ids: Iterable[str]) -> None:
        members = self._members[group]
        for member in object_ids:
            members[member] = None
            self._groups_of.setdefault(member, set()).add(group)

    def remove(self, group: str, object_id_: str) -> bool:
        """Remove a member; False when it was not one."""
        members = self._members[group]
        if object_id_ not in members:
            return False
        del members[object_id_]
        self._groups_of[object_id_].discard(group)
        return True

    def reset(self) -> None:
        """Every static group back to its configured first members."""
        self._members = {group: dict.fromkeys(members) for group, members in self._initial.items()}
        self._groups_of = {}
        for group, members in self._initial.items():
            for member in members:
                self._groups_of.setdefault(member, set()).add(group)


def _guid(value: str) -> str:
    guid = normalize_guid(value)
    if guid is None:
        raise ValueError(f"{value!r} is not a GUID")
    return guid


# -- the pure rules of the API ----------------------------------------------------------------------------


def bind_target(reference: Any, origin: str) -> str | None:
    """The object id in ``https://HOST/v1.0/directoryObjects/{id}`` (or ``/beta/``), or None.

    The reference must name the host the request was sent to: Entra resolves it against its own service,
    so a client talking to another cloud (or to this emulator) that writes graph.microsoft.com is refused."""
    if not isinstance(reference, str):
        return None
    parts = urlsplit(reference.strip())
    own = urlsplit(origin)
    if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme.lower(), own.netloc.lower()) \
            or parts.query or parts.fragment:
        return None
    match = _BIND_PATH.fullmatch(parts.path)
    return normalize_guid(match.group(1)) if match is not None else None


def selected(query: Mapping[str, str], allowed: Iterable[str], type_name: str) -> frozenset[str] | str | None:
    """``$select``'s properties (None when absent), or the 400 message for one the type does not have."""
    raw = query.get("$select")
    if raw is None:
        return None
    by_lower = {name.lower(): name for name in allowed}
    chosen = set()
    for name in (part.strip() for part in raw.split(",")):
        if name.lower() not in by_lower:
            return f"Could not find a property named '{name[:80]}' on type '{type_name}'."
        chosen.add(by_lower[name.lower()])
    return frozenset(chosen)


def page_size(query: Mapping[str, str]) -> int | str:
    """``$top`` (default 100), or the 400 message Entra gives outside 1..999."""
    raw = query.get("$top")
    if raw is None:
        return PAGE_DEFAULT
    try:
        top = int(raw)
    except ValueError:
        top = 0
    if not 1 <= top <= PAGE_MAX:
        return f"Invalid page size specified: '{raw[:20]}'. Must be between 1 and {PAGE_MAX} inclusive."
    return top


def skiptoken(offset: int) -> str:
    """An opaque ``$skiptoken`` (clients must not parse it; Entra's are opaque too)."""
    return base64.urlsafe_b64encode(f"{_SKIP_PREFIX}{offset}".encode()).decode().rstrip("=")


def skip_offset(token: str | None) -> int | None:
    """Where a ``$skiptoken`` resumes (0 without one), or None for a token this emulator did not issue."""
    if token is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not text.startswith(_SKIP_PREFIX) or not text[len(_SKIP_PREFIX):].isdigit():
        return None
    return int(text[len(_SKIP_PREFIX):])


def read_cost(base: int, query: Mapping[str, str]) -> int:
    """Resource units of a read, by Microsoft's rules: ``$select`` takes 1 off, ``$top`` under 20 takes 1
    off, and no request costs less than 1 (``$expand`` is not served here)."""
    cost = base - ("$select" in query)
    top = query.get("$top")
    if top is not None and top.isdigit() and int(top) < 20:
        cost -= 1
    return max(1, cost)


def member_item(object_id_: str, device: EntraDevice | None, select: frozenset[str] | None) -> dict[str, Any]:
    """One entry of a member page: a device object, or another kind of member (configured as a plain id)."""
    if device is None:
        return {"@odata.type": USER_TYPE, "id": object_id_}
    return {"@odata.type": DEVICE_TYPE, **device.body(select)}


def not_found(resource: str, rid: str, crid: str) -> Outcome:
    """Entra's 404: ``Request_ResourceNotFound`` with its wording."""
    return graph_error(404, "Request_ResourceNotFound",
                       f"Resource '{resource[:80]}' does not exist or one of its queried reference-property objects "
                       "are not present.", rid, crid)


def bad_request(message: str, rid: str, crid: str) -> Outcome:
    return graph_error(400, "Request_BadRequest", message, rid, crid)
