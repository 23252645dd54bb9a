"""Neutralise CSV cells that a spreadsheet would run as a formula (CSV/formula injection).

Why: results.csv, failures.csv and invalid.csv are opened in Excel by the people who run rollouts, and
some cells hold text the project does not control: the raw text of an invalid input row, Graph's error
messages and codes, request ids. A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a CR is run by
Excel (and LibreOffice, Google Sheets) as a formula, e.g. ``=HYPERLINK(...)`` or DDE. Such a cell gets a
leading ``'`` (OWASP's advice), which spreadsheets show as text.

Only *text* cells are touched: numbers (``http_status``, ``attempts``, ``duration_ms``, ``source_line``) are
written by the csv module as themselves, so a negative number stays a number. Device ids are GUIDs after
validation and never start with one of these characters, so ``failures.csv`` stays feedable as input.
results.jsonl keeps the exact text: it is the machine-readable record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["safe_row"]

_FORMULA_START = frozenset("=+-@\t\r")


def safe_row(cells: Iterable[Any]) -> list[Any]:
    """The cells of one CSV row, text cells that would start a formula prefixed with ``'``; None -> ""."""
    return [
        "" if c is None
        else "'" + c if isinstance(c, str) and c and c[0] in _FORMULA_START
        else c
        for c in cells
    ]
