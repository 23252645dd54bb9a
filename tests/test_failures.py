"""Hardening #5: a token or URL that cannot work is refused before the run; I/O failures and bugs exit 5
with one line on stderr, the traceback in run.log and summary.json written when the disk allows."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from emulator_thread import threaded_emulator

from bulk_assign.auth import StaticTokenProvider
from bulk_assign.config import Rate, Settings, check_graph_url
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.engine import BulkAssigner
from bulk_assign.errors import AuthenticationError, InternalError
from bulk_assign.graph.operations import AssignProfile
from bulk_assign.models import AssignmentTarget

TOKEN = "failures-token"
TARGET = "group:11111111-2222-3333-4444-555555555555"


def env(token: str | None = TOKEN) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    if token is not None:
        out["BULK_ASSIGN_ACCESS_TOKEN"] = token
    return out


def devices_csv(path: Path, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    path.write_text("id\n" + "\n".join(ids) + "\n")
    return ids


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0))
    with threaded_emulator(config) as emu:
        yield emu


# ----------------------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize(("token", "problem"), [("secret-part\r\nX-Evil: 1", "a line break"),
                                                ("secret-part\n", None), ("secret-part\u2013x", "outside latin-1"),
                                                ("secret-part\x00", "a control character")])
def test_a_token_no_header_can_hold_is_refused_without_showing_it(token: str, problem: str | None) -> None:
    if problem is None:  # a trailing newline (``echo $TOKEN``) is stripped, not refused
        StaticTokenProvider(token)
        return
    with pytest.raises(AuthenticationError, match=problem) as info:
        StaticTokenProvider(token, source="the token_provider argument")
    assert "secret-part" not in str(info.value) and info.value.exit_code == 3


def test_cli_exits_3_for_a_token_with_a_line_break(emulator: Emulator, tmp_path: Path) -> None:
    devices_csv(tmp_path / "d.csv", 2)
    done = subprocess.run([sys.executable, "-m", "bulk_assign", "run", str(tmp_path / "d.csv"), "--target", TARGET,
                           "--graph-url", emulator.base_url, "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, env=env("secret-part\r\nX: y"), timeout=120)
    assert done.returncode == 3, done.stderr
    assert "line break" in done.stderr and "secret-part" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr and emulator.counters.requests == 0


# ----------------------------------------------------------------------------------------------- URLs
@pytest.mark.parametrize(("url", "problem"), [
    ("https://graph.microsoft.com/be ta", "space"),
    ("https://graph.microsoft.com:99999/beta", "port must be a number from 1 to 65535"),
    ("https://graph.microsoft.com:x/beta", "port must be a number"),
    ("https://graph.microsoft.com:0/beta", "port 0"),
    ("https://graph.microsoft.com/beta?", "no query or fragment"),
    ("https://graph.microsoft.com/beta#", "no query or fragment"),
])
def test_graph_urls_that_cannot_work_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_graph_url(url)


def test_an_upper_case_scheme_is_normalised() -> None:
    assert check_graph_url("HTTPS://graph.microsoft.com/beta/") == "https://graph.microsoft.com/beta"
    assert check_graph_url("HTTP://127.0.0.1:8080/beta") == "http://127.0.0.1:8080/beta"


# ----------------------------------------------------------------------------------------------- exit 5
class _Broken(AssignProfile):
    """An operation with a bug: every request it builds raises."""

    def body(self, device_id: str, row: object = None) -> bytes:
        raise RuntimeError("a bug in building the request")


async def test_an_internal_error_in_a_worker_stops_the_run_with_exit_5(emulator: Emulator, tmp_path: Path) -> None:
    target = AssignmentTarget.parse(TARGET)
    settings = Settings.build(target=target, graph_url=emulator.base_url, rate="1000/1s", out_dir=tmp_path / "o")
    async with BulkAssigner(settings, token_provider=TOKEN, operation=_Broken(target)) as engine:
        with pytest.raises(InternalError, match="internal error: RuntimeError: a bug in building"):
            await engine.run_all([str(uuid.uuid4()) for _ in range(5)])
    assert engine.summary is not None and engine.summary.exit_code == 5
    written = orjson.loads((tmp_path / "o" / "summary.json").read_bytes())
    assert written["exit_code"] == 5 and written["stopped_reason"] == "error"
    assert "Traceback" in (tmp_path / "o" / "run.log").read_text()


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000))  # Python ignores SIGXFSZ: writes get EFBIG


def test_a_report_that_cannot_grow_mid_run_exits_5_with_one_line(emulator: Emulator, tmp_path: Path) -> None:
    devices_csv(tmp_path / "d.csv", 600)
    out = tmp_path / "o"
    done = subprocess.run([sys.executable, "-m", "bulk_assign", "run", str(tmp_path / "d.csv"), "--target", TARGET,
                           "--graph-url", emulator.base_url, "--rate", "100000/1s", "--out", str(out)],
                          capture_output=True, text=True, env=env(), timeout=120, preexec_fn=_small_files)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "I/O error" in line]
    assert len(errors) == 1 and "File too large" in errors[0], done.stderr
    assert "Traceback" in (out / "run.log").read_text()
    assert orjson.loads((out / "summary.json").read_bytes())["exit_code"] == 5
