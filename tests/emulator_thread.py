"""Run the project's Graph emulator on its own event loop in a thread, for tests of synchronous code (the CLI)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bulk_assign.emulator import Emulator, EmulatorConfig


@contextmanager
def threaded_emulator(config: EmulatorConfig) -> Iterator[Emulator]:
    """Yield a running ``Emulator`` (loopback, port 0) served from a background thread."""
    loop = asyncio.new_event_loop()
    emulator = Emulator(config)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(emulator.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(emulator.stop())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "emulator did not start"
    try:
        yield emulator
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
