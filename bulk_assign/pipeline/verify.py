"""Does the device already carry the target? Read its assignments: before the first write (read-before-write,
the default for the seed call) and before resending a write that may have landed.

A timeout, a reset or a 5xx after the request left us may still have created the assignment; posting it
again blindly can create a duplicate. And a device another folder, another tool or an admin already
assigned needs no write at all. Reads have their own, larger budget in Intune, so they are paced by a
separate pacer and never spend the write budget.

A read answered 429 is not an answer: every reader waits out its Retry-After at one shared gate (a 429 says
the app's read budget is spent, not this device's) and the read goes again, uncounted, for up to
``max_throttle_wait`` seconds from the first one; a 429 never turns into "could not tell" while there is time.
A 401 (a token that expired in flight) is sent again once with a fresh token. Both resends count as the
run's retries (``on_retry``), like a write's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..auth import TokenProvider
from ..graph.operations import assignments_path, classify_item, item_responses, new_request_id, send
from ..graph.outcome import Attempt, Kind
from ..graph.transport import Transport
from ..models import AssignmentTarget
from .gate import ThrottleGate
from .pacing import Pacer

NO_RETRY_AFTER = 1.0  # seconds a read waits after a 429 that gave no usable Retry-After
_UNREADABLE_BATCH = Attempt(Kind.TRANSIENT, error_code="MalformedBatchResponse",
                            error_message="the batch answer could not be read")


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
        on_throttle: Callable[[int], None] = lambda count: None,
        on_retry: Callable[[], None] = lambda: None,
        max_wait: float = 300.0,
        max_throttle_wait: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._graph_url = graph_url
        self._target = target
        self._tokens = tokens
        self._pacer = pacer
        self._timeout = timeout
        self._on_request = on_request
        self._on_throttle = on_throttle
        self._on_retry = on_retry
        self._unreadable: dict[str, Attempt] = {}  # device -> the answer of its last read that could not tell
        self._max_wait = max_wait
        self._max_throttle_wait = max_throttle_wait
        self._clock = clock
        self._gate = ThrottleGate(clock=clock, sleep=sleep)

    async def already_assigned(self, device_id: str) -> bool | None:
        started, refreshed = self._clock(), False
        while True:
            attempt, token = await self._get(assignments_path(device_id), None, 1)
            if attempt.kind is Kind.AUTH:
                self._tokens.invalidate(token)
                if not refreshed:  # a token that expired in flight: once more with a fresh one
                    refreshed = True
                    self._on_retry()
                    continue
            if attempt.kind is Kind.THROTTLED and self._may_wait(started):
                self._throttled(attempt.retry_after)
                self._on_retry()
                continue
            self._gate.release()
            return self._carries_target(device_id, attempt)

    async def already_assigned_many(self, device_ids: list[str]) -> dict[str, bool | None]:
        """One ``$batch`` of reads; items answered 429 go again (alone) once the gate opens."""
        item = b'{"id":"%d","method":"GET","url":"%s"}'
        out: dict[str, bool | None] = {}
        pending, started, refreshed = list(device_ids), self._clock(), False
        while pending:
            items = b",".join(item % (n, assignments_path(d).encode()) for n, d in enumerate(pending))
            whole, token = await self._get("/$batch", b'{"requests":[' + items + b"]}", len(pending))
            if whole.kind is Kind.AUTH:
                self._tokens.invalidate(token)
                if not refreshed:
                    refreshed = True
                    self._on_retry()
                    continue
            may_wait = self._may_wait(started)
            if whole.kind is Kind.THROTTLED and may_wait:  # the whole batch refused: one 429
                self._throttled(whole.retry_after)
                self._on_retry()
                continue
            by_id = item_responses(whole.body) if whole.kind is Kind.SUCCESS else None
            if by_id is None:
                # the $batch itself failed (a 404 there is the endpoint's, not the devices'): none can tell
                failed = whole if whole.kind is not Kind.SUCCESS and whole.http_status != 404 else _UNREADABLE_BATCH
                for device_id in pending:
                    out[device_id] = self._carries_target(device_id, failed)
                break
            again: list[str] = []
            wait: float | None = None
            for n, device_id in enumerate(pending):
                attempt = classify_item(by_id.get(str(n)))
                if attempt.kind is Kind.THROTTLED and may_wait:
                    again.append(device_id)
                    wait = max(wait or 0.0, attempt.retry_after or 0.0)
                else:
                    out[device_id] = self._carries_target(device_id, attempt)
            if again:
                self._throttled(wait or None, len(again))
                self._on_retry()
            else:
                self._gate.release()
            pending = again
        return out

    def _may_wait(self, started: float) -> bool:
        return self._clock() - started < self._max_throttle_wait

    def why_unreadable(self, device_id: str) -> Attempt | None:
        """The answer to the last read of ``device_id``, when it could not tell (None once a read could)."""
        return self._unreadable.get(device_id)

    def _throttled(self, retry_after: float | None, count: int = 1) -> None:
        """Close the readers' gate for the server's Retry-After (never 0: that would mean "resend at once")."""
        self._on_throttle(count)
        self._pacer.on_throttle(retry_after, count)
        wait = retry_after if retry_after is not None and retry_after > 0 else NO_RETRY_AFTER
        self._gate.close_for(min(wait, self._max_wait))

    async def _get(self, path: str, batch: bytes | None, reads: int) -> tuple[Attempt, str]:
        """One paced read (or one ``$batch`` of ``reads`` reads) past the gate; the token comes back for
        invalidation."""
        if not self._gate.is_open():
            await self._gate.wait()
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

    def _carries_target(self, device_id: str, attempt: Attempt) -> bool | None:
        """True or False from a 2xx listing; False from a 404 too: the device has no assignments to show (it
        is unknown to the tenant, or has no deployment profile), so a write cannot duplicate one, and its own
        answer (404, with the operation's hint) is the record. Any other answer cannot tell (None), and
        ``why_unreadable`` keeps what it was."""
        values = attempt.body.get("value") if attempt.kind is Kind.SUCCESS and isinstance(attempt.body, dict) \
            else None
        if isinstance(values, list):
            self._unreadable.pop(device_id, None)
            return any(isinstance(v, dict) and self._target.matches(v.get("target")) for v in values)
        if attempt.kind is not Kind.SUCCESS and attempt.http_status == 404:
            self._unreadable.pop(device_id, None)
            return False
        if attempt.kind is Kind.SUCCESS:  # a 2xx without a list: the next read may tell
            attempt = Attempt(Kind.TRANSIENT, attempt.http_status, error_code="MalformedResponse",
                              error_message="the answer held no list of assignments", request_id=attempt.request_id)
        self._unreadable[device_id] = attempt
        return None
