"""Shutdown signals: real SIGTERM/SIGINT to this process inside a running loop; fallback; restoring handlers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from bulk_assign.cli.signals import ShutdownSignals


class Sentinel:
    """A previous handler: must be restored afterwards, and must not see signals while we hold them."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append(signum)


@pytest.fixture
def sentinels() -> Iterator[dict[signal.Signals, Sentinel]]:
    """Own handlers for SIGTERM and SIGINT, so a signal that slips through cannot kill the test run."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    installed = {sig: Sentinel() for sig in saved}
    for sig, handler in installed.items():
        signal.signal(sig, handler)
    yield installed
    for sig, previous in saved.items():
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


class Recorder:
    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        self.calls: list[str] = []

    def on_first(self) -> None:
        assert threading.current_thread() is threading.main_thread()
        asyncio.get_running_loop()  # called from the loop, so asyncio objects are safe to touch
        self.calls.append("first")
        self.first.set()

    def on_second(self) -> None:
        self.calls.append("second")
        self.second.set()


async def settle() -> None:
    """Let the loop run the signal's callback (delivered through the loop's wakeup fd or self-pipe)."""
    for _ in range(50):
        await asyncio.sleep(0.001)


async def test_first_signal_drains_second_cancels_more_are_ignored(sentinels: dict[signal.Signals, Sentinel]) -> None:
    recorder = Recorder()
    with ShutdownSignals(recorder.on_first, recorder.on_second) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(recorder.first.wait(), 5)
        assert recorder.calls == ["first"]
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(recorder.second.wait(), 5)
        os.kill(os.getpid(), signal.SIGTERM)
        await settle()
        assert recorder.calls == ["first", "second"]
        assert signals.received == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM] and signals.count == 3
    assert all(not s.calls for s in sentinels.values())  # the previous handlers never saw them
    assert signal.getsignal(signal.SIGTERM) is sentinels[signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is sentinels[signal.SIGINT]
    os.kill(os.getpid(), signal.SIGTERM)  # and they work again
    await settle()
    assert sentinels[signal.SIGTERM].calls == [signal.SIGTERM]


async def test_fallback_without_asyncio_signal_handlers(sentinels: dict[signal.Signals, Sentinel],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    def not_implemented(*args: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", not_implemented)
    removed: list[object] = []
    monkeypatch.setattr(loop, "remove_signal_handler", lambda sig: removed.append(sig))
    recorder = Recorder()
    with ShutdownSignals(recorder.on_first, recorder.on_second) as signals:
        assert signal.getsignal(signal.SIGTERM) not in (sentinels[signal.SIGTERM], signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(recorder.first.wait(), 5)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(recorder.second.wait(), 5)
        assert signals.received == [signal.SIGTERM, signal.SIGTERM]
    assert removed == []  # nothing was installed through the loop
    assert signal.getsignal(signal.SIGTERM) is sentinels[signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is sentinels[signal.SIGINT]
    assert all(not s.calls for s in sentinels.values())


async def test_no_signal_no_callback_and_handlers_restored_after_an_error(
        sentinels: dict[signal.Signals, Sentinel]) -> None:
    recorder = Recorder()
    with pytest.raises(KeyError), ShutdownSignals(recorder.on_first, recorder.on_second):
        await settle()
        raise KeyError("boom")
    assert recorder.calls == []
    assert signal.getsignal(signal.SIGTERM) is sentinels[signal.SIGTERM]


async def test_only_the_chosen_signals_are_handled(sentinels: dict[signal.Signals, Sentinel]) -> None:
    recorder = Recorder()
    with ShutdownSignals(recorder.on_first, recorder.on_second, signals=(signal.SIGTERM,)):
        assert signal.getsignal(signal.SIGINT) is sentinels[signal.SIGINT]
        os.kill(os.getpid(), signal.SIGINT)
        await settle()
        assert recorder.calls == [] and sentinels[signal.SIGINT].calls == [signal.SIGINT]


def test_outside_the_main_thread_nothing_is_installed(sentinels: dict[signal.Signals, Sentinel]) -> None:
    errors: list[BaseException] = []
    received: list[int] = []

    async def in_thread() -> None:
        with ShutdownSignals(lambda: None, lambda: None) as signals:
            received.append(signals.count)

    def run() -> None:
        try:
            asyncio.run(in_thread())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert errors == [] and received == [0]
    assert signal.getsignal(signal.SIGTERM) is sentinels[signal.SIGTERM]
