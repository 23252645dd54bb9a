"""Shared helpers of the benchmark runner: emulator processes, their admin API, child processes, inputs, tables.

Everything talks to 127.0.0.1 only. Emulators and clients run as separate processes so that (on a 2-core
machine) the server has its own core and each client measurement starts from a fresh interpreter.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.emulator_bench import BODY, cpu_seconds, start

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"  # git-ignored scratch space for inputs and report folders
PY = sys.executable
TOKEN = "bench-token"  # the emulator accepts any bearer token unless started with --token
GROUP = BODY["target"]["groupId"]  # type: ignore[index]
TARGET = f"group:{GROUP}"
HUGE = "1000000/1s"  # "no throttling": a budget no client on this machine can reach
# urllib honours http_proxy from the environment; the emulator is on loopback, never through a proxy
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------- inputs
def device_ids(count: int, salt: int = 0) -> list[str]:
    """``count`` distinct, deterministic, normalised (lower-case v4) GUIDs; ``salt`` gives another set.

    Deterministic so that the engine and the SDK meet the same seeded faults for the same devices.
    """
    base = (salt + 1) * 0x9E3779B97F4A7C15
    return [str(uuid.UUID(int=(base + i * 0xBF58476D1CE4E5B9) % (1 << 128), version=4)) for i in range(count)]


def write_csv(path: Path, ids: Iterable[str]) -> Path:
    """A one-column CSV with the header ``id`` (the engine auto-detects it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id\n")
        for device in ids:
            out.write(device + "\n")
    return path


def workdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    WORK.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=WORK)


# ------------------------------------------------------------------------------------------- emulator
def rate_text(count: int, period: float) -> str:
    return f"{count}/{period:g}s"


class EmulatorProc:
    """``python -m bulk_assign emulator --port 0 ...`` as a subprocess, with its admin API.

    Use as a context manager; ``base`` is the Graph root (``.../beta``) and ``root`` the server root.
    """

    def __init__(
        self,
        *,
        rate: str = HUGE,
        tenant_rate: str = HUGE,
        throttle: str = "sliding",
        retry_after: str = "int",
        faults: float = 0.0,
        fault_kinds: str | None = None,
        seed: int = 0,
        read_rate: str = "off",
        inventory: Path | None = None,
        latency_ms: float = 0.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.argv = [
            PY, "-m", "bulk_assign", "emulator", "--port", "0", "--rate", rate, "--tenant-rate", tenant_rate,
            "--throttle", throttle, "--retry-after", retry_after, "--faults", str(faults), "--seed", str(seed),
            "--read-rate", read_rate,
        ]  # fmt: skip
        if fault_kinds:
            self.argv += ["--fault-kinds", fault_kinds]
        if latency_ms:  # every answer this much later (after the request was counted)
            self.argv += ["--latency-ms", f"{latency_ms:g}"]
        if inventory is not None:  # a tenant file: only its devices exist, and the listing serves them
            self.argv += ["--inventory", str(inventory)]
        self.argv += list(extra)  # anything else the emulator's CLI takes (groups, profiles, directory budgets)
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""
        self.root = ""

    def __enter__(self) -> EmulatorProc:
        self.proc, self.base = start(self.argv)  # emulator_bench.start: reads the URL from the first line
        self.root = self.base.removesuffix("/beta")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.root + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read())

    def counters(self) -> dict[str, Any]:
        return self._call("GET", "/_emulator/counters")  # type: ignore[no-any-return]

    def set_rates(self, app: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/_emulator/rates", {"app": app, "tenant": tenant})  # type: ignore[no-any-return]

    def reset(self, state: bool = True) -> None:
        """Zero the counters and (``state``) forget assignments, throttle windows and fault history."""
        self._call("POST", "/_emulator/reset" + ("?state=1" if state else ""))

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)


def assignment_url(base: str, device: str) -> str:
    return f"{base}/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"


def measure_rtt(emulator: EmulatorProc, samples: int = 20) -> float:
    """Median seconds of one sequential assignment POST (then the emulator's state is reset: the POSTs
    spent write budget). The "one round trip" of the theoretical minimum."""
    payload = json.dumps(BODY).encode()
    times = []
    for device in device_ids(samples, salt=999):
        request = urllib.request.Request(assignment_url(emulator.base, device), data=payload, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {TOKEN}"})
        t0 = time.perf_counter()
        with _OPENER.open(request, timeout=30) as response:
            response.read()
        times.append(time.perf_counter() - t0)
    emulator.reset(state=True)
    times.sort()
    return times[len(times) // 2]


def theoretical_min(devices: int, count: int, period: float, rtt: float) -> float:
    """The least time any client needs for ``devices`` writes at "``count`` per ``period``" with the budget's
    initial burst: ``(ceil(M/N) - 1) * T`` plus one round trip (the last request must still get there and back)."""
    return (math.ceil(devices / count) - 1) * period + rtt


# -------------------------------------------------------------------------------------- child processes
@dataclass
class ChildResult:
    returncode: int
    wall: float  # seconds from spawn to exit
    cpu: float  # user+system CPU seconds of the child (its own children excluded)
    max_rss_mb: float
    stdout: str
    stderr: str
    extra: dict[str, Any] = field(default_factory=dict)


# A tiny launcher between us and the measured process. Linux folds the parent's peak RSS into a child's
# ``ru_maxrss`` at exec (measured here: a bare ``python -c pass`` spawned by a 500 MB parent reports 534 MB),
# so a big runner would inflate every child's figure. The launcher (``-I -S``: a few MB) spawns the real
# command, waits with ``os.wait4`` for that one child's exact CPU time and peak RSS, and writes them as JSON.
_LAUNCHER = """
import json, os, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
proc = subprocess.Popen(argv)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
with open(report, "w") as out:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, out)
"""


def run_child(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> ChildResult:
    """Run ``argv`` to completion through the launcher; wall, CPU and peak RSS are that process's own.

    Output goes to temporary files, not pipes, so a chatty child can never block while we wait.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as report:
        launcher = [PY, "-I", "-S", "-c", _LAUNCHER, report.name, *argv]
        proc = subprocess.Popen(launcher, stdout=out, stderr=err, env=env, cwd=ROOT, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(argv[:4])} ...") from None
        out.seek(0)
        err.seek(0)
        data = json.loads(report.read() or "{}")
        if not data:
            raise RuntimeError(f"launcher failed ({proc.returncode}): {err.read()[-2000:]}")
        return ChildResult(
            returncode=data["rc"],
            wall=data["wall"],
            cpu=data["cpu"],
            max_rss_mb=data["maxrss_kib"] / 1024,  # KiB on Linux
            stdout=out.read(),
            stderr=err.read(),
        )


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["BULK_ASSIGN_ACCESS_TOKEN"] = TOKEN
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(name, None)  # loopback never goes through a proxy (the engine honours proxy variables)
    return env


@functools.cache
def cli_supports(flag: str) -> bool:
    """Whether ``bulk-assign run --help`` lists ``flag`` (features other engineers are adding)."""
    result = subprocess.run([PY, "-m", "bulk_assign", "run", "--help"], capture_output=True, text=True, cwd=ROOT,
                            check=False)
    return flag in result.stdout


def run_cli(
    csv: Path, out_dir: Path, graph_url: str, *, rate: str, concurrency: int, extra: Sequence[str] = ()
) -> ChildResult:
    """``bulk-assign run CSV`` in a subprocess; ``extra["summary"]`` is its summary.json."""
    argv = [
        PY, "-m", "bulk_assign", "run", str(csv), "--target", TARGET, "--graph-url", graph_url,
        "--rate", rate, "--concurrency", str(concurrency), "--out", str(out_dir), *extra,
    ]  # fmt: skip
    result = run_child(argv, env=cli_env())
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        result.extra["summary"] = json.loads(summary_path.read_text())
    elif result.returncode != 0:
        raise RuntimeError(f"bulk-assign run failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def run_client(kind: str, *args: str) -> dict[str, Any]:
    """``python -m benchmarks.clients KIND ...``: a client in a fresh interpreter; returns its JSON line."""
    result = run_child([PY, "-m", "benchmarks.clients", kind, *args], env=cli_env())
    if result.returncode != 0:
        raise RuntimeError(f"client {kind} failed ({result.returncode}): {result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    data["process_wall"] = result.wall
    data["process_cpu"] = result.cpu
    data["max_rss_mb"] = result.max_rss_mb
    return data


def sdk_missing() -> str | None:
    """Why Microsoft's SDK cannot run here (the optional ``sdk`` extra is not installed), or None."""
    import importlib.util

    missing = [m for m in ("msgraph_beta", "azure.core", "kiota_authentication_azure")
               if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        return f"not installed ({', '.join(missing)}): .venv/bin/pip install -e '.[sdk]'"
    return None


def read_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl of a CLI run, by device id."""
    records: dict[str, dict[str, Any]] = {}
    with (out_dir / "results.jsonl").open("rb") as handle:
        for line in handle:
            record = json.loads(line)
            records[record["device_id"]] = record
    return records


# ---------------------------------------------------------------------------------------------- output
@dataclass
class Section:
    """What one section prints and writes into the README."""

    key: str
    title: str
    tables: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        parts = [f"### {self.title}", ""]
        for table in self.tables:
            parts += ["```", table, "```", ""]
        parts += [f"- {line}" for line in self.verdicts]
        if self.notes:
            parts += [""] + [f"> {line}" for line in self.notes]
        return "\n".join(parts).rstrip() + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table: first column left-aligned, the rest right-aligned.

    A row shorter than the header is a remark: its first cell is aligned, the rest is written after it as
    text (spanning the other columns) and does not widen them.
    """
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    full = [r for r in cells if len(r) == len(headers)]
    widths = [max(len(r[i]) for r in full) for i in range(len(headers))]
    widths[0] = max(widths[0], *(len(r[0]) for r in cells))
    lines = []
    for n, row in enumerate(cells):
        if len(row) < len(headers):
            lines.append(f"{row[0].ljust(widths[0])}  {' '.join(row[1:])}".rstrip())
            continue
        line = "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        lines.append(line.rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN: not measured
            return "n/a"
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(goal: str, met: bool | None, detail: str) -> str:
    word = {True: "**met**", False: "**not met**", None: "**not measured**"}[met]
    return f"{goal}: {word} ({detail})"


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    """What ``run.py`` was asked for; every section reads its sizes from here."""

    quick: bool = False
    scale: float = 20.0  # Intune's 100/20s becomes 100/(20/scale)s
    concurrency: int = 64  # the same for the engine, the bare loop and the SDK's semaphore
    rounds: int = 2  # alternating rounds in (a); the best of each client is kept

    @property
    def unthrottled_devices(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def sdk_devices(self) -> int:
        return 100 if self.quick else 1_000

    @property
    def throttled_sizes(self) -> tuple[int, ...]:
        return (200,) if self.quick else (300, 5_000)

    @property
    def fault_devices(self) -> int:
        return 100 if self.quick else 2_000

    @property
    def memory_rows(self) -> int:
        return 50_000 if self.quick else 1_000_000

    @property
    def period(self) -> float:
        """The scaled budget window T (Intune's 20 s divided by ``scale``)."""
        return 20.0 / self.scale

    @property
    def app_budget(self) -> tuple[int, float]:
        return 100, self.period

    @property
    def tenant_budget(self) -> tuple[int, float]:
        return 200, self.period
