"""What the emulated tenant remembers: committed assignments per device, and the counters tests read.

Assignment status follows Intune's model rather than flipping at once: a device given its first assignment
reports ``pending`` until ``status_delay`` seconds have passed on the tenant's (injectable, monotonic)
clock, then ``assignedInSync``; one never assigned reports ``notAssigned``. A client that reads status
back straight after assigning must therefore cope with ``pending``, as it must against the real service.
Wall-clock time is used only to format ``deploymentProfileAssignedDateTime``.

Counters are plain attributes bumped on the hot path (no locks: everything runs on one event loop).
``devices_assigned_twice`` is kept incrementally so reading it is O(1) even after 100,000 devices.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ASSIGNMENT_TYPE = "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment"
NEVER = "0001-01-01T00:00:00Z"


@dataclass
class Counters:
    """Live counters; ``snapshot()`` is the JSON served at ``GET /_emulator/counters``.

    - ``requests``: HTTP requests received (a batch is one)
    - ``items``: operations evaluated (standalone requests to a Graph route, plus every batch item)
    - ``responses_by_status``: statuses delivered, per request and per batch item (a reset has none)
    - ``throttled``: 429s given, batch items included
    - ``writes_committed`` / ``commits_per_device``: assignments actually stored
    - ``devices_assigned_twice``: devices with more than one committed assignment
    - ``faults_injected``: per fault kind; ``ambiguous_commits``: commits the client was told failed
    - ``batches``: ``$batch`` requests received
    - ``tag_writes`` / ``tag_writes_per_device``: ``updateDeviceProperties`` writes committed
    - ``profile_assignments``: profile-to-group assignments created through the profiles' own route
    - ``profile_group_assignments``: ``{profileId}_{groupId}`` -> how many times that group assignment was
      added to the profile by either route (the seed call under ``profile`` semantics adds one per device);
      ``profile_group_duplicates``: how many of those were added more than once
    - directory (directory.py): ``directory_reads`` (reads charged to Entra's resource units),
      ``directory_writes`` (writes charged to Entra's write quota, refusals after the charge included),
      ``directory_throttled`` (their 429s; also in ``throttled``), ``directory_commits`` (write requests
      that changed a membership); ``member_adds``: object id -> times actually added to any group,
      ``member_adds_per_group``: ``{groupId}/{objectId}`` -> times added to that group, and
      ``member_adds_max``: the largest of those (Entra refuses an existing member, so more than 1 means
      the member was removed and added again); ``member_refusals``: 400 "already exist" answers;
      ``member_removes``: members actually removed
    - undo of the seed call: ``assignments_deleted`` / ``deletes_per_device``: assignments actually removed
      through ``DELETE .../{id}/deploymentProfile/assignments/{assignmentId}`` (under ``profile`` semantics,
      from the device's profile); ``profile_assignments_deleted``: group assignments removed through the
      profiles' own route, ``DELETE .../windowsAutopilotDeploymentProfiles/{id}/assignments/{assignmentId}``
    """

    requests: int = 0
    items: int = 0
    responses_by_status: dict[int, int] = field(default_factory=dict)
    throttled: int = 0
    writes_committed: int = 0
    commits_per_device: dict[str, int] = field(default_factory=dict)
    devices_assigned_twice: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    ambiguous_commits: int = 0
    batches: int = 0
    tag_writes: int = 0
    profile_assignments: int = 0
    tag_writes_per_device: dict[str, int] = field(default_factory=dict)
    profile_group_assignments: dict[str, int] = field(default_factory=dict)
    profile_group_duplicates: int = 0
    directory_reads: int = 0
    directory_writes: int = 0
    directory_throttled: int = 0
    directory_commits: int = 0
    member_adds: dict[str, int] = field(default_factory=dict)
    member_adds_per_group: dict[str, int] = field(default_factory=dict)
    member_adds_max: int = 0
    member_refusals: int = 0
    member_removes: int = 0
    assignments_deleted: int = 0
    deletes_per_device: dict[str, int] = field(default_factory=dict)
    profile_assignments_deleted: int = 0

    def assignment_deleted(self, device_id: str) -> None:
        self.assignments_deleted += 1
        self.deletes_per_device[device_id] = self.deletes_per_device.get(device_id, 0) + 1

    def group_assignment(self, key: str) -> None:
        """One more ``{profileId}_{groupId}`` group assignment added to a profile."""
        n = self.profile_group_assignments.get(key, 0) + 1
        self.profile_group_assignments[key] = n
        if n == 2:
            self.profile_group_duplicates += 1

    def member_added(self, group: str, object_id: str) -> None:
        self.member_adds[object_id] = self.member_adds.get(object_id, 0) + 1
        key = f"{group}/{object_id}"
        n = self.member_adds_per_group[key] = self.member_adds_per_group.get(key, 0) + 1
        self.member_adds_max = max(self.member_adds_max, n)

    def tag_write(self, device_id: str) -> None:
        self.tag_writes += 1
        self.tag_writes_per_device[device_id] = self.tag_writes_per_device.get(device_id, 0) + 1

    def status(self, code: int) -> None:
        by_status = self.responses_by_status
        by_status[code] = by_status.get(code, 0) + 1

    def fault(self, kind: str) -> None:
        self.faults_injected[kind] = self.faults_injected.get(kind, 0) + 1

    def commit(self, device_id: str) -> None:
        n = self.commits_per_device.get(device_id, 0) + 1
        self.commits_per_device[device_id] = n
        self.writes_committed += 1
        if n == 2:
            self.devices_assigned_twice += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (status codes become string keys, as JSON requires)."""
        return {
            "requests": self.requests,
            "items": self.items,
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "throttled": self.throttled,
            "writes_committed": self.writes_committed,
            "commits_per_device": dict(self.commits_per_device),
            "devices_assigned_twice": self.devices_assigned_twice,
            "faults_injected": dict(self.faults_injected),
            "ambiguous_commits": self.ambiguous_commits,
            "batches": self.batches,
            "tag_writes": self.tag_writes,
            "profile_assignments": self.profile_assignments,
            "tag_writes_per_device": dict(self.tag_writes_per_device),
            "profile_group_assignments": dict(self.profile_group_assignments),
            "profile_group_duplicates": self.profile_group_duplicates,
            "directory_reads": self.directory_reads,
            "directory_writes": self.directory_writes,
            "directory_throttled": self.directory_throttled,
            "directory_commits": self.directory_commits,
            "member_adds": dict(self.member_adds),
            "member_adds_per_group": dict(self.member_adds_per_group),
            "member_adds_max": self.member_adds_max,
            "member_refusals": self.member_refusals,
            "member_removes": self.member_removes,
            "assignments_deleted": self.assignments_deleted,
            "deletes_per_device": dict(self.deletes_per_device),
            "profile_assignments_deleted": self.profile_assignments_deleted,
        }

    def reset(self) -> None:
        fresh = Counters()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


def iso_utc(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the form Graph uses in bodies."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def serial_number(device_id: str) -> str:
    """A stable fake serial number, so read-backs of the same device always agree."""
    return "EMU" + hashlib.sha1(device_id.encode(), usedforsecurity=False).hexdigest()[:12].upper()


class Store:
    """Committed assignments per device (the emulated tenant's data) and the status each one reports.

    ``clock`` is monotonic (the tenant's, so tests drive it); ``epoch_offset`` maps it to wall-clock
    seconds once, at construction, so timestamps are formatted without reading the wall clock per device.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, status_delay: float = 0.0) -> None:
        self._assignments: dict[str, list[dict[str, Any]]] = {}
        self._first_assigned: dict[str, float] = {}  # clock() at the first assignment; never moved by a later one
        self._clock = clock
        self._status_delay = status_delay
        self._epoch_offset = time.time() - clock()

    def add(self, device_id: str, assignment: dict[str, Any]) -> None:
        self._assignments.setdefault(device_id, []).append(assignment)
        self._first_assigned.setdefault(device_id, self._clock())

    def assignments(self, device_id: str) -> list[dict[str, Any]]:
        return list(self._assignments.get(device_id, ()))

    def remove(self, device_id: str, assignment_id: str) -> bool:
        """Remove the device's assignment ``assignment_id``; False when it has none such. The device stays
        targeted (its status does not go back): Intune keeps a profile it has applied."""
        assigned = self._assignments.get(device_id, [])
        for n, assignment in enumerate(assigned):
            if assignment.get("id") == assignment_id:
                del assigned[n]
                return True
        return False

    def target(self, device_id: str) -> None:
        """The device is now targeted by a profile (through a group): its status starts moving, as if assigned."""
        self._first_assigned.setdefault(device_id, self._clock())

    def assigned(self, device_id: str) -> bool:
        """Whether the device has been targeted here (given an assignment, or through a group), whatever its status."""
        return device_id in self._first_assigned

    def device_ids(self) -> list[str]:
        """The devices that have an assignment, in the order they got their first one."""
        return list(self._assignments)

    def status(self, device_id: str) -> tuple[str, str]:
        """``(deploymentProfileAssignmentStatus, deploymentProfileAssignedDateTime)`` as of now.

        The date is when the device became ``assignedInSync`` (first assignment + delay), NEVER before.
        """
        first = self._first_assigned.get(device_id)
        if first is None:
            return "notAssigned", NEVER
        in_sync_at = first + self._status_delay
        if self._clock() < in_sync_at:
            return "pending", NEVER
        return "assignedInSync", iso_utc(in_sync_at + self._epoch_offset)

    def device(self, device_id: str) -> dict[str, Any]:
        """The ``windowsAutopilotDeviceIdentity`` read-back, with the assignment status Graph reports."""
        status, assigned_at = self.status(device_id)
        return {
            "@odata.type": "#microsoft.graph.windowsAutopilotDeviceIdentity",
            "id": device_id,
            "serialNumber": serial_number(device_id),
            "manufacturer": "Emulated",
            "model": "Virtual Device",
            "groupTag": "",
            "enrollmentState": "notContacted",
            "deploymentProfileAssignmentStatus": status,
            "deploymentProfileAssignedDateTime": assigned_at,
        }

    def clear(self) -> None:
        self._assignments.clear()
        self._first_assigned.clear()


class GuidSource:
    """Fresh GUIDs for assignment ids and request ids, ~10x cheaper than ``uuid4()`` on the hot path.

    A random version-4 prefix drawn once per process plus a 48-bit counter: unique within the process,
    unlikely to collide across processes, and a well-formed v4 GUID (clients may parse it).
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        text = str(uuid.uuid4())
        self._prefix = text[:24]  # "xxxxxxxx-xxxx-4xxx-[89ab]xxx-"
        self._counter = itertools.count(int(text[24:], 16))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


new_guid = GuidSource()
