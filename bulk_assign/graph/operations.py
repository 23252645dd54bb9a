"""The Graph call for one device: URL, headers, sending, error parsing and response classification.

This is the one boundary where the transport's exceptions become values (``Attempt``): a device failing is a
result, never an exception. The *operation* (what to send for one device, how to read the answer) is a
small protocol so other per-device Autopilot actions can reuse the engine; ``AssignProfile`` is the first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import orjson
from multidict import CIMultiDict

from ..errors import CertificateError
from ..guid import AssignmentId, checked_guid, normalize_guid, parse_assignment_id
from ..models import AssignmentTarget, InputRow, SkipReason, assignment_body, group_tag_problem
from ..tenant import TenantDevice
from .directory import group_path
from .outcome import Attempt, Kind
from .retry_after import parse_retry_after
from .transport import CertificateFailed, ConnectionLost, NotSent, Transport, describe

DEVICE_PATH = "/deviceManagement/windowsAutopilotDeviceIdentities/"
PROFILES_PATH = "/deviceManagement/windowsAutopilotDeploymentProfiles/"
INTUNE_WRITE = "DeviceManagementServiceConfig.ReadWrite.All"
INTUNE_READ = ("DeviceManagementServiceConfig.Read.All", INTUNE_WRITE)  # --plan, status: reads only


@dataclass(frozen=True, slots=True)
class Precheck:
    """What an operation decides for a row before any write, from the tenant's listing: write (all None),
    skip (the device already carries the change), or invalid (the row cannot be written)."""

    skip: SkipReason | None = None
    error_code: str | None = None
    error_message: str | None = None


WRITE = Precheck()
UNKNOWN_DEVICE = "unknown_device"  # the error code of a device the tenant's listing does not have


class Operation(Protocol):
    """One per-device write: how to build it, how to read its answer, and what it promises.

    ``idempotent``: sending it twice leaves the same state as once, so a possibly-committed failure may be
    resent without a read-back (a group tag is; the seed call, which creates an assignment, is not).
    ``pin`` is what a report folder is pinned to: a ``--resume`` with another operation or target is
    refused, since the folder's history says which devices *this* change reached. ``method`` and ``path``
    build the request (a DELETE has no body: ``body`` returns None); ``gone`` is for writes that remove
    something (undo): a 404 means it is gone already, and the device is skipped with that reason, not failed.
    """

    name: str
    method: str  # the HTTP method of the write: one per operation, so a $batch's items all share it
    gone: SkipReason | None  # a 404 on the write is this skip (what it removes is not there), not a failure
    idempotent: bool
    needs_inventory: bool  # read the tenant's listing first, and ``precheck`` every row against it
    grouped: bool  # one request carries up to 20 devices (``--add-to-group``), whatever ``--batch`` says
    budget: str  # whose write budget paces it: "intune" (--rate) or "directory" (Entra's, --directory-rate)
    permissions: tuple[tuple[str, ...], ...]  # what the token must grant: each entry, one of its alternatives

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        """Before any write: skip a device that already carries the change; record its previous state."""
        ...

    def path(self, device_id: str, row: InputRow | None = None) -> str:
        """The URL path relative to the versioned Graph root (``device_id`` is a checked GUID); ``row`` carries
        what a path may need beyond the device (undo: the recorded assignment id, checked again here)."""
        ...

    def body(self, device_id: str, row: InputRow | None = None) -> bytes | None:
        """The JSON request body (None: no body); ``row`` carries per-row values (a group tag column)."""
        ...

    def success_id(self, body: Any) -> str | None:
        """The created object's id from a 2xx body, if any."""
        ...

    def pin(self) -> dict[str, str]:
        """The operation and its target, as the folder records them (``store/pin.py``)."""
        ...

    def failure_hint(self, status: int) -> str | None:
        """What to tell the operator about a permanent failure of this write, if anything specific."""
        ...

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        """``--plan``: what the write would change for this device, in a few words."""
        ...


class AssignProfile:
    """POST a deployment profile assignment for one device; the body is built once and reused."""

    name = "assign-profile"
    method = "POST"
    gone: SkipReason | None = None
    idempotent = False  # each POST creates an assignment: read back before resending
    needs_inventory = False
    grouped = False
    budget = "intune"
    permissions: tuple[tuple[str, ...], ...] = ((INTUNE_WRITE,),)

    def __init__(self, target: AssignmentTarget) -> None:
        self.target = target
        self._body = orjson.dumps(assignment_body(target))

    def path(self, device_id: str, row: InputRow | None = None) -> str:
        return f"{DEVICE_PATH}{checked_guid(device_id)}/deploymentProfile/assignments"

    def body(self, device_id: str, row: InputRow | None = None) -> bytes:
        return self._body

    def success_id(self, body: Any) -> str | None:
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            return str(body["id"])
        return None

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "target": self.target.describe()}

    def failure_hint(self, status: int) -> str | None:
        if status == 404:
            return ("the tenant may not know the device, or, as public sources read this call, the device has no "
                    "deployment profile yet: --group-tag or --add-to-group brings devices to one")
        return None

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        return WRITE

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        return f"would assign {self.target.describe()}; Intune says {device.assignment_status or 'unknown'} now"


class SetGroupTag:
    """``POST .../{id}/updateDeviceProperties {"groupTag": ...}`` (answered 204) under Intune's write budget.

    A dynamic group matching ``[OrderID]:TAG`` then brings the device in, and the profile assigned to that
    group reaches it: the documented route. Idempotent: setting the same tag twice leaves the device as
    setting it once, so a possibly-committed failure is resent without a read-back. The listing gives every
    device's current tag up front, so a device that already carries it is skipped with no write (a rerun of
    a finished wave costs reads only), and the previous tag is kept in the record and journaled with the
    intent (what undo restores).
    """

    name = "group-tag"
    method = "POST"
    gone: SkipReason | None = None
    idempotent = True
    needs_inventory = True
    grouped = False
    budget = "intune"
    permissions: tuple[tuple[str, ...], ...] = ((INTUNE_WRITE,),)

    def __init__(self, tag: str | None = None, *, column: str | None = None) -> None:
        if (tag is None) == (column is None):
            raise ValueError("a group tag operation needs a tag or a column, not both")
        self.tag, self.column = tag, column
        self._body = orjson.dumps({"groupTag": tag}) if tag is not None else b""

    def path(self, device_id: str, row: InputRow | None = None) -> str:
        return f"{DEVICE_PATH}{checked_guid(device_id)}/updateDeviceProperties"

    def body(self, device_id: str, row: InputRow | None = None) -> bytes:
        if self.tag is not None:
            return self._body
        return orjson.dumps({"groupTag": row.value if row is not None else ""})

    def success_id(self, body: Any) -> str | None:
        return None

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "tag": self.tag} if self.tag is not None else \
            {"operation": self.name, "tag_column": self.column or ""}

    def failure_hint(self, status: int) -> str | None:
        return "the tenant does not know the device (its hardware hash may not be imported)" if status == 404 else None

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        if device is None:
            return Precheck(error_code=UNKNOWN_DEVICE, error_message="not in the tenant's Autopilot devices: "
                            "its hardware hash may not be imported yet")
        wanted = self.tag if self.tag is not None else (row.value or "")
        if self.tag is None and not wanted:
            return Precheck(error_code="MissingGroupTag", error_message=f"empty cell in column {self.column!r}")
        if (problem := group_tag_problem(wanted)) is not None:
            return Precheck(error_code="InvalidGroupTag", error_message=problem)
        row.value, row.previous = wanted, device.group_tag
        if device.group_tag == wanted:
            return Precheck(skip=SkipReason.ALREADY_TAGGED)
        return WRITE

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        return f"groupTag {device.group_tag!r} -> {row.value or ''!r}"


class RestoreGroupTag(SetGroupTag):
    """``bulk-assign undo`` of a group-tag folder: set each device's tag back to what it was before.

    Only where the device still carries the tag the folder set: a device something else changed since
    is ``skipped`` with ``changed_since`` (its current tag in ``previous_group_tag``), never overwritten.
    A device already back at its old tag (or whose write never landed) is skipped with no write.
    """

    name = "undo-group-tag"
    describe_undo = "this folder tagged them (or may have): their previous tags come back where they still carry " \
        "this folder's"

    def __init__(self, set_by_folder: dict[str, str], *, of: str) -> None:
        super().__init__(column="(the tag before the run)")
        self._set = set_by_folder
        self._of = of

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "of": self._of}

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        if device is None:
            return Precheck(error_code=UNKNOWN_DEVICE, error_message="no longer in the tenant's Autopilot devices")
        current, restore = device.group_tag, row.value or ""
        row.previous = current
        if current == restore:
            return Precheck(skip=SkipReason.ALREADY_TAGGED)
        if current != self._set.get(row.device_id or ""):
            return Precheck(skip=SkipReason.CHANGED_SINCE)
        return WRITE


DIRECTORY_WRITE = ("GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All")
DIRECTORY_READ = ("Device.Read.All", "Directory.Read.All", "Directory.ReadWrite.All")
NO_ENTRA_DEVICE = "no_entra_device"


class AddToGroup:
    """``--add-to-group G``: the devices' Entra objects become members of the static group G.

    Not a per-device request: up to 20 devices go in one ``PATCH /groups/{G}`` (``members@odata.bind``),
    under the directory's budget, not Intune's (``pipeline/membership.py`` sends them; ``grouped``). The
    listing gives each device's Entra ``deviceId``; the group's member listing, read once before any write
    (``members``), marks the devices already in it ``already_member``, with no write. Idempotent in effect:
    adding an existing member changes nothing (Entra refuses it with a 400 that names no device, which the
    worker splits into single adds), so a possibly-committed failure is resent without a read-back, and
    the refusal then says the member is there: ``landed``.
    """

    name = "add-to-group"
    method = "PATCH"  # pipeline/membership.py sends it (and its undo's DELETEs), not the device workers
    gone: SkipReason | None = None
    idempotent = True
    needs_inventory = True
    grouped = True
    budget = "directory"

    def __init__(self, group: str, *, profile: bool = False) -> None:
        self.group = checked_guid(group)
        self.members: dict[str, str] = {}  # Entra deviceId -> object id, of the group's members before the run
        # the listing (an Intune read), the group's members and the devices (directory reads), the adds
        intune = (INTUNE_WRITE,) if profile else INTUNE_READ  # --profile also assigns the profile to the group
        self.permissions: tuple[tuple[str, ...], ...] = (intune, DIRECTORY_WRITE, DIRECTORY_READ)

    def path(self, device_id: str, row: InputRow | None = None) -> str:
        return group_path(self.group)

    def body(self, device_id: str, row: InputRow | None = None) -> bytes:
        raise NotImplementedError("members are added in groups of 20 (pipeline/membership.py)")

    def success_id(self, body: Any) -> str | None:
        return None

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "group": self.group}

    def failure_hint(self, status: int) -> str | None:
        if status == 404:
            return "the group or the device's Entra object no longer exists"
        if status == 403:
            return "adding members needs GroupMember.ReadWrite.All, and the app must own or be allowed to manage it"
        return None

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        if device is None:
            return Precheck(error_code=UNKNOWN_DEVICE, error_message="not in the tenant's Autopilot devices: "
                            "its hardware hash may not be imported yet")
        entra = normalize_guid(device.entra_device_id)
        if entra is None:
            return Precheck(error_code=NO_ENTRA_DEVICE, error_message="the Autopilot device has no Entra device "
                            "object yet (azureActiveDirectoryDeviceId is empty): it cannot join a group; "
                            "--group-tag brings it in through a dynamic group instead")
        row.value = entra
        if entra in self.members:
            return Precheck(skip=SkipReason.ALREADY_MEMBER)
        return WRITE

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        return f"would add to group {self.group} (not a member now)"


class RemoveFromGroup(AddToGroup):
    """``bulk-assign undo`` of an ``--add-to-group`` folder: remove the members it added, one
    ``DELETE /groups/{G}/members/{objectId}/$ref`` each. Rows carry the Entra ``deviceId`` the folder
    journaled; the member listing gives the object id. A device that is not in the group (its add never
    landed, or someone removed it) is skipped (``not_member``). Members from before the run were never
    journaled (``already_member`` needs no write), so undo never touches them."""

    name = "undo-add-to-group"
    method = "DELETE"  # a 404 there is judged by membership.py (Entra's Request_ResourceNotFound: not_member)
    describe_undo = "this folder added them to the group (or may have): removing those that are members now"

    def __init__(self, group: str, *, of: str) -> None:
        super().__init__(group)
        self.permissions = (DIRECTORY_WRITE, DIRECTORY_READ)
        self._of = of

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "of": self._of}

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        entra = normalize_guid(row.value or "")
        if entra is None or entra not in self.members:
            return Precheck(skip=SkipReason.NOT_MEMBER)
        row.value = entra
        return WRITE

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        return f"would remove from group {self.group}"


class DeleteSeedAssignment:
    """``bulk-assign undo DIR --include-seed-assignments``: DELETE the seed call's assignments a folder created
    and recorded, one request per row, under Intune's write budget. The row carries the recorded id
    (``row.value``, checked against its grammar when the rows were made, ``store/seed_undo.py``, and again
    here before it goes into a path, percent-encoded):

    - a GUID is an assignment of the device: ``DELETE .../windowsAutopilotDeviceIdentities/{deviceId}/
      deploymentProfile/assignments/{assignmentId}``;
    - ``{profileId}_{groupId}`` (``_N``) is, under the profile reading of the seed call (graph-facts.md), a
      group assignment of the device's profile, which may serve many devices: ``DELETE
      .../windowsAutopilotDeploymentProfiles/{profileId}/assignments/{assignmentId}``, once per id.

    Idempotent: deleting twice leaves it deleted (the second answers 404), so a possibly-committed failure
    is resent without a read-back; a 404 is ``skipped``/``not_found`` (``gone``), not a failure.
    """

    name = "undo-assign-profile"
    method = "DELETE"
    gone: SkipReason | None = SkipReason.NOT_FOUND
    idempotent = True
    needs_inventory = False
    grouped = False
    budget = "intune"
    permissions: tuple[tuple[str, ...], ...] = ((INTUNE_WRITE,),)
    describe_undo = "this folder created and recorded their assignments: deleting them"

    def __init__(self, *, of: str) -> None:
        self._of = of

    def path(self, device_id: str, row: InputRow | None = None) -> str:
        recorded = parse_assignment_id(row.value or "") if row is not None else None
        if recorded is None:  # the rows were checked when they were made: a programming error
            raise ValueError("a seed assignment to delete needs its recorded id, checked against its grammar")
        return seed_assignment_path(device_id, recorded)

    def body(self, device_id: str, row: InputRow | None = None) -> bytes | None:
        return None

    def success_id(self, body: Any) -> str | None:
        return None

    def pin(self) -> dict[str, str]:
        return {"operation": self.name, "of": self._of}

    def failure_hint(self, status: int) -> str | None:
        if status in (400, 405):
            return ("the service may not offer DELETE on this path: the seed call's own route is not documented "
                    "beyond its POST (README, Rolling out a profile); remove the assignment in Intune instead")
        return None

    def precheck(self, row: InputRow, device: TenantDevice | None) -> Precheck:
        return WRITE

    def plan_note(self, row: InputRow, device: TenantDevice) -> str:
        return f"would delete assignment {row.value or ''}"


def seed_assignment_path(device_id: str, recorded: AssignmentId) -> str:
    """Where a recorded seed-call assignment is deleted (``DeleteSeedAssignment``); the id percent-encoded."""
    encoded = quote(recorded.id, safe="")
    if recorded.profile is None:
        return f"{DEVICE_PATH}{checked_guid(device_id)}/deploymentProfile/assignments/{encoded}"
    return f"{PROFILES_PATH}{checked_guid(recorded.profile)}/assignments/{encoded}"


def assignments_path(device_id: str) -> str:
    return f"{DEVICE_PATH}{checked_guid(device_id)}/deploymentProfile/assignments"


def profile_path(device_id: str) -> str:
    """The profile the device currently has (404 when it has none)."""
    return f"{DEVICE_PATH}{checked_guid(device_id)}/deploymentProfile"


def new_request_id() -> str:
    """A random (version 4) UUID for ``client-request-id``, as ``str(uuid.uuid4())`` makes it but at half the
    cost: one per request, and ``uuid.UUID``'s constructor was a visible share of the engine's CPU."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}  # RFC 4122 variant bits of the 17th digit


def headers(token: str, client_request_id: str, *, json_body: bool) -> dict[str, str]:
    out = {
        "Authorization": f"Bearer {token}",
        "client-request-id": client_request_id,
        "Accept": "application/json",
    }
    if json_body:
        out["Content-Type"] = "application/json"
    return out


TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


def classify(status: int, response_headers: Mapping[str, str], raw: bytes) -> Attempt:
    """Turn a status, headers and body into an ``Attempt`` (pure: no I/O, easy to test)."""
    return classify_parsed(status, response_headers, _json_or_none(raw), raw)


def classify_parsed(status: int, response_headers: Mapping[str, str], body: Any, raw: bytes | None = None) -> Attempt:
    """``classify`` for an already parsed body: a ``$batch`` item carries its body as JSON, not bytes.

    ``response_headers`` must look up names case-insensitively (aiohttp's headers, or a ``CIMultiDict``).
    """
    request_id = response_headers.get("request-id")
    if 200 <= status < 300:
        return Attempt(Kind.SUCCESS, status, request_id=request_id, body=body)
    if 300 <= status < 400:
        return Attempt(Kind.PERMANENT, status, error_code="Redirect",
                       error_message=redirect_message(status, response_headers.get("Location")),
                       request_id=request_id)
    code, message = error_of(body, status, raw)
    retry_after = parse_retry_after(response_headers.get("Retry-After"))
    if status == 429:
        kind = Kind.THROTTLED
    elif status in TRANSIENT_STATUSES:
        kind = Kind.TRANSIENT
    elif status == 401:
        kind = Kind.AUTH
    else:
        kind = Kind.PERMANENT
    return Attempt(
        kind,
        status,
        error_code=code,
        error_message=message,
        retry_after=retry_after,
        request_id=request_id,
        maybe_committed=kind is Kind.TRANSIENT,
    )


def redirect_message(status: int, location: str | None) -> str:
    """Why a 3xx is a permanent failure, naming where it pointed (the host only: a path or query may carry
    anything). Graph does not redirect its API calls; a redirect comes from something in between (a proxy's
    sign-in page, a wrong ``--graph-url``), and following it would hand the bearer token to that host."""
    if not location:
        where = "without a Location"
    else:
        try:
            parts = urlsplit(location.strip())
            host = parts.hostname
            where = f"to {host}:{parts.port}" if host and parts.port else f"to {host}" if host else \
                "to another path on the same host"
        except ValueError:
            where = "to an unreadable Location"
    return (f"HTTP {status}: a redirect {where}; redirects are never followed (the request and its token go "
            "only to the Graph URL): check --graph-url and any proxy in between")


_DUPLICATE: dict[str, Any] = {}  # stands for an item id answered more than once (identity, never equality)


def item_responses(body: Any) -> dict[str, dict[str, Any]] | None:
    """``responses`` of a batch answer by item id, or None when the answer is not a batch answer.

    An id answered twice cannot be trusted either way, so it maps to a marker that ``classify_item``
    treats as in doubt.
    """
    responses = body.get("responses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        return None
    out: dict[str, dict[str, Any]] = {}
    for response in responses:
        if isinstance(response, dict):
            key = str(response.get("id"))
            out[key] = _DUPLICATE if key in out else response
    return out


def classify_item(item: dict[str, Any] | None) -> Attempt:
    """One item of a batch answer as an ``Attempt``.

    A missing item, an item answered twice and an item without a readable status may all have landed
    (the batch as a whole was carried out as far as we know): they are in doubt, read back before any
    resend, never a permanent failure.
    """
    if item is None:
        return _in_doubt("MissingBatchItem", "the batch answer had no response for this item")
    if item is _DUPLICATE:
        return _in_doubt("DuplicateBatchItem", "the batch answer had more than one response for this item")
    headers = item.get("headers")
    status = item.get("status")
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return _in_doubt("MalformedBatchItem", "the batch answer's response for this item had no valid status")
    return classify_parsed(status, CIMultiDict(headers if isinstance(headers, dict) else {}), item.get("body"))


def _in_doubt(code: str, message: str) -> Attempt:
    return Attempt(Kind.TRANSIENT, error_code=code, error_message=message, maybe_committed=True)


def parse_error(raw: bytes, status: int) -> tuple[str, str]:
    """Graph's ``error.code`` and a readable message from a raw error body."""
    return error_of(_json_or_none(raw), status, raw)


def error_of(body: Any, status: int, raw: bytes | None = None) -> tuple[str, str]:
    """Graph's ``error.code`` and a readable message; Intune's JSON-inside-``message`` is unpacked.

    Code is what callers should act on; the message is for people. When the body is not Graph's shape
    the raw text (shortened) is kept rather than lost.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        text = raw[:300].decode("utf-8", "replace").strip() if raw is not None else str(body or "")[:300]
        return f"HTTP{status}", text or f"HTTP {status} with no error body"
    code = str(error.get("code") or f"HTTP{status}")
    message = str(error.get("message") or "")
    inner = _json_or_none(message.encode()) if message.startswith("{") else None
    if isinstance(inner, dict):
        parts = [str(inner.get("Message") or "").strip(), str(inner.get("CustomApiErrorPhrase") or "").strip()]
        message = " | ".join(p for p in parts if p) or message
    return code, message


def _json_or_none(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def send(
    transport: Transport,
    method: str,
    url: str,
    *,
    token: str,
    client_request_id: str,
    body: bytes | None = None,
    timeout: float | None = None,
) -> Attempt:
    """One HTTP attempt; every transport/OS failure becomes a transient ``Attempt``, never an exception,
    except a certificate that does not verify: that stops the run (``CertificateError``)."""
    try:
        response = await transport.request(
            method, url, headers(token, client_request_id, json_body=body is not None), body, timeout
        )
    except TimeoutError:
        return Attempt(Kind.TRANSIENT, error_code="Timeout", error_message="no answer in time",
                       maybe_committed=True)
    except CertificateFailed as exc:
        raise CertificateError(
            f"{exc}: if a proxy inspects TLS, trust its CA with --ca-bundle PATH; nothing was sent to {exc.host}"
        ) from None
    except NotSent as exc:
        # The connection was never made: the request cannot have landed.
        return Attempt(Kind.TRANSIENT, error_code="ConnectionError", error_message=str(exc))
    except (ConnectionLost, OSError) as exc:
        return Attempt(Kind.TRANSIENT, error_code="ConnectionError", error_message=describe(exc),
                       maybe_committed=True)
    return classify(response.status, response.headers, response.body)
