"""Undo of a seed-call folder (``--target``): which assignments it created *and recorded*, as undo's rows.

Why the results and not the journal (as for group tags): an intent is written before the POST leaves, so
it cannot hold the id the service gives the assignment; only a ``succeeded`` record with an
``assignment_id`` does. The folder's merged view decides (the last record of each device wins, except a
record that only points elsewhere, ``duplicate`` or ``already_succeeded``, as ``history.merge_reports``
chooses). What each device becomes (``plan_seed_undo``, pure):

- ``succeeded`` with a GUID id: a row that deletes the device's assignment;
- ``succeeded`` with ``{profileId}_{groupId}`` (``_N``): under the profile reading of the seed call, a
  group assignment of the device's profile, which may serve many devices. The first device naming an id
  gets the row that deletes it; later devices naming the same id are ``skipped``/``shared_assignment``,
  their message naming that device. Why skipped and not ``succeeded``: ``succeeded`` says a request for
  this row succeeded, and no record then depends on another's outcome; the one row that carries the
  DELETE is the one a ``--resume`` retries if it failed;
- ``succeeded`` with anything else: ``invalid`` (``InvalidAssignmentId``), never put into a URL;
- ``skipped``/``landed`` (a read-back found this folder's in-doubt write had landed), ``succeeded`` without
  an id (a 2xx whose body could not be read), and devices with an intent but no record (the run stopped
  while they were in flight): their id was never seen, so nothing can be deleted for them; each is
  ``skipped``/``not_recorded``, saying why;
- ``already_assigned`` (there before the folder), failures and the rest: no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..guid import normalize_guid, parse_assignment_id
from ..models import InputRow, SkipReason, Status
from .history import iter_results
from .journal import iter_intents

INVALID_ASSIGNMENT_ID = "InvalidAssignmentId"
_POINTERS = frozenset({SkipReason.DUPLICATE.value, SkipReason.ALREADY_SUCCEEDED.value})
_UNDECIDED = ""  # the status of a device with an intent and no record


@dataclass(frozen=True, slots=True)
class SeedRecord:
    """One device of a seed-call folder as its merged record says (status ``""``: an intent, no record)."""

    device_id: str
    status: str
    skip_reason: str | None = None
    assignment_id: str | None = None


def seed_records(out_dir: Path) -> Iterator[SeedRecord]:
    """Every device of ``out_dir`` with a record or an intent, its merged record, in the order first seen."""
    latest: dict[str, SeedRecord] = {}
    for record in iter_results(out_dir):
        device = normalize_guid(record["device_id"]) if isinstance(record.get("device_id"), str) else None
        status = record["status"]
        if device is None or status == Status.INVALID.value:
            continue
        reason = record.get("skip_reason")
        if status == Status.SKIPPED.value and reason in _POINTERS and device in latest:
            continue  # it only points at the device's real outcome
        aid = record.get("assignment_id")
        latest[device] = SeedRecord(device, status, str(reason) if reason else None,
                                    str(aid) if aid not in (None, "") else None)
    for intent in iter_intents(out_dir):
        device = normalize_guid(str(intent["intent"]))
        if device is not None and device not in latest:
            latest[device] = SeedRecord(device, _UNDECIDED)
    yield from latest.values()


@dataclass
class SeedUndoPlan:
    """Undo's rows for a seed-call folder, and the counts its messages give."""

    rows: list[InputRow] = field(default_factory=list)
    per_device: int = 0  # GUID ids: one DELETE each, on the device's path
    profile_ids: dict[str, list[str]] = field(default_factory=dict)  # profile -> its distinct ids, first seen
    profile_devices: int = 0  # devices whose records name one of those
    groups: dict[str, set[str]] = field(default_factory=dict)  # profile -> the groups its ids target
    not_recorded: int = 0
    refused: int = 0

    @property
    def profile_assignments(self) -> int:
        return sum(len(ids) for ids in self.profile_ids.values())

    @property
    def deletes(self) -> int:
        """The assignments this folder created and recorded: one DELETE each."""
        return self.per_device + self.profile_assignments

    def refusal(self, folder: Path, target: str | None = None) -> str:
        """Why undo of a seed-call folder needs ``--include-seed-assignments`` (exit 2, nothing sent)."""
        run = f"--target {target}" if target else "--target"
        parts = [f"{folder} holds a seed-call run (assign-profile, {run}): it created and recorded {self.deletes:,} "
                 f"assignment(s)"]
        if self.per_device:
            parts.append(f"; {self.per_device:,} are per-device (deleting one removes this folder's target from "
                         "that device)")
        if self.profile_assignments:
            parts.append(f"; {self.profile_assignments:,} are profile assignments ({{profileId}}_{{groupId}}, named "
                         f"by {self.profile_devices:,} device record(s)): deleting one removes its group from that "
                         "deployment profile for every device of the profile, not only for this folder's")
        if self.not_recorded:
            parts.append(f"; {self.not_recorded:,} more device(s) may carry an assignment of this folder whose id "
                         "was never recorded: those cannot be deleted, only reported")
        if self.refused:
            parts.append(f"; {self.refused:,} recorded id(s) are not ids the service forms and would be refused")
        parts.append(". To delete them, run again with --include-seed-assignments; nothing was sent")
        return "".join(parts)

    def describe(self) -> str:
        """What the undo will do, in one line (said before it starts)."""
        text = f"deleting the {self.deletes:,} assignment(s) this folder created and recorded"
        if self.per_device and self.profile_assignments:
            text += f" ({self.per_device:,} per-device, {self.profile_assignments:,} profile assignments)"
        if self.not_recorded:
            text += f"; {self.not_recorded:,} device(s) whose assignment id was never recorded: reported, not deleted"
        if self.refused:
            text += f"; {self.refused:,} recorded id(s) that are not the service's are refused"
        return text

    def shared_warning(self) -> str | None:
        """What deleting the profile assignments means, said before any is deleted (None: there are none)."""
        if not self.profile_ids:
            return None
        listed = "; ".join(f"profile {p}: {len(ids):,} assignment(s) of group(s) {', '.join(sorted(self.groups[p]))}"
                           for p, ids in self.profile_ids.items())
        return (f"{self.profile_devices:,} device record(s) name {self.profile_assignments:,} profile assignment(s) "
                "({profileId}_{groupId}). Under the profile reading of the seed call each is an assignment of a group "
                "to the device's deployment profile, and may serve many devices: deleting one removes that group "
                "from that profile for every device of the profile, not only for the devices of this folder. Each "
                f"is deleted once ({listed})")


def plan_seed_undo(records: Iterable[SeedRecord]) -> SeedUndoPlan:
    """Undo's rows for a seed-call folder's records (the module docstring says what each becomes)."""
    plan = SeedUndoPlan()
    carriers: dict[str, str] = {}  # profile assignment id -> the device whose row deletes it
    for record in records:
        device, line = record.device_id, len(plan.rows) + 1
        if record.status == Status.SUCCEEDED.value and record.assignment_id is not None:
            recorded = parse_assignment_id(record.assignment_id)
            if recorded is None:
                plan.refused += 1
                shown = record.assignment_id if len(record.assignment_id) <= 80 else record.assignment_id[:77] + "..."
                plan.rows.append(InputRow(line, None, device, error_code=INVALID_ASSIGNMENT_ID, error_message=(
                    f"its recorded assignment_id {shown!r} is neither a GUID nor {{profileId}}_{{groupId}}, the "
                    "ids the service gives: it is never put into a URL; nothing deleted for this device")))
                continue
            if recorded.profile is None:
                plan.per_device += 1
                plan.rows.append(InputRow(line, device, device, value=recorded.id))
                continue
            plan.profile_devices += 1
            carrier = carriers.get(recorded.id)
            if carrier is not None:
                plan.rows.append(InputRow(line, device, device, skip=SkipReason.SHARED_ASSIGNMENT, error_message=(
                    f"names profile assignment {recorded.id}, which device {carrier}'s row deletes, once, for "
                    f"every device of profile {recorded.profile}")))
                continue
            carriers[recorded.id] = device
            plan.profile_ids.setdefault(recorded.profile, []).append(recorded.id)
            plan.groups.setdefault(recorded.profile, set()).add(str(recorded.group))
            plan.rows.append(InputRow(line, device, device, value=recorded.id))
            continue
        why = _never_recorded(record)
        if why is not None:
            plan.not_recorded += 1
            plan.rows.append(InputRow(line, device, device, skip=SkipReason.NOT_RECORDED, error_message=why))
    return plan


def _never_recorded(record: SeedRecord) -> str | None:
    """Why a device may carry this folder's assignment with no id to delete it by (None: it carries none)."""
    if record.status == Status.SKIPPED.value and record.skip_reason == SkipReason.LANDED.value:
        return ("a read-back found this folder's assignment had landed after a try that may have committed, so its "
                "id was never seen: not deleted (remove it in Intune if it must go)")
    if record.status == Status.SUCCEEDED.value:
        return ("its POST succeeded but the answer carried no id (an unreadable 2xx body): not deleted (remove it in "
                "Intune if it must go)")
    if record.status == _UNDECIDED:
        return ("its POST was sent but the run stopped before an answer was recorded, so no id was ever seen: not "
                "deleted (a --resume of the run reads it back; remove it in Intune if it must go)")
    return None
