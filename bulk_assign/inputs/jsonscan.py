"""A streaming scanner for the top-level array of a JSON device list, with the line each element starts on.

Why not ijson: its events carry no positions, and every invalid row must be reported with its line. This
walks the top-level array (or Graph's ``{"value": [...]}``) with a few regexes, counts newlines as it
goes, and lets orjson parse each element, so memory is one element plus one read chunk, and orjson's
error position gives the exact line of a syntax error even inside a multi-line object.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..errors import InputFileError

CHUNK = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
MAX_ELEMENT = 16 << 20  # one CSV line or JSON element; device records are tiny, this bounds memory


def not_utf8(path: Path | str, line: int, data: bytes, exc: UnicodeDecodeError) -> InputFileError:
    """Name the line and byte of the first invalid UTF-8 sequence in ``data`` (which starts on ``line``)."""
    line += data.count(b"\n", 0, exc.start)
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    byte = data[exc.start]
    return InputFileError(str(path), line, f"not UTF-8 text (byte 0x{byte:02x} at column {column}); save as UTF-8")


def decode_element(path: Path | str, line: int, data: bytes) -> Any:
    """Parse one element; syntax and encoding errors name the exact line inside it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise not_utf8(path, line, data, bad) from exc
        last_line = line + data.rstrip().count(b"\n")  # an error "at the end" is on the last written line
        where = min(line + exc.lineno - 1, last_line)
        raise InputFileError(str(path), where, f"not valid JSON: {exc.msg}") from exc



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
_OPENS = re.compile(rb"[\[{]++")
_CLOSES = re.compile(rb"[\]}]++")


class JsonScanner:
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
        self._scan: tuple[int, int] | None = None  # where _container_end stopped: (offset, depth)
        self.next_link = False  # Graph's {"value": [...]} had an @odata.nextLink: the file is one page of many

    def items(self) -> Iterator[tuple[int, Any]]:
        """Elements of ``[...]``, or of the ``value`` array of ``{"value": [...]}`` (Graph's shape, with its
        ``@odata.nextLink`` and other members), or a single object (one device) as the only element."""
        self._more()
        if self._buf.startswith(UTF8_BOM):
            self._pos = self._counted = len(UTF8_BOM)
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
            yield line, decode_element(self._path, line, item.group(1))
            if item.group(2) == b"]":
                return

    def _export_object(self) -> Iterator[tuple[int, Any]]:
        start_line = self._line_at(self._pos)
        self._pos += 1
        found = False
        members: dict[str, Any] = {}  # kept while no "value" array has shown up: the object may be the item
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
                    _, member = self._element()
                    if key == "@odata.nextLink" and member:
                        self.next_link = True
                    if not found and isinstance(key, str) and len(members) < 256:
                        members[key] = member
                if self._expect(b",}") == ord("}"):
                    break
        if not found and (not members or all(key.startswith("@odata.") for key in members)):
            raise InputFileError(self._path, start_line, 'a top-level object must hold the devices in a "value" array')
        if not found:  # one object on its own (PowerShell's ConvertTo-Json of a single device): one item
            yield start_line, members

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
            if len(self._buf) - self._pos > MAX_ELEMENT:
                raise self._error(f"a JSON element longer than {MAX_ELEMENT >> 20} MiB starts here")
            self._more()
        self._scan = None  # the element is whole (a flat match may have ended it): no scan to resume
        line = self._line_at(self._pos)
        if end == self._pos:
            raise self._error(f"unexpected {chr(self._buf[self._pos])!r}")
        data = self._buf[self._pos : end]
        self._pos = end
        return line, decode_element(self._path, line, data)

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
        """Where the array or object at ``start`` closes; None when more must be read first.

        Why it resumes: a deeply nested element spans many chunks, and scanning it again from its start
        after each read made a file of 15 MB of ``[`` cost 77 s of CPU. The scan's offset and depth are
        kept while more is read (``_scan``), and runs of brackets are taken in one match each, so the
        work is linear in the element's size.
        """
        buf = self._buf
        offset, depth = self._scan if self._scan is not None else (0, 0)
        pos = start + offset
        while True:
            pos = _match_end(_SKIP, buf, pos)
            if pos >= len(buf):
                self._scan = None if self._eof else (pos - start, depth)
                return len(buf) if self._eof else None
            if buf[pos] == ord('"'):
                end = self._unclosed_string(pos)
                self._scan = (pos - start, depth) if end is None else None
                return end
            run = _match_end(_OPENS if buf[pos] in _OPEN else _CLOSES, buf, pos) - pos
            if buf[pos] in _OPEN:
                depth += run
                pos += run
            elif run >= depth:
                self._scan = None
                return pos + depth
            else:
                depth -= run
                pos += run

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
        chunk = self._read(CHUNK)
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
