"""The interactive side of delegated auth: ``login`` once, ``whoami`` to check, ``logout`` to forget.

``login`` is the only place a person is ever asked anything. It uses the device code flow by default
(works over SSH and on servers without a browser) and the interactive browser flow on request (for
tenants whose Conditional Access blocks device code). Afterwards the token cache holds a refresh token
that unattended runs renew silently for up to 90 days of inactivity.

``whoami`` and ``logout`` read the cache offline: no network, and never a token on screen.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msal

from ..errors import AuthenticationError
from .cache import CacheStore, cached_accounts
from .http import msal_http_client
from .options import AuthOptions, resolve

Echo = Callable[[str], None]


@dataclass(frozen=True)
class LoginResult:
    username: str
    tenant_id: str
    cache_description: str


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def login(opts: AuthOptions, *, browser: bool = False, echo: Echo, timeout: float | None = None) -> LoginResult:
    """Sign a user in (device code or browser) and persist the token cache; raises AuthenticationError."""
    res = resolve(opts, remembered=False)
    store = res.store
    cache = store.load()
    try:
        app: Any = msal.PublicClientApplication(
            res.client_id,
            authority=res.authority,
            token_cache=cache,
            http_client=msal_http_client(res.ca_bundle),
            instance_discovery=None if res.instance_discovery else False,
        )
        scopes = [res.cloud.delegated_scope]
        if browser:
            result = app.acquire_token_interactive(scopes, prompt="select_account", timeout=timeout)
        else:
            flow = app.initiate_device_flow(scopes=scopes)
            if "user_code" not in flow:
                raise AuthenticationError(
                    f"could not start the device code sign-in: {flow.get('error', 'unknown_error')}: "
                    f"{_first_line(flow.get('error_description'))} (if Conditional Access blocks device code, "
                    "use --browser)"
                )
            echo(str(flow["message"]))
            if timeout is not None:
                flow["expires_at"] = min(float(flow.get("expires_at", 0)), time.time() + timeout)
            result = app.acquire_token_by_device_flow(flow)
    except AuthenticationError:
        raise
    except Exception as exc:  # discovery failures, TLS, connection errors: one line, no traceback
        raise AuthenticationError(f"sign-in failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if "access_token" not in result:
        raise AuthenticationError(
            f"sign-in failed: {result.get('error', 'unknown_error')}: {_first_line(result.get('error_description'))}"
        )
    claims = result.get("id_token_claims") or {}
    username = str(claims.get("preferred_username") or claims.get("upn") or claims.get("oid") or "?")
    tenant = str(claims.get("tid") or res.tenant_id or "?")
    for account in app.get_accounts():  # one account per cache: unattended runs must never have to choose
        if account.get("username") != username or account.get("realm") not in (tenant, None):
            app.remove_account(account)
    store.save(cache)
    store.save_settings(
        {
            "tenant_id": res.tenant_id,
            "client_id": res.client_id,
            "authority": None if res.instance_discovery else res.authority,
            "cloud": res.cloud.name,
        }
    )
    echo(f"Signed in as {username} (tenant {tenant}). {store.description}")
    return LoginResult(username, tenant, store.description)


def logout(opts: AuthOptions, *, echo: Echo) -> int:
    """Forget every cached account (the cache file and remembered settings); returns how many there were."""
    store = CacheStore(opts.token_cache)
    accounts = cached_accounts(store.load())
    store.delete()
    if accounts:
        names = ", ".join(sorted(str(a.get("username")) for a in accounts))
        echo(f"Signed out {names}; removed {store.path}")
    else:
        echo(f"Nobody was signed in ({store.path})")
    return len(accounts)


@dataclass(frozen=True)
class Identity:
    """What ``whoami`` reports: who, where, and until when the cached access token is good."""

    username: str
    tenant_id: str
    client_id: str | None
    access_token_expires: dt.datetime | None
    has_refresh_token: bool
    cache_description: str

    def lines(self, now: dt.datetime | None = None) -> list[str]:
        now = now or dt.datetime.now(dt.UTC)
        out = [f"account:   {self.username}", f"tenant:    {self.tenant_id}"]
        if self.client_id:
            out.append(f"client id: {self.client_id}")
        if self.access_token_expires is None:
            out.append("access token: none cached")
        else:
            stamp = self.access_token_expires.strftime("%Y-%m-%dT%H:%M:%SZ")
            minutes = (self.access_token_expires - now).total_seconds() / 60
            state = f"in {minutes:.0f} min" if minutes >= 0 else "expired"
            out.append(f"access token expires: {stamp} ({state})")
        out.append(
            "refresh token: cached (runs renew access silently)"
            if self.has_refresh_token
            else "refresh token: none (run `bulk-assign login`)"
        )
        out.append(self.cache_description)
        return out


def whoami(opts: AuthOptions) -> list[Identity]:
    """Every account in the cache, with the expiry of its access token; AuthenticationError if none."""
    store = CacheStore(opts.token_cache)
    cache = store.load()
    data: dict[str, Any] = json.loads(cache.serialize())  # read raw: search() would drop expired tokens
    accounts = cached_accounts(cache)
    if not accounts:
        raise AuthenticationError(
            f"nobody is signed in ({store.path}); run `bulk-assign login --tenant-id <tenant> --client-id <app id>`"
        )
    identities = []
    for account in accounts:
        home = account.get("home_account_id")
        tokens = [t for t in data.get("AccessToken", {}).values() if t.get("home_account_id") == home]
        refresh = [t for t in data.get("RefreshToken", {}).values() if t.get("home_account_id") == home]
        expiry = max((int(t.get("expires_on", 0)) for t in tokens), default=None)
        client = next((str(t["client_id"]) for t in refresh + tokens if t.get("client_id")), None)
        identities.append(
            Identity(
                username=str(account.get("username") or "?"),
                tenant_id=str(account.get("realm") or "?"),
                client_id=client,
                access_token_expires=dt.datetime.fromtimestamp(expiry, dt.UTC) if expiry else None,
                has_refresh_token=bool(refresh),
                cache_description=store.description,
            )
        )
    return identities


__all__ = ["Identity", "LoginResult", "login", "logout", "whoami"]
