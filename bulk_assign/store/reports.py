"""The results collector's output: per-device report files and the run summary.

The sink is the only writer of result files. Records are appended as they arrive and flushed whenever
the collector catches up, so a crash loses nothing already decided and nothing is held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import operator
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from pydantic import BaseModel

from ..errors import InternalError
from ..inputs.keys import key_of
from ..models import (
    DONE_SKIPS,
    FAILURE_COLUMNS,
    INVALID_COLUMNS,
    RESULT_COLUMNS,
    DeviceResult,
    InputRow,
    SkipReason,
    Status,
    utc_now,
)
from ..redact import RedactingFilter
from ..safefs import ensure_dir, open_append, write_atomic
from .csvcells import safe_row
from .history import RESULTS_NAME, MergedView, merge_reports, names_a_device
from .index import RunEntries
from .journal import JOURNAL_NAME, IntentJournal, seal_torn_tail

__all__ = ["NullSink", "ReportWriter", "ResultSink", "RunStats", "Summary", "merged_summary", "read_jsonl",
           "write_atomic"]


@dataclass
class RunStats:
    """Live counters, updated by workers and the collector; the progress display reads them."""

    total_rows: int | None = None  # known up front for files (scan pass), unknown for iterators
    statuses: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    requests_sent: int = 0
    throttled: int = 0
    retries: int = 0
    verifications: int = 0
    started: float = field(default_factory=time.monotonic)
    paused_until: float = 0.0  # wall clock (epoch) until which a 429 paused every worker; shown, never waited on
    pause_retry_after: float | None = None  # what the server asked for, for the display

    @property
    def done(self) -> int:
        return sum(self.statuses.values())

    def count(self, result: DeviceResult) -> None:
        self.statuses[result.status.value] += 1
        if result.skip_reason is not None:
            self.skip_reasons[result.skip_reason.value] += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started


EXIT_MEANINGS = {
    0: "every device succeeded or was skipped as done",
    1: "some rows failed or were invalid",
    2: "usage or input error: nothing sent",
    3: "authentication failed: sign in again, then --resume",
    4: "stopped early with work left: --resume continues",
    5: "an I/O failure or internal error: see the traceback above; --resume is safe",
    130: "interrupted and drained: --resume continues",
}


def final_line(summary: Summary) -> str:
    """The line every run.log ends with: counts, remaining, and the exit code with its meaning."""
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v) or "nothing decided"
    meaning = EXIT_MEANINGS.get(summary.exit_code, "")
    return (f"finished run {summary.run_id}: {counts}; remaining {summary.remaining}; "
            f"{summary.elapsed_seconds:.1f} s; exit {summary.exit_code}{f' ({meaning})' if meaning else ''}")


class Summary(BaseModel):
    """summary.json: what happened to the run, never secrets."""

    run_id: str
    started_at: str
    finished_at: str
    elapsed_seconds: float
    """Wall time of the whole run: loading the folder's history, sending, and writing the reports."""
    total_rows: int
    counts: dict[str, int]
    skipped_by_reason: dict[str, int]
    remaining: int
    requests_sent: int
    throttled_429: int
    retries: int
    verifications: int
    devices_per_minute: float
    effective_rate: str
    stopped_reason: str | None = None
    stop_detail: str | None = None
    exit_code: int
    out_dir: str | None = None
    settings: dict[str, Any]
    run_counts: dict[str, int] | None = None
    """This run's own counts when ``counts`` is the merged view over several runs of the folder."""
    runs: int = 1
    sending_seconds: float | None = None
    """The part of ``elapsed_seconds`` spent reading the input and sending (``devices_per_minute`` uses it)."""
    input: str | None = None
    """What the reader detected in the input file (format, encoding, delimiter, header, column, rows)."""
    inventory: dict[str, Any] | None = None
    """Where serials were resolved from: ``source`` (listing, folder, file), devices, and the listing's cost."""
    preflight: dict[str, Any] | None = None
    """The seed call's canary: which deployment profile(s) the first 20 devices had before the writes."""
    profile_assignment: dict[str, Any] | None = None
    """``--profile P --group G``: whether this run assigned the profile to the group, or found it assigned."""
    membership: dict[str, Any] | None = None
    """``--add-to-group``: the group's device members before the run, and what reading them cost."""

    @property
    def succeeded(self) -> int:
        return self.counts.get("succeeded", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


class ResultSink(Protocol):
    """Where decided records go. The journal of the overnight work is a sink that also records intent."""

    def intent_nowait(self, device_id: str, previous: str | None = None,
                      new: str | None = None) -> asyncio.Future[None] | None:
        """Start recording an intent (with the device's ``previous`` state and the ``new`` one, for undo); the
        future (shared, never cancel it) resolves once it is durable. None when this sink keeps no journal."""
        ...

    def outcome(self, result: DeviceResult) -> None:
        """Append one decided record."""
        ...

    def flush(self) -> None:
        """Make appended records visible on disk."""
        ...

    async def close(self, summary: Summary) -> Summary:
        """Release files, write the summary; returns the summary as written (possibly merged)."""
        ...


class NullSink:
    """For API callers who gave no output folder: records go only to the caller."""

    def intent_nowait(self, device_id: str, previous: str | None = None,
                      new: str | None = None) -> asyncio.Future[None] | None:
        return None

    def outcome(self, result: DeviceResult) -> None:
        return None

    def flush(self) -> None:
        return None

    async def close(self, summary: Summary) -> Summary:
        return summary


class _RunLogHandler(logging.StreamHandler[IO[str]]):
    """run.log's handler. A line that cannot be written (a disk that filled up) is dropped: logging's own
    ``handleError`` would print a traceback on the terminal, where the run's I/O error (exit 5, one line)
    already says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        return None


_RESULT_ROW = operator.attrgetter(*RESULT_COLUMNS)
_POINTERS = (SkipReason.DUPLICATE, SkipReason.ALREADY_SUCCEEDED)

_FAILURE_ROW = operator.attrgetter(*FAILURE_COLUMNS)
# results.jsonl and results.csv are written through buffers of this size, flushed by the collector (FLUSH_EVERY):
# a dry run writes them about 15 KB at a time, and with the default 8 KB each write was a system call
BUFFER = 1 << 20


class ReportWriter:
    """Writes results.jsonl, results.csv, failures.csv, invalid.csv, summary.json, run.log and the folder
    index (``index.py``) in ``out_dir``.

    The index is rewritten as the run closes: with ``merge`` (a resume) together with the merged views
    (``history.merge_reports``); for a folder's first run from what this writer wrote (``RunEntries``),
    without reading its records back.

    ``report`` is called with the folder once summary.json is written (the engine passes
    ``report_html.write_report_quietly``: report.html, which never raises); injected rather than imported,
    since the page reads what this module defines. ``in_order``: every record comes in input order with no
    device in flight (a dry run, a plan; see ``RunEntries``).
    """

    def __init__(self, out_dir: Path, *, journal: IntentJournal | None = None, merge: bool = False,
                 report: Callable[[Path], object] | None = None, in_order: bool = False) -> None:
        self.out_dir = out_dir
        self._journal = journal
        self._report = report
        self._merge = merge
        self._closed = False
        ensure_dir(out_dir)
        # a crash cut the last record: keep later ones parseable (and a fragment naming a device, in doubt)
        if seal_torn_tail(out_dir / "results.jsonl", keep=names_a_device):
            logging.getLogger("bulk_assign").warning("%s: cut a record torn by an earlier crash", out_dir)
        self._jsonl = self._open(RESULTS_NAME)
        fresh = self._jsonl.tell() == 0 and not (journal is not None and journal.path.stat().st_size) and not merge
        self._entries = RunEntries(out_dir, in_order=in_order) if fresh else None
        self._templates: tuple[Any, ...] | None = None
        self._planned_run: str | None = None
        self._pending: list[InputRow] = []  # planned records not yet written
        self._csv_file, self._csv = self._open_csv("results.csv", RESULT_COLUMNS)
        self._fail_file, self._fail = self._open_csv("failures.csv", FAILURE_COLUMNS)
        self._inv_file, self._inv = self._open_csv("invalid.csv", INVALID_COLUMNS)
        self._log_file = open_append(out_dir / "run.log", text=True)
        self._log_handler: logging.StreamHandler[IO[str]] = _RunLogHandler(self._log_file)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._log_handler.setLevel(logging.INFO)
        self._log_handler.addFilter(RedactingFilter())
        logger = logging.getLogger("bulk_assign")
        logger.addHandler(self._log_handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def _open(self, name: str) -> IO[Any]:
        return open_append(self.out_dir / name, buffering=BUFFER)

    def _open_csv(self, name: str, columns: tuple[str, ...]) -> tuple[IO[str], Any]:
        path = self.out_dir / name
        new = not path.exists() or path.stat().st_size == 0
        handle = open_append(path, text=True, buffering=BUFFER if name == "results.csv" else -1)
        writer = csv.writer(handle)
        if new:
            writer.writerow(columns)
        return handle, writer

    def intent_nowait(self, device_id: str, previous: str | None = None,
                      new: str | None = None) -> asyncio.Future[None] | None:
        if self._journal is None:
            return None
        if self._entries is not None and (key := key_of(device_id)) is not None:
            self._entries.open_intents.add(key)
        return self._journal.intent_nowait(device_id, previous, new)

    def outcome(self, result: DeviceResult) -> None:
        # orjson writes the slotted dataclass (and its StrEnums) directly, in field order = RESULT_COLUMNS;
        # the csv module writes None as an empty cell: no dict per record
        line = orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE)
        if self._pending:
            self._write_planned()
        self._jsonl.write(line)
        if self._entries is not None:
            status = result.status
            self._entries.record(
                # no device: an unusable row, or a dry run's serial it could not resolve offline
                None if status is Status.INVALID or not result.device_id else key_of(result.device_id), len(line),
                real=result.skip_reason not in _POINTERS or status is not Status.SKIPPED,
                done=status is Status.SUCCEEDED or (status is Status.SKIPPED and result.skip_reason in DONE_SKIPS),
                run_id=result.run_id)
        self._csv.writerow(safe_row(_RESULT_ROW(result)))
        if result.status is Status.FAILED:
            self._fail.writerow(safe_row(_FAILURE_ROW(result)))
        elif result.status is Status.INVALID:
            self._inv.writerow(safe_row((result.source_line, result.device_id, result.error_code,
                                         result.error_message)))

    def planned(self, rows: list[InputRow], run_id: str) -> None:
        """A dry run's ``planned`` records of ``rows`` (normalised ids): queued until ``_write_planned``.

        Why: a dry run of a million rows is all planned records; building, serialising and CSV-quoting a
        record per row cost more than reading the input (and then twice as much as the reading alone). So
        the rows wait here, 512 or so and no longer than the collector's next flush, and are rendered
        together from templates made once per second.
        """
        if run_id != self._planned_run:
            if self._pending:
                self._write_planned()
            self._planned_run = run_id
            if self._entries is not None and run_id not in self._entries.runs[-1:]:
                self._entries.runs.append(run_id)
        pending = self._pending
        pending += rows
        if len(pending) >= 512:
            self._write_planned()

    def _write_planned(self) -> None:
        """The pending planned records, rendered: always before any other record (the index counts offsets).

        One string per file and one write each; the lines are byte for byte what ``outcome`` writes for
        the same record, stamped with the second they are written in (the batch's records were decided at
        most a flush interval before).
        """
        pending, run_id = self._pending, self._planned_run
        assert run_id is not None
        now = int(time.time())
        if self._templates is None or self._templates[0] != (now, run_id):
            self._templates = ((now, run_id), *_planned_templates(run_id, utc_now()))
        _, head, mid, tail, csv_mid, csv_tail, wide = self._templates
        lines = [f"{head}{row.device_id}{mid}{'null' if row.source_line is None else row.source_line}{tail}"
                 for row in pending]
        self._jsonl.write("".join(lines).encode())
        self._csv_file.write("".join([f"{row.device_id}{csv_mid}{'' if row.source_line is None else row.source_line}"
                                      f"{csv_tail}" for row in pending]))
        if self._entries is not None:  # ids and lines are ASCII; the run id may not be (``wide`` more bytes)
            sizes = map(len, lines) if not wide else (len(line) + wide for line in lines)
            self._entries.planned(pending, list(accumulate(sizes, initial=self._entries.offset)))
        pending.clear()

    def flush(self) -> None:
        """Make appended records visible; a no-op once closed (a timer may fire after ``close``)."""
        if self._closed:
            return
        if self._pending:
            self._write_planned()
        for handle in (self._jsonl, self._csv_file, self._fail_file, self._inv_file):
            handle.flush()

    async def close(self, summary: Summary) -> Summary:
        """Close the files, merge (``--resume``), write summary.json; returns the summary as written.

        A file that cannot be flushed or closed (disk full, quota, the file system gone) does not stop
        the rest: the other files are closed and summary.json is still written if the disk allows, with
        exit code 5; then ``InternalError`` is raised (the traceback is in run.log).
        """
        log = logging.getLogger("bulk_assign")
        closing = time.monotonic()
        self._closed = True
        failure: BaseException | None = None
        if self._pending:
            try:
                self._write_planned()
            except OSError as exc:
                failure = exc
        for handle in (self._jsonl, self._csv_file, self._fail_file, self._inv_file):
            try:
                handle.close()  # flushes first
            except OSError as exc:
                failure = failure or exc
        if self._journal is not None:
            await self._journal.close()
        try:
            if failure is None:
                summary = self._index(summary)
        except OSError as exc:
            failure = exc
        if failure is not None and self._entries is not None:
            self._entries.discard()
        if failure is not None:
            log.error("reports could not be written completely: %s", failure, exc_info=failure,
                      extra={"run_log_only": True})
            summary = summary.model_copy(update={"exit_code": InternalError.exit_code,
                                                 "stopped_reason": summary.stopped_reason or "error",
                                                 "stop_detail": summary.stop_detail or str(failure)})
        summary = summary.model_copy(update={
            "elapsed_seconds": round(summary.elapsed_seconds + time.monotonic() - closing, 3)})
        try:
            write_atomic(self.out_dir / "summary.json",
                         orjson.dumps(summary.model_dump(), option=orjson.OPT_INDENT_2))
            if self._report is not None:
                self._report(self.out_dir)  # before the final line: run.log always ends with it
        except OSError as exc:
            failure = failure or exc
            log.error("summary.json could not be written: %s", exc, exc_info=exc, extra={"run_log_only": True})
        finally:
            log.info("%s", final_line(summary), extra={"run_log_only": True})  # run.log always ends so
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            with contextlib.suppress(OSError):
                self._log_file.close()
        if failure is not None:
            raise InternalError.wrap(failure)
        return summary


    def _index(self, summary: Summary) -> Summary:
        """Rewrite the folder index (and with ``merge`` the merged views); the summary as it is then."""
        if self._merge:
            # invalid rows are the latest reading's: this run's, if it read anything
            latest = summary.run_id if any(summary.counts.values()) else None
            return merged_summary(summary, merge_reports(self.out_dir, latest_run=latest))
        if self._entries is not None:
            self._entries.write(self.out_dir, self.out_dir / RESULTS_NAME, self.out_dir / JOURNAL_NAME,
                                intent_run=self._journal.run_id if self._journal is not None else None)
        else:  # records were in the folder before this writer (not through the engine): index them all
            merge_reports(self.out_dir, views=False)
        return summary


def _planned_templates(run_id: str, now: str) -> tuple[str, str, str, str, str, int]:
    """The fixed parts of a planned record's results.jsonl and results.csv lines around its id and line, and
    how many more bytes than characters the results.jsonl parts hold (a run id that is not ASCII)."""
    record = DeviceResult(device_id="\x01", status=Status.PLANNED, started_at=now, finished_at=now, duration_ms=0,
                          source_line=7, run_id=run_id)
    jsonl = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    head, rest = jsonl.split(b"\\u0001", 1)
    mid, tail = rest.split(b'"source_line":7', 1)
    out = io.StringIO()
    csv.writer(out).writerow(safe_row(_RESULT_ROW(record)))
    _, csv_rest = out.getvalue().split("\x01", 1)
    csv_mid, csv_tail = csv_rest.split(",7,", 1)
    parts = head.decode(), (mid + b'"source_line":').decode(), tail.decode()
    return (*parts, csv_mid + ",", "," + csv_tail, len(jsonl) - len(b"\\u0001") - 1 - sum(map(len, parts)))


def merged_summary(summary: Summary, view: MergedView) -> Summary:
    """The run's summary with counts over every run of the folder (this run's own counts kept aside)."""
    decided = sum(view.counts.values())
    return summary.model_copy(update={
        "run_counts": summary.counts,
        "counts": {status: view.counts.get(status, 0) for status in {*summary.counts, *view.counts}},
        "skipped_by_reason": dict(view.skipped_by_reason),
        "total_rows": max(summary.total_rows, decided + summary.remaining),
        "runs": view.runs,
    })


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a results.jsonl (tests and tools; not used on the hot path)."""
    with open(path, "rb") as handle:
        return [orjson.loads(line) for line in handle if line.strip()]
