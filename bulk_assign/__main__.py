"""``python -m bulk_assign`` is the same as the ``bulk-assign`` command."""

from .cli import main

main()
