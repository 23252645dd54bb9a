"""Did a possibly-committed write land? Read the device's assignments back before sending it again.

A timeout, a reset or a 5xx after the request left us may still have created the assignment; posting it
again blindly can create a duplicate. Reads have their own, larger budget in Intune, so they are paced by
a separate pacer and never spend the write budget.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp

from .auth import TokenProvider
from .graph import assignments_path, send
from .models import AssignmentTarget
from .outcome import Kind
from .pacing import Pacer


class Verifier(Protocol):
    """Answers whether the device already carries the target: True, False, or None when it cannot tell."""

    async def already_assigned(self, device_id: str) -> bool | None: ...


class GraphVerifier:
    """``GET .../{id}/deploymentProfile/assignments`` and look for an assignment carrying this target."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        graph_url: str,
        target: AssignmentTarget,
        tokens: TokenProvider,
        pacer: Pacer,
        timeout: float,
        on_request: Callable[[], None] = lambda: None,
        gate_wait: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self._session = session
        self._graph_url = graph_url
        self._target = target
        self._tokens = tokens
        self._pacer = pacer
        self._timeout = timeout
        self._on_request = on_request
        self._gate_wait = gate_wait

    async def already_assigned(self, device_id: str) -> bool | None:
        if self._gate_wait is not None:
            await self._gate_wait()
        await self._pacer.acquire()
        token = await self._tokens.get_token()
        self._on_request()
        attempt = await send(
            self._session,
            "GET",
            self._graph_url + assignments_path(device_id),
            token=token,
            client_request_id=str(uuid.uuid4()),
            timeout=self._timeout,
        )
        if attempt.kind is Kind.AUTH:
            self._tokens.invalidate(token)
            return None
        if attempt.kind is not Kind.SUCCESS or not isinstance(attempt.body, dict):
            return None
        values = attempt.body.get("value")
        if not isinstance(values, list):
            return None
        return any(isinstance(v, dict) and self._target.matches(v.get("target")) for v in values)
