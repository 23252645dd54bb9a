"""``bulk-assign undo DIR``: reverse what a run folder recorded, on the same engine, into ``DIR/undo``.

Pacing, journal, resume and reports as any run; the folder's journal says what to restore
(``store/undo.py``). Group tags: ``RestoreGroupTag`` leaves alone any device that something else changed
since. ``--add-to-group``: ``RemoveFromGroup`` removes the members the folder added (never those that were
members before it). The profile-to-group assignment goes only if the folder created it. Seed-call folders
are refused with exit 2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from ..auth import TokenProvider
from ..config import Settings
from ..errors import BulkAssignError, UsageError
from ..graph.operations import RemoveFromGroup, RestoreGroupTag
from ..graph.transport import open_transport
from ..guid import normalize_guid
from ..models import InputRow
from ..pipeline.pacing import LimiterPacer
from ..pipeline.profile_group import poster, remove_assignment
from ..store.undo import created_assignment, folder_pin, recorded_changes, recorded_members
from .run import make_progress, print_summary, run_rows
from .status import _fail, read_options, read_settings


@click.command("undo")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="continue an undo that stopped (DIR/undo holds it)")
@click.option("--rate", help='write budget "at most N in any T" [default: 100/20s]')
@read_options
def undo_command(folder: Path, resume: bool, rate: str | None, **options: Any) -> None:
    """Restore what the run in DIR changed (group tags), leaving devices changed since as they are."""
    try:
        pin = folder_pin(folder)
        kind = pin.get("operation")
        if kind not in ("group-tag", "add-to-group"):
            raise UsageError(f"{folder} holds a {kind!r} run; undo is built for --group-tag, --group-tag-column "
                             "and --add-to-group runs")
        created = created_assignment(folder)
        rows, operation, what = _group_undo(folder, pin) if kind == "add-to-group" else _tag_undo(folder)
        if not rows and created is None:
            click.echo(f"undo: {folder} recorded no {what}; nothing to undo")
            raise SystemExit(0)
        settings, tokens, _ = read_settings(options, out_dir=folder / "undo", resume=resume, rate=rate,
                                            estimate=len(rows) * 0.2)
        click.echo(f"undo: {len(rows):,} devices: {operation.describe_undo}", err=True)
        summary = asyncio.run(run_rows(rows, len(rows), settings, tokens, progress=make_progress(),
                                       operation=operation))
        print_summary(summary)
        code = summary.exit_code
        if created is not None and code in (0, 1):  # the tags first: then the group brings no device in
            what = asyncio.run(_remove(settings, tokens, *created))
            click.echo(f"undo: the profile assignment {created[1]} this folder created: {what}")
    except BulkAssignError as exc:
        raise SystemExit(_fail(exc)) from None
    raise SystemExit(code)


def _tag_undo(folder: Path) -> tuple[list[InputRow], RestoreGroupTag, str]:
    changes = recorded_changes(folder)
    rows = [InputRow(n, c.device_id, c.device_id, value=c.previous) for n, c in enumerate(changes, start=1)]
    return rows, RestoreGroupTag({c.device_id: c.new for c in changes}, of=str(folder.resolve())), "group tag writes"


def _group_undo(folder: Path, pin: dict[str, str]) -> tuple[list[InputRow], RemoveFromGroup, str]:
    group = normalize_guid(pin.get("group", ""))
    if group is None:
        raise UsageError(f"{folder}: its operation.json names no group; not undone")
    added = recorded_members(folder)
    rows = [InputRow(n, d, d, value=entra) for n, (d, entra) in enumerate(added.items(), start=1)]
    return rows, RemoveFromGroup(group, of=str(folder.resolve())), "member adds"


async def _remove(settings: Settings, tokens: TokenProvider, profile: str, assignment_id: str) -> str:
    transport = open_transport(settings)
    pacer = LimiterPacer(settings.rate)
    try:
        return await remove_assignment(settings.graph_url, profile, assignment_id, attempts=settings.max_attempts,
                                       send_delete=poster(transport, tokens, settings.request_timeout,
                                                          lambda: pacer.acquire(1), method="DELETE"))
    finally:
        await transport.close()
