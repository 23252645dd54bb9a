"""bulk-assign: assign Windows Autopilot deployment profiles in bulk through Microsoft Graph.

The curated public API. The protocols are the seams ``BulkAssigner`` accepts (bring your own tokens,
pacer, sink, verifier, operation, progress display or transport); docs/architecture.md says where each
one sits in the pipeline.
"""

from .auth import TokenProvider
from .config import Rate, Settings, SettingsOptions
from .engine import BulkAssigner, assign_profiles
from .errors import (
    AuthenticationError,
    BulkAssignError,
    CertificateError,
    EmulatorError,
    InputFileError,
    InternalError,
    ListingError,
    OutputLocked,
    UsageError,
)
from .graph.operations import Operation
from .graph.transport import Transport
from .models import AssignmentTarget, DeviceResult, SkipReason, Status
from .pipeline.pacing import Pacer
from .pipeline.run import Progress
from .pipeline.verify import Verifier
from .store.reports import ResultSink, RunStats, Summary

__all__ = [
    "AssignmentTarget",
    "AuthenticationError",
    "BulkAssignError",
    "BulkAssigner",
    "CertificateError",
    "DeviceResult",
    "EmulatorError",
    "InputFileError",
    "InternalError",
    "ListingError",
    "Operation",
    "OutputLocked",
    "Pacer",
    "Progress",
    "Rate",
    "ResultSink",
    "RunStats",
    "Settings",
    "SettingsOptions",
    "SkipReason",
    "Status",
    "Summary",
    "TokenProvider",
    "Transport",
    "UsageError",
    "Verifier",
    "assign_profiles",
]
