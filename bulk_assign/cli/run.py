"""Running the engine for a command: the scanned input in, signals drained, progress shown, summary printed.

Shared by ``run`` and ``demo``, so neither command module imports the other.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from ..auth import TokenProvider
from ..config import Settings
from ..engine import BulkAssigner
from ..errors import BulkAssignError
from ..graph.operations import Operation
from ..inputs.readers import InputPlan, InputRows
from ..models import InputRow, utc_now
from ..pipeline.run import Progress
from ..redact import RedactingFilter
from ..safefs import open_append
from ..store.reports import Summary
from .progress import LogProgress, RichProgress, summary_table
from .signals import ShutdownSignals


async def run_plan(plan: InputPlan, settings: Settings, tokens: TokenProvider | None,
                   progress: Progress | None = None) -> Summary:
    """Run the engine over a scanned input file and return the summary."""
    def noted(engine: BulkAssigner) -> None:
        engine.input_note = plan.describe()
        # what the reader detected, in run.log (the CLI has said it on the terminal before the run)
        logging.getLogger("bulk_assign").info("input %s", plan.describe(), extra={"run_log_only": True})
        for warning in plan.warnings:
            logging.getLogger("bulk_assign").warning("%s", warning, extra={"run_log_only": True})

    # InputRows, not read_input(plan): a resume can then ask the reader to leave out the done devices
    return await run_rows(InputRows(plan), plan.total_rows, settings, tokens, progress=progress, before=noted)


async def run_rows(rows: Iterable[InputRow], total: int, settings: Settings, tokens: TokenProvider | None, *,
                   progress: Progress | None = None, operation: Operation | None = None,
                   before: Callable[[BulkAssigner], None] | None = None) -> Summary:
    """Run the engine over ``rows`` with signals drained (``run``, ``undo``); the summary."""
    async with BulkAssigner(settings, token_provider=tokens, progress=progress, operation=operation) as engine:
        if before is not None:
            before(engine)
        stop = functools.partial(engine.request_stop, "interrupted")
        with ShutdownSignals(on_first=stop, on_second=stop):
            try:
                await engine.run_all(rows, total=total)
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


def log_to_stderr() -> None:
    """Log lines on stderr for a command without the run's progress display: warnings on a terminal (the
    command shows its own display), INFO otherwise (cron and CI see every step)."""
    _log_to_stderr(logging.WARNING if Console(stderr=True).is_terminal else logging.INFO)


def _log_to_stderr(level: int) -> None:
    logger = logging.getLogger("bulk_assign")
    if not any(getattr(h, "_bulk_assign_stderr", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(message)s"))
        handler.addFilter(lambda record: not getattr(record, "run_log_only", False))
        handler._bulk_assign_stderr = True  # type: ignore[attr-defined]
        handler.addFilter(RedactingFilter())
        handler.setLevel(level)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class OneLineFormatter(logging.Formatter):
    """Log lines for the terminal without tracebacks: those belong in run.log, one line says what happened."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                            "stack_info": None})
        return super().format(record)


def log_internal_error(exc: BaseException, out_dir: Path | None) -> str:
    """Append ``exc``'s traceback to ``out_dir/run.log`` if the disk allows; where it went, for the message."""
    if out_dir is None:
        return "no report folder"
    path = out_dir / "run.log"
    try:
        with open_append(path, text=True) as handle:
            handle.write(f"{utc_now()} ERROR unexpected error, the run stopped:\n")
            handle.write("".join(traceback.format_exception(exc)))
    except (OSError, BulkAssignError):
        return f"{path} could not be written"
    return f"traceback in {path}"


def print_summary(summary: Summary) -> None:
    console = Console(stderr=False)
    console.print(summary_table(summary))
    if summary.out_dir:
        console.print(f"reports: {summary.out_dir}")
        if (Path(summary.out_dir) / "report.html").exists():
            console.print(f"report: {Path(summary.out_dir) / 'report.html'} (bulk-assign report DIR --open shows it)")
    if summary.stopped_reason:
        detail = f" ({summary.stop_detail})" if summary.stop_detail else ""
        console.print(f"stopped early: {summary.stopped_reason}{detail}; {summary.remaining} devices remaining")
        if summary.remaining and summary.out_dir:
            console.print(f"continue with the same command plus: --resume --out {summary.out_dir}")
