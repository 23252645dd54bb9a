"""History of an output folder (resume decisions) and the merged report over all its runs."""

from __future__ import annotations

import csv
import inspect
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson

from bulk_assign.models import DeviceResult, InputRow, SkipReason, Status
from bulk_assign.store.history import iter_results, load_history, merge_reports
from bulk_assign.store.journal import JOURNAL_NAME
from bulk_assign.store.reports import ReportWriter, Summary, read_jsonl


def dev(i: int) -> str:
    return str(uuid.UUID(int=0xABC0000 + i))


def rec(i: int, status: Status, run: str, reason: SkipReason | None = None, **extra: Any) -> bytes:
    result = DeviceResult(device_id=dev(i), status=status, skip_reason=reason, run_id=run, source_line=i + 2, **extra)
    return orjson.dumps(result.to_dict()) + b"\n"


def invalid(line: int, run: str, raw: str = "junk") -> bytes:
    result = DeviceResult(device_id=raw, status=Status.INVALID, error_code="InvalidGuid", error_message="not a GUID",
                          source_line=line, run_id=run)
    return orjson.dumps(result.to_dict()) + b"\n"


def intents(*pairs: tuple[int, str]) -> bytes:
    return b"".join(orjson.dumps({"intent": dev(i), "run_id": run}) + b"\n" for i, run in pairs)


SUMMARY = Summary(run_id="r", started_at="", finished_at="", elapsed_seconds=0, total_rows=0, counts={},
                  skipped_by_reason={}, remaining=0, requests_sent=0, throttled_429=0, retries=0,
                  verifications=0, devices_per_minute=0, effective_rate="", exit_code=0, settings={})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------- history


def test_history_of_an_empty_folder(tmp_path: Path) -> None:
    history = load_history(tmp_path)
    assert len(history.succeeded) == 0 and len(history.in_doubt) == 0 and history.runs == 0


def test_history_succeeded_and_in_doubt(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_bytes(
        rec(1, Status.SUCCEEDED, "r1")
        + rec(2, Status.FAILED, "r1", error_code="Forbidden")
        + rec(3, Status.SKIPPED, "r1", SkipReason.ALREADY_ASSIGNED)
        + rec(1, Status.SKIPPED, "r1", SkipReason.DUPLICATE)
        + rec(4, Status.SKIPPED, "r1", SkipReason.DUPLICATE)
        + invalid(9, "r1")
        + rec(5, Status.PLANNED, "r0")
        + rec(1, Status.SKIPPED, "r2", SkipReason.ALREADY_SUCCEEDED)
        + rec(6, Status.SKIPPED, "r2", SkipReason.ALREADY_SUCCEEDED)
    )
    # 7: intent, no outcome (the run died mid-request); 2: intent and a failure; 1: intent and success.
    (tmp_path / JOURNAL_NAME).write_bytes(intents((1, "r1"), (2, "r1"), (3, "r1"), (7, "r3")) + b'{"intent": "ab')
    history = load_history(tmp_path)
    assert {i for i in range(10) if dev(i) in history.succeeded} == {1, 3, 6}
    assert {i for i in range(10) if dev(i) in history.in_doubt} == {2, 7}
    assert history.runs == 4  # r0, r1, r2 from results; r3 only in the journal


def test_history_tolerates_a_torn_last_line_and_recovers_a_glued_record(tmp_path: Path) -> None:
    torn = rec(2, Status.SUCCEEDED, "r1")[:40]
    # A crash tore record 2; the next run appended record 3 right after the fragment, and then tore record 4.
    data = rec(1, Status.SUCCEEDED, "r1") + torn + rec(3, Status.SUCCEEDED, "r2") + rec(4, Status.SUCCEEDED, "r2")[:-9]
    (tmp_path / "results.jsonl").write_bytes(data)
    history = load_history(tmp_path)
    assert {i for i in range(6) if dev(i) in history.succeeded} == {1, 3}
    assert [r["device_id"] for r in iter_results(tmp_path)] == [dev(1), dev(3)]


async def test_a_device_named_only_in_a_torn_line_is_in_doubt_and_stays_so(tmp_path: Path) -> None:
    """Hardening #8: a torn record whose device's intent is lost with the journal's damaged tail."""
    glued = rec(3, Status.SUCCEEDED, "r1")[:70]  # a fragment that a later run glued a record onto
    (tmp_path / "results.jsonl").write_bytes(rec(1, Status.SUCCEEDED, "r1") + glued + rec(4, Status.FAILED, "r2")
                                             + rec(2, Status.SUCCEEDED, "r2")[:60])
    (tmp_path / JOURNAL_NAME).write_bytes(intents((1, "r1"))[:-1] + b'\x00\x00{"inte')  # damaged tail
    history = load_history(tmp_path)
    assert {i for i in range(6) if dev(i) in history.in_doubt} == {2, 3}
    assert {i for i in range(6) if dev(i) in history.succeeded} == {1}
    # the next run's report writer seals the tail, but keeps the fragment as evidence
    await ReportWriter(tmp_path).close(SUMMARY)
    assert {i for i in range(6) if dev(i) in load_history(tmp_path).in_doubt} == {2, 3}
    assert [r["device_id"] for r in iter_results(tmp_path)] == [dev(1), dev(4)]


async def test_a_flush_after_close_is_harmless(tmp_path: Path) -> None:
    """Hardening #12: the collector's flush timer could fire after the files closed ("flush of closed file")."""
    writer = ReportWriter(tmp_path)
    writer.outcome(DeviceResult(dev(1), Status.SUCCEEDED, run_id="r"))
    await writer.close(SUMMARY)
    writer.flush()


# ------------------------------------------------------------------------------------------------ merge


def test_merge_last_real_outcome_wins_and_files_are_rewritten(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_bytes(
        invalid(5, "r1", "old-junk")
        + rec(1, Status.FAILED, "r1", http_status=503, error_code="RetriesExhausted")
        + rec(2, Status.SUCCEEDED, "r1", assignment_id="a2")
        + rec(3, Status.FAILED, "r1", http_status=403, error_code="Forbidden")
        + rec(3, Status.SKIPPED, "r1", SkipReason.DUPLICATE)  # must not hide the failure of 3
        + rec(9, Status.SKIPPED, "r1", SkipReason.DUPLICATE)  # 9's own outcome never came: the pointer is all
        # run 2 (resume)
        + invalid(5, "r2", "junk")
        + invalid(7, "r2", "more junk")
        + rec(2, Status.SKIPPED, "r2", SkipReason.ALREADY_SUCCEEDED)  # must not hide the success of 2
        + rec(1, Status.SKIPPED, "r2", SkipReason.ALREADY_ASSIGNED)  # verified: the 503 had landed
        + rec(4, Status.SUCCEEDED, "r2", assignment_id="a4")
    )
    (tmp_path / "results.csv").write_text("stale\n")
    (tmp_path / "failures.csv").write_text("stale\n")
    view = merge_reports(tmp_path)
    assert view.counts == {"skipped": 2, "succeeded": 2, "failed": 1, "invalid": 2}
    assert view.skipped_by_reason == {"duplicate": 1, "already_assigned": 1}
    assert view.total == 7  # devices 1, 2, 3, 4, 9 + 2 invalid rows of r2
    assert view.runs == 2 and view.latest_run_id == "r2"

    rows = read_csv(tmp_path / "results.csv")
    by_id = {r["device_id"]: r for r in rows}
    assert by_id[dev(1)]["skip_reason"] == "already_assigned"
    assert by_id[dev(2)]["status"] == "succeeded" and by_id[dev(2)]["assignment_id"] == "a2"
    assert by_id[dev(3)]["status"] == "failed"
    assert by_id[dev(9)]["skip_reason"] == "duplicate"
    assert "old-junk" not in by_id and by_id["junk"]["run_id"] == "r2"
    assert len(rows) == 7
    # file order of the chosen records is kept
    assert [r["device_id"] for r in rows] == [dev(2), dev(3), dev(9), "junk", "more junk", dev(1), dev(4)]
    assert by_id[dev(2)]["http_status"] == ""  # nulls are empty cells, as ReportWriter writes them

    failures = read_csv(tmp_path / "failures.csv")
    assert [(r["device_id"], r["error_code"]) for r in failures] == [(dev(3), "Forbidden")]
    invalids = read_csv(tmp_path / "invalid.csv")
    assert [(r["source_line"], r["raw"]) for r in invalids] == [("5", "junk"), ("7", "more junk")]
    assert not list(tmp_path.glob("*.tmp"))


def test_invalid_rows_of_older_runs_are_dropped_when_the_latest_run_had_none(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_bytes(invalid(3, "r1") + rec(1, Status.SUCCEEDED, "r2"))
    view = merge_reports(tmp_path)
    assert view.counts == {"succeeded": 1} and view.total == 1
    assert read_csv(tmp_path / "invalid.csv") == []


def test_invalid_items_of_one_line_are_all_kept(tmp_path: Path) -> None:
    """Hardening #6: a one-line JSON array of 16 invalid items kept 1 of them in invalid.csv on --resume."""
    line = b"".join(invalid(1, "r1", raw=f"junk{i}") for i in range(16))
    (tmp_path / "results.jsonl").write_bytes(line + rec(1, Status.SUCCEEDED, "r1") + line.replace(b"r1", b"r2"))
    view = merge_reports(tmp_path)
    assert view.counts == {"succeeded": 1, "invalid": 16} and view.total == 17
    assert [row["raw"] for row in read_csv(tmp_path / "invalid.csv")] == [f"junk{i}" for i in range(16)]


async def test_merge_of_one_run_matches_what_the_report_writer_wrote(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    results = [
        DeviceResult(dev(1), Status.SUCCEEDED, assignment_id="x", attempts=1, http_status=201, run_id="r",
                     started_at="2024-01-01T00:00:00.000Z", duration_ms=12, source_line=2),
        DeviceResult(dev(2), Status.FAILED, http_status=403, error_code="Forbidden", attempts=1,
                     error_message='denied, "quoted"\nnext line', run_id="r", source_line=3),
        DeviceResult("{bad", Status.INVALID, error_code="InvalidGuid", error_message="not a GUID", source_line=4,
                     run_id="r"),
        DeviceResult(dev(3), Status.SKIPPED, SkipReason.DUPLICATE, run_id="r", source_line=5),
    ]
    for result in results:
        writer.outcome(result)
    summary = Summary(run_id="r", started_at="", finished_at="", elapsed_seconds=0, total_rows=4, counts={},
                      skipped_by_reason={}, remaining=0, requests_sent=0, throttled_429=0, retries=0,
                      verifications=0, devices_per_minute=0, effective_rate="", exit_code=1, settings={})
    closing = writer.close(summary)
    if inspect.isawaitable(closing):  # ReportWriter.close is becoming a coroutine
        await closing
    before = {name: (tmp_path / name).read_bytes() for name in ("results.csv", "failures.csv", "invalid.csv")}
    merge_reports(tmp_path)
    after = {name: (tmp_path / name).read_bytes() for name in before}
    assert after == before


def test_merge_of_a_folder_without_results(tmp_path: Path) -> None:
    view = merge_reports(tmp_path)
    assert view.total == 0 and view.counts == {}
    assert read_csv(tmp_path / "results.csv") == []


def test_merge_memory_stays_per_device_small(tmp_path: Path) -> None:
    n = 30_000
    with open(tmp_path / "results.jsonl", "wb") as handle:
        for i in range(n):
            handle.write(rec(i, Status.FAILED, "r1", error_code="Timeout"))
        for i in range(n):  # a resume: every device decided again, so results.jsonl holds 2n records
            handle.write(rec(i, Status.SUCCEEDED, "r2"))
    tracemalloc.start()
    try:
        view = merge_reports(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view.counts == {"succeeded": n} and view.total == n
    per_device = peak / n
    assert per_device < 175, f"{per_device:.0f} bytes per device"
    assert read_csv(tmp_path / "failures.csv") == []


# ------------------------------------------------------------------------------------------------ index


def _folder_views(folder: Path) -> dict[str, list[dict[str, str]]]:
    return {name: read_csv(folder / name) for name in ("results.csv", "failures.csv", "invalid.csv")}


def _two_runs(folder: Path) -> None:
    (folder / "results.jsonl").write_bytes(
        rec(1, Status.FAILED, "r1", error_code="Timeout") + rec(2, Status.SUCCEEDED, "r1")
        + rec(2, Status.SKIPPED, "r1", SkipReason.DUPLICATE) + invalid(9, "r1") + rec(5, Status.FAILED, "r1"))
    (folder / JOURNAL_NAME).write_bytes(intents((1, "r1"), (2, "r1"), (5, "r1")))


def test_the_index_is_caught_up_from_its_marks_and_rebuilt_when_missing_or_damaged(tmp_path: Path) -> None:
    from bulk_assign.store.index import INDEX_NAME

    _two_runs(tmp_path)
    first = merge_reports(tmp_path)
    index = (tmp_path / INDEX_NAME).read_bytes()
    # a later run (killed before it rewrote the index) appended records and intents
    with open(tmp_path / "results.jsonl", "ab") as handle:
        handle.write(rec(1, Status.SKIPPED, "r2", SkipReason.ALREADY_ASSIGNED) + rec(7, Status.SUCCEEDED, "r2"))
    with open(tmp_path / JOURNAL_NAME, "ab") as handle:
        handle.write(intents((7, "r2"), (8, "r2")))
    history = load_history(tmp_path)  # from the index and the two tails
    assert {i for i in range(10) if dev(i) in history.succeeded} == {1, 2, 7}
    assert {i for i in range(10) if dev(i) in history.in_doubt} == {5, 8}
    assert history.runs == 2
    caught_up = merge_reports(tmp_path, latest_run="r2")
    views = _folder_views(tmp_path)
    assert caught_up.counts == {"skipped": 1, "succeeded": 2, "failed": 1} and first.total == 4
    for damage in ("missing", "flipped", "cut", "results replaced"):
        if damage == "missing":
            (tmp_path / INDEX_NAME).unlink()
        elif damage == "flipped":
            data = bytearray((tmp_path / INDEX_NAME).read_bytes())
            data[40] ^= 0x01
            (tmp_path / INDEX_NAME).write_bytes(bytes(data))
        elif damage == "cut":
            (tmp_path / INDEX_NAME).write_bytes((tmp_path / INDEX_NAME).read_bytes()[:-30])
        else:  # an index of another folder's files: its marks do not match
            (tmp_path / INDEX_NAME).write_bytes(index)
            data = (tmp_path / "results.jsonl").read_bytes()
            (tmp_path / "results.jsonl").write_bytes(data.replace(b'"r1"', b'"x1"', 1))
        again = load_history(tmp_path)
        assert (set(again.succeeded), set(again.in_doubt)) == (set(history.succeeded), set(history.in_doubt))
        view = merge_reports(tmp_path, latest_run="r2")
        if damage == "results replaced":  # rebuilt from the files: device 1's first record names run x1 now
            assert view.runs == 3 and view.counts == caught_up.counts
        else:
            assert view == caught_up and _folder_views(tmp_path) == views, damage


def test_a_resume_reads_the_index_not_the_whole_history(tmp_path: Path, monkeypatch: Any) -> None:
    """The index answers for everything up to its marks: results.jsonl is read from the mark on."""
    from bulk_assign.store import history as module

    _two_runs(tmp_path)
    merge_reports(tmp_path)
    size = (tmp_path / "results.jsonl").stat().st_size
    starts: list[int] = []
    real = module._lines_at
    monkeypatch.setattr(module, "_lines_at", lambda path, start: starts.append(start) or real(path, start))
    history = load_history(tmp_path)
    assert starts == [size]
    assert {i for i in range(10) if dev(i) in history.succeeded} == {2}
    assert {i for i in range(10) if dev(i) in history.in_doubt} == {1, 5}


async def test_a_planned_record_from_the_templates_is_what_outcome_writes(tmp_path: Path) -> None:
    """A dry run writes planned records from per-second templates; the bytes must be those of outcome()."""
    from bulk_assign.models import utc_now

    fast, slow = tmp_path / "fast", tmp_path / "slow"
    writer = ReportWriter(fast)
    writer.planned([InputRow(2, dev(1)), InputRow(None, dev(2))], 'run "=1"')  # type: ignore[arg-type]
    writer.planned([InputRow(40, dev(3))], 'run "=1"')
    await writer.close(SUMMARY)
    records = read_jsonl(fast / "results.jsonl")
    reference = ReportWriter(slow)
    for record in records:
        assert record["started_at"] == record["finished_at"] and record["started_at"][:19] == utc_now()[:19]
        reference.outcome(DeviceResult(record["device_id"], Status.PLANNED, started_at=record["started_at"],
                                       finished_at=record["finished_at"], duration_ms=0,
                                       source_line=record["source_line"], run_id='run "=1"'))
    await reference.close(SUMMARY)
    for name in ("results.jsonl", "results.csv", "index.txt"):
        assert (fast / name).read_bytes() == (slow / name).read_bytes(), name


async def test_a_first_runs_index_matches_one_rebuilt_from_its_files(tmp_path: Path) -> None:
    """The index a first run writes as it goes (pointers resolved at the end) is the one a rebuild makes."""
    from bulk_assign.store.index import INDEX_NAME

    writer = ReportWriter(tmp_path)
    for record in (DeviceResult(dev(1), Status.SUCCEEDED, run_id="r", source_line=2),
                   DeviceResult(dev(1), Status.SKIPPED, SkipReason.DUPLICATE, run_id="r", source_line=3),
                   DeviceResult(dev(2), Status.SKIPPED, SkipReason.DUPLICATE, run_id="r", source_line=4),
                   DeviceResult("junk", Status.INVALID, error_code="InvalidGuid", run_id="r", source_line=5),
                   DeviceResult(dev(3), Status.FAILED, error_code="Forbidden", run_id="r", source_line=6),
                   DeviceResult(dev(2), Status.SUCCEEDED, run_id="r", source_line=7)):
        writer.outcome(record)
    await writer.close(SUMMARY)
    assert not list(tmp_path.glob(".index*"))
    from_run = merge_reports(tmp_path, latest_run="r"), _folder_views(tmp_path)
    (tmp_path / INDEX_NAME).unlink()
    assert (merge_reports(tmp_path, latest_run="r"), _folder_views(tmp_path)) == from_run
    assert from_run[0].counts == {"succeeded": 2, "failed": 1, "invalid": 1}


def test_the_index_is_read_a_block_at_a_time_whatever_its_shape(tmp_path: Path) -> None:
    """read_header finds the meta line from the end even when its list of runs is long, and read_done
    takes only the done devices and those in doubt, across block boundaries."""
    from bulk_assign.inputs.keys import Deduper
    from bulk_assign.store import index as module

    (tmp_path / "results.jsonl").write_bytes(b"")
    for count in (0, 3, 70_000):
        writer = module.IndexWriter(tmp_path)
        keys = [uuid.UUID(int=i * 7 + 1).bytes for i in range(count)]
        for i, key in enumerate(keys):
            writer.entry(key, i * 100, (module.DONE if i % 3 else 0) | module.REAL)
            if i % 1000 == 0:
                writer.invalid(i * 100 + 50)
        for key in keys[::5000]:
            writer.doubt(key)
        runs = [f"run-{i:06d}" for i in range(30_000 if count else 1)]  # a meta line of a few hundred KB
        writer.commit(module.IndexHeader(runs=runs, latest_run=runs[-1]))
        header = module.read_header(tmp_path, tmp_path / "results.jsonl", tmp_path / "journal.log")
        assert header is not None and header.runs == runs, count
        done, doubt = Deduper(), Deduper()
        module.read_done(tmp_path, done, doubt)
        assert sorted(done) == sorted(key for i, key in enumerate(keys) if i % 3), count
        assert sorted(doubt) == sorted(keys[::5000]), count
