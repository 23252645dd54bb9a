"""A local Microsoft Graph emulator for Autopilot profile assignment, behaving like Intune under load.

Used by the tests, the benchmarks, ``bulk-assign demo`` and users rehearsing a rollout::

    async with Emulator(EmulatorConfig(app_rate=Rate(5, 0.5), faults=0.1, seed=7)) as emu:
        ...  # point the engine at emu.base_url; read emu.counters afterwards

Modules: ``config`` (settings), ``operations`` (routes and rules), ``bodies`` (the seed call's body),
``batch`` ($batch), ``throttle`` (window algorithms, Entra's buckets), ``faults`` (seeded fault decisions),
``auth`` (bearer/JWT checks), ``state`` (assignments, counters), ``responses`` (error bodies, Retry-After),
``rollout`` (profiles, dynamic groups), ``directory`` and ``entra`` (Entra device objects, static groups and
their routes), ``reach`` (who a profile reaches), ``listing`` and ``inventory`` (the tenant's devices),
``app`` (aiohttp glue), ``server`` (in-process ``Emulator``), ``cli`` (``bulk-assign emulator``).
"""

from __future__ import annotations

from .app import build_app
from .config import FAULT_KINDS, RETRY_AFTER_STYLES, THROTTLE_KINDS, EmulatorConfig
from .server import Emulator
from .state import Counters

__all__ = [
    "FAULT_KINDS",
    "RETRY_AFTER_STYLES",
    "THROTTLE_KINDS",
    "Counters",
    "Emulator",
    "EmulatorConfig",
    "build_app",
]
