"""What report.html shows, read from the folder's files: pure reading and arithmetic, no HTML.

Why from the files and not from the live run: ``bulk-assign report DIR`` must rebuild the page at any
time, also for a folder whose run was killed (no summary.json), and a page built at the end of a run
must show the same. The reads are bounded for a million-row folder: summary.json and timeline.jsonl are
aggregates; failures.csv is streamed (counted by error, the first ``FAILURE_CAP`` rows kept); results.jsonl
is only scanned when there are failures, for the serial, attempts and run of the kept rows.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..config import Rate
from ..models import Status
from ..safefs import open_read
from .history import RESULTS_NAME
from .reports import EXIT_MEANINGS
from .timeline import read_timeline

__all__ = ["FAILURE_CAP", "ErrorClass", "FailureView", "ReportData", "RunSection", "load_report_data", "next_step",
           "pace_text", "read_failures"]

FAILURE_CAP = 1000
EXAMPLES = 3
_STATUSES = tuple(s.value for s in Status)
_FAILED = b'"status":"failed"'

# One line per error class: what to do about it. Keys are error codes, then HTTP statuses.
_NEXT_STEPS: dict[str | int, str] = {
    "ThrottleWaitExceeded": "Graph kept throttling past the wait limit: resume later (--resume), or lower --rate.",
    "RetriesExhausted": "every attempt failed transiently: run again with --resume (a later try usually lands).",
    "Redirect": "Graph answered with a redirect: check --graph-url (a proxy or the wrong cloud).",
    "unknown_serial": "the serial is not in the tenant's Autopilot listing: import the hardware hash first.",
    "ambiguous_serial": "several Autopilot devices share this serial: use the device id instead.",
    "unknown_device": "the tenant does not know this device id: check the input or import the device.",
    "ConnectionError": "the connection failed: check the network or proxy, then --resume.",
    "Timeout": "Graph did not answer in time: --resume reads the device back before resending.",
    404: "the tenant does not know the device, or it has no deployment profile: check the id, import it, "
         "or give it a profile.",
    403: "the permission is missing: grant DeviceManagementServiceConfig.ReadWrite.All and sign in again.",
    401: "the token was refused: sign in again (bulk-assign login), then --resume.",
    400: "Graph rejected the request: check the target and filter ids.",
    409: "a conflicting assignment exists: check the device in Intune.",
    429: "throttled: resume later, or lower --rate.",
}


def next_step(error_code: str | None, http_status: int | None) -> str:
    """The one-line "next step" for an error class (code first, then HTTP status); a default otherwise."""
    if error_code and error_code in _NEXT_STEPS:
        return _NEXT_STEPS[error_code]
    if http_status is not None and http_status in _NEXT_STEPS:
        return _NEXT_STEPS[http_status]
    if http_status is not None and http_status >= 500:
        return "Graph failed on its side: --resume later; give the request-ids to Microsoft support if it lasts."
    return "see the message; give the request-ids to Microsoft support if it is not clear."


def pace_text(elapsed_seconds: float, written: int, rate: Rate | None) -> str:
    """Elapsed against the theoretical minimum at ``rate``: "104 min, 1.02× the fastest Intune allows".

    The minimum is the devices written (sent a write that was answered) divided by the rate's per-second
    budget; with nothing written or no rate there is no minimum to compare with.
    """
    shown = f"{elapsed_seconds / 60:.0f} min" if elapsed_seconds >= 120 else f"{elapsed_seconds:.1f} s"
    if rate is None or written <= 0 or rate.per_second <= 0:
        return f"{shown} (nothing written to compare with the fastest Intune allows)"
    minimum = written / rate.per_second
    return f"{shown}, {elapsed_seconds / minimum:.2f}× the fastest Intune allows (minimum {_duration(minimum)} " \
           f"for {written:,} writes at {rate})"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.1f} s"


@dataclass
class ErrorClass:
    """All failures of one (error_code, http_status), with a few examples for Microsoft support."""

    error_code: str
    http_status: int | None
    count: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (device_id, request_id)

    @property
    def label(self) -> str:
        return f"{self.error_code} ({self.http_status})" if self.http_status is not None else self.error_code

    @property
    def next_step(self) -> str:
        return next_step(self.error_code, self.http_status)


@dataclass
class FailureView:
    """failures.csv as the page shows it: every row counted by error class, the first ``cap`` kept."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    classes: dict[tuple[str, int | None], ErrorClass] = field(default_factory=dict)

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


def read_failures(out_dir: Path, cap: int = FAILURE_CAP) -> FailureView:
    """Stream failures.csv (the folder's merged view after a resume): counts by class, the first ``cap`` rows."""
    view = FailureView()
    try:
        handle = open_read(out_dir / "failures.csv")
    except FileNotFoundError:
        return view
    with io.TextIOWrapper(handle, encoding="utf-8", newline="", errors="replace") as text:
        for row in csv.DictReader(text):
            if not row.get("device_id"):
                continue
            status = _int(row.get("http_status"))
            code = _uncell(row.get("error_code")) or "unknown"
            key = (code, status)
            klass = view.classes.get(key)
            if klass is None:
                klass = view.classes[key] = ErrorClass(code, status)
            klass.count += 1
            request_id = _uncell(row.get("request_id")) or _uncell(row.get("client_request_id"))
            if len(klass.examples) < EXAMPLES:
                klass.examples.append((row["device_id"], request_id))
            view.total += 1
            if len(view.rows) < cap:
                view.rows.append({"device_id": row["device_id"], "serial": "", "error_code": code,
                                  "http_status": status, "error_message": _uncell(row.get("error_message")),
                                  "attempts": None, "request_id": request_id, "run_id": "",
                                  "next_step": klass.next_step})
    return view


def _uncell(value: str | None) -> str:
    """A CSV cell as written by csvcells.safe_row (a leading ' guards a formula); empty for None."""
    if not value:
        return ""
    return value[1:] if value[:1] == "'" and value[1:2] in ("=", "+", "-", "@", "\t", "\r") else value


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _add_record_details(out_dir: Path, view: FailureView) -> None:
    """Serial, attempts and run of the kept failures, from their (last) failed record in results.jsonl.

    Only failed lines are parsed (a byte test first), so a folder of a million successes costs one read.
    """
    wanted = {row["device_id"]: row for row in view.rows}
    if not wanted:
        return
    try:
        handle = open_read(out_dir / RESULTS_NAME)
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if _FAILED not in line:
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            row = wanted.get(record.get("device_id")) if isinstance(record, dict) else None
            if row is not None:
                row.update(serial=record.get("serial_number") or "", attempts=record.get("attempts"),
                           run_id=record.get("run_id") or "")


@dataclass
class RunSection:
    """One run of the folder, from its timeline lines: when, what it decided, its 429s and rates."""

    run_id: str
    first: str
    last: str
    counts: dict[str, int]
    throttled: int
    rates: list[str]
    buckets: int


@dataclass
class ReportData:
    """Everything the page shows; ``summary`` is None for a folder whose run was killed."""

    out_dir: Path
    summary: dict[str, Any] | None
    timeline: list[dict[str, Any]]
    failures: FailureView
    runs: list[RunSection]
    counts: dict[str, int]
    skipped_by_reason: dict[str, int]
    pace: str | None
    exit_meaning: str | None
    files: list[str]
    status: dict[str, Any] | None = None  # status-summary.json (``status``, ``run --wait-assigned``)


def _runs(timeline: list[dict[str, Any]]) -> list[RunSection]:
    sections: dict[str, RunSection] = {}
    for line in timeline:
        run_id = str(line.get("run_id") or "?")
        section = sections.get(run_id)
        if section is None:
            section = sections[run_id] = RunSection(run_id, line["t"], line["t"], dict.fromkeys(_STATUSES, 0),
                                                    0, [], 0)
        section.last = line["t"]
        section.buckets += 1
        section.throttled += int(line.get("throttled_429") or 0)
        for status in _STATUSES:
            section.counts[status] += int(line.get(status) or 0)
        rate = line.get("rate")
        if rate and (not section.rates or section.rates[-1] != rate):
            section.rates.append(str(rate))
    return list(sections.values())


def load_report_data(out_dir: Path, cap: int = FAILURE_CAP, *, live: dict[str, Any] | None = None) -> ReportData:
    """Read the folder's files for the page; whatever is missing is shown as missing, never an error.

    ``live`` is the summary of a run still going (the minute rebuild): then the per-device records are not
    scanned again (serial and attempts come from results.jsonl only at the end), only the first ``cap``
    lines of failures.csv are read, so a rebuild costs the same at the 1,000th device and the 1,000,000th.
    """
    summary: dict[str, Any] | None = live
    if live is None:
        try:
            with open_read(out_dir / "summary.json") as handle:
                loaded = orjson.loads(handle.read())
            summary = loaded if isinstance(loaded, dict) else None
        except (FileNotFoundError, orjson.JSONDecodeError):
            summary = None
    timeline = read_timeline(out_dir)
    failures = read_failures(out_dir, cap)
    if live is None:
        _add_record_details(out_dir, failures)
    runs = _runs(timeline)
    if summary is not None:
        counts = {k: int(v) for k, v in (summary.get("counts") or {}).items()}
        skipped = {k: int(v) for k, v in (summary.get("skipped_by_reason") or {}).items()}
        own = summary.get("run_counts") or counts
        written = int(own.get("succeeded", 0)) + int(own.get("failed", 0))
        rate = _rate((summary.get("settings") or {}).get("rate") or summary.get("effective_rate"))
        pace: str | None = pace_text(float(summary.get("elapsed_seconds") or 0.0), written, rate)
        meaning: str | None = EXIT_MEANINGS.get(int(summary.get("exit_code", -1)))
    else:  # a killed run: what the timeline saw (its last bucket may be missing)
        counts = dict(Counter[str]({s: sum(r.counts[s] for r in runs) for s in _STATUSES}))
        skipped, pace, meaning = {}, None, None
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    status: dict[str, Any] | None = None
    try:
        with open_read(out_dir / "status-summary.json") as handle:
            loaded_status = orjson.loads(handle.read())
        status = loaded_status if isinstance(loaded_status, dict) else None
    except (FileNotFoundError, orjson.JSONDecodeError):
        status = None
    return ReportData(out_dir=out_dir, summary=summary, timeline=timeline, failures=failures, runs=runs,
                      counts=counts, skipped_by_reason=skipped, pace=pace, exit_meaning=meaning, files=files,
                      status=status)


def _rate(text: Any) -> Rate | None:
    try:
        return Rate.parse(str(text)) if text else None
    except ValueError:
        return None
