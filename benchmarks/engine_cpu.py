"""The engine's own CPU per device: ``assign_profiles``'s path with an in-process stub transport, and against the
emulator, in CPU µs per device (``time.process_time``, so another process's load does not count).

    .venv/bin/python benchmarks/engine_cpu.py [--devices 20000] [--concurrency 64] [--rounds 3] [--emulator]
    .venv/bin/python benchmarks/engine_cpu.py ... --no-reads  # the engine without read-before-write
    .venv/bin/python benchmarks/engine_cpu.py --profile out.prof      # cProfile of one stub run
    valgrind --tool=callgrind .venv/bin/python benchmarks/engine_cpu.py --once --devices 1000   # and 3000:
        instructions per device = (I(3000) - I(1000)) / 2000, start-up and imports cancelled out;
        with --emulator, of the same job against the emulator (its process is not under valgrind); with --bare,
        of the bare aiohttp loop (emulator_bench.hammer) against it

The stub answers every POST at once with a 201 like Graph's and every GET with an empty list (headers in a
``CIMultiDictProxy``, as aiohttp gives them), so what is measured is the engine's work per device and nothing
of HTTP. ``--emulator`` starts the project's emulator in a subprocess and runs the same job through aiohttp
against it (the client's CPU only; the emulator has its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from benchmarks.common import HUGE, TARGET, TOKEN, EmulatorProc, device_ids
from benchmarks.emulator_bench import hammer
from bulk_assign import BulkAssigner
from bulk_assign.config import Settings
from bulk_assign.graph.transport import Response
from bulk_assign.models import AssignmentTarget


class StubTransport:
    """Answers every POST with Graph's 201 and every GET (read-before-write) with an empty list of
    assignments, at once, after one loop turn (as a real answer would)."""

    def __init__(self) -> None:
        self._closed = False
        self.requests = 0
        self._headers = CIMultiDictProxy(CIMultiDict({
            "Content-Type": "application/json;odata.metadata=minimal",
            "request-id": "7a1b1c2d-0000-4000-8000-000000000000",
            "client-request-id": "7a1b1c2d-0000-4000-8000-000000000001",
        }))
        self._body = orjson.dumps({"@odata.context": "x", "id": "d1b7e2f0-1111-4222-8333-444455556666_x",
                                   "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget"}})
        self._empty = orjson.dumps({"@odata.context": "x", "value": []})

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      timeout: float | None) -> Response:
        self.requests += 1
        await asyncio.sleep(0)
        if method == "GET":
            return Response(200, self._headers, self._empty)
        return Response(201, self._headers, self._body)

    async def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


async def _run(ids: list[str], concurrency: int, graph_url: str | None, reads: bool) -> tuple[int, float, float]:
    settings = Settings.build(target=AssignmentTarget.parse(TARGET), rate=HUGE, concurrency=concurrency,
                              read_before_write=reads, **({"graph_url": graph_url} if graph_url else {}))
    engine = BulkAssigner(settings, token_provider=TOKEN)
    if graph_url is None:
        engine._transport = StubTransport()  # the seam the engine's own session fills otherwise
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with engine:
        summary = await engine.run_all(ids)
    return summary.succeeded, time.process_time() - cpu0, time.perf_counter() - t0


def measure(devices: int, concurrency: int, rounds: int, graph_url: str | None, reads: bool
            ) -> list[tuple[float, float]]:
    ids = device_ids(devices)
    out = []
    for _ in range(rounds):
        ok, cpu, wall = asyncio.run(_run(ids, concurrency, graph_url, reads))
        assert ok == devices, (ok, devices)
        out.append((cpu / devices * 1e6, wall))
    return out


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--emulator", action="store_true", help="also run against the emulator")
    parser.add_argument("--bare", action="store_true", help="with --once: the bare aiohttp loop on the emulator")
    parser.add_argument("--once", action="store_true", help="one stub run, no warm-up (under valgrind)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile one stub run into FILE")
    parser.add_argument("--no-reads", action="store_true", help="the engine with read_before_write=False")
    args = parser.parse_args()
    reads = not args.no_reads
    if args.profile:  # with --emulator: of one run against the emulator
        ids = device_ids(args.devices)
        with EmulatorProc() if args.emulator else _nothing() as emu:
            url = emu.base if emu is not None else None
            cProfile.runctx("asyncio.run(_run(ids, args.concurrency, url, reads))", globals(),
                            {"ids": ids, "args": args, "url": url, "reads": reads}, args.profile)
        return
    if args.once:  # for instruction counts: callgrind on --once N and on --once 3N, the difference over 2N
        with EmulatorProc() if args.emulator or args.bare else _nothing() as emu:  # its process: not counted
            if args.bare:
                assert emu is not None
                print(asyncio.run(hammer(emu.base, args.devices, args.concurrency, read_first=reads)))
            else:
                print(measure(args.devices, args.concurrency, 1, emu.base if emu is not None else None, reads))
        return
    measure(1000, args.concurrency, 1, None, reads)  # warm-up: imports, first-use caches
    stub = measure(args.devices, args.concurrency, args.rounds, None, reads)
    print(f"stub transport:  {args.devices:,} devices, concurrency {args.concurrency}: CPU µs/device "
          + "  ".join(f"{us:.1f}" for us, _ in stub) + f"  (best {min(us for us, _ in stub):.1f})")
    if args.emulator:
        with EmulatorProc() as emu:
            res, bare = [], []
            for _ in range(args.rounds):  # alternating, so a load spike hurts both alike
                res += measure(args.devices, args.concurrency, 1, emu.base, reads)
                cpu0 = time.process_time()
                _ok, wall = asyncio.run(hammer(emu.base, args.devices, args.concurrency, read_first=reads))
                bare.append(((time.process_time() - cpu0) / args.devices * 1e6, wall))
        print(f"bare loop:       {args.devices:,} devices, concurrency {args.concurrency}: CPU µs/device "
              + "  ".join(f"{us:.1f}" for us, _ in bare) + f"  (best {min(us for us, _ in bare):.1f}); devices/s "
              + "  ".join(f"{args.devices / w:,.0f}" for _, w in bare))
        print(f"emulator:        {args.devices:,} devices, concurrency {args.concurrency}: CPU µs/device "
              + "  ".join(f"{us:.1f}" for us, _ in res) + f"  (best {min(us for us, _ in res):.1f}); devices/s "
              + "  ".join(f"{args.devices / w:,.0f}" for _, w in res))


if __name__ == "__main__":
    main()
