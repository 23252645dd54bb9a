"""GUID normalisation: the only gate between user input and a URL path.

Device ids go into ``.../windowsAutopilotDeviceIdentities/{id}/...``; anything that is not exactly
8-4-4-4-12 hex digits could turn into path injection (``../../users``), so nothing else passes.
"""

from __future__ import annotations

import re

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
