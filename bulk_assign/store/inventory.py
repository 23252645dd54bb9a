"""The tenant's listing as a file: ``inventory.jsonl`` in the output folder, and ``bulk-assign inventory --out``.

Why the folder keeps it: a ``--resume`` of a serial-number run must map the same serials to the same ids
without listing the tenant again (30 pages for 30,000 devices, at the read budget, every night).
``--refresh-inventory`` lists again. A dry run, which opens no connection, reads a saved one through
``--inventory-file``. One device per line with Graph's field names (JSON Lines), or a CSV with the same
names as its header; written atomically, so a killed run leaves the old file or the new one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import orjson

from ..errors import InputFileError
from ..safefs import atomic_file, open_read
from ..tenant import GRAPH_FIELDS, TenantDevice

INVENTORY_NAME = "inventory.jsonl"
CSV_COLUMNS = tuple(GRAPH_FIELDS.values())


def write_inventory(path: Path, devices: Iterable[TenantDevice]) -> int:
    """Write ``devices`` to ``path`` (``.csv`` as CSV, anything else as JSON Lines); returns how many."""
    count = 0
    as_csv = path.suffix.lower() == ".csv"
    with atomic_file(path, text=as_csv) as handle:
        if as_csv:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for device in devices:
                writer.writerow(device.to_graph().values())
                count += 1
        else:
            for device in devices:
                handle.write(orjson.dumps(device.to_graph(), option=orjson.OPT_APPEND_NEWLINE))
                count += 1
    return count


def read_inventory(path: Path) -> list[TenantDevice]:
    """A saved listing (JSON Lines or CSV, as ``write_inventory`` writes it, or Graph's field names in any
    case); ``InputFileError`` naming the file and line of anything that is not one device."""
    try:
        with open_read(path) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InputFileError(str(path), None, "no such inventory file (write one with bulk-assign inventory "
                             "--out FILE)") from None
    except OSError as exc:
        raise InputFileError(str(path), None, f"cannot read the inventory: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(str(path), data[:exc.start].count(b"\n") + 1, "the inventory is not UTF-8") from None
    if text.lstrip().startswith("{"):
        return _from_jsonl(path, text)
    return _from_csv(path, text)


def _from_jsonl(path: Path, text: str) -> list[TenantDevice]:
    devices: list[TenantDevice] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputFileError(str(path), number, f"not valid JSON: {exc}") from None
        devices.append(_device(path, number, item))
    return devices


def _from_csv(path: Path, text: str) -> list[TenantDevice]:
    reader = csv.DictReader(io.StringIO(text))
    fields = {name.lower() for name in reader.fieldnames or ()}
    if "id" not in fields:
        raise InputFileError(str(path), 1, "an inventory CSV needs an id column (and serialNumber to resolve "
                             f"serials); columns found: {', '.join(reader.fieldnames or ()) or 'none'}")
    devices: list[TenantDevice] = []
    try:
        for record in reader:
            devices.append(_device(path, reader.line_num, record))
    except csv.Error as exc:
        raise InputFileError(str(path), reader.line_num, f"not valid CSV: {exc}") from None
    return devices


def _device(path: Path, number: int, item: object) -> TenantDevice:
    device = TenantDevice.from_graph(item)
    if device is None:
        raise InputFileError(str(path), number, "not a device: each entry needs an id that is a GUID")
    return device
