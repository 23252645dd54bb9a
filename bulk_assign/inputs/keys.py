"""Device ids as 16-byte keys, and the compact set and map of them that a run holds per distinct id.

Why not a ``set`` of ints or strings: the distinct ids are the only thing a run holds per input row (the
design's budget is 100 bytes per id above the import baseline), and a resume holds the folder's done
devices the same way. A 128-bit Python int costs 48 bytes and its slot in a set about 35 more (83 bytes
per id; a 36-character string, more). Here each key is the GUID's 16 bytes, packed into buckets chosen by
the key's hash: about 20 bytes per id (30 for a map entry), and a lookup is one hash, one list index and
one C-level ``find`` in a bucket of at most a few dozen keys.

The buckets grow fourfold whenever they average more than ``_LOAD`` keys (up to 2**18 buckets, a few
million keys; beyond that they only get longer), so a small set is as compact per key as a big one. A
``find`` may match across two neighbouring entries (the end of one and the start of the next); only a
match at a multiple of the entry width is the key, so the search goes on past any other.
"""

from __future__ import annotations

from binascii import unhexlify
from collections.abc import Iterable, Iterator

from ..guid import normalize_guid

__all__ = ["KEY", "Deduper", "GuidMap", "guid_key", "guid_key_bytes", "key_of"]

KEY = 16
_DASHES = "----"
_FIRST_BUCKETS = 1 << 8
_MOST_BUCKETS = 1 << 18
_LOAD = 16


def guid_key(text: str) -> bytes | None:
    """The 16 bytes of ``text`` if it is a GUID spelled 8-4-4-4-12 (either case, nothing around it), else
    None: the quick test for an id as the readers and the engine write it. Braces, whitespace and other
    spellings are ``normalize_guid``'s to accept (``key_of``).

    Exact: ``fromhex`` takes only ASCII hex digits (and whitespace between pairs, which would leave fewer
    than 16 bytes), and the dashes are checked where a GUID has them (every 5th character from the 9th).
    """
    if len(text) != 36 or text[8:24:5] != _DASHES:
        return None
    try:
        key = bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return None
    return key if len(key) == KEY else None


def guid_key_bytes(cell: bytes) -> bytes | None:
    """``guid_key`` of a cell as the file holds it (ASCII bytes; ``unhexlify`` takes no whitespace at all)."""
    if len(cell) != 36 or cell[8:24:5] != b"----":
        return None
    try:
        key = unhexlify(cell.replace(b"-", b""))
    except ValueError:
        return None
    return key if len(key) == KEY else None


def key_of(device_id: str) -> bytes | None:
    """The key of any GUID spelling the readers accept (``normalize_guid``); None if it is not a GUID."""
    key = guid_key(device_id)
    if key is None and (guid := normalize_guid(device_id)) is not None:
        key = guid_key(guid)
    return key


def _find(bucket: bytes | bytearray, key: bytes, width: int) -> int:
    """Where ``key`` starts an entry of ``bucket`` (entries of ``width`` bytes, key first), or -1."""
    at = bucket.find(key)
    while at > 0 and at % width:
        at = bucket.find(key, at + 1)
    return at


class Deduper:
    """A set of device ids (the distinct ids seen so far, the done devices of a folder), about 20 bytes per
    id: ``add``/``has`` take ids as strings, ``add_key``/``has_key`` as keys (``guid_key``)."""

    __slots__ = ("_buckets", "_grow_at", "_mask", "_size")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._buckets: list[bytes] = [b""] * _FIRST_BUCKETS  # the empty bytes object is shared: free until used
        self._mask = _FIRST_BUCKETS - 1
        self._grow_at = _FIRST_BUCKETS * _LOAD
        self._size = 0
        for key in keys:
            self.add_key(key)

    def add(self, device_id: str) -> bool:
        """Remember ``device_id``; True if it is new, False if it was seen before. ValueError if not a GUID."""
        key = guid_key(device_id) or key_of(device_id)
        if key is None:
            raise ValueError(f"{device_id!r} is not a GUID")
        return self.add_key(key)

    def add_key(self, key: bytes) -> bool:
        """Remember a device by its key; True if it is new."""
        slot = hash(key) & self._mask
        bucket = self._buckets[slot]
        at = bucket.find(key)
        while at > 0 and at & 15:  # _find, inlined: this runs once per input row
            at = bucket.find(key, at + 1)
        if at >= 0:
            return False
        self._buckets[slot] = bucket + key
        self._size += 1
        if self._size > self._grow_at:
            self._grow()
        return True

    def add_keys(self, keys: bytes) -> None:
        """Remember every key of ``keys`` (keys back to back): a resume reads the index's done devices so,
        with the buckets grown once up front and no call per key."""
        while self._size + len(keys) // KEY > self._grow_at:
            self._grow()
        buckets, mask, added = self._buckets, self._mask, 0
        for start in range(0, len(keys), KEY):
            key = keys[start:start + KEY]
            slot = hash(key) & mask
            bucket = buckets[slot]
            at = bucket.find(key)
            while at > 0 and at & 15:
                at = bucket.find(key, at + 1)
            if at < 0:
                buckets[slot] = bucket + key
                added += 1
        self._size += added

    def discard_key(self, key: bytes) -> None:
        slot = hash(key) & self._mask
        bucket = self._buckets[slot]
        if (at := _find(bucket, key, KEY)) >= 0:
            self._buckets[slot] = bucket[:at] + bucket[at + KEY:]
            self._size -= 1

    def has_key(self, key: bytes) -> bool:
        bucket = self._buckets[hash(key) & self._mask]
        at = bucket.find(key)
        while at > 0 and at & 15:  # _find, inlined: a resume asks once per done row
            at = bucket.find(key, at + 1)
        return at >= 0

    def has(self, device_id: str) -> bool:
        """``device_id in self`` for a string (False if it is not a GUID)."""
        key = guid_key(device_id) or key_of(device_id)
        return key is not None and self.has_key(key)

    def __contains__(self, device_id: object) -> bool:
        return isinstance(device_id, str) and self.has(device_id)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        """The keys, in no particular order."""
        for bucket in self._buckets:
            for at in range(0, len(bucket), KEY):
                yield bucket[at:at + KEY]

    def _grow(self) -> None:
        old = self._buckets
        size, self._mask, self._grow_at = _larger(len(old))
        self._buckets = [b""] * size
        buckets, mask = self._buckets, self._mask
        for index, bucket in enumerate(old):
            old[index] = b""  # freed as it is moved: the set is never held twice
            for at in range(0, len(bucket), KEY):
                key = bucket[at:at + KEY]
                buckets[hash(key) & mask] += key


def _larger(buckets: int) -> tuple[int, int, int]:
    """The table after ``buckets`` filled up: four times as many buckets (at most ``_MOST_BUCKETS``), their
    index mask, and the size at which to grow again (never, once at the most)."""
    size = min(buckets * 4, _MOST_BUCKETS)
    return size, size - 1, size * _LOAD if size < _MOST_BUCKETS else 1 << 62


_ENTRY = KEY + 8


class GuidMap:
    """Device key -> an int below 2**64, about 30 bytes per entry: the merge's choice of record per device
    (``store.history``)."""

    __slots__ = ("_buckets", "_grow_at", "_mask", "_size")

    def __init__(self) -> None:
        self._buckets: list[bytearray | bytes] = [b""] * _FIRST_BUCKETS  # a bytearray once written to
        self._mask = _FIRST_BUCKETS - 1
        self._grow_at = _FIRST_BUCKETS * _LOAD
        self._size = 0

    def get(self, key: bytes) -> int | None:
        bucket = self._buckets[hash(key) & self._mask]
        at = _find(bucket, key, _ENTRY)
        return None if at < 0 else int.from_bytes(bucket[at + KEY:at + _ENTRY])

    def __setitem__(self, key: bytes, value: int) -> None:
        slot = hash(key) & self._mask
        bucket = self._buckets[slot]
        at = _find(bucket, key, _ENTRY)
        if at >= 0:
            bucket[at + KEY:at + _ENTRY] = value.to_bytes(8)  # type: ignore[index]  # found: a bytearray
            return
        if not isinstance(bucket, bytearray):
            bucket = self._buckets[slot] = bytearray()
        bucket += key
        bucket += value.to_bytes(8)
        self._size += 1
        if self._size > self._grow_at:
            self._grow()

    def pop(self, key: bytes) -> int | None:
        """Remove ``key``; its value, or None if it was not there."""
        bucket = self._buckets[hash(key) & self._mask]
        at = _find(bucket, key, _ENTRY)
        if at < 0:
            return None
        value = int.from_bytes(bucket[at + KEY:at + _ENTRY])
        del bucket[at:at + _ENTRY]  # type: ignore[union-attr]  # found: a bytearray
        self._size -= 1
        return value

    def __len__(self) -> int:
        return self._size

    def _grow(self) -> None:
        old = self._buckets
        size, self._mask, self._grow_at = _larger(len(old))
        self._buckets = [b""] * size
        buckets, mask = self._buckets, self._mask
        for index, bucket in enumerate(old):
            old[index] = b""
            for at in range(0, len(bucket), _ENTRY):
                slot = hash(bytes(bucket[at:at + KEY])) & mask
                if not isinstance(target := buckets[slot], bytearray):
                    target = buckets[slot] = bytearray()
                target += bucket[at:at + _ENTRY]
