"""SIGINT / SIGTERM for unattended runs: the first drains, the second cancels.

Why two steps: a scheduler (systemd, a container runtime, Task Scheduler's "stop the task") sends SIGTERM
and waits before it kills; Ctrl-C does the same by hand. The first signal asks the engine to stop taking
new devices and let the requests in flight finish, so nothing is left in doubt and the reports are
complete (exit 130). A second signal means "now": the engine cancels what is in flight and still flushes
what is decided. Signals after the second are ignored (logged): the engine is already cancelling, and
cancelling its clean-up again would lose the flush. SIGKILL remains for a truly stuck process.

Callbacks run in the event loop's thread, between other callbacks, never inside a raw signal handler,
so they may touch asyncio objects (set an Event, cancel a task). ``loop.add_signal_handler`` gives that
on POSIX; where it is missing (Windows' event loops raise ``NotImplementedError``), ``signal.signal``
installs a handler that only hands the signal to the loop with ``call_soon_threadsafe``. The previous
handlers are restored on exit, so ``asyncio.run``'s own Ctrl-C handling and callers' handlers survive.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

__all__ = ["ShutdownSignals"]

log = logging.getLogger("bulk_assign")
_Handler = Callable[[int, FrameType | None], Any] | int | None


class ShutdownSignals:
    """``with ShutdownSignals(on_first, on_second):`` inside a running event loop.

    ``on_first()`` is called on the first SIGINT/SIGTERM, ``on_second()`` on the second (either signal).
    ``received`` lists the signals seen, e.g. for the log and the summary's stop reason.
    """

    def __init__(
        self,
        on_first: Callable[[], None],
        on_second: Callable[[], None],
        *,
        signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._on_first = on_first
        self._on_second = on_second
        self._signals = tuple(signals)
        self._loop = loop
        self._installed: list[tuple[signal.Signals, bool, _Handler]] = []  # (signal, via loop?, previous)
        self.received: list[signal.Signals] = []

    def __enter__(self) -> ShutdownSignals:
        loop = self._loop = self._loop or asyncio.get_running_loop()
        try:
            for sig in self._signals:
                previous = signal.getsignal(sig)
                try:
                    loop.add_signal_handler(sig, self._received, sig)
                    self._installed.append((sig, True, previous))
                except NotImplementedError:  # Windows: no asyncio signal handlers
                    signal.signal(sig, self._from_signal_handler)
                    self._installed.append((sig, False, previous))
        except (ValueError, RuntimeError) as exc:  # not the main thread: signals cannot be caught here
            self._restore()
            log.warning("cannot handle %s here (%s); a signal will stop the run without draining",
                        "/".join(s.name for s in self._signals), exc)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    @property
    def count(self) -> int:
        return len(self.received)

    def _restore(self) -> None:
        while self._installed:
            sig, via_loop, previous = self._installed.pop()
            if via_loop and self._loop is not None and not self._loop.is_closed():
                self._loop.remove_signal_handler(sig)
            # remove_signal_handler installs SIG_DFL; put back what was there (None: not set from Python).
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def _from_signal_handler(self, signum: int, frame: FrameType | None) -> None:
        """The ``signal.signal`` fallback: only hand the signal over to the event loop's thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._received, signal.Signals(signum))

    def _received(self, sig: signal.Signals) -> None:
        self.received.append(sig)
        if len(self.received) == 1:
            log.warning("%s received: no new devices; finishing the requests in flight (again to stop at once)",
                        sig.name)
            self._on_first()
        elif len(self.received) == 2:
            log.warning("%s received again: cancelling the requests in flight", sig.name)
            self._on_second()
        else:
            log.warning("%s received: already stopping at once (SIGKILL ends the process)", sig.name)
