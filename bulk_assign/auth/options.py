"""From sign-in options to a ``TokenProvider``: which flow, which tenant and app, which cloud.

Precedence (first that applies wins):

1. ``BULK_ASSIGN_ACCESS_TOKEN``: a pre-acquired token, used as is (MSAL is not involved). If it is a
   JWT that expires before the run can finish at the configured rate, a warning says so up front.
2. ``--auth delegated|client-secret|certificate``.
3. A signed-in account in the token cache (``bulk-assign login`` was run): delegated.

Nothing usable is an ``AuthenticationError`` (exit 3) that says how to sign in; a flow missing its tenant
or client id is a ``UsageError`` (exit 2). Building a provider never touches the network: MSAL's
discovery happens on the first ``get_token``, in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ..config import check_graph_url
from ..errors import AuthenticationError, UsageError
from . import StaticTokenProvider, TokenProvider
from .clouds import GRAPH_PERMISSION, Cloud, get_cloud

if TYPE_CHECKING:  # msal, requests and cryptography load only when a sign-in needs them (~0.15 s per start)
    from .cache import CacheStore
    from .providers import Clock

log = logging.getLogger("bulk_assign.auth")
ACCESS_TOKEN_ENV = "BULK_ASSIGN_ACCESS_TOKEN"  # noqa: S105 - a variable name
TENANT_ENV = "BULK_ASSIGN_TENANT_ID"
CLIENT_ENV = "BULK_ASSIGN_CLIENT_ID"
AuthKind = Literal["delegated", "client-secret", "certificate"]
AUTH_KINDS: tuple[AuthKind, ...] = ("delegated", "client-secret", "certificate")


@dataclass(frozen=True)
class AuthOptions:
    """The sign-in options as the user gave them (flags and environment), not yet resolved."""

    auth: AuthKind | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    authority: str | None = None
    token_cache: Path | None = None
    certificate: Path | None = None
    cloud: str = "global"
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class Resolved:
    """Options completed from the remembered login settings and checked: ready for MSAL."""

    cloud: Cloud
    tenant_id: str | None
    client_id: str
    authority: str
    instance_discovery: bool
    store: CacheStore
    ca_bundle: Path | None

    def login_command(self) -> str:
        """The exact command that signs in again with these settings (quoted in error messages)."""
        parts = ["bulk-assign login"]
        if self.tenant_id:
            parts.append(f"--tenant-id {self.tenant_id}")
        parts.append(f"--client-id {self.client_id}")
        if not self.instance_discovery:
            parts.append(f"--authority {self.authority}")
        if self.cloud.name != "global":
            parts.append(f"--cloud {self.cloud.name}")
        from .cache import default_cache_path

        if self.store.path != default_cache_path():
            parts.append(f"--token-cache {self.store.path}")
        return " ".join(parts)


def _check_authority(url: str, tenant: str | None) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(
            f"--authority {url!r}: must be an https:// URL such as https://login.microsoftonline.us/<tenant>"
        )
    if parts.path.strip("/"):
        return url.strip().rstrip("/")
    if not tenant:
        raise UsageError(f"--authority {url!r} names no tenant; add it to the URL or pass --tenant-id")
    return f"{url.strip().rstrip('/')}/{tenant}"


def resolve(opts: AuthOptions, *, remembered: bool = True) -> Resolved:
    """Fill tenant/client/authority from the last login (delegated only) and check what each flow needs."""
    from .cache import CacheStore

    store = CacheStore(opts.token_cache)
    saved = store.load_settings() if remembered else {}
    cloud = get_cloud(opts.cloud)
    if saved.get("cloud") and saved["cloud"] != cloud.name and not opts.authority:
        raise UsageError(
            f"the cached sign-in is for cloud {saved['cloud']!r}; pass --cloud {saved['cloud']} "
            "(it sets the Graph URL and the sign-in host together)"
        )
    tenant = opts.tenant_id or saved.get("tenant_id")
    client = opts.client_id or saved.get("client_id")
    override = opts.authority or saved.get("authority")
    if not client:
        raise UsageError(f"--client-id is required (or set {CLIENT_ENV}): the app registration's client id")
    if override:
        authority, discovery = _check_authority(override, tenant), False
    elif tenant:
        authority, discovery = cloud.authority_for(tenant), True
    else:
        raise UsageError(f"--tenant-id is required (or set {TENANT_ENV}): the directory (tenant) id or domain")
    return Resolved(cloud, tenant, client, authority, discovery, store, opts.ca_bundle)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """A JWT's claims, unverified (Graph verifies; we only read what the token says); None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, unverified; None if the token is not a readable JWT."""
    exp = (jwt_claims(token) or {}).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def missing_permissions(token: str, needed: tuple[tuple[str, ...], ...]) -> list[str] | None:
    """Which of ``needed`` (each a set of alternatives) the token's ``scp`` (delegated) and ``roles`` (app-only)
    claims lack; None when the token does not say (not a JWT, or neither claim): the check is skipped."""
    claims = jwt_claims(token)
    if claims is None or ("scp" not in claims and "roles" not in claims):
        return None
    granted = set(str(claims.get("scp") or "").split())
    roles = claims.get("roles")
    granted |= {str(r) for r in roles} if isinstance(roles, list) else set()
    return [" or ".join(alternatives) for alternatives in needed if not granted & set(alternatives)]


def _check_static_token(token: str, run_seconds: float | None, warn: Callable[[str], None], now: float) -> None:
    exp = jwt_expiry(token)
    if exp is None:
        return
    when = dt.datetime.fromtimestamp(exp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if exp <= now:
        warn(f"{ACCESS_TOKEN_ENV} expired at {when}; Graph will reject it (it cannot be refreshed)")
    elif run_seconds is not None and exp < now + run_seconds:
        warn(
            f"{ACCESS_TOKEN_ENV} expires at {when} (in {(exp - now) / 60:.0f} min), before the run is expected to "
            f"finish (about {run_seconds / 60:.0f} min at the configured rate); it cannot be refreshed, so the run "
            "will stop with exit 3 when it expires: use `bulk-assign login` or --auth for long runs"
        )


def build_token_provider(
    opts: AuthOptions,
    *,
    environ: Mapping[str, str] = os.environ,
    run_seconds_estimate: float | None = None,
    warn: Callable[[str], None],
    clock: Clock = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> TokenProvider:
    """The provider the options ask for, by the precedence in the module docstring (no network I/O)."""
    token = environ.get(ACCESS_TOKEN_ENV, "").strip()
    if token:
        if opts.auth:
            warn(f"{ACCESS_TOKEN_ENV} is set, so --auth {opts.auth} is ignored")
        provider = StaticTokenProvider(token, source=ACCESS_TOKEN_ENV)  # refuses a token no header can hold
        _check_static_token(token, run_seconds_estimate, warn, wall_clock())
        return provider
    from .cache import CacheStore, cached_accounts
    from .providers import AppOnlyTokenProvider, DelegatedTokenProvider

    if opts.auth in ("client-secret", "certificate"):
        from .credentials import client_secret_from, load_certificate

        res = resolve(opts, remembered=False)
        if res.tenant_id in (None, "common", "organizations", "consumers") and res.instance_discovery:
            raise UsageError(f"--auth {opts.auth} needs --tenant-id: app-only tokens come from one tenant")
        if opts.auth == "client-secret":
            credential: str | dict[str, str] = client_secret_from(environ)
        else:
            if opts.certificate is None:
                raise UsageError("--auth certificate needs --certificate PATH.pem (private key and certificate)")
            credential = load_certificate(opts.certificate, environ).for_msal()
        return AppOnlyTokenProvider(
            client_id=res.client_id,
            authority=res.authority,
            scope=res.cloud.app_scope,
            credential=credential,
            kind=opts.auth,
            instance_discovery=res.instance_discovery,
            ca_bundle=res.ca_bundle,
            clock=clock,
        )
    store = CacheStore(opts.token_cache)
    accounts = cached_accounts(store.load())
    if opts.auth == "delegated" or accounts:
        res = resolve(opts)
        if not accounts:
            raise AuthenticationError(
                f"--auth delegated: nobody is signed in (no account in {res.store.path}); "
                f"run `{res.login_command()}` once, interactively"
            )
        log.info("delegated sign-in as %s; %s", accounts[0].get("username"), res.store.description)
        return DelegatedTokenProvider(
            client_id=res.client_id,
            authority=res.authority,
            scope=res.cloud.delegated_scope,
            store=res.store,
            instance_discovery=res.instance_discovery,
            ca_bundle=res.ca_bundle,
            login_hint=res.login_command(),
            clock=clock,
        )
    raise AuthenticationError(
        "no credentials: sign in once with `bulk-assign login --tenant-id <tenant> --client-id <app id>`, "
        f"or use --auth client-secret|certificate, or set {ACCESS_TOKEN_ENV}"
    )


def graph_url_for(opts: AuthOptions, explicit_graph_url: str | None) -> str:
    """``--graph-url`` if given (a proxy, the emulator), else the cloud's own Graph root. Scopes never follow it."""
    if explicit_graph_url:
        try:
            return check_graph_url(explicit_graph_url)
        except ValueError as exc:
            raise UsageError(f"--graph-url: {exc}") from None
    return get_cloud(opts.cloud).graph_url


def permission_hint(status: int, error_code: str | None) -> str | None:
    """What to tell the operator when Graph refuses for lack of permission (for reports and logs)."""
    if status != 403:
        return None
    return (
        f"the signed-in user or app lacks {GRAPH_PERMISSION} (delegated; application where supported), "
        f"or an Intune role that allows it{f' ({error_code})' if error_code else ''}: grant it and admin-consent"
    )


__all__ = [
    "ACCESS_TOKEN_ENV",
    "AUTH_KINDS",
    "AuthKind",
    "AuthOptions",
    "Resolved",
    "build_token_provider",
    "graph_url_for",
    "jwt_expiry",
    "permission_hint",
    "resolve",
]
