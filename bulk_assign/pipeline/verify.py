"""Did a possibly-committed write land? Read the device's assignments back before sending it again.

A timeout, a reset or a 5xx after the request left us may still have created the assignment; posting it
again blindly can create a duplicate. Reads have their own, larger budget in Intune, so they are paced by
a separate pacer and never spend the write budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..auth import TokenProvider
from ..graph.operations import assignments_path, classify_item, item_responses, new_request_id, send
from ..graph.outcome import Attempt, Kind
from ..graph.transport import Transport
from ..models import AssignmentTarget
from .pacing import Pacer


class Verifier(Protocol):
    """Answers whether the device already carries the target: True, False, or None when it cannot tell."""

    async def already_assigned(self, device_id: str) -> bool | None: ...

    async def already_assigned_many(self, device_ids: list[str]) -> dict[str, bool | None]:
        """The same for up to 20 devices at once (one ``$batch`` of reads)."""
        ...


class GraphVerifier:
    """``GET .../{id}/deploymentProfile/assignments`` and look for an assignment carrying this target."""

    def __init__(
        self,
        *,
        transport: Transport,
        graph_url: str,
        target: AssignmentTarget,
        tokens: TokenProvider,
        pacer: Pacer,
        timeout: float,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        self._transport = transport
        self._graph_url = graph_url
        self._target = target
        self._tokens = tokens
        self._pacer = pacer
        self._timeout = timeout
        self._on_request = on_request

    async def already_assigned(self, device_id: str) -> bool | None:
        attempt, token = await self._get(assignments_path(device_id), None, 1)
        if attempt.kind is Kind.AUTH:
            self._tokens.invalidate(token)
        return self._carries_target(attempt) if attempt.kind is Kind.SUCCESS else None

    async def already_assigned_many(self, device_ids: list[str]) -> dict[str, bool | None]:
        item = b'{"id":"%d","method":"GET","url":"%s"}'
        items = b",".join(item % (n, assignments_path(d).encode()) for n, d in enumerate(device_ids))
        whole, token = await self._get("/$batch", b'{"requests":[' + items + b"]}", len(device_ids))
        if whole.kind is Kind.AUTH:
            self._tokens.invalidate(token)
        by_id = item_responses(whole.body) if whole.kind is Kind.SUCCESS else None
        if by_id is None:
            return dict.fromkeys(device_ids)
        out: dict[str, bool | None] = {}
        for n, device_id in enumerate(device_ids):
            attempt = classify_item(by_id.get(str(n)))
            out[device_id] = self._carries_target(attempt) if attempt.kind is Kind.SUCCESS else None
        return out

    async def _get(self, path: str, batch: bytes | None, reads: int) -> tuple[Attempt, str]:
        """One paced read (or one ``$batch`` of ``reads`` reads); the token is returned for invalidation."""
        await self._pacer.acquire(reads)
        token = await self._tokens.get_token()
        self._on_request()
        attempt = await send(
            self._transport,
            "GET" if batch is None else "POST",
            self._graph_url + path,
            token=token,
            client_request_id=new_request_id(),
            body=batch,
            timeout=self._timeout,
        )
        return attempt, token

    def _carries_target(self, attempt: Attempt) -> bool | None:
        body = attempt.body
        values = body.get("value") if isinstance(body, dict) else None
        if not isinstance(values, list):
            return None
        return any(isinstance(v, dict) and self._target.matches(v.get("target")) for v in values)
