"""Part of (b): how fast the engine's adaptive pacing settles after the tenant's real budget drops mid-run.

The emulator starts at the configured budget (engine ``--rate`` equal to it); once the engine has sent for
``pre`` windows, ``POST /_emulator/rates`` halves the app and tenant budgets. The emulator's counters are read
every T/4; per budget window after the cut we count write operations, 429s and commits. "Converged after k
windows" = the first window k from which the 429 share over all the remaining windows stays ≤ 1 % (the (b)
goal): the AIMD controller keeps probing upwards, so an occasional 429 after that is expected and shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import PY, ROOT, TARGET, EmulatorProc, Options, cli_env, device_ids, rate_text, table, verdict

Sample = tuple[float, int, int, int]  # (monotonic time, writes evaluated, throttled, writes_committed)
SETTLED_SHARE = 0.01


@dataclass
class Convergence:
    table: str
    verdict: str
    notes: list[str] = field(default_factory=list)


async def _drive(emu: EmulatorProc, argv: list[str], pre_seconds: float, cut: dict[str, str], poll: float
                 ) -> tuple[list[Sample], float | None]:
    """Run the CLI, sample the counters every ``poll`` seconds, cut the budget ``pre_seconds`` after the
    first write arrived; returns the samples and the time of the cut."""
    samples: list[Sample] = []
    first: float | None = None
    changed: float | None = None
    proc = await asyncio.create_subprocess_exec(*argv, env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(emu.root + "/_emulator/counters") as response:
                c = await response.json()
            now = time.monotonic()
            # write operations evaluated: each one committed or throttled (no faults here); reads (the
            # engine's read-before-write) are neither, and counting every item would dilute the 429 share
            samples.append((now, c["writes_committed"] + c["throttled"], c["throttled"], c["writes_committed"]))
            if first is None and c["writes_committed"] > 0:
                first = now
            if first is not None and changed is None and now - first >= pre_seconds:
                async with session.post(emu.root + "/_emulator/rates", json=cut) as response:
                    response.raise_for_status()
                changed = time.monotonic()
            if proc.returncode is not None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=poll)
    return samples, changed


def _at(samples: list[Sample], t: float) -> Sample:
    """The last sample taken at or before ``t`` (counters are cumulative)."""
    best = samples[0]
    for sample in samples:
        if sample[0] > t:
            break
        best = sample
    return best


def _windows(samples: list[Sample], start: float, period: float) -> list[tuple[int, int, int]]:
    """(items, 429s, commits) per full window of ``period`` from ``start`` to the last sample."""
    out = []
    k = 0
    end = samples[-1][0]
    while start + (k + 1) * period <= end + 1e-9:
        a, b = _at(samples, start + k * period), _at(samples, start + (k + 1) * period)
        out.append((b[1] - a[1], b[2] - a[2], b[3] - a[3]))
        k += 1
    return out


def _settled_after(windows: list[tuple[int, int, int]]) -> int | None:
    """The first window from which the 429 share of all remaining windows stays ≤ 1 % (None: never)."""
    for k in range(len(windows)):
        rest = windows[k:]
        items = sum(w[0] for w in rest)
        if items and sum(w[1] for w in rest) / items <= SETTLED_SHARE:
            return k
    return None


def _rate_changes(run_log: Path) -> list[str]:
    if not run_log.exists():
        return []
    return re.findall(r"pacing: effective rate (\d+)/", run_log.read_text(encoding="utf-8", errors="replace"))


def measure(opts: Options, folder: Path, modes: list[bool], extra: Sequence[str] = ()) -> Convergence:
    count, period = opts.app_budget
    tcount, tperiod = opts.tenant_budget
    new = count // 2
    pre, post = (1, 3) if opts.quick else (5, 15)
    if opts.quick:
        modes = modes[:1]  # a smoke run: per device only
    devices = pre * count + int(post * new * 1.2)
    cut = {"app": rate_text(new, period), "tenant": rate_text(tcount // 2, tperiod)}
    rows: list[list[Any]] = []
    settled_all: list[int | None] = []
    sequences = []
    for batch in modes:
        csv = folder / f"convergence-{int(batch)}.csv"
        csv.write_text("id\n" + "\n".join(device_ids(devices, salt=77 + batch)) + "\n")
        out = folder / f"out-convergence-{int(batch)}"
        argv = [PY, "-m", "bulk_assign", "run", str(csv), "--target", TARGET, "--rate", rate_text(count, period),
                "--concurrency", str(opts.concurrency), "--out", str(out)]
        if batch:
            argv.append("--batch")
        argv += extra
        with EmulatorProc(rate=rate_text(count, period), tenant_rate=rate_text(tcount, tperiod),
                          throttle="sliding", retry_after="decimal") as emu:
            argv[5:5] = ["--graph-url", emu.base]
            samples, changed = asyncio.run(_drive(emu, argv, pre * period, cut, period / 4))
            committed = emu.counters()["writes_committed"]
        if changed is None:
            rows.append(["engine --batch" if batch else "engine per device", "run ended before the cut"])
            settled_all.append(None)
            continue
        before = _windows(samples, changed - pre * period, period)[:pre]
        after = _windows(samples, changed, period)[:post]
        settled = _settled_after(after)
        settled_all.append(settled)
        tail = after[settled:] if settled is not None else []
        use = sum(w[2] for w in tail) / (len(tail) * new) if tail else None
        changes = _rate_changes(out / "run.log")
        sequences.append(f"{'--batch' if batch else 'per device'}: {' → '.join([str(count), *changes][:16])}")
        rows.append([
            "engine --batch" if batch else "engine per device",
            sum(w[1] for w in before) / max(1, sum(w[0] for w in before)),
            " ".join(str(w[1]) for w in after),
            settled if settled is not None else f"> {len(after)}",
            sum(w[1] for w in tail),
            len(tail),
            f"{use:.0%}" if use is not None else "—",
            committed == devices,
        ])
    text = table(["client", "429 share before cut", "429s per window after cut", "settled after (windows)",
                  "429s once settled", "windows settled", "budget used once settled", "all committed"], rows)
    ok = all(s is not None and s <= 2 for s in settled_all)
    shown = ", ".join(str(s) if s is not None else f"not within {post}" for s in settled_all)
    return Convergence(
        table=f"Convergence: budget cut from {rate_text(count, period)} to {rate_text(new, period)} "
              f"(tenant {rate_text(tcount // 2, tperiod)}) after {pre} windows, sliding window\n{text}",
        verdict=verdict("issue 6 goal: convergence within two budget windows", ok, f"settled after {shown} windows"),
        notes=[
            f"Convergence: {devices:,} devices; counters read every T/4; a window is T = {period:g} s from the cut. "
            "'settled after k' = from window k on, the 429 share over the rest of the run stays ≤ 1 %. "
            "'budget used' = commits per settled window / the new budget (a pacer that fell far below the "
            "budget would also show no 429s).",
            "Effective rate changes from run.log (pacing lines): " + "; ".join(sequences),
        ],
    )
