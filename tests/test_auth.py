"""Unit tests for bulk_assign.auth that need no network: renewal logic on a fake clock, clouds, the token
cache file, option precedence, credentials, hints. Real MSAL against a fake Entra: test_auth_msal.py."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msal
import pytest
from fake_entra import make_certificate_pem, make_jwt, sha1_thumbprint_of

from bulk_assign.auth import StaticTokenProvider
from bulk_assign.auth.cache import CacheStore, write_private_file
from bulk_assign.auth.clouds import CLOUDS, get_cloud
from bulk_assign.auth.credentials import load_certificate
from bulk_assign.auth.options import (
    AuthOptions,
    build_token_provider,
    graph_url_for,
    jwt_expiry,
    permission_hint,
)
from bulk_assign.auth.providers import AppOnlyTokenProvider, DelegatedTokenProvider, MsalTokenProvider
from bulk_assign.errors import AuthenticationError, UsageError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted(MsalTokenProvider):
    """Our renewal logic over a scripted ``_acquire`` (what MSAL would return), counted per call."""

    kind = "scripted"

    def __init__(self, lifetime: float = 3600, *, answers: list[Any] | None = None, delay: float = 0.0, **kw: Any):
        super().__init__(client_id="scripted-client", authority="https://login.invalid/tenant", scope="scope", **kw)
        self.lifetime = lifetime
        self.answers = answers or []
        self.delay = delay
        self.calls: list[str | None] = []
        self.gate: threading.Event | None = None

    def _acquire(self, discard: str | None) -> Mapping[str, Any] | None:
        self.calls.append(discard)
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer  # type: ignore[no-any-return]
        return {"access_token": f"token-{len(self.calls)}", "expires_in": self.lifetime}


# -- renewal ---------------------------------------------------------------------------------------------


async def test_long_lived_token_is_renewed_five_minutes_early_and_not_before() -> None:
    clock = FakeClock()
    p = Scripted(3600, clock=clock)
    first = await p.get_token()
    clock.now += 3600 - 300 - 1
    assert await p.get_token() == first
    assert len(p.calls) == 1
    clock.now += 2
    assert await p.get_token() != first
    assert p.calls == [None, first]  # the renewal names the token it replaces


async def test_short_lived_token_renews_at_half_its_lifetime_not_on_every_call() -> None:
    clock = FakeClock()
    p = Scripted(4, clock=clock)
    for _ in range(200):  # 20 "seconds" of calls every 0.1 s
        await p.get_token()
        clock.now += 0.1
    assert 9 <= len(p.calls) <= 11  # one renewal per 2 s, never one per call


async def test_concurrent_first_calls_share_one_acquisition() -> None:
    p = Scripted(3600, delay=0.05)
    tokens = await asyncio.gather(*(p.get_token() for _ in range(100)))
    assert set(tokens) == {"token-1"} and len(p.calls) == 1


async def test_invalidate_by_value_with_twenty_waiters_causes_one_renewal() -> None:
    p = Scripted(3600, delay=0.05)
    stale = await p.get_token()

    async def worker() -> str:
        p.invalidate(stale)
        return await p.get_token()

    tokens = await asyncio.gather(*(worker() for _ in range(20)))
    assert set(tokens) == {"token-2"} and len(p.calls) == 2
    p.invalidate(stale)  # a late report about the old value changes nothing
    assert await p.get_token() == "token-2" and len(p.calls) == 2


async def test_held_token_is_served_while_a_renewal_is_in_progress() -> None:
    clock = FakeClock()
    p = Scripted(4, clock=clock)
    first = await p.get_token()
    clock.now += 2.5  # past the renew point (2 s), still well valid (until 3.6 s)
    p.gate = threading.Event()
    renewal = asyncio.create_task(p.get_token())
    while not p._lock.locked():
        await asyncio.sleep(0.001)
    assert await asyncio.wait_for(p.get_token(), 1) == first  # not stuck behind the renewal
    p.gate.set()
    assert await renewal == "token-2"


async def test_a_failed_renewal_is_shared_by_its_waiters_not_retried_by_each() -> None:
    refused = {"error": "invalid_grant", "error_description": "AADSTS50173: revoked\r\nTrace ID: x"}
    p = Scripted(3600, delay=0.05)
    stale = await p.get_token()
    p.answers = [refused] * 30

    async def worker() -> BaseException | str:
        p.invalidate(stale)
        try:
            return await p.get_token()
        except AuthenticationError as exc:
            return exc

    outcomes = await asyncio.gather(*(worker() for _ in range(20)))
    assert all(isinstance(o, AuthenticationError) for o in outcomes)
    assert len(p.calls) == 2  # the first token, and one refused renewal
    assert "invalid_grant" in str(outcomes[0]) and "Trace ID" not in str(outcomes[0])


async def test_network_trouble_is_retried_with_backoff_then_reported() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    p = Scripted(answers=[ConnectionError("refused"), OSError("reset")], sleep=sleep)
    assert await p.get_token() == "token-3"
    assert slept == [1.0, 2.0]

    q = Scripted(answers=[ConnectionError("refused")] * 4, sleep=sleep)
    with pytest.raises(AuthenticationError, match="unreachable"):
        await q.get_token()
    assert len(q.calls) == 4


async def test_network_trouble_near_expiry_keeps_the_valid_token_and_backs_off() -> None:
    clock = FakeClock()
    p = Scripted(3600, clock=clock)
    first = await p.get_token()
    clock.now += 3400  # inside the margin, 200 s left
    p.answers = [ConnectionError("down")]
    assert await p.get_token() == first
    assert await p.get_token() == first  # backing off: no second attempt right away
    assert len(p.calls) == 2
    clock.now += 60
    assert await p.get_token() == "token-3"


async def test_refusal_and_no_account_messages_are_clear_and_scrubbed() -> None:
    p = Scripted(answers=[None])
    with pytest.raises(AuthenticationError, match="no access token"):
        await p.get_token()
    q = Scripted(3600)
    held = await q.get_token()
    q.invalidate(held)
    q.answers = [{"error": "invalid_client", "error_description": f"bad {held}"}]
    with pytest.raises(AuthenticationError) as info:
        await q.get_token()
    assert held not in str(info.value) and "<redacted>" in str(info.value)


async def test_token_fetch_runs_off_the_event_loop() -> None:
    p = Scripted(3600, delay=0.3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await p.get_token()
    task.cancel()
    assert ticks >= 10


def test_reprs_never_show_credentials(tmp_path: Path) -> None:
    secret = "s3cr3t-value-123"
    app = AppOnlyTokenProvider(
        client_id="c", authority="https://x/t", scope="s", credential=secret, kind="client-secret"
    )
    assert secret not in repr(app) and "<redacted>" in repr(app)
    static = StaticTokenProvider("eyJ.abc.def")
    assert "eyJ" not in repr(static)


# -- clouds & URLs --------------------------------------------------------------------------------------


def test_clouds_table() -> None:
    assert set(CLOUDS) == {"global", "usgov", "usgov-dod", "china"}
    g = get_cloud("global")
    assert g.graph_url == "https://graph.microsoft.com/beta"
    assert g.app_scope == "https://graph.microsoft.com/.default"
    assert g.delegated_scope == "https://graph.microsoft.com/DeviceManagementServiceConfig.ReadWrite.All"
    assert g.authority_for("contoso") == "https://login.microsoftonline.com/contoso"
    assert get_cloud("usgov").app_scope == "https://graph.microsoft.us/.default"
    assert get_cloud("usgov").authority_host == "https://login.microsoftonline.us"
    assert get_cloud("usgov-dod").graph_url == "https://dod-graph.microsoft.us/beta"
    assert get_cloud("usgov-dod").authority_host == "https://login.microsoftonline.us"
    assert get_cloud("china").delegated_scope.startswith("https://microsoftgraph.chinacloudapi.cn/")
    assert get_cloud("china").authority_host == "https://login.chinacloudapi.cn"
    with pytest.raises(UsageError, match="usgov"):
        get_cloud("mars")


def test_graph_url_follows_the_cloud_unless_given_and_scopes_never_follow_it(tmp_path: Path) -> None:
    assert graph_url_for(AuthOptions(cloud="usgov"), None) == "https://graph.microsoft.us/beta"
    assert graph_url_for(AuthOptions(), "http://127.0.0.1:8080/beta/") == "http://127.0.0.1:8080/beta"
    with pytest.raises(UsageError):
        graph_url_for(AuthOptions(), "http://graph.example.com/beta")
    opts = AuthOptions(auth="client-secret", tenant_id="t", client_id="c", cloud="usgov", token_cache=tmp_path / "c")
    provider = build_token_provider(opts, environ={"BULK_ASSIGN_CLIENT_SECRET": "x"}, warn=print)
    assert isinstance(provider, AppOnlyTokenProvider)
    assert provider.scope == "https://graph.microsoft.us/.default"  # whatever --graph-url says
    assert provider.authority == "https://login.microsoftonline.us/t"


def test_permission_hint() -> None:
    hint = permission_hint(403, "Forbidden")
    assert hint is not None and "DeviceManagementServiceConfig.ReadWrite.All" in hint and "consent" in hint
    assert permission_hint(404, None) is None and permission_hint(401, "InvalidAuthenticationToken") is None


# -- token cache file -----------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_private_file_is_0600_from_creation_and_replaced_atomically(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        target = tmp_path / "new-dir" / "cache.json"
        write_private_file(target, b"one")
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
        write_private_file(target, b"two")
        assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o600
        assert [p.name for p in target.parent.iterdir()] == ["cache.json"]  # no temp files left
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_store_uses_the_private_file_on_linux_and_tightens_a_loose_one(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "c.json", platform="linux")
    assert not store.encrypted and "mode 0600" in store.description and str(tmp_path) in store.description
    cache = store.load()
    assert not store.save(cache)  # unchanged: nothing written
    cache.add(
        {
            "client_id": "c",
            "scope": ["s"],
            "token_endpoint": "https://login.example/t/oauth2/v2.0/token",
            "response": {"access_token": "at", "expires_in": 3600, "token_type": "Bearer"},
        }
    )
    assert store.save(cache) and stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o600
    (tmp_path / "c.json").chmod(0o644)
    assert store.load().serialize()
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o600
    assert store.delete() and not (tmp_path / "c.json").exists()


def test_unreadable_cache_is_an_authentication_error(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{not json")
    (tmp_path / "c.json").chmod(0o600)
    with pytest.raises(AuthenticationError, match="logout"):
        CacheStore(tmp_path / "c.json", platform="linux").load()


# -- precedence ----------------------------------------------------------------------------------------


def _signed_in_cache(path: Path) -> None:
    """A cache as `login` leaves it (built through MSAL's own add(), no network)."""
    store = CacheStore(path, platform="linux")
    cache = store.load()
    import base64
    import json

    def b64(d: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    cache.add(
        {
            "client_id": "cid",
            "scope": ["https://graph.microsoft.com/DeviceManagementServiceConfig.ReadWrite.All"],
            "token_endpoint": "https://login.microsoftonline.com/tid/oauth2/v2.0/token",
            "response": {
                "access_token": "at-secret",
                "expires_in": 3600,
                "token_type": "Bearer",
                "refresh_token": "rt-secret",
                "client_info": b64({"uid": "u", "utid": "tid"}),
                "id_token": make_jwt(
                    {
                        "tid": "tid",
                        "oid": "u",
                        "preferred_username": "a@b.c",
                        "aud": "cid",
                        "iss": "x",
                        "exp": int(time.time()) + 3600,
                    }
                ),
            },
        }
    )
    store.save(cache)
    store.save_settings({"tenant_id": "tid", "client_id": "cid", "cloud": "global"})


def test_env_token_wins_over_everything_and_warns_if_it_expires_mid_run(tmp_path: Path) -> None:
    _signed_in_cache(tmp_path / "c.json")
    warnings: list[str] = []
    token = make_jwt({"exp": 1_000_000 + 600})
    provider = build_token_provider(
        AuthOptions(auth="delegated", token_cache=tmp_path / "c.json"),
        environ={"BULK_ASSIGN_ACCESS_TOKEN": token},
        run_seconds_estimate=3600,
        warn=warnings.append,
        wall_clock=lambda: 1_000_000.0,
    )
    assert isinstance(provider, StaticTokenProvider)
    assert any("--auth delegated is ignored" in w for w in warnings)
    assert any("before the run is expected to finish" in w for w in warnings)
    assert all(token not in w for w in warnings)

    quiet: list[str] = []
    build_token_provider(
        AuthOptions(),
        environ={"BULK_ASSIGN_ACCESS_TOKEN": token},
        run_seconds_estimate=60,
        warn=quiet.append,
        wall_clock=lambda: 1_000_000.0,
    )
    build_token_provider(
        AuthOptions(), environ={"BULK_ASSIGN_ACCESS_TOKEN": "opaque"}, run_seconds_estimate=1e9, warn=quiet.append
    )
    assert quiet == []
    expired: list[str] = []
    build_token_provider(
        AuthOptions(), environ={"BULK_ASSIGN_ACCESS_TOKEN": token}, warn=expired.append, wall_clock=lambda: 2_000_000.0
    )
    assert expired and "expired" in expired[0]
    assert jwt_expiry(token) == 1_000_600 and jwt_expiry("not.a.jwt") is None


def test_cached_account_is_the_default_and_flags_come_from_the_last_login(tmp_path: Path) -> None:
    _signed_in_cache(tmp_path / "c.json")
    provider = build_token_provider(AuthOptions(token_cache=tmp_path / "c.json"), environ={}, warn=print)
    assert isinstance(provider, DelegatedTokenProvider)
    assert provider.client_id == "cid" and provider.authority == "https://login.microsoftonline.com/tid"
    assert provider.scope.endswith("/DeviceManagementServiceConfig.ReadWrite.All")
    with pytest.raises(UsageError, match="--cloud global"):
        build_token_provider(AuthOptions(token_cache=tmp_path / "c.json", cloud="usgov"), environ={}, warn=print)


def test_explicit_auth_beats_the_cached_account(tmp_path: Path) -> None:
    _signed_in_cache(tmp_path / "c.json")
    provider = build_token_provider(
        AuthOptions(auth="client-secret", tenant_id="t", client_id="app", token_cache=tmp_path / "c.json"),
        environ={"BULK_ASSIGN_CLIENT_SECRET": "x"},
        warn=print,
    )
    assert isinstance(provider, AppOnlyTokenProvider) and provider.kind == "client-secret"


def test_nothing_usable_says_how_to_sign_in(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match="bulk-assign login --tenant-id"):
        build_token_provider(AuthOptions(token_cache=tmp_path / "none.json"), environ={}, warn=print)
    with pytest.raises(AuthenticationError, match="run `bulk-assign login --tenant-id t --client-id c"):
        build_token_provider(
            AuthOptions(auth="delegated", tenant_id="t", client_id="c", token_cache=tmp_path / "none.json"),
            environ={},
            warn=print,
        )


def test_missing_ids_and_files_are_usage_errors(tmp_path: Path) -> None:
    env = {"BULK_ASSIGN_CLIENT_SECRET": "x"}
    cache = tmp_path / "c.json"
    with pytest.raises(UsageError, match="--client-id"):
        build_token_provider(
            AuthOptions(auth="client-secret", tenant_id="t", token_cache=cache), environ=env, warn=print
        )
    with pytest.raises(UsageError, match="--tenant-id"):
        build_token_provider(
            AuthOptions(auth="client-secret", client_id="c", token_cache=cache), environ=env, warn=print
        )
    with pytest.raises(UsageError, match="--certificate"):
        build_token_provider(
            AuthOptions(auth="certificate", tenant_id="t", client_id="c", token_cache=cache), environ={}, warn=print
        )
    with pytest.raises(UsageError, match="https"):
        build_token_provider(
            AuthOptions(auth="client-secret", client_id="c", authority="http://idp.local/t", token_cache=cache),
            environ=env,
            warn=print,
        )
    with pytest.raises(AuthenticationError, match="BULK_ASSIGN_CLIENT_SECRET"):
        build_token_provider(
            AuthOptions(auth="client-secret", tenant_id="t", client_id="c", token_cache=cache), environ={}, warn=print
        )


def test_custom_authority_turns_instance_discovery_off(tmp_path: Path) -> None:
    provider = build_token_provider(
        AuthOptions(
            auth="client-secret",
            tenant_id="t",
            client_id="c",
            authority="https://idp.local:8443",
            token_cache=tmp_path / "c",
        ),
        environ={"BULK_ASSIGN_CLIENT_SECRET": "x"},
        warn=print,
    )
    assert isinstance(provider, AppOnlyTokenProvider)
    assert provider.authority == "https://idp.local:8443/t" and provider._instance_discovery is False


# -- certificates --------------------------------------------------------------------------------------


def test_certificate_thumbprint_password_and_expiry(tmp_path: Path) -> None:
    cert_pem = make_certificate_pem(tmp_path / "app.pem")
    cred = load_certificate(tmp_path / "app.pem", {})
    assert cred.thumbprint == sha1_thumbprint_of(cert_pem).upper()
    assert "PRIVATE KEY" in cred.for_msal()["private_key"] and "PRIVATE" not in repr(cred)

    make_certificate_pem(tmp_path / "locked.pem", password=b"pw")
    with pytest.raises(UsageError, match="BULK_ASSIGN_CERTIFICATE_PASSWORD"):
        load_certificate(tmp_path / "locked.pem", {})
    assert load_certificate(tmp_path / "locked.pem", {"BULK_ASSIGN_CERTIFICATE_PASSWORD": "pw"}).thumbprint

    make_certificate_pem(tmp_path / "old.pem", days=-1)
    with pytest.raises(AuthenticationError, match="expired"):
        load_certificate(tmp_path / "old.pem", {})
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(UsageError, match="private key"):
        load_certificate(tmp_path / "junk.pem", {})
    with pytest.raises(UsageError, match="cannot read"):
        load_certificate(tmp_path / "missing.pem", {})


def test_msal_is_importable_with_the_api_we_use() -> None:
    for name in ("PublicClientApplication", "ConfidentialClientApplication", "SerializableTokenCache"):
        assert hasattr(msal, name)


def test_auth_options_decorator_and_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import click
    from click.testing import CliRunner

    from bulk_assign.auth.cli import auth_options, auth_options_from

    seen: list[AuthOptions] = []
    rest: list[dict[str, Any]] = []

    @click.command()
    @click.option("--other")
    @auth_options
    def cmd(**kwargs: Any) -> None:
        seen.append(auth_options_from(kwargs, ca_bundle=tmp_path / "ca.pem"))
        rest.append(kwargs)

    monkeypatch.setenv("BULK_ASSIGN_TENANT_ID", "env-tenant")
    result = CliRunner().invoke(
        cmd, ["--auth", "client-secret", "--client-id", "c", "--cloud", "usgov", "--other", "x"]
    )
    assert result.exit_code == 0, result.output
    assert seen[0] == AuthOptions(
        auth="client-secret", tenant_id="env-tenant", client_id="c", cloud="usgov", ca_bundle=tmp_path / "ca.pem"
    )
    assert rest[0] == {"other": "x"}
    bad = CliRunner().invoke(cmd, ["--cloud", "mars"])
    assert bad.exit_code == 2
