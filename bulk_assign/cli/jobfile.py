"""Job files: ``bulk-assign run --config job.toml`` holds a scheduled job's options in one reviewed file.

Why: a scheduled job's command line lives in crontab, a systemd unit or Task Scheduler, where it is hard
to read, diff and review. A job file keeps the options next to the input, under version control.

Rules (the file's keys are spelled as the flags of ``bulk-assign run`` without ``--``):

- Precedence: a command-line flag, then its environment variable, then the job file, then the default.
  The CLI hands the returned dict to click as ``default_map``, which gives exactly this order.
- ``input = "devices.csv"`` names the INPUT file; an INPUT on the command line wins.
- Relative paths (``input``, ``out``, ``ca-bundle``, ...) are resolved against the job file's folder,
  not the working directory: a scheduler's working directory is rarely the job's (Task Scheduler starts
  in ``C:\\Windows\\System32``), and the file must mean the same wherever it is run from. ``~`` expands.
- Secrets never go in a job file (files get committed, copied, backed up, attached to tickets): a key
  that looks like one is refused, naming the environment variables to use instead.
- An unknown key is an error naming the file and the key, with the closest valid spellings: a typo in
  ``max-atempts`` silently ignored would change what an unattended job does.
- A local TOML time such as ``deadline = 06:30:00`` is accepted and turned into ``"06:30"``.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection, Mapping
from datetime import time
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError

__all__ = ["DEFAULT_PATH_KEYS", "SECRETS_MESSAGE", "is_secret_key", "job_keys", "job_path_keys", "load_job_file"]

DEFAULT_PATH_KEYS = frozenset({"input", "out", "ca-bundle", "token-cache", "certificate"})
SECRETS_MESSAGE = "secrets come only from the environment (BULK_ASSIGN_CLIENT_SECRET / BULK_ASSIGN_ACCESS_TOKEN)"
_SECRET_WORDS = ("secret", "password", "passphrase", "passwd", "bearer", "api-key", "private-key")


def is_secret_key(key: str) -> bool:
    """True for keys such as ``client-secret``, ``secret``, ``access-token``, ``token``, ``password``.

    ``token-cache`` (a file path) is not a secret; a key that *ends* in ``token`` is.
    """
    name = key.strip().lower().replace("_", "-")
    return any(word in name for word in _SECRET_WORDS) or name == "token" or name.endswith("-token")


def job_keys(command: click.Command) -> dict[str, str]:
    """A command's job-file keys: flag spelling without ``--`` -> click parameter name.

    Arguments are keyed by their lower-case metavar (``INPUT`` -> ``input``); the ``--config`` option
    itself is left out (a job file does not name another). Pass the result as ``allowed``.
    """
    keys: dict[str, str] = {}
    for param in command.params:
        if param.name is None or param.name == "config":
            continue
        if isinstance(param, click.Argument):
            keys[(param.metavar or param.name).lower().replace("_", "-")] = param.name
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = param.name
    return keys


def job_path_keys(command: click.Command) -> set[str]:
    """The job-file keys of ``command`` whose values are paths (click ``Path``/``File`` types)."""
    names = {param.name for param in command.params if isinstance(param.type, click.Path | click.File)}
    return {key for key, name in job_keys(command).items() if name in names}


def load_job_file(
    path: Path,
    allowed: Collection[str] | Mapping[str, str],
    *,
    path_keys: Collection[str] = DEFAULT_PATH_KEYS,
) -> dict[str, Any]:
    """Read a TOML job file into click parameter values (see the module docstring for the rules).

    ``allowed``: the accepted keys in flag spelling (``max-attempts``), returned with dashes turned into
    underscores (``max_attempts``); or a mapping from flag spelling to click parameter name (``out`` ->
    ``out_dir``, see ``job_keys``). ``input`` is always accepted. Every problem is a ``UsageError``
    naming the file.
    """
    path = Path(path)
    mapping = dict(allowed) if isinstance(allowed, Mapping) else {key: key.replace("-", "_") for key in allowed}
    mapping.setdefault("input", "input")
    data = _read_toml(path)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if is_secret_key(key):
            raise UsageError(f"{path}: key {key!r}: {SECRETS_MESSAGE}")
        if key not in mapping:
            raise UsageError(_unknown_key(path, key, mapping))
        if isinstance(value, dict):
            raise UsageError(f"{path}: key {key!r} takes a single value, not a table")
        if isinstance(value, time):
            value = value.strftime("%H:%M") if value.second == 0 else value.strftime("%H:%M:%S")
        if key in path_keys:
            value = _resolve_path(path, key, value)
        values[mapping[key]] = value
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such job file") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path}: is a folder, not a job file") from None
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid TOML: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None  # tomllib's message has line and column


def _unknown_key(path: Path, key: str, mapping: Mapping[str, str]) -> str:
    known = sorted(k for k in mapping if not is_secret_key(k))
    close = difflib.get_close_matches(key.replace("_", "-").lower(), known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"known keys: {', '.join(known)}"
    return f"{path}: unknown key {key!r}; {hint} (keys are the run options without the leading --)"


def _resolve_path(job_file: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{job_file}: key {key!r} must be a path in quotes, e.g. {key} = \"devices.csv\"")
    target = Path(value).expanduser()
    if not target.is_absolute():
        target = job_file.resolve().parent / target
    return str(target)
