"""End to end: faulted answers (5xx, resets, ambiguous ones) must not eat the write budget as the run goes on.

Before every answer was reported to the pacer, each fault left one write of the pacer's log without an
answer, answers were matched one write further off each time, and the writes granted per window fell
steadily (100 → 40 per window over a dozen windows at 8 % faults).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import datetime

from bulk_assign import Settings, Status
from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner
from bulk_assign.models import AssignmentTarget

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
TOKEN = "test-token-faults"


def guids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def per_window(stamps: list[str], period: float) -> list[int]:
    """Devices started in each window of ``period`` from the first start (the last, partial one dropped)."""
    times = sorted(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)
    counts = Counter(int((t - times[0]) // period) for t in times)
    return [counts[i] for i in range(max(counts))]


async def test_faults_do_not_erode_the_write_budget_over_the_run() -> None:
    """1,200 devices at 100/0.5s with 10 % faults of every kind: each window keeps starting about a window's
    budget of devices, and no write the server may have counted is forgotten (no 429)."""
    devices = guids(1200, seed=21)
    config = EmulatorConfig(app_rate=Rate(100, 0.5), tenant_rate=Rate(100_000, 1.0), retry_after="int",
                            faults=0.10, seed=5, read_rate=None)
    async with Emulator(config) as emulator:
        s = Settings.build(target=TARGET, graph_url=emulator.base_url, rate="100/0.5s", concurrency=32,
                           read_rate="100000/1s")
        async with BulkAssigner(s, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
        counters = emulator.counters
    assert all(r.status in (Status.SUCCEEDED, Status.SKIPPED) for r in records)
    assert counters.devices_assigned_twice == 0
    assert counters.throttled <= 0.01 * counters.requests
    # two budget windows per bin: a window's burst falls into one bin, not now into one and now into the next
    started = per_window([r.started_at for r in records if r.started_at], 1.0)
    # the first bin carries the initial burst and the concurrency's head start, the last ones the stragglers
    steady = started[1:next(i for i in range(len(started)) if sum(started[:i + 1]) >= 0.9 * len(devices))]
    assert len(steady) >= 3 and min(steady) >= 0.8 * max(steady), started
