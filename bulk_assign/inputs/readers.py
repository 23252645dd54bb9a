"""Streaming readers for device id files: CSV, JSON (array or Graph export shape) and JSON Lines.

Two passes, on purpose. ``scan_input`` reads the whole file once before anything is sent, so a file that
cannot be used stops the run with exit 2 and a message naming file, line and problem instead of failing
half-way through a rollout; it also counts the rows for progress and ETA. ``read_input`` then streams the
rows again. Both passes hold one CSV row or one JSON element at a time (elements are capped), so memory
does not grow with the file; only ``Deduper`` (``keys.py``) grows, with the distinct ids.

Unusable rows are values, not exceptions: an ``InputRow`` with ``error_code`` ``InvalidGuid`` or
``MissingId`` that becomes an ``invalid`` record. Only ``InputFileError`` (file, line, problem) is raised;
OS, decoding, csv and JSON errors are translated into it here and nowhere else.

JSON positions: ijson's events carry no line numbers, and the record contract wants the line each item starts on
(and the line of a syntax error). So a small scanner walks the top-level array itself, finding where each
element starts and ends with a few C-speed regex matches, counting newlines of the bytes it passes, and
hands each element's bytes to ``orjson`` (strict, fast, and its errors carry a position).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import orjson

from ..errors import InputFileError, UsageError
from ..guid import normalize_guid
from ..models import InputRow
from .encoding import UTF8_BOM, open_utf8
from .jsonscan import MAX_ELEMENT, JsonScanner, decode_element, not_utf8
from .keys import Deduper, guid_key, guid_key_bytes

__all__ = ["Deduper", "Format", "IdType", "InputPlan", "InputRows", "detect_format", "iter_ids", "read_input",
           "read_input_skipping", "scan_input"]

Format = Literal["csv", "json", "jsonl"]
IdType = Literal["id", "serial"]

_FORMATS: dict[str, Format] = {"csv": "csv", "json": "json", "jsonl": "jsonl"}
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
# Normalised id column / field names, most specific first: when a file has both ``id`` and
# ``windowsAutopilotDeviceIdentityId``, the explicit one is the identity id.
_ID_NAMES = ("windowsautopilotdeviceidentityid", "autopilotdeviceid", "id", "deviceid")
_ID_NAMES_SHOWN = "id, deviceId, device_id, Device ID, windowsAutopilotDeviceIdentityId, Autopilot Device ID"
# Columns that hold serial numbers (the hardware-hash CSV, the Intune admin center's export, Graph's field),
# most specific first, detected with the same rules as id columns
_SERIAL_NAMES = ("deviceserialnumber", "serialnumber", "serial")
_SERIAL_NAMES_SHOWN = "Device Serial Number, Serial number, SerialNumber, serialNumber, Serial"
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"  # what an empty ManagedDeviceId column gives: never a device
_ZERO_KEY = bytes(16)

RAW_LIMIT = 200  # characters of the original cell kept in InputRow.raw
_QUOTE = ord('"')  # an int: ``in`` is then a memchr, several times quicker than with b'"'
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class InputPlan:
    """What the scan proved about a file, so the second pass and the progress display can rely on it.

    ``id_column`` is the column or field the rows are read from: the one asked for, or for a CSV with a
    header the header cell that was detected; ``None`` for headerless CSV and auto-detected JSON fields.
    """

    path: Path
    format: Format
    id_column: str | None
    total_rows: int
    encoding: str = "UTF-8"
    delimiter: str | None = None  # CSV only
    header_line: int | None = None  # CSV with a header: its physical line (2 after a ``#TYPE`` line)
    id_type: IdType = "id"  # "serial": the rows hold serial numbers, resolved through the tenant's listing
    warnings: tuple[str, ...] = ()  # what the user should hear before anything is sent (the CLI prints them)
    value_column: str | None = None  # a per-row value for the operation (``--group-tag-column``)

    def describe(self) -> str:
        """What was detected, in one line for the log and the terminal (every run and dry run says it)."""
        parts = [f"{self.path}: {self.format.upper()}, {self.encoding}"]
        if self.format == "csv":
            shown = {",": "comma", ";": "semicolon", "\t": "tab"}.get(self.delimiter or ",", repr(self.delimiter))
            parts.append(f"{shown}-delimited")
            parts.append(f"header on line {self.header_line}" if self.header_line else "no header")
        column = _quoted(self.id_column) if self.id_column else "detected per row" if self.format != "csv" else "1"
        what = "serial numbers" if self.id_type == "serial" else "ids"
        parts.append(f"{what} from {'field' if self.format != 'csv' else 'column'} {column}")
        parts.append(f"{self.total_rows:,} rows")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------- format


def detect_format(path: Path, fmt: str | None) -> Format:
    """The input format: an explicit ``--format`` wins, then the extension, then a look at the first bytes."""
    if fmt is not None:
        chosen = _FORMATS.get(fmt.strip().lower())
        if chosen is None:
            raise UsageError(f"--format {fmt!r}: use csv, json or jsonl")
        return chosen
    by_extension = _EXTENSIONS.get(path.suffix.lower())
    return by_extension if by_extension is not None else _sniff_format(path)


def _sniff_format(path: Path) -> Format:
    """Guess from content: ``[``/``{`` mean JSON, unless several one-line objects follow each other (JSONL)."""
    with _opened(path) as f:
        head = f.read(_SNIFF_BYTES)
    text = head.removeprefix(UTF8_BOM).lstrip()
    if text.startswith(b"["):
        return "json"
    if not text.startswith(b"{"):
        return "csv"
    first, _, rest = text.partition(b"\n")
    second = rest.lstrip()[:1]
    if second in (b"{", b'"') and _is_json_object(first):
        return "jsonl"
    return "json"


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


# ------------------------------------------------------------------------------------------ public API


def scan_input(path: Path, *, fmt: str | None = None, id_column: str | None = None,
               id_type: IdType | None = None, value_column: str | None = None) -> InputPlan:
    """Read the whole file once, proving it usable and counting its rows, before anything is sent.

    ``id_type`` forces what the column holds (``--id-type``); by default an Autopilot id column wins over
    a serial-number column, and a named ``id_column`` holds serials when its name says so.

    Raises ``InputFileError`` for a missing or unreadable file, text that is not UTF-8, a file without
    rows, a CSV header without an id or serial column, an ``id_column`` that is not there, JSON syntax
    errors and a JSON top level that is not an array or ``{"value": [...]}``.
    """
    path = Path(path)
    chosen = detect_format(path, fmt)
    if id_type is None and id_column is not None and _norm_name(id_column) in _SERIAL_NAMES:
        id_type = "serial"
    delimiter: str | None = None
    header_line: int | None = None
    warnings: tuple[str, ...] = ()
    with open_utf8(path) as (f, encoding):
        if chosen == "csv":
            column, total, delimiter, header_line, found = _scan_csv(path, f, id_column, id_type, value_column)
        elif chosen == "json":
            scanner = JsonScanner(path, f)
            total, found = _scan_json(path, scanner.items(), id_column, id_type)
            column = id_column
            if scanner.next_link:
                warnings = (f"{path} is one page of Graph's listing: it has an @odata.nextLink, so devices on later "
                            "pages are not in it (bulk-assign inventory --out FILE writes every page)",)
        else:
            total, found = _scan_json(path, _json_values(path, f, chosen), id_column, id_type)
            column = id_column
    if total == 0:
        raise InputFileError(str(path), None, "the file holds no device ids (no data rows)")
    return InputPlan(path=path, format=chosen, id_column=column, total_rows=total, encoding=encoding,
                     delimiter=delimiter, header_line=header_line, id_type=found, warnings=warnings,
                     value_column=value_column)


def read_input(plan: InputPlan) -> Iterator[InputRow]:
    """Stream one ``InputRow`` per data row, in file order, never holding more than one row in memory.

    Serial rows come out with ``serial`` set and no ``device_id``: ``inputs.serials`` resolves them.
    """
    return cast(Iterator[InputRow], _read(plan, None))


def read_input_skipping(plan: InputPlan, done: Deduper) -> Iterator[InputRow | None]:
    """``read_input``, except that a row whose device is in ``done`` comes out as None, with no row built.

    Why: a scheduled job resumes a big folder night after night, and almost every row of its input names a
    device an earlier run finished. Such a row is only counted; for a CSV its cell is tested on the line's
    bytes, before the line is decoded or parsed (``_skipping_records``), so a done row costs about half of
    a row that is built. A cell that is not a plain GUID (braces, spaces, quotes) is built and left to the
    caller. Serial rows are never skipped here: their devices are known only once resolved.
    """
    return _read(plan, done)


@dataclass(frozen=True)
class InputRows:
    """A scanned file's rows for the engine: iterating gives ``read_input``'s; a resume asks for
    ``skipping(done)`` instead (``read_input_skipping``)."""

    plan: InputPlan

    def __iter__(self) -> Iterator[InputRow]:
        return read_input(self.plan)

    def skipping(self, done: Deduper) -> Iterator[InputRow | None]:
        return read_input_skipping(self.plan, done)


def _read(plan: InputPlan, done: Deduper | None) -> Iterator[InputRow | None]:
    if plan.id_type == "serial":
        done = None
    with _opened(plan.path) as f:
        if plan.format == "csv":
            yield from _csv_rows(plan.path, f, plan.id_column, plan.id_type, plan.value_column, done)
            return
        to_row = _JsonRowMaker(plan.id_column, plan.id_type)
        values = _ValueFinder(plan.value_column) if plan.value_column is not None else None
        for line, value in _json_values(plan.path, f, plan.format):
            row = to_row(line, value)
            if done is not None and row.key is not None and done.has_key(row.key):
                yield None
                continue
            if values is not None and isinstance(value, dict):
                row.value = values(value)
            yield row


def iter_ids(ids: Iterable[str]) -> Iterator[InputRow]:
    """Rows for API callers who pass plain strings; ``source_line`` is the 1-based position."""
    for index, value in enumerate(ids, start=1):
        if isinstance(value, str):
            yield _row_from_text(index, value, "empty device id")
        else:
            yield _missing(index, repr(value), f"{type(value).__name__} is not a device id string")


# --------------------------------------------------------------------------------------------- rows


def _row_from_text(line: int, text: str, missing_message: str) -> InputRow:
    """A row from one cell or string: the normalised id (with its key), or why it is not one.

    A cell spelled as GUIDs are written (either case, nothing around it) is told by its key (``guid_key``),
    which the run de-duplicates by anyway: one parse of the id instead of a regex here and a parse later.
    """
    raw = text[:RAW_LIMIT]
    if (key := guid_key(text)) is not None and key != _ZERO_KEY:
        return InputRow(line, text.lower(), raw, key=key)
    guid = normalize_guid(text)
    if guid is not None and guid != _ZERO_GUID:
        return InputRow(line, guid, raw, key=guid_key(guid))
    if guid is not None:
        return InputRow(line, None, raw, "InvalidGuid", "the all-zero GUID is not a device id (an empty id column "
                        "of an export gives it)")
    if not text.strip():
        return _missing(line, raw, missing_message)
    return InputRow(line, None, raw, "InvalidGuid", f"{_quoted(text)} is not a device id (GUID)")


def _row_from_serial(line: int, text: str, missing_message: str) -> InputRow:
    """A serial-number row: the serial as written, trimmed (matching ignores case and surrounding space)."""
    serial = text.strip()
    if not serial:
        return _missing(line, text, missing_message)
    return InputRow(line, None, text[:RAW_LIMIT], serial=serial[:RAW_LIMIT])


def _missing(line: int, raw: str, message: str) -> InputRow:
    return InputRow(line, None, raw[:RAW_LIMIT], "MissingId", message)


def _quoted(text: str) -> str:
    """The text as a JSON string literal (escaped, short), so odd characters are visible in reports."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    return orjson.dumps(shown).decode()


def _dumped(value: Any) -> str:
    return orjson.dumps(value).decode()[:RAW_LIMIT]


def _norm_name(name: str) -> str:
    """Column/field names compare ignoring case, spaces and underscores (``Device ID`` == ``device_id``)."""
    return "".join(name.split()).replace("_", "").lower()


# ---------------------------------------------------------------------------------------------- files


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    """Open as UTF-8 bytes (UTF-16 with a BOM transcoded); OS errors (also while reading) become InputFileError."""
    with open_utf8(path) as (f, _):
        yield f


def _lines(path: Path, f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Physical lines with their numbers; a UTF-8 BOM is dropped, UTF-16 and endless lines refused."""
    read = f.readline
    number = 0
    while line := read(MAX_ELEMENT):
        number += 1
        if number == 1:
            line = line.removeprefix(UTF8_BOM)
        if len(line) >= MAX_ELEMENT and not line.endswith(b"\n"):
            raise InputFileError(str(path), number, f"line longer than {MAX_ELEMENT >> 20} MiB")
        yield number, line


# ------------------------------------------------------------------------------------------------ CSV


@dataclass(frozen=True)
class _CsvLayout:
    """Where the ids are: column index, whether line one is a header, the header cell if any, and whether
    the column holds serial numbers."""

    index: int
    has_header: bool
    name: str | None
    id_type: IdType = "id"


def _scan_csv(path: Path, f: BinaryIO, id_column: str | None, id_type: IdType | None,
              value_column: str | None = None) -> tuple[str | None, int, str, int | None, IdType]:
    """(id column, data rows, delimiter, header line, what the column holds) of a CSV file."""
    dialect: list[str] = []
    records = _csv_records(path, f, dialect)
    first = next(records, None)
    if first is None:
        return id_column, 0, ",", None, id_type or "id"
    layout = _csv_layout(path, first[0], first[1], id_column, id_type)
    if value_column is not None:
        _value_index(path, first[0], first[1], layout, value_column)
    total = sum(1 for _ in records) + (0 if layout.has_header else 1)
    return layout.name, total, dialect[0], first[0] if layout.has_header else None, layout.id_type


def _csv_rows(path: Path, f: BinaryIO, id_column: str | None, id_type: IdType,
              value_column: str | None = None, done: Deduper | None = None) -> Iterator[InputRow | None]:
    """The rows of a CSV file; with ``done``, None for a row of a device in it (``_skipping_records``)."""
    skip = _Skip(done) if done is not None else None
    records: Iterator[tuple[int, list[str]] | None] = (
        _csv_records(path, f) if skip is None else _skipping_records(path, f, skip))
    first = next(records, None)
    if first is None:
        return
    layout = _csv_layout(path, first[0], first[1], id_column, id_type)
    value_index = _value_index(path, first[0], first[1], layout, value_column) if value_column is not None else None
    if not layout.has_header:
        records = itertools.chain([first], records)
    index = layout.index
    empty = f"empty cell in column {_quoted(layout.name)}" if layout.name is not None else "empty line"
    to_row = _row_from_serial if layout.id_type == "serial" else _row_from_text
    if skip is not None:
        skip.column = index
        for record in records:
            if record is None:
                yield None
                continue
            line, cells = record
            row = to_row(line, cells[index] if index < len(cells) else "", empty)
            if value_index is not None:
                row.value = cells[value_index].strip() if value_index < len(cells) else ""
            yield row
        return
    plain = cast(Iterator[tuple[int, list[str]]], records)  # no None without ``skip``
    if value_index is None:
        for line, cells in plain:
            yield to_row(line, cells[index] if index < len(cells) else "", empty)
        return
    for line, cells in plain:
        row = to_row(line, cells[index] if index < len(cells) else "", empty)
        row.value = cells[value_index].strip() if value_index < len(cells) else ""
        yield row


def _value_index(path: Path, line: int, cells: list[str], layout: _CsvLayout, value_column: str) -> int:
    """Where the per-row value is (``--group-tag-column``): a header cell, so the file needs a header."""
    if not layout.has_header:
        raise InputFileError(str(path), line, f"--group-tag-column {value_column!r} needs a header row naming "
                             "the columns")
    wanted = _norm_name(value_column)
    for index, cell in enumerate(cells):
        if _norm_name(cell) == wanted:
            return index
    raise InputFileError(str(path), line, f"--group-tag-column {value_column!r} is not in the header; columns "
                         f"found: {_columns(cells)}")


class _ValueFinder:
    """The per-row value of a JSON object (``--group-tag-column``), its key matched like id fields."""

    def __init__(self, name: str) -> None:
        self._wanted = _norm_name(name)

    def __call__(self, obj: dict[str, Any]) -> str:
        for key, value in obj.items():
            if _norm_name(key) == self._wanted:
                return value.strip() if isinstance(value, str) else ""
        return ""


def _csv_records(path: Path, f: BinaryIO, dialect: list[str] | None = None) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the physical line each starts on (a quoted field may span lines); the
    delimiter guessed from the header line is appended to ``dialect`` when given."""
    lines = _decoded_lines(path, _lines(path, f))
    first, start = _first_line(lines)
    if first is None:
        return
    delimiter = _guess_delimiter(first)
    if dialect is not None:
        dialect.append(delimiter)
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter, strict=True)
    offset = start - 1  # the reader counts lines from the header; the file's own numbers are wanted
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield start, cells
            start = reader.line_num + 1 + offset
    except csv.Error as exc:
        raise InputFileError(str(path), start, f"not valid CSV in the row starting here: {exc}") from exc


def _first_line(lines: Iterator[str]) -> tuple[str | None, int]:
    """The line the records start on and its number: the first, or the second after a ``#TYPE`` line."""
    first = next(lines, None)
    if first is not None and first.startswith("#TYPE"):  # Windows PowerShell 5.1's Export-Csv type line
        return next(lines, None), 2
    return first, 1


@dataclass
class _Skip:
    """The rows ``_skipping_records`` leaves out: those of ``done`` devices, by the cell in ``column`` (set
    by the caller once it has read the header)."""

    done: Deduper
    column: int | None = None


def _skipping_records(path: Path, f: BinaryIO, skip: _Skip) -> Iterator[tuple[int, list[str]] | None]:
    """``_csv_records`` for a resume: a line whose id cell is a plain GUID of a done device (``skip``) comes
    out as None, neither decoded nor parsed.

    Why: reading a row is mostly decoding it and the csv module; a nightly resume's input is almost all
    done rows. Exact, because the test is made only where the csv module would start a record (its reader
    is handed one line at a time, and pulls the further lines of a quoted field itself) and only on a line
    without a quote character, which the csv module splits at the delimiter and nowhere else.
    """
    raw = _lines(path, f)
    pending: list[str] = []

    def handed() -> Iterator[str]:
        """The reader's lines: the one handed to it, then any further lines of its record."""
        while True:
            if pending:
                yield pending.pop()
            elif (item := next(raw, None)) is not None:
                yield _decoded(path, *item)
            else:
                return

    first, start = _first_line(handed())
    if first is None:
        return
    delimiter = _guess_delimiter(first)
    separator = delimiter.encode()
    reader = csv.reader(handed(), delimiter=delimiter, strict=True)
    has_key = skip.done.has_key
    pending.append(first)
    try:
        while True:
            cells = next(reader, None)
            if cells is None:
                return
            if any(cell.strip() for cell in cells):
                yield start, cells
            column = skip.column
            for start, line in raw:  # between two records: where a row may be left out
                if column is not None and _QUOTE not in line:
                    parts = line.split(separator, column + 1)
                    key = guid_key_bytes(parts[column].rstrip(b"\r\n")) if len(parts) > column else None
                    if key is not None and has_key(key):
                        yield None
                        continue
                pending.append(_decoded(path, start, line))
                break
            else:
                return
    except csv.Error as exc:
        raise InputFileError(str(path), start, f"not valid CSV in the row starting here: {exc}") from exc


def _decoded_lines(path: Path, lines: Iterator[tuple[int, bytes]]) -> Iterator[str]:
    """UTF-8 text line by line, so a bad byte is reported with its own line number."""
    for number, line in lines:
        yield _decoded(path, number, line)


def _decoded(path: Path, number: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, number, line, exc) from exc


def _guess_delimiter(first_line: str) -> str:
    """``,``, ``;`` or tab, whichever occurs most outside quotes in the first line (``,`` if none).

    Simpler and more predictable than ``csv.Sniffer``, which guesses wrong on one-column files of GUIDs.
    """
    counts = dict.fromkeys(",;\t", 0)
    quoted = False
    for char in first_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _csv_layout(path: Path, line: int, cells: list[str], id_column: str | None,
                id_type: IdType | None) -> _CsvLayout:
    """Find the id column from the first record: a named column, a GUID in a headerless file, or an alias.

    Autopilot id names win over serial names (a Graph export has both ``id`` and ``serialNumber``);
    ``id_type`` forces one kind.
    """
    if id_column is not None:
        named = _named_column(path, line, cells, id_column)
        return _CsvLayout(named.index, True, named.name, id_type or "id")
    if id_type == "serial":
        return _serial_column(path, line, cells)
    guid_columns = [i for i, cell in enumerate(cells) if normalize_guid(cell) is not None]
    if len(guid_columns) == 1:
        return _CsvLayout(guid_columns[0], has_header=False, name=None)
    if guid_columns:
        raise InputFileError(
            str(path), line, "no header row, and several columns hold GUIDs; add a header and use --id-column"
        )
    names = [_norm_name(cell) for cell in cells]
    for alias in _ID_NAMES:
        if alias in names:
            index = names.index(alias)
            return _CsvLayout(index, has_header=True, name=cells[index])
    serial = next((names.index(alias) for alias in _SERIAL_NAMES if alias in names), None)
    if serial is not None:
        if id_type == "id":
            raise InputFileError(
                str(path), line,
                f"--id-type id, but this file holds serial numbers (column {_quoted(cells[serial])}) and no "
                f"Autopilot device id column; columns found: {_columns(cells)}; drop --id-type id to resolve the "
                "serials through the tenant's Autopilot listing",
            )
        return _CsvLayout(serial, has_header=True, name=cells[serial], id_type="serial")
    if len(cells) == 1:
        return _CsvLayout(0, has_header=True, name=cells[0])
    raise InputFileError(
        str(path),
        line,
        f"no device id or serial number column in the header (looked for {_ID_NAMES_SHOWN}, "
        f"{_SERIAL_NAMES_SHOWN}); columns found: {_columns(cells)}; name the column with --id-column NAME",
    )


def _serial_column(path: Path, line: int, cells: list[str]) -> _CsvLayout:
    """``--id-type serial`` without ``--id-column``: a serial-number header, or the one column of a file."""
    names = [_norm_name(cell) for cell in cells]
    for alias in _SERIAL_NAMES:
        if alias in names:
            index = names.index(alias)
            return _CsvLayout(index, has_header=True, name=cells[index], id_type="serial")
    if len(cells) == 1:  # a bare list of serials: the first line is a serial too
        return _CsvLayout(0, has_header=False, name=None, id_type="serial")
    raise InputFileError(
        str(path), line, f"--id-type serial, but no serial number column in the header (looked for "
        f"{_SERIAL_NAMES_SHOWN}); columns found: {_columns(cells)}; name the column with --id-column NAME",
    )


def _named_column(path: Path, line: int, cells: list[str], id_column: str) -> _CsvLayout:
    wanted = _norm_name(id_column)
    for index, cell in enumerate(cells):
        if _norm_name(cell) == wanted:
            return _CsvLayout(index, has_header=True, name=cell)
    raise InputFileError(
        str(path), line, f"--id-column {id_column!r} is not in the header; columns found: {_columns(cells)}"
    )


def _columns(cells: list[str]) -> str:
    shown = ", ".join(_quoted(cell) for cell in cells[:30])
    return shown + (f", ... ({len(cells)} in all)" if len(cells) > 30 else "")


# ----------------------------------------------------------------------------------------------- JSON


def _json_values(path: Path, f: BinaryIO, fmt: Format) -> Iterator[tuple[int, Any]]:
    """(line, value) for every item of a JSON array / Graph export, or every non-blank JSON Lines line."""
    if fmt == "jsonl":
        return _jsonl_values(path, f)
    return JsonScanner(path, f).items()


def _jsonl_values(path: Path, f: BinaryIO) -> Iterator[tuple[int, Any]]:
    for number, line in _lines(path, f):
        if line.strip():
            yield number, decode_element(path, number, line)


def _scan_json(path: Path, values: Iterable[tuple[int, Any]], id_column: str | None,
               id_type: IdType | None) -> tuple[int, IdType]:
    """Count the items and decide what they hold: ids when any object has an id field (or the items are
    strings), else serials when objects carry a serial field (``ConvertTo-Json`` of the admin center's
    export); refuse a file of objects in which no object has either (nothing usable)."""
    find_id = _IdKeyFinder(id_column, "id")
    find_serial = _IdKeyFinder(id_column, "serial")
    total = keyed = serials = 0
    first_object: tuple[int, dict[str, Any]] | None = None
    for line, value in values:
        total += 1
        if isinstance(value, dict):
            keyed += find_id(value) is not None
            serials += find_serial(value) is not None
            first_object = first_object or (line, value)
    if id_type is None:
        id_type = "serial" if first_object is not None and keyed == 0 and serials > 0 else "id"
    if first_object is not None and (keyed if id_type == "id" else serials) == 0:
        line, value = first_object
        wanted = repr(id_column) if id_column else f"any of {_ID_NAMES_SHOWN}" if id_type == "id" else \
            f"any of {_SERIAL_NAMES_SHOWN}"
        kind = "device id" if id_type == "id" else "serial number"
        raise InputFileError(
            str(path),
            line,
            f"no object has a {kind} field ({wanted}); fields of this one: {_columns(list(value))}; "
            "name the field with --id-column NAME",
        )
    return total, id_type


class _IdKeyFinder:
    """Which key of an object holds the device id (or serial); cached per key layout, since records repeat it."""

    def __init__(self, id_column: str | None, id_type: IdType = "id") -> None:
        names = _ID_NAMES if id_type == "id" else _SERIAL_NAMES
        self._wanted = (_norm_name(id_column),) if id_column is not None else names
        self._cache: dict[tuple[str, ...], str | None] = {}

    def __call__(self, obj: dict[str, Any]) -> str | None:
        keys = tuple(obj)
        try:
            return self._cache[keys]
        except KeyError:
            pass
        if len(self._cache) > 256:
            self._cache.clear()
        found = self._cache[keys] = self._find(keys)
        return found

    def _find(self, keys: tuple[str, ...]) -> str | None:
        names = {_norm_name(key): key for key in reversed(keys)}  # first spelling wins
        return next((names[name] for name in self._wanted if name in names), None)


class _JsonRowMaker:
    """Turns one JSON item (string, object, anything else) into an InputRow."""

    def __init__(self, id_column: str | None, id_type: IdType = "id") -> None:
        self._find_key: Callable[[dict[str, Any]], str | None] = _IdKeyFinder(id_column, id_type)
        self._expected = repr(id_column) if id_column else _ID_NAMES_SHOWN if id_type == "id" else _SERIAL_NAMES_SHOWN
        self._row_from_text = _row_from_serial if id_type == "serial" else _row_from_text

    def __call__(self, line: int, value: Any) -> InputRow:
        if isinstance(value, str):
            return self._row_from_text(line, value, "empty string")
        if not isinstance(value, dict):
            return _missing(line, _dumped(value), f"{_dumped(value)[:80]} is neither a device id nor an object")
        key = self._find_key(value)
        if key is None:
            return _missing(line, _dumped(value), f"object has no device id field ({self._expected})")
        field = value[key]
        if isinstance(field, str):
            return self._row_from_text(line, field, f"empty {_quoted(key)}")
        if field is None:
            return _missing(line, "null", f"{_quoted(key)} is null")
        return InputRow(line, None, _dumped(field), "InvalidGuid", f"{_dumped(field)[:80]} is not a device id (GUID)")
