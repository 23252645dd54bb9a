"""``bulk-assign undo DIR``: reverse what a run folder recorded, on the same engine, into ``DIR/undo``.

Pacing, journal, resume and reports as any run; the folder's journal says what to restore
(``store/undo.py``). Group tags: ``RestoreGroupTag`` leaves alone any device that something else changed
since. ``--add-to-group``: ``RemoveFromGroup`` removes the members the folder added (never those that were
members before it). The profile-to-group assignment goes only if the folder created it. Seed-call folders
(``--target``): ``DeleteSeedAssignment`` deletes the assignments the folder created and recorded, only with
``--include-seed-assignments`` (without it, exit 2 saying how many and what deleting them means); which
devices and why is ``store/seed_undo.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..auth import TokenProvider
from ..config import Settings
from ..engine import BulkAssigner
from ..errors import BulkAssignError, UsageError
from ..graph.operations import DeleteSeedAssignment, RemoveFromGroup, RestoreGroupTag
from ..graph.transport import open_transport
from ..guid import normalize_guid
from ..models import InputRow
from ..pipeline.pacing import LimiterPacer
from ..pipeline.profile_group import poster, remove_assignment
from ..store.seed_undo import plan_seed_undo, seed_records
from ..store.undo import created_assignment, folder_pin, recorded_changes, recorded_members
from .run import make_progress, print_summary, run_rows
from .status import _fail, read_options, read_settings


@click.command("undo")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="continue an undo that stopped (DIR/undo holds it)")
@click.option("--rate", help='write budget "at most N in any T" [default: 100/20s]')
@click.option("--include-seed-assignments", is_flag=True,
              help="a --target folder: delete the assignments it created and recorded (under the profile reading "
                   "of the seed call one may serve every device of a profile: the command says so first)")
@read_options
def undo_command(folder: Path, resume: bool, rate: str | None, include_seed_assignments: bool,
                 **options: Any) -> None:
    """Reverse what the run in DIR changed, into DIR/undo, on the same engine (pacing, journal, --resume).

    \b
    --group-tag folders: each device's previous tag comes back where it still carries the folder's.
    --add-to-group folders: the members it added are removed (never those from before it).
    --profile: the profile-to-group assignment goes, only if the folder created it.
    --target folders (the seed call): only with --include-seed-assignments, the assignments the folder
      created and recorded are deleted; devices whose assignment landed unrecorded are reported, not deleted.
    Devices something else changed since are skipped and listed, never overwritten.
    """
    try:
        pin = folder_pin(folder)
        kind = pin.get("operation")
        if kind not in ("group-tag", "add-to-group", "assign-profile"):
            raise UsageError(f"{folder} holds a {kind!r} run; undo is built for --group-tag, --group-tag-column, "
                             "--add-to-group and --target runs")
        created = created_assignment(folder)
        notice = describe = None
        operation: RestoreGroupTag | RemoveFromGroup | DeleteSeedAssignment
        if kind == "assign-profile":
            rows, operation, describe, notice = _seed_undo(folder, pin, include_seed_assignments)
            what = "assignments with their ids"
        else:
            rows, operation, what = _group_undo(folder, pin) if kind == "add-to-group" else _tag_undo(folder)
        if not rows and created is None:
            click.echo(f"undo: {folder} recorded no {what}; nothing to undo")
            raise SystemExit(0)
        settings, tokens = read_settings(options, out_dir=folder / "undo", resume=resume, rate=rate,
                                            estimate=len(rows) * 0.2)
        click.echo(f"undo: {len(rows):,} devices: {describe or operation.describe_undo}", err=True)
        if notice is not None:  # before anything is deleted, on the terminal and in DIR/undo/run.log
            click.echo(f"undo: note: {notice}", err=True)
        summary = asyncio.run(run_rows(rows, len(rows), settings, tokens, progress=make_progress(),
                                       operation=operation, before=_logged(notice)))
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


def _seed_undo(folder: Path, pin: dict[str, str],
               include: bool) -> tuple[list[InputRow], DeleteSeedAssignment, str, str | None]:
    """A seed-call folder's rows (``store/seed_undo.py``), what the undo does, and what deleting profile
    assignments means; refused (exit 2) without ``--include-seed-assignments`` when there is anything to
    delete or report."""
    plan = plan_seed_undo(seed_records(folder))
    if plan.rows and not include:
        raise UsageError(plan.refusal(folder, pin.get("target")))
    return plan.rows, DeleteSeedAssignment(of=str(folder.resolve())), plan.describe(), plan.shared_warning()


def _logged(notice: str | None) -> Callable[[BulkAssigner], None] | None:
    """Write ``notice`` into the undo's run.log once the engine has opened it (the terminal has it already)."""
    if notice is None:
        return None
    return lambda _engine: logging.getLogger("bulk_assign").warning("%s", notice, extra={"run_log_only": True})


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
