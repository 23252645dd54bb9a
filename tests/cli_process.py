"""``bulk-assign ...`` as a real process, the way a scheduled job or a shell runs it: one helper for the
tests that drive the CLI end to end (undo, the overnight commands), instead of one copy per file."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]


def bulk_assign_cli(*args: str, cwd: Path | None = None, token: str | None = "t",
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bulk_assign ARGS`` with no ``BULK_ASSIGN_*`` from the test's own environment (a
    developer's settings must not leak in) and ``token`` as the static access token (None: none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    if token is not None:
        env["BULK_ASSIGN_ACCESS_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "bulk_assign", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def cli_in(cwd: Path, token: str | None = "t") -> Cli:
    """``bulk_assign_cli`` bound to a folder (and a token), for a test that runs many commands there."""
    return functools.partial(bulk_assign_cli, cwd=cwd, token=token)
