"""bulk-assign: assign Windows Autopilot deployment profiles in bulk through Microsoft Graph."""

from .config import Rate, Settings
from .errors import (
    AuthenticationError,
    BulkAssignError,
    InputFileError,
    OutputLocked,
    RunStopped,
    UsageError,
)
from .models import AssignmentTarget, DeviceResult, SkipReason, Status

__all__ = [
    "AssignmentTarget",
    "AuthenticationError",
    "BulkAssignError",
    "DeviceResult",
    "InputFileError",
    "OutputLocked",
    "Rate",
    "RunStopped",
    "Settings",
    "SkipReason",
    "Status",
    "UsageError",
]
