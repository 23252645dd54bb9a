"""Real MSAL against a fake Entra over HTTPS (tests/fake_entra.py): login, silent renewal across
processes, short-lived tokens, invalidation, revocation, app-only flows, the CLI commands, and a grep of
every output for the secrets involved."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from fake_entra import FakeEntra, FakeUser, jwt_claims, make_certificate_pem, sha1_thumbprint_of

from bulk_assign.auth.cli import login_command, logout_command, whoami_command
from bulk_assign.auth.options import AuthOptions, build_token_provider
from bulk_assign.auth.providers import AppOnlyTokenProvider, DelegatedTokenProvider
from bulk_assign.auth.signin import login, whoami
from bulk_assign.errors import AuthenticationError

REPO = Path(__file__).resolve().parents[1]
CLIENT_ID = "0f9b7a52-2222-4c51-8f3a-00000000c11e"
APP_ID = "5a1d0c77-3333-4d7e-9a61-00000000a99e"
SECRET = "Zq8~fake-client-secret-do-not-print-42"


@pytest.fixture
def entra(ca: trustme.CA, tmp_path: Path) -> Iterator[FakeEntra]:
    with FakeEntra(ca=ca, workdir=tmp_path, client_secrets={APP_ID: SECRET}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BULK_ASSIGN_ACCESS_TOKEN",
        "BULK_ASSIGN_CLIENT_SECRET",
        "BULK_ASSIGN_TENANT_ID",
        "BULK_ASSIGN_CLIENT_ID",
        "BULK_ASSIGN_AUTH",
        "BULK_ASSIGN_TOKEN_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)


def opts_for(entra: FakeEntra, cache: Path, **extra: object) -> AuthOptions:
    return AuthOptions(
        tenant_id=entra.tenant,
        client_id=CLIENT_ID,
        authority=entra.authority,
        token_cache=cache,
        ca_bundle=entra.ca_path,
        **extra,  # type: ignore[arg-type]
    )


def signed_in(entra: FakeEntra, cache: Path) -> AuthOptions:
    opts = opts_for(entra, cache)
    login(opts, echo=lambda line: None)
    return opts


def delegated(entra: FakeEntra, cache: Path) -> DelegatedTokenProvider:
    provider = build_token_provider(AuthOptions(token_cache=cache, ca_bundle=entra.ca_path), environ={}, warn=print)
    assert isinstance(provider, DelegatedTokenProvider)
    return provider


def test_device_code_login_writes_a_0600_cache_and_a_new_process_signs_in_silently(
    entra: FakeEntra, tmp_path: Path
) -> None:
    entra.pending_polls = 1  # one authorization_pending, then approval: MSAL really polls
    cache = tmp_path / "cfg" / "token-cache.json"
    lines: list[str] = []
    result = login(opts_for(entra, cache), echo=lines.append)
    assert result.username == "ops@contoso.example"
    assert "enter the code FAKE" in lines[0] and "mode 0600" in lines[-1]
    assert entra.hits["devicecode"] == 1 and entra.hits["token:device_code"] == 2
    assert (
        entra.scopes_requested[0].split()[0]
        == "https://graph.microsoft.com/DeviceManagementServiceConfig.ReadWrite.All"
    )
    if os.name == "posix":
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    token_hits = entra.token_hits

    snippet = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from bulk_assign.auth.options import AuthOptions, build_token_provider
        opts = AuthOptions(token_cache=Path({str(cache)!r}), ca_bundle=Path({str(entra.ca_path)!r}))
        provider = build_token_provider(opts, environ={{}}, warn=print)
        token = asyncio.run(provider.get_token())
        print(type(provider).__name__, len(token.split(".")))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["DelegatedTokenProvider", "3"]
    assert entra.hits["devicecode"] == 1 and entra.token_hits == token_hits, (
        entra.hits,
        done.stderr,
    )  # served from the cache: silent


async def test_short_lived_tokens_renew_once_per_half_life_not_per_call(entra: FakeEntra, tmp_path: Path) -> None:
    entra.expires_in = 4
    signed_in(entra, tmp_path / "c.json")
    provider = delegated(entra, tmp_path / "c.json")
    before = entra.hits["token:refresh_token"]
    calls = 0
    seen: set[str] = set()

    async def worker() -> None:
        nonlocal calls
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while loop.time() < end:
            seen.add(await provider.get_token())
            calls += 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(worker() for _ in range(30)))
    renewals = entra.hits["token:refresh_token"] - before
    assert calls > 3000
    assert 2 <= renewals <= 5, entra.hits  # ~ one per 2 s (half of 4 s), plus the first
    assert len(seen) == renewals
    for token in seen:
        assert jwt_claims(token)["aud"] == "https://graph.microsoft.com"


async def test_invalidate_with_twenty_waiters_refreshes_once(entra: FakeEntra, tmp_path: Path) -> None:
    signed_in(entra, tmp_path / "c.json")
    provider = delegated(entra, tmp_path / "c.json")
    stale = await provider.get_token()
    before = entra.token_hits

    async def worker() -> str:
        provider.invalidate(stale)
        return await provider.get_token()

    tokens = await asyncio.gather(*(worker() for _ in range(20)))
    assert len(set(tokens)) == 1 and tokens[0] != stale
    assert entra.token_hits - before == 1 and entra.hits["token:refresh_token"] >= 1


async def test_revoked_refresh_token_says_to_run_login(entra: FakeEntra, tmp_path: Path) -> None:
    signed_in(entra, tmp_path / "c.json")
    provider = delegated(entra, tmp_path / "c.json")
    stale = await provider.get_token()
    entra.revoke_refresh_tokens()
    provider.invalidate(stale)
    with pytest.raises(AuthenticationError) as info:
        await provider.get_token()
    message = str(info.value)
    assert "bulk-assign login" in message and f"--client-id {CLIENT_ID}" in message
    assert "invalid_grant" in message and info.value.exit_code == 3


async def test_no_account_in_cache_never_prompts(entra: FakeEntra, tmp_path: Path) -> None:
    opts = signed_in(entra, tmp_path / "c.json")
    provider = build_token_provider(
        AuthOptions(auth="delegated", token_cache=tmp_path / "c.json", ca_bundle=entra.ca_path), environ={}, warn=print
    )
    (tmp_path / "c.json").unlink()  # signed out behind the provider's back
    with pytest.raises(AuthenticationError, match="bulk-assign login"):
        await provider.get_token()
    assert entra.hits["devicecode"] == 1 and opts.client_id == CLIENT_ID


async def test_client_secret_flow_and_forced_renewal_after_401(entra: FakeEntra, tmp_path: Path) -> None:
    opts = AuthOptions(
        auth="client-secret",
        tenant_id=entra.tenant,
        client_id=APP_ID,
        authority=entra.authority,
        ca_bundle=entra.ca_path,
        token_cache=tmp_path / "c.json",
    )
    provider = build_token_provider(opts, environ={"BULK_ASSIGN_CLIENT_SECRET": SECRET}, warn=print)
    assert isinstance(provider, AppOnlyTokenProvider)
    first = await provider.get_token()
    assert jwt_claims(first)["appid"] == APP_ID and await provider.get_token() == first
    assert entra.hits["token:client_credentials"] == 1
    provider.invalidate(first)  # a 401: MSAL's cache would hand the same token back unless we drop it
    second = await provider.get_token()
    assert second != first and entra.hits["token:client_credentials"] == 2
    assert not (tmp_path / "c.json").exists()  # app-only tokens are never persisted

    wrong = build_token_provider(opts, environ={"BULK_ASSIGN_CLIENT_SECRET": "wrong-secret-xyz"}, warn=print)
    with pytest.raises(AuthenticationError, match="invalid_client") as info:
        await wrong.get_token()
    assert "wrong-secret-xyz" not in str(info.value)


async def test_certificate_flow_sends_the_sha1_thumbprint(entra: FakeEntra, tmp_path: Path) -> None:
    cert_pem = make_certificate_pem(tmp_path / "app.pem")
    entra.client_thumbprints[APP_ID] = sha1_thumbprint_of(cert_pem)
    opts = AuthOptions(
        auth="certificate",
        certificate=tmp_path / "app.pem",
        tenant_id=entra.tenant,
        client_id=APP_ID,
        authority=entra.authority,
        ca_bundle=entra.ca_path,
    )
    provider = build_token_provider(opts, environ={}, warn=print)
    token = await provider.get_token()
    assert jwt_claims(token)["appid"] == APP_ID
    assert entra.hits["token:client_credentials"] == 1 and entra.assertion_headers[0]["alg"] == "RS256"

    make_certificate_pem(tmp_path / "other.pem")  # a certificate the app registration doesn't know
    other = build_token_provider(
        AuthOptions(**{**opts.__dict__, "certificate": tmp_path / "other.pem"}), environ={}, warn=print
    )
    with pytest.raises(AuthenticationError, match="AADSTS700027"):
        await other.get_token()


def test_ca_bundle_beats_requests_ca_bundle_from_the_environment(
    entra: FakeEntra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # does not know our CA
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    signed_in(entra, tmp_path / "c.json")
    with pytest.raises(AuthenticationError, match=r"SSL|certificate"):
        login(AuthOptions(**{**opts_for(entra, tmp_path / "d.json").__dict__, "ca_bundle": None}), echo=print)


def test_cli_login_whoami_logout(entra: FakeEntra, tmp_path: Path) -> None:
    runner = CliRunner()
    cache = tmp_path / "c.json"
    common = ["--token-cache", str(cache)]
    result = runner.invoke(
        login_command,
        [
            "--tenant-id",
            entra.tenant,
            "--client-id",
            CLIENT_ID,
            "--authority",
            entra.authority,
            "--ca-bundle",
            str(entra.ca_path),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "enter the code" in result.stderr and "Signed in as ops@contoso.example" in result.stderr

    who = runner.invoke(whoami_command, common)
    assert who.exit_code == 0, who.output
    assert "ops@contoso.example" in who.stdout and entra.tenant in who.stdout
    assert "access token expires: 20" in who.stdout and CLIENT_ID in who.stdout
    for secret in entra.secrets():
        assert secret not in who.output

    out = runner.invoke(logout_command, common)
    assert out.exit_code == 0 and "Signed out ops@contoso.example" in out.stdout and not cache.exists()
    again = runner.invoke(whoami_command, common)
    assert again.exit_code == 3 and again.stderr.startswith("bulk-assign: nobody is signed in")
    assert "Traceback" not in again.output


def test_cli_errors_are_one_line_with_exit_codes(entra: FakeEntra, tmp_path: Path) -> None:
    runner = CliRunner()
    no_client = runner.invoke(login_command, ["--tenant-id", "t", "--token-cache", str(tmp_path / "c")])
    assert no_client.exit_code == 2 and "--client-id is required" in no_client.stderr
    unreachable = runner.invoke(
        login_command,
        [
            "--tenant-id",
            "t",
            "--client-id",
            "c",
            "--authority",
            "https://127.0.0.1:9/t",
            "--token-cache",
            str(tmp_path / "c"),
        ],
    )
    assert unreachable.exit_code == 3 and unreachable.stderr.count("\n") == 1
    assert "Traceback" not in unreachable.output


async def test_no_secret_ever_reaches_output(
    entra: FakeEntra, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    entra.expires_in = 4
    cache = tmp_path / "c.json"
    texts: list[str] = []
    runner = CliRunner()
    result = runner.invoke(
        login_command,
        [
            "--tenant-id",
            entra.tenant,
            "--client-id",
            CLIENT_ID,
            "--authority",
            entra.authority,
            "--ca-bundle",
            str(entra.ca_path),
            "--token-cache",
            str(cache),
        ],
    )
    texts += [result.output, result.stderr]
    provider = delegated(entra, cache)
    texts.append(repr(provider))
    token = await provider.get_token()
    provider.invalidate(token)
    await provider.get_token()
    await asyncio.sleep(2.2)
    await provider.get_token()  # a margin renewal
    for identity in whoami(AuthOptions(token_cache=cache)):
        texts += identity.lines()
    texts.append(runner.invoke(whoami_command, ["--token-cache", str(cache)]).output)
    entra.revoke_refresh_tokens()
    provider.invalidate(await provider.get_token())
    with pytest.raises(AuthenticationError) as refused:
        await provider.get_token()
    texts.append(str(refused.value))

    app = build_token_provider(
        AuthOptions(
            auth="client-secret",
            tenant_id=entra.tenant,
            client_id=APP_ID,
            authority=entra.authority,
            ca_bundle=entra.ca_path,
        ),
        environ={"BULK_ASSIGN_CLIENT_SECRET": SECRET},
        warn=texts.append,
    )
    texts.append(repr(app))
    app.invalidate(await app.get_token())
    await app.get_token()
    wrong = build_token_provider(
        AuthOptions(
            auth="client-secret",
            tenant_id=entra.tenant,
            client_id=APP_ID,
            authority=entra.authority,
            ca_bundle=entra.ca_path,
        ),
        environ={"BULK_ASSIGN_CLIENT_SECRET": SECRET + "x"},
        warn=texts.append,
    )
    with pytest.raises(AuthenticationError) as bad:
        await wrong.get_token()
    texts += [str(bad.value), repr(wrong)]

    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    everything = "\n".join(texts)
    secrets = [*entra.secrets(), SECRET]
    assert len(entra.issued_access_tokens) >= 6 and len(entra.issued_refresh_tokens) >= 3
    leaks = [s[:12] + "..." for s in secrets if s in everything]
    assert leaks == []
    assert json.loads(cache.read_text())  # the cache itself does hold them, as it must


def test_browser_login_uses_the_interactive_flow(entra: FakeEntra, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    snippet = textwrap.dedent(
        f"""
        from pathlib import Path
        from bulk_assign.auth.options import AuthOptions
        from bulk_assign.auth.signin import login
        opts = AuthOptions(tenant_id={entra.tenant!r}, client_id={CLIENT_ID!r}, authority={entra.authority!r},
                           token_cache=Path({str(cache)!r}), ca_bundle=Path({str(entra.ca_path)!r}))
        print(login(opts, browser=True, echo=lambda line: None, timeout=30).username)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    env["BROWSER"] = f"{sys.executable} {REPO / 'tests' / 'fake_entra.py'} %s &"  # & : don't wait for it
    env["FAKE_ENTRA_CA"] = str(entra.ca_path)
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=env, cwd=REPO, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ops@contoso.example"
    assert entra.hits["authorize"] == 1 and entra.hits["token:authorization_code"] == 1
    assert entra.hits["devicecode"] == 0 and cache.exists()


async def test_logging_in_as_someone_else_replaces_the_cached_account(entra: FakeEntra, tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    signed_in(entra, cache)
    signed_in(entra, cache)  # the same person again: still one account
    assert [i.username for i in whoami(AuthOptions(token_cache=cache))] == ["ops@contoso.example"]
    entra.user = FakeUser(oid="8d3c3a7e-1111-4b0e-9c1e-000000000002", username="night@contoso.example")
    signed_in(entra, cache)
    assert [i.username for i in whoami(AuthOptions(token_cache=cache))] == ["night@contoso.example"]
    token = await delegated(entra, cache).get_token()
    assert jwt_claims(token)["preferred_username"] == "night@contoso.example"


async def test_a_cache_that_cannot_be_saved_does_not_stop_the_run(
    entra: FakeEntra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    signed_in(entra, tmp_path / "c.json")
    provider = delegated(entra, tmp_path / "c.json")
    first = await provider.get_token()

    def full(cache: object) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(provider.store, "save", full)
    provider.invalidate(first)
    assert await provider.get_token() != first
    assert "could not save the token cache" in caplog.text
