"""(i) The documented route (issue 12): static membership and group tags against the seed call's floor.

1. ``--add-to-group G --profile P`` for 30,000 devices of a 30,000-device tenant, with every budget at
   Microsoft's published figure and time not scaled: Intune 100 writes and 1,000 requests per 20 s (the
   listing, the profile assignment), Entra 3,000 writes per 150 s and 3,500 resource units per 10 s (the
   member listing, the device lookups, the adds). Intune's own processing delay is left out (the
   emulator's status delay is 0). Wall time from spawn to exit, next to the seed call's throttle floor for
   the same devices at Intune's budget (``theoretical_min``). Then the same command into a new folder: a
   rerun of a finished wave, whose directory writes should be 0.
2. ``--group-tag`` for 300 devices at Intune's budget (100/20 s, as section (b)'s small job): its sending
   time over the floor of 300 writes, and again into a new folder: tag writes 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PY,
    EmulatorProc,
    Options,
    Section,
    cli_env,
    device_ids,
    measure_rtt,
    run_child,
    table,
    theoretical_min,
    verdict,
    workdir,
)

GROUP = "5d2f3a1e-8c4b-4e7a-9f10-2b3c4d5e6f71"
PROFILE = "2b4d6f80-1a3c-4e5f-8a9b-0c1d2e3f4a5c"
INTUNE = (100, 20.0)  # writes per app per tenant
INTUNE_ANY = "1000/20s"
ENTRA_WRITES, ENTRA_UNITS = "3000/150s", "3500/10s"  # Microsoft's published Entra limits (smallest tenants)
GOAL_MEMBERSHIP = 0.1  # <= 1/10 of the seed call's floor
GOAL_TAG = 1.03


def _tenant(path: Path, ids: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,serialNumber,groupTag\n")
        for n, device in enumerate(ids):
            out.write(f"{device},PF{n:08d},old\n")
    return path


def _ids(path: Path, ids: list[str]) -> Path:
    path.write_text("Device ID\n" + "".join(f"{d}\n" for d in ids))
    return path


def _run(csv: Path, out: Path, url: str, *args: str) -> Any:
    argv = [PY, "-m", "bulk_assign", "run", str(csv), "--graph-url", url, "--out", str(out), *args]
    result = run_child(argv, env=cli_env(), timeout=3600)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"bulk-assign run exited {result.returncode}: {result.stderr[-1500:]}")
    result.extra["summary"] = json.loads((out / "summary.json").read_text())
    return result


def _twice(folder: Path, name: str, devices: int, rtt: float, salt: int, args: list[str],
           extra: list[str]) -> dict[str, Any]:
    """A tenant of ``devices``, the command into a new folder, then again into another one (a rerun of the
    finished wave), with the emulator's counters after each."""
    ids = device_ids(devices, salt=salt)
    tenant = _tenant(folder / f"{name}-tenant.csv", ids)
    csv = _ids(folder / f"{name}-ids.csv", ids)
    count, period = INTUNE
    with EmulatorProc(rate=f"{count}/{period:g}s", tenant_rate="200/20s", read_rate=INTUNE_ANY, inventory=tenant,
                      extra=extra) as emu:
        first = _run(csv, folder / f"{name}-1", emu.base, *args)
        after_first = emu.counters()
        again = _run(csv, folder / f"{name}-2", emu.base, *args)
        after_again = emu.counters()
    return {"first": first, "again": again, "c1": after_first, "c2": after_again,
            "floor": theoretical_min(devices, count, period, rtt), "devices": devices}


def _membership(folder: Path, devices: int, rtt: float) -> dict[str, Any]:
    extra = ["--static-group", GROUP, "--profile", PROFILE, "--directory-write-rate", ENTRA_WRITES,
             "--directory-read-rate", ENTRA_UNITS]
    return _twice(folder, "members", devices, rtt, 31, ["--add-to-group", GROUP, "--profile", PROFILE], extra)


def _group_tag(folder: Path, devices: int, rtt: float) -> dict[str, Any]:
    count, period = INTUNE
    return _twice(folder, "tags", devices, rtt, 32, ["--group-tag", "bench-wave", "--rate", f"{count}/{period:g}s"],
                  [])


def run(opts: Options) -> Section:
    members, tagged = (3_000, 120) if opts.quick else (30_000, 300)
    section = Section("i", f"(i) The documented route: {members:,} devices added to a group, {tagged} tagged, "
                           "at Microsoft's published budgets")
    with workdir("routes-") as tmp:
        folder = Path(tmp)
        with EmulatorProc() as probe:  # the round trip of the floors (tenants with an inventory refuse its POSTs)
            rtt = measure_rtt(probe)
        m = _membership(folder, members, rtt)
        t = _group_tag(folder, tagged, rtt)
    _report(section, m, t)
    return section


def _report(section: Section, m: dict[str, Any], t: dict[str, Any]) -> None:
    s1, s2 = m["first"].extra["summary"], m["again"].extra["summary"]
    c1, c2 = m["c1"], m["c2"]
    wall, floor = m["first"].wall, m["floor"]
    writes_again = c2["directory_writes"] - c1["directory_writes"]
    counts = s1["counts"]
    ts1, ts2 = t["first"].extra["summary"], t["again"].extra["summary"]
    tag_seconds = ts1.get("sending_seconds") or ts1["elapsed_seconds"]
    tag_writes_again = t["c2"]["tag_writes"] - t["c1"]["tag_writes"]
    section.tables.append(table(
        ["what", "devices", "succeeded", "skipped", "wall s", "seed floor s", "× seed floor", "directory writes",
         "directory reads", "Intune writes", "429s"], [
            [f"--add-to-group --profile, {m['devices']:,} devices", m["devices"], counts["succeeded"],
             counts["skipped"], wall, floor, wall / floor, c1["directory_writes"], c1["directory_reads"],
             c1["profile_assignments"], c1["throttled"]],
            ["the same again, a new folder (rerun of a finished wave)", m["devices"], s2["counts"]["succeeded"],
             s2["counts"]["skipped"], m["again"].wall, None, None, writes_again,
             c2["directory_reads"] - c1["directory_reads"], c2["profile_assignments"] - c1["profile_assignments"],
             c2["throttled"] - c1["throttled"]],
        ]))
    section.tables.append(table(
        ["what", "devices", "succeeded", "skipped", "sending s", "floor s", "× floor", "tag writes", "429s"], [
            [f"--group-tag at {INTUNE[0]}/{INTUNE[1]:g}s", t["devices"], ts1["counts"]["succeeded"],
             ts1["counts"]["skipped"], tag_seconds, t["floor"], tag_seconds / t["floor"], t["c1"]["tag_writes"],
             t["c1"]["throttled"]],
            ["the same again, a new folder", t["devices"], ts2["counts"]["succeeded"], ts2["counts"]["skipped"],
             ts2.get("sending_seconds"), None, None, tag_writes_again, t["c2"]["throttled"] - t["c1"]["throttled"]],
        ]))
    ratio = wall / floor
    section.verdicts += [
        verdict(f"{m['devices']:,} devices --add-to-group ≤ 1/10 of the seed call's floor", ratio <= GOAL_MEMBERSHIP,
                f"{ratio:.3f}× ({wall:,.0f} s vs {floor:,.0f} s)"),
        verdict("--group-tag ≤ 1.03× its floor", tag_seconds / t["floor"] <= GOAL_TAG,
                f"{tag_seconds / t['floor']:.3f}× ({tag_seconds:.1f} s vs {t['floor']:.1f} s)"),
        verdict("a rerun of a finished wave sends 0 writes", writes_again == 0 and tag_writes_again == 0,
                f"{writes_again} directory writes, {tag_writes_again} tag writes"),
    ]
    section.notes.append(
        "Emulator budgets as Microsoft publishes them, time not scaled: Intune 100 writes per 20 s per app "
        "(200 per tenant) and 1,000 requests per 20 s; Entra 3,000 writes per 150 s and 3,500 resource units per "
        "10 s (each device lookup 1, a members page 3). Status delay 0 (Intune's own processing is outside the "
        "tool). The seed floor is the least time the same number of per-device writes need at Intune's write budget. "
        "'wall s' is spawn to exit (listing, member listing, lookups, adds, profile assignment, reports).")
    section.notes.append(f"summary.json membership of the first run: {json.dumps(s1.get('membership'))}; "
                         f"profile assignment: {json.dumps(s1.get('profile_assignment'))}.")
