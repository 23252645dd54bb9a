"""``python -m bulk_assign`` is the same as the ``bulk-assign`` command."""

from .cli.main import main

main()
