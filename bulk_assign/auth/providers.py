"""Token providers on MSAL: keep one access token, renew it early, once, off the event loop.

Why not simply call MSAL before every request? MSAL treats a cached token with less than five minutes
left as expired, so with short lifetimes every call would become a token request, and its HTTP is
blocking. Instead the provider holds the current token and its expiry and decides itself when to renew:

* renew margin = min(5 minutes, half the lifetime): a 60-90 minute token is renewed 5 minutes early, a
  4-second test token after 2 seconds: never once per request;
* one renewal at a time (an ``asyncio.Lock``); callers arriving meanwhile get the held token while it is
  still comfortably valid, or wait for the renewal and share its result (or its failure);
* ``invalidate(token)`` after a 401 marks that exact value stale; twenty workers reporting the same
  value cause one renewal; a report about an older value is ignored;
* MSAL runs in a worker thread (``asyncio.to_thread``), so requests in flight never freeze;
* a definite refusal from the identity provider (revoked refresh token, bad secret) becomes an
  ``AuthenticationError`` at once; network trouble is retried a few times, and while the held token is
  still valid the run just keeps using it.

Delegated renewals use ``acquire_token_silent_with_error(force_refresh=True)`` (never prompting: an
unattended job must fail, not wait for a person). App-only renewals drop the held token from MSAL's
in-memory cache first, because ``acquire_token_for_client`` would otherwise hand the same token back.
Tokens, refresh tokens and secrets never appear in messages, logs or reprs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msal

from .. import redact
from ..errors import AuthenticationError
from .cache import CacheStore
from .http import msal_http_client

log = logging.getLogger("bulk_assign.auth")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

RENEW_MARGIN = 300.0  # seconds before expiry that a long-lived token is renewed
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
NEEDS_SIGN_IN = frozenset({"invalid_grant", "interaction_required", "login_required", "consent_required"})


@dataclass(frozen=True, slots=True)
class _Held:
    """The current token and the times (on the provider's clock) that govern it."""

    token: str
    renew_at: float  # after this, the next caller renews it
    usable_until: float  # until this, it may still be handed out while a renewal is in progress
    stale: bool = False  # Graph rejected it: never hand it out again

    @classmethod
    def from_result(cls, token: str, expires_in: float, now: float) -> _Held:
        lifetime = max(float(expires_in), 0.0)
        return cls(
            token=token,
            renew_at=now + lifetime - min(RENEW_MARGIN, lifetime / 2),
            usable_until=now + lifetime - min(60.0, lifetime / 10),
        )


class _Transient(Exception):
    """The identity provider could not be reached or asked us to come back later."""


def _first_line(text: object, limit: int = 300) -> str:
    line = str(text or "").strip().splitlines()[0:1]
    return (line[0] if line else "")[:limit]


class MsalTokenProvider:
    """The renewal logic shared by every MSAL flow; subclasses only say how to get one token (blocking)."""

    kind = "msal"

    def __init__(
        self,
        *,
        client_id: str,
        authority: str,
        scope: str,
        instance_discovery: bool = True,
        ca_bundle: Path | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
    ) -> None:
        self.client_id = client_id
        self.authority = authority
        self.scope = scope
        self._instance_discovery = instance_discovery
        self._ca_bundle = ca_bundle
        self._clock = clock
        self._sleep = sleep
        self._retry_delays = retry_delays
        self._held: _Held | None = None
        self._lock = asyncio.Lock()
        self._attempts = 0  # bumped after every renewal attempt, so waiters can tell one happened
        self._last_error: AuthenticationError | None = None
        self._retry_not_before = 0.0
        self.renewals = 0  # successful token acquisitions, for logs and tests

    def _app_options(self) -> dict[str, Any]:
        """What every MSAL application of ours is built with: authority, our HTTP client, discovery."""
        return {
            "authority": self.authority,
            "http_client": msal_http_client(self._ca_bundle),
            "instance_discovery": None if self._instance_discovery else False,
        }

    # -- the TokenProvider protocol -------------------------------------------------------------------

    async def get_token(self) -> str:
        held, now = self._held, self._clock()
        if held is not None and not held.stale:
            if now < held.renew_at:
                return held.token
            if now < held.usable_until and (self._lock.locked() or now < self._retry_not_before):
                return held.token  # someone is renewing, or the last try failed transiently: keep going
        seen = self._attempts
        async with self._lock:
            held, now = self._held, self._clock()
            if held is not None and not held.stale and now < held.renew_at:
                return held.token  # renewed while we waited
            if seen != self._attempts and self._last_error is not None:
                raise self._last_error  # the renewal we waited for failed: share its answer, don't retry
            return await self._renew(held)

    def invalidate(self, stale_token: str) -> None:
        held = self._held
        if held is not None and held.token == stale_token and not held.stale:
            log.info("Graph rejected the current access token (%s); it will be renewed", self.kind)
            self._held = replace(held, stale=True)

    # -- renewal --------------------------------------------------------------------------------------

    async def _renew(self, held: _Held | None) -> str:
        discard = held.token if held is not None else None
        attempt = 0
        try:
            while True:
                try:
                    result = await asyncio.to_thread(self._acquire_blocking, discard)
                    return self._accept(result)
                except _Transient as exc:
                    now = self._clock()
                    if held is not None and not held.stale and now < held.usable_until:
                        self._retry_not_before = now + min(30.0, (held.usable_until - now) / 4)
                        log.warning("could not renew the access token yet (%s); still using the current one", exc)
                        return held.token
                    if attempt >= len(self._retry_delays):
                        raise AuthenticationError(
                            f"could not get an access token ({self.kind}): {exc}; the identity provider "
                            "is unreachable or unavailable"
                        ) from None
                    log.warning("token request failed (%s); retrying in %g s", exc, self._retry_delays[attempt])
                    await self._sleep(self._retry_delays[attempt])
                    attempt += 1
        except AuthenticationError as exc:
            self._last_error = exc
            raise
        finally:
            self._attempts += 1

    def _acquire_blocking(self, discard: str | None) -> Mapping[str, Any]:
        """Runs in a worker thread: MSAL's HTTP is blocking. Translates its exceptions at this boundary."""
        try:
            result = self._acquire(discard)
        except AuthenticationError:
            raise
        except OSError as exc:  # requests' exceptions are OSErrors: connection refused, timeouts, TLS
            raise _Transient(self._scrub(f"{type(exc).__name__}: {_first_line(exc)}")) from None
        except Exception as exc:  # msal raises ValueError & co. for configuration it cannot use
            raise AuthenticationError(
                self._scrub(f"could not get an access token ({self.kind}): {type(exc).__name__}: {_first_line(exc)}")
            ) from None
        if result is None:
            raise AuthenticationError(self._no_token_message())
        if "access_token" not in result:
            error = str(result.get("error") or "unknown_error")
            description = self._scrub(_first_line(result.get("error_description")))
            if error in TRANSIENT_ERRORS:
                raise _Transient(f"{error}: {description}")
            raise AuthenticationError(self._refusal_message(error, description))
        return result

    def _accept(self, result: Mapping[str, Any]) -> str:
        token = str(result["access_token"])
        expires_in = float(result.get("expires_in") or 3600)
        redact.register(token)
        self._held = _Held.from_result(token, expires_in, self._clock())
        self._last_error = None
        self._retry_not_before = 0.0
        self.renewals += 1
        log.log(
            logging.INFO if self.renewals == 1 else logging.DEBUG,
            "access token acquired (%s, %s); valid for %d s",
            self.kind,
            result.get("token_source", "identity provider"),
            expires_in,
        )
        return token

    # -- what subclasses provide ----------------------------------------------------------------------

    def _acquire(self, discard: str | None) -> Mapping[str, Any] | None:
        """Blocking: one token from MSAL. ``discard`` is the held token, which must not come back."""
        raise NotImplementedError

    def _no_token_message(self) -> str:
        return f"no access token available ({self.kind})"

    def _refusal_message(self, error: str, description: str) -> str:
        return f"the identity provider refused the token request ({self.kind}): {error}: {description}"

    def _secrets(self) -> tuple[str, ...]:
        held = self._held
        return (held.token,) if held is not None else ()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, token=<redacted>)"


class DelegatedTokenProvider(MsalTokenProvider):
    """A signed-in user's token from the persisted cache; never prompts (run ``bulk-assign login`` first)."""

    kind = "delegated"

    def __init__(
        self,
        *,
        client_id: str,
        authority: str,
        scope: str,
        store: CacheStore,
        username: str | None = None,
        instance_discovery: bool = True,
        ca_bundle: Path | None = None,
        login_hint: str = "bulk-assign login",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
    ) -> None:
        super().__init__(client_id=client_id, authority=authority, scope=scope, instance_discovery=instance_discovery,
                         ca_bundle=ca_bundle, clock=clock, sleep=sleep, retry_delays=retry_delays)
        self.store = store
        self.username = username
        self._login_hint = login_hint
        self._cache: msal.SerializableTokenCache | None = None
        self._app: Any = None

    def _acquire(self, discard: str | None) -> Mapping[str, Any] | None:
        if self._app is None:
            self._cache = self.store.load()
            self._app = msal.PublicClientApplication(self.client_id, token_cache=self._cache, **self._app_options())
        accounts = self._app.get_accounts(username=self.username)
        if not accounts:
            raise AuthenticationError(self._no_token_message())
        if len(accounts) > 1:
            names = ", ".join(sorted(str(a.get("username")) for a in accounts))
            raise AuthenticationError(
                f"the token cache {self.store.path} holds several accounts ({names}); "
                f"run `bulk-assign logout`, then `{self._login_hint}` with the one to use"
            )
        # force_refresh on every renewal: our margin decided it is time, MSAL's 5-minute rule must not veto
        result = self._app.acquire_token_silent_with_error([self.scope], accounts[0], force_refresh=discard is not None)
        if self._cache is not None:
            try:
                self.store.save(self._cache)  # a renewal rotates the refresh token: keep the new one
            except OSError as exc:  # not a sign-in problem: the token in hand is good, say so and go on
                log.warning("could not save the token cache %s (%s); continuing", self.store.path, exc.strerror or exc)
        return result  # type: ignore[no-any-return]

    def _no_token_message(self) -> str:
        return (
            f"no signed-in account usable in the token cache {self.store.path}; "
            f"run `{self._login_hint}` (an unattended run never prompts)"
        )

    def _refusal_message(self, error: str, description: str) -> str:
        action = (
            "the sign-in expired or was revoked"
            if error in NEEDS_SIGN_IN
            else "the identity provider refused to renew the token"
        )
        return f"{action} ({error}: {description}); run `{self._login_hint}` to sign in again"

    def __repr__(self) -> str:
        return (
            f"DelegatedTokenProvider(client_id={self.client_id!r}, authority={self.authority!r}, "
            f"cache={str(self.store.path)!r}, token=<redacted>)"
        )


class AppOnlyTokenProvider(MsalTokenProvider):
    """The app's own token (client secret or certificate); tokens stay in memory, nothing is persisted."""

    def __init__(
        self,
        *,
        client_id: str,
        authority: str,
        scope: str,
        credential: str | dict[str, str],
        kind: str,
        instance_discovery: bool = True,
        ca_bundle: Path | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0),
    ) -> None:
        super().__init__(client_id=client_id, authority=authority, scope=scope, instance_discovery=instance_discovery,
                         ca_bundle=ca_bundle, clock=clock, sleep=sleep, retry_delays=retry_delays)
        self.kind = kind
        self._credential = credential
        self._app: Any = None

    def _acquire(self, discard: str | None) -> Mapping[str, Any] | None:
        if self._app is None:
            self._app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._credential,
                token_cache=msal.SerializableTokenCache(),
                **self._app_options(),
            )
        if discard is not None:  # acquire_token_for_client serves from its cache: make it ask again
            cache = self._app.token_cache
            for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                if entry.get("secret") == discard:
                    cache.remove_at(entry)
        return self._app.acquire_token_for_client([self.scope])  # type: ignore[no-any-return]

    def _secrets(self) -> tuple[str, ...]:
        credential = self._credential
        extra = (credential,) if isinstance(credential, str) else (credential.get("private_key", ""),)
        return super()._secrets() + extra

    def _refusal_message(self, error: str, description: str) -> str:
        return (
            f"the identity provider refused the app-only token request ({self.kind}, client id "
            f"{self.client_id}): {error}: {description}"
        )

    def __repr__(self) -> str:
        return (
            f"AppOnlyTokenProvider(kind={self.kind!r}, client_id={self.client_id!r}, "
            f"authority={self.authority!r}, credential=<redacted>, token=<redacted>)"
        )


__all__ = ["RENEW_MARGIN", "AppOnlyTokenProvider", "DelegatedTokenProvider", "MsalTokenProvider"]
