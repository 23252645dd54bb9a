"""Data shapes: assignment targets and body (pydantic), the per-device result record, run statuses.

Targets are pydantic because they come from users (flags, job files, API callers) and must be validated
once, with a clear message. Result records are plain slotted dataclasses because one is made per device
on the hot path and only ever built by the engine itself.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from .errors import UsageError
from .guid import normalize_guid

TargetType = Literal[
    "#microsoft.graph.groupAssignmentTarget",
    "#microsoft.graph.exclusionGroupAssignmentTarget",
    "#microsoft.graph.allDevicesAssignmentTarget",
    "#microsoft.graph.allLicensedUsersAssignmentTarget",
    "#microsoft.graph.configurationManagerCollectionAssignmentTarget",
]
FilterType = Literal["none", "include", "exclude"]

ASSIGNMENT_ODATA_TYPE = "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment"

# CLI spelling -> (Graph type, name of the id it needs or None)
_TARGET_KINDS: dict[str, tuple[TargetType, str | None]] = {
    "group": ("#microsoft.graph.groupAssignmentTarget", "group_id"),
    "exclude-group": ("#microsoft.graph.exclusionGroupAssignmentTarget", "group_id"),
    "all-devices": ("#microsoft.graph.allDevicesAssignmentTarget", None),
    "all-licensed-users": ("#microsoft.graph.allLicensedUsersAssignmentTarget", None),
    "collection": ("#microsoft.graph.configurationManagerCollectionAssignmentTarget", "collection_id"),
}
_GROUP_TYPES = {"#microsoft.graph.groupAssignmentTarget", "#microsoft.graph.exclusionGroupAssignmentTarget"}
_COLLECTION = re.compile(r"[A-Za-z0-9]{1,32}")  # SCCM collection ids look like SMS00001 / ABC00012


class AssignmentTarget(BaseModel):
    """One concrete ``deviceAndAppManagementAssignmentTarget``, optionally with an assignment filter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    odata_type: TargetType
    group_id: str | None = None
    collection_id: str | None = None
    filter_id: str | None = None
    filter_type: FilterType = "none"

    @model_validator(mode="after")
    def _check(self) -> AssignmentTarget:
        """Each type carries exactly the id it needs; ids are checked here so Graph never sees junk."""
        needs_group = self.odata_type in _GROUP_TYPES
        needs_collection = self.odata_type.endswith("configurationManagerCollectionAssignmentTarget")
        if needs_group:
            if self.group_id is None or normalize_guid(self.group_id) != self.group_id:
                raise ValueError("a group target needs group_id, a lower-case GUID")
        elif self.group_id is not None:
            raise ValueError(f"{self.odata_type} takes no group_id")
        if needs_collection:
            if self.collection_id is None or not _COLLECTION.fullmatch(self.collection_id):
                raise ValueError("a collection target needs collection_id, e.g. SMS00001")
        elif self.collection_id is not None:
            raise ValueError(f"{self.odata_type} takes no collection_id")
        if self.filter_id is not None and normalize_guid(self.filter_id) != self.filter_id:
            raise ValueError("filter_id must be a lower-case GUID")
        if (self.filter_id is None) != (self.filter_type == "none"):
            raise ValueError("an assignment filter needs both its id and include/exclude")
        return self

    @classmethod
    def parse(cls, spec: str, filter_spec: str | None = None) -> AssignmentTarget:
        """Build a target from the CLI spelling (``group:<guid>``, ``all-devices``, ...; filter ``<guid>:include``)."""
        kind, _, value = spec.strip().partition(":")
        kind = kind.lower()  # ``Group:`` as Intune's portal capitalises it
        if kind not in _TARGET_KINDS:
            if normalize_guid(spec) is not None:
                raise UsageError(f"--target {spec!r}: a bare GUID is ambiguous; for a group write "
                                 f"--target group:{normalize_guid(spec)} (or exclude-group:<guid>)")
            choices = ", ".join(f"{k}:<id>" if v[1] else k for k, v in _TARGET_KINDS.items())
            raise UsageError(f"--target {spec!r}: unknown target kind {kind!r}; use one of {choices}")
        odata_type, id_field = _TARGET_KINDS[kind]
        fields: dict[str, Any] = {"odata_type": odata_type}
        if id_field == "group_id":
            guid = normalize_guid(value)
            if guid is None:
                raise UsageError(f"--target {spec!r}: {kind} needs a group object id (GUID) after the colon")
            fields["group_id"] = guid
        elif id_field == "collection_id":
            if not _COLLECTION.fullmatch(value.strip()):
                raise UsageError(f"--target {spec!r}: collection needs a collection id such as SMS00001")
            fields["collection_id"] = value.strip().upper()
        elif value:
            raise UsageError(f"--target {spec!r}: {kind} takes no value after the colon")
        if filter_spec:
            fid, _, ftype = filter_spec.strip().rpartition(":")
            guid = normalize_guid(fid)
            if guid is None or ftype not in ("include", "exclude"):
                raise UsageError(f"--filter {filter_spec!r}: expected <filter-guid>:include or <filter-guid>:exclude")
            fields["filter_id"], fields["filter_type"] = guid, ftype
        return cls(**fields)

    def to_graph(self) -> dict[str, Any]:
        """The ``target`` object exactly as Graph wants it (concrete type with its leading ``#``)."""
        out: dict[str, Any] = {"@odata.type": self.odata_type}
        if self.group_id is not None:
            out["groupId"] = self.group_id
        if self.collection_id is not None:
            out["collectionId"] = self.collection_id
        if self.filter_id is not None:
            out["deviceAndAppManagementAssignmentFilterId"] = self.filter_id
            out["deviceAndAppManagementAssignmentFilterType"] = self.filter_type
        return out

    def matches(self, graph_target: Any) -> bool:
        """True when a target read back from Graph is this one (used to verify possibly-committed writes).

        Type, group or collection, and assignment filter must all agree: a group assignment with another
        filter is a different assignment. Ids compare case-insensitively; a missing filter, a null one and
        filter type ``none`` all mean "no filter".
        """
        if not isinstance(graph_target, dict):
            return False
        kind = str(graph_target.get("@odata.type", ""))
        if kind.lstrip("#") != self.odata_type.lstrip("#"):
            return False
        filter_type = str(graph_target.get("deviceAndAppManagementAssignmentFilterType") or "none").lower()
        filter_id = None
        if filter_type != "none":
            filter_id = _lower(graph_target.get("deviceAndAppManagementAssignmentFilterId"))
        return (
            _lower(graph_target.get("groupId")) == _lower(self.group_id)
            and _lower(graph_target.get("collectionId")) == _lower(self.collection_id)
            and (filter_type, filter_id) == (self.filter_type, self.filter_id)
        )

    def describe(self) -> str:
        """The CLI spelling back, for logs and summaries."""
        for kind, (odata_type, _) in _TARGET_KINDS.items():
            if odata_type == self.odata_type:
                value = self.group_id or self.collection_id
                text = f"{kind}:{value}" if value else kind
                if self.filter_id:
                    text += f" filter {self.filter_id}:{self.filter_type}"
                return text
        return self.odata_type  # pragma: no cover - every type is in the table


def _lower(value: Any) -> str | None:
    return str(value).lower() if value else None


def assignment_body(target: AssignmentTarget) -> dict[str, Any]:
    """The seed page's request body with a concrete target."""
    return {"@odata.type": ASSIGNMENT_ODATA_TYPE, "target": target.to_graph()}


MAX_GROUP_TAG = 255  # Graph documents no limit; a longer value is almost surely a wrong column


def group_tag_problem(tag: str) -> str | None:
    """Why ``tag`` cannot be a group tag, or None. Empty clears a tag (undo restores an empty one)."""
    if len(tag) > MAX_GROUP_TAG:
        return f"a group tag of {len(tag)} characters (at most {MAX_GROUP_TAG})"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in tag):
        return "a group tag with a control character"
    return None


class Status(StrEnum):
    """What finally happened to one input row."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    PLANNED = "planned"


class SkipReason(StrEnum):
    DUPLICATE = "duplicate"
    ALREADY_SUCCEEDED = "already_succeeded"
    ALREADY_ASSIGNED = "already_assigned"
    ALREADY_TAGGED = "already_tagged"  # --group-tag: the device carried the tag before this folder's run
    CHANGED_SINCE = "changed_since"  # undo: something else changed the device since the run; left as it is
    LANDED = "landed"  # this folder's own in-doubt write: a read-back found it had landed (undo may reverse it)
    ALREADY_MEMBER = "already_member"  # --add-to-group: a member before this folder's write (never undone)
    NOT_MEMBER = "not_member"  # undo of --add-to-group: the device is not in the group (never added, or removed)
    # undo of the seed call (--include-seed-assignments):
    NOT_RECORDED = "not_recorded"  # the folder's assignment landed but its id was never seen: not deleted
    SHARED_ASSIGNMENT = "shared_assignment"  # names the profile assignment another device's row deletes (once)
    NOT_FOUND = "not_found"  # the DELETE answered 404: the assignment is gone already


# Skips that mean "done": a resume counts these devices and never sends them again (history and the index
# both decide with this one set; StrEnum members equal their values, so it matches either)
DONE_SKIPS = frozenset({SkipReason.ALREADY_ASSIGNED, SkipReason.ALREADY_SUCCEEDED, SkipReason.LANDED,
                        SkipReason.ALREADY_TAGGED, SkipReason.CHANGED_SINCE, SkipReason.ALREADY_MEMBER,
                        SkipReason.NOT_MEMBER, SkipReason.NOT_RECORDED, SkipReason.SHARED_ASSIGNMENT,
                        SkipReason.NOT_FOUND})


@dataclass(slots=True)
class InputRow:
    """One row from an input file: a normalised device id, or the reason it is unusable."""

    source_line: int
    device_id: str | None
    raw: str = ""
    error_code: str | None = None  # InvalidGuid | MissingId | unknown_serial | ambiguous_serial
    error_message: str | None = None
    serial: str | None = None  # a serial-number row: what the file said (trimmed); resolved to device_id
    value: str | None = None  # a per-row value for the operation (``--group-tag-column``), as the file says it
    previous: str | None = None  # the device's state before this write (its group tag), journaled for undo
    skip: SkipReason | None = None  # decided by whoever made the row (undo): skipped, ``error_message`` says why
    key: bytes | None = None  # the device id's 16 bytes (``inputs.keys``) when the reader made them on the way


@dataclass(slots=True)
class DeviceResult:
    """The one record every input row ends as (``results.jsonl`` / ``results.csv``)."""

    device_id: str
    status: Status
    skip_reason: SkipReason | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    assignment_id: str | None = None
    attempts: int = 0
    request_id: str | None = None
    client_request_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    source_line: int | None = None
    run_id: str | None = None
    serial_number: str | None = None  # the input's serial for serial input; empty for id input (last: design.md)
    previous_group_tag: str | None = None  # --group-tag: the tag the device had before (what undo restores)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict in the column order of the README (one per device: kept cheap)."""
        out = {name: getattr(self, name) for name in RESULT_COLUMNS}
        out["status"] = self.status.value
        if self.skip_reason is not None:
            out["skip_reason"] = self.skip_reason.value
        return out


RESULT_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DeviceResult))
FAILURE_COLUMNS = ("device_id", "source_line", "http_status", "error_code", "error_message", "client_request_id",
                   "request_id")
INVALID_COLUMNS = ("source_line", "raw", "error_code", "error_message")


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text (swapped atomically)


def utc_now() -> str:
    """ISO-8601 UTC with ``Z`` and milliseconds, as every timestamp in the reports.

    Two per device: the date part is formatted once per second, not per call (strftime was a visible
    share of the engine's CPU at thousands of devices per second).
    """
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if second != cached[0]:
        cached = _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return cached[1] + _MILLIS[int((now - second) * 1000)]


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
