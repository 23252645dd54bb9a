"""One device's state from the queue to its record: the one shape a device has inside the pipeline.

Why one object: the feeder queues it (with its journaled intent), a worker or a batch sends it, the retry
loop reads its counters, and it produces its own record. Each counter is bumped in one method here, so
``attempts`` in the record, the retry policy's view and the run's request counters cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..auth.options import permission_hint
from ..graph.outcome import Attempt, Kind
from ..models import DeviceResult, InputRow, SkipReason, Status, utc_now

VERIFY_FAILED = ("VerificationFailed", "could not read back the device's assignments")


@dataclass(slots=True, eq=False)
class DeviceState:
    """A device being decided. ``eq=False``: states are told apart by identity (a batch maps them)."""

    device_id: str
    row: InputRow | None = None
    intent: asyncio.Future[None] | None = None  # resolves once the device's intent is on disk
    sends: int = 0  # attempts that count against --max-attempts (429s don't)
    posts: int = 0  # every request actually sent for this device (the record's ``attempts``)
    throttle_waited: float = 0.0  # seconds under throttling: at the gate, or since the first 429 if longer
    throttled_since: float | None = None  # clock time of the device's first 429
    auth_retries: int = 0
    verify_next: bool = False  # the last attempt may have landed: read back before sending again
    read_first: bool = False  # --read-before-write: the first read-back checks the state before this folder
    client_request_id: str | None = None
    request_id: str | None = None
    attempt: Attempt | None = None  # the latest answer; the final one once decided
    started_at: str | None = None  # set by ``start``: two timestamps per device (started, finished), not three
    t0: float = field(default_factory=time.monotonic)

    @classmethod
    def queued(cls, row: InputRow, intent: asyncio.Future[None] | None = None) -> DeviceState:
        """The state of a valid row as the feeder queues it (the clock starts when a worker takes it)."""
        assert row.device_id is not None
        return cls(row.device_id, row=row, intent=intent)

    def start(self, *, in_doubt: bool, read_first: bool = False) -> None:
        """A worker took the device: its timing starts now; one in doubt from an earlier run is read back first,
        and with ``read_first`` every device is (what it finds then was there before this folder)."""
        self.started_at, self.t0 = utc_now(), time.monotonic()
        self.verify_next = in_doubt or read_first
        self.read_first = read_first and not in_doubt

    def restart(self) -> None:
        """A writer took a device its reader started (read-before-write): the record's clock starts again, so
        ``started_at`` is still when the device's turn for the write budget began and ``duration_ms`` its
        write, not the time it waited, read, for the writers."""
        self.started_at, self.t0 = utc_now(), time.monotonic()

    def begin_send(self, client_request_id: str) -> bool:
        """A request for this device is about to leave; True when it is a retry (not the first send)."""
        self.posts += 1
        self.client_request_id = client_request_id
        return self.posts > 1

    def answered(self, attempt: Attempt, request_id: str | None = None) -> None:
        """Keep the answer (and the request-id Graph gave it, for support cases)."""
        self.attempt = attempt
        self.request_id = request_id or attempt.request_id

    def throttled_for(self, now: float) -> None:
        """A 429 for this device: wall time since its first 429 counts toward the throttle cap, not only
        the time spent at the gate (a server that answers 429 with no wait keeps the gate open)."""
        if self.throttled_since is None:
            self.throttled_since = now
        self.throttle_waited = max(self.throttle_waited, now - self.throttled_since)

    def failed_maybe_committed(self, *, verify: bool) -> None:
        """A failure that counts as an attempt; if it may have landed, read back before any resend."""
        self.sends += 1
        if verify and self.attempt is not None and self.attempt.maybe_committed:
            self.verify_next = True

    def unverified(self, why: Attempt | None = None) -> Attempt:
        """A read-back that could not tell (``why``: the read's answer, for the record): counts as an attempt,
        and the next one reads back again."""
        self.sends += 1
        message = VERIFY_FAILED[1]
        if why is not None:
            status = f"HTTP {why.http_status} " if why.http_status else ""
            message += f" ({status}{why.error_code}: {why.error_message})"
        self.attempt = Attempt(Kind.TRANSIENT, error_code=VERIFY_FAILED[0], error_message=message,
                               maybe_committed=True)
        return self.attempt

    def read_refused(self, answer: Attempt) -> Attempt:
        """The read of the device's assignments was refused for good (a redirect, 400, 403): reading again
        will not help and writing blind might assign it twice, so the device fails with the read's answer."""
        when = "after a write that may have landed" if self.posts else "before its write; nothing was written"
        self.attempt = Attempt(Kind.PERMANENT, answer.http_status, error_code=answer.error_code,
                               error_message=f"{answer.error_message} (reading the device's assignments {when})",
                               request_id=answer.request_id)
        return self.attempt

    def give_up(self, code: str) -> None:
        """Out of tries: the final attempt keeps the last HTTP details and names why we stopped."""
        last = self.attempt or Attempt(Kind.PERMANENT)
        detail = f"{last.error_code}: {last.error_message}" if last.error_code else "no detail"
        self.attempt = Attempt(Kind.PERMANENT, last.http_status, error_code=code,
                               error_message=f"gave up after the last failure ({detail})",
                               request_id=last.request_id)

    def record(self, run_id: str, hint: Callable[[int], str | None] | None = None) -> DeviceResult:
        """The device's one result record, from its final attempt; ``hint`` is the operation's advice for a
        permanent failure (``Operation.failure_hint``)."""
        attempt = self.attempt
        assert attempt is not None
        finished_at = utc_now()
        result = DeviceResult(
            device_id=self.device_id,
            status=Status.SUCCEEDED if attempt.kind is Kind.SUCCESS else Status.FAILED,
            serial_number=self.row.serial if self.row is not None else None,
            previous_group_tag=self.row.previous if self.row is not None else None,
            http_status=attempt.http_status,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            assignment_id=attempt.assignment_id,
            attempts=self.posts,
            request_id=self.request_id,
            client_request_id=self.client_request_id,
            started_at=self.started_at or finished_at,  # never started (a test's state): it took no time
            finished_at=finished_at,
            duration_ms=int((time.monotonic() - self.t0) * 1000),
            source_line=self.row.source_line if self.row is not None else None,
            run_id=run_id,
        )
        if attempt.skip is not None:  # the write's own answer said so (--add-to-group: a member already)
            result.status, result.skip_reason, result.http_status = Status.SKIPPED, attempt.skip, None
        elif attempt.verified:
            # found before any write of this folder: the state was already there; else our own write landed
            before = self.read_first and self.posts == 0
            result.status = Status.SKIPPED
            result.skip_reason = SkipReason.ALREADY_ASSIGNED if before else SkipReason.LANDED
            result.http_status = None
        elif attempt.kind is not Kind.SUCCESS and \
                (advice := permission_hint(attempt.http_status or 0, attempt.error_code)
                 or (hint(attempt.http_status) if hint is not None and attempt.http_status else None)) is not None:
            result.error_message = f"{attempt.error_message} ({advice})"
        return result
