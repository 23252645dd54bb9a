"""report.html: the pure parts (theoretical minimum, the failure cap, escaping), and the page of a real run
opened in headless Chromium (no console errors, a data mark per time bucket, the 404s listed, no network).

The browser test needs Debian's ``chromium``; without it the test is skipped, unless
``BULK_ASSIGN_REQUIRE_BROWSER=1`` (set by ``.ci/run``), under which a missing browser fails it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import uuid
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulk_assign import BulkAssigner
from bulk_assign.config import Rate, Settings
from bulk_assign.inputs.readers import read_input, scan_input
from bulk_assign.models import FAILURE_COLUMNS, AssignmentTarget
from bulk_assign.store.report_data import load_report_data, next_step, pace_text, read_failures
from bulk_assign.store.report_html import build_report
from bulk_assign.store.reports import read_jsonl
from bulk_assign.store.timeline import read_timeline

TARGET = AssignmentTarget.parse("group:11111111-2222-3333-4444-555555555555")
BROWSER_HINT = ("Chromium is not installed: `apt-get install -y chromium` (Debian) runs this test; "
                "BULK_ASSIGN_REQUIRE_BROWSER=1 makes a missing browser a failure (.ci/run sets it)")


# ------------------------------------------------------------------------------------------ pure parts
def test_pace_text_compares_elapsed_with_the_minimum_at_the_rate() -> None:
    rate = Rate(100, 20.0)  # 5 writes per second
    assert pace_text(6240, 30_600, rate) == \
        "104 min, 1.02× the fastest Intune allows (minimum 102 min for 30,600 writes at 100/20s)"
    assert pace_text(12.0, 50, rate).startswith("12.0 s, 1.20× the fastest")
    assert "nothing written" in pace_text(3.0, 0, rate)
    assert "nothing written" in pace_text(3.0, 10, None)


def _failures_csv(folder: Path, n: int, message: str = "not found") -> None:
    folder.mkdir(exist_ok=True)
    with open(folder / "failures.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FAILURE_COLUMNS)
        for i in range(n):
            code, status = ("ResourceNotFound", 404) if i % 3 else ("Forbidden", 403)
            writer.writerow([str(uuid.UUID(int=i + 1)), i + 2, status, code, message, f"c-{i}", f"r-{i}"])


def test_the_page_lists_the_first_1000_failures_and_counts_the_rest(tmp_path: Path) -> None:
    _failures_csv(tmp_path, 1234)
    view = read_failures(tmp_path)
    assert (len(view.rows), view.total, view.more) == (1000, 1234, 234)
    assert {c.label: c.count for c in view.classes.values()} == {"Forbidden (403)": 412, "ResourceNotFound (404)": 822}
    assert all(len(c.examples) == 3 for c in view.classes.values())
    page = build_report(tmp_path)
    assert "234 more failures are not listed here" in page
    assert page.count("<tr><td><code>") == 1000  # rows of the failures table
    assert 'href="failures.csv"' in page


def test_next_step_by_code_then_status() -> None:
    assert "does not know the device" in next_step("ResourceNotFound", 404)
    assert "permission is missing" in next_step("Forbidden", 403)
    assert "resume later" in next_step("ThrottleWaitExceeded", 429).lower()
    assert "hardware hash" in next_step("unknown_serial", None)
    assert "Microsoft support" in next_step("Weird", 502)


def test_a_message_holding_markup_is_shown_as_text_and_a_killed_run_is_said(tmp_path: Path) -> None:
    _failures_csv(tmp_path, 2, message='<script>alert("x")</script><img src=x onerror=alert(1)>')
    page = build_report(tmp_path)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page
    assert 'id="no-summary"' in page  # no summary.json: the page says the run was killed or is running
    assert len(page.encode()) < 3_000_000


def test_a_long_run_stays_small(tmp_path: Path) -> None:
    """A 1,000,000-device run at 5/s is 20,000 buckets: merged to a bounded number of points."""
    lines = [orjson.dumps({"run_id": "r", "t": "2024-01-01T00:00:00Z", "succeeded": 50, "failed": 0,
                           "invalid": 0, "skipped": 0, "planned": 0, "throttled_429": i % 7 == 0,
                           "rate": "100/20s" if i < 10_000 else "80/20s", "p50_ms": 120, "p90_ms": 300,
                           "p99_ms": 900}) for i in range(20_000)]
    # distinct bucket times
    text = b"\n".join(line.replace(b"2024-01-01T00:00:00Z", _t(i).encode()) for i, line in enumerate(lines))
    (tmp_path / "timeline.jsonl").write_bytes(text + b"\n")
    _failures_csv(tmp_path, 5000)
    page = build_report(tmp_path)
    assert len(page.encode()) < 3_000_000, len(page.encode())
    assert "each point merges" in page


def _t(i: int) -> str:
    from datetime import UTC, datetime, timedelta
    return (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=10 * i)).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ the browser
def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("BULK_ASSIGN_REQUIRE_BROWSER") == "1":
            pytest.fail(BROWSER_HINT)
        pytest.skip(BROWSER_HINT)
    return path


def open_in_chromium(page: Path, tmp_path: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The rendered DOM of ``page`` and the console errors Chromium logged while loading it."""
    profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000",
         "--dump-dom", page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line or ":ERROR:" in line)]
    return done.stdout, errors


class _Marks(HTMLParser):
    """Counts the data marks (``<use>`` markers, ``<path>`` bars) inside each element whose id starts
    with ``mark``, and the visible rows of the failures table."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.marks: Counter[str] = Counter()
        self.elements: Counter[str] = Counter()
        self.in_failures = False
        self.rows: list[bool] = []  # visible?

    _VOID = frozenset({"br", "img", "input", "meta", "link", "hr", "use", "path", "rect"})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        ident = a.get("id") or ""
        if ident.startswith("mark"):
            self.elements[ident] += 1
        owner = next((x for x in reversed(self.stack) if x), None)
        if owner is not None and tag in ("use", "path"):
            self.marks[owner] += 1
        if ident == "failures":
            self.in_failures = True
        if self.in_failures and tag == "tr" and self.stack.count("tbody"):
            self.rows.append("display: none" not in (a.get("style") or ""))
        if tag not in self._VOID:
            self.stack.append(ident if ident.startswith("mark") else ("tbody" if tag == "tbody" else None))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        owner = next((x for x in reversed(self.stack) if x), None)
        ident = a.get("id") or ""
        if ident.startswith("mark"):
            self.elements[ident] += 1
        if owner is not None and tag in ("use", "path"):
            self.marks[owner] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._VOID:
            return
        if self.stack:
            popped = self.stack.pop()
            if popped == "tbody" and self.in_failures:
                self.in_failures = False


def _marks(dom: str) -> _Marks:
    parser = _Marks()
    parser.feed(dom)
    return parser


def test_the_harness_sees_a_console_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>nosuchfunction();</script></body></html>")
    _, errors = open_in_chromium(bad, tmp_path)
    assert errors, "the console check would not see an error"


def device(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


async def test_a_throttled_run_with_404s_renders_in_chromium(start_emulator: Any, tmp_path: Path) -> None:
    chromium = _chromium()
    known = {device(i): {"serialNumber": f"PF{i:05d}", "groupTag": ""} for i in range(230)}  # ~12 s at 20/s
    unknown = [device(1000 + i) for i in range(6)]
    emu = await start_emulator(app_rate=Rate(20, 1.0), tenant_rate=Rate(100_000, 1.0), read_rate=None,
                               inventory=known)
    source = tmp_path / "devices.csv"
    source.write_text("id\n" + "\n".join([*known, *unknown]) + "\nnot-a-guid\n")
    out = tmp_path / "out"
    settings = Settings(target=TARGET, graph_url=emu.base_url, out_dir=out, rate=Rate(100_000, 1.0),
                        concurrency=16, preflight=False)
    plan = scan_input(source)
    async with BulkAssigner(settings, token_provider="t") as engine:
        async for _ in engine.run(read_input(plan), total=plan.total_rows):
            pass
    page = out / "report.html"
    assert page.exists(), "the run wrote no report.html"
    records = read_jsonl(out / "results.jsonl")
    counted = Counter(r["status"] for r in records)
    assert counted["failed"] == len(unknown) and counted["succeeded"] == len(known)
    timeline = read_timeline(out)
    assert len(timeline) >= 2, timeline
    assert sum(line["throttled_429"] for line in timeline) > 0, "no 429s: the test is not throttled"
    assert sum(sum(line[s] for s in counted) for line in timeline) == len(records)

    html = page.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I), "a remote resource"
    assert "@import" not in html and "url(http" not in html
    print(f"report.html: {len(html.encode()) / 1024:.0f} KB, {len(timeline)} bucket(s)")

    dom, errors = open_in_chromium(page, tmp_path)
    assert chromium and not errors, errors
    marks = _marks(dom)
    buckets = len(timeline)
    assert marks.marks["marks-throughput"] >= buckets, (marks.marks, buckets)
    latency_buckets = sum(1 for line in timeline if line["p50_ms"] is not None)
    for name in ("marks-latency-p50", "marks-latency-p90", "marks-latency-p99"):
        assert marks.marks[name] >= latency_buckets, (name, marks.marks, latency_buckets)
    assert marks.marks["marks-429"] >= 1
    assert sum(n for k, n in marks.elements.items() if k.startswith("mark-outcome-")) >= 1
    # the counts on the page are those the test counts from results.jsonl
    for status in ("succeeded", "failed", "invalid"):
        assert re.search(rf'data-status="{status}">{counted[status]}<', dom), status
    for device_id in unknown:
        assert device_id in dom
    assert "(404)" in dom and "does not know the device" in dom
    assert len(marks.rows) == len(unknown) and all(marks.rows)

    filtered, errors = open_in_chromium(page, tmp_path, fragment=f"#filter={unknown[2]}")
    assert not errors, errors
    rows = _marks(filtered).rows
    assert rows.count(True) == 1 and len(rows) == len(unknown)

    data = load_report_data(out)
    assert data.summary is not None and data.runs and data.runs[0].run_id == data.summary["run_id"]


def test_report_command_rebuilds_a_killed_runs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with results and a timeline but no summary.json (the run was killed): the page is built."""
    from click.testing import CliRunner

    from bulk_assign.cli.main import _register, cli

    _register()
    folder = tmp_path / "killed"
    _failures_csv(folder, 3)
    (folder / "results.jsonl").write_bytes(b"")
    (folder / "timeline.jsonl").write_bytes(orjson.dumps(
        {"run_id": "r1", "t": _t(0), "succeeded": 4, "failed": 3, "invalid": 0, "skipped": 0, "planned": 0,
         "throttled_429": 1, "rate": "100/20s", "p50_ms": 10, "p90_ms": 20, "p99_ms": 30}) + b"\n")
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    result = CliRunner().invoke(cli, ["report", str(folder), "--open"])
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="no-summary"' in page and 'data-status="failed">3<' in page
    assert opened == [(folder / "report.html").resolve().as_uri()]
    assert CliRunner().invoke(cli, ["report", str(tmp_path / "empty-does-not-exist")]).exit_code == 2
