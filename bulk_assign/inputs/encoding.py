"""What a Windows machine writes, read as UTF-8: a BOM says UTF-8 or UTF-16 (LE or BE), nothing says UTF-8.

Why transcode instead of refusing: Windows PowerShell's ``Out-File``, ``>`` and ``Get-WindowsAutopilotInfo
-OutputFile`` write UTF-16 with a BOM, and admins hand those files over as they are. Every reader works on
UTF-8 bytes; for a UTF-16 file this wrapper decodes it in pieces and hands the readers UTF-8, so memory
still does not grow with the file and line numbers stay the file's own.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from ..errors import InputFileError

UTF8_BOM = codecs.BOM_UTF8
_SNIFF = 64 * 1024  # enough to see a line end, unless the first line is longer than any sensible header
_UTF16 = ((codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16LE"), (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16BE"))


def sniff_encoding(head: bytes) -> str:
    """The encoding's display name from a file's first bytes: ``UTF-8 (BOM)``, ``UTF-16LE``/``BE`` or ``UTF-8``."""
    if head.startswith(UTF8_BOM):
        return "UTF-8 (BOM)"
    for bom, _, shown in _UTF16:
        if head.startswith(bom):
            return shown
    return "UTF-8"


_WORKBOOKS = ((b"PK\x03\x04", ".xlsx"), (b"\xd0\xcf\x11\xe0", ".xls"))  # a ZIP file; an OLE2 compound file


class _AsUtf8:
    """A read-only binary stream giving the UTF-8 form of a UTF-16 file (its BOM dropped), or of a file
    with old-Mac CR-only line ends (``universal``: CR becomes LF, so every reader sees lines)."""

    def __init__(self, path: Path, raw: BinaryIO, codec: str, *, universal: bool = False) -> None:
        self._path = path
        self._text = io.TextIOWrapper(cast(io.BufferedReader, raw), encoding=codec, errors="strict",
                                      newline=None if universal else "")
        self._codec = codec
        self._line = 1

    def _decoded(self, text: str) -> bytes:
        self._line += text.count("\n")
        return text.encode("utf-8")

    def read(self, size: int = -1) -> bytes:
        try:
            return self._decoded(self._text.read(size if size >= 0 else -1))
        except UnicodeDecodeError as exc:
            raise self._problem(exc) from exc

    def readline(self, size: int = -1) -> bytes:
        try:
            return self._decoded(self._text.readline(size if size > 0 else -1))
        except UnicodeDecodeError as exc:
            raise self._problem(exc) from exc

    def _problem(self, exc: UnicodeDecodeError) -> InputFileError:
        shown = "UTF-16" if self._codec.startswith("utf-16") else "UTF-8"
        return InputFileError(str(self._path), self._line, f"not valid {shown} text ({exc.reason}); save it again "
                              "as CSV UTF-8")


@contextmanager
def open_utf8(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    """Open ``path`` for reading as UTF-8 bytes (UTF-16 transcoded, a UTF-8 BOM left for the readers to drop);
    yields the stream and the encoding's display name. OS errors become ``InputFileError``."""
    try:
        with open(path, "rb") as f:
            head = f.peek(_SNIFF)[:_SNIFF] if isinstance(f, io.BufferedReader) else b""
            for magic, kind in _WORKBOOKS:
                if head.startswith(magic):
                    raise InputFileError(str(path), None, f"a workbook ({kind}), not text: export it as CSV (in "
                                         "Excel: File > Save As > CSV UTF-8) and pass the .csv file")
            encoding = sniff_encoding(head)
            for bom, codec, shown in _UTF16:
                if encoding == shown:
                    f.read(len(bom))
                    yield cast(BinaryIO, _AsUtf8(path, f, codec)), encoding
                    break
            else:
                if b"\r" in head and b"\n" not in head:  # Mac Excel's CR-only line ends
                    yield cast(BinaryIO, _AsUtf8(path, f, "utf-8-sig", universal=True)), f"{encoding}, CR line ends"
                else:
                    yield f, encoding
    except OSError as exc:
        raise InputFileError(str(path), None, f"cannot read the file: {exc.strerror or exc}") from exc
