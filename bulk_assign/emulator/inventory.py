"""``--inventory FILE``: the devices the emulated tenant knows (everything else answers 404).

Two kinds of file. A *tenant* file describes each device: JSON Lines of objects, or a CSV with a header,
carrying ``id`` and any of ``serialNumber``, ``groupTag``, ``azureActiveDirectoryDeviceId``,
``manufacturer`` and ``model`` (Graph's field names, any case), so serial resolution and the listing can
be rehearsed. It may also give each device's starting state, so a rollout can be rehearsed against a
tenant that is not blank: ``deploymentProfileAssignmentStatus`` (e.g. ``assignedInSync`` to a profile
from before; it holds until the emulator assigns the device), ``enrollmentState`` (e.g. ``enrolled``) and
``deploymentProfileId``, the profile the device already has (what ``.../deploymentProfile`` answers;
not a field of the device itself, so it is not shown in the device's body). ``azureActiveDirectoryDeviceId``
is the device's Entra ``deviceId`` (directory.py); an empty value means the device has no Entra object,
and a device without the field gets a derived one. A state that is not one of
Graph's values is refused with the file and line, since a misspelled state would silently read as
"not assigned" to a client.

Or a plain list: one GUID per line (blank lines and ``#`` comments ignored), or a CSV whose first
column holds the GUID, with or without a header row. Anything else is a mistake the user should hear
about with the file and line, not a silently smaller tenant.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson

from ..errors import InputFileError
from ..guid import normalize_guid

DETAIL_FIELDS = (
    "serialNumber",
    "groupTag",
    "azureActiveDirectoryDeviceId",
    "manufacturer",
    "model",
    "deploymentProfileAssignmentStatus",
    "enrollmentState",
    "deploymentProfileId",
)
ENTRA_FIELD = "azureActiveDirectoryDeviceId"  # the Entra deviceId; "" means the device has no Entra object
PROFILE_FIELD = "deploymentProfileId"  # the emulator's own detail: the device's profile, not a Graph property
# Graph's enums, spelling included (``assignedUnkownSyncState`` is Graph's typo); values are matched in any case
ASSIGNMENT_STATUSES = (
    "unknown", "assignedInSync", "assignedOutOfSync", "assignedUnkownSyncState", "notAssigned", "pending", "failed",
)
ENROLLMENT_STATES = ("unknown", "enrolled", "pendingReset", "failed", "notContacted", "blocked")
_ENUMS = {
    "deploymentProfileAssignmentStatus": {v.lower(): v for v in ASSIGNMENT_STATUSES},
    "enrollmentState": {v.lower(): v for v in ENROLLMENT_STATES},
}
_BY_LOWER = {name.lower(): name for name in DETAIL_FIELDS}
Inventory = frozenset[str] | dict[str, dict[str, str]]  # ids only, or id -> Graph fields of the device


def load_inventory(path: str | Path) -> Inventory:
    """The devices in ``path``: a frozenset of lower-case GUIDs for a plain list, or id -> details for a
    tenant file; raises ``InputFileError`` naming the file and line of a bad row."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(name, None, f"cannot read inventory: {getattr(exc, 'strerror', None) or exc}") from None
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    if first.startswith("{"):
        return _tenant_jsonl(name, text)
    header = [cell.strip().lower() for cell in next(csv.reader([first]), [])]
    if "id" in header and any(cell in _BY_LOWER for cell in header):
        return _tenant_csv(name, text)
    return _id_list(name, text)


def _details(name: str, number: int, record: dict[str, object]) -> tuple[str, dict[str, str]]:
    lowered = {str(k).lower(): v for k, v in record.items()}
    guid = normalize_guid(str(lowered.get("id", "")))
    if guid is None:
        raise InputFileError(name, number, f"{_shown(str(lowered.get('id', '')))!r} is not a device id (GUID)")
    details = {_BY_LOWER[k]: str(v) for k, v in lowered.items() if k in _BY_LOWER and v is not None}
    for field, values in _ENUMS.items():
        given = details.get(field)
        if given is None or not given.strip():
            details.pop(field, None)  # an empty CSV cell: no starting state, not a bad one
            continue
        canonical = values.get(given.strip().lower())
        if canonical is None:
            raise InputFileError(name, number, f"{field} {_shown(given)!r} is not one of {', '.join(values.values())}")
        details[field] = canonical
    entra = details.get(ENTRA_FIELD)
    if entra is not None and entra.strip():
        if (normalized := normalize_guid(entra.strip())) is None:
            raise InputFileError(name, number, f"{ENTRA_FIELD} {_shown(entra)!r} is not an Entra device id (GUID)")
        details[ENTRA_FIELD] = normalized
    elif entra is not None:
        details[ENTRA_FIELD] = ""
    profile = details.get(PROFILE_FIELD)
    if profile is not None:
        if not profile.strip():
            del details[PROFILE_FIELD]
        elif (normalized := normalize_guid(profile.strip())) is None:
            raise InputFileError(name, number, f"{PROFILE_FIELD} {_shown(profile)!r} is not a profile id (GUID)")
        else:
            details[PROFILE_FIELD] = normalized
    return guid, details


def _tenant_jsonl(name: str, text: str) -> dict[str, dict[str, str]]:
    devices: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputFileError(name, number, f"not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise InputFileError(name, number, "each line must be an object with an id")
        guid, details = _details(name, number, record)
        devices[guid] = details
    return devices


def _tenant_csv(name: str, text: str) -> dict[str, dict[str, str]]:
    devices: dict[str, dict[str, str]] = {}
    reader = csv.DictReader(text.splitlines())
    for number, record in enumerate(reader, start=2):
        guid, details = _details(name, number, dict(record))
        devices[guid] = details
    return devices


def _id_list(name: str, text: str) -> frozenset[str]:
    ids: set[str] = set()
    header_allowed = True
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        first = next(csv.reader([stripped]), [""])
        cell = first[0].strip() if first else ""
        guid = normalize_guid(cell)
        if guid is None:
            if header_allowed and _looks_like_header(cell):
                header_allowed = False
                continue
            raise InputFileError(name, number, f"{_shown(cell)!r} is not a device id (GUID)")
        header_allowed = False
        ids.add(guid)
    return frozenset(ids)


def _looks_like_header(cell: str) -> bool:
    """A header names a column; it does not look like a damaged GUID (hex groups and dashes)."""
    return any(ch.isalpha() for ch in cell) and cell.count("-") < 4


def _shown(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."
