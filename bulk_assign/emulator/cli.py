"""``bulk-assign emulator``: run the Graph emulator as a process until SIGINT or SIGTERM.

The first line on stdout is the base URL (flushed at once) so a parent process can read it and point a
client at it; everything else goes to stderr. Bad flag values exit 2 with a message, never a traceback.

``--status-delay 30s`` keeps a newly assigned device ``pending`` for that long before ``assignedInSync``
(Intune takes minutes; 0, the default, flips at once), so a rollout's read-back and verification can be
rehearsed against the wait. ``--status-unknown-quirk`` makes the single-device GET answer ``unknown`` for
assigned devices while the listing tells the truth, as public reports describe the real service doing.

``--static-group G`` (repeatable) gives the tenant an empty static Entra group that clients may add device
objects to (``--synced-group G``: one synced from on-premises, which refuses changes); the directory has its
own budgets, ``--directory-read-rate`` (resource units) and ``--directory-write-rate``, Entra's published
quotas by default. ``--seed-call-semantics profile`` makes the seed call add its target to the device's
current profile (what public sources infer) instead of assigning the device itself; a DELETE of
``.../{id}/deploymentProfile/assignments/{assignmentId}`` (undo) then deletes from that profile too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from ..config import Rate, parse_duration
from ..errors import BulkAssignError, EmulatorError
from ..guid import normalize_guid
from .config import FAULT_KINDS, RETRY_AFTER_STYLES, SEED_CALL_SEMANTICS, THROTTLE_KINDS, EmulatorConfig
from .inventory import Inventory, load_inventory
from .server import Emulator


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> Rate | None:
    if value is None or value.strip().lower() in ("off", "none"):
        return None
    try:
        return Rate.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _fault_kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}: choose from {','.join(FAULT_KINDS)}")
    return kinds


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _profiles(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    ids = tuple(normalize_guid(v) or "" for v in value)
    if "" in ids:
        raise click.BadParameter("a deployment profile id is a GUID")
    return ids


def _group_ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    ids = tuple(normalize_guid(v) or "" for v in value)
    if "" in ids:
        raise click.BadParameter("a group id is a GUID")
    return tuple(dict.fromkeys(ids))


def _groups(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for item in value:
        group, sep, tag = item.partition("=")
        guid = normalize_guid(group)
        if guid is None or not sep or not tag.strip():
            raise click.BadParameter(f"{item!r}: write GROUP_ID=TAG")
        groups[guid] = tag.strip()
    return groups


def _inventory(ctx: click.Context, param: click.Parameter, value: str | None) -> Inventory | None:
    if value is None:
        return None
    try:
        return load_inventory(value)
    except BulkAssignError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it loopback).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--rate", "app_rate", default="100/20s", show_default=True, callback=_rate, help="Per-app write budget N/T."
)
@click.option(
    "--tenant-rate", default="200/20s", show_default=True, callback=_rate, help="Per-tenant write budget N/T."
)
@click.option(
    "--read-rate", default="1000/20s", show_default=True, callback=_rate, help="Per-app GET budget N/T, or 'off'."
)
@click.option("--throttle", type=click.Choice(THROTTLE_KINDS), default="sliding", show_default=True)
@click.option("--retry-after", type=click.Choice(RETRY_AFTER_STYLES), default="int", show_default=True)
@click.option("--faults", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, help="Fault probability.")
@click.option("--fault-kinds", default=",".join(FAULT_KINDS), show_default=True, callback=_fault_kinds)
@click.option("--latency-ms", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option(
    "--inventory", type=click.Path(dir_okay=False), callback=_inventory,
    help="Known devices (others get 404): a list of ids, or a tenant file (CSV or JSONL) with serialNumber etc."
)
@click.option(
    "--token",
    default=None,
    envvar="BULK_ASSIGN_EMULATOR_TOKEN",
    help="Accept only this bearer token (default: any non-empty token; env BULK_ASSIGN_EMULATOR_TOKEN).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for faults and Retry-After mixes.")
@click.option(
    "--status-delay", default="0s", show_default=True, callback=_duration, metavar="DURATION",
    help="How long an assigned device reports 'pending' before 'assignedInSync' (e.g. 30s, 5m).",
)
@click.option(
    "--status-unknown-quirk", is_flag=True, default=False,
    help="The single-device GET says 'unknown' for assigned devices; the listing stays truthful.",
)
@click.option("--profile", "profiles", multiple=True, callback=_profiles, metavar="PROFILE_ID",
              help="A deployment profile the tenant has (repeatable; the first is the oldest).")
@click.option("--dynamic-group", "dynamic_groups", multiple=True, callback=_groups, metavar="GROUP_ID=TAG",
              help="A dynamic group whose rule matches [OrderID]:TAG (repeatable).")
@click.option("--static-group", "static_groups", multiple=True, callback=_group_ids, metavar="GROUP_ID",
              help="A static Entra group, empty at start, that takes device members (repeatable).")
@click.option("--synced-group", "synced_groups", multiple=True, callback=_group_ids, metavar="GROUP_ID",
              help="A static group synced from on-premises: its members cannot be changed (repeatable).")
@click.option("--directory-read-rate", default="3500/10s", show_default=True, callback=_rate,
              help="Entra resource units per app N/T (a member page costs up to 3), or 'none'.")
@click.option("--directory-write-rate", default="3000/150s", show_default=True, callback=_rate,
              help="Entra directory writes per app N/T, or 'none'.")
@click.option("--seed-call-semantics", type=click.Choice(SEED_CALL_SEMANTICS), default="device", show_default=True,
              help="device: the seed call assigns the device; profile: it adds the target to the device's profile "
                   "(404 without one).")
def emulator_command(
    host: str,
    port: int,
    app_rate: Rate | None,
    tenant_rate: Rate | None,
    read_rate: Rate | None,
    throttle: str,
    retry_after: str,
    faults: float,
    fault_kinds: tuple[str, ...],
    latency_ms: float,
    inventory: Inventory | None,
    token: str | None,
    seed: int,
    status_delay: float,
    status_unknown_quirk: bool,
    profiles: tuple[str, ...],
    dynamic_groups: dict[str, str],
    static_groups: tuple[str, ...],
    synced_groups: tuple[str, ...],
    directory_read_rate: Rate | None,
    directory_write_rate: Rate | None,
    seed_call_semantics: str,
) -> None:
    """Serve a local Microsoft Graph emulator for Autopilot assignments (rehearse a rollout safely)."""
    if app_rate is None or tenant_rate is None:
        raise click.BadParameter("write budgets cannot be turned off; use a large one such as 1000000/1s")
    try:
        config = EmulatorConfig(
            app_rate=app_rate,
            tenant_rate=tenant_rate,
            read_rate=read_rate,
            throttle=throttle,  # type: ignore[arg-type]  # click.Choice checked it
            retry_after=retry_after,  # type: ignore[arg-type]
            faults=faults,
            fault_kinds=fault_kinds,
            latency_ms=latency_ms,
            inventory=inventory,
            token=token,
            seed=seed,
            status_delay=status_delay,
            status_unknown_quirk=status_unknown_quirk,
            profiles=profiles,
            dynamic_groups=dynamic_groups,
            static_groups={g: frozenset() for g in static_groups},
            synced_groups=synced_groups,
            directory_read_rate=directory_read_rate,
            directory_write_rate=directory_write_rate,
            seed_call_semantics=seed_call_semantics,  # type: ignore[arg-type]  # click.Choice checked it
            host=host,
            port=port,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(config))
    except EmulatorError as exc:
        click.echo(f"bulk-assign emulator: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # platforms without loop signal handlers
        pass


async def _serve(config: EmulatorConfig) -> None:
    """Run until SIGINT/SIGTERM; the ``async with`` closes the listener and open connections cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt instead
            loop.add_signal_handler(sig, stop.set)
    async with Emulator(config) as emulator:
        sys.stdout.write(emulator.base_url + "\n")
        sys.stdout.flush()
        inventory = "any GUID" if config.inventory is None else f"{len(config.inventory)} devices"
        click.echo(
            f"Graph emulator at {emulator.base_url} (admin {emulator.admin_url}); writes {config.app_rate} per app, "
            f"{config.tenant_rate} per tenant, {config.throttle} window; faults {config.faults:g}; "
            f"inventory: {inventory}; status delay {config.status_delay:g}s"
            f"{', unknown-status quirk' if config.status_unknown_quirk else ''}; seed call semantics "
            f"{config.seed_call_semantics}; {_groups_line(config)}. Ctrl+C to stop.",
            err=True,
        )
        await stop.wait()
    click.echo("Graph emulator stopped.", err=True)


def _groups_line(config: EmulatorConfig) -> str:
    static = len(config.static_groups or {})
    return (f"groups: {len(config.dynamic_groups or {})} dynamic, {static} static, {len(config.synced_groups)} synced;"
            f" directory {config.directory_read_rate or 'unlimited'} units, "
            f"{config.directory_write_rate or 'unlimited'} writes")
