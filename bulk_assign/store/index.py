"""The folder index: one line per device with what the folder's runs decided, so that a resume costs what
is left to do, not the history of the folder.

Why: ``results.jsonl`` (every decision of every run, append-only) and ``journal.log`` (every intent) are the
truth, but reading them whole on every resume made each night cost all the nights before it. The index
(``index.txt``) is a cache of what ``history.py`` derives from them, written atomically at the end of each
run:

- ``<32 hex> <flags> <offset>``: a device and the record of it that the merged view shows (its byte offset
  in results.jsonl); flags bit 0 = the device is done (succeeded or found assigned, in any run), bit 1 =
  the shown record is a real outcome (not a ``duplicate`` pointer). These lines are in offset order, so
  the merged CSV files are rewritten by one sequential pass over results.jsonl.
- ``i <offset>``: an invalid row of the latest run (rows without a device id are keyed by run and line).
- ``q <32 hex>``: a device in doubt (an intent or a torn record naming it, no success): read it back first.

The meta line (next to last) names how far into results.jsonl and journal.log the index reaches (their
sizes then) with a CRC-32 of the 4 KiB before each mark; the trailer holds the line count and a CRC-32 of
the body. A reader trusts the index only if both files still hold those bytes at those marks and the trailer matches:
anything else (no index, a damaged one, a file cut shorter or replaced) means an empty index at mark 0,
that is a rebuild from the files. An index that is merely older than the files (a run killed before it
rewrote it) is caught up from its marks: only what was appended since is read.
"""

from __future__ import annotations

import contextlib
import operator
import os
import zlib
from binascii import hexlify, unhexlify
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..inputs.keys import Deduper
from ..models import InputRow
from ..safefs import atomic_file, open_fd, open_read

__all__ = ["DONE", "INDEX_NAME", "REAL", "IndexHeader", "IndexWriter", "RunEntries", "file_mark", "iter_index",
           "read_done", "read_header"]

INDEX_NAME = "index.txt"
DONE, REAL = 1, 2
_MAGIC = b"#bulk-assign index 1\n"
_META = b"#meta "
_TRAILER = b"#end "
_MARK_SPAN = 4096
_BLOCK = 1 << 20
_DONE_DIGITS = (b"1", b"3")  # the flags of an entry whose device is DONE (and REAL or not)
_HEX_KEY = operator.itemgetter(slice(0, 32))


@dataclass
class IndexHeader:
    """Where the index reaches in results.jsonl and journal.log, and the runs seen up to there."""

    results: int = 0
    results_crc: int = 0
    journal: int = 0
    journal_crc: int = 0
    runs: list[str] = field(default_factory=list)
    """Run ids with a record in results.jsonl (the merged view's ``runs``), in order of appearance."""
    intent_runs: list[str] = field(default_factory=list)
    """Run ids with an intent in journal.log."""
    latest_run: str | None = None
    """The run whose invalid rows the merged view shows."""

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)


def file_mark(path: Path, size: int | None = None) -> tuple[int, int]:
    """``(size, CRC-32 of the 4 KiB before size)`` of a file: what an index records to recognise it later."""
    try:
        handle = open_read(path)
    except FileNotFoundError:
        return 0, 0
    with handle:
        end = handle.seek(0, os.SEEK_END) if size is None else size
        start = max(0, end - _MARK_SPAN)
        handle.seek(start)
        data = handle.read(end - start)
    if len(data) != end - start:
        return -1, 0  # the file is shorter than the mark: no longer the file the index was made from
    return end, zlib.crc32(data)


def read_header(out_dir: Path, results: Path, journal: Path) -> IndexHeader | None:
    """The index's header if the index is whole and still matches both files; else None (rebuild).

    The body's CRC and line count are taken a block at a time, not per line: a resume of a big folder reads
    the index every night, before its input.
    """
    path = out_dir / INDEX_NAME
    try:
        handle = open_read(path)
    except FileNotFoundError:
        return None
    with handle:
        if handle.readline() != _MAGIC:
            return None
        end = handle.seek(0, os.SEEK_END)
        meta_at = _meta_line(handle, len(_MAGIC), end)
        if meta_at < 0:
            return None
        handle.seek(len(_MAGIC))
        crc, count, left = 0, 0, meta_at - len(_MAGIC)
        while left > 0:
            block = handle.read(min(left, _BLOCK))
            if not block:
                return None
            crc, count, left = zlib.crc32(block, crc), count + block.count(b"\n"), left - len(block)
        meta, trailer = handle.readline(), handle.readline()
        if trailer != _TRAILER + f"{count} {crc}\n".encode() or handle.read(1):
            return None
    try:
        header = IndexHeader(**orjson.loads(meta[len(_META):]))
    except (orjson.JSONDecodeError, TypeError):
        return None
    for file, size, want in ((results, header.results, header.results_crc),
                             (journal, header.journal, header.journal_crc)):
        if size and file_mark(file, size) != (size, want):
            return None
    return header


def _meta_line(handle: IO[bytes], start: int, end: int) -> int:
    """Where the meta line starts (the body, from ``start``, has no line beginning with ``#``), or -1. It is
    next to last, so it is looked for from the end, in ever larger pieces (its list of runs grows)."""
    span = _BLOCK >> 4
    while True:
        at = max(start - 1, end - span)  # from the magic line's newline: the body may be empty
        handle.seek(at)
        found = handle.read(end - at).rfind(b"\n" + _META)
        if found >= 0:
            return at + found + 1
        if at == start - 1:
            return -1
        span *= 4


def iter_index(out_dir: Path) -> Iterator[tuple[str, bytes, int]]:
    """The index's lines as ``(kind, key, value)``: ``("e", key, offset << 2 | flags)``, ``("i", b"",
    offset)`` or ``("q", key, 0)``; keys are the GUIDs' 16 bytes (``inputs.keys``). Only for an index
    ``read_header`` accepted."""
    with open_read(out_dir / INDEX_NAME) as handle:
        handle.readline()
        for line in handle:
            tag = line[:1]
            if tag == b"i":
                yield "i", b"", int(line[2:])
            elif tag == b"q":
                yield "q", unhexlify(line[2:34]), 0
            elif tag == b"#":
                return  # the meta line
            else:
                yield "e", unhexlify(line[:32]), int(line[35:]) << 2 | (line[33] - 48)


def read_done(out_dir: Path, done: Deduper, doubt: Deduper) -> None:
    """Add the index's done devices to ``done`` and those in doubt to ``doubt``; nothing else is read.

    Why not ``iter_index``: a resume reads the index of a big folder before it reads its input, every night,
    and needs only these two sets; so the body is taken a block at a time, its keys picked out of each
    block with one comprehension and added at once (``Deduper.add_keys``). Only for an index
    ``read_header`` accepted (its body lines never begin with ``#``; the meta line does).
    """
    with open_read(out_dir / INDEX_NAME) as handle:
        handle.readline()
        carry: bytes | None = b"\n"  # the newline before the next line (and what came of it)
        while carry is not None:
            chunk = handle.read(_BLOCK)
            data = carry + chunk
            meta = data.find(b"\n#")
            if meta >= 0 or not chunk:
                body, carry = data[1:meta + 1] if meta >= 0 else data[1:], None
            else:
                cut = data.rfind(b"\n")
                body, carry = data[1:cut + 1], data[cut:]
            lines = body.split(b"\n")
            # ``<32 hex> <flags> <offset>``: an entry has its space at 32; the flag digit 1 or 3 is DONE
            done.add_keys(unhexlify(b"".join([line[:32] for line in lines
                                              if line[33:34] in _DONE_DIGITS and line[32:33] == b" "])))
            doubt.add_keys(unhexlify(b"".join([line[2:34] for line in lines if line[:2] == b"q "])))


class IndexWriter:
    """Writes a new index beside the old one; ``commit`` renames it over, ``abort`` leaves the old one.

    Until the rename the old index (or none) stays: a run killed while rewriting leaves an index that is
    older than the files, and the next run catches up from its marks (see the module docstring).
    """

    def __init__(self, out_dir: Path) -> None:
        self._stack = contextlib.ExitStack()
        self._handle: IO[Any] = self._stack.enter_context(atomic_file(out_dir / INDEX_NAME))
        self._body: list[bytes] = []
        self._crc = 0
        self._count = 0
        self._handle.write(_MAGIC)

    def entry(self, key: bytes, offset: int, flags: int) -> None:
        self._line(b"%s %d %d\n" % (hexlify(key), flags, offset))

    def invalid(self, offset: int) -> None:
        self._line(b"i %d\n" % offset)

    def doubt(self, key: bytes) -> None:
        self._line(b"q %s\n" % hexlify(key))

    def copy(self, lines: bytes) -> None:
        """Whole lines of another index, as they are (a first run's scratch file, a block at a time)."""
        self._drain()
        self._put(lines)

    def _line(self, line: bytes) -> None:
        self._body.append(line)
        if len(self._body) >= 4096:
            self._drain()

    def _drain(self) -> None:
        if self._body:
            data = b"".join(self._body)
            self._body.clear()
            self._put(data)

    def _put(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._count += data.count(b"\n")
        self._handle.write(data)

    def commit(self, header: IndexHeader) -> None:
        """Write the meta line (the marks are known only now) and the trailer, fsync, rename over the old one."""
        self._drain()
        self._handle.write(_META + header.to_json() + b"\n" + _TRAILER + f"{self._count} {self._crc}\n".encode())
        self._stack.close()

    def abort(self) -> None:
        """Remove the new file; the old index stays."""
        error = RuntimeError("index not written")
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(RuntimeError, error, None)


class RunEntries:
    """A first run's index, written as its records are: each entry goes to a scratch file at once.

    Why: a first run of a million devices must not read every record back at the end (a parse and a dict
    per device), nor hold its entries in memory next to the source's de-duplication set (the run's peak).
    Within one run a device has at most one real record (the source de-duplicates), so only ``duplicate``
    pointers need resolving at the end, and they are few: a pointer stays only for a device with no real
    record (its first row was never decided), merged into the offset order as the scratch file is copied
    into the index. ``in_order``: the writer's caller decides every device before any later row (a dry run,
    a plan: nothing is in flight), so a pointer's device always has its real record already and the
    pointers need no pass over the scratch file at all.
    """

    def __init__(self, out_dir: Path, *, in_order: bool = False) -> None:
        self.offset = 0
        self._in_order = in_order
        self._scratch_path = out_dir / f".{INDEX_NAME}.run"
        self._scratch: IO[bytes] = os.fdopen(open_fd(self._scratch_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                             "wb", buffering=_BLOCK)
        self._pointers: dict[bytes, int] = {}
        self.runs: list[str] = []
        self.open_intents: set[bytes] = set()
        """Devices (keys) with an intent and no done record yet: in doubt if the run ends so."""

    def record(self, key: bytes | None, size: int, *, real: bool, done: bool, run_id: str | None) -> None:
        """One record of ``size`` bytes appended to results.jsonl (``key`` None: an invalid row)."""
        offset, self.offset = self.offset, self.offset + size
        if run_id is not None and run_id not in self.runs[-1:]:
            self.runs.append(run_id)
        if key is None:
            self._scratch.write(b"i %d\n" % offset)
        elif not real:
            if not self._in_order:
                self._pointers[key] = offset << 2 | (DONE if done else 0)
        else:
            self._scratch.write(b"%s %d %d\n" % (hexlify(key), REAL | (DONE if done else 0), offset))
            if done:
                self.open_intents.discard(key)

    def planned(self, rows: Iterable[InputRow], offsets: Sequence[int]) -> None:
        """``record`` for a dry run's planned devices (real, not done; the writer keeps ``runs``): their rows
        (normalised ids) and the offset of each one's line, then the offset after the last (``offsets`` is one
        longer). The key the reader made is written as it is (``hex``), else the id without its dashes."""
        self._scratch.write("".join([
            f"{row.key.hex() if row.key else row.device_id.replace('-', '')} 2 {offset}\n"  # type: ignore[union-attr]
            for row, offset in zip(rows, offsets, strict=False)]).encode())  # offsets: one more than rows
        self.offset = offsets[-1]

    def write(self, out_dir: Path, results: Path, journal: Path, *, intent_run: str | None) -> None:
        """The index of this run alone (the folder held nothing before it), from the scratch file: copied a
        block at a time, unless a pointer without a real record has to be merged into the offset order."""
        self._scratch.close()
        pointers = {hexlify(key): value for key, value in self._pointers.items()}
        if pointers:  # only the pointers of devices without a real record stay
            for lines in _line_blocks(self._scratch_path):
                for hexkey in pointers.keys() & set(map(_HEX_KEY, lines)):
                    del pointers[hexkey]
        extras = sorted((value >> 2, key, value & 3) for key, value in pointers.items())
        extras.append((1 << 62, b"", 0))
        writer = IndexWriter(out_dir)
        try:
            following = 0
            with open_read(self._scratch_path) as scratch:
                if len(extras) == 1:  # the usual case: no pointer to merge in
                    while block := scratch.read(_BLOCK):
                        writer.copy(block)
                else:
                    for line in scratch:
                        at = int(line[2:]) if line[:1] == b"i" else int(line[35:])
                        while extras[following][0] < at:
                            offset, hexkey, flags = extras[following]
                            writer.entry(unhexlify(hexkey), offset, flags)
                            following += 1
                        writer.copy(line)
            for offset, hexkey, flags in extras[following:-1]:
                writer.entry(unhexlify(hexkey), offset, flags)
            for key in self.open_intents:
                writer.doubt(key)
            (size, crc), (jsize, jcrc) = file_mark(results), file_mark(journal)
            writer.commit(IndexHeader(results=size, results_crc=crc, journal=jsize, journal_crc=jcrc,
                                      runs=list(self.runs), intent_runs=[intent_run] if jsize and intent_run else [],
                                      latest_run=self.runs[-1] if self.runs else None))
        except BaseException:
            writer.abort()
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self._scratch_path)

    def discard(self) -> None:
        """The run's files could not be closed: no index from it (the next resume rebuilds one)."""
        with contextlib.suppress(OSError):
            self._scratch.close()
        with contextlib.suppress(OSError):
            os.unlink(self._scratch_path)


def _line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The lines of a file (without their newlines), a block's worth at a time."""
    with open_read(path) as handle:
        carry = b""
        while block := handle.read(_BLOCK):
            lines = (carry + block).split(b"\n")
            carry = lines.pop()
            yield lines
        if carry:
            yield [carry]
