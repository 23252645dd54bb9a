"""The output-folder lock: contention with a real second process, release on death (SIGKILL), reuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulk_assign.errors import OutputLocked, UsageError
from bulk_assign.store.folderlock import LOCK_NAME, FolderLock

HOLDER = """
import sys
from pathlib import Path
from bulk_assign.store.folderlock import FolderLock
lock = FolderLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold the lock until stdin closes or the process is killed
lock.release()
"""

CONTENDER = """
import sys
from pathlib import Path
from bulk_assign.errors import BulkAssignError
from bulk_assign.store.folderlock import FolderLock
try:
    with FolderLock(Path(sys.argv[1])):
        print("acquired", flush=True)
except BulkAssignError as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def start_holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_while_the_first_lives_and_gets_it_after_sigkill(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = start_holder(folder)
    try:
        with pytest.raises(OutputLocked) as info:
            FolderLock(folder).acquire()
        message = str(info.value)
        assert str(folder) in message and f"pid {holder.pid}" in message and "started 20" in message
        assert info.value.exit_code == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert holder.returncode == -signal.SIGKILL
    with FolderLock(folder) as lock:  # the dead holder's lock died with it
        assert lock.locked
        assert f'"pid":{os.getpid()}' in (folder / LOCK_NAME).read_text()


def test_a_live_holder_refuses_another_process(tmp_path: Path) -> None:
    with FolderLock(tmp_path):
        result = subprocess.run([sys.executable, "-c", CONTENDER, str(tmp_path)], capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2, result
    assert "acquired" not in result.stdout
    assert f"pid {os.getpid()}" in result.stderr and str(tmp_path) in result.stderr
    # released: the other process now gets it
    result = subprocess.run([sys.executable, "-c", CONTENDER, str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "acquired"


def test_two_locks_in_one_process_conflict_and_release_is_reusable(tmp_path: Path) -> None:
    first = FolderLock(tmp_path)
    first.acquire()
    with pytest.raises(OutputLocked):
        FolderLock(tmp_path).acquire()
    first.release()
    first.release()  # idempotent
    assert (tmp_path / LOCK_NAME).read_text() == ""  # no stale holder details
    with FolderLock(tmp_path):
        pass
    first.acquire()
    first.release()


def test_holder_details_missing_means_starting_up(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    try:
        # Simulate a reader catching the holder between locking and writing its details.
        os.truncate(tmp_path / LOCK_NAME, 0)
        with pytest.raises(OutputLocked, match="just starting"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(10)


def test_creates_the_folder_and_reports_an_unusable_one(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create"):
        FolderLock(blocker / "sub").acquire()
