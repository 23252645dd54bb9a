"""A report folder is pinned to its operation and target (issue 12): a resume with another one is refused."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulk_assign import BulkAssigner, UsageError
from bulk_assign.config import Rate, Settings
from bulk_assign.models import AssignmentTarget
from bulk_assign.store.pin import PIN_NAME

A = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
B = AssignmentTarget.parse("group:11111111-2222-3333-4444-666666666666")
FAST = Rate(100_000, 1.0)


async def run(emu: Any, out: Path, target: AssignmentTarget, ids: list[str], **options: Any) -> Any:
    settings = Settings(target=target, graph_url=emu.base_url, out_dir=out, rate=FAST, **options)
    async with BulkAssigner(settings, token_provider="t") as engine:
        return await engine.run_all(ids)


async def test_a_resume_with_another_target_is_refused_naming_both(start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    out = tmp_path / "wave"
    await run(emu, out, A, ids)
    pin = orjson.loads((out / PIN_NAME).read_bytes())
    assert pin == {"operation": "assign-profile", "target": A.describe()}
    before = emu.tenant.counters.requests
    with pytest.raises(UsageError) as caught:
        await run(emu, out, B, ids, resume=True)
    message = str(caught.value)
    assert A.describe() in message and B.describe() in message and "another --out" in message
    assert emu.tenant.counters.requests == before  # refused before anything was sent
    summary = await run(emu, out, A, [*ids, str(uuid.uuid4())], resume=True)
    assert summary.counts["succeeded"] == 6 and emu.tenant.counters.writes_committed == 6


async def test_a_folder_from_before_the_pin_gets_one(start_emulator: Any, tmp_path: Path) -> None:
    emu = await start_emulator(app_rate=FAST, tenant_rate=FAST)
    out = tmp_path / "old"
    await run(emu, out, A, [str(uuid.uuid4())])
    (out / PIN_NAME).unlink()
    await run(emu, out, A, [str(uuid.uuid4())], resume=True)
    assert orjson.loads((out / PIN_NAME).read_bytes())["target"] == A.describe()
