"""Serial rows -> device ids, with the tenant map loaded once, the first time a serial row arrives.

Where the map comes from, first that applies: ``--inventory-file`` (offline, a dry run may use it), the
folder's ``inventory.jsonl`` (a ``--resume`` lists nothing again, unless ``--refresh-inventory``), else one
listing of the tenant (``pipeline/listing.py``), which is then saved in the folder. A dry run without a
saved inventory opens no connection: its serial rows are planned unresolved, saying what would resolve
them. Lazily, so id input never pays for any of it; and before the first serial row is queued, so nothing
is sent for a serial file before it is resolved.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from ..auth import TokenProvider
from ..config import Settings
from ..graph.operations import UNKNOWN_DEVICE, WRITE, Operation, Precheck
from ..graph.transport import Transport
from ..inputs.serials import SerialDirectory, is_placeholder, unresolved
from ..models import DeviceResult, InputRow, Status
from ..store.inventory import INVENTORY_NAME, read_inventory, write_inventory
from ..tenant import TenantDevice
from .listing import ListingReader, ListingStats
from .pacing import Pacer
from .retry import Sleep

log = logging.getLogger("bulk_assign")


class SerialResolver:
    """Resolves serial rows for one run; ``info`` says where the map came from (for summary.json)."""

    def __init__(self, settings: Settings, *, transport: Transport | None, tokens: TokenProvider | None,
                 pacer: Pacer, sleep: Sleep, rng: random.Random | None = None,
                 operation: Operation | None = None) -> None:
        self._s = settings
        self._transport = transport
        self._tokens = tokens
        self._pacer = pacer
        self._sleep = sleep
        self._rng = rng
        self._directory: SerialDirectory | None = None
        self._loaded = False
        self.info: dict[str, Any] | None = None
        self.placeholders = 0
        self._by_id: dict[str, TenantDevice] | None = None
        self._operation = operation
        self._plan_counts: dict[str, int] = {}

    async def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            devices = await self.tenant_devices()
            self._directory = SerialDirectory(devices) if devices is not None else None
            needs = self._s.plan or (self._operation is not None and self._operation.needs_inventory)
            if needs and devices is not None:
                self._by_id = {d.id: d for d in devices}

    async def precheck(self, row: InputRow) -> Precheck:
        """The operation's decision for ``row`` against the listing (``--group-tag``: already tagged?); a
        write when there is no listing to decide from (a dry run without ``--inventory-file``)."""
        await self._load()
        if self._by_id is None or self._operation is None:
            return WRITE
        return self._operation.precheck(row, self._by_id.get(row.device_id or ""))

    async def plan(self, row: InputRow, record: DeviceResult) -> DeviceResult:
        """``--plan``: what the write would meet, from the listing. A device the tenant does not know is
        ``invalid``/``unknown_device`` (its write would answer 404); the others stay ``planned``, with a note
        when Intune's state matters (already assigned, enrolled)."""
        await self._load()
        device = self._by_id.get(row.device_id or "") if self._by_id is not None else None
        if device is None:
            record.status, record.error_code = Status.INVALID, UNKNOWN_DEVICE
            record.error_message = "not in the tenant's Autopilot devices: the write would answer 404"
            self._count(UNKNOWN_DEVICE)
            return record
        status = device.assignment_status or "unknown"
        self._count(f"now {status}")
        notes = [self._operation.plan_note(row, device) if self._operation is not None
                 else f"would write; Intune says {status} now"]
        if device.enrollment_state == "enrolled":
            notes.append("already enrolled: it ignores a new profile until it is reset")
            self._count("enrolled")
        record.error_message = "; ".join(notes)
        return record

    def _count(self, key: str) -> None:
        self._plan_counts[key] = self._plan_counts.get(key, 0) + 1
        if self.info is not None:
            self.info["plan"] = self._plan_counts

    async def __call__(self, row: InputRow) -> InputRow:
        await self._load()
        if row.serial is not None and is_placeholder(row.serial):
            self.placeholders += 1
            if self.placeholders == 1:
                log.warning("line %d: serial %r is a placeholder firmware reports when the OEM set none; such "
                            "serials rarely name one device", row.source_line, row.serial)
        if self._directory is None:
            return unresolved(row)
        return self._directory.resolve(row)

    async def tenant_devices(self) -> list[TenantDevice] | None:
        """The tenant's devices from the first source that applies (module docstring); None in a dry run
        without a saved inventory."""
        s = self._s
        folder = s.out_dir / INVENTORY_NAME if s.out_dir is not None else None
        if s.inventory_file is not None:
            return self._from_file(s.inventory_file, "inventory-file")
        # An operation that decides from the devices' current state (a group tag) lists the tenant again on a
        # resume: the folder's copy says what the tags were before the last run wrote some of them, and a
        # device whose write landed without a record would be written again.
        current = self._operation is not None and self._operation.needs_inventory
        if folder is not None and not s.refresh_inventory and folder.is_file() and not current:
            return self._from_file(folder, "folder")
        if s.dry_run or self._transport is None or self._tokens is None:
            self.info = {"source": "none", "devices": 0}
            log.warning("a dry run opens no connection, so the tenant's listing is not read (serials stay "
                        "unresolved, current group tags unknown): pass --inventory-file FILE (written by "
                        "bulk-assign inventory) or rehearse online with --plan")
            return None
        stats = ListingStats(on_page=_log_page)
        log.info("listing the tenant's Autopilot devices")
        reader = ListingReader(s, transport=self._transport, tokens=self._tokens, pacer=self._pacer,
                               sleep=self._sleep, rng=self._rng)
        devices = await reader.read_all(stats)
        if folder is not None:
            write_inventory(folder, devices)
        log.info("listed %d devices in %d page(s), %.1f s (%d request(s), %d throttled)%s", len(devices),
                 stats.pages, stats.seconds, stats.requests, stats.throttled,
                 f"; saved as {folder}" if folder is not None else "")
        self.info = {"source": "listing", "devices": len(devices), "pages": stats.pages, "requests": stats.requests,
                     "throttled_429": stats.throttled, "seconds": round(stats.seconds, 3)}
        return devices

    def _from_file(self, path: Path, source: str) -> list[TenantDevice]:
        devices = read_inventory(path)
        log.info("serials resolved from %s (%d devices)%s", path, len(devices),
                 "; --refresh-inventory lists the tenant again" if source == "folder" else "")
        self.info = {"source": source, "path": str(path), "devices": len(devices)}
        return devices


def _log_page(stats: ListingStats) -> None:
    if stats.pages % 10 == 0:
        log.info("listing: %d pages, %d devices so far", stats.pages, stats.devices)
