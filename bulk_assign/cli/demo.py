"""``bulk-assign demo``: a whole rollout rehearsal against the embedded Graph emulator, in under a minute.

Intune's budget scaled ten times faster (100 writes per 2 s instead of per 20 s), realistic faults
including ambiguous commits, and two waves. The first is an id file with bad rows, duplicates and ids the
tenant does not know. The second is what admins really hold: a hardware-hash CSV of serial numbers as
Windows PowerShell 5.1 writes it (UTF-16LE, a ``#TYPE`` line), resolved through one listing of the tenant,
with serials the tenant does not know and one that two devices share, tagged into a dynamic group that the
profile is assigned to. The third brings devices into a static group by their Entra objects (20 a request,
at Entra's budget), with the profile assigned to that group: five are members already, one has no Entra
object. It ends with Intune's status of waves 2 and 3 (the emulated devices go pending -> assignedInSync
a few seconds after they join a group the profile is assigned to). It exits 0 when every part behaved as
designed.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..config import Rate, Settings
from ..emulator import Emulator, EmulatorConfig
from ..inputs.readers import scan_input
from ..models import AssignmentTarget
from ..store.reports import Summary

DEMO_GROUP = "5d2f3a1e-8c4b-4e7a-9f10-2b3c4d5e6f70"
DEMO_DYNAMIC_GROUP = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"  # rule: [OrderID]:wave2
DEMO_PROFILE = "2b4d6f80-1a3c-4e5f-8a9b-0c1d2e3f4a5b"
DEMO_STATIC_GROUP = "3e5a7c90-2b4d-4f6a-8b0c-1d2e3f4a5b6c"  # wave 3: static membership
DEMO_PROFILE_3 = "4f6b8da1-3c5e-4a7b-9c1d-2e3f4a5b6c7d"
MEMBERS = 100  # samples/demo-members.csv
ALREADY_MEMBERS = 5  # the first five are in the static group before the run
NO_ENTRA = MEMBERS  # the last has no Entra device object yet


def samples_dir() -> Path:
    """The repository's ``samples/`` (the demo ships its own input, so it needs no setup)."""
    return Path(__file__).resolve().parents[2] / "samples"


@dataclass(frozen=True)
class Expectation:
    succeeded_or_assigned: int
    not_found: int
    invalid: int
    duplicates: int


EXPECTED = Expectation(succeeded_or_assigned=1000, not_found=12, invalid=8, duplicates=10)
SERIALS = 200  # PF-DEMO-0001..0200 in samples/demo-hardware-hash.csv, known to the tenant
SHARED_SERIAL = "Default string"  # two devices of the demo tenant share it (ambiguous), as white boxes do


def demo_tenant(known_ids: frozenset[str]) -> dict[str, dict[str, str]]:
    """The demo tenant: the id wave's devices, the serial wave's, and two that share a placeholder serial."""
    tenant = {device: {"serialNumber": f"DEMO{n:05d}"} for n, device in enumerate(sorted(known_ids))}
    for n in range(1, SERIALS + 1):
        tenant[str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-demo/serial/{n}"))] = {
            "serialNumber": f"PF-DEMO-{n:04d}", "groupTag": "", "manufacturer": "Contoso", "model": "Laptop 7"}
    for n in (1, 2):
        tenant[str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-demo/shared/{n}"))] = {"serialNumber": SHARED_SERIAL}
    for n in range(1, MEMBERS + 1):
        tenant[member_id(n)] = {"serialNumber": f"PF-MEMBER-{n:03d}", "manufacturer": "Contoso", "model": "Laptop 7"}
    tenant[member_id(NO_ENTRA)]["azureActiveDirectoryDeviceId"] = ""
    return tenant


def member_id(n: int) -> str:
    """Wave 3's devices (samples/demo-members.csv holds the same ids)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulk-assign-demo/member/{n}"))


def members_before() -> frozenset[str]:
    """The directory objects of wave 3's first five devices: members of the static group before the run."""
    from ..emulator.directory import entra_device_id, object_id

    return frozenset(object_id(entra_device_id(member_id(n))) for n in range(1, ALREADY_MEMBERS + 1))


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="report folder [default: ./bulk-assign-results/demo-<timestamp>]")
@click.option("--faults", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="share of requests that fail (incl. ambiguous commits)")
def demo_command(out_dir: Path | None, faults: float) -> None:
    """Rehearse a rollout end to end against the embedded Graph emulator."""
    out_dir = out_dir or Path("bulk-assign-results") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    sys.exit(asyncio.run(run_demo(out_dir, faults=faults)))


async def run_demo(out_dir: Path, *, faults: float = 0.05, console: Console | None = None) -> int:
    from .run import make_progress, print_summary, run_plan
    from .status import check_status

    console = console or Console()
    samples = samples_dir()
    known = frozenset(
        line.strip() for line in (samples / "demo-inventory.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    inventory = demo_tenant(known)
    token = secrets.token_urlsafe(24)
    config = EmulatorConfig(
        app_rate=Rate(100, 2.0),
        tenant_rate=Rate(200, 2.0),
        read_rate=Rate(1000, 2.0),  # Intune's 1000 requests per 20 s, x10 like the write budgets
        throttle="sliding",
        retry_after="mixed",
        faults=faults,
        latency_ms=15,
        inventory=inventory,
        token=token,
        seed=7,
        status_delay=3.0,
        profiles=(DEMO_PROFILE, DEMO_PROFILE_3),
        dynamic_groups={DEMO_DYNAMIC_GROUP: "wave2"},
        static_groups={DEMO_STATIC_GROUP: members_before()},
        directory_write_rate=Rate(300, 15.0),  # Entra's 3,000 per 150 s, ten times faster like Intune's
    )
    async with Emulator(config) as emulator:
        console.print(f"[bold]Graph emulator[/] at {emulator.base_url}: Intune limits x10 (100 writes/2 s), "
                      f"{faults:.0%} faults incl. ambiguous commits, {len(inventory)} known devices")
        plan = scan_input(samples / "demo-devices.csv")
        settings = Settings.build(
            target=AssignmentTarget.parse(f"group:{DEMO_GROUP}"),
            graph_url=emulator.base_url,
            rate="100/2s",
            concurrency=8,
            out_dir=out_dir,
            max_retry_after=10,
        )
        from ..auth import StaticTokenProvider

        tokens = StaticTokenProvider(token, source="the demo")
        progress = make_progress()
        summary = await run_plan(plan, settings, tokens, progress=progress)
        print_summary(summary)
        console.print("[bold]wave 2, the documented route:[/] serial numbers from a hardware-hash CSV (UTF-16LE, "
                      "#TYPE line), each device given its Group Tag, the profile assigned to the dynamic group")
        serial_plan = scan_input(samples / "demo-hardware-hash.csv", value_column="Group Tag")
        serial_settings = Settings.build(
            graph_url=emulator.base_url, rate="100/2s", concurrency=8, out_dir=out_dir / "serials",
            max_retry_after=10, group_tag_column="Group Tag", group=DEMO_DYNAMIC_GROUP, profile=DEMO_PROFILE)
        serial_summary = await run_plan(serial_plan, serial_settings, tokens, progress=progress)
        print_summary(serial_summary)
        console.print("[bold]Intune's status of wave 2[/] (bulk-assign status --wait):")
        status = await check_status(serial_plan, serial_settings, tokens, out_dir / "status", wait=60.0,
                                    interval=1.0)
        console.print("[bold]wave 3, static membership:[/] the devices' Entra objects added to a group, 20 a "
                      "request at Entra's budget, the profile assigned to that group")
        member_plan = scan_input(samples / "demo-members.csv")
        member_settings = Settings.build(
            graph_url=emulator.base_url, rate="100/2s", concurrency=4, out_dir=out_dir / "members",
            max_retry_after=10, add_to_group=DEMO_STATIC_GROUP, profile=DEMO_PROFILE_3)
        member_summary = await run_plan(member_plan, member_settings, tokens, progress=progress)
        print_summary(member_summary)
        console.print("[bold]Intune's status of wave 3's group members[/] (bulk-assign status --wait):")
        joined = out_dir / "members" / "in-group.csv"  # the one without an Entra object can never join: not waited for
        joined.write_text("Device ID\n" + "".join(f"{member_id(n)}\n" for n in range(1, MEMBERS + 1) if n != NO_ENTRA))
        member_status = await check_status(scan_input(joined), member_settings, tokens, out_dir / "members-status",
                                           wait=60.0, interval=1.0)
        twice = emulator.counters.devices_assigned_twice
        added_twice = emulator.counters.member_adds_max > 1
    problems = check(summary, twice) + check_serials(serial_summary, status) + \
        check_members(member_summary, member_status, added_twice)
    if problems:
        for problem in problems:
            console.print(f"[red]rehearsal did not behave as designed:[/] {problem}")
        return 1
    console.print("[green]rehearsal behaved as designed:[/] every known device assigned once, unknown ids "
                  "reported (404), bad rows reported as invalid, duplicates skipped, nothing assigned twice; "
                  f"{SERIALS} serials resolved with one listing and tagged, the profile assigned to their dynamic "
                  "group once, unknown and shared serials reported with no write; "
                  f"{MEMBERS - ALREADY_MEMBERS - 1} devices added to the static group (the {ALREADY_MEMBERS} members "
                  "skipped with no write, the one without an Entra object reported), its profile assigned once; and "
                  "Intune reports the devices of both groups assigned. (The runs' own exit codes are 1 because the "
                  "sample inputs have bad rows on purpose.)")
    console.print(f"reports to open: {out_dir / 'report.html'} (wave 1: its faults, 404s and throttling), "
                  f"{out_dir / 'serials' / 'report.html'} (wave 2), {out_dir / 'members' / 'report.html'} (wave 3), "
                  f"{out_dir / 'status' / 'report.html'} and {out_dir / 'members-status' / 'report.html'} (status)",
                  soft_wrap=True)
    return 0


def check_serials(summary: Summary, status: dict[str, Any]) -> list[str]:
    """What differs from the designed outcome of the serial wave and its status."""
    problems = []
    if summary.counts.get("succeeded", 0) + summary.skipped_by_reason.get("landed", 0) != SERIALS:
        problems.append(f"{summary.counts.get('succeeded', 0)} serial devices assigned, expected {SERIALS}")
    if summary.counts.get("invalid", 0) != 3:
        problems.append(f"{summary.counts.get('invalid', 0)} invalid serial rows, expected 3 (2 unknown, 1 shared)")
    if not summary.inventory or summary.inventory.get("source") != "listing":
        problems.append("the serials were not resolved by a listing of the tenant")
    if not summary.profile_assignment or not summary.profile_assignment.get("created"):
        problems.append("the profile was not assigned to the dynamic group")
    if status["by_state"] != {"assigned": SERIALS, "unknown_device": 2, "ambiguous_serial": 1}:
        problems.append(f"status by state {status['by_state']}, expected {SERIALS} assigned, 2 unknown, 1 ambiguous")
    return problems


def check_members(summary: Summary, status: dict[str, Any], added_twice: bool) -> list[str]:
    """What differs from the designed outcome of the membership wave and its status."""
    problems = []
    added = summary.counts.get("succeeded", 0) + summary.skipped_by_reason.get("landed", 0)
    if added != MEMBERS - ALREADY_MEMBERS - 1:
        problems.append(f"{added} devices added to the static group, expected {MEMBERS - ALREADY_MEMBERS - 1}")
    if summary.skipped_by_reason.get("already_member", 0) != ALREADY_MEMBERS:
        problems.append(f"{summary.skipped_by_reason.get('already_member', 0)} already members, expected "
                        f"{ALREADY_MEMBERS}")
    if summary.counts.get("invalid", 0) != 1:
        problems.append(f"{summary.counts.get('invalid', 0)} invalid rows, expected 1 (no Entra device)")
    if not summary.profile_assignment or not summary.profile_assignment.get("created"):
        problems.append("the profile was not assigned to the static group")
    if added_twice:
        problems.append("Entra saw a member added twice")
    if status["by_state"] != {"assigned": MEMBERS - 1}:
        problems.append(f"status by state {status['by_state']}, expected {MEMBERS - 1} assigned")
    return problems


def check(summary: Summary, assigned_twice: int) -> list[str]:
    """What differs from the designed outcome (empty when the rehearsal went as it should)."""
    c = summary.counts
    done = c.get("succeeded", 0) + summary.skipped_by_reason.get("landed", 0)
    problems = []
    if done != EXPECTED.succeeded_or_assigned:
        problems.append(f"{done} devices assigned, expected {EXPECTED.succeeded_or_assigned}")
    if c.get("failed", 0) != EXPECTED.not_found:
        problems.append(f"{c.get('failed', 0)} failures, expected {EXPECTED.not_found} unknown ids (404)")
    if c.get("invalid", 0) != EXPECTED.invalid:
        problems.append(f"{c.get('invalid', 0)} invalid rows, expected {EXPECTED.invalid}")
    if summary.skipped_by_reason.get("duplicate", 0) != EXPECTED.duplicates:
        problems.append(f"{summary.skipped_by_reason.get('duplicate', 0)} duplicates, expected {EXPECTED.duplicates}")
    if summary.remaining:
        problems.append(f"{summary.remaining} rows left undecided")
    if assigned_twice:
        problems.append(f"the emulator saw {assigned_twice} devices assigned twice")
    return problems
