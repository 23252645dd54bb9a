"""Does an all-done resume do more work after more nights? Instructions, not seconds.

Section (g) times resume 1 and resume 5 of the same folder; on a shared machine one resume's time varies by
±20 % for the same work, more than the 5 % its goal allows. This counts the instructions instead (valgrind's
cachegrind without its cache simulation: deterministic up to hash randomisation), of resume 1 and of resume
``--nights`` + 1 of one folder, each run ``--tries`` times on a fresh copy of the folder as that resume found
it. The emulator's process is not under valgrind. The folder, its resumes and the copies are section (g)'s.

    .venv/bin/python benchmarks/resume_work.py [--devices 20000] [--nights 5] [--tries 2]

About 40× slower than a plain resume under valgrind: 20,000 devices take a few minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import EmulatorProc, cli_env, run_child
from benchmarks.sections.resume import _checked, _cli, _csv, _resumes, resume_copy

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
_VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")


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
        csv = _csv(folder / "devices.csv", args.devices)  # ~1 % invalid, ~1 % repeated
        out = folder / "out"
        _checked(run_child(_cli(csv, out, emu.base), env=cli_env()), "first run")
        _resumes(csv, out, emu, folder, count=last)  # leaves before-1 and before-{last}
        counts: dict[int, list[int]] = {1: [], last: []}
        for _ in range(args.tries):  # alternating
            for night in (1, last):
                stderr = resume_copy(csv, folder / f"before-{night}", emu.base, under=_VALGRIND).stderr
                if (match := _REFS.search(stderr)) is None:
                    raise SystemExit(f"no instruction count in valgrind's output: {stderr[-800:]}")
                counts[night].append(int(match.group(1).replace(",", "")))
    first, later = min(counts[1]), min(counts[last])
    for night in (1, last):
        print(f"resume {night} of {args.devices:,} devices: instructions " + "  ".join(f"{c:,}" for c in counts[night]))
    print(f"resume {last} / resume 1 (fewest of each): {later / first:.4f}×")


if __name__ == "__main__":
    main()
