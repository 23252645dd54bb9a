"""Peak memory and speed of the input side for a large run: scan_input + read_input + Deduper.

The target (issue 3) is 1,000,000 input rows under 150 MB peak RSS for the whole pipeline. Each format
is measured in a fresh interpreter, so the peak RSS belongs to that run alone; the baseline is the same
interpreter right after ``import bulk_assign``, so the difference is what the rows cost.

    .venv/bin/python benchmarks/memory_bench.py [--rows 1000000]

``measure(rows)`` returns the same numbers as a dict for the unified benchmark runner.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("csv", "json")
INVALID_EVERY = 97  # a few bad and repeated rows, like real exports, so every code path runs
DUPLICATE_EVERY = 89


def _device_id(index: int) -> str:
    """Row ``index`` of a synthetic file: deterministic, with some junk and some repeats, like real exports.

    Computed, not stored, so the parent process stays small: Linux keeps a process's peak RSS across
    ``exec``, and the child's ``ru_maxrss`` must not inherit a big parent's.
    """
    if index % INVALID_EVERY == 5:
        return f"not-a-guid-{index}"
    if index % DUPLICATE_EVERY == 7:
        return _device_id(index // 2)
    return str(uuid.UUID(int=(index * 2654435761 + 12345) % (1 << 128), version=4))


def _device_ids(rows: int) -> Iterator[str]:
    return (_device_id(index) for index in range(rows))


def _write_csv(out: TextIO, ids: Iterator[str]) -> None:
    out.write("Serial Number,Device ID,Model\n")
    for index, device_id in enumerate(ids):
        out.write(f"SN{index:09d},{device_id.upper()},Surface Laptop\n")


def _write_json(out: TextIO, ids: Iterator[str]) -> None:
    """The Graph export shape, one object per line, as ``$select``-ed exports look."""
    out.write('{"@odata.context": "https://graph.microsoft.com/beta/$metadata#x", "value": [')
    for index, device_id in enumerate(ids):
        sep = ",\n" if index else "\n"
        out.write(f'{sep}{{"id": "{device_id}", "serialNumber": "SN{index:09d}", "model": "Surface"}}')
    out.write("\n]}\n")


def _generate(folder: Path, rows: int) -> dict[str, Path]:
    paths = {fmt: folder / f"devices.{fmt}" for fmt in FORMATS}
    with paths["csv"].open("w", encoding="utf-8", newline="") as out:
        _write_csv(out, _device_ids(rows))
    with paths["json"].open("w", encoding="utf-8") as out:
        _write_json(out, _device_ids(rows))
    return paths


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _child(path: str) -> None:
    """Runs in the fresh interpreter: stream the file through the input side and print JSON numbers."""
    from bulk_assign.inputs.readers import Deduper, read_input, scan_input

    baseline = _rss_mb()
    started = time.perf_counter()
    plan = scan_input(Path(path))
    scanned = time.perf_counter()
    seen = Deduper()
    valid = invalid = duplicates = 0
    for row in read_input(plan):
        if row.device_id is None:
            invalid += 1
        elif seen.add(row.device_id):
            valid += 1
        else:
            duplicates += 1
    finished = time.perf_counter()
    result = {
        "rows": plan.total_rows,
        "distinct": len(seen),
        "invalid": invalid,
        "duplicates": duplicates,
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "scan_s": round(scanned - started, 2),
        "read_s": round(finished - scanned, 2),
        "rows_per_s": round(plan.total_rows / (finished - started)),
    }
    print(json.dumps(result))


def _run_child(path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    result["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return result


def measure(rows: int) -> dict[str, Any]:
    """Peak RSS and rows/s per format for ``rows`` input rows, each in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="bulk-assign-bench-") as folder:
        paths = _generate(Path(folder), rows)
        return {"rows": rows, "target_peak_rss_mb": 150, **{fmt: _run_child(p) for fmt, p in paths.items()}}


def _table(results: dict[str, Any]) -> str:
    header = f"{'format':<7}{'rows':>11}{'file MB':>9}{'baseline RSS':>14}{'peak RSS':>10}{'rows/s':>10}"
    lines = [header, "-" * len(header)]
    for fmt in FORMATS:
        r = results[fmt]
        lines.append(
            f"{fmt:<7}{r['rows']:>11,}{r['file_mb']:>9.1f}{r['baseline_rss_mb']:>11.1f} MB"
            f"{r['peak_rss_mb']:>7.1f} MB{r['rows_per_s']:>10,}"
        )
    lines.append(f"target: peak RSS < {results['target_peak_rss_mb']} MB at 1,000,000 rows")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    results = measure(args.rows)
    print(json.dumps(results, indent=2) if args.json else _table(results))


if __name__ == "__main__":
    main()
