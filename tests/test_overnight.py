"""Unattended runs through the real CLI process: kill -9 and resume, SIGTERM drain, runtime limit, lock,
failure brake, job files. The emulator runs on loopback in a thread of the test process, so its memory of
what was committed survives every CLI process that is killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from emulator_thread import threaded_emulator

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig
from bulk_assign.store.reports import read_jsonl

GROUP = "11111111-2222-3333-4444-555555555555"
TOKEN = "overnight-token"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    out["BULK_ASSIGN_ACCESS_TOKEN"] = TOKEN
    return out


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bulk_assign", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bulk_assign", "run", *args], capture_output=True, text=True,
                          env=env(), timeout=timeout)


def devices_csv(path: Path, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    path.write_text("deviceId\n" + "\n".join(ids) + "\n")
    return ids


def wait_for_records(out: Path, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = out / "results.jsonl"
        if results.exists() and results.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} records after {timeout} s")


def wait_for_growth(path: Path, size: int, timeout: float = 60,
                    proc: subprocess.Popen[str] | None = None) -> None:
    """Until ``path`` is larger than ``size``; EOFError if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > size:
            return
        if proc is not None and proc.poll() is not None:
            raise EOFError(f"the run exited ({proc.returncode}) before {path} grew")
        time.sleep(0.01)
    raise AssertionError(f"{path} did not grow within {timeout} s")


def kill_then_resume(args: list[str], out: Path, rng: random.Random, rounds: int = 3
                     ) -> subprocess.CompletedProcess[str]:
    """Start the run (then ``--resume`` it) ``rounds`` times, each SIGKILLed 0.5-1.5 s after its journal grew
    (fewer if a round finishes first), and return the final ``--resume`` that runs to the end."""
    journal = out / "journal.log"
    for round_ in range(rounds):
        size = journal.stat().st_size if journal.exists() else 0
        proc = start(*args, *(["--resume"] if round_ else []))
        try:
            wait_for_growth(journal, size, timeout=60, proc=proc)
        except EOFError:
            break
        time.sleep(rng.uniform(0.5, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return run(*args, "--resume")


def summary(out: Path) -> dict[str, object]:
    data: dict[str, object] = orjson.loads((out / "summary.json").read_bytes())
    return data


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN)
    with threaded_emulator(config) as emu:
        yield emu


KILLS = int(os.environ.get("BULK_ASSIGN_TEST_KILLS", "10"))  # random SIGKILL points per mode (10 in CI)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["per-device", "batch"])
def test_sigkill_at_random_points_then_resume_never_assigns_twice(tmp_path: Path, mode: str) -> None:
    """N random SIGKILLs against ambiguous faults (the write lands, the client sees a 504 or a reset), each
    followed by --resume, then a final resume: every device assigned exactly once and decided once."""
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN,
                            faults=0.15, fault_kinds=("ambiguous-504", "ambiguous-reset", "503", "reset"),
                            latency_ms=20, seed=4)
    n = 600
    ids = devices_csv(tmp_path / "devices.csv", n, seed=1)
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--rate", "60/1s", "--concurrency",
            "16", "--out", str(out), *(["--batch"] if mode == "batch" else [])]
    rng = random.Random(7 if mode == "per-device" else 8)
    killed = 0
    with threaded_emulator(config) as emu:
        for round_ in range(KILLS):
            journal = out / "journal.log"
            before = journal.stat().st_size if journal.exists() else 0
            proc = start(*args, "--graph-url", emu.base_url, *(["--resume"] if round_ else []))
            # kill at a random point after this run has journaled its first intents (so it counts as a run):
            # a fixed delay from the start raced the interpreter's start-up on a loaded machine
            try:
                wait_for_growth(journal, before, timeout=60, proc=proc)
            except EOFError:  # the run finished before it had anything left to journal: nothing to kill
                break
            time.sleep(rng.uniform(0.0, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            if proc.returncode == -signal.SIGKILL:
                killed += 1
        final = run(*args, "--graph-url", emu.base_url, "--resume")
        counters = emu.counters
        commits = dict(counters.commits_per_device)
    assert killed >= min(KILLS, 3), f"only {killed} runs were killed mid-way"
    assert final.returncode == 0, final.stdout + final.stderr
    # the emulator saw every device assigned exactly once, however often the job was killed
    assert counters.devices_assigned_twice == 0
    assert counters.ambiguous_commits > 0
    assert set(commits) == set(ids) and set(commits.values()) == {1}
    # over all runs: one success (or read-back find) per device, never two
    records = read_jsonl(out / "results.jsonl")
    done = Counter(r["device_id"] for r in records
                   if r["status"] == "succeeded" or r["skip_reason"] == "landed")
    assert set(done) == set(ids) and set(done.values()) == {1}
    merged = summary(out)
    counts = merged["counts"]
    assert isinstance(counts, dict)
    assert counts["succeeded"] + merged["skipped_by_reason"].get("landed", 0) == n  # type: ignore[union-attr]
    # summary.json's "runs" counts the runs that decided at least one record (a run killed before its
    # first answer has intents only)
    assert merged["remaining"] == 0 and 1 <= merged["runs"] <= killed + 1  # type: ignore[operator]


def test_sigterm_drains_exits_130_with_reports_flushed_and_resume_finishes(emulator: Emulator,
                                                                           tmp_path: Path) -> None:
    ids = devices_csv(tmp_path / "devices.csv", 400, seed=2)
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--graph-url", emulator.base_url,
            "--rate", "40/1s", "--out", str(out)]
    proc = start(*args)
    wait_for_records(out, 20)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    first = summary(out)
    assert first["stopped_reason"] == "interrupted" and first["exit_code"] == 130
    records = read_jsonl(out / "results.jsonl")
    assert len(records) + first["remaining"] == 400  # type: ignore[operator]
    assert len(records) == first["counts"]["succeeded"]  # type: ignore[index]
    assert "--resume" in stdout
    again = run(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert emulator.counters.devices_assigned_twice == 0
    assert set(emulator.counters.commits_per_device) == set(ids)
    merged = summary(out)
    assert merged["counts"]["succeeded"] == 400 and merged["remaining"] == 0  # type: ignore[index]
    assert merged["run_counts"]["skipped"] == len(records)  # type: ignore[index]  # done before: not resent
    assert merged["run_counts"]["succeeded"] == 400 - len(records)  # type: ignore[index]


def test_max_runtime_stops_with_exit_4_and_resume_finishes(emulator: Emulator, tmp_path: Path) -> None:
    ids = devices_csv(tmp_path / "devices.csv", 200, seed=3)
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--graph-url", emulator.base_url,
            "--rate", "30/1s", "--out", str(out), "--drain-seconds", "1"]
    stopped = run(*args, "--max-runtime", "3s")
    assert stopped.returncode == 4, stopped.stderr
    first = summary(out)
    assert first["stopped_reason"] == "max-runtime" and 0 < first["remaining"] < 200  # type: ignore[operator]
    finished = run(*args, "--resume")
    assert finished.returncode == 0
    assert set(emulator.counters.commits_per_device) == set(ids)
    assert emulator.counters.devices_assigned_twice == 0


def test_deadline_in_the_past_means_tomorrow(emulator: Emulator, tmp_path: Path) -> None:
    devices_csv(tmp_path / "devices.csv", 5, seed=4)
    passed = time.strftime("%H:%M", time.localtime(time.time() - 120))
    done = run(str(tmp_path / "devices.csv"), "--target", "all-devices", "--graph-url", emulator.base_url,
               "--out", str(tmp_path / "out"), "--deadline", passed)
    assert done.returncode == 0, done.stderr
    assert summary(tmp_path / "out")["settings"]["deadline"] is not None  # type: ignore[index]


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_lives(emulator: Emulator,
                                                                          tmp_path: Path) -> None:
    devices_csv(tmp_path / "devices.csv", 300, seed=5)
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--graph-url", emulator.base_url,
            "--rate", "30/1s", "--out", str(out)]
    first = start(*args)
    try:
        wait_for_records(out, 1)
        second = run(*args, "--resume")
        assert second.returncode == 2
        assert str(out) in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    after = run(*args, "--resume")  # the dead holder's lock is free again
    assert after.returncode == 0, after.stderr


def test_rerunning_into_a_folder_with_results_needs_resume(emulator: Emulator, tmp_path: Path) -> None:
    devices_csv(tmp_path / "devices.csv", 5, seed=6)
    args = [str(tmp_path / "devices.csv"), "--target", "all-devices", "--graph-url", emulator.base_url,
            "--out", str(tmp_path / "out")]
    assert run(*args).returncode == 0
    again = run(*args)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert emulator.counters.devices_assigned_twice == 0


def test_failure_brake_stops_a_run_where_most_devices_fail(tmp_path: Path) -> None:
    ids = devices_csv(tmp_path / "devices.csv", 1000, seed=7)
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0),
                            inventory=frozenset(ids[:20]), token=TOKEN)
    with threaded_emulator(config) as emu:
        done = run(str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--graph-url", emu.base_url,
                   "--out", str(tmp_path / "out"), "--concurrency", "4")
    assert done.returncode == 4, done.stderr
    result = summary(tmp_path / "out")
    assert result["stopped_reason"] == "failure-rate" and "ResourceNotFound" in str(result["stop_detail"])
    assert result["counts"]["failed"] < 100 and result["remaining"] > 800  # type: ignore[index,operator]


def test_job_file_options_with_flags_winning_and_no_secrets(emulator: Emulator, tmp_path: Path) -> None:
    ids = devices_csv(tmp_path / "devices.csv", 10, seed=8)
    job = tmp_path / "job.toml"
    job.write_text(f'input = "devices.csv"\ntarget = "group:{GROUP}"\ngraph-url = "{emulator.base_url}"\n'
                   f'rate = "1000/1s"\nout = "reports"\nconcurrency = 2\n')
    done = subprocess.run([sys.executable, "-m", "bulk_assign", "run", "--config", str(job), "--concurrency", "3"],
                          capture_output=True, text=True, env=env(), timeout=60, cwd=tmp_path.parent)
    assert done.returncode == 0, done.stderr
    result = summary(tmp_path / "reports")  # relative to the job file, not the working directory
    assert result["counts"]["succeeded"] == 10  # type: ignore[index]
    assert result["settings"]["concurrency"] == 3 and result["settings"]["rate"] == "1000/1s"  # type: ignore[index]
    assert all(emulator.assignments(d) for d in ids)
    job.write_text('target = "all-devices"\nclient-secret = "hunter2"\n')
    refused = run("--config", str(job))
    assert refused.returncode == 2 and "environment" in refused.stderr and "hunter2" not in refused.stderr


def test_a_run_killed_before_its_first_answer_leaves_a_folder_that_needs_resume(tmp_path: Path) -> None:
    """Hardening #1: the journal (intents, no outcome yet) is a sign of an earlier run, not only results."""
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN,
                            latency_ms=3000)
    ids = devices_csv(tmp_path / "devices.csv", 20, seed=9)
    out = tmp_path / "out"
    with threaded_emulator(config) as emu:
        args = [str(tmp_path / "devices.csv"), "--target", f"group:{GROUP}", "--graph-url", emu.base_url,
                "--out", str(out), "--concurrency", "20"]
        proc = start(*args)
        deadline = time.monotonic() + 30
        while not emu.counters.commits_per_device and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert emu.counters.commits_per_device, "no request reached the emulator"
        assert not (out / "results.jsonl").exists() or (out / "results.jsonl").stat().st_size == 0
        again = run(*args)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "--resume" in again.stderr and "Traceback" not in again.stderr
        assert emu.counters.devices_assigned_twice == 0
        resumed = run(*args, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert emu.counters.devices_assigned_twice == 0
        assert set(emu.counters.commits_per_device) == set(ids)


def test_resume_keeps_every_invalid_item_of_a_one_line_json_array(emulator: Emulator, tmp_path: Path) -> None:
    """Hardening #6, end to end: 16 invalid items on line 1 of a JSON array stay 16 rows after --resume."""
    valid = [str(uuid.uuid4()) for _ in range(2)]
    (tmp_path / "devices.json").write_bytes(orjson.dumps([f"bad-{i}" for i in range(16)] + valid))
    args = [str(tmp_path / "devices.json"), "--target", f"group:{GROUP}", "--graph-url", emulator.base_url,
            "--out", str(tmp_path / "out")]
    assert run(*args).returncode == 1
    again = run(*args, "--resume")
    assert again.returncode == 1, again.stderr
    with open(tmp_path / "out" / "invalid.csv", encoding="utf-8") as handle:
        rows = handle.read().splitlines()[1:]
    assert sorted(row.split(",")[1] for row in rows) == sorted(f"bad-{i}" for i in range(16))
    assert summary(tmp_path / "out")["counts"]["invalid"] == 16  # type: ignore[index]


_KILL_IN_INDEX = """
import os, signal, sys
from bulk_assign.store import index
where, after = sys.argv.pop(1), int(sys.argv.pop(1))
real_line, real_copy, real_commit, seen = index.IndexWriter._line, index.IndexWriter.copy, index.IndexWriter.commit, [0]
def line(self, data):
    seen[0] += 1
    if where == "entries" and seen[0] == after:
        self._drain()
        self._handle.flush()  # half a new index on disk beside the old one
        os.kill(os.getpid(), signal.SIGKILL)
    real_line(self, data)
def copy(self, lines):  # a first run's index is copied a block of lines at a time
    count = lines.count(b"\\n")
    if where == "entries" and seen[0] < after <= seen[0] + count:
        real_copy(self, b"".join(lines.splitlines(keepends=True)[: after - seen[0]]))
        self._handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    seen[0] += count
    real_copy(self, lines)
def commit(self, header):
    if where == "commit":  # every entry written, not yet renamed over the old index
        self._drain()
        self._handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_commit(self, header)
index.IndexWriter._line, index.IndexWriter.copy, index.IndexWriter.commit = line, copy, commit
from bulk_assign.cli.main import main
sys.argv[0] = "bulk-assign"
main()
"""


@pytest.mark.parametrize("where", ["entries", "commit"])
def test_sigkill_while_the_index_is_rewritten_then_resume(emulator: Emulator, tmp_path: Path, where: str) -> None:
    """Issue 15: the folder index is a cache. A kill while a first run and then a resume rewrite it leaves
    the old index (or none) and a stray temporary file; the next resume removes that file, catches up from
    results.jsonl and journal.log, assigns nothing twice and shows every device once."""
    from bulk_assign.store.history import load_history
    from bulk_assign.store.index import INDEX_NAME, read_header

    ids = devices_csv(tmp_path / "devices.csv", 60, seed=21)
    out = tmp_path / "out"
    args = ["--target", f"group:{GROUP}", "--graph-url", emulator.base_url, "--out", str(out)]

    def killed(*extra: str) -> None:
        done = subprocess.run([sys.executable, "-c", _KILL_IN_INDEX, where, "25", "run", *extra], env=env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, done.stderr

    first = tmp_path / "first.csv"
    first.write_text("deviceId\n" + "\n".join(ids[:40]) + "\n")
    killed(str(first), *args)  # the first run's index is never renamed into place
    assert not (out / INDEX_NAME).exists()
    assert run(str(first), *args, "--resume").returncode == 0
    index_before = (out / INDEX_NAME).read_bytes()
    killed(str(tmp_path / "devices.csv"), *args, "--resume")  # 20 new devices sent, the index rewrite killed
    assert (out / INDEX_NAME).read_bytes() == index_before
    assert list(out.glob(".index.txt.*.tmp"))  # the killed rewrite's temporary file
    final = run(str(tmp_path / "devices.csv"), *args, "--resume")
    assert final.returncode == 0, final.stderr
    assert not list(out.glob(".*.tmp"))  # removed by the next run, under the folder lock
    assert emulator.counters.devices_assigned_twice == 0
    assert set(emulator.counters.commits_per_device) == set(ids)
    with open(out / "results.csv", encoding="utf-8") as handle:
        shown = [line.split(",")[:2] for line in handle.read().splitlines()[1:]]
    assert sorted(device for device, _ in shown) == sorted(ids) and {status for _, status in shown} == {"succeeded"}
    merged = summary(out)
    assert merged["counts"]["succeeded"] == 60 and merged["remaining"] == 0  # type: ignore[index]
    assert read_header(out, out / "results.jsonl", out / "journal.log") is not None
    from_index = load_history(out)
    (out / INDEX_NAME).unlink()
    rebuilt = load_history(out)
    assert set(from_index.succeeded) == set(rebuilt.succeeded) and len(rebuilt.succeeded) == 60
    assert set(from_index.in_doubt) == set(rebuilt.in_doubt)


@pytest.mark.timeout(300)
def test_group_tags_sigkill_then_resume_tags_nobody_twice(tmp_path: Path) -> None:
    """Issue 12: kills against ambiguous faults, each followed by --resume: every device carries the tag,
    has one record, and no device's tag was written twice (a resume reads the tenant's current tags)."""
    n = 300
    ids = devices_csv(tmp_path / "devices.csv", n, seed=3)
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN,
                            faults=0.05, fault_kinds=("ambiguous-504", "ambiguous-reset", "503", "reset"),
                            latency_ms=400, seed=5, inventory={d: {"groupTag": "old"} for d in ids})
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--group-tag", "wave1", "--rate", "60/1s", "--concurrency", "16",
            "--out", str(out)]
    rng = random.Random(11)
    with threaded_emulator(config) as emu:
        # with 400 ms answers, about 24 writes are in flight at a kill
        final = kill_then_resume([*args, "--graph-url", emu.base_url], out, rng)
        assert final.returncode == 0, final.stderr
        assert all(emu.tenant.device_record(d)["groupTag"] == "wave1" for d in ids)
        writes = emu.tenant.counters.tag_writes_per_device
        landed_unseen = emu.tenant.counters.ambiguous_commits  # committed, but the client saw a failure
    # a committed tag is written again only after an answer that hid it (then resent, idempotently), never
    # by a resume that read the tags from before its own writes
    assert sum(writes.values()) <= n + landed_unseen
    merged = summary(out)
    assert merged["remaining"] == 0 and merged["counts"]["succeeded"] + merged["counts"]["skipped"] == n  # type: ignore[index,operator]
    # every device had another tag before the folder: one that carries ours on a resume is ours, landed
    assert "already_tagged" not in merged["skipped_by_reason"]  # type: ignore[operator]


@pytest.mark.timeout(300)
def test_members_sigkill_then_resume_adds_nobody_twice(tmp_path: Path) -> None:
    """Issue 12: --add-to-group killed at random points against ambiguous faults on directory writes, each
    followed by --resume: every device ends a member with one record, Entra never saw a member added twice,
    and the devices whose adds landed unseen are told from those that were members before the run."""
    from bulk_assign.emulator.directory import entra_device_id, object_id

    n, group = 300, "bbbbbbbb-0000-4000-8000-00000000000a"
    ids = devices_csv(tmp_path / "devices.csv", n, seed=7)
    before = {object_id(entra_device_id(ids[i])) for i in (0, 150)}
    fast = Rate(100_000, 1.0)
    config = EmulatorConfig(app_rate=fast, tenant_rate=fast, token=TOKEN, faults=0.1, latency_ms=400, seed=9,
                            fault_kinds=("ambiguous-504", "ambiguous-reset", "503", "reset"),
                            inventory={d: {"serialNumber": f"S{i}"} for i, d in enumerate(ids)},
                            static_groups={group: frozenset(before)}, directory_read_rate=None,
                            directory_write_rate=None)
    out = tmp_path / "out"
    args = [str(tmp_path / "devices.csv"), "--add-to-group", group, "--directory-rate", "4/1s",
            "--concurrency", "4", "--out", str(out)]
    rng = random.Random(13)
    with threaded_emulator(config) as emu:
        final = kill_then_resume([*args, "--graph-url", emu.base_url], out, rng)
        assert final.returncode == 0, final.stderr
        members = set(emu.tenant.directory.members(group))
        counters = emu.tenant.counters
        assert members == {object_id(entra_device_id(d)) for d in ids}
        assert counters.member_adds_max == 1 and sum(counters.member_adds.values()) == n - 2
    merged = summary(out)
    assert merged["remaining"] == 0  # type: ignore[comparison-overlap]
    reasons = merged["skipped_by_reason"]
    assert isinstance(reasons, dict) and reasons.get("already_member") == 2
    assert merged["counts"]["succeeded"] + merged["counts"]["skipped"] == n  # type: ignore[index,operator]
