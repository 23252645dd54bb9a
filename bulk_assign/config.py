"""Validated, frozen run settings, and the small parsers for the values users type (rates, durations, URLs).

The CLI, job files and the coroutine API all end in one ``Settings``; whatever reaches the engine has
already been checked, so the engine never has to re-validate or guess.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UsageError
from .guid import normalize_guid
from .models import AssignmentTarget, group_tag_problem

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/beta"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BARE_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)


def parse_duration(text: str, *, default_unit: str | None = None) -> float:
    """``20s``, ``1m``, ``6h``, ``1.5h``, ``250ms``, ``1h30m`` -> seconds.

    A bare number is refused unless the caller names ``default_unit``: ``--max-runtime 6`` meant six hours
    to whoever typed it and six seconds to the program, so the unit of time must be written.
    """
    total, pos, text = 0.0, 0, str(text)
    bare: str | None = None
    for match in _DURATION.finditer(text):
        if match.start() != pos or not match.group(0).strip():
            break
        unit = match.group(2) or default_unit
        if unit is None:
            bare = bare or match.group(1)
        else:
            total += float(match.group(1)) * _UNITS[unit.lower()]
        pos = match.end()
    if pos != len(text) or not text.strip():
        raise ValueError(f"{text!r} is not a duration (examples: 20s, 1m, 6h, 1h30m)")
    if bare is not None:
        raise ValueError(f"{text!r} needs a unit of time: write e.g. {bare}s, {bare}m or {bare}h")
    return total


INTUNE_APP_RATE_TEXT = "100/20s"
"""Intune's documented write budget per app per tenant (graph-facts.md): 100 writes in any 20 s."""

READS_PER_WRITE = 5
"""The default read budget (``--read-rate``) is this many times the write budget (``--rate``), same period.

Why derived and why 5: Intune publishes its "any request" budget at ten times its write budget (1000 and
100 per 20 s per app, 2000 and 200 per tenant), and writes count against it too. Reads at 5x plus the writes
spend at most 6/10 of it (7/10 with the read pacer's burst, ``pacing.read_pacer``), leaving the rest to other
requests of the same app (a ``status`` poll, another tool) while read-before-write needs only about one read
per write: reads can run ahead and catch up after a pause. At the default ``--rate`` this is 500/20s. Derived
rather than fixed, a budget scaled for a rehearsal against the emulator (``--rate 1000/1s``) scales its reads
with it instead of becoming read-bound at 25 reads a second. ``--read-rate`` given explicitly wins.
"""


@dataclass(frozen=True, slots=True)
class Rate:
    """A write budget: at most ``count`` writes in any ``period`` seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str | Rate) -> Rate:
        """``100/20s``, ``200/1m``, ``5/250ms`` -> Rate; a clear ValueError otherwise.

        The period needs its unit: a bare ``100`` read as "per second" is twenty times Intune's limit,
        so it is refused with the spelling that was probably meant.
        """
        if isinstance(text, Rate):
            return text
        count, sep, period = str(text).partition("/")
        try:
            n = int(count.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a rate; write N/T such as 100/20s or 200/1m") from None
        if not sep or _BARE_NUMBER.fullmatch(period):
            spelled = f"{n}/{period.strip()}s" if sep else f"{n}/20s"
            raise ValueError(f"{text!r}: a rate needs its unit of time, e.g. {spelled} "
                             f"(Intune allows {INTUNE_APP_RATE_TEXT} per app)")
        try:
            seconds = parse_duration(period)
        except ValueError:
            raise ValueError(f"{text!r} is not a rate; write N/T such as 100/20s or 200/1m") from None
        if n < 1 or seconds <= 0:
            raise ValueError(f"{text!r}: the count and the period must both be positive")
        return cls(n, seconds)

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        period = f"{self.period:g}s"
        return f"{self.count}/{period}"


def rate_warning(rate: Rate, graph_url: str) -> str | None:
    """A warning when ``rate`` is above Intune's per-app budget towards a real tenant (not loopback).

    Why only a warning: Microsoft may raise a tenant's limits, and the pacer backs off on 429s anyway;
    but a budget above the documented one mostly buys 429s, so the operator should know once.
    """
    limit = Rate.parse(INTUNE_APP_RATE_TEXT)
    host = urlsplit(graph_url).hostname or ""
    if rate.per_second <= limit.per_second or is_loopback(host):
        return None
    return (f"--rate {rate} is {rate.per_second / limit.per_second:.3g}x Intune's documented budget of "
            f"{INTUNE_APP_RATE_TEXT} per app; expect 429s (the pacer will back off)")


_API_VERSIONS = ("beta", "v1.0")


def check_graph_url(url: str) -> str:
    """Accept ``https://`` anywhere and ``http://`` only on loopback; strip the trailing slash.

    Plain HTTP to a real host would send the bearer token in clear text, so it is refused outright.
    The path must end in the API version (``/beta`` or ``/v1.0``): every request path is relative to it,
    and a root without it would send the writes to URLs Graph does not have.
    """
    text = url.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{url!r}: the Graph URL contains a space or a control character")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{url!r}: port 0 is not a port to connect to; give 1 to 65535 or none")
    if "?" in text or "#" in text:
        raise ValueError(f"{url!r}: the Graph URL takes no query or fragment (remove the '?' or '#')")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: plain http:// is only allowed on loopback (127.0.0.1, ::1, localhost)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the Graph URL takes no user name or password (Graph authenticates with tokens)")
    version = parts.path.rstrip("/").rpartition("/")[2]
    if version not in _API_VERSIONS:
        raise ValueError(f"{url!r}: the Graph URL must end in the API version, e.g. "
                         f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/beta (or /v1.0)")
    # the scheme is case-insensitive (RFC 3986): ``HTTP://`` is normalised, not refused
    return parts.scheme + text[len(parts.scheme):].rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rate(value: Any) -> Rate:
    return Rate.parse(value)


class SettingsOptions(TypedDict, total=False):
    """The keyword arguments ``assign_profiles`` passes on to ``Settings`` (every field but ``target``).

    Spelled out so an API caller's editor and type checker know them; a test keeps it equal to the fields.
    """

    graph_url: str
    concurrency: int
    rate: Rate | str
    read_rate: Rate | str
    max_attempts: int
    max_retry_after: float
    max_throttle_wait: float
    request_timeout: float
    limit: int | None
    ca_bundle: Path | None
    out_dir: Path | None
    dry_run: bool
    plan: bool
    preflight: bool
    read_before_write: bool
    verify: bool
    batch: bool
    run_id: str | None
    resume: bool
    deadline: datetime | None
    max_runtime: float | None
    max_failure_rate: float
    failure_min_sample: int
    drain_seconds: float
    id_type: Literal["id", "serial"]
    group_tag: str | None
    group_tag_column: str | None
    profile: str | None
    group: str | None
    add_to_group: str | None
    directory_rate: Rate | str
    directory_read_rate: Rate | str
    inventory_file: Path | None
    refresh_inventory: bool


class Settings(BaseModel):
    """Everything one run needs. Frozen: the engine never changes its own configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    target: AssignmentTarget | None = None
    """What the seed call assigns; None for the read-only commands (``status``, ``inventory``)."""
    graph_url: str = DEFAULT_GRAPH_URL
    concurrency: int = Field(8, ge=1, le=512)
    rate: Annotated[Rate, BeforeValidator(_rate)] = Rate(100, 20.0)
    read_rate: Annotated[Rate, BeforeValidator(_rate)] = Rate(500, 20.0)  # None or absent: READS_PER_WRITE x rate
    max_attempts: int = Field(8, ge=1, le=100)
    max_retry_after: float = Field(300.0, gt=0, description="cap on any single wait, seconds")
    max_throttle_wait: float = Field(3600.0, gt=0, description="total throttle wait one device may spend")
    request_timeout: float = Field(100.0, gt=0)
    limit: int | None = Field(None, ge=1)
    ca_bundle: Path | None = None
    out_dir: Path | None = None
    dry_run: bool = False
    plan: bool = Field(False, description="online, read-only rehearsal: read the tenant, write nothing")
    preflight: bool = Field(True, description="the seed call's canary: read the first 20 devices' profiles")
    read_before_write: bool = Field(True, description="the seed call: read each device's assignments before its "
                                    "write; one that already carries the target is skipped (already_assigned)")
    verify: bool = True
    batch: bool = False
    run_id: str | None = None
    resume: bool = False
    deadline: datetime | None = Field(None, description="stop starting devices in time to drain before this")
    max_runtime: float | None = Field(None, gt=0, description="seconds; like deadline, counted from the start")
    max_failure_rate: float = Field(0.5, gt=0, le=1, description="safety brake: share of failed devices")
    failure_min_sample: int = Field(50, ge=1, description="decided devices before the brake may trip")
    drain_seconds: float = Field(30.0, ge=0, description="how long a stop waits for devices in flight")
    id_type: Literal["id", "serial"] = Field("id", description="what plain strings passed to the API hold")
    group_tag: str | None = Field(None, description="--group-tag: set this tag on every device")
    group_tag_column: str | None = Field(None, description="--group-tag-column: each row's tag from this column")
    profile: str | None = Field(None, description="--profile: assign this deployment profile to --group, once")
    group: str | None = Field(None, description="--group: the dynamic group the group tag brings devices into")
    add_to_group: str | None = Field(None, description="--add-to-group: add the devices to this static group")
    # Entra's published limits per app and tenant ("Identity and access service limits",
    # https://learn.microsoft.com/graph/throttling-limits): 3,000 writes per 2 min 30 s, and 3,500 resource
    # units per 10 s in the smallest tenants (under 50 users; 5,000 and 8,000 in larger ones)
    directory_rate: Annotated[Rate, BeforeValidator(_rate)] = Rate(3000, 150.0)
    directory_read_rate: Annotated[Rate, BeforeValidator(_rate)] = Rate(3500, 10.0)
    inventory_file: Path | None = Field(None, description="a saved listing to resolve serials with (offline)")
    refresh_inventory: bool = Field(False, description="list the tenant again instead of the folder's copy")

    @model_validator(mode="before")
    @classmethod
    def _derive_read_rate(cls, data: Any) -> Any:
        """No ``read_rate`` (or None): ``READS_PER_WRITE`` times the write budget; a bad ``rate`` is left to
        its own validator to report."""
        if isinstance(data, dict) and data.get("read_rate") is None:
            try:
                rate = Rate.parse(data["rate"]) if data.get("rate") is not None else cls.model_fields["rate"].default
            except (ValueError, TypeError):
                return data
            data = {**data, "read_rate": Rate(rate.count * READS_PER_WRITE, rate.period)}
        return data

    @model_validator(mode="after")
    def _resume_needs_out(self) -> Settings:
        if self.resume and self.out_dir is None:
            raise ValueError("--resume needs --out DIR: the folder of the run to continue")
        chosen = [name for name, value in (("--target", self.target), ("--group-tag", self.group_tag),
                                           ("--group-tag-column", self.group_tag_column),
                                           ("--add-to-group", self.add_to_group)) if value is not None]
        if len(chosen) > 1:
            raise ValueError(f"one device operation per run: {' and '.join(chosen)} exclude each other")
        if self.add_to_group is not None and self.group is not None:
            raise ValueError("--group names the dynamic group of --group-tag; --add-to-group names its group itself")
        tagged = self.group_tag is not None or self.group_tag_column is not None
        if self.profile is not None and self.add_to_group is None and (self.group is None or not tagged):
            raise ValueError("--profile goes with --add-to-group GROUP_ID, or with --group-tag TAG --group GROUP_ID "
                             "(the dynamic group the tag brings devices into)")
        if self.group is not None and self.group_tag is None and self.group_tag_column is None:
            raise ValueError("--group names the dynamic group of --group-tag; give --group-tag too")
        if self.group_tag is not None and (problem := group_tag_problem(self.group_tag)) is not None:
            raise ValueError(f"--group-tag: {problem}")
        if self.plan and self.dry_run:
            raise ValueError("--plan and --dry-run exclude each other: --dry-run opens no connection, --plan reads "
                             "the tenant (and writes nothing)")
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline must be timezone-aware")
        return self

    @property
    def writes(self) -> bool:
        """False for a dry run (no connection) and a plan (reads only): nothing is written, no intent journaled."""
        return not (self.dry_run or self.plan)

    @field_validator("graph_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_graph_url(value)

    @field_validator("profile", "group", "add_to_group", mode="before")
    @classmethod
    def _object_id(cls, value: Any) -> Any:
        """Object ids go into URL paths: only GUIDs, normalised (braces, case) here."""
        if value is None:
            return None
        guid = normalize_guid(str(value))
        if guid is None:
            raise ValueError(f"{value!r} is not an object id (a GUID)")
        return guid

    @field_validator("inventory_file")
    @classmethod
    def _inventory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such inventory file (write one with bulk-assign inventory --out FILE)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such CA bundle file")
        return value

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """Like the constructor, but turns validation errors into one readable ``UsageError``."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise UsageError(problems) from None

    def public_dict(self) -> dict[str, Any]:
        """The effective settings for summary.json (there are no secrets in Settings by construction)."""
        data = self.model_dump(mode="json", exclude={"target"})
        data["rate"] = str(self.rate)
        data["target"] = self.target.describe() if self.target is not None else None
        return data
