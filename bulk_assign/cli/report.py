"""``bulk-assign report DIR [--open]``: rebuild a folder's report.html from its files, at any time.

Why a command when every run writes the page as it closes: a run that was killed never closed (its folder
has no summary.json, the page says so and shows what the files hold), a page from an older version can be
brought up to date, and ``--open`` shows it in the default browser (Python's ``webbrowser``).
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from ..errors import BulkAssignError, UsageError
from ..safefs import check_dir
from ..store.report_html import write_report
from .status import _fail


@click.command("report")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--open", "open_", is_flag=True, help="open the page in the default browser")
def report_command(folder: Path, open_: bool) -> None:
    """Rebuild DIR/report.html from the folder's summary.json, timeline.jsonl and failures.csv."""
    try:
        check_dir(folder)
        if not any((folder / name).exists() for name in ("summary.json", "results.jsonl", "timeline.jsonl")):
            raise UsageError(f"{folder} holds no run (no summary.json, results.jsonl or timeline.jsonl)")
        try:
            path = write_report(folder)
        except OSError as exc:
            raise UsageError(f"report.html could not be written in {folder}: {exc}") from None
    except BulkAssignError as exc:
        raise SystemExit(_fail(exc)) from None
    click.echo(f"report: {path}")
    if open_:
        webbrowser.open(path.resolve().as_uri())
