"""The in-process clients of the benchmark, each run in a fresh interpreter by ``common.run_client``.

    python -m benchmarks.clients bare URL IDS_FILE CONCURRENCY [reads]
    python -m benchmarks.clients api  URL IDS_FILE CONCURRENCY RATE [no-reads]
    python -m benchmarks.clients sdk  URL IDS_FILE CONCURRENCY

``IDS_FILE`` is the CSV the parent wrote (header ``id``, one GUID a line). Each prints one JSON line:
devices, succeeded, elapsed (seconds of the timed part only: no interpreter start-up or imports), cpu
(process CPU seconds of the timed part) and, where it matters, the ids that did not succeed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import TARGET, TOKEN
from benchmarks.emulator_bench import hammer


def _ids(path: str) -> list[str]:
    lines = Path(path).read_text().split()
    return lines[1:]  # header "id"


def bare(url: str, ids_file: str, concurrency: str, mode: str = "") -> dict[str, Any]:
    """The fair baseline: emulator_bench's bare aiohttp loop (one shared session, N workers, same body);
    ``reads``: a GET of each device's assignments before its POST, as the engine's default does."""
    total = len(_ids(ids_file))
    cpu0 = time.process_time()
    ok, elapsed = asyncio.run(hammer(url, total, int(concurrency), read_first=mode == "reads"))
    return {"devices": total, "succeeded": ok, "elapsed": elapsed, "cpu": time.process_time() - cpu0}


def api(url: str, ids_file: str, concurrency: str, rate: str, mode: str = "") -> dict[str, Any]:
    """The engine through its coroutine API: ``await assign_profiles(ids, ...)`` (no output folder), with its
    defaults or, ``no-reads``, ``read_before_write=False``."""
    from bulk_assign import assign_profiles

    ids = _ids(ids_file)

    async def main() -> Any:
        return await assign_profiles(ids, target=TARGET, graph_url=url, token_provider=TOKEN, rate=rate,
                                     concurrency=int(concurrency), read_before_write=mode != "no-reads")

    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = asyncio.run(main())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"devices": len(ids), "succeeded": summary.succeeded, "elapsed": elapsed, "cpu": cpu,
            "engine_elapsed": summary.sending_seconds or summary.elapsed_seconds, "throttled": summary.throttled_429,
            "requests": summary.requests_sent}


def sdk(url: str, ids_file: str, concurrency: str) -> dict[str, Any]:
    from benchmarks.sdk_client import run_sdk

    ids = _ids(ids_file)
    cpu0 = time.process_time()
    result = asyncio.run(run_sdk(url, ids, int(concurrency)))
    result["cpu"] = time.process_time() - cpu0
    return result


def main() -> None:
    kind, *args = sys.argv[1:]
    run = {"bare": bare, "api": api, "sdk": sdk}[kind]
    print(json.dumps(run(*args)))


if __name__ == "__main__":
    main()
