"""The intent journal: durable before return, group commit, cancellation, I/O errors, torn lines."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import uuid
from pathlib import Path

import orjson
import pytest

from bulk_assign.store.journal import JOURNAL_NAME, IntentJournal, iter_intents, load_intents, seal_torn_tail


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


class RecordingFsync:
    """Counts fsyncs and records which device ids were in the file when each fsync returned."""

    def __init__(self, path: Path, delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay
        self.calls = 0
        self.durable: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if self.delay:
            threading.Event().wait(self.delay)
        os.fsync(fd)
        with self.lock:
            self.calls += 1
            self.durable = {r["intent"] for r in iter_intents(self.path.parent)}


async def test_intents_are_durable_before_return_and_share_fsyncs(tmp_path: Path) -> None:
    fsync = RecordingFsync(tmp_path / JOURNAL_NAME, delay=0.001)
    journal = IntentJournal(tmp_path, "run1", fsync=fsync)
    ids = _ids(2000)
    rng = random.Random(5)
    not_durable: list[str] = []

    async def worker(device_id: str) -> None:
        for _ in range(rng.randrange(0, 200)):  # arrive spread out, while fsyncs are in progress
            await asyncio.sleep(0)
        await journal.intent(device_id)
        if device_id not in fsync.durable:
            not_durable.append(device_id)

    await asyncio.gather(*(worker(i) for i in ids))
    await journal.close()
    assert not_durable == []
    assert 1 < fsync.calls < len(ids) / 20, fsync.calls
    assert journal.fsyncs == fsync.calls
    records = list(iter_intents(tmp_path))
    assert sorted(r["intent"] for r in records) == sorted(ids)
    assert {r["run_id"] for r in records} == {"run1"}
    assert all(r["at"].endswith("Z") for r in records)


async def test_sequential_intents_each_get_their_own_fsync(tmp_path: Path) -> None:
    fsync = RecordingFsync(tmp_path / JOURNAL_NAME)
    journal = IntentJournal(tmp_path, "r", fsync=fsync)
    for device_id in _ids(3):
        await journal.intent(device_id)
        assert device_id in fsync.durable
    await journal.close()
    assert fsync.calls == 3


async def test_event_loop_keeps_running_during_fsync(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_fsync(fd: int) -> None:
        entered.set()
        release.wait(5)

    journal = IntentJournal(tmp_path, "r", fsync=slow_fsync)
    task = asyncio.create_task(journal.intent(_ids(1)[0]))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    ticks = 0
    for _ in range(5):  # the loop is free while the fsync blocks its thread
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not task.done()
    release.set()
    await task
    await journal.close()


async def test_cancelled_waiter_does_not_break_its_group(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()
    calls = 0

    def gated_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait(5)

    journal = IntentJournal(tmp_path, "r", fsync=gated_fsync)
    first = asyncio.create_task(journal.intent(_ids(1)[0]))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    # These three form the next group while the first fsync is blocked.
    a, b, c = _ids(4)[1:]
    tasks = [asyncio.create_task(journal.intent(x)) for x in (a, b, c)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.sleep(0)
    release.set()
    await first
    await tasks[0]
    await tasks[2]
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    await journal.close()
    assert calls == 2
    assert {r["intent"] for r in iter_intents(tmp_path)} == {_ids(1)[0], a, b, c}


async def test_io_error_reaches_every_waiter_of_the_group_and_sticks(tmp_path: Path) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    journal = IntentJournal(tmp_path, "r", fsync=failing_fsync)
    results = await asyncio.gather(*(journal.intent(x) for x in _ids(10)), return_exceptions=True)
    assert len(results) == 10
    assert all(isinstance(r, OSError) and r.errno == 5 for r in results), results
    with pytest.raises(OSError, match="earlier journal write failed"):
        await journal.intent(_ids(11)[10])
    await journal.close()


async def test_group_pending_when_the_error_happens_fails_too(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def fail_after_gate(fd: int) -> None:
        entered.set()
        release.wait(5)
        raise OSError(28, "No space left on device")

    journal = IntentJournal(tmp_path, "r", fsync=fail_after_gate)
    first = asyncio.create_task(journal.intent(_ids(1)[0]))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    later = [asyncio.create_task(journal.intent(x)) for x in _ids(5)[1:]]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results), results
    await journal.close()


async def test_closed_journal_refuses_intents(tmp_path: Path) -> None:
    journal = IntentJournal(tmp_path, "r", fsync=lambda fd: None)
    await journal.close()
    await journal.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await journal.intent(_ids(1)[0])


async def test_runs_append_and_load_intents_spans_them(tmp_path: Path) -> None:
    ids = _ids(6)
    async with IntentJournal(tmp_path, "run1") as j1:
        for x in ids[:3]:
            await j1.intent(x)
    async with IntentJournal(tmp_path, "run2") as j2:
        for x in ids[2:5]:
            await j2.intent(x)
    seen = load_intents(tmp_path)
    assert len(seen) == 5
    assert all(x in seen for x in ids[:5]) and ids[5] not in seen


def test_load_intents_tolerates_torn_and_garbage_lines(tmp_path: Path) -> None:
    ids = _ids(3)
    good = b"".join(orjson.dumps({"intent": x, "run_id": "r"}) + b"\n" for x in ids[:2])
    junk = b'{"intent": "not-a-guid", "run_id": "r"}\n\x00\x00\x00\n[1,2]\n'
    torn = orjson.dumps({"intent": ids[2], "run_id": "r"})[:-7]
    (tmp_path / JOURNAL_NAME).write_bytes(good + junk + torn)
    seen = load_intents(tmp_path)
    assert len(seen) == 2 and ids[0] in seen and ids[1] in seen and ids[2] not in seen


def test_load_intents_of_a_folder_without_journal_is_empty(tmp_path: Path) -> None:
    assert len(load_intents(tmp_path)) == 0


async def test_reopening_after_a_torn_line_cuts_it_so_new_lines_stay_whole(tmp_path: Path) -> None:
    ids = _ids(3)
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(orjson.dumps({"intent": ids[0], "run_id": "r1"}) + b"\n" + b'{"intent": "0000')
    async with IntentJournal(tmp_path, "r2", fsync=lambda fd: None) as journal:
        await journal.intent(ids[1])
    assert [r["intent"] for r in iter_intents(tmp_path)] == [ids[0], ids[1]]
    assert path.read_bytes().count(b"\n") == 2


def test_seal_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert seal_torn_tail(path) is False  # missing
    path.write_bytes(b"")
    assert seal_torn_tail(path) is False
    path.write_bytes(b"a\nb\n")
    assert seal_torn_tail(path) is False and path.read_bytes() == b"a\nb\n"
    path.write_bytes(b"a\nb\nhalf")
    assert seal_torn_tail(path) is True and path.read_bytes() == b"a\nb\n"
    path.write_bytes(b"x" * 200_000)  # one torn line longer than the search block
    assert seal_torn_tail(path) is True and path.read_bytes() == b""
    path.write_bytes(b"a\n" + b"y" * 100_000)
    assert seal_torn_tail(path) is True and path.read_bytes() == b"a\n"
