"""Shared fixtures. Emulator fixtures: start real emulators on 127.0.0.1 (port 0), stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import trustme

from bulk_assign.emulator import Emulator, EmulatorConfig


@pytest.fixture
async def start_emulator() -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    """``emu = await start_emulator(app_rate=Rate(5, 0.5), ...)``: EmulatorConfig fields as keywords."""
    running: list[Emulator] = []

    async def start(**config: Any) -> Emulator:
        emulator = Emulator(EmulatorConfig(**config))
        await emulator.start()
        running.append(emulator)
        return emulator

    yield start
    for emulator in running:
        await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session (no retries, no auth) for talking to emulators."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority for the fake Entra's HTTPS (tests/fake_entra.py)."""
    return trustme.CA()
