"""One device per request: read back if needed, wait for the gate and the pacer, send, classify.

``RunContext`` is what every worker of one run shares (transport, tokens, pacer, gate, retry loop,
counters); ``DeviceWorker`` sends one device per request, ``batch.BatchWorker`` up to 20 per ``$batch``.
Both hand a *round* to the one ``RetryLoop``; the bookkeeping after an answer (gate, pacer, token
refresh, what counts as an attempt) is the same for both and lives in ``RunContext.account``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ..auth import TokenProvider
from ..config import Settings
from ..errors import AuthenticationError
from ..graph.operations import Operation, new_request_id, send
from ..graph.outcome import Attempt, Kind
from ..graph.transport import Transport
from ..inputs.readers import Deduper
from ..models import SkipReason
from ..store.reports import RunStats
from .gate import Clock, ThrottleGate
from .pacing import Pacer
from .retry import RetryLoop, RetryPolicy, Sleep
from .state import DeviceState
from .verify import GraphVerifier, Verifier

THROTTLE_FLOOR = 0.05  # seconds: the least wait after a first 429, doubling while 429s come in a row


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
    clock: Clock = time.monotonic
    gate: ThrottleGate = field(init=False)
    policy: RetryPolicy = field(init=False)
    retry: RetryLoop = field(init=False)
    _throttle_streak: int = field(init=False, default=0)  # throttle events since the last other answer

    def __post_init__(self) -> None:
        s = self.settings
        self.gate = ThrottleGate(clock=self.clock, sleep=self.sleep)
        self.policy = RetryPolicy(max_attempts=s.max_attempts, max_wait=s.max_retry_after,
                                  max_throttle_wait=s.max_throttle_wait)
        self.retry = RetryLoop(self.policy, sleep=self.sleep, rng=self.rng, clock=self.clock)

    def start(self, states: list[DeviceState]) -> None:
        """A reader (``readahead``) or a worker took these devices: one in doubt from an earlier run starts
        with a read-back, and with read-before-write every device does. A device its reader started keeps
        what the read decided; only its clock starts again (``DeviceState.restart``)."""
        doubt, can_verify = self.in_doubt, self.verifier is not None
        first = can_verify and self.settings.read_before_write
        for state in states:
            if state.started_at is None:
                state.start(in_doubt=can_verify and doubt is not None and state.device_id in doubt,
                            read_first=first)
            else:
                state.restart()

    def begin_send(self, states: list[DeviceState], client_request_id: str) -> None:
        """One request carrying ``states`` is about to leave: the run's counters and each device's."""
        self.stats.requests_sent += 1
        for state in states:
            if state.begin_send(client_request_id):
                self.stats.retries += 1

    def verified(self, state: DeviceState, found: bool | None) -> bool:
        """Apply one read-back: True when it decided the round for this device (found, or could not tell)."""
        if found:
            state.attempt = Attempt(Kind.SUCCESS, verified=True)
            return True
        if found is None:  # could not tell: do not risk a duplicate, try again later (or fail, if refused for good)
            if not self.refused(state):
                state.unverified(self._read_answer(state))
            return True
        state.verify_next = False
        return False

    def refused(self, state: DeviceState) -> bool:
        """True when the last read of the device was refused for good (its record is then that answer)."""
        why = self._read_answer(state)
        if why is None or why.kind is not Kind.PERMANENT:
            return False
        state.read_refused(why)
        return True

    def _read_answer(self, state: DeviceState) -> Attempt | None:
        verifier = self.verifier
        return verifier.why_unreadable(state.device_id) if isinstance(verifier, GraphVerifier) else None

    async def wait_turn(self, state_list: list[DeviceState], amount: int, *, partial: bool = False) -> int:
        """Wait for the shared gate, then for the pacer (``amount`` writes, or part of them if ``partial``),
        then for the gate again; returns how many writes may go."""
        gate = self.gate
        waited = 0.0 if gate.is_open() else await gate.wait()
        granted = await self.pacer.acquire(amount, partial=partial)
        if gate.remaining() > 0:  # another worker hit a 429 while we waited for the pacer
            waited += await gate.wait()
        if waited:
            for state in state_list:
                state.throttle_waited += waited
        return granted

    def throttled(self, retry_after: float | None, count: int = 1) -> None:
        """Close the shared gate for the server's Retry-After, never shorter than a floor.

        A 429 without a usable wait (no header, ``0``, an HTTP-date in the past from a server whose clock
        runs behind) waits until our pacing window frees, plus jitter. Whatever the header says, the wait
        is at least a backoff that doubles with each throttle event in a row (``throttle_floor``), so a
        server that keeps answering 429 with no wait gets a handful of requests, not thousands.
        """
        self.stats.throttled += 1
        self.pacer.on_throttle(retry_after, count)
        if self.gate.remaining() <= 0:  # a new throttle event, not another answer of the same burst
            self._throttle_streak += 1
        wait = retry_after if retry_after is not None and retry_after > 0 else None
        if wait is None:
            wait = self.pacer.window_free_in() + self.rng.uniform(0.05, 0.5)
        wait = min(max(wait, self.throttle_floor(self._throttle_streak)), self.settings.max_retry_after)
        self.gate.close_for(wait)
        if wait >= 1.0:  # a pause people notice: the display says what it is and when it ends
            self.stats.paused_until = max(self.stats.paused_until, time.time() + wait)
            self.stats.pause_retry_after = retry_after

    def throttle_floor(self, streak: int) -> float:
        """The least wait after the ``streak``-th throttle event in a row: 50 ms doubling, with equal jitter."""
        ceiling = min(self.settings.max_retry_after, THROTTLE_FLOOR * 2.0 ** min(max(streak - 1, 0), 20))
        return ceiling * (0.5 + self.rng.random() / 2)

    def account(self, state: DeviceState, attempt: Attempt, token: str, latency: float,
                request_id: str | None = None) -> None:
        """Bookkeeping after one answer for one device (standalone or a batch item)."""
        state.answered(attempt, request_id)
        kind = attempt.kind
        if kind is not Kind.THROTTLED:
            self.gate.release()
            self._throttle_streak = 0
        if kind is Kind.SUCCESS:
            attempt.assignment_id = self.operation.success_id(attempt.body)
            self.pacer.on_accepted(latency)
        elif kind is Kind.THROTTLED:
            state.throttled_for(self.clock())
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
            if attempt.http_status == 404 and (gone := self.operation.gone) is not None:
                state.answered(gone_already(attempt, gone), request_id)  # undo: what it removes is not there
                return
            # an idempotent write is simply resent; any other is read back first if it may have landed
            state.failed_maybe_committed(verify=self.verifier is not None and self.settings.verify
                                         and not self.operation.idempotent)


class DeviceWorker:
    """Decides one device with one request per attempt."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def process(self, state: DeviceState) -> None:
        """Decide ``state``: afterwards it holds its final attempt (``state.record`` makes the record)."""
        ctx = self.ctx
        ctx.start([state])
        await ctx.retry.run([state], self._round)

    async def _round(self, states: list[DeviceState]) -> None:
        """One try: read back first if the last try may have landed, wait for gate and pacer, send."""
        ctx = self.ctx
        (state,) = states
        verifier = ctx.verifier
        if state.verify_next and verifier is not None and ctx.verified(
            state, await verifier.already_assigned(state.device_id)
        ):
            return
        await ctx.wait_turn(states, 1)
        token = await ctx.tokens.get_token()
        client_request_id = new_request_id()
        ctx.begin_send(states, client_request_id)
        op = ctx.operation
        sent_at = time.monotonic()
        attempt = await send(
            ctx.transport,
            op.method,
            ctx.settings.graph_url + op.path(state.device_id, state.row),
            token=token,
            client_request_id=client_request_id,
            body=op.body(state.device_id, state.row),
            timeout=ctx.settings.request_timeout,
        )
        ctx.account(state, attempt, token, time.monotonic() - sent_at)


def gone_already(attempt: Attempt, reason: SkipReason) -> Attempt:
    """A 404 on a write that removes something (``Operation.gone``): skipped with ``reason``, keeping what
    Graph said (a route the service does not have answers 404 too; the record shows its words)."""
    return Attempt(Kind.SUCCESS, request_id=attempt.request_id, skip=reason, error_code=attempt.error_code,
                   error_message=f"HTTP 404: {attempt.error_message or 'not found'}: gone already, nothing to remove")
