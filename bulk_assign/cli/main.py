"""Command line: parse arguments, build settings, run the engine coroutine, map the outcome to an exit code.

Nothing here decides anything about devices; it only translates between a shell and the engine. Every
``BulkAssignError`` becomes one clear line on stderr and its exit code (docs/architecture.md), never a traceback.
Options default to None so that, later, a job file (click's ``default_map``) sits between flags/env and
the defaults of ``Settings``: flag > environment > job file > default.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import click

from ..auth.cli import auth_options, auth_options_from, login_command, logout_command, whoami_command
from ..auth.options import build_token_provider, graph_url_for
from ..config import Settings, parse_duration
from ..errors import BulkAssignError, InternalError, UsageError
from ..inputs.readers import scan_input
from ..models import AssignmentTarget
from ..pipeline.brake import parse_failure_rate
from ..pipeline.deadline import parse_deadline, parse_max_runtime
from ..redact import redact
from ..store.status import add_to_summary
from .jobfile import job_keys, job_path_keys, load_job_file
from .run import log_internal_error, make_progress, print_summary, run_plan

log = logging.getLogger("bulk_assign")


class _LazyGroup(click.Group):
    """Subcommands other than ``run`` are imported when asked for (click's documented ``get_command`` and
    ``list_commands`` hooks). Why: ``emulator``, ``demo``, ``status``, ``inventory``, ``undo`` and ``report``
    import about 0.13 s of modules that ``bulk-assign run`` never uses, and a scheduled job starts it
    every night (``--help`` lists them all, so it imports them all)."""

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "emulator": ("..emulator.cli", "emulator_command"),
        "demo": (".demo", "demo_command"),
        "status": (".status", "status_command"),
        "inventory": (".inventory", "inventory_command"),
        "undo": (".undo", "undo_command"),
        "report": (".report", "report_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, name = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module, __package__), name)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bulk-assign")
def cli() -> None:
    """Assign Windows Autopilot deployment profiles to devices in bulk through Microsoft Graph."""


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``run`` (and, in part, ``demo``), in the spelling of the README."""
    options = [
        click.option("--target", help="group:<guid> | exclude-group:<guid> | all-devices | all-licensed-users | "
                     "collection:<id>"),
        click.option("--group-tag", metavar="TAG", help="instead of --target: set this group tag on every device"),
        click.option("--group", metavar="GROUP_ID", help="with --group-tag: the dynamic group the tag brings devices "
                     "into (its rule is checked)"),
        click.option("--add-to-group", metavar="GROUP_ID",
                     help="instead of --target: add the devices' Entra objects to this static group (20 a request)"),
        click.option("--profile", metavar="PROFILE_ID",
                     help="with --add-to-group, or --group-tag and --group: assign this deployment profile to the "
                     "group, exactly once"),
        click.option("--group-tag-column", metavar="COLUMN",
                     help="instead of --target: set each row's group tag from this column (e.g. \"Group Tag\")"),
        click.option("--filter", "filter_", metavar="GUID:include|exclude", help="assignment filter on the target"),
        click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), help="default: from extension"),
        click.option("--id-column", help="CSV column or JSON field with the device identity id or serial number "
                     "(auto-detected)"),
        click.option("--id-type", type=click.Choice(["id", "serial"]),
                     help="what the column holds [default: detected; an Autopilot id column wins over serials]"),
        click.option("--inventory-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="resolve serials from this saved listing (bulk-assign inventory --out), also offline"),
        click.option("--refresh-inventory", is_flag=True, default=None,
                     help="list the tenant again instead of reusing the folder's inventory.jsonl"),
        click.option("--graph-url", envvar="BULK_ASSIGN_GRAPH_URL", help="versioned Graph root [default: "
                     "https://graph.microsoft.com/beta]"),
        click.option("--concurrency", type=click.IntRange(1, 512), help="requests in flight [default: 8]"),
        click.option("--rate", help='write budget "at most N in any T", e.g. 100/20s [default: 100/20s]'),
        click.option("--read-rate", help="budget for reads (read-before-write, read-backs), N/T [default: 5x --rate, "
                     "500/20s]"),
        click.option("--directory-rate", help="--add-to-group: Entra's write budget, N/T [default: 3000/150s, "
                     "Microsoft's published limit]"),
        click.option("--directory-read-rate", help="--add-to-group: Entra's read budget (member listing, device "
                     "lookups), N/T [default: 3500/10s]"),
        click.option("--max-attempts", type=click.IntRange(1, 100), help="sends per device, 429s excluded [default: 8]"
                     ),
        click.option("--limit", type=click.IntRange(1), help="only the first N valid devices (a canary)"),
        click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), help="trust a private CA"),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="report folder [default: ./bulk-assign-results/<timestamp>]"),
        click.option("--dry-run", is_flag=True, default=None, help="validate and report what would be sent; no network"
                     ),
        click.option("--plan", is_flag=True, default=None,
                     help="online, read-only rehearsal: list the tenant, report what would change; zero writes"),
        click.option("--batch", is_flag=True, default=None,
                     help="JSON batching: up to 20 assignments per request (each still paced and reported)"),
        click.option("--read-before-write/--no-read-before-write", default=None,
                     help="--target: read each device's assignments first; one that already has the target is "
                     "skipped (already_assigned), also when another folder or tool assigned it [default: on]"),
        click.option("--no-preflight", is_flag=True, default=None,
                     help="skip the seed call's canary reads of the first 20 devices' deployment profiles"),
        click.option("--no-verify", is_flag=True, default=None,
                     help="resend possibly-committed failures without reading back first"),
        click.option("--resume", is_flag=True, default=None,
                     help="continue the run in --out: skip devices that succeeded, read back those in doubt"),
        click.option("--deadline", metavar="HH:MM", help="local time by which to stop (past today = tomorrow)"),
        click.option("--max-runtime", metavar="DURATION", help="stop after this long, e.g. 6h or 90m"),
        click.option("--max-failure-rate", metavar="SHARE",
                     help="safety brake: stop when more than this share of devices fail [default: 50%]"),
        click.option("--drain-seconds", type=click.FloatRange(0),
                     help="how long a stop (signal, deadline) waits for devices in flight [default: 30]"),
        click.option("--wait-assigned", metavar="DURATION",
                     help="after the writes, wait until Intune says assigned (as bulk-assign status --wait)"),
        click.option("--wait-interval", metavar="DURATION", help="first wait between status polls [default: 30s]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--config job.toml``: the job file becomes click's ``default_map`` (flag > env > job file > default)."""
    if value is not None:
        assert isinstance(ctx.command, click.Command)
        try:
            values = load_job_file(value, job_keys(ctx.command), path_keys=job_path_keys(ctx.command))
        except BulkAssignError as exc:
            click.echo(f"bulk-assign: {redact(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


@cli.command("run")
@click.argument("input_path", metavar="INPUT", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), is_eager=True, expose_value=False,
              callback=_load_config, help="a TOML job file with any of these options (keys spelled as the flags)")
@run_options
@auth_options
def run_command(input_path: Path | None, **options: Any) -> None:
    """Assign the target to every device id in INPUT (CSV, JSON or JSON Lines)."""
    _exit(_run_cli(input_path, options))


def _run_cli(input_path: Path | None, options: dict[str, Any]) -> int:
    out_dir: Path | None = None
    try:
        if input_path is None:
            raise UsageError("missing INPUT: the file of device ids (or `input = ...` in the --config job file)")
        plan = scan_input(input_path, fmt=options.pop("fmt"), id_column=options.pop("id_column"),
                          id_type=options.pop("id_type", None), value_column=options.get("group_tag_column"))
        click.echo(f"bulk-assign: input {plan.describe()}", err=True)
        for warning in plan.warnings:
            click.echo(f"bulk-assign: warning: {warning}", err=True)
        auth = auth_options_from(options, ca_bundle=options.get("ca_bundle"))
        options["graph_url"] = graph_url_for(auth, options.get("graph_url"))
        wait = _wait_options(options.pop("wait_assigned", None), options.pop("wait_interval", None))
        settings = settings_from(options)
        out_dir = settings.out_dir
        progress = make_progress()
        tokens = None
        if not settings.dry_run:
            estimate = plan.total_rows / settings.rate.per_second if settings.add_to_group is None else \
                plan.total_rows / 20 / settings.directory_rate.per_second  # 20 members a directory write
            tokens = build_token_provider(auth, run_seconds_estimate=estimate, warn=_warn)
        summary = asyncio.run(run_plan(plan, settings, tokens, progress=progress))
        print_summary(summary)
        code = summary.exit_code
        if wait is not None and tokens is not None and settings.writes and summary.out_dir and code in (0, 1):
            from .status import check_status  # only with --wait-assigned (see _LazyGroup)

            status = asyncio.run(check_status(plan, settings, tokens, Path(summary.out_dir), wait=wait[0],
                                              interval=wait[1]))
            add_to_summary(Path(summary.out_dir), "status", status)
            code = max(code, int(status["exit_code"]))  # 4 when the wait ran out
    except BulkAssignError as exc:
        click.echo(f"bulk-assign: {redact(str(exc))}", err=True)
        return exc.exit_code
    except Exception as exc:  # a bug or an I/O failure outside the run: exit 5, one line, traceback in run.log
        where = log_internal_error(exc, out_dir)
        kind = "I/O error" if isinstance(exc, OSError) else "internal error"
        click.echo(f"bulk-assign: {kind}: {type(exc).__name__}: {exc} ({where})", err=True)
        return InternalError.exit_code
    if summary.exit_code == InternalError.exit_code and summary.stop_detail:
        click.echo(f"bulk-assign: {summary.stop_detail}", err=True)
    return code


def _wait_options(wait: str | None, interval: str | None) -> tuple[float, float] | None:
    """``--wait-assigned`` and ``--wait-interval`` as seconds (None: no waiting after the run)."""
    if wait is None:
        if interval is not None:
            raise UsageError("--wait-interval needs --wait-assigned DURATION")
        return None
    try:
        return parse_duration(wait), parse_duration(interval or "30s")
    except ValueError as exc:
        raise UsageError(f"--wait-assigned/--wait-interval: {exc}") from None


def settings_from(options: dict[str, Any]) -> Settings:
    """Flags (None = not given) -> Settings; unknown target spellings and bad values become UsageError."""
    target_spec = options.pop("target", None)
    filter_spec = options.pop("filter_", None)
    if not target_spec and all(options.get(k) is None for k in ("group_tag", "group_tag_column", "add_to_group")):
        raise UsageError("--target is required (e.g. --target group:<group-object-id>), or --group-tag TAG, or "
                         "--add-to-group GROUP_ID")
    if filter_spec and not target_spec:
        raise UsageError("--filter goes with --target (an assignment filter is part of a profile assignment)")
    target = AssignmentTarget.parse(target_spec, filter_spec) if target_spec else None
    if options.pop("no_verify", None):
        options["verify"] = False
    if options.pop("no_preflight", None):
        options["preflight"] = False
    if (deadline := options.pop("deadline", None)) is not None:
        options["deadline"] = parse_deadline(str(deadline), datetime.now().astimezone())
    if (runtime := options.pop("max_runtime", None)) is not None:
        options["max_runtime"] = parse_max_runtime(str(runtime))
    if (rate := options.pop("max_failure_rate", None)) is not None:
        options["max_failure_rate"] = parse_failure_rate(rate)
    values = {k: v for k, v in options.items() if v is not None}
    values.setdefault("out_dir", Path("bulk-assign-results") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Settings.build(target=target, **values)


def _warn(message: str) -> None:
    log.warning("%s", message)
    click.echo(f"bulk-assign: warning: {redact(message)}", err=True)


def _exit(code: int) -> None:
    sys.exit(code)


def _register() -> None:
    """The sign-in commands (their module is imported anyway); the others load lazily (``_LazyGroup``)."""
    cli.add_command(login_command, "login")
    cli.add_command(logout_command, "logout")
    cli.add_command(whoami_command, "whoami")


def main() -> None:
    """Console-script entry point. Ctrl+C before the engine runs (reading the input) exits 130 quietly;
    once it runs, signals drain it instead (see ``run_plan``)."""
    _register()
    try:
        code = cli.main(standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("bulk-assign: interrupted before anything was sent", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
