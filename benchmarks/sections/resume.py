"""(g) Resume cost as nights pile up: a scheduled job resumes the same folder night after night.

1. Completed folders of N and 10·N devices (real runs against an unthrottled emulator), then five all-done
   resumes of each: wall time start→exit, and how much the folder grows per resume.
2. The big folder's input plus new devices at its end: when the resume's first request reaches the
   emulator (its request counter, polled every 5 ms from spawn), next to the readers alone scanning and
   reading the same file in a process with the same imports.
3. A 1,000,000-row ``--dry-run`` next to the readers alone on the same file, with peak RSS; then that
   folder turned into a completed one (its ``planned`` records rewritten as ``succeeded``, index removed)
   and resumed twice: the first resume rebuilds the index from results.jsonl, the second reads it. Peak
   RSS of each, above the import baseline (a process that imports the CLI and exits), per distinct id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import memory_bench
from benchmarks.common import (
    HUGE,
    PY,
    ROOT,
    TARGET,
    ChildResult,
    EmulatorProc,
    Options,
    Section,
    cli_env,
    device_ids,
    run_child,
    table,
    verdict,
    workdir,
)

RESUMES = 5
PAIRS = 3  # resume 1 and resume 5 tried again this many times each, alternating (_first_and_last)
MB = 1e6

_READERS = """
import sys, time
import bulk_assign.cli.main  # the same imports as the CLI, so that start-up costs the same
from bulk_assign.inputs.readers import read_input, scan_input
from pathlib import Path
rows = sum(1 for _ in read_input(scan_input(Path(sys.argv[1]))))
print(rows)
"""


def _csv(path: Path, rows: int, extra: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        memory_bench._write_csv(out, memory_bench._device_ids(rows))
        for index, device in enumerate(extra):
            out.write(f"NEW{index:09d},{device},Surface Laptop\n")
    return path


def _cli(csv: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [PY, "-m", "bulk_assign", "run", str(csv), "--target", TARGET, "--graph-url", url, "--rate", HUGE,
            "--concurrency", "64", "--out", str(out), *extra]


def _folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.iterdir() if p.is_file() and not p.name.endswith(".tmp"))


def _checked(result: Any, what: str) -> Any:
    if result.returncode not in (0, 1):  # 1: the file has invalid rows on purpose
        raise RuntimeError(f"{what} exited {result.returncode}: {result.stderr[-1500:]}")
    return result


def _readers(csv: Path) -> float:
    return _checked(run_child([PY, "-c", _READERS, str(csv)], env=cli_env()), "readers").wall


def _resumes(csv: Path, out: Path, emu: EmulatorProc, keep: Path | None = None,
             count: int = RESUMES) -> list[tuple[float, int, float]]:
    """``count`` all-done resumes: (seconds start→exit, bytes the folder grew, CPU seconds). With ``keep``,
    copies of the folder as the first and the last resume found it are left there (``before-1``,
    ``before-{count}``, for ``resume_copy``).

    The disk is synced before each: a night's resume starts long after the last run's files reached the
    disk, while here the first run (170 MB of reports for 200,000 devices) and each resume leave dirty pages
    that the next resume's fsyncs (of its index and reports) would otherwise wait for."""
    rows = []
    for n in range(1, count + 1):
        if keep is not None and n in (1, count):
            shutil.copytree(out, keep / f"before-{n}")
        before = _folder_bytes(out)
        os.sync()
        result = _checked(run_child(_cli(csv, out, emu.base, "--resume"), env=cli_env()), "resume")
        rows.append((result.wall, _folder_bytes(out) - before, result.cpu))
    return rows


def resume_copy(csv: Path, kept: Path, url: str, under: tuple[str, ...] = ()) -> ChildResult:
    """A resume of a fresh copy of the folder ``kept`` (beside it, as ``trial``), the disk synced first;
    ``under``: a command to run it under (valgrind)."""
    trial = kept.parent / "trial"
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(kept, trial)
    os.sync()
    return _checked(run_child([*under, *_cli(csv, trial, url, "--resume")], env=cli_env()), "resume")


def _first_and_last(csv: Path, emu: EmulatorProc, keep: Path) -> tuple[list[float], list[float]]:
    """Resume 1 and resume 5 again, alternating ``PAIRS`` times, each on a fresh copy of the folder as that
    resume found it: seconds start→exit of each try. Why: one resume's time varies by ±20 % on a shared
    machine for the same work (its function call counts are the same), more than the 5 % the goal allows,
    so the goal compares the best of several tries of each."""
    tries: dict[int, list[float]] = {1: [], RESUMES: []}
    for _ in range(PAIRS):
        for n in (1, RESUMES):
            tries[n].append(resume_copy(csv, keep / f"before-{n}", emu.base).wall)
    shutil.rmtree(keep / "trial", ignore_errors=True)
    return tries[1], tries[RESUMES]


def _first_request(csv: Path, out: Path, emu: EmulatorProc) -> tuple[float, float]:
    """Seconds from spawn to the emulator's first request, and to exit."""
    emu.reset()
    with tempfile.TemporaryFile("w+") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(_cli(csv, out, emu.base, "--resume"), stdout=sink, stderr=sink, env=cli_env(),
                                cwd=ROOT)
        first = float("nan")
        while proc.poll() is None:
            if emu.counters()["requests"]:
                first = time.perf_counter() - started
                break
            time.sleep(0.005)
        proc.wait()
        total = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            sink.seek(0)
            raise RuntimeError(f"resume with new devices exited {proc.returncode}: {sink.read()[-1500:]}")
    return first, total


def _as_completed(out: Path) -> None:
    """A dry run's folder as if every planned device had been assigned (so a resume skips them all)."""
    results = out / "results.jsonl"
    done = out / "results.done"
    with results.open("rb") as src, done.open("wb") as dst:
        for line in src:
            dst.write(line.replace(b'"status":"planned"', b'"status":"succeeded"', 1))
    os.replace(done, results)
    (out / "index.txt").unlink(missing_ok=True)


def run(opts: Options) -> Section:
    small, big = (2_000, 20_000) if opts.quick else (20_000, 200_000)
    new = 100 if opts.quick else 1_000
    million = 100_000 if opts.quick else 1_000_000
    title = f"(g) Resume cost as nights pile up: {small:,} and {big:,} devices, {million:,}-row dry run"
    section = Section("g", title)
    with workdir("resume-") as tmp, EmulatorProc() as emu:
        folder = Path(tmp)
        built: dict[int, tuple[Path, Path, float]] = {}
        for size in (small, big):
            csv = _csv(folder / f"devices-{size}.csv", size)
            out = folder / f"out-{size}"
            first = _checked(run_child(_cli(csv, out, emu.base), env=cli_env()), "first run")
            built[size] = (csv, out, first.wall)
        keep = folder / "kept"
        keep.mkdir()
        resumes = {size: _resumes(built[size][0], built[size][1], emu, keep if size == big else None)
                   for size in (small, big)}
        tries_first, tries_last = _first_and_last(built[big][0], emu, keep)
        shutil.rmtree(keep)
        fresh = device_ids(new, salt=15)
        grown = _csv(folder / "devices-new.csv", big, tuple(fresh))
        readers_new = _readers(grown)
        first_request, with_new = _first_request(grown, built[big][1], emu)

        baseline = run_child([PY, "-c", "import bulk_assign.cli.main"], env=cli_env()).max_rss_mb
        emu.reset()  # from here on nothing may reach the emulator
        csv_m = _csv(folder / "devices-m.csv", million)
        shutil.rmtree(built[small][1])
        readers_m = _readers(csv_m)
        out_m = folder / "out-m"
        dry = _checked(run_child(_cli(csv_m, out_m, emu.base, "--dry-run"), env=cli_env()), "dry run")
        dry_mb = _folder_bytes(out_m) / MB
        _as_completed(out_m)
        cold = _checked(run_child(_cli(csv_m, out_m, emu.base, "--resume"), env=cli_env()), "cold resume")
        warm = _checked(run_child(_cli(csv_m, out_m, emu.base, "--resume"), env=cli_env()), "resume")
        requests_m = emu.counters()["requests"]
    distinct = len({memory_bench._device_id(i) for i in range(million)} - {
        memory_bench._device_id(i) for i in range(million) if i % memory_bench.INVALID_EVERY == 5})

    rows = []
    for size in (small, big):
        times = [t for t, _, _ in resumes[size]]
        rows.append([f"{size:,} devices, first run", size, built[size][2], None, None, None, None, None])
        for n, (seconds, grew, cpu) in enumerate(resumes[size], 1):
            rows.append([f"{size:,} devices, all-done resume {n}", size, seconds, seconds / times[0], grew / MB,
                         seconds / size * 1e6, cpu, cpu / resumes[size][0][2]])
    section.tables.append(table(["what", "devices", "seconds", "× resume 1", "folder grew MB", "µs/device",
                                 "CPU s", "CPU × resume 1"], rows))
    per_small = min(t for t, _, _ in resumes[small]) / small
    per_big = min(t for t, _, _ in resumes[big]) / big
    scaling = per_big / per_small
    fifth = min(tries_last) / min(tries_first)
    series = resumes[big][-1][0] / resumes[big][0][0]
    growth = max(g for size in (small, big) for _, g, _ in resumes[size]) / MB
    section.tables.append(table(["what", "rows", "seconds", "× readers", "peak RSS MB", "above baseline MB",
                                 "bytes/distinct id"], [
        [f"readers only, {big:,} + {new:,} new rows", big + new, readers_new, 1.0, None, None, None],
        [f"resume with {new:,} new devices: first request", big + new, first_request,
         first_request / readers_new, None, None, None],
        [f"resume with {new:,} new devices: exit", big + new, with_new, with_new / readers_new, None, None, None],
        ["import baseline (import the CLI, exit)", 0, None, None, baseline, None, None],
        [f"readers only, {million:,} rows", million, readers_m, 1.0, None, None, None],
        [f"--dry-run, {million:,} rows", million, dry.wall, dry.wall / readers_m, dry.max_rss_mb,
         dry.max_rss_mb - baseline, (dry.max_rss_mb - baseline) * 2**20 / distinct],
        ["resume of it, all done, index rebuilt", million, cold.wall, cold.wall / readers_m, cold.max_rss_mb,
         cold.max_rss_mb - baseline, (cold.max_rss_mb - baseline) * 2**20 / distinct],
        ["resume of it, all done, from the index", million, warm.wall, warm.wall / readers_m, warm.max_rss_mb,
         warm.max_rss_mb - baseline, (warm.max_rss_mb - baseline) * 2**20 / distinct],
    ]))
    first_ratio, dry_ratio = first_request / readers_new, dry.wall / readers_m
    peak = max(dry.max_rss_mb, warm.max_rss_mb)
    section.verdicts += [
        verdict(f"all-done resume of {big:,} ≤ 1.2× that of {small:,} scaled by size", scaling <= 1.2,
                f"{scaling:.2f}× per device ({per_big * 1e6:.1f} vs {per_small * 1e6:.1f} µs/device, "
                f"best of {RESUMES})"),
        verdict(f"resume {RESUMES} ≤ 1.05× resume 1 ({big:,})", fifth <= 1.05,
                f"{fifth:.2f}×, best of {PAIRS} tries each ({min(tries_last):.2f} s vs {min(tries_first):.2f} s); "
                f"{series:.2f}× in the series above"),
        verdict("folder grows ≤ 1 MB per all-done resume", growth <= 1.0, f"at most {growth:.2f} MB"),
        verdict("first request of a resume with new devices ≤ 1.2× the readers' scan", first_ratio <= 1.2,
                f"{first_ratio:.2f}× ({first_request:.2f} s vs {readers_new:.2f} s)"),
        verdict(f"{million:,}-row dry run ≤ 2× the readers' scan", dry_ratio <= 2.0,
                f"{dry_ratio:.2f}× ({dry.wall:.1f} s vs {readers_m:.1f} s)"),
        verdict(f"peak RSS < 150 MB for {million:,} rows, run and resume", peak < 150 if million >= 1_000_000
                else None, f"dry run {dry.max_rss_mb:.0f} MB, resume {warm.max_rss_mb:.0f} MB "
                f"(index rebuilt: {cold.max_rss_mb:.0f} MB)"),
    ]
    if requests_m:
        section.verdicts.append(f"**check failed**: the dry run and the all-done resumes sent {requests_m} requests")
    section.notes += [
        f"Inputs as in benchmarks/memory_bench.py (~1 % invalid rows, ~1 % repeated ids); {distinct:,} distinct "
        f"ids in the {million:,}-row file. Every process timed from spawn to exit (interpreter start-up "
        "included), peak RSS via os.wait4 through the launcher; emulator budgets 1000000/1s, concurrency 64.",
        "An all-done resume writes only the input's invalid rows again (they are keyed by the latest run's "
        "lines) and rewrites index.txt and the merged CSV files; 'folder grew' is the folder's size after "
        "minus before. The disk is synced (`os.sync()`) before each resume, so a resume does not wait for the "
        "write-back of the files the run before it left (a night's resume starts hours after the last one).",
        f"Resume 1 and resume {RESUMES} of {big:,} devices tried again {PAIRS} times each, alternating, each on a "
        f"copy of the folder as that resume found it (seconds): resume 1 "
        + " ".join(f"{t:.2f}" for t in tries_first) + f"; resume {RESUMES} " + " ".join(f"{t:.2f}" for t in tries_last)
        + ". The goal compares the best try of each.",
        f"The {million:,}-row dry run wrote {dry_mb:.0f} MB of reports. 'readers only' = a process with the CLI's "
        "imports that scans and reads the file (scan_input + read_input), nothing else.",
    ]
    return section
