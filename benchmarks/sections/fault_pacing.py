"""(f) Pacing under faults: at one budget, 0 %, 5 % and 10 % injected faults (every kind, the ambiguous ones too).

The budget is the emulator's own (sliding window, scaled), so a fault-free run is paced at it. A faulted
write may have been counted by the server, so the pacer keeps its place for a window after its answer;
it must not hold it longer. Goal: completion within 1.10× the fault-free time plus the retries' own share
of the budget (each resend is one more write: ``extra writes / N × T``), ≤ 1 % 429s, and the devices
started per window flat across the run (the series is shown, per two windows).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    EmulatorProc,
    Options,
    Section,
    device_ids,
    rate_text,
    read_results,
    run_cli,
    table,
    verdict,
    workdir,
    write_csv,
)

SEED = 7
SHARES = (0.0, 0.05, 0.10)


def _started_per_bin(out: Path, width: float) -> list[int]:
    stamps = sorted(datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")).timestamp()
                    for r in read_results(out).values() if r.get("started_at"))
    bins = [0] * (int((stamps[-1] - stamps[0]) // width) + 1)
    for t in stamps:
        bins[int((t - stamps[0]) // width)] += 1
    return bins


def _flatness(bins: list[int], total: int) -> float:
    """min/max of the bins between the first (the burst and the workers' head start) and the one where 90 %
    of the devices had started (after it, only stragglers)."""
    end = next(i for i in range(len(bins)) if sum(bins[: i + 1]) >= 0.9 * total)
    body = bins[1:end]
    return min(body) / max(body) if len(body) >= 2 else math.nan


def run(opts: Options) -> Section:
    count, period = opts.app_budget
    n = 500 if opts.quick else 2_000
    rate = rate_text(count, period)
    section = Section("f", f"(f) pacing under faults: {n:,} devices at {rate}, 0 / 5 / 10 % faults of every kind")
    ids = device_ids(n, salt=5)
    rows: list[list[Any]] = []
    series: list[str] = []
    base = math.nan
    ok = True
    with workdir("e-") as tmp:
        csv = write_csv(Path(tmp) / "devices.csv", ids)
        for share in SHARES:
            with EmulatorProc(rate=rate, faults=share, seed=SEED, retry_after="int") as emu:
                out = Path(tmp) / f"out-{share:g}"
                result = run_cli(csv, out, emu.base, rate=rate, concurrency=opts.concurrency)
                counters = emu.counters()
            summary = result.extra["summary"]
            elapsed = summary.get("sending_seconds") or summary["elapsed_seconds"]
            extra = summary["requests_sent"] - n  # resends of the faulted writes
            if share == 0.0:
                base = elapsed
            allowance = base * 1.10 + extra / count * period
            throttled = summary["throttled_429"] / max(1, summary["requests_sent"])
            bins = _started_per_bin(out, 2 * period)
            flat = _flatness(bins, n)
            met = elapsed <= allowance and throttled <= 0.01 and flat >= 0.8
            ok = ok and met
            rows.append([f"{share:.0%}", elapsed, elapsed / base, extra, allowance / base,
                         f"{throttled:.2%}", sum(counters["faults_injected"].values()), flat])
            series.append(f"{share:.0%}: " + " ".join(str(b) for b in bins))
    section.tables.append(table(
        ["faults", "seconds", "× no-fault", "resends", "allowed ×", "429 share", "faults injected",
         "flatness"], rows))
    section.verdicts.append(verdict(
        "issue 10 §3: ≤ 1.10× no-fault + the resends' share, ≤ 1 % 429, flat starts (min/max ≥ 0.8)", ok,
        "; ".join(f"{r[0]}: {r[2]:.2f}× of {r[4]:.2f}×" for r in rows)))
    section.notes += [
        f"Emulator `--rate {rate} --faults F` (all kinds), seed {SEED}, Retry-After whole seconds (a 503 asks "
        f"for 1 s; `--retry-after mixed` can send `1,120`, and the engine then waits 120 s for that device); "
        f"`bulk-assign run --rate {rate} --concurrency {opts.concurrency}`. 'allowed ×' = 1.10 + resends / N × T "
        f"over the no-fault time; 'flatness' = min/max of the devices started per {2 * period:g} s, first bin "
        f"and the stragglers after 90 % excluded.",
        f"Devices started per {2 * period:g} s: " + "; ".join(series),
    ]
    return section
