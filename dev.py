#!/usr/bin/env python3
"""One entry point that needs nothing but Python 3.11+: ``python3 dev.py demo`` or ``python3 dev.py test``.

Why a script and not a Makefile: many systems refuse a bare ``pip install`` (PEP 668) and Windows has no
make, so this creates (or reuses) ``.venv`` next to it, installs the project into it when ``pyproject.toml``
changed, and then runs the command inside it.

  python3 dev.py demo            the whole job against the embedded Graph emulator
  python3 dev.py test [ARGS]     ruff, mypy --strict and the test suite (ARGS go to pytest)
  python3 dev.py bench [ARGS]    the benchmark runner
  python3 dev.py run ARGS        any bulk-assign command, e.g. ``python3 dev.py run emulator --port 8080``
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> None:
    """Create the venv once; reinstall only when pyproject.toml changed (stamp = its hash)."""
    if sys.version_info < (3, 11):
        sys.exit(f"bulk-assign needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".bulk-assign-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("installing bulk-assign and its test tools into .venv", flush=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True)
    stamp.write_text(digest)


def run(*cmd: str, here: bool = False) -> int:
    """Tests and benchmarks run in the repository; ``run`` and ``demo`` in the caller's working folder, so
    relative input paths work and reports land where the caller is, not inside the repository."""
    return subprocess.run([str(PY), *cmd], cwd=None if here else ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench", "run"}:
        print(__doc__)
        return 2
    ensure_venv()
    what, rest = argv[0], argv[1:]
    if what == "demo":
        return run("-m", "bulk_assign", "demo", *rest, here=True)
    if what == "run":
        return run("-m", "bulk_assign", *rest, here=True)
    if what == "bench":
        return run("benchmarks/run.py", *rest)
    for step in (("-m", "ruff", "check", "."), ("-m", "mypy")):
        code = run(*step)
        if code:
            return code
    return run("-m", "pytest", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
