"""The output folder under pressure: a disk that fills mid-run and a folder that cannot be written.

Planted symlinks, foreign and world-writable folders are in tests/test_safefs.py. These tests mount a small
tmpfs (CI runs as root); where mounting is impossible (not root, no CAP_SYS_ADMIN) they are skipped and
say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from emulator_thread import threaded_emulator

from bulk_assign.config import Rate
from bulk_assign.emulator import EmulatorConfig

TOKEN = "filesystem-token"
GROUP = "group:11111111-2222-3333-4444-555555555555"


@contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); run as root to test")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    env["BULK_ASSIGN_ACCESS_TOKEN"] = TOKEN
    return subprocess.run([sys.executable, "-m", "bulk_assign", "run", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def devices(path: Path, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    path.write_text("id\n" + "\n".join(ids) + "\n")
    return ids


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are Linux")
def test_a_disk_that_fills_mid_run_exits_5_and_resume_elsewhere_loses_nothing(tmp_path: Path) -> None:
    ids = devices(tmp_path / "devices.csv", 3000)
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN)
    with threaded_emulator(config) as emu, tmpfs(tmp_path / "small", "256k") as small:
        out = small / "out"
        args = [str(tmp_path / "devices.csv"), "--target", GROUP, "--graph-url", emu.base_url, "--rate",
                "100000/1s"]
        done = cli(*args, "--out", str(out))
        assert done.returncode == 5, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert len([line for line in done.stderr.splitlines() if "bulk-assign:" in line]) >= 1
        # the folder moves to a disk with room (as an operator would) and the run resumes there
        moved = tmp_path / "moved"
        shutil.copytree(out, moved)
        final = cli(*args, "--out", str(moved), "--resume")
        commits = dict(emu.counters.commits_per_device)
        twice = emu.counters.devices_assigned_twice
    assert final.returncode == 0, final.stdout + final.stderr
    assert twice == 0 and set(commits) == set(ids) and set(commits.values()) == {1}
    summary = orjson.loads((moved / "summary.json").read_bytes())
    assert summary["remaining"] == 0
    assert summary["counts"]["succeeded"] + summary["skipped_by_reason"].get("landed", 0) == len(ids)


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs mounts are Linux")
def test_a_read_only_folder_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    devices(tmp_path / "devices.csv", 20)
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN)
    with threaded_emulator(config) as emu, tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        done = cli(str(tmp_path / "devices.csv"), "--target", GROUP, "--graph-url", emu.base_url, "--out",
                   str(ro / "out"))
        requests = emu.counters.requests
    assert done.returncode in (2, 5), done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert str(ro) in done.stderr
    assert requests == 0
