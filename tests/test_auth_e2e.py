"""End to end: the real engine against the local Graph emulator, with tokens from real MSAL talking to the
fake Entra (tests/fake_entra.py). Short token lifetimes during a run, a 401 mid-run, a revoked sign-in."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from fake_entra import FakeEntra

from bulk_assign.auth import TokenProvider
from bulk_assign.auth.options import AuthOptions, build_token_provider
from bulk_assign.auth.providers import DelegatedTokenProvider
from bulk_assign.auth.signin import login
from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner, assign_profiles
from bulk_assign.errors import AuthenticationError
from bulk_assign.models import AssignmentTarget

CLIENT_ID = "0f9b7a52-2222-4c51-8f3a-00000000c11e"
APP_ID = "5a1d0c77-3333-4d7e-9a61-00000000a99e"
SECRET = "Zq8~e2e-client-secret-never-printed-77"
GROUP = "group:" + "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
FAST = EmulatorConfig(app_rate=Rate(5000, 1.0), tenant_rate=Rate(5000, 1.0), read_rate=Rate(5000, 1.0))


@pytest.fixture
def entra(ca: trustme.CA, tmp_path: Path) -> Iterator[FakeEntra]:
    with FakeEntra(ca=ca, workdir=tmp_path, client_secrets={APP_ID: SECRET}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BULK_ASSIGN_ACCESS_TOKEN", "BULK_ASSIGN_CLIENT_SECRET", "BULK_ASSIGN_AUTH"):
        monkeypatch.delenv(name, raising=False)


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


async def delegated(entra: FakeEntra, cache: Path) -> DelegatedTokenProvider:
    opts = AuthOptions(
        tenant_id=entra.tenant,
        client_id=CLIENT_ID,
        authority=entra.authority,
        token_cache=cache,
        ca_bundle=entra.ca_path,
    )
    await asyncio.to_thread(login, opts, echo=lambda line: None)
    provider = build_token_provider(AuthOptions(token_cache=cache, ca_bundle=entra.ca_path), environ={}, warn=print)
    assert isinstance(provider, DelegatedTokenProvider)
    return provider


async def test_short_token_lifetime_during_a_run_of_hundreds_of_devices(
    entra: FakeEntra, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    entra.expires_in = 4
    provider = await delegated(entra, tmp_path / "cache.json")
    before = entra.hits["token:refresh_token"]
    devices = ids(400)
    async with Emulator(FAST) as emu:
        summary = await assign_profiles(
            devices,
            target=GROUP,
            graph_url=emu.base_url,
            token_provider=provider,
            concurrency=16,
            rate="80/1s",
            out_dir=tmp_path / "out",
        )
        unauthorized = emu.counters.responses_by_status.get(401, 0)
    renewals = entra.hits["token:refresh_token"] - before
    assert summary.counts.get("succeeded") == 400 and summary.failed == 0 and summary.remaining == 0
    assert summary.elapsed_seconds > 4  # the run outlived the first token
    assert 2 <= renewals <= 8, entra.hits  # ~one per 2 s: never one per request
    assert unauthorized <= 2  # only exp-rounding stragglers, each retried once and recovered

    outputs = [p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "run.log" for p in (tmp_path / "out").rglob("*"))
    captured = capsys.readouterr()
    everything = "\n".join([*outputs, captured.out, captured.err, caplog.text, repr(provider)])
    assert [s[:12] for s in entra.secrets() if s in everything] == []


@pytest.mark.parametrize("flow", ["delegated", "client-secret"])
async def test_401_mid_run_causes_one_refresh_and_the_run_recovers(entra: FakeEntra, tmp_path: Path, flow: str) -> None:
    provider: TokenProvider
    if flow == "delegated":
        provider = await delegated(entra, tmp_path / "cache.json")
        entra.short_exp_once = 2  # the next token dies in ~2 s though expires_in says an hour
        provider.invalidate(await provider.get_token())
        await provider.get_token()
    else:
        entra.short_exp_once = 2
        provider = build_token_provider(
            AuthOptions(
                auth="client-secret",
                tenant_id=entra.tenant,
                client_id=APP_ID,
                authority=entra.authority,
                ca_bundle=entra.ca_path,
            ),
            environ={"BULK_ASSIGN_CLIENT_SECRET": SECRET},
            warn=print,
        )
        await provider.get_token()
    hits_before = entra.token_hits
    async with Emulator(FAST) as emu:
        summary = await assign_profiles(
            ids(300),
            target=GROUP,
            graph_url=emu.base_url,
            token_provider=provider,
            concurrency=16,
            rate="100/1s",
        )
        unauthorized = emu.counters.responses_by_status.get(401, 0)
    assert unauthorized >= 1  # Graph did reject the token mid-run ...
    assert entra.token_hits - hits_before == 1  # ... several workers held it, one refresh served them all
    assert summary.counts.get("succeeded") == 300 and summary.failed == 0
    assert summary.retries >= unauthorized


async def test_revoked_sign_in_mid_run_stops_with_exit_3_and_keeps_the_rest(entra: FakeEntra, tmp_path: Path) -> None:
    entra.expires_in = 3
    provider = await delegated(entra, tmp_path / "cache.json")
    devices = ids(400)
    settings = Settings.build(
        target=AssignmentTarget.parse(GROUP), graph_url="http://127.0.0.1:1/beta", concurrency=8, rate="50/1s"
    )
    async with Emulator(FAST) as emu:
        settings = settings.model_copy(update={"graph_url": emu.base_url})
        asyncio.get_running_loop().call_later(0.8, entra.revoke_refresh_tokens)
        decided = 0
        async with BulkAssigner(settings, token_provider=provider) as engine:
            with pytest.raises(AuthenticationError) as info:
                async for _ in engine.run(devices):
                    decided += 1
        summary = engine.summary
    assert "bulk-assign login" in str(info.value) and info.value.exit_code == 3
    assert summary is not None and summary.exit_code == 3 and summary.stopped_reason == "authentication"
    assert summary.failed == 0  # nobody was marked failed for our missing token
    assert 0 < decided < 400 and summary.remaining == 400 - decided
