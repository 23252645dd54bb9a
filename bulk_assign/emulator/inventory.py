"""``--inventory FILE``: the devices the emulated tenant knows (everything else answers 404).

Two kinds of file. A *tenant* file describes each device: JSON Lines of objects, or a CSV with a header,
carrying ``id`` and any of ``serialNumber``, ``groupTag``, ``azureActiveDirectoryDeviceId``,
``manufacturer`` and ``model`` (Graph's field names, any case), so serial resolution and the listing can
be rehearsed. A plain list (one GUID per line, blank lines and ``#`` comments ignored) or a CSV whose first
column holds the GUID, with or without a header row. Anything else is a mistake the user should hear
about with the file and line, not a silently smaller tenant.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson

from ..errors import InputFileError
from ..guid import normalize_guid

DETAIL_FIELDS = ("serialNumber", "groupTag", "azureActiveDirectoryDeviceId", "manufacturer", "model")
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
    return guid, {_BY_LOWER[k]: str(v) for k, v in lowered.items() if k in _BY_LOWER and v is not None}


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
