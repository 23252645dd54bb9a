"""``python -m bulk_assign.emulator`` = ``bulk-assign emulator`` (works without loading the engine's CLI)."""

from .cli import emulator_command

emulator_command(prog_name="bulk-assign emulator")
