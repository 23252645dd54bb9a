"""The README stays true: its quick start names the commands CI runs, and its library example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bulk_assign

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quick_start_has_exactly_the_two_commands_and_ci_runs_the_test_one() -> None:
    block = re.search(r"## Quick start\n.*?```sh\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_library_example_runs_against_the_emulator(tmp_path: Path) -> None:
    code = re.search(r"## As a library\n\n```python\n(.*?)```", README, re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'succeeded': 2" in done.stdout and "'invalid': 1" in done.stdout
    assert "junk invalid InvalidGuid" in done.stdout


def test_public_api_is_complete_and_importable() -> None:
    for name in bulk_assign.__all__:
        assert hasattr(bulk_assign, name), name
    public = {n for n in vars(bulk_assign) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(bulk_assign.__all__), public - set(bulk_assign.__all__)
