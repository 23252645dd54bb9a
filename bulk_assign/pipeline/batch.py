"""JSON batching (``--batch``): up to 20 assignments per ``POST /$batch``, decided per device.

Batching saves round trips, not throttling budget: Intune throttles every item on its own, so the pacer
is asked for one write per item. Each item is classified like a standalone answer; a 429 item waits for
its own Retry-After (through the shared gate) and is resent alone with the others still pending, never
with the items that already succeeded. A whole batch that failed after it was sent (5xx, timeout, reset,
an unreadable answer) leaves every item possibly committed: they are read back (batched GETs) before any
is resent.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from ..graph.operations import classify_item, item_responses, send
from ..graph.outcome import Attempt, Kind
from ..models import DeviceResult, InputRow, utc_now
from .retry import DeviceTry
from .worker import RunContext, give_up, unverified

MAX_BATCH = 20  # Graph's limit for one $batch
_ITEM = b'{"id":"%d","method":"POST","url":"%s","headers":{"Content-Type":"application/json"},"body":%s}'


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


def batch_payload(paths_and_bodies: list[tuple[str, bytes]]) -> bytes:
    """The ``$batch`` body, built from prebuilt item bodies without re-serialising them (paths are GUID-checked)."""
    items = b",".join(_ITEM % (n, path.encode(), body) for n, (path, body) in enumerate(paths_and_bodies))
    return b'{"requests":[' + items + b"]}"


class BatchWorker:
    """Decides up to 20 devices per ``$batch`` request, each with its own record."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def process(self, rows: list[InputRow]) -> list[DeviceResult]:
        ctx = self.ctx
        started_at, t0 = utc_now(), time.monotonic()
        states = [ctx.new_state(row.device_id or "") for row in rows]
        final: dict[int, Attempt] = {}
        pending = list(range(len(rows)))
        while pending:
            answers: dict[int, Attempt] = {}
            doubtful = [i for i in pending if states[i].verify_next]
            if doubtful and ctx.verifier is not None:
                answers.update(await self._read_back(states, doubtful))
            to_send = [i for i in pending if i not in answers]
            if to_send:
                answers.update(await self._send(states, to_send))
            pending = await self._settle(states, pending, answers, final)
        return [ctx.record(row, states[i], final[i], started_at, t0) for i, row in enumerate(rows)]

    async def _settle(self, states: list[DeviceTry], pending: list[int], answers: dict[int, Attempt],
                      final: dict[int, Attempt]) -> list[int]:
        """Decide what is final; the rest wait for the longest of their retry delays and go again together."""
        policy, ctx = self.ctx.policy, self.ctx
        again: list[int] = []
        delay = 0.0
        for i in pending:
            attempt, state = answers[i], states[i]
            if not policy.should_retry(attempt):
                final[i] = attempt
            elif (code := policy.gives_up(attempt, state)) is not None:
                final[i] = give_up(attempt, code)
            else:
                delay = max(delay, policy.delay(attempt, state, ctx.rng))
                again.append(i)
        if again and delay > 0:
            await ctx.sleep(delay)
        return again

    async def _read_back(self, states: list[DeviceTry], indexes: list[int]) -> dict[int, Attempt]:
        """Batched verification; devices found not assigned are left out (they will be sent)."""
        assert self.ctx.verifier is not None
        found = await self.ctx.verifier.already_assigned_many([states[i].device_id for i in indexes])
        out: dict[int, Attempt] = {}
        for i in indexes:
            answer = found.get(states[i].device_id)
            if answer:
                out[i] = Attempt(Kind.SUCCESS, verified=True)
            elif answer is None:
                out[i] = unverified(states[i])
            else:
                states[i].verify_next = False
        return out

    async def _send(self, states: list[DeviceTry], indexes: list[int]) -> dict[int, Attempt]:
        """Send the items in batches sized for the pacing limit *now*, not when the batch was formed.

        In a throttled run every worker holds a formed batch while it waits for the pacer; when a 429 lowers
        the limit (say to 50), batches of 20 carry only 40 a window, so the pacer may grant part of a batch
        (``partial``): as many items as fit, and the rest go in the next request.
        """
        out: dict[int, Attempt] = {}
        rest = indexes
        while rest:
            sent = await self._send_batch(states, rest)
            out.update(sent)
            rest = [i for i in rest if i not in sent]
        return out

    async def _send_batch(self, states: list[DeviceTry], indexes: list[int]) -> dict[int, Attempt]:
        """One ``$batch`` of the first items the pacer grants; answers for those items only."""
        ctx = self.ctx
        op = ctx.operation
        granted = await ctx.wait_turn([states[i] for i in indexes], len(indexes), partial=True)
        indexes = indexes[:granted]
        token = await ctx.tokens.get_token()
        client_request_id = str(uuid.uuid4())
        payload = batch_payload([(op.path(states[i].device_id), op.body(states[i].device_id)) for i in indexes])
        for i in indexes:
            state = states[i]
            state.posts += 1
            state.client_request_id = client_request_id
            if state.posts > 1:
                ctx.stats.retries += 1
        ctx.stats.requests_sent += 1
        sent_at = time.monotonic()
        whole = await send(ctx.transport, "POST", ctx.settings.graph_url + "/$batch", token=token,
                           client_request_id=client_request_id, body=payload, timeout=ctx.settings.request_timeout)
        by_id = item_responses(whole.body) if whole.kind is Kind.SUCCESS else None
        if whole.kind is Kind.SUCCESS and by_id is None:
            whole = Attempt(Kind.TRANSIENT, whole.http_status, error_code="MalformedBatchResponse",
                            error_message="the batch answer could not be read", request_id=whole.request_id,
                            maybe_committed=True)
        if whole.kind is Kind.THROTTLED:  # the whole batch was refused: one throttle event, nothing landed
            ctx.throttled(whole.retry_after, len(indexes))
            return {i: whole for i in indexes}
        latency = time.monotonic() - sent_at
        out: dict[int, Attempt] = {}
        for n, i in enumerate(indexes):
            attempt = classify_item(by_id.get(str(n))) if by_id is not None else replace(whole)
            states[i].request_id = attempt.request_id or whole.request_id
            ctx.account(states[i], attempt, token, latency)
            out[i] = attempt
        return out
