"""What one HTTP attempt produced, as a value: the currency between the Graph call and the retry policy."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..models import SkipReason


class Kind(Enum):
    """Response classes (docs/architecture.md)."""

    SUCCESS = "success"
    THROTTLED = "throttled"  # 429
    TRANSIENT = "transient"  # 408/500/502/503/504, timeouts, resets: possibly committed
    AUTH = "auth"  # 401: refresh once, then the run stops
    PERMANENT = "permanent"  # 400/403/404/409 and anything else


@dataclass(slots=True)
class Attempt:
    """What one HTTP attempt produced, as a value."""

    kind: Kind
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    request_id: str | None = None
    assignment_id: str | None = None
    maybe_committed: bool = False  # the request may have reached Graph and landed
    verified: bool = False  # a read-back found the assignment already in place
    body: Any = None  # parsed JSON body of a success (verification reads use it)
    skip: SkipReason | None = None  # the answer itself says the change was there (an existing member)
