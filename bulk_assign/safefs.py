"""Opening the files bulk-assign writes without following links planted for it.

Why: the output folder (and the token cache's folder) may be reachable by someone else, e.g. a shared
``/srv/rollout``. Who can create ``results.jsonl -> /home/admin/.bashrc`` there would have the next run
append to (or truncate, or ``chmod``) the link's target with the rights of the run's user. So:

- every file is opened with ``O_NOFOLLOW``: a symlink where a report, the journal, the log or the lock
  should be is refused with a message naming it (``UsageError``, exit 2), never written through;
- temporary files of the atomic rewrites get a random name and ``O_EXCL``, so a planted ``*.tmp`` can
  neither be followed nor pre-created; ``os.replace`` then replaces a planted link itself, not its target;
- a folder that is a symlink, that other users can write to (mode ``o+w``), or that the user does not
  own is refused before anything is opened in it (POSIX only: Windows has neither mode bits nor
  ``O_NOFOLLOW``; its ACLs are the folder owner's business).

Only the last component is checked: ``--out reports/wave1`` may sit under a symlinked ``reports``, which is
the user's own choice. Group-writable folders are accepted (user-private groups make them common).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UsageError

__all__ = ["atomic_file", "check_dir", "ensure_dir", "open_append", "open_fd", "open_read", "open_update",
           "write_atomic"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_COMMON = _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_POSIX = os.name == "posix"


def check_dir(path: Path, what: str = "output folder") -> None:
    """Refuse a folder that is a symlink, is writable by other users or is not the user's own."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise UsageError(f"{what} {path} is a symbolic link; give the real folder (a link can be redirected "
                         "by whoever can change it)")
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{what} {path} is not a folder")
    if not _POSIX:  # pragma: no cover - Windows
        return
    if info.st_uid != os.geteuid():
        raise UsageError(f"{what} {path} belongs to another user (uid {info.st_uid}); use a folder of your own")
    if info.st_mode & stat.S_IWOTH:
        raise UsageError(f"{what} {path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                         f"restrict it (chmod o-w {path}) or use another folder")


def ensure_dir(path: Path, what: str = "output folder", *, mode: int = 0o755) -> None:
    """Create ``path`` (and its parents) if needed, then ``check_dir`` it."""
    with contextlib.suppress(FileExistsError):  # a symlink to a folder, or a file: check_dir says which
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    check_dir(path, what)


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symlink at ``path``; a link there is a ``UsageError`` naming it."""
    try:
        return os.open(path, flags | _COMMON, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (_is_link(path) and exc.errno != errno.ENOENT):
            raise UsageError(f"{path} is a symbolic link; refusing to open it (remove it: something may "
                             "have planted it to redirect bulk-assign's writes)") from None
        raise


def _is_link(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISLNK(os.lstat(path).st_mode)
    return False


def open_append(path: Path, *, text: bool = False, buffering: int = -1) -> IO[Any]:
    """Open for appending (created if missing), binary or UTF-8 text with ``newline=""`` (csv)."""
    fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if text:
        return os.fdopen(fd, "a", encoding="utf-8", newline="", buffering=buffering)
    return os.fdopen(fd, "ab", buffering=buffering)


def open_update(path: Path) -> IO[bytes]:
    """Open an existing file for reading and writing (truncating a torn tail); FileNotFoundError if none."""
    return os.fdopen(open_fd(path, os.O_RDWR), "r+b")


def open_read(path: Path) -> IO[bytes]:
    """Open an existing file for reading; FileNotFoundError if none."""
    return os.fdopen(open_fd(path, os.O_RDONLY), "rb")


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o644, text: bool = False) -> Iterator[IO[Any]]:
    """Write a file beside ``path`` under a random name (``O_EXCL``) and rename it over ``path`` when the
    block ends without an exception (fsynced first); on an exception the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if _POSIX:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        handle: IO[Any] = (os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb"))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp")  # what ``atomic_file`` names its temporary files


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove the temporary files of atomic rewrites a killed run left in ``folder``; their names.

    Call only while holding the folder's lock: then no rewrite is in progress, and a temporary file is
    garbage (its rename never happened; the file it was to replace is intact).
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write-then-rename, so a reader (or a crash) never sees half a file."""
    with atomic_file(path, mode=mode) as handle:
        handle.write(data)
