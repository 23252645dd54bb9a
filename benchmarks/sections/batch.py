"""(d) HTTP requests per device with ``--batch`` (emulator counters: HTTP requests / devices).

Budgets out of the way and no faults, so the figure is the batching itself (Graph allows 20 requests per
``$batch``: the floor is 0.05). Per-device mode is measured beside it for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    HUGE,
    EmulatorProc,
    Options,
    Section,
    cli_supports,
    device_ids,
    run_cli,
    table,
    verdict,
    workdir,
    write_csv,
)


def run(opts: Options) -> Section:
    section = Section("d", "(d) HTTP requests per device with --batch")
    n = opts.fault_devices
    headers = ["mode", "devices", "HTTP requests", "$batch requests", "requests/device", "succeeded", "seconds",
               "devices/s"]
    if not cli_supports("--batch"):
        section.tables.append(table(headers, [["--batch", "TODO: `bulk-assign run --help` has no --batch yet"]]))
        section.verdicts.append(verdict("issue 6 goal: ≤ 0.06 HTTP requests per device", None, "no --batch yet"))
        return section
    rows: list[list[Any]] = []
    with workdir("d-") as tmp, EmulatorProc() as emu:
        folder = Path(tmp)
        csv = write_csv(folder / "devices.csv", device_ids(n, salt=4))
        for batch in (False, True):
            emu.reset()
            result = run_cli(csv, folder / f"out-{int(batch)}", emu.base, rate=HUGE, concurrency=opts.concurrency,
                             extra=["--batch"] if batch else [])
            summary = result.extra["summary"]
            c = emu.counters()
            seconds = summary.get("sending_seconds") or summary["elapsed_seconds"]
            rows.append(["--batch" if batch else "per device", n, c["requests"], c["batches"], c["requests"] / n,
                         summary["counts"]["succeeded"], seconds, n / seconds])
    section.tables.append(table(headers, rows))
    per_device = rows[-1][4]
    section.verdicts.append(verdict("issue 6 goal: ≤ 0.06 HTTP requests per device", per_device <= 0.06,
                                    f"{per_device:.3f} with --batch"))
    section.notes.append(f"{n:,} devices, budgets 1000000/1s, no faults, concurrency {opts.concurrency}; "
                         "engine elapsed from summary.json.")
    return section
