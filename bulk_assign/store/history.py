"""What earlier runs of an output folder decided, and the merged report over all of its runs.

Why: an output folder is the unit of an overnight job. ``--resume`` reruns the same input into the same
folder until every device is decided, so the folder's ``results.jsonl`` (appended by every run) and
``journal.log`` (intents, see ``journal.py``) are its memory:

- ``load_history`` tells the next run which devices are done (``succeeded``: skip them without a request)
  and which are *in doubt* (an intent was recorded but no success: a run may have died after sending the
  POST, so the device must be verified by reading back before anything is posted again).
- ``merge_reports`` rewrites ``results.csv``, ``failures.csv`` and ``invalid.csv`` as one view over all
  runs, one row per device, and returns the counts for ``summary.json``.

Both stream ``results.jsonl`` and hold only per-device integers, never records.

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
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..guid import normalize_guid
from ..inputs.readers import Deduper
from ..models import FAILURE_COLUMNS, INVALID_COLUMNS, RESULT_COLUMNS, SkipReason, Status
from ..safefs import atomic_file
from .csvcells import safe_row
from .journal import iter_intents, iter_lines

__all__ = ["RESULTS_NAME", "History", "MergedView", "iter_results", "load_history", "merge_reports", "names_a_device"]

RESULTS_NAME = "results.jsonl"
_RECORD_START = b'{"device_id":'
_DONE_REASONS = frozenset({SkipReason.ALREADY_ASSIGNED.value, SkipReason.ALREADY_SUCCEEDED.value})
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


def _key(device_id: Any) -> int | None:
    """A device id as the 128-bit int it is (half the memory of the string); None if it is not a GUID."""
    guid = normalize_guid(device_id) if isinstance(device_id, str) else None
    return None if guid is None else int(guid.replace("-", ""), 16)


_NAMED_DEVICE = re.compile(rb'"device_id":\s*"([^"\\]{32,40})"')


def _named_devices(damaged: bytes) -> Iterator[str]:
    """The devices a damaged piece of results.jsonl names (a whole GUID after ``"device_id":``)."""
    for match in _NAMED_DEVICE.finditer(damaged):
        guid = normalize_guid(match.group(1).decode("ascii", "replace"))
        if guid is not None:
            yield guid


def names_a_device(fragment: bytes) -> bool:
    """True if a torn fragment still names a device: it must be kept, not cut (see the module docstring)."""
    return next(_named_devices(fragment), None) is not None


def load_history(out_dir: Path) -> History:
    """Read results.jsonl and journal.log of ``out_dir`` (streaming) into what a resumed run needs.

    A device whose last outcome was ``failed`` but has an intent is in doubt too: a failure after
    possibly-committed attempts (timeouts, 5xx, then ``RetriesExhausted``) may have landed.
    Memory: two ``Deduper`` sets, about 80 bytes per device in them.
    """
    succeeded = Deduper()
    runs: set[str] = set()
    torn: set[str] = set()
    for line in iter_lines(out_dir / RESULTS_NAME):
        last = _last_record(line)
        record = _parse(last)
        if record is None or len(last) < len(line):  # a torn fragment, alone or with a record glued on
            torn.update(_named_devices(line if record is None else line[: len(line) - len(last)]))
        if record is None:
            continue
        if isinstance(record.get("run_id"), str):
            runs.add(record["run_id"])
        status, reason = record["status"], record.get("skip_reason")
        if status == Status.SUCCEEDED.value or (status == Status.SKIPPED.value and reason in _DONE_REASONS):
            device_id = record.get("device_id")
            if isinstance(device_id, str) and _key(device_id) is not None:
                succeeded.add(device_id)
    in_doubt = Deduper()
    for intent in iter_intents(out_dir):
        if isinstance(intent.get("run_id"), str):
            runs.add(intent["run_id"])
        device_id = intent["intent"]
        if _key(device_id) is not None and device_id not in succeeded:
            in_doubt.add(device_id)
    for device_id in torn:  # its record was being written, so its POST was sent: the journal may be damaged
        if device_id not in succeeded:
            in_doubt.add(device_id)
    return History(succeeded=succeeded, in_doubt=in_doubt, runs=len(runs))


def merge_reports(out_dir: Path) -> MergedView:
    """Rewrite results.csv, failures.csv and invalid.csv of ``out_dir`` as the merged view of all runs.

    One row per device: its last record wins, except that a record which only points elsewhere
    (``skipped``/``duplicate``, ``skipped``/``already_succeeded``) never replaces a real outcome; it is
    shown only for a device that has nothing else. Invalid rows have no device id; they are keyed by
    run, source line and position on the line (the n-th invalid item of that line: a one-line JSON array
    has all its items on line 1, and each run reads the input in the same order) and kept from the
    latest run only (each run reads the input again). Rows keep
    the order of results.jsonl. Each file is written to a temporary file, fsynced and renamed over the
    old one, so a reader or a crash sees the old view or the new one, never half of one.

    Call it only after the report writer has closed its CSV files (a file still open for append would
    keep writing into the replaced copy; Windows refuses to replace an open file).

    Memory (two sequential passes, no record kept): a dict from the device's GUID int to the ordinal of
    its chosen record, about 120-150 bytes per distinct device (int key 48, small int value 32, dict
    slot ~40, more while the dict resizes): measured 120 MB of RSS and 18 s for 1M devices (470 MB of
    results.jsonl). Plus one bit per record of results.jsonl and a dict for the latest run's invalid
    rows. Ordinals instead of byte offsets keep the values small ints; the second pass reads the file
    sequentially again instead of seeking. ``test_history`` checks the per-device cost.
    """
    path = out_dir / RESULTS_NAME
    chosen: dict[int, int] = {}  # GUID int -> ordinal * 2 + (1 if the record is a real outcome)
    invalid: dict[tuple[Any, int], int] = {}  # (source_line, n-th on it) -> ordinal, rows of ``invalid_run``
    per_line: Counter[Any] = Counter()
    invalid_run: str | None = None
    latest_run: str | None = None
    runs: set[str] = set()
    unreadable = 0
    ordinals = 0
    for ordinal, raw in enumerate(_candidates(path)):
        ordinals = ordinal + 1
        record = _parse(raw)
        if record is None:
            unreadable += 1 if raw.strip() else 0
            continue
        run_id = record.get("run_id")
        if isinstance(run_id, str):
            runs.add(run_id)
            latest_run = run_id
        if record["status"] == Status.INVALID.value:
            if run_id != invalid_run:
                invalid_run, invalid, per_line = run_id, {}, Counter()
            line = record.get("source_line")
            per_line[line] += 1  # the n-th invalid item of this line: a one-line JSON array holds many
            invalid[(line, per_line[line])] = ordinal
            continue
        key = _key(record.get("device_id"))
        if key is None:
            unreadable += 1
            continue
        real = not (record["status"] == Status.SKIPPED.value and record.get("skip_reason") in _POINTER_REASONS)
        previous = chosen.get(key)
        if real or previous is None or not previous & 1:
            chosen[key] = ordinal * 2 + real
    wanted = bytearray((ordinals + 7) // 8)  # one bit per record: is it in the merged view?
    devices = len(chosen)
    for value in chosen.values():
        ordinal = value >> 1
        wanted[ordinal >> 3] |= 1 << (ordinal & 7)
    del chosen
    if invalid_run != latest_run:
        invalid = {}
    for ordinal in invalid.values():
        wanted[ordinal >> 3] |= 1 << (ordinal & 7)
    invalid_rows = len(invalid)
    del invalid

    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with _AtomicCsv(out_dir / "results.csv", RESULT_COLUMNS) as results, \
            _AtomicCsv(out_dir / "failures.csv", FAILURE_COLUMNS) as failures, \
            _AtomicCsv(out_dir / "invalid.csv", INVALID_COLUMNS) as invalids:
        for ordinal, raw in enumerate(_candidates(path)):
            if not wanted[ordinal >> 3] & (1 << (ordinal & 7)):
                continue
            record = _parse(raw)
            assert record is not None  # pass 1 parsed the same bytes
            status = record["status"]
            counts[status] += 1
            if record.get("skip_reason"):
                reasons[str(record["skip_reason"])] += 1
            results.row(record.get(c) for c in RESULT_COLUMNS)
            if status == Status.FAILED.value:
                failures.row(record.get(c) for c in FAILURE_COLUMNS)
            elif status == Status.INVALID.value:
                invalids.row((record.get("source_line"), record.get("device_id"), record.get("error_code"),
                              record.get("error_message")))
    return MergedView(counts=dict(counts), skipped_by_reason=dict(reasons), total=devices + invalid_rows,
                      runs=len(runs), latest_run_id=latest_run, unreadable_lines=unreadable)


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
