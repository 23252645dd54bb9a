"""``bulk-assign inventory --out FILE``: the tenant's whole Autopilot listing as a CSV or JSON Lines file.

For admins who want the listing itself, and for ``--dry-run --inventory-file FILE``, which resolves serials
offline. The same reader as a run: read budget, retry rules, nextLinks rebased onto ``--graph-url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..auth import TokenProvider
from ..config import Settings
from ..errors import BulkAssignError
from ..pipeline.listing import ListingStats
from ..store.inventory import write_inventory
from .run import log_to_stderr
from .status import _fail, listing_reader, read_options, read_settings

log = logging.getLogger("bulk_assign")


@click.command("inventory")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.csv or FILE.jsonl (Graph's field names)")
@read_options
def inventory_command(out_file: Path, **options: Any) -> None:
    """Write the tenant's Autopilot devices (id, serial, group tag, status, ...) to a file."""
    try:
        settings, tokens = read_settings(options)
        log_to_stderr()
        stats = asyncio.run(_inventory(settings, tokens, out_file))
    except BulkAssignError as exc:
        raise SystemExit(_fail(exc)) from None
    click.echo(f"inventory: {stats.devices:,} devices in {stats.pages} page(s), {stats.seconds:.1f} s -> {out_file}")


async def _inventory(settings: Settings, tokens: TokenProvider, out_file: Path) -> ListingStats:
    """List every page, showing the count as it grows (a spinner on a terminal, a log line per page else)."""
    reader, transport = listing_reader(settings, tokens)
    console = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        if console.is_terminal:
            spinner = stack.enter_context(console.status("listing the tenant's Autopilot devices"))
            stats = ListingStats(on_page=lambda s: spinner.update(f"listing: {s.pages} page(s), {s.devices:,} devices"))
        else:
            stats = ListingStats(on_page=lambda s: log.info("inventory: %d page(s), %d devices", s.pages, s.devices))
        try:
            devices = await reader.read_all(stats)
        finally:
            await transport.close()
    write_inventory(out_file, devices)
    return stats
