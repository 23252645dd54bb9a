"""``Emulator``: the emulator started in-process on loopback, owned by one ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from aiohttp import web

from ..config import Rate
from ..errors import EmulatorError
from .app import build_app
from .config import EmulatorConfig
from .operations import Tenant
from .state import Counters


class Emulator:
    """Starts the aiohttp server on ``config.host:config.port`` (port 0 = a free one) for the ``with`` block.

    ``base_url`` (``http://127.0.0.1:PORT/beta``) is what a client uses as its Graph root; ``counters`` and
    ``assignments()`` let tests look inside without HTTP.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.tenant = Tenant(self.config)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def counters(self) -> Counters:
        return self.tenant.counters

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise EmulatorError("the emulator is not running; use it as `async with Emulator(...)`")
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/beta"

    @property
    def admin_url(self) -> str:
        return self.root_url + "/_emulator"

    async def start(self) -> None:
        if self._runner is not None:
            raise EmulatorError("the emulator is already running")
        runner = web.AppRunner(build_app(self.config, self.tenant), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.config.host}:{self.config.port}"
            raise EmulatorError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def set_rates(self, *, app: Rate | None = None, tenant: Rate | None = None) -> None:
        """Change the write budgets while running (accepted history keeps counting)."""
        self.tenant.budgets.set_rates(self.tenant.clock(), app=app, tenant=tenant)

    def assignments(self, device_id: str) -> list[dict[str, Any]]:
        """Committed assignment objects for a device (any GUID spelling; lower-cased here)."""
        return self.tenant.store.assignments(device_id.strip().lower())

    def reset_counters(self) -> None:
        self.tenant.counters.reset()

    def reset_state(self) -> None:
        """Forget assignments, throttle history and fault history."""
        self.tenant.reset_state()
