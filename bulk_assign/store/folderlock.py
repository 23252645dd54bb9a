"""One run per output folder at a time, enforced by an OS file lock.

Why: two runs writing into one folder would interleave their journals and reports, and both could
resume the same in-doubt devices, so a device could be assigned twice. A scheduled job that overlaps
a slow previous night (cron does not wait) is the usual way this happens.

Why an OS lock and not a pid file: the operating system releases the lock when its holder dies, however
it dies (SIGKILL, OOM killer, power cut, reboot), so a crashed run never leaves a stale lock that a human
must delete, and there is no pid-reuse guessing. The lock file ``.bulk-assign.lock`` stays in the folder;
only the lock on it matters. After locking, the holder writes its pid, host and start time into the file,
so a second run can say who holds the folder. (A reader can catch the holder between locking and
writing; it then says so instead of naming it.)

POSIX uses ``flock`` (per open file: two locks in one process also conflict; NFS emulates it with
``fcntl`` locks on Linux). Windows uses ``msvcrt.locking`` on one byte far past the text, because Windows
locks are mandatory and a locked byte range could not be read by the run that wants to name the holder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import orjson

from ..errors import OutputLocked, UsageError
from ..safefs import ensure_dir, open_fd

__all__ = ["LOCK_NAME", "FolderLock"]

LOCK_NAME = ".bulk-assign.lock"
_WINDOWS_LOCK_OFFSET = 1 << 30  # far past the holder text; a byte range may lie beyond the end of a file
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}


class FolderLock:
    """``with FolderLock(out_dir):`` holds ``out_dir/.bulk-assign.lock`` or raises ``OutputLocked`` at once.

    Creates the folder if needed. Never waits: a second run should fail fast and say why, not queue up
    behind a run that may take all night.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ``OutputLocked`` naming the folder and its holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        try:
            ensure_dir(self.out_dir, "--out")  # a symlinked, foreign or world-writable folder is refused
            # No O_TRUNC: opening must not wipe the holder's details before we know the lock is ours.
            fd = open_fd(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise UsageError(f"--out {self.out_dir}: cannot create {LOCK_NAME} in it ({exc.strerror or exc})") from None
        try:
            if not _try_lock(fd):
                raise OutputLocked(self._busy_message(fd))
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, orjson.dumps(info) + b"\n")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Clear the holder details and let go of the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # still ours: nobody reads stale details in the gap
        except OSError:
            pass
        finally:
            _unlock(fd)
            os.close(fd)

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def _busy_message(self, fd: int) -> str:
        holder = _describe_holder(fd)
        return (f"{self.out_dir} is in use by another bulk-assign run ({holder}); wait for it to finish, or "
                "choose another --out folder")


def _describe_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = orjson.loads(os.read(fd, 4096).strip() or b"null")
    except (OSError, orjson.JSONDecodeError):
        info = None
    if not isinstance(info, dict):
        return "holder not yet recorded: it is just starting"
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {info.get('pid')}{where}, started {info.get('started_at')}"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):  # closing the handle releases it too
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _BUSY:
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
