"""The emulator's settings: one frozen value shared by the in-process ``Emulator``, ``build_app`` and the CLI.

A plain frozen dataclass rather than pydantic: it is read on the hot path (every request looks at the
fault probability and latency), and attribute access on a dataclass costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import Rate
from ..guid import normalize_guid

ThrottleKind = Literal["sliding", "fixed", "bucket"]
RetryAfterStyle = Literal["int", "decimal", "list", "missing", "mixed"]
SeedCallSemantics = Literal["device", "profile"]

THROTTLE_KINDS: tuple[str, ...] = ("sliding", "fixed", "bucket")
RETRY_AFTER_STYLES: tuple[str, ...] = ("int", "decimal", "list", "missing", "mixed")
SEED_CALL_SEMANTICS: tuple[str, ...] = ("device", "profile")
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
    # The other way in (directory.py): static Entra groups (group id -> the object ids of their first
    # members), and which of them are synced from on-premises (a synced group is static even if not listed
    # in static_groups; the cloud cannot change its members).
    static_groups: dict[str, frozenset[str]] | None = None
    synced_groups: tuple[str, ...] = ()
    # Entra's own quotas per app+tenant (https://learn.microsoft.com/graph/throttling-limits, "Identity and
    # access service limits"): resource units, 3,500 per 10 s for a small tenant, and writes, 3,000 per
    # 2 min 30 s. None switches one off.
    directory_read_rate: Rate | None = Rate(3500, 10.0)
    directory_write_rate: Rate | None = Rate(3000, 150.0)
    # What the seed call does (operations.py): "device" stores an assignment on the device itself;
    # "profile" is what public sources infer, the target added as a group assignment to the device's
    # current profile, and 404 for a device with none.
    seed_call_semantics: SeedCallSemantics = "device"
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
        self._check_groups()
        if self.seed_call_semantics not in SEED_CALL_SEMANTICS:
            raise ValueError(f"seed_call_semantics must be one of {', '.join(SEED_CALL_SEMANTICS)}, "
                             f"not {self.seed_call_semantics!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port!r}")

    def _check_groups(self) -> None:
        """Static and synced group ids and their members are GUIDs, no group is dynamic and static, and the
        inventory's Entra device ids are GUIDs (or empty: no Entra object)."""
        static = dict(self.static_groups or {})
        for group, members in static.items():
            if normalize_guid(group) is None:
                raise ValueError(f"static group id {group!r} is not a GUID")
            bad = [m for m in members if normalize_guid(m) is None]
            if bad:
                raise ValueError(f"static group {group}: member {bad[0]!r} is not an object id (GUID)")
        for group in self.synced_groups:
            if normalize_guid(group) is None:
                raise ValueError(f"synced group id {group!r} is not a GUID")
        if isinstance(self.inventory, dict):
            for device, details in self.inventory.items():
                entra = details.get("azureActiveDirectoryDeviceId")
                if entra and entra.strip() and normalize_guid(entra) is None:
                    raise ValueError(f"device {device}: azureActiveDirectoryDeviceId {entra!r} is not a GUID")
        dynamic = {normalize_guid(g) for g in self.dynamic_groups or {}}
        both = dynamic & {normalize_guid(g) for g in (*static, *self.synced_groups)}
        if both:
            raise ValueError(f"group {sorted(str(g) for g in both)[0]} cannot be both dynamic and static")
