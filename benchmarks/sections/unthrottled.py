"""(a) Unthrottled devices/s: bare aiohttp loop vs ``bulk-assign run`` vs the API vs Microsoft's SDK.

One emulator with budgets no client can reach and no faults; its state is reset before every client. The
clients alternate for ``rounds`` rounds and each keeps its best round, so a load spike from other work on
the machine hurts all alike. The SDK runs once, on fewer devices (it is slow; devices/s is what compares).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    HUGE,
    EmulatorProc,
    Options,
    Section,
    device_ids,
    run_cli,
    run_client,
    sdk_missing,
    table,
    verdict,
    workdir,
    write_csv,
)

BARE = "bare aiohttp loop (timed loop)"
BARE_PROC = "bare aiohttp loop (start→exit)"
CLI = "bulk-assign run (start→exit)"
CLI_ENGINE = "bulk-assign run (summary.json elapsed)"
API = "engine API assign_profiles()"
SDK = "msgraph-beta-sdk, gather + semaphore"


def _measure(name: str, emu: EmulatorProc, csv: Path, out: Path, opts: Options) -> dict[str, dict[str, Any]]:
    """One client's run(s); returns rows keyed by label: devices, seconds, client CPU, emulator CPU."""
    emu.reset()
    cpu0 = emu.cpu()
    conc = str(opts.concurrency)
    rows: dict[str, dict[str, Any]] = {}
    if name == "bare":
        r = run_client("bare", emu.base, str(csv), conc)
        rows[BARE] = {"seconds": r["elapsed"], "cpu": r["cpu"]}
        rows[BARE_PROC] = {"seconds": r["process_wall"], "cpu": r["process_cpu"]}
        ok = r["succeeded"]
    elif name == "cli":
        c = run_cli(csv, out, emu.base, rate=HUGE, concurrency=opts.concurrency)
        summary = c.extra["summary"]
        rows[CLI] = {"seconds": c.wall, "cpu": c.cpu, "rss": c.max_rss_mb}
        rows[CLI_ENGINE] = {"seconds": summary.get("sending_seconds") or summary["elapsed_seconds"], "cpu": None}
        ok = summary["counts"]["succeeded"]
    elif name == "api":
        r = run_client("api", emu.base, str(csv), conc, HUGE)
        rows[API] = {"seconds": r["elapsed"], "cpu": r["cpu"]}
        ok = r["succeeded"]
    else:
        r = run_client("sdk", emu.base, str(csv), conc)
        rows[SDK] = {"seconds": r["elapsed"], "cpu": r["cpu"], "warmup": r["warmup"], "navigation": r["navigation"]}
        ok = r["succeeded"]
    emu_cpu = emu.cpu() - cpu0
    counters = emu.counters()
    devices = len(Path(csv).read_text().split()) - 1
    for row in rows.values():
        row.update(devices=devices, ok=ok, committed=counters["writes_committed"], emu_cpu=emu_cpu,
                   requests=counters["requests"])
    return rows


def run(opts: Options) -> Section:
    section = Section("a", "(a) Unthrottled devices/s")
    n, n_sdk = opts.unthrottled_devices, opts.sdk_devices
    best: dict[str, dict[str, Any]] = {}
    with workdir("a-") as tmp, EmulatorProc() as emu:
        folder = Path(tmp)
        csv = write_csv(folder / "devices.csv", device_ids(n))
        sdk_csv = write_csv(folder / "sdk.csv", device_ids(n_sdk, salt=1))
        for round_no in range(opts.rounds):
            for name in ("bare", "cli", "api"):
                out = folder / f"out-{name}-{round_no}"
                for label, row in _measure(name, emu, csv, out, opts).items():
                    if label not in best or row["seconds"] < best[label]["seconds"]:
                        best[label] = row
        missing = sdk_missing()
        if missing is None:
            best.update(_measure("sdk", emu, sdk_csv, folder / "out-sdk", opts))

    rate = {label: row["devices"] / row["seconds"] for label, row in best.items()}
    bare = rate[BARE]
    rows = []
    for label in (BARE, BARE_PROC, CLI, CLI_ENGINE, API, SDK):
        if label not in best:
            rows.append([label, f"not run: SDK {missing}"])
            continue
        row = best[label]
        cpu_us = row["cpu"] / row["devices"] * 1e6 if row["cpu"] is not None else None
        emu_busy = row["emu_cpu"] / row["seconds"] * 100 if label not in (BARE_PROC, CLI) else None
        rows.append([label, row["devices"], row["ok"], row["seconds"], rate[label], cpu_us, emu_busy,
                     rate[label] / bare])
    section.tables.append(table(
        ["client", "devices", "succeeded", "seconds", "devices/s", "client CPU µs/device", "emulator busy %",
         "× bare loop"], rows))

    engine = rate[CLI_ENGINE]
    sdk_rate = rate.get(SDK, float("nan"))
    pairs = [
        ("bulk-assign run / bare loop (timed part of each)", engine / bare),
        ("bulk-assign run / bare loop (start→exit of each)", rate[CLI] / rate[BARE_PROC]),
        ("engine API / bare loop", rate[API] / bare),
        ("bulk-assign run / SDK", engine / sdk_rate),
        ("engine API / SDK", rate[API] / sdk_rate),
        ("bare loop / SDK (ceiling for any client here)", bare / sdk_rate),
    ]
    section.tables.append(table(["ratio", "value"], [[k, f"{v:.2f}×" if v == v else "n/a"] for k, v in pairs]))
    failed = [label for label, row in best.items() if row["ok"] != row["devices"] or row["committed"] != row["devices"]]
    api, cli, bare_proc = rate[API] / bare, rate[CLI] / rate[BARE_PROC], rate[BARE_PROC]
    section.verdicts += [
        verdict("issue 10 goal: engine API ≥ 0.9× the bare aiohttp loop", api >= 0.9,
                f"{api:.2f}×; {rate[API]:,.0f} vs {bare:,.0f} devices/s"),
        verdict("issue 10 goal: bulk-assign run, start to exit, ≥ 0.8× the bare aiohttp loop, start to exit",
                cli >= 0.8, f"{cli:.2f}×; {rate[CLI]:,.0f} vs {bare_proc:,.0f} devices/s"),
        verdict("issue 3 goal: bulk-assign run ≥ 0.8× the bare aiohttp loop (timed part of each)", engine / bare >= 0.8,
                f"{engine / bare:.2f}×"),
        verdict("issue 6 goal: ≥ 50× the SDK", engine / sdk_rate >= 50 if SDK in rate else None,
                f"{engine / sdk_rate:.1f}×; SDK {sdk_rate:,.0f} devices/s" if SDK in rate else f"SDK {missing}"),
    ]
    if failed:
        section.verdicts.append(f"**check failed**: not every device succeeded/committed for {', '.join(failed)}")
    sdk = best.get(SDK, {"navigation": "—", "warmup": 0.0})
    section.notes += [
        f"{n:,} devices for the engine and the bare loop, {n_sdk:,} for the SDK; concurrency {opts.concurrency} for "
        f"all (engine --concurrency, bare-loop workers, SDK semaphore); best of {opts.rounds} alternating rounds "
        "(the SDK once); emulator budgets 1000000/1s, no faults.",
        "Bare loop = benchmarks/emulator_bench.py `hammer()` (one shared session, N workers, prebuilt body). "
        "'timed' rows exclude interpreter start-up and imports; 'start→exit' rows include them (issue 10's run "
        "goal compares the two start→exit rows, so both sides pay for an interpreter). CPU of "
        "start→exit rows includes start-up. 'emulator busy %' = emulator CPU / wall: near 100 % means the "
        "emulator's core, not the client, was the limit.",
        f"SDK: request built as `{sdk['navigation']}` (the documented per-device "
        "`deployment_profile.assignments` navigation does not exist in msgraph-beta-sdk; see "
        f"benchmarks/sdk_client.py); a one-off model import warm-up of {sdk['warmup']:.1f} s is excluded.",
    ]
    return section
