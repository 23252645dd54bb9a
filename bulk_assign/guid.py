"""GUID normalisation: the only gate between user input and a URL path.

Device ids go into ``.../windowsAutopilotDeviceIdentities/{id}/...``; anything that is not exactly
8-4-4-4-12 hex digits could turn into path injection (``../../users``), so nothing else passes.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def normalize_guid(value: str) -> str | None:
    """Return the lower-case GUID in ``value`` (whitespace and one pair of braces allowed), else None.

    Any GUID version is accepted: Autopilot ids are v4 in practice, but nothing documents that.
    """
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if len(text) == 36 and _GUID.fullmatch(text):
        return text.lower()
    return None


def is_guid(value: str) -> bool:
    """True only for an already normalised (lower-case, bare) GUID."""
    return len(value) == 36 and value == value.lower() and _GUID.fullmatch(value) is not None


# The ids the seed call's 201 carries, as the service forms them: a GUID (an assignment of the device), or
# Intune's ``{profileId}_{groupId}`` for a group assignment of a profile, ``_N`` for a repeat of one.
_LOWER_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PROFILE_ASSIGNMENT_ID = re.compile(rf"({_LOWER_GUID})_({_LOWER_GUID})(?:_[0-9]{{1,6}})?")


class AssignmentId(NamedTuple):
    """A recorded assignment id that passed its grammar: ``profile`` is None for a per-device one (a GUID),
    else the profile the ``{profileId}_{groupId}`` id belongs to (and ``group`` the group it targets)."""

    id: str
    profile: str | None = None
    group: str | None = None


def parse_assignment_id(value: str) -> AssignmentId | None:
    """``value`` as an assignment id, lower-cased, if it is exactly one the service forms; else None (nothing
    else may reach a URL path: a tampered record such as ``../../users`` stays out)."""
    text = value.lower()
    if len(text) == 36 and _GUID.fullmatch(text):
        return AssignmentId(text)
    match = PROFILE_ASSIGNMENT_ID.fullmatch(text) if len(text) <= 80 else None
    if match is None:
        return None
    return AssignmentId(text, match.group(1), match.group(2))


def checked_guid(value: str) -> str:
    """Refuse anything that is not a normalised GUID before it can reach a URL path (ids are normalised where
    they are read, so a failure here is a programming error, never user input)."""
    if not is_guid(value):
        raise ValueError("not a normalised GUID")
    return value
