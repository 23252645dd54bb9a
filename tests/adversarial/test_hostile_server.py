"""The engine against a hostile Graph server: for every mode, what the engine must do.

Each test states the same five things: no token reaches another origin, the number of requests is
bounded, the time is bounded, every device ends as a classified record, and the run's exit code.
"""

from __future__ import annotations

import time
import uuid

import pytest
from hostile import MODES, Hostile, hostile_server

from bulk_assign import BulkAssigner, DeviceResult, Settings, Status, Summary
from bulk_assign.models import AssignmentTarget

TOKEN = "hostile-test-T0KEN-3c1f"
TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
N = 3


async def run(hostile: Hostile, *, batch: bool = False, **overrides: object) -> tuple[list[DeviceResult], Summary,
                                                                                        float]:
    options: dict[str, object] = {"max_attempts": 2, "request_timeout": 1.0, "max_retry_after": 2.0,
                                  "max_throttle_wait": 3.0, "concurrency": 3, "batch": batch, "rate": "1000/1s"}
    options.update(overrides)
    settings = Settings.build(target=TARGET, graph_url=hostile.base_url, **options)
    ids = [str(uuid.uuid4()) for _ in range(N)]
    started = time.monotonic()
    async with BulkAssigner(settings, token_provider=TOKEN) as engine:
        records = [r async for r in engine.run(ids)]
    assert engine.summary is not None
    return records, engine.summary, time.monotonic() - started


def common(hostile: Hostile, records: list[DeviceResult], elapsed: float, *, max_posts: int,
           max_seconds: float) -> None:
    assert len(records) == N and len({r.device_id for r in records}) == N  # every device decided, once
    assert hostile.elsewhere == []  # nothing (least of all a token) reached another origin
    assert hostile.posts <= max_posts, hostile.posts
    assert elapsed <= max_seconds, elapsed
    for record in records:
        assert TOKEN not in (record.error_message or "")
        assert record.status is Status.SUCCEEDED or record.error_code, record


def test_every_mode_has_a_test() -> None:
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals() if name.startswith("test_")}
    assert set(MODES) <= tested, set(MODES) - tested


async def test_redirect() -> None:
    with hostile_server("redirect") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=N, max_seconds=10)
    assert all(r.status is Status.FAILED and r.http_status in (302, 307) and r.error_code == "Redirect"
               for r in records)
    assert all(r.attempts == 1 for r in records)  # permanent: never resent, never followed
    assert summary.exit_code == 1


@pytest.mark.parametrize("mode", ["slow-headers", "silence"])
async def test_slow_headers(mode: str) -> None:
    with hostile_server(mode) as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=2 * N, max_seconds=15)
    assert {r.error_code for r in records} == {"RetriesExhausted"}
    assert all("Timeout" in (r.error_message or "") for r in records)
    assert summary.exit_code == 1
    assert summary.verifications >= N  # a timed-out write may have landed: read back before the resend


async def test_silence() -> None:
    await test_slow_headers("silence")


async def test_reset() -> None:
    with hostile_server("reset") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=2 * N, max_seconds=15)
    assert {r.error_code for r in records} == {"RetriesExhausted"}
    assert summary.verifications >= N and summary.exit_code == 1


@pytest.mark.timeout(60)
async def test_huge_body() -> None:
    with hostile_server("huge-body") as h:
        records, summary, elapsed = await run(h, request_timeout=20.0)
    common(h, records, elapsed, max_posts=2 * N, max_seconds=45)
    assert summary.exit_code in (0, 1)


async def test_huge_headers() -> None:
    with hostile_server("huge-headers") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=2 * N, max_seconds=15)
    assert summary.exit_code in (0, 1)


async def test_gzip_unasked() -> None:
    with hostile_server("gzip-unasked") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=N, max_seconds=10)
    assert all(r.status is Status.SUCCEEDED and r.assignment_id == "assignment-gz" for r in records)
    assert summary.exit_code == 0


async def test_informational() -> None:
    with hostile_server("informational") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=N, max_seconds=10)
    assert all(r.status is Status.SUCCEEDED and r.assignment_id == "assignment-after-1xx" for r in records)
    assert summary.exit_code == 0


async def test_batch_duplicate_ids() -> None:
    with hostile_server("batch-duplicate-ids") as h:
        records, summary, elapsed = await run(h, batch=True)
    # the read before the write, the write, and the read-back after its answer could not be trusted
    common(h, records, elapsed, max_posts=3, max_seconds=15)
    assert {r.error_code for r in records} == {"RetriesExhausted"}
    # every read (a $batch of GETs, answered the same way) could not tell, before the write (read-before-write:
    # then nothing is written blind) or after it: so nothing was ever sent twice
    assert all(r.attempts <= 1 for r in records)
    assert all("VerificationFailed" in (r.error_message or "") or "DuplicateBatchItem" in (r.error_message or "")
               for r in records)
    assert summary.exit_code == 1


@pytest.mark.parametrize("mode", ["garbage-retry-after", "retry-after-zero"])
async def test_garbage_retry_after(mode: str) -> None:
    with hostile_server(mode) as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=40, max_seconds=15)
    assert {r.error_code for r in records} == {"ThrottleWaitExceeded"}
    assert summary.exit_code == 1


async def test_retry_after_zero() -> None:
    await test_garbage_retry_after("retry-after-zero")


async def test_echo_authorization() -> None:
    with hostile_server("echo-authorization") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=N, max_seconds=10)
    assert all(r.status is Status.FAILED and r.http_status == 400 for r in records)
    assert all("<redacted>" in (r.error_message or "") for r in records)
    assert summary.exit_code == 1


async def test_malformed() -> None:
    with hostile_server("malformed") as h:
        records, summary, elapsed = await run(h)
    common(h, records, elapsed, max_posts=2 * N, max_seconds=15)
    assert {r.error_code for r in records} == {"RetriesExhausted"}
    assert summary.exit_code == 1
