"""JSON batching (``--batch``): up to 20 writes per ``POST /$batch`` (assignments, undo DELETEs), decided per device.

Batching saves round trips, not throttling budget: Intune throttles every item on its own, so the pacer
is asked for one write per item. Each item is classified like a standalone answer, and the batch's
devices go through the same ``RetryLoop`` as single devices: a 429 item waits for its own Retry-After
(through the shared gate) and is resent with the others still pending, never with the items that already
succeeded. A whole batch that failed after it was sent (5xx, timeout, reset,
an unreadable answer) leaves every item possibly committed: they are read back (batched GETs) before any
is resent.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..graph.operations import classify_item, item_responses, new_request_id, send
from ..graph.outcome import Attempt, Kind
from .state import DeviceState
from .worker import RunContext

MAX_BATCH = 20  # Graph's limit for one $batch
_ITEM = b'{"id":"%d","method":"POST","url":"%s","headers":{"Content-Type":"application/json"},"body":%s}'
_ITEM_OF = b'{"id":"%d","method":"%s","url":"%s","headers":{"Content-Type":"application/json"},"body":%s}'
_BODILESS_ITEM = b'{"id":"%d","method":"%s","url":"%s"}'  # a DELETE (undo): no body, no Content-Type


def batch_size(limit: int, fill: float = 0.9) -> int:
    """Items per batch at a pacing limit of ``limit`` writes per window: the largest size (at most 20) whose
    whole batches fill at least ``fill`` of the window.

    Why not simply min(20, limit): the pacer grants a batch only when all its items fit in the window, or
    part of it once a fifth of the limit fits, so at a limit of 45 batches of 20 carry 40 a window (the 5
    places left are less than a fifth) and at 25 only 20 + 5 in two requests; batches of 15 and 12 carry 45
    and 24 whole. Smaller batches cost requests, so the largest size that fills the window wins.
    """
    limit = max(1, limit)
    for size in range(min(MAX_BATCH, limit), 0, -1):
        if (limit // size) * size >= fill * limit:
            return size
    return 1


def batch_payload(paths_and_bodies: list[tuple[str, bytes | None]], method: str = "POST") -> bytes:
    """The ``$batch`` body, built from prebuilt item bodies without re-serialising them (paths are checked by
    the operation); every item has the run's one ``method`` (a POST's template is the assignments' hot path)."""
    if method == "POST":
        items = b",".join(_ITEM % (n, path.encode(), body) for n, (path, body) in enumerate(paths_and_bodies))
    else:
        verb = method.encode()
        items = b",".join(_BODILESS_ITEM % (n, verb, path.encode()) if body is None else
                          _ITEM_OF % (n, verb, path.encode(), body) for n, (path, body) in enumerate(paths_and_bodies))
    return b'{"requests":[' + items + b"]}"


class BatchWorker:
    """Decides up to 20 devices per ``$batch`` request, each with its own record."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def process(self, states: list[DeviceState]) -> None:
        """Decide every device of ``states``: afterwards each holds its final attempt."""
        self.ctx.start(states)
        await self.ctx.retry.run(states, self._round)

    async def _round(self, pending: list[DeviceState]) -> None:
        """Read back the devices in doubt (batched GETs), then send the rest."""
        ctx = self.ctx
        doubtful = [s for s in pending if s.verify_next]
        decided: set[int] = set()
        if doubtful and ctx.verifier is not None:
            found = await ctx.verifier.already_assigned_many([s.device_id for s in doubtful])
            decided = {id(s) for s in doubtful if ctx.verified(s, found.get(s.device_id))}
        rest = [s for s in pending if id(s) not in decided]
        while rest:
            rest = rest[await self._send_batch(rest):]

    async def _send_batch(self, states: list[DeviceState]) -> int:
        """One ``$batch`` of the first items the pacer grants; returns how many were sent.

        Batches are sized for the pacing limit *now*, not when the batch was formed: in a throttled run
        every worker holds a formed batch while it waits for the pacer; when a 429 lowers the limit (say to
        50), batches of 20 carry only 40 a window, so the pacer may grant part of a batch (``partial``): as
        many items as fit, and the rest go in the next request.
        """
        ctx = self.ctx
        op = ctx.operation
        granted = await ctx.wait_turn(states, len(states), partial=True)
        states = states[:granted]
        token = await ctx.tokens.get_token()
        client_request_id = new_request_id()
        payload = batch_payload([(op.path(s.device_id, s.row), op.body(s.device_id, s.row)) for s in states], op.method)
        ctx.begin_send(states, client_request_id)
        sent_at = time.monotonic()
        whole = await send(ctx.transport, "POST", ctx.settings.graph_url + "/$batch", token=token,
                           client_request_id=client_request_id, body=payload, timeout=ctx.settings.request_timeout)
        by_id = item_responses(whole.body) if whole.kind is Kind.SUCCESS else None
        if whole.kind is Kind.SUCCESS and by_id is None:
            whole = Attempt(Kind.TRANSIENT, whole.http_status, error_code="MalformedBatchResponse",
                            error_message="the batch answer could not be read", request_id=whole.request_id,
                            maybe_committed=True)
        if whole.kind is Kind.THROTTLED:  # the whole batch was refused: one throttle event, nothing landed
            now = ctx.clock()
            for state in states:
                state.answered(whole)
                state.throttled_for(now)
            ctx.throttled(whole.retry_after, len(states))
            return len(states)
        latency = time.monotonic() - sent_at
        for n, state in enumerate(states):
            attempt = classify_item(by_id.get(str(n))) if by_id is not None else replace(whole)
            ctx.account(state, attempt, token, latency, attempt.request_id or whole.request_id)
        return len(states)
