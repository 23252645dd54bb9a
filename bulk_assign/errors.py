"""One exception hierarchy for everything that stops a run (a device failing is a result, never one of these).

::

    BulkAssignError                 base: catch this to catch everything bulk-assign raises on purpose
    ├── UsageError                  bad options or settings; exit 2, nothing sent
    │   ├── InputFileError          an input file that cannot be read at all (names file, line, problem)
    │   ├── OutputLocked            another live process holds the output folder
    │   └── CertificateError        Graph's TLS certificate did not verify (trust the proxy's CA: --ca-bundle)
    ├── AuthenticationError         no usable token, sign-in needed, refresh refused; exit 3
    ├── InternalError               an I/O failure or a bug stopped the run; exit 5 (traceback in run.log)
    ├── ListingError                the tenant's Autopilot listing could not be read; exit 4, nothing written
    └── EmulatorError               the local Graph emulator could not start; exit 2

A run that stops early with work left (deadline, safety brake, signal) is not an exception: it ends with
a summary whose ``stopped_reason`` says why, and the CLI maps that to exit 4 or 130. A test checks that
this tree matches the classes.

Lower-layer errors (aiohttp, msal, OS) are translated into these at exactly one boundary each: the
Graph call in ``graph/operations.py`` (``send``), token acquisition in ``auth/``, file handling in
``inputs/readers.py`` and ``store/``. Messages never contain tokens, secrets or ``Authorization`` headers.
"""

from __future__ import annotations


class BulkAssignError(Exception):
    """Base of every error bulk-assign raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(BulkAssignError):
    """Bad options or settings, found before anything is sent."""

    exit_code = 2


class InputFileError(UsageError):
    """An input file that cannot be read at all; says which file, which line and what is wrong."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {problem}")


class AuthenticationError(BulkAssignError):
    """No usable access token: the run stops, undecided devices stay for the next run."""

    exit_code = 3


class CertificateError(UsageError):
    """Graph's TLS certificate did not verify: the run stops instead of retrying every device, since the
    same certificate will fail the same way. Nothing was sent over that connection."""


class OutputLocked(UsageError):
    """Another live process is writing to the same output folder."""


class InternalError(BulkAssignError):
    """An I/O failure (disk full, a report file gone) or a bug stopped the run; reports may be incomplete.

    Why its own exit code: 1 means "some devices failed", which a scheduler may accept; a run that could
    not finish its own bookkeeping must not look like that. The traceback goes to run.log, one line to
    the terminal.
    """

    exit_code = 5

    @classmethod
    def wrap(cls, exc: BaseException) -> InternalError:
        kind = "I/O error" if isinstance(exc, OSError) else "internal error"
        error = cls(f"{kind}: {type(exc).__name__}: {exc} (reports may be incomplete; the traceback is in run.log)")
        error.__cause__ = exc
        return error


class ListingError(BulkAssignError):
    """The tenant's Autopilot listing (needed to resolve serials, or for status) could not be read in full.

    Exit 4, as a run stopped early: nothing was written, every row remains for the next try. A partial
    listing is never used: a serial missing from it would be reported as unknown when it is not.
    """

    exit_code = 4


class EmulatorError(BulkAssignError):
    """The local Graph emulator could not start (bad flags, port in use)."""

    exit_code = 2
