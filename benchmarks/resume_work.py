"""Does an all-done resume do more work after more nights? Instructions, not seconds.

Section (g) times resume 1 and resume 5 of the same folder; on a shared machine one resume's time varies by
±20 % for the same work, more than the 5 % its goal allows. This counts the instructions instead (valgrind's
cachegrind without its cache simulation: deterministic up to hash randomisation), of resume 1 and of resume
``--nights`` + 1 of one folder, each run ``--tries`` times on a fresh copy of the folder as that resume found
it. The emulator's process is not under valgrind.

    .venv/bin/python benchmarks/resume_work.py [--devices 20000] [--nights 5] [--tries 2]

About 40× slower than a plain resume under valgrind: 20,000 devices take a few minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import memory_bench
from benchmarks.common import HUGE, PY, ROOT, TARGET, EmulatorProc, cli_env

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _run(csv: Path, out: Path, url: str, *extra: str, under: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [*under, PY, "-m", "bulk_assign", "run", str(csv), "--target", TARGET, "--graph-url", url, "--rate", HUGE,
            "--concurrency", "64", "--out", str(out), *extra]
    result = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode not in (0, 1):  # 1: the input has invalid rows on purpose
        raise SystemExit(f"bulk-assign run exited {result.returncode}: {result.stderr[-1500:]}")
    return result


def _instructions(csv: Path, kept: Path, trial: Path, url: str) -> int:
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(kept, trial)
    result = _run(csv, trial, url, "--resume",
                  under=("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"))
    match = _REFS.search(result.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output: {result.stderr[-800:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--nights", type=int, default=5, help="all-done resumes between the two measured")
    parser.add_argument("--tries", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    last = args.nights + 1
    with tempfile.TemporaryDirectory(prefix="resume-work-") as tmp, EmulatorProc() as emu:
        folder = Path(tmp)
        csv = folder / "devices.csv"
        with csv.open("w") as handle:
            memory_bench._write_csv(handle, memory_bench._device_ids(args.devices))  # ~1 % invalid, ~1 % repeated
        out = folder / "out"
        _run(csv, out, emu.base)
        shutil.copytree(out, folder / "before-1")
        for _ in range(args.nights):
            _run(csv, out, emu.base, "--resume")
        shutil.copytree(out, folder / f"before-{last}")
        counts: dict[int, list[int]] = {1: [], last: []}
        for _ in range(args.tries):  # alternating
            for night in (1, last):
                counts[night].append(_instructions(csv, folder / f"before-{night}", folder / "trial", emu.base))
    first, later = min(counts[1]), min(counts[last])
    for night in (1, last):
        print(f"resume {night} of {args.devices:,} devices: instructions " + "  ".join(f"{c:,}" for c in counts[night]))
    print(f"resume {last} / resume 1 (fewest of each): {later / first:.4f}×")


if __name__ == "__main__":
    main()
