"""``bulk-assign status INPUT``: what Intune says about every device of INPUT, optionally waiting for it.

The command reads the tenant's listing (one read serves all devices) through the same reader, budget and
retry rules as a run; the decisions live in ``pipeline/status.py``. Exit codes: 1 some device is not
assigned, failed, unknown to the tenant, ambiguous or invalid; 4 some are still pending; 0 all assigned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..auth import TokenProvider
from ..auth.cli import auth_options, auth_options_from
from ..auth.options import build_token_provider, graph_url_for
from ..config import Settings, parse_duration
from ..errors import BulkAssignError, UsageError
from ..graph.transport import open_transport
from ..guid import normalize_guid
from ..inputs.readers import InputPlan, read_input, scan_input
from ..pipeline.listing import ListingReader
from ..pipeline.pacing import LimiterPacer
from ..pipeline.status import EXIT_MEANINGS, STATUS_COLUMNS, StatusBook, check_profiles, watch
from ..redact import redact
from ..store.report_html import write_report_quietly
from ..store.status import write_status
from .run import log_to_stderr

log = logging.getLogger("bulk_assign")


def read_options(f: Any) -> Any:
    """Where and how fast to read: shared by ``status`` and ``inventory``."""
    for option in reversed([
        click.option("--graph-url", envvar="BULK_ASSIGN_GRAPH_URL", help="versioned Graph root [default: "
                     "https://graph.microsoft.com/beta]"),
        click.option("--read-rate", help="read budget, N/T [default: 500/20s]"),
        click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), help="trust a private CA"),
    ]):
        f = option(f)
    return auth_options(f)


def read_settings(options: dict[str, Any], **more: Any) -> tuple[Settings, TokenProvider]:
    """Settings for a command without a target (status, inventory, undo) and its token provider; ``estimate``
    (seconds the command may take) lets a static token that would expire before it be warned about."""
    estimate = float(more.pop("estimate", 0) or 0)
    auth = auth_options_from(options, ca_bundle=options.get("ca_bundle"))
    values = {"graph_url": graph_url_for(auth, options.get("graph_url")), "read_rate": options.get("read_rate"),
              "ca_bundle": options.get("ca_bundle"), **more}
    settings = Settings.build(**{k: v for k, v in values.items() if v is not None})
    tokens = build_token_provider(auth, run_seconds_estimate=estimate or None, warn=_warn)
    return settings, tokens


def listing_reader(settings: Settings, tokens: TokenProvider) -> tuple[ListingReader, Any]:
    transport = open_transport(settings)
    return ListingReader(settings, transport=transport, tokens=tokens, pacer=LimiterPacer(settings.read_rate),
                         sleep=asyncio.sleep), transport


@click.command("status")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", metavar="DURATION", help="poll until every device is assigned, at most this long (e.g. 30m)")
@click.option("--interval", metavar="DURATION", default="30s", show_default=True,
              help="first wait between polls (it backs off by half each time, up to 5 min)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="where status.csv/.jsonl go [default: ./bulk-assign-results/status-<timestamp>]")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), help="default: from extension")
@click.option("--id-column", help="CSV column or JSON field with the ids or serials (auto-detected)")
@click.option("--id-type", type=click.Choice(["id", "serial"]), help="what the column holds [default: detected]")
@click.option("--expect-profile", metavar="PROFILE_ID",
              help="also read each assigned device's deploymentProfile; another profile is wrong_profile")
@read_options
def status_command(input_path: Path, wait: str | None, interval: str, out_dir: Path | None, fmt: str | None,
                   id_column: str | None, id_type: str | None, expect_profile: str | None, **options: Any) -> None:
    """Report what Intune says about every device in INPUT (ids or serials)."""
    try:
        seconds = parse_duration(wait) if wait else None
        step = parse_duration(interval)
        if step <= 0:
            raise ValueError("--interval must be longer than 0 s")
        expected = normalize_guid(expect_profile) if expect_profile else None
        if expect_profile and expected is None:
            raise ValueError(f"--expect-profile {expect_profile!r}: a deployment profile id is a GUID")
    except ValueError as exc:
        raise SystemExit(_fail(UsageError(str(exc)))) from None
    try:
        plan = scan_input(input_path, fmt=fmt, id_column=id_column, id_type=id_type)  # type: ignore[arg-type]
        click.echo(f"bulk-assign: input {plan.describe()}", err=True)
        out = out_dir or Path("bulk-assign-results") / datetime.now().strftime("status-%Y%m%d-%H%M%S")
        settings, tokens = read_settings(options, estimate=seconds or 60)
        log_to_stderr()
        summary = asyncio.run(check_status(plan, settings, tokens, out, wait=seconds, interval=step,
                                           expect_profile=expected))
    except BulkAssignError as exc:
        raise SystemExit(_fail(exc)) from None
    raise SystemExit(int(summary["exit_code"]))


async def check_status(plan: InputPlan, settings: Settings, tokens: TokenProvider, out: Path, *,
                       wait: float | None, interval: float, expect_profile: str | None = None) -> dict[str, Any]:
    """Poll, optionally check profiles, write the status files into ``out``; the status summary (also
    ``status-summary.json``). Shared by ``status`` and ``run --wait-assigned``."""
    reader, transport = listing_reader(settings, tokens)
    book = StatusBook(read_input(plan))
    started = time.monotonic()
    profiles_read = 0
    try:
        with StatusDisplay() as display:
            polls = await watch(book, reader.read_all, wait=wait, interval=interval, on_poll=display.update)
        if expect_profile is not None:
            profiles_read = await check_profiles(book, reader.get, settings.graph_url, expect_profile)
    finally:
        await transport.close()
    code = book.exit_code()
    summary: dict[str, Any] = {
        "checked_at": datetime.now().astimezone().isoformat(timespec="seconds"), "rows": len(book.records),
        "by_state": book.counts(), "by_assignment_status": book.by_graph_status(), "polls": polls,
        "waited_seconds": round(time.monotonic() - started, 1), "expect_profile": expect_profile,
        "profiles_read": profiles_read, "exit_code": code, "exit_meaning": EXIT_MEANINGS[code],
        "polls_over_time": book.history}
    write_status(out, book.records, STATUS_COLUMNS, summary)
    if (page := write_report_quietly(out)) is not None:  # the status section, with its chart over the polls
        click.echo(f"report: {page}")
    Console().print(_table(book))
    click.echo(f"status: {out / 'status.csv'}; exit {code}: {EXIT_MEANINGS[code]}")
    return summary


class StatusDisplay:
    """A live table of the counts on a terminal (redrawn after every poll); a log line per poll otherwise."""

    def __init__(self) -> None:
        console = Console(stderr=True)
        self._live = Live(Table(), console=console, auto_refresh=False, transient=True) \
            if console.is_terminal else None

    def __enter__(self) -> StatusDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, book: StatusBook, polls: int, left: float | None) -> None:
        if self._live is not None:
            waiting = f", {left:.0f} s of the wait left" if left is not None and left > 0 and book.moving() else ""
            self._live.update(_table(book, f"poll {polls}{waiting}"), refresh=True)
        else:
            _show(book, polls, left)


def _table(book: StatusBook, title: str = "devices by state") -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("devices", justify="right")
    for state, count in book.counts().items():
        table.add_row(state, f"{count:,}")
    return table


def _show(book: StatusBook, polls: int, left: float | None) -> None:
    counts = ", ".join(f"{k} {v:,}" for k, v in book.counts().items())
    tail = f"; {left:.0f} s of the wait left" if left is not None and left > 0 and book.moving() else ""
    log.info("status poll %d: %s%s", polls, counts, tail)


def _fail(exc: BulkAssignError) -> int:
    click.echo(f"bulk-assign: {redact(str(exc))}", err=True)
    return exc.exit_code


def _warn(message: str) -> None:
    log.warning("%s", message)
