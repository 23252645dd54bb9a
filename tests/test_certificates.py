"""hardening #9: a certificate that does not verify stops the run with one clear message, instead of being
retried as "not sent" for every device."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from bulk_assign import BulkAssigner, CertificateError, Settings
from bulk_assign.models import AssignmentTarget

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")


@pytest.fixture
async def untrusted_graph() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS server on 127.0.0.1 whose certificate comes from a CA nobody trusts; it records requests."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"id": "x"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/beta", seen
    finally:
        await runner.cleanup()


async def test_an_untrusted_certificate_stops_the_run_naming_host_and_reason(
        untrusted_graph: tuple[str, list[str]]) -> None:
    url, seen = untrusted_graph
    settings = Settings(target=TARGET, graph_url=url, concurrency=4)
    started = time.monotonic()
    async with BulkAssigner(settings, token_provider="a-token") as engine:
        with pytest.raises(CertificateError) as caught:
            await engine.run_all([str(uuid.uuid4()) for _ in range(50)])
    assert time.monotonic() - started < 10  # not 8 backed-off retries per device
    message = str(caught.value)
    assert "127.0.0.1" in message and "certificate" in message and "--ca-bundle" in message
    assert engine.summary is not None
    assert engine.summary.exit_code == 2
    assert engine.summary.remaining == 50  # no device is reported failed for it: all stay for --resume
    assert seen == []


async def test_the_cli_exits_2_with_one_line(untrusted_graph: tuple[str, list[str]], tmp_path: Path) -> None:
    url, _ = untrusted_graph
    devices = tmp_path / "d.csv"
    devices.write_text("id\n" + "\n".join(str(uuid.uuid4()) for _ in range(5)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")} | {
        "BULK_ASSIGN_ACCESS_TOKEN": "a-token"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bulk_assign", "run", str(devices), "--target",
        "group:11111111-2222-3333-4444-555555555555", "--graph-url", url, "--out", str(tmp_path / "out"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (stdout + stderr).decode()
    assert b"Traceback" not in stderr
    assert b"did not verify" in stderr
