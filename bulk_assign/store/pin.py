"""``operation.json``: what a report folder is pinned to, its operation and target, written at its first run.

Why: the folder's history is keyed by device id alone. A ``--resume`` with another ``--target`` would read
"succeeded" for devices that only ever got the *first* target, and skip them as ``already_succeeded``. So
a folder remembers what it is for, and a run that asks for something else is refused (exit 2), naming the
difference, before anything is sent. A folder written before this file existed gets it at its next run.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from ..errors import UsageError
from ..safefs import open_read, write_atomic

PIN_NAME = "operation.json"


def read_pin(out_dir: Path) -> dict[str, str] | None:
    """The folder's pin, None when it has none; ``UsageError`` for one that cannot be read."""
    path = out_dir / PIN_NAME
    try:
        with open_read(path) as handle:
            recorded = orjson.loads(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read what this folder is for ({exc}); restore it or choose another "
                         "--out") from None
    if not isinstance(recorded, dict):
        raise UsageError(f"{path}: not an operation record; restore it or choose another --out")
    return {str(k): str(v) for k, v in recorded.items()}


def check_pin(out_dir: Path, pin: dict[str, str], *, resume: bool) -> None:
    """Write ``pin`` into a folder that has none; refuse a run whose pin differs from the folder's."""
    recorded = read_pin(out_dir)
    if recorded is None:
        write_atomic(out_dir / PIN_NAME, orjson.dumps(pin, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return
    differences = [f"{key} {recorded.get(key)!r} there, {value!r} now" for key, value in pin.items()
                   if recorded.get(key) != value]
    differences += [f"{key} {value!r} there, none now" for key, value in recorded.items() if key not in pin]
    if differences:
        verb = "continue it" if resume else "use it"
        raise UsageError(f"{out_dir} was started for another change ({'; '.join(differences)}): to {verb}, run "
                         "the same operation and target; for this one, choose another --out")
