"""Command line: parse arguments, build settings, run the engine coroutine, map the outcome to an exit code.

Nothing here decides anything about devices; it only translates between a shell and the engine.
"""

from __future__ import annotations

import sys

import click

from .errors import BulkAssignError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bulk-assign")
def cli() -> None:
    """Assign Windows Autopilot deployment profiles to devices in bulk through Microsoft Graph."""


def _register() -> None:
    from .emulator.cli import emulator_command

    cli.add_command(emulator_command, "emulator")


def main() -> None:
    """Console-script entry point: every ``BulkAssignError`` becomes its exit code and one clear line."""
    _register()
    try:
        cli.main(standalone_mode=True)
    except BulkAssignError as exc:  # pragma: no cover - commands normally exit themselves
        click.echo(f"bulk-assign: {exc}", err=True)
        sys.exit(exc.exit_code)
