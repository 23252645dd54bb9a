"""What earlier runs of an output folder decided, and the merged report over all of its runs.

Why: an output folder is the unit of an overnight job. ``--resume`` reruns the same input into the same
folder until every device is decided, so the folder's ``results.jsonl`` (appended by every run) and
``journal.log`` (intents, see ``journal.py``) are its memory:

- ``load_history`` tells the next run which devices are done (``succeeded``: skip them without a request)
  and which are *in doubt* (an intent was recorded but no success: a run may have died after sending the
  POST, so the device must be verified by reading back before anything is posted again).
- ``merge_reports`` rewrites ``results.csv``, ``failures.csv`` and ``invalid.csv`` as one view over all
  runs, one row per device, and returns the counts for ``summary.json``.

Both stream ``results.jsonl`` and hold only compact per-device keys and integers (``inputs.keys``), never
records.

Torn lines: a crash can leave the last line of ``results.jsonl`` half written, and a later run appending
to it glues its first record onto the fragment. A line that does not parse is skipped, except that a
record glued after a fragment is recovered: ``{"device_id":`` starts every record (``DeviceResult``'s
first field; orjson keeps field order) and cannot occur unescaped inside a JSON string, so its last
occurrence in a line starts the last record in it. A fragment that still names a device (a GUID after
``"device_id":``) makes that device *in doubt*: its record was being written, so its POST was sent, and
if the journal's tail was damaged too the fragment is the only trace of it. The report writer keeps
such a fragment as a line of its own (``seal_torn_tail(..., keep=names_a_device)``), so that the trace
outlives the next run.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import operator
import re
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..guid import normalize_guid
from ..inputs.keys import KEY, Deduper, GuidMap, key_of
from ..models import DONE_SKIPS, FAILURE_COLUMNS, INVALID_COLUMNS, RESULT_COLUMNS, SkipReason, Status
from ..safefs import atomic_file
from .csvcells import safe_row
from .index import DONE, REAL, IndexHeader, IndexWriter, file_mark, iter_index, read_done, read_header
from .journal import JOURNAL_NAME, iter_intents, iter_lines

__all__ = ["RESULTS_NAME", "History", "MergedView", "iter_results", "load_history", "merge_reports", "names_a_device"]

RESULTS_NAME = "results.jsonl"
_RESULT_CELLS = operator.itemgetter(*RESULT_COLUMNS)
_RECORD_START = b'{"device_id":'

# Records that only point at another record of the device ("see there"); they never hide a real outcome.
_POINTER_REASONS = frozenset({SkipReason.DUPLICATE.value, SkipReason.ALREADY_SUCCEEDED.value})


@dataclass
class History:
    """What earlier runs of one folder decided (see ``load_history``)."""

    succeeded: Deduper
    """Devices that succeeded, or were skipped as ``already_assigned``/``already_succeeded``, in any run."""
    in_doubt: Deduper
    """Devices with an intent in the journal but not in ``succeeded``: verify before any POST."""
    runs: int
    """Distinct run ids seen in results.jsonl and journal.log."""


@dataclass(frozen=True)
class MergedView:
    """The folder's merged view for summary.json: one decision per device over all runs."""

    counts: dict[str, int]
    skipped_by_reason: dict[str, int]
    total: int
    """Distinct devices with a record, plus the invalid rows of the latest run."""
    runs: int = 0
    latest_run_id: str | None = None
    unreadable_lines: int = field(default=0, compare=False)


def _last_record(line: bytes) -> bytes:
    """The line, or the record glued after a torn fragment in it, cut free."""
    start = line.rfind(_RECORD_START)
    return line[start:] if start > 0 else line


def _candidates(path: Path) -> Iterator[bytes]:
    """Every line of ``path`` that may hold a record, with a record glued after a torn fragment cut free."""
    for line in iter_lines(path):
        yield _last_record(line)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(record, dict) and isinstance(record.get("status"), str):
        return record
    return None


def iter_results(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Stream the readable records of ``out_dir/results.jsonl``, all runs, in file order."""
    for raw in _candidates(out_dir / RESULTS_NAME):
        record = _parse(raw)
        if record is not None:
            yield record


def _key(device_id: Any) -> bytes | None:
    """A device id as its key (the GUID's 16 bytes, ``inputs.keys``); None if it is not a GUID."""
    return key_of(device_id) if isinstance(device_id, str) else None


_NAMED_DEVICE = re.compile(rb'"device_id":\s*"([^"\\]{32,40})"')


def _named_devices(damaged: bytes) -> Iterator[str]:
    """The devices a damaged piece of results.jsonl names (a whole GUID after ``"device_id":``)."""
    for match in _NAMED_DEVICE.finditer(damaged):
        guid = normalize_guid(match.group(1).decode("ascii", "replace"))
        if guid is not None:
            yield guid


def _named_keys(damaged: bytes) -> Iterator[bytes]:
    """The keys of the devices a damaged piece of results.jsonl names."""
    for guid in _named_devices(damaged):
        if (key := key_of(guid)) is not None:
            yield key


def names_a_device(fragment: bytes) -> bool:
    """True if a torn fragment still names a device: it must be kept, not cut (see the module docstring)."""
    return next(_named_devices(fragment), None) is not None


def _lines_at(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of every line of ``path`` from byte ``start`` on."""
    offset = start
    for line in iter_lines(path, start):
        yield offset, line
        offset += len(line)


def _is_done(record: dict[str, Any]) -> bool:
    status = record["status"]
    return status == Status.SUCCEEDED.value or (status == Status.SKIPPED.value
                                                and record.get("skip_reason") in DONE_SKIPS)


def load_history(out_dir: Path) -> History:
    """What a resumed run needs: the folder index (``index.py``), caught up with what results.jsonl and
    journal.log gained since it was written.

    With no usable index (none, damaged, or not of these files) it is rebuilt first (``merge_reports``
    without the views: one streaming pass), then read like any other. Why rebuild before reading rather
    than read the files whole: the rebuild's per-device choices are freed before the done set is built, so
    the two never share the peak, and the run's closing merge then reads only what this run appended.
    Should the rebuilt index still not be usable, the files are read whole (from mark 0).

    A device whose last outcome was ``failed`` but has an intent is in doubt too: a failure after
    possibly-committed attempts (timeouts, 5xx, then ``RetriesExhausted``) may have landed.
    Memory: the ``Deduper`` of done devices (about 20 bytes per device) and the few in doubt.
    """
    results, journal = out_dir / RESULTS_NAME, out_dir / JOURNAL_NAME
    header = read_header(out_dir, results, journal)
    if header is None and (file_mark(results)[0] > 0 or file_mark(journal)[0] > 0):
        merge_reports(out_dir, views=False)
        header = read_header(out_dir, results, journal)
    succeeded = Deduper()
    candidates = Deduper()
    runs: set[str] = set()
    if header is not None:
        read_done(out_dir, succeeded, candidates)
        runs.update(header.runs, header.intent_runs)
    for _offset, line in _lines_at(results, header.results if header else 0):
        last = _last_record(line)
        record = _parse(last)
        if record is None or len(last) < len(line):  # a torn fragment, alone or with a record glued on
            fragment = line if record is None else line[: len(line) - len(last)]
            for key in _named_keys(fragment):
                candidates.add_key(key)
        if record is None:
            continue
        if isinstance(record.get("run_id"), str):
            runs.add(record["run_id"])
        if _is_done(record) and (done := _key(record.get("device_id"))) is not None:
            succeeded.add_key(done)
    for intent in iter_intents(out_dir, header.journal if header else 0):
        if isinstance(intent.get("run_id"), str):
            runs.add(intent["run_id"])
        if (sent := _key(intent["intent"])) is not None:
            candidates.add_key(sent)
    in_doubt = Deduper()
    for key in candidates:  # its record was being written, so its POST was sent: the journal may be damaged
        if not succeeded.has_key(key):
            in_doubt.add_key(key)
    return History(succeeded=succeeded, in_doubt=in_doubt, runs=len(runs))


class _Tail:
    """What results.jsonl holds after the index's mark: the newer choice per device, invalid rows, runs.

    Compact, because without an index the tail is the whole file (a rebuild): the choices are a ``GuidMap``
    (about 30 bytes per device), and the order in which they were made (file order, so offset order) two
    flat arrays (24 bytes per choice), which ``later`` walks instead of sorting the devices by offset.
    """

    def __init__(self, path: Path, start: int) -> None:
        self.chosen = GuidMap()  # key -> offset << 2 | REAL | DONE (DONE: in any record)
        self._order = array("Q")  # the offset of every choice made, ascending
        self._order_keys = bytearray()  # and its device's key, KEY bytes each
        self.invalid = array("Q")  # offsets of the invalid rows of ``invalid_run``
        self.invalid_run: str | None = None
        self.latest_run: str | None = None
        self.runs: list[str] = []
        self.torn = Deduper()
        self.unreadable = 0
        for line_at, line in _lines_at(path, start):
            last = _last_record(line)
            record = _parse(last)
            if record is None or len(last) < len(line):
                for key in _named_keys(line if record is None else line[: len(line) - len(last)]):
                    self.torn.add_key(key)
            if record is None:
                self.unreadable += 1 if last.strip() else 0
                continue
            self._add(record, line_at + len(line) - len(last))

    def _add(self, record: dict[str, Any], offset: int) -> None:
        run_id = record.get("run_id")
        if isinstance(run_id, str):
            if run_id not in self.runs[-1:]:
                self.runs.append(run_id)
            self.latest_run = run_id
        if record["status"] == Status.INVALID.value:
            if run_id != self.invalid_run:
                self.invalid_run, self.invalid = run_id, array("Q")
            self.invalid.append(offset)
            return
        key = _key(record.get("device_id"))
        if key is None:
            self.unreadable += 1
            return
        real = not (record["status"] == Status.SKIPPED.value and record.get("skip_reason") in _POINTER_REASONS)
        done = DONE if _is_done(record) else 0
        previous = self.chosen.get(key)
        if previous is None or real or not previous & REAL:
            self.chosen[key] = offset << 2 | (REAL if real else 0) | done | (previous or 0) & DONE
            self._order.append(offset)
            self._order_keys += key
        elif done and not previous & DONE:
            self.chosen[key] = previous | done

    def later(self) -> Iterator[tuple[int, bytes | None, int]]:
        """``(offset, key, flags)`` of the choices still standing, in offset order (one made again later, or
        dropped by the merge, is skipped: its device's choice no longer names that offset)."""
        keys, chosen = self._order_keys, self.chosen
        for at, offset in enumerate(self._order):
            key = bytes(keys[at * KEY:at * KEY + KEY])
            value = chosen.get(key)
            if value is not None and value >> 2 == offset:
                yield offset, key, value & 3


def merge_reports(out_dir: Path, *, latest_run: str | None = None, views: bool = True) -> MergedView:
    """Rewrite the folder index and (``views``) results.csv, failures.csv and invalid.csv of ``out_dir`` as
    the merged view of all runs.

    One row per device: its last record wins, except that a record which only points elsewhere
    (``skipped``/``duplicate``, ``skipped``/``already_succeeded``) never replaces a real outcome; it is
    shown only for a device that has nothing else. Invalid rows have no device id; they are kept from the
    latest run only (each run reads the input again): ``latest_run`` when the caller (the run closing) read
    any rows, else the run of the last record. Rows keep the order of results.jsonl. Each file is written
    to a temporary file, fsynced and renamed over the old one, so a reader or a crash sees the old view or
    the new one, never half of one; the index is renamed last.

    Incremental: the choices the index holds are streamed from it, and only what results.jsonl and
    journal.log gained since its marks is read into memory (about 55 bytes per device decided since, see
    ``_Tail``). With no usable index that is everything (the rebuild). The views are one sequential
    pass over results.jsonl, which holds decisions only (a resume writes none for done devices).

    Call it only after the report writer has closed its CSV files (a file still open for append would
    keep writing into the replaced copy; Windows refuses to replace an open file).
    """
    results, journal = out_dir / RESULTS_NAME, out_dir / JOURNAL_NAME
    header = read_header(out_dir, results, journal)
    old = header or IndexHeader()
    tail = _Tail(results, old.results)
    latest = latest_run or tail.latest_run or old.latest_run
    candidates = tail.torn
    intent_runs = list(old.intent_runs)
    for intent in iter_intents(out_dir, old.journal):
        run_id = intent.get("run_id")
        if isinstance(run_id, str) and run_id not in intent_runs[-1:]:
            intent_runs.append(run_id)
        if (key := _key(intent["intent"])) is not None:
            candidates.add_key(key)
    new_results, new_journal = file_mark(results), file_mark(journal)
    chosen = tail.chosen
    done_keys = Deduper()  # devices in doubt until now that a record since made done
    keep_old_invalid = header is not None and latest == old.latest_run and tail.invalid_run in (None, latest)

    def stream() -> Iterator[tuple[int, bytes | None, int]]:
        """``(offset, key, flags)`` of the merged view in offset order (key None: an invalid row)."""
        if header is not None:
            for kind, key, value in iter_index(out_dir):
                if kind == "q":
                    candidates.add_key(key)
                elif kind == "i":
                    if keep_old_invalid:
                        yield value, None, 0
                elif (newer := chosen.get(key)) is None:
                    yield value >> 2, key, value & 3
                elif newer & REAL or not value & REAL:
                    if value & DONE and not newer & DONE:
                        chosen[key] = newer | DONE
                else:  # the newer record only points at the device: the indexed real outcome stays
                    chosen.pop(key)
                    if newer & DONE:
                        done_keys.add_key(key)
                    yield value >> 2, key, value & 3 | newer & DONE
        invalid = ((offset, None, 0) for offset in (tail.invalid if tail.invalid_run == latest else ()))
        yield from heapq.merge(tail.later(), invalid)

    index = IndexWriter(out_dir)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    devices = invalid_rows = 0
    try:
        with contextlib.ExitStack() as stack:
            writers = None
            if views:
                writers = (stack.enter_context(_AtomicCsv(out_dir / "results.csv", RESULT_COLUMNS)),
                           stack.enter_context(_AtomicCsv(out_dir / "failures.csv", FAILURE_COLUMNS)),
                           stack.enter_context(_AtomicCsv(out_dir / "invalid.csv", INVALID_COLUMNS)))
            records = _RecordsAt(results)
            for offset, key, flags in stream():
                if key is None:
                    invalid_rows += 1
                    index.invalid(offset)
                else:
                    devices += 1
                    index.entry(key, offset, flags)
                    if flags & DONE and candidates.has_key(key):
                        done_keys.add_key(key)
                if writers is not None:
                    _view_row(records.at(offset), writers, counts, reasons)
        for key in candidates:  # q lines were written for devices not done: only a newer record makes them done
            if not done_keys.has_key(key) and not (chosen.get(key) or 0) & DONE:
                index.doubt(key)
        runs = [*old.runs, *(r for r in tail.runs if r not in old.runs[-1:])]
        index.commit(IndexHeader(results=new_results[0], results_crc=new_results[1], journal=new_journal[0],
                                 journal_crc=new_journal[1], runs=runs, intent_runs=intent_runs, latest_run=latest))
    except BaseException:
        index.abort()
        raise
    return MergedView(counts=dict(counts), skipped_by_reason=dict(reasons), total=devices + invalid_rows,
                      runs=len(set(runs)), latest_run_id=latest, unreadable_lines=tail.unreadable)


class _RecordsAt:
    """results.jsonl read forward once: the record starting at each wanted offset, in increasing order."""

    def __init__(self, path: Path) -> None:
        self._lines = _lines_at(path, 0)
        self._at, self._line = next(self._lines, (-1, b""))

    def at(self, offset: int) -> dict[str, Any]:
        while self._at >= 0 and self._at + len(self._line) <= offset:
            self._at, self._line = next(self._lines, (-1, b""))
        record = _parse(self._line[offset - self._at:]) if 0 <= self._at <= offset else None
        if record is None:
            raise OSError(f"results.jsonl holds no record at byte {offset}: the folder index is stale")
        return record


def _view_row(record: dict[str, Any], writers: tuple[_AtomicCsv, _AtomicCsv, _AtomicCsv],
              counts: Counter[str], reasons: Counter[str]) -> None:
    results, failures, invalids = writers
    status = record["status"]
    counts[status] += 1
    if record.get("skip_reason"):
        reasons[str(record["skip_reason"])] += 1
    try:  # every record the engine writes has every column
        results.row(_RESULT_CELLS(record))
    except KeyError:
        results.row(record.get(c) for c in RESULT_COLUMNS)
    if status == Status.FAILED.value:
        failures.row(record.get(c) for c in FAILURE_COLUMNS)
    elif status == Status.INVALID.value:
        invalids.row((record.get("source_line"), record.get("device_id"), record.get("error_code"),
                      record.get("error_message")))


class _AtomicCsv:
    """A CSV file written beside its destination and renamed over it only when complete (``atomic_file``)."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self._stack = contextlib.ExitStack()
        self._writer: Any = None

    def __enter__(self) -> _AtomicCsv:
        handle = self._stack.enter_context(atomic_file(self.path, text=True))
        self._writer = csv.writer(handle)
        self._writer.writerow(self.columns)
        return self

    def row(self, cells: Any) -> None:
        self._writer.writerow(safe_row(cells))

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)
