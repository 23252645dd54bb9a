"""Command line: parse arguments, build settings, run the engine coroutine, map the outcome to an exit code.

Nothing here decides anything about devices; it only translates between a shell and the engine. Every
``BulkAssignError`` becomes one clear line on stderr and its exit code (design.md), never a traceback.
Options default to None so that, later, a job file (click's ``default_map``) sits between flags/env and
the defaults of ``Settings``: flag > environment > job file > default.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .auth import TokenProvider
from .auth.cli import auth_options, auth_options_from, login_command, logout_command, whoami_command
from .auth.options import build_token_provider, graph_url_for
from .config import Settings
from .engine import BulkAssigner, Progress
from .errors import BulkAssignError, UsageError
from .models import AssignmentTarget
from .progress import LogProgress, RichProgress, summary_table
from .readers import InputPlan, read_input, scan_input
from .reports import Summary

log = logging.getLogger("bulk_assign")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bulk-assign")
def cli() -> None:
    """Assign Windows Autopilot deployment profiles to devices in bulk through Microsoft Graph."""


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``run`` (and, in part, ``demo``), in the spelling of design.md."""
    options = [
        click.option("--target", help="group:<guid> | exclude-group:<guid> | all-devices | all-licensed-users | "
                     "collection:<id>"),
        click.option("--filter", "filter_", metavar="GUID:include|exclude", help="assignment filter on the target"),
        click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), help="default: from extension"),
        click.option("--id-column", help="CSV column or JSON field with the device identity id (auto-detected)"),
        click.option("--graph-url", envvar="BULK_ASSIGN_GRAPH_URL", help="versioned Graph root [default: "
                     "https://graph.microsoft.com/beta]"),
        click.option("--concurrency", type=click.IntRange(1, 512), help="requests in flight [default: 8]"),
        click.option("--rate", help='write budget "at most N in any T", e.g. 100/20s [default: 100/20s]'),
        click.option("--max-attempts", type=click.IntRange(1, 100), help="sends per device, 429s excluded [default: 8]"
                     ),
        click.option("--limit", type=click.IntRange(1), help="only the first N valid devices (a canary)"),
        click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), help="trust a private CA"),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="report folder [default: ./bulk-assign-results/<timestamp>]"),
        click.option("--dry-run", is_flag=True, default=None, help="validate and report what would be sent; no network"
                     ),
        click.option("--batch", is_flag=True, default=None,
                     help="JSON batching: up to 20 assignments per request (each still paced and reported)"),
        click.option("--no-verify", is_flag=True, default=None,
                     help="resend possibly-committed failures without reading back first"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@run_options
@auth_options
def run_command(input_path: Path, **options: Any) -> None:
    """Assign the target to every device id in INPUT (CSV, JSON or JSON Lines)."""
    _exit(_run_cli(input_path, options))


def _run_cli(input_path: Path, options: dict[str, Any]) -> int:
    try:
        plan = scan_input(input_path, fmt=options.pop("fmt"), id_column=options.pop("id_column"))
        auth = auth_options_from(options, ca_bundle=options.get("ca_bundle"))
        options["graph_url"] = graph_url_for(auth, options.get("graph_url"))
        settings = settings_from(options)
        progress = make_progress()
        tokens = None
        if not settings.dry_run:
            estimate = plan.total_rows / settings.rate.per_second
            tokens = build_token_provider(auth, run_seconds_estimate=estimate, warn=_warn)
        summary = asyncio.run(run_plan(plan, settings, tokens, progress=progress))
    except BulkAssignError as exc:
        click.echo(f"bulk-assign: {exc}", err=True)
        return exc.exit_code
    print_summary(summary)
    return summary.exit_code


def settings_from(options: dict[str, Any]) -> Settings:
    """Flags (None = not given) -> Settings; unknown target spellings and bad values become UsageError."""
    target_spec = options.pop("target", None)
    if not target_spec:
        raise UsageError("--target is required (e.g. --target group:<group-object-id>)")
    target = AssignmentTarget.parse(target_spec, options.pop("filter_", None))
    if options.pop("no_verify", None):
        options["verify"] = False
    values = {k: v for k, v in options.items() if v is not None}
    values.setdefault("out_dir", Path("bulk-assign-results") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Settings.build(target=target, **values)


def _warn(message: str) -> None:
    log.warning("%s", message)
    click.echo(f"bulk-assign: warning: {message}", err=True)


async def run_plan(plan: InputPlan, settings: Settings, tokens: TokenProvider | None,
                   progress: Progress | None = None) -> Summary:
    """Run the engine over a scanned input file and return the summary."""
    async with BulkAssigner(settings, token_provider=tokens, progress=progress) as engine:
        try:
            async for _ in engine.run(read_input(plan), total=plan.total_rows):
                pass
        except BulkAssignError:
            if engine.summary is None:
                raise
    assert engine.summary is not None
    return engine.summary


def make_progress() -> Progress:
    """Rich display on a terminal; otherwise plain INFO lines on stderr every 10 s."""
    console = Console(stderr=True)
    if console.is_terminal:
        _log_to_stderr(logging.WARNING)
        return RichProgress(console)
    _log_to_stderr(logging.INFO)
    return LogProgress()


def _log_to_stderr(level: int) -> None:
    logger = logging.getLogger("bulk_assign")
    if not any(getattr(h, "_bulk_assign_stderr", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._bulk_assign_stderr = True  # type: ignore[attr-defined]
        handler.setLevel(level)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def print_summary(summary: Summary) -> None:
    console = Console(stderr=False)
    console.print(summary_table(summary))
    if summary.out_dir:
        console.print(f"reports: {summary.out_dir}")


def _exit(code: int) -> None:
    sys.exit(code)


def _register() -> None:
    from .demo import demo_command
    from .emulator.cli import emulator_command

    cli.add_command(emulator_command, "emulator")
    cli.add_command(login_command, "login")
    cli.add_command(logout_command, "logout")
    cli.add_command(whoami_command, "whoami")
    cli.add_command(demo_command, "demo")


def main() -> None:
    """Console-script entry point."""
    _register()
    cli.main(standalone_mode=True)
