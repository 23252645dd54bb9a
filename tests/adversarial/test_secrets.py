"""No secret anywhere: a distinctive token, client secret and proxy password, then every file a run leaves,
its stdout and stderr, and the ``repr`` of every public object are searched for them (plain and URL-encoded)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
import trustme
from emulator_thread import threaded_emulator
from fake_entra import FakeEntra

import bulk_assign
from bulk_assign.auth import StaticTokenProvider
from bulk_assign.config import Rate, Settings
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.models import AssignmentTarget

TOKEN = "eyJhbGciOiJub25lIn0.eyJzY3AiOiJEZXZpY2VNYW5hZ2VtZW50U2VydmljZUNvbmZpZy5SZWFkV3JpdGUuQWxsIn0.Tok3n-S1gnature-9f8e7d"  # noqa: E501  scp: the permission the preflight checks
CLIENT_SECRET = "Cl1ent~Secret/never+printed=42"
PROXY_PASSWORD = "Pr0xy:Pa55/w0rd"
GROUP = "group:11111111-2222-3333-4444-555555555555"
APP_ID = "5a1d0c77-3333-4d7e-9a61-00000000a99e"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret)}


SECRETS = forms(TOKEN) | forms(CLIENT_SECRET) | forms(PROXY_PASSWORD) | {TOKEN.split(".")[2]}


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


def assert_folder_clean(folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, folder
    for path in files:
        assert_clean(str(path), path.read_bytes().decode("utf-8", "replace"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def devices(path: Path, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    path.write_text("id\n" + "\n".join(ids) + "\nnot-a-guid\n" + ids[0] + "\n")
    return ids


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bulk_assign", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = f"http://ops:{quote(PROXY_PASSWORD, safe='')}@127.0.0.1:{closed_port()}"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["BULK_ASSIGN_CLIENT_SECRET"] = CLIENT_SECRET
    return env


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(app_rate=Rate(10_000, 1.0), tenant_rate=Rate(10_000, 1.0), token=TOKEN, faults=0.3,
                            fault_kinds=("503", "reset", "ambiguous-504"), seed=3)
    with threaded_emulator(config) as emu:
        yield emu


def test_a_run_with_faults_leaves_no_secret(tmp_path: Path, emulator: Emulator) -> None:
    devices(tmp_path / "devices.csv", 40)
    env = base_env() | {"BULK_ASSIGN_ACCESS_TOKEN": TOKEN}
    out = tmp_path / "out"
    done = cli("run", str(tmp_path / "devices.csv"), "--target", GROUP, "--graph-url", emulator.base_url,
               "--max-attempts", "2", "--out", str(out), env=env)
    assert done.returncode in (0, 1), done.stderr
    assert_clean("stdout", done.stdout)
    assert_clean("stderr", done.stderr)
    assert_folder_clean(out)


def test_a_rejected_token_leaves_no_secret(tmp_path: Path, emulator: Emulator) -> None:
    devices(tmp_path / "devices.csv", 5)
    wrong = TOKEN.replace("Tok3n", "W4ong")
    SECRETS.update(forms(wrong))
    env = base_env() | {"BULK_ASSIGN_ACCESS_TOKEN": wrong}
    out = tmp_path / "out"
    done = cli("run", str(tmp_path / "devices.csv"), "--target", GROUP, "--graph-url", emulator.base_url,
               "--out", str(out), env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert_clean("stdout", done.stdout)
    assert_clean("stderr", done.stderr)
    assert_folder_clean(out)


def test_a_refused_client_secret_leaves_no_secret(tmp_path: Path, ca: trustme.CA, emulator: Emulator) -> None:
    devices(tmp_path / "devices.csv", 5)
    with FakeEntra(ca=ca, workdir=tmp_path, client_secrets={APP_ID: "the-right-secret-is-another"}) as entra:
        out = tmp_path / "out"
        done = cli("run", str(tmp_path / "devices.csv"), "--target", GROUP, "--graph-url", emulator.base_url,
                   "--auth", "client-secret", "--tenant-id", entra.tenant, "--client-id", APP_ID, "--authority",
                   entra.authority, "--ca-bundle", str(entra.ca_path), "--out", str(out), env=base_env())
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert_clean("stdout", done.stdout)
    assert_clean("stderr", done.stderr)
    if out.exists():
        assert_folder_clean(out)


async def test_the_api_through_a_proxy_with_a_password_leaves_no_secret(tmp_path: Path) -> None:
    """A caller's session that sends through a proxy (it refuses): the records and files name the failure only."""
    from bulk_assign.emulator import Emulator as AsyncEmulator

    proxy = f"http://ops:{quote(PROXY_PASSWORD, safe='')}@127.0.0.1:{closed_port()}"
    async with AsyncEmulator(EmulatorConfig()) as graph, aiohttp.ClientSession(proxy=proxy) as session:
        settings = Settings(target=AssignmentTarget.parse(GROUP), graph_url=graph.base_url, max_attempts=1,
                            out_dir=tmp_path / "out")
        async with bulk_assign.BulkAssigner(settings, token_provider=TOKEN, session=session) as engine:
            records = [r async for r in engine.run([str(uuid.uuid4()) for _ in range(3)])]
            reprs = [repr(engine), repr(settings), repr(engine.summary), *map(repr, records)]
    assert [r.status.value for r in records] == ["failed"] * 3
    assert all(r.error_code in ("ConnectionError", "RetriesExhausted") for r in records)
    for text in [*(r.error_message or "" for r in records), *reprs]:
        assert_clean("a record or repr", text)
    assert_folder_clean(tmp_path / "out")


def test_public_objects_never_show_a_secret_in_their_repr(ca: trustme.CA, tmp_path: Path) -> None:
    from bulk_assign.auth.credentials import client_secret_from

    provider = StaticTokenProvider(TOKEN)
    assert client_secret_from({"BULK_ASSIGN_CLIENT_SECRET": CLIENT_SECRET}) == CLIENT_SECRET
    settings = Settings(target=AssignmentTarget.parse(GROUP))
    engine = bulk_assign.BulkAssigner(settings, token_provider=provider)
    objects: list[object] = [provider, settings, engine, engine.pacer, engine.operation, engine.stats]
    for name in bulk_assign.__all__:
        objects.append(getattr(bulk_assign, name))
    for obj in objects:
        assert_clean(f"repr of {type(obj).__name__}", repr(obj))
        assert_clean(f"str of {type(obj).__name__}", str(obj))
    asyncio.run(asyncio.sleep(0))  # nothing to close: the engine was never entered
