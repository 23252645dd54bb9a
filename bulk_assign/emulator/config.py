"""The emulator's settings: one frozen value shared by the in-process ``Emulator``, ``build_app`` and the CLI.

A plain frozen dataclass rather than pydantic: it is read on the hot path (every request looks at the
fault probability and latency), and attribute access on a dataclass costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import Rate

ThrottleKind = Literal["sliding", "fixed", "bucket"]
RetryAfterStyle = Literal["int", "decimal", "list", "missing", "mixed"]

THROTTLE_KINDS: tuple[str, ...] = ("sliding", "fixed", "bucket")
RETRY_AFTER_STYLES: tuple[str, ...] = ("int", "decimal", "list", "missing", "mixed")
FAULT_KINDS: tuple[str, ...] = (
    "503",
    "504",
    "reset",
    "latency",
    "malformed",
    "ambiguous-504",
    "ambiguous-reset",
)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated tenant behaves; the defaults are Intune's published limits and no faults."""

    app_rate: Rate = Rate(100, 20.0)
    tenant_rate: Rate = Rate(200, 20.0)
    read_rate: Rate | None = Rate(1000, 20.0)
    throttle: ThrottleKind = "sliding"
    retry_after: RetryAfterStyle = "int"
    faults: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    latency_ms: float = 0.0
    inventory: frozenset[str] | dict[str, dict[str, str]] | None = None  # ids, or id -> Graph fields
    # Seconds a newly assigned device reports ``pending`` before ``assignedInSync`` (Intune takes minutes);
    # 0 flips at once, so tests that only count writes need not wait.
    status_delay: float = 0.0
    # The single-device GET answers ``unknown`` for assigned devices while the listing tells the truth, as
    # public reports describe: a client that verifies through the single GET is tested against it.
    status_unknown_quirk: bool = False
    # The documented route (rollout.py): deployment profiles (ids, in creation order) and dynamic groups
    # (group id -> the group tag their rule matches)
    profiles: tuple[str, ...] = ()
    dynamic_groups: dict[str, str] | None = None
    token: str | None = None
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        """Reject nonsense early, with messages that name the setting (the CLI shows them verbatim)."""
        if self.throttle not in THROTTLE_KINDS:
            raise ValueError(f"throttle must be one of {', '.join(THROTTLE_KINDS)}, not {self.throttle!r}")
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after must be one of {', '.join(RETRY_AFTER_STYLES)}, not {self.retry_after!r}")
        if not 0.0 <= self.faults <= 1.0:
            raise ValueError(f"faults is a probability between 0 and 1, not {self.faults!r}")
        unknown = [k for k in self.fault_kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; choose from {', '.join(FAULT_KINDS)}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms cannot be negative ({self.latency_ms!r})")
        if not self.status_delay >= 0:  # also refuses NaN
            raise ValueError(f"status_delay cannot be negative ({self.status_delay!r})")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port!r}")
