"""Streaming readers for device id files: CSV, JSON (array or Graph export shape) and JSON Lines.

Two passes, on purpose. ``scan_input`` reads the whole file once before anything is sent, so a file that
cannot be used stops the run with exit 2 and a message naming file, line and problem instead of failing
half-way through a rollout; it also counts the rows for progress and ETA. ``read_input`` then streams the
rows again. Both passes hold one CSV row or one JSON element at a time (elements are capped), so memory
does not grow with the file; only ``Deduper`` grows, with the distinct ids.

Unusable rows are values, not exceptions: an ``InputRow`` with ``error_code`` ``InvalidGuid`` or
``MissingId`` that becomes an ``invalid`` record. Only ``InputFileError`` (file, line, problem) is raised;
OS, decoding, csv and JSON errors are translated into it here and nowhere else.

JSON positions: ijson's events carry no line numbers, and design.md wants the line each item starts on
(and the line of a syntax error). So a small scanner walks the top-level array itself, finding where each
element starts and ends with a few C-speed regex matches, counting newlines of the bytes it passes, and
hands each element's bytes to ``orjson`` (strict, fast, and its errors carry a position).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from .errors import InputFileError, UsageError
from .guid import is_guid, normalize_guid
from .models import InputRow

__all__ = ["Deduper", "Format", "InputPlan", "detect_format", "iter_ids", "read_input", "scan_input"]

Format = Literal["csv", "json", "jsonl"]

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

RAW_LIMIT = 200  # characters of the original cell kept in InputRow.raw
_SNIFF_BYTES = 64 * 1024
_CHUNK = 1 << 20
_MAX_ELEMENT = 16 << 20  # one CSV line or JSON element; device records are tiny, this bounds memory
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF16_PROBLEM = "the file is UTF-16 (PowerShell's Out-File default); save it as UTF-8"


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
    text = head.removeprefix(_UTF8_BOM).lstrip()
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


def scan_input(path: Path, *, fmt: str | None = None, id_column: str | None = None) -> InputPlan:
    """Read the whole file once, proving it usable and counting its rows, before anything is sent.

    Raises ``InputFileError`` for a missing or unreadable file, text that is not UTF-8, a file without
    rows, a CSV header without an id column, an ``id_column`` that is not there, JSON syntax errors and
    a JSON top level that is not an array or ``{"value": [...]}``.
    """
    path = Path(path)
    chosen = detect_format(path, fmt)
    with _opened(path) as f:
        if chosen == "csv":
            column, total = _scan_csv(path, f, id_column)
        else:
            column, total = id_column, _scan_json(path, _json_values(path, f, chosen), id_column)
    if total == 0:
        raise InputFileError(str(path), None, "the file holds no device ids (no data rows)")
    return InputPlan(path=path, format=chosen, id_column=column, total_rows=total)


def read_input(plan: InputPlan) -> Iterator[InputRow]:
    """Stream one ``InputRow`` per data row, in file order, never holding more than one row in memory."""
    with _opened(plan.path) as f:
        if plan.format == "csv":
            yield from _csv_rows(plan.path, f, plan.id_column)
        else:
            to_row = _JsonRowMaker(plan.id_column)
            for line, value in _json_values(plan.path, f, plan.format):
                yield to_row(line, value)


def iter_ids(ids: Iterable[str]) -> Iterator[InputRow]:
    """Rows for API callers who pass plain strings; ``source_line`` is the 1-based position."""
    for index, value in enumerate(ids, start=1):
        if isinstance(value, str):
            yield _row_from_text(index, value, "empty device id")
        else:
            yield _missing(index, repr(value), f"{type(value).__name__} is not a device id string")


class Deduper:
    """The distinct device ids seen so far, in about 80 bytes per id.

    This set is the only thing that grows with the input. A GUID's 128 bits fit a Python int; a set of
    ints costs about half of a set of 36-character strings.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def add(self, device_id: str) -> bool:
        """Remember ``device_id``; True if it is new, False if it was seen before."""
        key = _guid_key(device_id)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def __contains__(self, device_id: object) -> bool:
        if not isinstance(device_id, str) or normalize_guid(device_id) is None:
            return False
        return _guid_key(device_id) in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def _guid_key(device_id: str) -> int:
    """The GUID as an int; any GUID spelling the reader accepts maps to the same key."""
    guid = device_id if is_guid(device_id) else normalize_guid(device_id)
    if guid is None:
        raise ValueError(f"{device_id!r} is not a GUID")
    return int(guid.replace("-", ""), 16)


# --------------------------------------------------------------------------------------------- rows


def _row_from_text(line: int, text: str, missing_message: str) -> InputRow:
    """A row from one cell or string: the normalised id, or why it is not one."""
    raw = text[:RAW_LIMIT]
    guid = normalize_guid(text)
    if guid is not None:
        return InputRow(line, guid, raw)
    if not text.strip():
        return _missing(line, raw, missing_message)
    return InputRow(line, None, raw, "InvalidGuid", f"{_quoted(text)} is not a device id (GUID)")


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
    """Open for binary reading; OS errors (also those while reading) become InputFileError."""
    try:
        with open(path, "rb") as f:
            yield f
    except OSError as exc:
        raise InputFileError(str(path), None, f"cannot read the file: {exc.strerror or exc}") from exc


def _lines(path: Path, f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Physical lines with their numbers; a UTF-8 BOM is dropped, UTF-16 and endless lines refused."""
    read = f.readline
    number = 0
    while line := read(_MAX_ELEMENT):
        number += 1
        if number == 1:
            if line.startswith(_UTF16_BOMS):
                raise InputFileError(str(path), 1, _UTF16_PROBLEM)
            line = line.removeprefix(_UTF8_BOM)
        if len(line) >= _MAX_ELEMENT and not line.endswith(b"\n"):
            raise InputFileError(str(path), number, f"line longer than {_MAX_ELEMENT >> 20} MiB")
        yield number, line


def _not_utf8(path: Path | str, line: int, data: bytes, exc: UnicodeDecodeError) -> InputFileError:
    """Name the line and byte of the first invalid UTF-8 sequence in ``data`` (which starts on ``line``)."""
    line += data.count(b"\n", 0, exc.start)
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    byte = data[exc.start]
    return InputFileError(str(path), line, f"not UTF-8 text (byte 0x{byte:02x} at column {column}); save as UTF-8")


# ------------------------------------------------------------------------------------------------ CSV


@dataclass(frozen=True)
class _CsvLayout:
    """Where the ids are: column index, whether line one is a header, and the header cell if any."""

    index: int
    has_header: bool
    name: str | None


def _scan_csv(path: Path, f: BinaryIO, id_column: str | None) -> tuple[str | None, int]:
    records = _csv_records(path, f)
    first = next(records, None)
    if first is None:
        return id_column, 0
    layout = _csv_layout(path, first[0], first[1], id_column)
    total = sum(1 for _ in records) + (0 if layout.has_header else 1)
    return layout.name, total


def _csv_rows(path: Path, f: BinaryIO, id_column: str | None) -> Iterator[InputRow]:
    records = _csv_records(path, f)
    first = next(records, None)
    if first is None:
        return
    layout = _csv_layout(path, first[0], first[1], id_column)
    if not layout.has_header:
        records = itertools.chain([first], records)
    index = layout.index
    empty = f"empty cell in column {_quoted(layout.name)}" if layout.name is not None else "empty line"
    for line, cells in records:
        yield _row_from_text(line, cells[index] if index < len(cells) else "", empty)


def _csv_records(path: Path, f: BinaryIO) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the physical line each starts on (a quoted field may span lines)."""
    lines = _decoded_lines(path, f)
    first = next(lines, None)
    if first is None:
        return
    reader = csv.reader(itertools.chain([first], lines), delimiter=_guess_delimiter(first), strict=True)
    start = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                yield start, cells
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputFileError(str(path), start, f"not valid CSV in the row starting here: {exc}") from exc


def _decoded_lines(path: Path, f: BinaryIO) -> Iterator[str]:
    """UTF-8 text line by line, so a bad byte is reported with its own line number."""
    for number, line in _lines(path, f):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, number, line, exc) from exc


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


def _csv_layout(path: Path, line: int, cells: list[str], id_column: str | None) -> _CsvLayout:
    """Find the id column from the first record: a named column, a GUID in a headerless file, or an alias."""
    if id_column is not None:
        return _named_column(path, line, cells, id_column)
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
    if len(cells) == 1:
        return _CsvLayout(0, has_header=True, name=cells[0])
    raise InputFileError(
        str(path),
        line,
        f"no device id column in the header (looked for {_ID_NAMES_SHOWN}); columns found: "
        f"{_columns(cells)}; name the column with --id-column NAME",
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
    return _JsonScanner(path, f).items()


def _jsonl_values(path: Path, f: BinaryIO) -> Iterator[tuple[int, Any]]:
    for number, line in _lines(path, f):
        if line.strip():
            yield number, _decode(path, number, line)


def _decode(path: Path | str, line: int, data: bytes) -> Any:
    """Parse one element; syntax and encoding errors name the exact line inside it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise _not_utf8(path, line, data, bad) from exc
        last_line = line + data.rstrip().count(b"\n")  # an error "at the end" is on the last written line
        where = min(line + exc.lineno - 1, last_line)
        raise InputFileError(str(path), where, f"not valid JSON: {exc.msg}") from exc


def _scan_json(path: Path, values: Iterable[tuple[int, Any]], id_column: str | None) -> int:
    """Count the items; refuse a file of objects in which no object has an id field (nothing usable)."""
    find_key = _IdKeyFinder(id_column)
    total = objects = keyed = 0
    first_object: tuple[int, dict[str, Any]] | None = None
    for line, value in values:
        total += 1
        if isinstance(value, dict):
            objects += 1
            keyed += find_key(value) is not None
            first_object = first_object or (line, value)
    if first_object is not None and keyed == 0:
        line, value = first_object
        wanted = repr(id_column) if id_column else f"any of {_ID_NAMES_SHOWN}"
        raise InputFileError(
            str(path),
            line,
            f"no object has a device id field ({wanted}); fields of this one: {_columns(list(value))}; "
            "name the field with --id-column NAME",
        )
    return total


class _IdKeyFinder:
    """Which key of an object holds the device id; cached per key layout, since records repeat it."""

    def __init__(self, id_column: str | None) -> None:
        self._wanted = (_norm_name(id_column),) if id_column is not None else _ID_NAMES
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

    def __init__(self, id_column: str | None) -> None:
        self._find_key: Callable[[dict[str, Any]], str | None] = _IdKeyFinder(id_column)
        self._expected = repr(id_column) if id_column else _ID_NAMES_SHOWN

    def __call__(self, line: int, value: Any) -> InputRow:
        if isinstance(value, str):
            return _row_from_text(line, value, "empty string")
        if not isinstance(value, dict):
            return _missing(line, _dumped(value), f"{_dumped(value)[:80]} is neither a device id nor an object")
        key = self._find_key(value)
        if key is None:
            return _missing(line, _dumped(value), f"object has no device id field ({self._expected})")
        field = value[key]
        if isinstance(field, str):
            return _row_from_text(line, field, f"empty {_quoted(key)}")
        if field is None:
            return _missing(line, "null", f"{_quoted(key)} is null")
        return InputRow(line, None, _dumped(field), "InvalidGuid", f"{_dumped(field)[:80]} is not a device id (GUID)")


_NOT_BLANK = re.compile(rb"[^ \t\r\n]")
_STRING = re.compile(rb'"(?:[^"\\\n]++|\\.)*+"')
# Everything up to the next bracket or string, with whole strings skipped (brackets inside them don't count).
_SKIP = re.compile(rb'(?:[^"{}\[\]]++|"(?:[^"\\\n]++|\\.)*+")*+')
# A whole object without nesting (the usual device record) in one match.
_FLAT_OBJECT = re.compile(rb'\{(?:[^"{}\[\]]++|"(?:[^"\\\n]++|\\.)*+")*+\}')
_SCALAR = re.compile(rb'[^ \t\r\n,:\[\]{}"]*+')
# The usual array item (a string or a flat object) with the blanks and the "," or "]" after it, in one match.
_ITEM = re.compile(
    rb'[ \t\r\n]*+("(?:[^"\\\n]++|\\.)*+"|\{(?:[^"{}\[\]]++|"(?:[^"\\\n]++|\\.)*+")*+\})[ \t\r\n]*+([,\]])'
)
_OPEN = frozenset(b"{[")


class _JsonScanner:
    """Walks a JSON document's top-level array, yielding each element's first line and parsed value.

    The buffer holds the current element plus at most one read chunk; ``_line`` is the line number of the
    byte at ``_counted``. Glue between elements (brackets, commas, member names) is checked here, each
    element's own syntax by orjson.
    """

    def __init__(self, path: Path, f: BinaryIO) -> None:
        self._path = str(path)
        self._read = f.read
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._line = 1
        self._counted = 0

    def items(self) -> Iterator[tuple[int, Any]]:
        """Elements of ``[...]``, or of the ``value`` array of ``{"value": [...]}`` (Graph export shape)."""
        self._more()
        if self._buf.startswith(_UTF16_BOMS):
            raise InputFileError(self._path, 1, _UTF16_PROBLEM)
        if self._buf.startswith(_UTF8_BOM):
            self._pos = self._counted = len(_UTF8_BOM)
        first = self._peek()
        if first is None:
            return
        if first == ord("["):
            yield from self._array()
        elif first == ord("{"):
            yield from self._export_object()
        else:
            raise self._error('the top level must be an array of device ids or {"value": [...]}')
        if self._peek() is not None:
            raise self._error("unexpected text after the end of the JSON document")

    def _array(self) -> Iterator[tuple[int, Any]]:
        self._pos += 1
        if self._peek() == ord("]"):
            self._pos += 1
            return
        while True:
            item = _ITEM.match(self._buf, self._pos)
            if item is None:  # nested, a scalar, cut by the end of the buffer, or broken: the careful way
                yield self._element()
                if self._expect(b",]") == ord("]"):
                    return
                continue
            self._pos = item.end()
            line = self._line_at(item.start(1))
            yield line, _decode(self._path, line, item.group(1))
            if item.group(2) == b"]":
                return

    def _export_object(self) -> Iterator[tuple[int, Any]]:
        start_line = self._line_at(self._pos)
        self._pos += 1
        found = False
        if self._peek() == ord("}"):
            self._pos += 1
        else:
            while True:
                if self._peek() != ord('"'):
                    raise self._error("expected a member name in double quotes")
                _, key = self._element()
                self._expect(b":")
                if key == "value":
                    if self._peek() != ord("["):
                        raise self._error('"value" must be an array of device ids')
                    found = True
                    yield from self._array()
                else:
                    self._element()  # parsed only to check its syntax
                if self._expect(b",}") == ord("}"):
                    break
        if not found:
            raise InputFileError(self._path, start_line, 'a top-level object must hold the devices in a "value" array')

    def _expect(self, allowed: bytes) -> int:
        """Consume one of the ``allowed`` punctuation bytes (after whitespace) and return it."""
        found = self._peek()
        if found is None or found not in allowed:
            wanted = " or ".join(repr(chr(b)) for b in allowed)
            raise self._error(f"expected {wanted}")
        self._pos += 1
        return found

    def _element(self) -> tuple[int, Any]:
        """The element starting at the next non-blank byte: its first line and parsed value."""
        if self._peek() is None:
            raise self._error("the JSON ends early (an array or object is not closed)")
        while (end := self._element_end()) is None:
            if len(self._buf) - self._pos > _MAX_ELEMENT:
                raise self._error(f"a JSON element longer than {_MAX_ELEMENT >> 20} MiB starts here")
            self._more()
        line = self._line_at(self._pos)
        if end == self._pos:
            raise self._error(f"unexpected {chr(self._buf[self._pos])!r}")
        data = self._buf[self._pos : end]
        self._pos = end
        return line, _decode(self._path, line, data)

    def _element_end(self) -> int | None:
        """Where the element at ``_pos`` ends, or None when the buffer ends first and more can be read.

        A broken element ends early (at the line break of an unterminated string, or at end of file);
        orjson then reports the exact problem.
        """
        buf, start = self._buf, self._pos
        if buf[start] == ord('"'):
            match = _STRING.match(buf, start)
            return match.end() if match else self._unclosed_string(start)
        if buf[start] in _OPEN:
            flat = _FLAT_OBJECT.match(buf, start)
            return flat.end() if flat else self._container_end(start)
        end = _match_end(_SCALAR, buf, start)
        return end if end < len(buf) or self._eof else None

    def _container_end(self, start: int) -> int | None:
        buf, depth, pos = self._buf, 0, start
        while True:
            pos = _match_end(_SKIP, buf, pos)
            if pos >= len(buf):
                return len(buf) if self._eof else None
            if buf[pos] == ord('"'):
                return self._unclosed_string(pos)
            depth += 1 if buf[pos] in _OPEN else -1
            pos += 1
            if depth == 0:
                return pos

    def _unclosed_string(self, pos: int) -> int | None:
        newline = self._buf.find(b"\n", pos)
        if newline >= 0:
            return newline + 1
        return len(self._buf) if self._eof else None

    def _peek(self) -> int | None:
        """Skip whitespace; the next byte, or None at the end of the file."""
        while True:
            found = _NOT_BLANK.search(self._buf, self._pos)
            if found is not None:
                self._pos = found.start()
                return self._buf[self._pos]
            self._pos = len(self._buf)
            if not self._more():
                return None

    def _more(self) -> bool:
        """Append the next chunk, dropping what lies before ``_pos``; False at the end of the file."""
        if self._eof:
            return False
        chunk = self._read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        keep = self._pos
        if keep > self._counted:
            self._line_at(keep)
        self._buf = self._buf[keep:] + chunk
        self._counted -= keep
        self._pos = 0
        return True

    def _line_at(self, pos: int) -> int:
        self._line += self._buf.count(b"\n", self._counted, pos)
        self._counted = pos
        return self._line

    def _error(self, problem: str) -> InputFileError:
        return InputFileError(self._path, self._line_at(max(self._pos, self._counted)), problem)


def _match_end(pattern: re.Pattern[bytes], buf: bytes, pos: int) -> int:
    """End of a pattern that always matches (possibly empty) at ``pos``."""
    match = pattern.match(buf, pos)
    assert match is not None  # every pattern used here can match the empty string
    return match.end()
