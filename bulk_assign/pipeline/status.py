"""What Intune says about each input device: one listing read serves every device, polled until assigned.

Why the listing and not the device's own GET: the single-device GET has been reported to say ``unknown``
while the listing is right (docs/graph-facts.md). Pure decisions (``classify``, ``StatusBook.exit_code``,
``next_interval``) are separate from the polling loop, which takes an injected clock and sleep.

States, from Graph's ``deploymentProfileAssignmentStatus`` (kept verbatim in the record):
``assigned`` (assignedInSync, assignedOutOfSync, assignedUnkownSyncState: Graph's spelling),
``pending`` (pending, unknown, or no value yet: not yet known), ``not_assigned``, ``failed``; and ours:
``unknown_device`` (not in the tenant), ``ambiguous_serial``, ``invalid`` (an unusable row),
``wrong_profile`` (``--expect-profile``: another profile won).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ..graph.operations import UNKNOWN_DEVICE, profile_path
from ..graph.outcome import Attempt, Kind
from ..guid import is_guid
from ..inputs.serials import AMBIGUOUS_SERIAL, SerialDirectory
from ..models import InputRow, utc_now
from ..tenant import ASSIGNED_STATES, TenantDevice

log = logging.getLogger("bulk_assign")

ASSIGNED, PENDING, NOT_ASSIGNED, FAILED = "assigned", "pending", "not_assigned", "failed"
AMBIGUOUS, INVALID, WRONG_PROFILE = AMBIGUOUS_SERIAL, "invalid", "wrong_profile"
STATES = (ASSIGNED, PENDING, NOT_ASSIGNED, FAILED, UNKNOWN_DEVICE, AMBIGUOUS, INVALID, WRONG_PROFILE)
_EXIT_1 = frozenset({NOT_ASSIGNED, FAILED, UNKNOWN_DEVICE, AMBIGUOUS, INVALID, WRONG_PROFILE})
_MOVING = frozenset({PENDING, NOT_ASSIGNED})  # states a wait can see change (Intune is still working)
MAX_INTERVAL = 300.0

EXIT_MEANINGS = {
    0: "every device is assigned",
    1: "some devices are not assigned, failed, unknown to the tenant, ambiguous or invalid",
    4: "some devices are still pending (or unknown to Graph): check again later",
}


def classify(assignment_status: str) -> str:
    """Our state for Graph's value."""
    if assignment_status in ASSIGNED_STATES:
        return ASSIGNED
    if assignment_status == "notAssigned":
        return NOT_ASSIGNED
    if assignment_status == "failed":
        return FAILED
    return PENDING  # pending, unknown, empty: not yet known


def next_interval(current: float, first: float) -> float:
    """Polling backs off by half each time, up to five minutes (or the first interval, if longer)."""
    return min(current * 1.5, max(first, MAX_INTERVAL))


@dataclass(slots=True)
class StatusRecord:
    """One input row's status (``status.csv`` / ``status.jsonl``)."""

    source_line: int
    device_id: str
    serial_number: str
    state: str
    group_tag: str = ""
    assignment_status: str = ""
    assigned_at: str = ""
    enrollment_state: str = ""
    checked_at: str = ""
    note: str = ""


STATUS_COLUMNS = ("device_id", "serial_number", "group_tag", "assignment_status", "assigned_at", "checked_at",
                  "state", "enrollment_state", "note", "source_line")


class StatusBook:
    """The input rows and their latest status; ``update`` applies one listing to all of them."""

    def __init__(self, rows: Iterable[InputRow]) -> None:
        self.records: list[StatusRecord] = []
        self.history: list[dict[str, object]] = []  # counts by state at each poll
        self._rows: list[InputRow] = []
        for row in rows:
            self._rows.append(row)
            self.records.append(StatusRecord(row.source_line, row.device_id or row.raw, row.serial or "",
                                             INVALID if row.device_id is None and row.serial is None else PENDING,
                                             note=row.error_message or ""))

    def update(self, devices: list[TenantDevice]) -> None:
        by_id = {d.id: d for d in devices}
        directory = SerialDirectory(devices) if any(r.serial is not None for r in self._rows) else None
        now = utc_now()
        for row, record in zip(self._rows, self.records, strict=True):
            if record.state in (INVALID, AMBIGUOUS, WRONG_PROFILE):
                continue
            device_id = row.device_id
            if device_id is None and row.serial is not None and directory is not None:
                resolved = directory.resolve(InputRow(row.source_line, None, row.raw, serial=row.serial))
                device_id = resolved.device_id
                if resolved.error_code == AMBIGUOUS_SERIAL:
                    record.state, record.note = AMBIGUOUS, resolved.error_message or ""
                    continue
            device = by_id.get(device_id) if device_id is not None else None
            record.checked_at = now
            if device is None:
                record.state = UNKNOWN_DEVICE
                record.note = "not in the tenant's Autopilot devices: its hardware hash may not be imported yet"
                continue
            record.device_id = device.id
            record.serial_number = record.serial_number or device.serial_number
            record.group_tag, record.assignment_status = device.group_tag, device.assignment_status
            record.assigned_at = device.assigned_at if device.assigned else ""
            record.enrollment_state = device.enrollment_state
            record.state = classify(device.assignment_status)
            record.note = ("already enrolled: it ignores a new profile until it is reset"
                           if device.enrollment_state == "enrolled" else "")

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for record in self.records:
            out[record.state] += 1
        return {k: v for k, v in out.items() if v}

    def by_graph_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in self.records:
            if record.assignment_status:
                out[record.assignment_status] = out.get(record.assignment_status, 0) + 1
        return out

    def moving(self) -> int:
        return sum(1 for r in self.records if r.state in _MOVING)

    def exit_code(self) -> int:
        """1 when any device is in a bad state, else 4 when any is still pending, else 0 (first wins)."""
        states = {r.state for r in self.records}
        if states & _EXIT_1:
            return 1
        if PENDING in states:
            return 4
        return 0


Get = Callable[[str], Awaitable[Attempt]]


async def check_profiles(book: StatusBook, get: Get, graph_url: str, expected: str, *, concurrency: int = 8) -> int:
    """``--expect-profile``: read each assigned device's ``deploymentProfile``; another profile is
    ``wrong_profile``. Why: when several profiles apply the oldest-created wins, so ``assignedInSync`` alone
    can hide the wrong one. Returns how many devices were read (each is one read of the budget)."""
    gate = asyncio.Semaphore(concurrency)
    checked = [r for r in book.records if r.state == ASSIGNED and is_guid(r.device_id)]

    async def one(record: StatusRecord) -> None:
        async with gate:
            attempt = await get(graph_url + profile_path(record.device_id))
        body = attempt.body if attempt.kind is Kind.SUCCESS else None
        profile = str(body.get("id", "")).lower() if isinstance(body, dict) else None
        if attempt.kind is Kind.SUCCESS and profile != expected:
            name = body.get("displayName") if isinstance(body, dict) else None
            record.state = WRONG_PROFILE
            record.note = f"profile {profile}{f' ({name})' if name else ''} won, not {expected}"
        elif attempt.http_status == 404:
            record.state = NOT_ASSIGNED
            record.note = "Graph says the device has no deployment profile"
        elif attempt.kind is not Kind.SUCCESS:
            record.note = f"could not read the device's profile: {attempt.error_code}"

    await asyncio.gather(*(one(r) for r in checked))
    return len(checked)


Poll = Callable[[], Awaitable[list[TenantDevice]]]
Sleep = Callable[[float], Awaitable[None]]


async def watch(book: StatusBook, poll: Poll, *, wait: float | None, interval: float, sleep: Sleep = asyncio.sleep,
                clock: Callable[[], float] = time.monotonic,
                on_poll: Callable[[StatusBook, int, float | None], None] | None = None) -> int:
    """Read the listing once, then (with ``wait``) again with back-off until no device is pending or not
    assigned, or the wait runs out; the last poll lands on the deadline. Returns how many polls; each
    poll's counts are kept in ``book.history`` (the report's chart)."""
    deadline = clock() + wait if wait is not None else None
    polls, step = 0, interval
    while True:
        book.update(await poll())
        polls += 1
        book.history.append({"t": utc_now(), "by_state": book.counts()})
        left = deadline - clock() if deadline is not None else None
        if on_poll is not None:
            on_poll(book, polls, left)
        if left is None or left <= 0 or not book.moving():
            return polls
        await sleep(min(step, left))
        step = next_interval(step, interval)
