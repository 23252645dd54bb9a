"""(h) Serial-number resolution (issue 11): the listing it costs, the map it keeps, the memory of a big input.

1. A tenant of 30,000 devices (an emulator subprocess started with ``--inventory`` on a tenant CSV, budgets
   unthrottled, reads unthrottled) and an input of 1,000 of its serials: ``bulk-assign run`` lists the
   tenant once, resolves, assigns. Its listing pages, requests, seconds and devices/s come from the run's
   summary.json (``inventory``); the emulator's request counter, minus that of the same run given the same
   devices as ids, is the listing as the server saw it. The two runs' wall times side by side.
2. The map: a ``SerialDirectory`` of that tenant built in a fresh interpreter under tracemalloc, from the
   tenant's saved inventory (``read_inventory``): what the directory keeps once the device list is gone,
   per tenant device, and the peak while loading.
3. 1,000,000 serial rows: a ``--dry-run --inventory-file`` (offline resolution against the 30,000-device
   inventory) next to the 1,000,000-id dry run of the memory section, both through the launcher (peak RSS
   from ``os.wait4``), above the import baseline. Most serials are unknown to the tenant, as a memory bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import memory_bench
from benchmarks.common import (
    HUGE,
    PY,
    TARGET,
    EmulatorProc,
    Options,
    Section,
    cli_env,
    device_ids,
    run_child,
    run_cli,
    table,
    verdict,
    workdir,
)

TARGET_MB = 150  # issue 3: 1,000,000 rows under 150 MB peak RSS
PAGE = 1_000  # the listing's page size (Graph's and the emulator's)
SPREAD = 33  # tenant device j has serial number _serial(j * SPREAD): ~1 in 33 rows of the big file resolve
# "the map stays small" has no figure in issue 11; this reads tenant.py's "a 30,000-device tenant stays a few
# MB in memory" as < 5 MB for the map a run keeps (set before measuring, not fitted to a result)
MAP_GOAL_MB = 5.0
MAP_GOAL_DEVICES = 30_000
DUPLICATE_EVERY = memory_bench.DUPLICATE_EVERY  # repeated rows, as in the id files
MB = 1e6

_MAP = """
import gc, json, sys, tracemalloc
from pathlib import Path
import bulk_assign.cli.main  # the CLI's imports first, so that only the map is traced
from bulk_assign.inputs.serials import SerialDirectory
from bulk_assign.store.inventory import read_inventory
gc.collect()
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
devices = read_inventory(Path(sys.argv[1]))
listed = tracemalloc.get_traced_memory()[0] - base
directory = SerialDirectory(devices)
both = tracemalloc.get_traced_memory()[0] - base
del devices
gc.collect()
kept = tracemalloc.get_traced_memory()[0] - base
peak = tracemalloc.get_traced_memory()[1] - base
print(json.dumps({"devices": directory.devices, "list": listed, "both": both, "kept": kept, "peak": peak}))
"""


def _serial(index: int) -> str:
    return f"PF{index:08d}"


def _tenant(path: Path, devices: int) -> list[str]:
    """The emulator's tenant file (and the saved inventory of the dry run): ``id,serialNumber,groupTag``."""
    ids = device_ids(devices, salt=21)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,serialNumber,groupTag\n")
        for j, device in enumerate(ids):
            out.write(f"{device},{_serial(j * SPREAD)},bench\n")
    return ids


def _serial_index(row: int) -> int:
    """Which serial row ``row`` of the big file holds: its own, or (every 89th) an earlier row's again."""
    return row // 2 if row % DUPLICATE_EVERY == 7 else row


def _serial_rows(rows: int) -> Iterator[int]:
    return (_serial_index(i) for i in range(rows))


def _write_serials(path: Path, indices: Iterator[int]) -> Path:
    """A serial-number CSV as the Intune admin center's export looks (``Serial number`` is auto-detected)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Serial number,Model\n")
        for index in indices:
            out.write(f"{_serial(index)},Surface Laptop\n")
    return path


def _write_ids(path: Path, ids: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Device ID,Model\n")
        for device in ids:
            out.write(f"{device},Surface Laptop\n")
    return path


def _resolvable(rows: int, tenant: int) -> int:
    """Distinct serials of the big file that name a tenant device (computed, not read back)."""
    return len({k for k in _serial_rows(rows) if k % SPREAD == 0 and k // SPREAD < tenant})


def _checked(result: Any, what: str, allowed: tuple[int, ...] = (0,)) -> Any:
    if result.returncode not in allowed:
        raise RuntimeError(f"{what} exited {result.returncode}: {result.stderr[-1500:]}")
    return result


def _listing_runs(folder: Path, tenant_csv: Path, ids: list[str], picked: int, concurrency: int) -> dict[str, Any]:
    """Part 1: the same ``picked`` devices as serials (lists the tenant) and as ids, against one emulator."""
    step = len(ids) // picked
    chosen = range(0, step * picked, step)
    serial_csv = _write_serials(folder / "serials.csv", (j * SPREAD for j in chosen))
    id_csv = _write_ids(folder / "ids.csv", [ids[j] for j in chosen])
    out: dict[str, Any] = {}
    with EmulatorProc(rate=HUGE, tenant_rate=HUGE, read_rate="off", inventory=tenant_csv) as emu:
        for name, csv in (("serials", serial_csv), ("ids", id_csv)):
            emu.reset(state=True)
            result = run_cli(csv, folder / f"out-{name}", emu.base, rate=HUGE, concurrency=concurrency)
            _checked(result, f"bulk-assign run ({name})")
            counters = emu.counters()
            out[name] = {"wall": result.wall, "summary": result.extra["summary"], "requests": counters["requests"],
                         "committed": counters["writes_committed"], "throttled": counters["throttled"]}
    return out


def _dry_run(csv: Path, out: Path, url: str, *extra: str) -> Any:
    argv = [PY, "-m", "bulk_assign", "run", str(csv), "--target", TARGET, "--graph-url", url, "--dry-run",
            "--out", str(out), *extra]
    result = _checked(run_child(argv, env=cli_env()), "dry run", allowed=(0, 1))  # 1: invalid rows
    result.extra["summary"] = json.loads((out / "summary.json").read_text())
    result.extra["reports_mb"] = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / MB
    return result


def run(opts: Options) -> Section:
    tenant, picked, rows = (3_000, 300, 100_000) if opts.quick else (30_000, 1_000, 1_000_000)
    section = Section("h", f"(h) Serial resolution: a {tenant:,}-device tenant, {picked:,} serials, "
                           f"{rows:,} serial rows")
    with workdir("serials-") as tmp:
        folder = Path(tmp)
        tenant_csv = folder / "tenant.csv"
        ids = _tenant(tenant_csv, tenant)
        live = _listing_runs(folder, tenant_csv, ids, picked, opts.concurrency)
        mapped = json.loads(_checked(run_child([PY, "-c", _MAP, str(tenant_csv)], env=cli_env()),
                                     "map").stdout.strip().splitlines()[-1])
        baseline = run_child([PY, "-c", "import bulk_assign.cli.main"], env=cli_env()).max_rss_mb
        id_csv = folder / "ids-m.csv"
        with id_csv.open("w", encoding="utf-8", newline="") as handle:
            memory_bench._write_csv(handle, memory_bench._device_ids(rows))  # the memory section's file
        serial_csv = _write_serials(folder / "serials-m.csv", _serial_rows(rows))
        files_mb = id_csv.stat().st_size / MB, serial_csv.stat().st_size / MB
        with EmulatorProc() as emu:  # the dry runs point at it; nothing may reach it
            dry_ids = _dry_run(id_csv, folder / "dry-ids", emu.base)
            id_csv.unlink()
            dry_serials = _dry_run(serial_csv, folder / "dry-serials", emu.base, "--inventory-file", str(tenant_csv))
            dry_requests = emu.counters()["requests"]
    expected = _resolvable(rows, tenant)
    id_distinct = len({memory_bench._device_id(i) for i in range(rows)} - {  # as resume.py counts them
        memory_bench._device_id(i) for i in range(rows) if i % memory_bench.INVALID_EVERY == 5})
    _part_listing(section, live, tenant, picked)
    _part_map(section, mapped, tenant)
    _part_memory(section, rows, tenant, baseline, dry_ids, dry_serials, files_mb, expected, id_distinct,
                 dry_requests)
    return section


def _part_listing(section: Section, live: dict[str, Any], tenant: int, picked: int) -> None:
    serials, by_id = live["serials"], live["ids"]
    inventory = serials["summary"].get("inventory") or {}
    pages, requests = inventory.get("pages", 0), inventory.get("requests", 0)
    seconds = float(inventory.get("seconds", float("nan")))
    listed = inventory.get("devices", 0)
    server_listing = serials["requests"] - by_id["requests"]
    ratio = serials["wall"] / by_id["wall"]
    section.tables.append(table(
        ["what", "devices in input", "succeeded", "listing pages", "listing requests", "429s", "listing s",
         "listed devices/s", "emulator requests", "wall s", "× id run"], [
            [f"{picked:,} serials of a {tenant:,}-device tenant (lists it)", picked,
             serials["summary"]["counts"]["succeeded"], pages, requests, inventory.get("throttled_429"), seconds,
             listed / seconds if seconds else None, serials["requests"], serials["wall"], ratio],
            [f"the same {picked:,} devices as ids", picked, by_id["summary"]["counts"]["succeeded"], None, None,
             None, None, None, by_id["requests"], by_id["wall"], 1.0],
        ]))
    want = math.ceil(tenant / PAGE)
    section.verdicts += [
        verdict(f"a {tenant:,}-device tenant takes {want} listing pages", pages == want and listed == tenant,
                f"{pages} pages, {listed:,} devices listed, source {inventory.get('source')!r}"),
        verdict("one request per page (no resends, no 429s, unthrottled)",
                requests == pages and server_listing == pages,
                f"{requests} listing requests in summary.json; the emulator saw {server_listing} more requests "
                "than for the id run"),
        f"serial run / id run wall time: {ratio:.2f}× ({serials['wall']:.2f} s vs {by_id['wall']:.2f} s, each "
        f"timed spawn→exit; the listing took {seconds:.2f} s of it; no goal set, reported)",
    ]
    for name, run in live.items():
        if run["summary"]["counts"]["succeeded"] != picked or run["committed"] != picked:
            section.verdicts.append(f"**check failed**: the {name} run assigned {run['committed']} of {picked}")


def _part_map(section: Section, mapped: dict[str, Any], tenant: int) -> None:
    devices = mapped["devices"]
    per_device = mapped["kept"] / devices
    section.tables.append(table(["what (tracemalloc, fresh interpreter)", "tenant devices", "MB", "bytes/device"], [
        ["read_inventory(): the device list", devices, mapped["list"] / MB, mapped["list"] / devices],
        ["+ SerialDirectory built from it", devices, mapped["both"] / MB, mapped["both"] / devices],
        ["SerialDirectory alone (device list freed)", devices, mapped["kept"] / MB, per_device],
        ["peak while loading and building", devices, mapped["peak"] / MB, mapped["peak"] / devices],
    ]))
    at_goal = per_device * MAP_GOAL_DEVICES / MB
    section.verdicts.append(verdict(
        f"the map stays small: < {MAP_GOAL_MB:g} MB for {MAP_GOAL_DEVICES:,} tenant devices (reading "
        "tenant.py's 'a few MB')", at_goal < MAP_GOAL_MB,
        f"{per_device:.0f} bytes per tenant device kept, {at_goal:.1f} MB at {MAP_GOAL_DEVICES:,}"
        + ("" if tenant == MAP_GOAL_DEVICES else f" (scaled from {tenant:,})")))


def _part_memory(section: Section, rows: int, tenant: int, baseline: float, dry_ids: Any, dry_serials: Any,
                 files_mb: tuple[float, float], expected: int, id_distinct: int, requests: int) -> None:
    id_counts, serial_counts = dry_ids.extra["summary"]["counts"], dry_serials.extra["summary"]["counts"]
    resolved = serial_counts["planned"]
    above_ids, above_serials = dry_ids.max_rss_mb - baseline, dry_serials.max_rss_mb - baseline
    section.tables.append(table(
        ["what", "rows", "file MB", "planned", "invalid", "reports MB", "seconds", "peak RSS MB",
         "above baseline MB", "bytes/row above", "peak × id run"], [
            ["import baseline (import the CLI, exit)", 0, None, None, None, None, None, baseline, None, None, None],
            [f"--dry-run, {rows:,} ids", rows, files_mb[0], id_counts["planned"], id_counts["invalid"],
             dry_ids.extra["reports_mb"], dry_ids.wall, dry_ids.max_rss_mb, above_ids, above_ids * 2**20 / rows,
             1.0],
            [f"--dry-run --inventory-file ({tenant:,} devices), {rows:,} serials", rows, files_mb[1], resolved,
             serial_counts["invalid"], dry_serials.extra["reports_mb"], dry_serials.wall, dry_serials.max_rss_mb,
             above_serials, above_serials * 2**20 / rows, dry_serials.max_rss_mb / dry_ids.max_rss_mb],
        ]))
    worst = max(dry_ids.max_rss_mb, dry_serials.max_rss_mb)
    section.verdicts += [
        verdict(f"peak RSS < {TARGET_MB} MB for 1,000,000 rows, serials as ids", worst < TARGET_MB
                if rows >= 1_000_000 else None, f"serials {dry_serials.max_rss_mb:.0f} MB, ids "
                f"{dry_ids.max_rss_mb:.0f} MB at {rows:,} rows; serial/id "
                f"{dry_serials.max_rss_mb / dry_ids.max_rss_mb:.2f}× peak, {above_serials / above_ids:.2f}× above "
                "baseline"),
        verdict("design: ≤ 100 bytes per distinct id above the import baseline (id run)",
                above_ids * 2**20 / id_distinct <= 100 if rows >= 1_000_000 else None,
                f"{above_ids * 2**20 / id_distinct:.0f} bytes per distinct id ({id_distinct:,} distinct)"),
        f"serials resolved in the {rows:,}-row dry run: {resolved:,} distinct devices planned (expected "
        f"{expected:,}); {serial_counts['invalid']:,} rows invalid (unknown to the tenant), "
        f"{dry_serials.extra['summary']['skipped_by_reason'].get('duplicate', 0):,} duplicates skipped",
    ]
    if resolved != expected:
        section.verdicts.append(f"**check failed**: {resolved:,} serials resolved, {expected:,} expected")
    if requests:
        section.verdicts.append(f"**check failed**: the dry runs sent {requests} HTTP requests")
    section.notes += [
        f"Tenant: {tenant:,} devices (`id,serialNumber,groupTag`), served by an emulator subprocess started with "
        f"--inventory, budgets {HUGE} for writes and reads off; the listing is the emulator's, pages of {PAGE:,} with "
        "absolute nextLinks the engine rebases. Wall times are spawn→exit (interpreter start-up included).",
        "'listing s' includes the emulator's own time per page: it builds the record of every tenant device for "
        "each page it serves (emulator/operations.py `_listing`), so a page of a 30,000-device tenant costs the "
        "server tens of ms; the figure is an upper bound on what the client spends.",
        f"The {rows:,}-row serial file: serial PF{{n:08d}} per row, every {DUPLICATE_EVERY}th row repeats an earlier "
        f"one; tenant device j has serial PF{{33·j:08d}}, so about 1 row in {SPREAD} names a tenant device and "
        "the rest are unknown_serial (invalid, each written to the reports with its message). The id file is "
        "the memory section's (memory_bench: ~1 % invalid, ~1 % repeated). Peak RSS via os.wait4 through the "
        "launcher; both dry runs pointed at an emulator whose request counter must stay 0.",
    ]
