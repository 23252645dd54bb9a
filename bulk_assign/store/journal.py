"""The intent journal: a device's intent is on disk (fsynced) before its POST is sent.

Why: a run can die at any instant (kill -9, OOM, power cut). If the POST for a device was sent but the
process died before its result was written, the next ``--resume`` must know that the device *may* be
assigned and verify it by reading back, instead of posting a second assignment. So every intent is
durable before the request leaves: ``await journal.intent(device_id)`` returns only after a line naming
the device and the run is written and fsynced. A crash can then leave an intent without a request (the
device is verified needlessly, one cheap read) but never a request without an intent.

Group commit keeps this cheap: an fsync costs milliseconds, and with many workers each paying one per
device the disk would become the throttle. Instead, intents that arrive while an fsync is running are
collected into the next group, and one write + one fsync commits the whole group; every waiter of that
group is released when its fsync returns. The write and fsync run in a worker thread
(``asyncio.to_thread``), so the event loop never blocks on the disk. Under load the number of fsyncs is
bounded by the disk's fsync rate, not by the number of devices.

Failure rules:

- A waiter that is cancelled does not disturb its group: it waits through ``asyncio.shield``, and its
  line is still committed (an intent without a POST is harmless, see above).
- An I/O error in a group's write or fsync is raised to every waiter of that group. After it the journal
  refuses new intents: once an fsync has failed the kernel may have dropped the dirty pages, so nothing
  written since can be trusted to be durable, and sending requests without durable intents would break
  the promise above. The run stops instead.

The file is ``journal.log`` in the output folder, one JSON object per line
(``{"intent": "<device id>", "run_id": "...", "at": "<UTC>"}``), appended by every run of the folder.
A line torn by a crash is cut off when the journal is next opened (its fsync never returned, so its
POST was never sent) and skipped by ``load_intents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..inputs.readers import Deduper
from ..models import utc_now
from ..safefs import ensure_dir, open_fd, open_read, open_update

__all__ = ["JOURNAL_NAME", "IntentJournal", "iter_intents", "load_intents", "seal_torn_tail"]

JOURNAL_NAME = "journal.log"
log = logging.getLogger("bulk_assign")


def _durable_fsync(fd: int) -> None:
    """``os.fsync``; on macOS ``F_FULLFSYNC``, because there plain fsync does not flush the drive's cache."""
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        import fcntl

        full = getattr(fcntl, "F_FULLFSYNC", None)
        if full is not None:
            try:
                fcntl.fcntl(fd, full)
                return
            except OSError:
                pass  # some file systems (network, FAT) refuse it; plain fsync is the best left
    os.fsync(fd)


def seal_torn_tail(path: Path, *, keep: Callable[[bytes], bool] | None = None) -> bool:
    """Cut a last line that has no newline (torn by a crash); True if something was cut or sealed.

    An append-only file whose last write was interrupted ends in half a line. Appending after it would
    glue the next record onto the fragment and lose both; cutting the fragment loses only what was never
    complete. Call it before opening such a file for append (the journal does it itself).

    ``keep(fragment)`` True ends the fragment with a newline instead of cutting it: a torn record of
    results.jsonl that still names a device is evidence that the device's POST was sent.
    """
    try:
        handle = open_update(path)
    except FileNotFoundError:
        return False
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return False
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        # Walk back in blocks to the last newline; torn lines are short, so this reads very little.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        handle.seek(end)
        if keep is not None and keep(handle.read(min(size - end, 1 << 20))):
            handle.seek(size)
            handle.write(b"\n")
        else:
            handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())
        return True


class _Group:
    """Intents that will be committed by one write + fsync, and the future their waiters share."""

    __slots__ = ("future", "lines")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lines: list[bytes] = []
        self.future: asyncio.Future[None] = loop.create_future()


class IntentJournal:
    """Durable, group-committed intents in ``out_dir/journal.log`` (see the module docstring).

    ``fsync`` is injectable so tests can count, slow down or fail the syncs; it is called in a worker
    thread with the file descriptor. Use it from one event loop; ``close()`` when the run ends.
    """

    def __init__(
        self,
        out_dir: Path,
        run_id: str,
        *,
        fsync: Callable[[int], None] = _durable_fsync,
        min_interval: float = 0.02,
    ) -> None:
        ensure_dir(out_dir)
        self.path = out_dir / JOURNAL_NAME
        self.run_id = run_id
        self._fsync = fsync
        # Why a floor between commits: on a fast disk a commit per ~10 intents meant a thread hand-off and
        # an fsync's kernel time per ~10 devices, about 25 µs of CPU per device at thousands of devices/s.
        # Intents are made when a device is queued, and the queue (four devices per worker) is deep enough
        # to hide the floor.
        self._min_interval = min_interval
        self._run_id_json = orjson.dumps(run_id)[1:-1].decode()  # escaped once, not per line
        if seal_torn_tail(self.path):
            log.warning("%s: cut a line torn by an earlier crash", self.path)
        created = not self.path.exists()
        self._fd: int | None = open_fd(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        if created:
            _sync_dir(out_dir)  # the new file's directory entry must survive a power cut too
        self._pending: _Group | None = None
        self._committer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closing = False
        self.fsyncs = 0  # groups committed; for logs and tests

    async def intent(self, device_id: str) -> None:
        """Return once a line recording ``device_id`` for this run is written and fsynced.

        Raises ``OSError`` if the write or fsync of its group failed, or if an earlier one did.
        """
        # shield: cancelling this waiter must not cancel the future every other waiter of the group shares.
        await asyncio.shield(self.intent_nowait(device_id))

    def intent_nowait(self, device_id: str, previous: str | None = None,
                      new: str | None = None) -> asyncio.Future[None]:
        """Queue the intent and return its group's future (shared: await it shielded, never cancel it).

        Lets the engine journal devices as it queues them, without a task per device.
        """
        if self._failed is not None:
            raise OSError(f"{self.path}: an earlier journal write failed ({self._failed}); "
                          "intents can no longer be made durable") from self._failed
        if self._closing or self._fd is None:
            raise RuntimeError("the intent journal is closed")
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = _Group(loop)
        group = self._pending
        # device_id is a normalised GUID (nothing to escape); run_id was escaped once in __init__
        prev = b"" if previous is None else b',"prev":' + orjson.dumps(previous)  # what undo restores ...
        if new is not None:
            prev += b',"new":' + orjson.dumps(new)  # ... when the device still carries this
        group.lines.append(f'{{"intent":"{device_id}","run_id":"{self._run_id_json}","at":"{utc_now()}"'.encode()
                           + prev + b"}\n")
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_loop(), name="intent-journal-commit")
        return group.future

    async def _commit_loop(self) -> None:
        """Commit groups one after another until none is pending; new intents join the next group."""
        loop = asyncio.get_running_loop()
        started = -math.inf
        while self._pending is not None:
            try:
                if (wait := started + self._min_interval - loop.time()) > 0 and not self._closing:
                    await asyncio.sleep(wait)  # let more intents join this group
            except asyncio.CancelledError:
                self._cancelled(None)
                raise
            started = loop.time()
            group, self._pending = self._pending, None
            if self._failed is not None:
                _finish(group.future, self._failed)
                continue
            try:
                await asyncio.to_thread(self._write_and_sync, b"".join(group.lines))
            except asyncio.CancelledError:
                self._cancelled(group)
                raise
            except Exception as exc:
                self._failed = exc
                log.error("%s: journal write failed: %s", self.path, exc)
                _finish(group.future, exc)
            else:
                self.fsyncs += 1
                _finish(group.future, None)

    def _cancelled(self, group: _Group | None) -> None:
        """The loop is shutting down under us: release the waiters instead of leaving them hanging."""
        for waiting in (group, self._pending):
            if waiting is not None:
                _finish(waiting.future, OSError(f"{self.path}: journal commit cancelled"))
        self._pending = None

    def _write_and_sync(self, data: bytes) -> None:
        """Runs in a worker thread: append ``data`` completely, then fsync."""
        fd = self._fd
        if fd is None:
            raise OSError(f"{self.path}: journal is closed")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        self._fsync(fd)

    async def close(self) -> None:
        """Wait for groups in flight to be committed, then close the file. Idempotent."""
        self._closing = True
        committer = self._committer
        if committer is not None and not committer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(committer)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    async def __aenter__(self) -> IntentJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _finish(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        # Every waiter may have been cancelled; retrieve it so asyncio does not log "never retrieved".
        future.exception()


def _sync_dir(path: Path) -> None:
    """fsync a directory so a new entry in it is durable (POSIX; Windows cannot open directories)."""
    if os.name != "posix":  # pragma: no cover - Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_intents(out_dir: Path, start: int = 0) -> Iterator[dict[str, Any]]:
    """Stream the journal's intent records from byte ``start`` (a line boundary), skipping lines that are
    not one (torn by a crash, or damaged).

    Skipping is the safe direction: a torn line's fsync never returned, so its POST was never sent.
    """
    for line in iter_lines(out_dir / JOURNAL_NAME, start):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("intent"), str):
            yield record


def iter_lines(path: Path, start: int = 0) -> Iterator[bytes]:
    """The lines of a file that may not exist yet (a folder's first run has no journal or results),
    from byte ``start`` on."""
    try:
        handle = open_read(path)
    except FileNotFoundError:
        return
    with handle:
        if start:
            handle.seek(start)
        yield from handle


def load_intents(out_dir: Path) -> Deduper:
    """Every device that ever had an intent recorded in ``out_dir`` (all runs), streaming the journal."""
    seen = Deduper()
    for record in iter_intents(out_dir):
        with contextlib.suppress(ValueError):  # not a GUID: never sent, so nothing to verify
            seen.add(record["intent"])
    return seen
