"""The CLI as users run it: a real process, real files, the emulator on loopback; exit codes per design.md."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from emulator_thread import threaded_emulator

from bulk_assign.config import Rate
from bulk_assign.emulator import Emulator, EmulatorConfig

GROUP = "11111111-2222-3333-4444-555555555555"
TOKEN = "cli-test-token"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(app_rate=Rate(100_000, 1.0), tenant_rate=Rate(100_000, 1.0), token=TOKEN)
    with threaded_emulator(config) as emu:
        yield emu


def bulk_assign(*args: str, token: str | None = TOKEN, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    if token is not None:
        env["BULK_ASSIGN_ACCESS_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "bulk_assign", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def write_csv(path: Path, ids: list[str], header: str = "Device ID") -> Path:
    path.write_text(header + "\n" + "\n".join(ids) + "\n")
    return path


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_exit_0_when_every_device_succeeds(emulator: Emulator, tmp_path: Path) -> None:
    devices = ids(30)
    out = tmp_path / "out"
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", devices)), "--target", f"group:{GROUP}",
                       "--graph-url", emulator.base_url, "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["counts"]["succeeded"] == 30 and summary["exit_code"] == 0
    assert all(emulator.assignments(d) for d in devices)
    assert str(out) in done.stdout
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["source_line"] for r in rows] == [str(i) for i in range(2, 32)] or len(rows) == 30


def test_the_readme_rollout_sequence_and_read_before_write(emulator: Emulator, tmp_path: Path) -> None:
    """The README's sequence (a canary with ``--limit 20``, then ``--resume`` into the same ``--out``), a plain
    rerun into a new folder (read-before-write, the default, writes nothing), and ``--no-read-before-write``."""
    devices = ids(30)
    csv_file = write_csv(tmp_path / "d.csv", devices)
    common = ("--target", f"group:{GROUP}", "--graph-url", emulator.base_url, "--no-preflight")
    wave = str(tmp_path / "wave1")
    assert bulk_assign("run", str(csv_file), *common, "--limit", "20", "--out", wave).returncode == 0
    done = bulk_assign("run", str(csv_file), *common, "--out", wave, "--resume")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads((tmp_path / "wave1" / "summary.json").read_bytes())
    assert summary["counts"]["succeeded"] == 30 and summary["settings"]["read_before_write"] is True
    commits = emulator.counters.commits_per_device
    assert [commits.get(d) for d in devices] == [1] * 30
    again = tmp_path / "again"
    assert bulk_assign("run", str(csv_file), *common, "--out", str(again)).returncode == 0
    summary = orjson.loads((again / "summary.json").read_bytes())
    assert summary["skipped_by_reason"] == {"already_assigned": 30} and summary["requests_sent"] == 0
    assert summary["verifications"] == 30 and [commits.get(d) for d in devices] == [1] * 30
    off = tmp_path / "off"
    done = bulk_assign("run", str(csv_file), *common, "--out", str(off), "--no-read-before-write", "--limit", "2")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads((off / "summary.json").read_bytes())
    assert summary["verifications"] == 0 and summary["settings"]["read_before_write"] is False
    assert [commits.get(d) for d in devices[:3]] == [2, 2, 1]  # what the reads prevent


def test_exit_1_when_rows_are_invalid_and_reports_name_them(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", [*ids(3), "not-a-guid"])), "--target",
                       f"group:{GROUP}", "--graph-url", emulator.base_url, "--out", str(out))
    assert done.returncode == 1, done.stderr
    with open(out / "invalid.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["source_line"] == "5" and row["raw"] == "not-a-guid" and row["error_code"] == "InvalidGuid"


def test_exit_3_when_graph_rejects_the_token(emulator: Emulator, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", ids(5))), "--target", f"group:{GROUP}",
                       "--graph-url", emulator.base_url, "--out", str(out), token="some-other-token")
    assert done.returncode == 3
    assert "some-other-token" not in done.stdout + done.stderr + (out / "run.log").read_text()
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["remaining"] == 5 and summary["exit_code"] == 3


def test_dry_run_needs_no_token_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    before = emulator.counters.requests
    out = tmp_path / "out"
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", ids(4))), "--target", "all-devices",
                       "--graph-url", emulator.base_url, "--out", str(out), "--dry-run", token=None)
    assert done.returncode == 0, done.stderr
    assert emulator.counters.requests == before
    assert orjson.loads((out / "summary.json").read_bytes())["counts"]["planned"] == 4


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ("", "empty.csv", "empty.csv"),
        ("Asset,Model\nA1,B2\n", "noid.csv", "line 1"),
        ('[{"id": "x"', "broken.json", "broken.json, line 1"),
        ("\xff\xfeh\x00", "utf16.csv", "utf16.csv"),
    ],
)
def test_exit_2_for_unreadable_input_names_file_and_line(tmp_path: Path, content: str, name: str,
                                                         expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    done = bulk_assign("run", str(path), "--target", "all-devices", "--graph-url", "http://127.0.0.1:9/beta")
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--target", "groups:abc"], "unknown target kind"),
        (["--target", "group:not-a-guid"], "group object id"),
        (["--target", "all-devices", "--rate", "fast"], "not a rate"),
        (["--target", "all-devices", "--graph-url", "http://graph.example.com/beta"], "only allowed on loopback"),
        (["--target", "all-devices", "--filter", "abc:include"], "--filter"),
        ([], "--target is required"),
        # hardening #11: options that silently meant something dangerous
        (["--target", "all-devices", "--rate", "100"], "needs its unit of time, e.g. 100/20s"),
        (["--target", "all-devices", "--max-runtime", "6"], "--max-runtime '6': needs a unit of time"),
        (["--target", "all-devices", "--graph-url", "https://graph.microsoft.com"], "must end in the API version"),
        (["--target", "5d2f3a1e-8c4b-4e7a-9f10-2b3c4d5e6f70"], "group:5d2f3a1e-8c4b-4e7a-9f10-2b3c4d5e6f70"),
    ],
)
def test_exit_2_for_bad_options_with_a_clear_message(tmp_path: Path, args: list[str], expected: str) -> None:
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", ids(2))), *args)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rate_above_intunes_budget_warns_once(tmp_path: Path) -> None:
    """Hardening #11: a rate above 100/20s per app towards a real tenant is said once, then the run goes on."""
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", ids(2))), "--target", "Group:" + ids(1)[0],
                       "--rate", "100/1s", "--dry-run", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("20x Intune's documented budget") == 1


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    done = bulk_assign("run", str(tmp_path / "nope.csv"), "--target", "all-devices")
    assert done.returncode == 2 and "nope.csv" in done.stderr and "Traceback" not in done.stderr


def test_no_credentials_exits_3_before_sending(emulator: Emulator, tmp_path: Path) -> None:
    before = emulator.counters.requests
    done = bulk_assign("run", str(write_csv(tmp_path / "d.csv", ids(2))), "--target", "all-devices",
                       "--graph-url", emulator.base_url, "--out", str(tmp_path / "o"), token=None)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert emulator.counters.requests == before


def test_demo_rehearsal_behaves_as_designed(tmp_path: Path) -> None:
    done = bulk_assign("demo", "--out", str(tmp_path / "demo"), token=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "behaved as designed" in done.stdout
    assert str(tmp_path / "demo" / "report.html") in done.stdout.replace("\n", "")
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "ResourceNotFound" in page and 'id="chart-throughput"' in page  # the 404s and the throughput chart
    summary = orjson.loads((tmp_path / "demo" / "summary.json").read_bytes())
    assert summary["counts"]["invalid"] == 8 and summary["skipped_by_reason"]["duplicate"] == 10
    serials = orjson.loads((tmp_path / "demo" / "serials" / "summary.json").read_bytes())
    assert serials["inventory"]["source"] == "listing" and serials["inventory"]["pages"] == 2
    assert "UTF-16LE" in serials["input"] and "serial numbers" in serials["input"]
    assert serials["profile_assignment"]["created"] is True  # the documented route: profile to dynamic group
    assert serials["counts"]["succeeded"] == 200 and serials["settings"]["group_tag_column"] == "Group Tag"
    status = orjson.loads((tmp_path / "demo" / "status" / "status-summary.json").read_bytes())
    assert status["by_state"] == {"assigned": 200, "unknown_device": 2, "ambiguous_serial": 1}
    members = orjson.loads((tmp_path / "demo" / "members" / "summary.json").read_bytes())  # static membership
    assert members["settings"]["add_to_group"] and members["membership"]["members_before"] == 5
    assert members["skipped_by_reason"].get("already_member") == 5 and members["counts"]["invalid"] == 1
    assert members["profile_assignment"]["created"] is True
    joined = orjson.loads((tmp_path / "demo" / "members-status" / "status-summary.json").read_bytes())
    assert joined["by_state"] == {"assigned": 99}


def test_subcommands_load_when_asked_for_and_help_lists_them_all() -> None:
    """``run`` starts without importing the other subcommands' modules (the emulator among them); ``--help``
    still lists every command, and each one runs."""
    probe = ("import sys, bulk_assign.cli.main as m; "
             "print(sorted(n for n in sys.modules if n.startswith(('bulk_assign.emulator', 'bulk_assign.cli.'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "bulk_assign.emulator" not in loaded and "bulk_assign.cli.demo" not in loaded, loaded
    assert "bulk_assign.cli.run" in loaded  # the probe sees what it should
    listing = bulk_assign("--help")
    assert listing.returncode == 0
    commands = {line.split()[0] for line in listing.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert commands == {"demo", "emulator", "inventory", "login", "logout", "report", "run", "status", "undo",
                        "whoami"}
    for name in ("emulator", "undo", "report"):
        assert bulk_assign(name, "--help").stdout.startswith(f"Usage: python -m bulk_assign {name}")
