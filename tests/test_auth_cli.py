"""`bulk-assign run` as a scheduled job signs in through a real MSAL cache: silently when it can, and
exit 3 with a clear message (never a prompt, never a traceback) when the sign-in was revoked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme
from emulator_thread import threaded_emulator
from fake_entra import FakeEntra

from bulk_assign.auth.options import AuthOptions
from bulk_assign.auth.signin import login
from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig

CLIENT_ID = "0f9b7a52-2222-4c51-8f3a-00000000c11e"


@pytest.fixture
def entra(ca: trustme.CA, tmp_path: Path) -> Iterator[FakeEntra]:
    with FakeEntra(ca=ca, workdir=tmp_path) as fake:
        yield fake


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with threaded_emulator(EmulatorConfig(app_rate=Rate(10_000, 1.0), tenant_rate=Rate(10_000, 1.0))) as emu:
        yield emu


def run_cli(tmp_path: Path, entra: FakeEntra, emulator: Emulator, cache: Path) -> subprocess.CompletedProcess[str]:
    devices = tmp_path / "devices.csv"
    devices.write_text("id\n" + "\n".join(str(uuid.uuid4()) for _ in range(25)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_") and k != "REQUESTS_CA_BUNDLE"}
    return subprocess.run(
        [sys.executable, "-m", "bulk_assign", "run", str(devices), "--target", "all-devices", "--graph-url",
         emulator.base_url, "--auth", "delegated", "--token-cache", str(cache), "--ca-bundle", str(entra.ca_path),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120,
    )


def sign_in(entra: FakeEntra, cache: Path) -> None:
    opts = AuthOptions(tenant_id=entra.tenant, client_id=CLIENT_ID, authority=entra.authority, token_cache=cache,
                       ca_bundle=entra.ca_path)
    login(opts, echo=lambda line: None)


def test_scheduled_run_renews_silently_from_the_cache(tmp_path: Path, entra: FakeEntra, emulator: Emulator) -> None:
    cache = tmp_path / "cache.json"
    entra.expires_in = 1
    sign_in(entra, cache)
    entra.expires_in = 3600
    time.sleep(1.5)  # the cached access token has expired: the run must use the refresh token
    done = run_cli(tmp_path, entra, emulator, cache)
    assert done.returncode == 0, done.stderr
    assert entra.hits["token:refresh_token"] >= 1 and entra.hits["devicecode"] == 1  # no new sign-in
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["counts"]["succeeded"] == 25
    assert (cache.stat().st_mode & 0o777) == 0o600
    outputs = done.stdout + done.stderr + "".join(p.read_text() for p in (tmp_path / "out").iterdir() if p.is_file())
    assert not [s for s in entra.secrets() if s in outputs]


def test_revoked_sign_in_exits_3_telling_to_log_in(tmp_path: Path, entra: FakeEntra, emulator: Emulator) -> None:
    cache = tmp_path / "cache.json"
    entra.expires_in = 1
    sign_in(entra, cache)
    entra.revoke_refresh_tokens()
    time.sleep(1.5)
    done = run_cli(tmp_path, entra, emulator, cache)
    assert done.returncode == 3
    assert "bulk-assign login" in done.stderr and "Traceback" not in done.stderr
    assert emulator.counters.writes_committed == 0
