"""Read the tenant's whole Autopilot listing, page by page, at the read budget with the run's retry rules.

Why the run's ``RetryLoop`` and not a loop of its own: a page is one more request under the same rules as a
device (``--max-attempts`` transient failures with jittered back-off or ``Retry-After``; 429s wait and do not
count, up to ``--max-throttle-wait``; one token refresh on a 401). A page is a read, so nothing is read
back before a resend. A listing that cannot be read in full stops with ``ListingError`` (exit 4): a
partial map would call devices unknown that are not.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..auth import TokenProvider
from ..auth.options import permission_hint
from ..config import Settings
from ..errors import AuthenticationError, ListingError
from ..graph.listing import listing_url, parse_page, rebase_next_link
from ..graph.operations import new_request_id, send
from ..graph.outcome import Attempt, Kind
from ..graph.transport import Transport
from ..tenant import TenantDevice
from .pacing import Pacer
from .retry import Clock, RetryLoop, RetryPolicy, Sleep
from .state import DeviceState

log = logging.getLogger("bulk_assign")

MAX_PAGES = 100_000  # 100 million devices: a server that keeps sending nextLinks in a circle is stopped


@dataclass(slots=True)
class ListingStats:
    """What one listing cost, for the log, the summary and tests that count requests."""

    pages: int = 0
    requests: int = 0
    throttled: int = 0
    unusable: int = 0  # items without a usable id (never matched)
    seconds: float = 0.0
    devices: int = 0
    on_page: Callable[[ListingStats], None] | None = field(default=None, repr=False)


class ListingReader:
    """``GET .../windowsAutopilotDeviceIdentities``, every page, following (rebased) nextLinks; and single
    reads (``get``) under the same budget and rules (``status --expect-profile``)."""

    def __init__(self, settings: Settings, *, transport: Transport, tokens: TokenProvider, pacer: Pacer,
                 sleep: Sleep, rng: random.Random | None = None, clock: Clock = time.monotonic) -> None:
        self._s = settings
        self._transport = transport
        self._tokens = tokens
        self._pacer = pacer
        self._sleep = sleep
        self._clock = clock
        policy = RetryPolicy(max_attempts=settings.max_attempts, max_wait=settings.max_retry_after,
                             max_throttle_wait=settings.max_throttle_wait)
        self._retry = RetryLoop(policy, sleep=sleep, rng=rng or random.Random(), clock=clock)

    async def read_all(self, stats: ListingStats | None = None) -> list[TenantDevice]:
        """Every device of the tenant, in the listing's order."""
        stats = stats if stats is not None else ListingStats()
        started = self._clock()
        url: str | None = listing_url(self._s.graph_url)
        devices: list[TenantDevice] = []
        while url is not None:
            if stats.pages >= MAX_PAGES:
                raise ListingError(f"the listing kept sending nextLinks past {MAX_PAGES:,} pages; stopped")
            page, unusable, link = parse_page(await self._page(url, stats))
            devices.extend(page)
            stats.pages += 1
            stats.unusable += unusable
            stats.devices = len(devices)
            if stats.on_page is not None:
                stats.on_page(stats)
            url = rebase_next_link(link, self._s.graph_url) if link is not None else None
        stats.seconds = self._clock() - started
        if stats.unusable:
            log.warning("the listing had %d item(s) without a usable id; they cannot be matched", stats.unusable)
        return devices

    async def _page(self, url: str, stats: ListingStats) -> object:
        """One page's body; ``ListingError`` (or ``AuthenticationError`` for a 403) when it cannot be read."""
        attempt = await self.get(url, stats)
        if attempt.kind is Kind.SUCCESS:
            return attempt.body
        detail = f"HTTP {attempt.http_status} " if attempt.http_status else ""
        message = (f"the tenant's Autopilot listing could not be read: {detail}{attempt.error_code}: "
                   f"{attempt.error_message} (request-id {attempt.request_id or 'none'}); nothing was written")
        if (hint := permission_hint(attempt.http_status or 0, attempt.error_code)) is not None:
            raise AuthenticationError(f"{message} ({hint})")
        raise ListingError(message)

    async def get(self, url: str, stats: ListingStats | None = None) -> Attempt:
        """One paced GET through the retry loop (one state stands for the request): its final attempt.

        Only a token refused twice raises (``AuthenticationError``); any other failure is the value.
        """
        stats = stats if stats is not None else ListingStats()
        state = DeviceState(device_id="read")

        async def round_(states: list[DeviceState]) -> None:
            await self._pacer.acquire(1)
            token = await self._tokens.get_token()
            state.begin_send(crid := new_request_id())
            stats.requests += 1
            attempt = await send(self._transport, "GET", url, token=token, client_request_id=crid,
                                 timeout=self._s.request_timeout)
            state.answered(attempt)
            if attempt.kind is Kind.THROTTLED:
                stats.throttled += 1
                self._pacer.on_throttle(attempt.retry_after)
                state.throttled_for(self._clock())
                wait = min(attempt.retry_after if attempt.retry_after is not None else 1.0, self._s.max_retry_after)
                log.warning("read throttled: waiting %.0f s (Retry-After)", wait)
                await self._sleep(wait)  # one reader: waiting here is the gate
                state.throttled_for(self._clock())
            elif attempt.kind is Kind.AUTH:
                if state.auth_retries:
                    raise AuthenticationError("Graph refused the token twice while reading the tenant's devices "
                                              f"({attempt.error_code}): sign in again")
                state.auth_retries += 1
                self._tokens.invalidate(token)
            elif attempt.kind is Kind.TRANSIENT:
                state.failed_maybe_committed(verify=False)  # a read: resend, nothing to read back

        await self._retry.run([state], round_)
        assert state.attempt is not None
        return state.attempt
