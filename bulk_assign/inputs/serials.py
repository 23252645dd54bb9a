"""Serial numbers -> Autopilot device ids, from one listing of the tenant (pure: no I/O).

Why a map of the tenant rather than a query per serial: the listing's only working filter is
``contains(serialNumber,'...')``, a substring match that fails on serials with ``-`` in them, and one
request per serial would spend the read budget on what 30 pages answer. The map grows with the tenant,
not with the input: a 1,000,000-row input of serials streams past it.

Matching is exact after trimming and ignoring case. A serial two devices share (re-imported hardware,
placeholder serials from a white-box vendor) is never guessed: the row is ``invalid`` with
``ambiguous_serial``, naming the ids, and nothing is written to any of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..models import InputRow
from ..tenant import TenantDevice

UNKNOWN_SERIAL = "unknown_serial"
AMBIGUOUS_SERIAL = "ambiguous_serial"
NOT_RESOLVED = "serial_not_resolved"

# what firmware says when the OEM never set a serial: such a serial rarely names one device
PLACEHOLDER_SERIALS = frozenset({"default string", "to be filled by o.e.m.", "system serial number", "0", ""})


def serial_key(serial: str) -> str:
    """The form serials are compared in: trimmed, case-folded."""
    return serial.strip().casefold()


def is_placeholder(serial: str) -> bool:
    return serial_key(serial) in PLACEHOLDER_SERIALS


class SerialDirectory:
    """Serial -> device id(s) of one tenant listing."""

    __slots__ = ("_many", "_one", "devices")

    def __init__(self, devices: Iterable[TenantDevice]) -> None:
        self._one: dict[str, str] = {}
        self._many: dict[str, list[str]] = {}
        self.devices = 0
        for device in devices:
            self.devices += 1
            key = serial_key(device.serial_number)
            if not key:
                continue
            if key in self._many:
                self._many[key].append(device.id)
            elif key in self._one:
                self._many[key] = [self._one.pop(key), device.id]
            else:
                self._one[key] = device.id

    def resolve(self, row: InputRow) -> InputRow:
        """``row`` with its device id when the serial names exactly one device, else an invalid row."""
        serial = row.serial
        if serial is None or row.device_id is not None:
            return row
        key = serial_key(serial)
        device_id = self._one.get(key)
        if device_id is not None:
            row.device_id = device_id
            return row
        placeholder = " (a placeholder the firmware reports when the OEM set no serial)" if is_placeholder(serial) \
            else ""
        ids = self._many.get(key)
        if ids is not None:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            row.error_code = AMBIGUOUS_SERIAL
            row.error_message = (f"serial {serial!r}{placeholder} is shared by {len(ids)} Autopilot devices "
                                 f"({shown}); nothing was written to any of them: list the device by its id")
        else:
            row.error_code = UNKNOWN_SERIAL
            row.error_message = (f"serial {serial!r}{placeholder} is not in the tenant's Autopilot devices: its "
                                 "hardware hash may not be imported into Autopilot yet")
        return row


def unresolved(row: InputRow) -> InputRow:
    """A serial row a dry run cannot resolve: it opens no connection, so it has no listing to match."""
    if row.serial is not None and row.device_id is None and row.error_code is None:
        row.error_code = NOT_RESOLVED
        row.error_message = ("a dry run opens no connection, so serials cannot be resolved: pass a saved listing "
                             "with --inventory-file FILE (bulk-assign inventory --out FILE) or rehearse online "
                             "with --plan")
    return row
