"""What a run folder changed, read back for ``bulk-assign undo``: the folder's pin and its journaled intents.

Why the journal and not the results: an intent is written (fsynced) *before* its request leaves, with the
device's previous state and the new one, so a write that may have landed without a record (a kill, a
timeout) is still known. The earliest ``prev`` of a device is its state before the folder touched it;
the latest ``new`` is what the folder last set. Undo compares the device's current state with that
``new`` before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from ..errors import UsageError
from ..guid import PROFILE_ASSIGNMENT_ID, normalize_guid
from ..safefs import open_read
from .journal import iter_intents
from .pin import PIN_NAME, read_pin

PROFILE_RECORD = "profile-assignment.json"  # --profile: the profile-to-group assignment this folder made
_ASSIGNMENT_ID = PROFILE_ASSIGNMENT_ID  # ``{profileId}_{groupId}`` (``_N``): guid.py has the grammar


def created_assignment(out_dir: Path) -> tuple[str, str] | None:
    """(profile, assignment id) of the profile-to-group assignment this folder created, if it did.

    The id reaches a URL path, so it is checked against the grammar Intune uses for these ids
    (``{profileId}_{groupId}``) and refused otherwise: a tampered record cannot steer the DELETE elsewhere.
    """
    try:
        with open_read(out_dir / PROFILE_RECORD) as handle:
            record = orjson.loads(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"{out_dir / PROFILE_RECORD}: cannot read it ({exc})") from None
    if not isinstance(record, dict) or not record.get("created"):
        return None
    profile, assignment = normalize_guid(str(record.get("profile", ""))), str(record.get("id", ""))
    if profile is None or not _ASSIGNMENT_ID.fullmatch(assignment.lower()):
        raise UsageError(f"{out_dir / PROFILE_RECORD}: not a profile assignment this tool recorded; not removed")
    return profile, assignment


@dataclass(slots=True)
class Change:
    """One device this folder changed (or may have): the state to restore, and the one it set."""

    device_id: str
    previous: str
    new: str


def folder_pin(out_dir: Path) -> dict[str, str]:
    """The operation a folder was pinned to; ``UsageError`` when the folder has none (nothing to undo)."""
    pin = read_pin(out_dir)
    if pin is None:
        raise UsageError(f"{out_dir} has no {PIN_NAME}: it is not a bulk-assign run folder (or comes from a "
                         "version that did not record its operation), so there is nothing it can undo")
    return pin


def recorded_changes(out_dir: Path) -> list[Change]:
    """Every device with a journaled group-tag intent in ``out_dir``, in the order first written."""
    changes: dict[str, Change] = {}
    for intent in iter_intents(out_dir):
        device = normalize_guid(str(intent["intent"]))
        prev, new = intent.get("prev"), intent.get("new")
        if device is None or not isinstance(prev, str) or not isinstance(new, str):
            continue
        known = changes.get(device)
        if known is None:
            changes[device] = Change(device, prev, new)
        else:
            known.new = new  # the earliest previous state stays; the latest value set wins
    return list(changes.values())


def recorded_members(out_dir: Path) -> dict[str, str]:
    """``--add-to-group`` folders: every device with a journaled add (Autopilot id -> the Entra ``deviceId``
    its intent named), in the order first written. Devices that were members before the run were skipped
    with no intent, so they are never among these."""
    added: dict[str, str] = {}
    for intent in iter_intents(out_dir):
        device, entra = normalize_guid(str(intent["intent"])), normalize_guid(str(intent.get("new") or ""))
        if device is not None and entra is not None:
            added.setdefault(device, entra)
    return added
