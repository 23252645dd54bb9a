"""Seeded fault decisions that do not depend on the order in which requests arrive.

A shared RNG stream would make the n-th request faulty, and with concurrent clients "the n-th request" is
a different device each run. Instead each decision is a hash of (seed, key, occurrence), where the key is
the device id (or a batch's content) and the occurrence is how many times that key has reached the fault
stage. The same seed and the same per-device history therefore give the same faults, however the
requests interleave.
"""

from __future__ import annotations

import hashlib

# Which kinds make sense where: a batch item cannot be reset or delayed on its own, and a whole batch is
# never "malformed" (its items are).
WRITE_KINDS = frozenset({"503", "504", "reset", "latency", "malformed", "ambiguous-504", "ambiguous-reset"})
ITEM_KINDS = frozenset({"503", "504", "malformed", "ambiguous-504"})
BATCH_KINDS = frozenset({"503", "504", "reset", "latency", "ambiguous-504", "ambiguous-reset"})

_SCALE = float(1 << 64)


def unit(seed: int, key: str, occurrence: int, salt: str = "") -> tuple[float, int]:
    """A uniform float in [0, 1) and a 64-bit integer, both fixed by (seed, key, occurrence, salt)."""
    digest = hashlib.blake2b(f"{seed}|{salt}|{key}|{occurrence}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE, int.from_bytes(digest[8:], "big")


class FaultPlan:
    """Decides whether the ``occurrence``-th arrival of ``key`` gets a fault, and which one."""

    def __init__(self, seed: int, probability: float, kinds: tuple[str, ...]) -> None:
        self.seed = seed
        self.probability = probability
        self.kinds = tuple(dict.fromkeys(kinds))  # de-duplicated, order kept (the order is part of the seed)
        self._seen: dict[str, int] = {}
        self._allowed = {
            scope: tuple(k for k in self.kinds if k in allowed)
            for scope, allowed in (("write", WRITE_KINDS), ("item", ITEM_KINDS), ("batch", BATCH_KINDS))
        }

    @property
    def active(self) -> bool:
        return self.probability > 0.0 and bool(self.kinds)

    def decide(self, key: str, scope: str = "write") -> str | None:
        """Count one more arrival of ``key`` and return the fault kind for it, or None."""
        occurrence = self._seen.get(key, 0)
        self._seen[key] = occurrence + 1
        return self.kind_for(key, occurrence, scope)

    def kind_for(self, key: str, occurrence: int, scope: str = "write") -> str | None:
        """The pure part of ``decide``: no counting, so tests can predict decisions."""
        allowed = self._allowed[scope]
        if not allowed or self.probability <= 0.0:
            return None
        u, n = unit(self.seed, key, occurrence, scope)
        if u >= self.probability:
            return None
        return allowed[n % len(allowed)]

    def latency_for(self, key: str) -> float:
        """Seconds of extra delay for a ``latency`` fault: 200-500 ms, fixed by the seed and the key."""
        u, _ = unit(self.seed, key, self._seen.get(key, 0), "latency")
        return 0.2 + 0.3 * u

    def shuffle_seed(self, key: str) -> int:
        """A seed for shuffling one batch's responses, reproducible per batch content and occurrence."""
        return unit(self.seed, key, self._seen.get(key, 0), "shuffle")[1]

    def clear(self) -> None:
        self._seen.clear()
