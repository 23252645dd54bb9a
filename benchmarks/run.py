"""The benchmark runner: every measurement of issues 3 and 6, side by side in one run, against local emulators.

    .venv/bin/python benchmarks/run.py                 # everything; writes benchmarks/README.md
    .venv/bin/python benchmarks/run.py --quick         # small sizes, a smoke run (about a minute)
    .venv/bin/python benchmarks/run.py --only b        # one section (a, b, c, d, e, f, g, h, i, memory); repeatable
    .venv/bin/python benchmarks/run.py --scale 20      # throttled budgets: Intune's 100/20s becomes 100/1s

Sections: (a) unthrottled devices/s vs a bare aiohttp loop and Microsoft's SDK; (b) completion time over the
theoretical minimum and 429 share at a scaled Intune budget for each emulator window algorithm, plus
convergence after a mid-run budget cut; (c) devices lost / assigned twice with 10 % faults; (d) HTTP
requests per device with --batch; (e) the CPU a throttled run uses (it must sleep between windows, not poll);
(f) completion time and devices started per window at one budget under 0/5/10 % faults; (g) what a resume
costs as nights pile up (all-done resumes, first request with new devices, a 1,000,000-row dry run and its
resume); (h) serial-number resolution (the listing of a 30,000-device tenant, the size of the serial map, and
a 1,000,000-row serial dry run next to the id one); memory: peak RSS for 1,000,000 input rows. Each prints
a table and a verdict against its goal. A full run (no --quick, no --only) replaces the part of
benchmarks/README.md between the results markers; --write forces that for partial runs, --no-write prevents it.

Emulators run on 127.0.0.1 only, as subprocesses. Microsoft's SDK comes from the optional extra:
``.venv/bin/pip install -e '.[sdk]'``; without it the SDK rows say so instead of showing numbers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import Options, Section, load_avg  # noqa: E402

README = ROOT / "benchmarks" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# memory first: the runner is smallest then (see common.run_child)
SECTIONS = ("memory", "a", "b", "c", "d", "e", "f", "g", "h", "i")
ORDER = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "memory")  # the order in the printout and README


_MODULES = {"a": "unthrottled", "b": "throttled", "c": "faults", "d": "batch", "e": "idle", "f": "fault_pacing",
            "g": "resume", "h": "serials", "i": "routes", "memory": "memory"}


def _section(key: str) -> Callable[[Options], Section]:
    """The section's ``run``, imported only when chosen (each section imports what it measures)."""
    module = importlib.import_module(f"benchmarks.sections.{_MODULES[key]}")
    run: Callable[[Options], Section] = module.run
    return run


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"`uname -m` {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("bulk-assign", "aiohttp", "msgraph-beta-sdk", "microsoft-kiota-http"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def _code() -> str:
    """The commit measured, and whether the engine's files differ from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "bulk_assign")
    return f"commit {commit}" + (" with uncommitted changes in bulk_assign/" if dirty else "")


def write_readme(body: str) -> None:
    text = README.read_text(encoding="utf-8") if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{body.rstrip()}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", action="append", choices=ORDER, help="run only this section (repeatable)")
    parser.add_argument("--scale", type=float, default=20.0,
                        help="throttled budgets: Intune's 100/20s becomes 100/(20/SCALE)s [default: 20]")
    parser.add_argument("--concurrency", type=int, default=64, help="engine, bare loop and SDK [default: 64]")
    parser.add_argument("--rounds", type=int, help="alternating rounds in (a) [default: 2, --quick 1]")
    written = parser.add_mutually_exclusive_group()
    written.add_argument("--write", action="store_true", help="write README.md even for --quick/--only")
    written.add_argument("--no-write", action="store_true", help="do not write README.md")
    args = parser.parse_args()
    opts = Options(quick=args.quick, scale=args.scale, concurrency=args.concurrency,
                   rounds=args.rounds or (1 if args.quick else 2))
    chosen = [k for k in SECTIONS if not args.only or k in args.only]
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    header = [
        f"Command: `{command.strip()}`",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_machine()}",
        f"Code: {_code()}; packages: {_versions()}",
        f"Load average (1/5/15 min) at start: {load_avg()}",
    ]
    print("\n".join(header), flush=True)
    started = time.perf_counter()
    done: dict[str, Section] = {}
    for key in chosen:
        t0, load = time.perf_counter(), load_avg()
        try:
            section = _section(key)(opts)
        except Exception as exc:  # one broken section must not hide the others' numbers
            import traceback

            traceback.print_exc()
            section = Section(key, f"({key}) failed", verdicts=[f"**section failed**: {type(exc).__name__}: {exc}"])
        section.notes.append(f"Section took {time.perf_counter() - t0:.0f} s; load average at its start {load}.")
        done[key] = section
        print("\n" + section.text(), flush=True)
    footer = f"Whole run: {time.perf_counter() - started:.0f} s; load average at the end: {load_avg()}"
    print(footer)
    full = not args.quick and not args.only
    if (full or args.write) and not args.no_write:
        body = "\n".join(f"{line}  " for line in header) + "\n\n"
        body += "\n".join(done[k].text() for k in ORDER if k in done) + "\n" + footer + "\n"
        write_readme(body)
        print(f"wrote {README.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
