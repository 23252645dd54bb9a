"""A device as the tenant's Autopilot listing shows it: the value serial resolution, status and group tags read.

Kept to the fields the product acts on, as a slotted dataclass, so a 30,000-device tenant stays a few MB
in memory and in ``inventory.jsonl``. Field names in files are Graph's own, so a saved inventory, the
listing and ``bulk-assign inventory --out`` all read the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .guid import normalize_guid

# Graph's spelling of the assignment states; "assigned" is any of the three (Graph's typo included)
ASSIGNED_STATES = frozenset({"assignedInSync", "assignedOutOfSync", "assignedUnkownSyncState"})

# our attribute -> Graph's field name
GRAPH_FIELDS: dict[str, str] = {
    "id": "id",
    "serial_number": "serialNumber",
    "group_tag": "groupTag",
    "entra_device_id": "azureActiveDirectoryDeviceId",
    "assignment_status": "deploymentProfileAssignmentStatus",
    "assigned_at": "deploymentProfileAssignedDateTime",
    "enrollment_state": "enrollmentState",
    "manufacturer": "manufacturer",
    "model": "model",
}
_FROM_GRAPH = {graph.lower(): ours for ours, graph in GRAPH_FIELDS.items()}


@dataclass(slots=True, frozen=True)
class TenantDevice:
    """One ``windowsAutopilotDeviceIdentity`` of the listing (empty strings for fields Graph left out)."""

    id: str
    serial_number: str = ""
    group_tag: str = ""
    entra_device_id: str = ""
    assignment_status: str = ""
    assigned_at: str = ""
    enrollment_state: str = ""
    manufacturer: str = ""
    model: str = ""

    @classmethod
    def from_graph(cls, item: Any) -> TenantDevice | None:
        """The device from one listing item (Graph's or a saved file's names, any case); None when the
        item has no usable id (it could only ever be matched wrongly)."""
        if not isinstance(item, dict):
            return None
        values: dict[str, str] = {}
        for key, value in item.items():
            ours = _FROM_GRAPH.get(str(key).lower())
            if ours is not None and value is not None:
                values[ours] = str(value)
        guid = normalize_guid(values.get("id", ""))
        if guid is None:
            return None
        values["id"] = guid
        return cls(**values)

    def to_graph(self) -> dict[str, str]:
        """Graph's field names, for ``inventory.jsonl`` and ``bulk-assign inventory --out``."""
        return {GRAPH_FIELDS[f.name]: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def assigned(self) -> bool:
        return self.assignment_status in ASSIGNED_STATES
