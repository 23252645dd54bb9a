"""One device, start to finish: verify if needed, wait for the gate and the pacer, send, classify, retry.

``RunContext`` is what every worker of one run shares (transport, tokens, pacer, gate, policy, counters);
``DeviceWorker`` decides one device per request, ``batching.BatchWorker`` up to 20 per ``$batch``. The
bookkeeping after an answer (gate, pacer, token refresh, what counts as an attempt) is the same for
both and lives in ``RunContext.account``.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

from ..auth import TokenProvider
from ..auth.options import permission_hint
from ..config import Settings
from ..errors import AuthenticationError
from ..graph.operations import Operation, send
from ..graph.outcome import Attempt, Kind
from ..graph.transport import Transport
from ..inputs.readers import Deduper
from ..models import DeviceResult, InputRow, SkipReason, Status, utc_now
from ..store.reports import RunStats
from .gate import ThrottleGate
from .pacing import Pacer
from .retry import DeviceTry, RetryPolicy, Sleep, tenacity_retrying
from .verify import Verifier


@dataclass
class RunContext:
    """Everything the workers of one run share."""

    settings: Settings
    transport: Transport
    tokens: TokenProvider
    pacer: Pacer
    operation: Operation
    stats: RunStats
    verifier: Verifier | None
    run_id: str
    sleep: Sleep
    rng: random.Random
    in_doubt: Deduper | None = None  # devices an earlier run may have assigned: read back before any POST
    gate: ThrottleGate = field(init=False)
    policy: RetryPolicy = field(init=False)

    def new_state(self, device_id: str) -> DeviceTry:
        """A device's retry state; a device in doubt from an earlier run starts with a read-back."""
        state = DeviceTry(device_id)
        if self.in_doubt is not None and self.verifier is not None and device_id in self.in_doubt:
            state.verify_next = True
        return state

    def __post_init__(self) -> None:
        s = self.settings
        self.gate = ThrottleGate(sleep=self.sleep)
        self.policy = RetryPolicy(max_attempts=s.max_attempts, max_wait=s.max_retry_after,
                                  max_throttle_wait=s.max_throttle_wait)

    async def wait_turn(self, state_list: list[DeviceTry], amount: int, *, partial: bool = False) -> int:
        """Wait for the shared gate, then for the pacer (``amount`` writes, or part of them if ``partial``),
        then for the gate again; returns how many writes may go."""
        waited = await self.gate.wait()
        granted = await self.pacer.acquire(amount, partial=partial)
        if self.gate.remaining() > 0:  # another worker hit a 429 while we waited for the pacer
            waited += await self.gate.wait()
        for state in state_list:
            state.throttle_waited += waited
        return granted

    def throttled(self, retry_after: float | None, count: int = 1) -> None:
        """Close the shared gate: for Retry-After if given, else until our pacing window frees, plus jitter."""
        self.stats.throttled += 1
        self.pacer.on_throttle(retry_after, count)
        wait = retry_after
        if wait is None:
            wait = self.pacer.window_free_in() + self.rng.uniform(0.05, 0.5)
        self.gate.close_for(min(wait, self.settings.max_retry_after))

    def account(self, state: DeviceTry, attempt: Attempt, token: str, latency: float) -> None:
        """Bookkeeping after one answer for one device (standalone or a batch item)."""
        kind = attempt.kind
        if kind is not Kind.THROTTLED:
            self.gate.release()
        if kind is Kind.SUCCESS:
            attempt.assignment_id = self.operation.success_id(attempt.body)
            self.pacer.on_accepted(latency)
        elif kind is Kind.THROTTLED:
            self.throttled(attempt.retry_after)
        elif kind is Kind.AUTH:
            self.pacer.on_failed(latency)
            if state.auth_retries >= 1:
                raise AuthenticationError(
                    f"Graph rejected a freshly acquired token ({attempt.error_code}: {attempt.error_message})"
                )
            state.auth_retries += 1
            self.tokens.invalidate(token)
        else:
            self.pacer.on_failed(latency)
            state.sends += 1
            if attempt.maybe_committed and self.verifier is not None and self.settings.verify:
                state.verify_next = True

    def record(self, row: InputRow, state: DeviceTry, attempt: Attempt, started_at: str, t0: float) -> DeviceResult:
        """The device's one result record from its final attempt."""
        assert row.device_id is not None
        result = DeviceResult(
            device_id=row.device_id,
            status=Status.SUCCEEDED if attempt.kind is Kind.SUCCESS else Status.FAILED,
            http_status=attempt.http_status,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            assignment_id=attempt.assignment_id,
            attempts=state.posts,
            request_id=state.request_id,
            client_request_id=state.client_request_id,
            started_at=started_at,
            finished_at=utc_now(),
            duration_ms=int((time.monotonic() - t0) * 1000),
            source_line=row.source_line,
            run_id=self.run_id,
        )
        if attempt.verified:
            result.status, result.skip_reason = Status.SKIPPED, SkipReason.ALREADY_ASSIGNED
            result.http_status = None
        elif (hint := permission_hint(attempt.http_status or 0, attempt.error_code)) is not None:
            result.error_message = f"{attempt.error_message} ({hint})"
        return result


def give_up(attempt: Attempt, code: str) -> Attempt:
    """The final attempt of a device that ran out of tries: keep its HTTP details, name why we stopped."""
    detail = f"{attempt.error_code}: {attempt.error_message}" if attempt.error_code else "no detail"
    return Attempt(
        Kind.PERMANENT,
        attempt.http_status,
        error_code=code,
        error_message=f"gave up after the last failure ({detail})",
        request_id=attempt.request_id,
    )


VERIFY_FAILED = ("VerificationFailed", "could not read back the device's assignments")


def unverified(state: DeviceTry) -> Attempt:
    """A read-back that could not tell: counts as an attempt, and the next one reads back again."""
    state.sends += 1
    return Attempt(Kind.TRANSIENT, error_code=VERIFY_FAILED[0], error_message=VERIFY_FAILED[1], maybe_committed=True)


class DeviceWorker:
    """Decides one device with one request per attempt; tenacity drives the retries."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._retrying = tenacity_retrying(ctx.policy, sleep=ctx.sleep, rng=ctx.rng, on_give_up=give_up)

    async def process(self, row: InputRow) -> DeviceResult:
        assert row.device_id is not None
        ctx = self.ctx
        state = ctx.new_state(row.device_id)
        started_at, t0 = utc_now(), time.monotonic()
        attempt = await self._attempt(state)
        if ctx.policy.should_retry(attempt):
            # tenacity from the second attempt on: nearly every device succeeds at once, and building a
            # tenacity controller per device costs ~25 µs, a real share of CPU at thousands of devices/s.
            code = ctx.policy.gives_up(attempt, state)
            if code is not None:
                attempt = give_up(attempt, code)
            else:
                await ctx.sleep(ctx.policy.delay(attempt, state, ctx.rng))
                attempt = await self._retrying.copy()(self._attempt, state)
        return ctx.record(row, state, attempt, started_at, t0)

    async def _attempt(self, state: DeviceTry) -> Attempt:
        """One try: read back first if the last try may have landed, wait for gate and pacer, send."""
        ctx = self.ctx
        if state.verify_next and ctx.verifier is not None:
            found = await ctx.verifier.already_assigned(state.device_id)
            if found:
                return Attempt(Kind.SUCCESS, verified=True)
            if found is None:  # could not tell: do not risk a duplicate, try again later
                return unverified(state)
            state.verify_next = False
        await ctx.wait_turn([state], 1)
        token = await ctx.tokens.get_token()
        client_request_id = str(uuid.uuid4())
        state.posts += 1
        ctx.stats.requests_sent += 1
        if state.posts > 1:
            ctx.stats.retries += 1
        op = ctx.operation
        sent_at = time.monotonic()
        attempt = await send(
            ctx.transport,
            "POST",
            ctx.settings.graph_url + op.path(state.device_id),
            token=token,
            client_request_id=client_request_id,
            body=op.body(state.device_id),
            timeout=ctx.settings.request_timeout,
        )
        state.client_request_id = client_request_id
        state.request_id = attempt.request_id
        ctx.account(state, attempt, token, time.monotonic() - sent_at)
        return attempt
