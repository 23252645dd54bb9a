"""CSV/formula injection: text cells that a spreadsheet would run are neutralised in every CSV report."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import pytest

from bulk_assign.inputs.readers import read_input, scan_input
from bulk_assign.models import DeviceResult, Status
from bulk_assign.store.csvcells import safe_row
from bulk_assign.store.history import merge_reports
from bulk_assign.store.reports import ReportWriter, Summary

DANGEROUS = ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_safe_row_prefixes_formula_starts_and_leaves_numbers_alone() -> None:
    assert safe_row(["=1+1", "+a", "-b", "@c", "\td", "\re", "ok", None, -5, 201, ""]) == [
        "'=1+1", "'+a", "'-b", "'@c", "'\td", "'\re", "ok", "", -5, 201, ""]


def _summary() -> Summary:
    return Summary(run_id="r", started_at="", finished_at="", elapsed_seconds=0, total_rows=0, counts={},
                   skipped_by_reason={}, remaining=0, requests_sent=0, throttled_429=0, retries=0,
                   verifications=0, devices_per_minute=0, effective_rate="", exit_code=1, settings={})


def _cells(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [cell for row in list(csv.reader(handle))[1:] for cell in row]


@pytest.mark.parametrize("merged", [False, True])
async def test_report_csvs_never_start_a_cell_with_a_formula(tmp_path: Path, merged: bool) -> None:
    """Hardening #10: the raw text of an invalid row and Graph's error text reach results/failures/invalid.csv."""
    writer = ReportWriter(tmp_path)
    failed = str(uuid.uuid4())
    for i, text in enumerate(DANGEROUS):
        writer.outcome(DeviceResult(text, Status.INVALID, error_code="InvalidGuid", error_message=text,
                                    source_line=i + 2, run_id="r"))
    writer.outcome(DeviceResult(failed, Status.FAILED, http_status=400, error_code="=BadRequest",
                                error_message="-1 is not allowed", request_id="@id", run_id="r", source_line=9,
                                duration_ms=-3))
    await writer.close(_summary())
    if merged:
        merge_reports(tmp_path)
    for name in ("results.csv", "failures.csv", "invalid.csv"):
        cells = _cells(tmp_path / name)
        assert cells, name
        bad = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and c != "-3")]
        assert bad == [], name
    assert "-3" in _cells(tmp_path / "results.csv")  # a number stays a number
    # failures.csv is still an input: its device id is read back unchanged
    plan = scan_input(tmp_path / "failures.csv")
    assert [row.device_id for row in read_input(plan) if row.device_id] == [failed]
