"""``--inventory FILE``: the device ids the emulated tenant knows (everything else answers 404).

Accepts a plain list (one GUID per line, blank lines and ``#`` comments ignored) or a CSV whose first
column holds the GUID, with or without a header row. Anything else is a mistake the user should hear
about with the file and line, not a silently smaller tenant.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import InputFileError
from ..guid import normalize_guid


def load_inventory(path: str | Path) -> frozenset[str]:
    """The lower-case GUIDs in ``path``; raises ``InputFileError`` naming the file and line of a bad row."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(name, None, f"cannot read inventory: {getattr(exc, 'strerror', None) or exc}") from None
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
