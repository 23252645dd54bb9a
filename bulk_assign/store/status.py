"""``status.csv``, ``status.jsonl`` and ``status-summary.json``: what Intune said about each device, per row.

Rewritten whole (atomically) after the last poll: a status report is a snapshot, not a journal.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..safefs import atomic_file, ensure_dir, open_read, write_atomic
from .csvcells import safe_row


def write_status(out_dir: Path, records: Sequence[Any], columns: Sequence[str], summary: dict[str, Any]) -> None:
    """``records`` are dataclasses (``pipeline.status.StatusRecord``); ``columns`` their CSV order."""
    ensure_dir(out_dir)
    with atomic_file(out_dir / "status.jsonl") as jsonl:
        for record in records:
            jsonl.write(orjson.dumps(dataclasses.asdict(record), option=orjson.OPT_APPEND_NEWLINE))
    with atomic_file(out_dir / "status.csv", text=True) as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for record in records:
            writer.writerow(safe_row(tuple(getattr(record, c) for c in columns)))
    write_atomic(out_dir / "status-summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def add_to_summary(out_dir: Path, key: str, value: Any) -> None:
    """Add ``key`` to the run's ``summary.json`` (``run --wait-assigned`` adds the status after the run)."""
    path = out_dir / "summary.json"
    with open_read(path) as handle:
        data = orjson.loads(handle.read())
    data[key] = value
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
