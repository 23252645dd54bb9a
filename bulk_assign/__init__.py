"""bulk-assign: assign Windows Autopilot deployment profiles in bulk through Microsoft Graph."""

from .config import Rate, Settings
from .engine import BulkAssigner, assign_profiles
from .errors import (
    AuthenticationError,
    BulkAssignError,
    InputFileError,
    OutputLocked,
    RunStopped,
    UsageError,
)
from .models import AssignmentTarget, DeviceResult, SkipReason, Status
from .store.reports import Summary

__all__ = [
    "AssignmentTarget",
    "AuthenticationError",
    "BulkAssignError",
    "BulkAssigner",
    "DeviceResult",
    "InputFileError",
    "OutputLocked",
    "Rate",
    "RunStopped",
    "Settings",
    "SkipReason",
    "Status",
    "Summary",
    "UsageError",
    "assign_profiles",
]
