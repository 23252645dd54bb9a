"""A resume records what it decided, not the devices an earlier run of the folder finished (issue 15).

A scheduled job resumes the same folder night after night; every done device written again each night made
the folder, and every later resume, grow with the number of nights.
"""

from __future__ import annotations

import csv
import random
import uuid
from pathlib import Path
from typing import Any

import orjson

from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner, assign_profiles
from bulk_assign.models import AssignmentTarget
from bulk_assign.store.reports import read_jsonl

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
TOKEN = "resume-cost-token"


def guids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fast() -> EmulatorConfig:
    return EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0))


def options(url: str, out: Path) -> dict[str, Any]:
    return {"graph_url": url, "rate": "5000/1s", "concurrency": 8, "out_dir": out, "preflight": False}


async def test_an_all_done_resume_writes_no_per_device_record_and_keeps_the_merged_view(tmp_path: Path) -> None:
    devices = guids(40, seed=15)
    ids = [*devices[:20], "not-a-guid", devices[3], *devices[20:]]  # one invalid row, one repeated id
    out = tmp_path / "out"
    async with Emulator(fast()) as emulator:
        first = await assign_profiles(ids, target=TARGET, token_provider=TOKEN, **options(emulator.base_url, out))
        assert first.counts["succeeded"] == 40
        before = read_jsonl(out / "results.jsonl")
        views = {name: rows_of(out / name) for name in ("results.csv", "failures.csv", "invalid.csv")}
        for night in range(3):
            resumed = await assign_profiles(ids, target=TARGET, token_provider=TOKEN, resume=True,
                                            **options(emulator.base_url, out))
            records = read_jsonl(out / "results.jsonl")
            added = records[len(before):]
            # only the invalid row is decided again (invalid rows are keyed by the latest run's lines)
            assert [r["status"] for r in added] == ["invalid"], night
            before = records
            assert resumed.run_counts is not None
            assert resumed.run_counts["skipped"] == 41  # 40 done devices and the repeat of one, counted
            assert resumed.counts["succeeded"] == 40 and resumed.counts["invalid"] == 1
            assert resumed.counts["skipped"] == 0 and resumed.remaining == 0 and resumed.exit_code == 1
            merged = rows_of(out / "results.csv")
            assert sorted(r["device_id"] for r in merged if r["status"] == "succeeded") == sorted(devices)
            assert len(merged) == 41
            assert [r["run_id"] for r in merged if r["status"] == "succeeded"] == [first.run_id] * 40
            assert rows_of(out / "failures.csv") == views["failures.csv"] == []
            assert [r["raw"] for r in rows_of(out / "invalid.csv")] == ["not-a-guid"]
        # the first run's 40 reads (read-before-write) and 40 writes; the resumes send nothing: done is done
        assert emulator.counters.requests == 40 + 40 and emulator.counters.writes_committed == 40


async def test_a_resume_writes_only_the_new_devices(tmp_path: Path) -> None:
    old, new = guids(30, seed=16), guids(5, seed=17)
    out = tmp_path / "out"
    async with Emulator(fast()) as emulator:
        await assign_profiles(old, target=TARGET, token_provider=TOKEN, **options(emulator.base_url, out))
        size = len(read_jsonl(out / "results.jsonl"))
        resumed = await assign_profiles(old + new, target=TARGET, token_provider=TOKEN, resume=True,
                                        **options(emulator.base_url, out))
    added = read_jsonl(out / "results.jsonl")[size:]
    assert sorted(r["device_id"] for r in added) == sorted(new)
    assert resumed.counts["succeeded"] == 35 and resumed.total_rows == 35
    assert resumed.run_counts == {**resumed.run_counts, "succeeded": 5, "skipped": 30}
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["sending_seconds"] <= summary["elapsed_seconds"]


async def test_a_caller_of_engine_run_still_gets_one_record_per_row(tmp_path: Path) -> None:
    devices = guids(10, seed=18)
    out = tmp_path / "out"
    async with Emulator(fast()) as emulator:
        await assign_profiles(devices, target=TARGET, token_provider=TOKEN, **options(emulator.base_url, out))
        size = (out / "results.jsonl").stat().st_size
        settings = Settings.build(target=TARGET, resume=True, **options(emulator.base_url, out))
        async with BulkAssigner(settings, token_provider=TOKEN) as engine:
            records = [r async for r in engine.run(devices)]
    assert [(r.device_id, r.skip_reason) for r in records] == [(d, "already_succeeded") for d in devices]
    assert (out / "results.jsonl").stat().st_size == size


async def test_a_resume_of_a_scanned_file_leaves_the_done_rows_to_the_reader(tmp_path: Path) -> None:
    """``InputRows`` (the CLI's input): the reader leaves out the done devices' rows without building them;
    they are still counted as done, the new rows are sent, and the merged view stays whole."""
    from bulk_assign.inputs.readers import InputRows, scan_input

    old, new = guids(300, seed=19), guids(7, seed=20)
    out = tmp_path / "out"
    csv_path = tmp_path / "devices.csv"
    csv_path.write_text("Device ID\n" + "\n".join([d.upper() for d in old] + ["junk", old[5], *new]) + "\n")
    async with Emulator(fast()) as emulator:
        await assign_profiles(old, target=TARGET, token_provider=TOKEN, **options(emulator.base_url, out))
        writes = emulator.counters.writes_committed
        plan = scan_input(csv_path)
        settings = Settings.build(target=TARGET, resume=True, **options(emulator.base_url, out))
        async with BulkAssigner(settings, token_provider=TOKEN) as engine:
            resumed = await engine.run_all(InputRows(plan), total=plan.total_rows)
        assert emulator.counters.writes_committed - writes == len(new)
    assert resumed.run_counts is not None
    assert resumed.run_counts["skipped"] == 301 and resumed.run_counts["succeeded"] == 7  # the repeat of old[5] too
    assert resumed.remaining == 0 and resumed.total_rows == 309
    assert resumed.counts["succeeded"] == 307 and resumed.counts["invalid"] == 1
    merged = rows_of(out / "results.csv")
    assert sorted(r["device_id"] for r in merged if r["status"] == "succeeded") == sorted(old + new)


async def test_a_dry_run_writes_its_records_in_input_order(tmp_path: Path) -> None:
    """Planned records are held and written in batches (the collector, the report writer); a record decided
    in between (invalid, duplicate) still lands where its row is, and every row has one record."""
    devices = guids(1500, seed=21)
    ids = [*devices[:700], "junk", devices[3], *devices[700:]]
    out = tmp_path / "out"
    summary = await assign_profiles(ids, target=TARGET, dry_run=True, out_dir=out)
    records = read_jsonl(out / "results.jsonl")
    assert [r["source_line"] for r in records] == list(range(1, len(ids) + 1))
    assert [r["status"] for r in records[699:703]] == ["planned", "invalid", "skipped", "planned"]
    assert summary.counts["planned"] == 1500 and summary.counts["invalid"] == 1 and summary.counts["skipped"] == 1
    assert [r["device_id"] for r in rows_of(out / "results.csv")] == [r["device_id"] for r in records]
    # its index was written without a pass for the duplicate's pointer (nothing is in flight in a dry run):
    # the same as the one rebuilt from its files
    from bulk_assign.store.history import merge_reports

    written = (out / "index.txt").read_bytes()
    (out / "index.txt").unlink()
    merge_reports(out, views=False)
    assert (out / "index.txt").read_bytes() == written
