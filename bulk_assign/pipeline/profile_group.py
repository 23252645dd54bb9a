"""``--profile P --group G`` (with ``--group-tag``): make sure profile P is assigned to group G, exactly once.

The documented route's other half: the group tag brings devices into a dynamic group, and the profile
assigned to that group reaches them. One extra write before the devices' writes, not an operation of its
own. Read before write, always: read the profile's assignments and POST
``/deviceManagement/windowsAutopilotDeploymentProfiles/{P}/assignments`` only when G is not among them. A
failure that may have landed is read again before any resend, so a crash or a timeout between the write
and its record cannot add it twice. What was created is kept in the folder (``profile-assignment.json``)
for undo, which removes only an assignment this folder created.

Also read: the group (missing: exit 2; not dynamic, or synced from on-premises AD: refused) and its rule,
with a warning when it does not match ``[OrderID]:TAG``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from ..errors import ListingError, UsageError
from ..graph.directory import group_path
from ..graph.operations import new_request_id, send
from ..graph.outcome import Attempt, Kind
from ..safefs import write_atomic
from ..store.undo import PROFILE_RECORD as RECORD_NAME

log = logging.getLogger("bulk_assign")

PROFILES_PATH = "/deviceManagement/windowsAutopilotDeploymentProfiles"
GROUP_TARGET = "#microsoft.graph.groupAssignmentTarget"

Get = Callable[[str], Awaitable[Attempt]]
Post = Callable[[str, bytes], Awaitable[Attempt]]


def tag_in_rule(rule: str, tag: str) -> bool:
    """Whether a dynamic rule matches devices carrying ``tag`` (``[OrderID]:TAG``, case-insensitive)."""
    return f"[orderid]:{tag}".lower() in rule.lower()


class ProfileToGroup:
    """The preflight reads and the one write; ``info`` goes into summary.json as ``profile_assignment``."""

    def __init__(self, graph_url: str, profile: str, group: str, tag: str | None, *, get: Get, post: Post,
                 attempts: int, out_dir: Path | None) -> None:
        self._url = graph_url
        self.profile, self.group, self._tag = profile, group, tag
        self._get, self._post = get, post
        self._attempts = attempts
        self._out_dir = out_dir
        self.info: dict[str, Any] | None = None

    async def check_group(self) -> None:
        """The group exists, is dynamic and cloud-only, and (with a tag) its rule matches the tag."""
        body = await self._read(group_path(self.group), f"--group {self.group}: no such group")
        types = body.get("groupTypes") or []
        if body.get("onPremisesSyncEnabled"):
            raise UsageError(f"--group {self.group} is synced from on-premises AD: its membership is managed there")
        if "DynamicMembership" not in types:
            raise UsageError(f"--group {self.group} is not a dynamic group: a group tag does not bring devices into "
                             "it (use a dynamic group with the rule [OrderID]:TAG)")
        rule = str(body.get("membershipRule") or "")
        if self._tag is not None and not tag_in_rule(rule, self._tag):
            log.warning("--group %s: its rule %r does not match [OrderID]:%s; tagged devices may never join it",
                        self.group, rule[:200], self._tag)

    async def ensure(self) -> dict[str, Any]:
        """Assign the profile to the group unless it already is; returns (and keeps) what happened."""
        await self._read(f"{PROFILES_PATH}/{self.profile}", f"--profile {self.profile}: no such deployment profile")
        for _ in range(self._attempts):
            existing = await self._existing()
            if existing is not None:
                self.info = {"profile": self.profile, "group": self.group, "created": False, "id": existing}
                log.info("profile %s is assigned to group %s already", self.profile, self.group)
                return self.info
            body = orjson.dumps({"@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
                                 "target": {"@odata.type": GROUP_TARGET, "groupId": self.group}})
            attempt = await self._post(f"{self._url}{PROFILES_PATH}/{self.profile}/assignments", body)
            if attempt.kind is Kind.SUCCESS:
                created = attempt.body.get("id") if isinstance(attempt.body, dict) else None
                self.info = {"profile": self.profile, "group": self.group, "created": True, "id": created}
                if self._out_dir is not None:
                    write_atomic(self._out_dir / RECORD_NAME, orjson.dumps(self.info, option=orjson.OPT_INDENT_2))
                log.info("assigned profile %s to group %s", self.profile, self.group)
                return self.info
            if attempt.kind is Kind.PERMANENT:
                raise ListingError(f"could not assign profile {self.profile} to group {self.group}: "
                                   f"{attempt.error_code}: {attempt.error_message}; no device was written")
            # transient, throttled: it may have landed; the next round reads before it writes again
        raise ListingError(f"could not assign profile {self.profile} to group {self.group} after {self._attempts} "
                           "tries; no device was written")

    async def _existing(self) -> str | None:
        body = await self._read(f"{PROFILES_PATH}/{self.profile}/assignments",
                                f"--profile {self.profile}: its assignments could not be read")
        for item in body.get("value") or []:
            target = item.get("target") if isinstance(item, dict) else None
            if isinstance(target, dict) and str(target.get("@odata.type", "")).lstrip("#") == GROUP_TARGET[1:] \
                    and str(target.get("groupId", "")).lower() == self.group:
                return str(item.get("id") or "")
        return None

    async def _read(self, path: str, missing: str) -> dict[str, Any]:
        attempt = await self._get(self._url + path)
        if attempt.http_status == 404:
            raise UsageError(missing)
        if attempt.kind is not Kind.SUCCESS or not isinstance(attempt.body, dict):
            raise ListingError(f"{path}: {attempt.error_code}: {attempt.error_message}; no device was written")
        return attempt.body


async def remove_assignment(graph_url: str, profile: str, assignment_id: str, *, send_delete: Post,
                            attempts: int) -> str:
    """Undo: DELETE the profile-to-group assignment a folder created; what happened, in a few words.
    ``assignment_id`` has been checked against its grammar (``store/undo.py``) and is percent-encoded here."""
    url = f"{graph_url}{PROFILES_PATH}/{profile}/assignments/{quote(assignment_id, safe='')}"
    for _ in range(attempts):
        attempt = await send_delete(url, b"")
        if attempt.kind is Kind.SUCCESS:
            return "removed"
        if attempt.http_status == 404:
            return "already gone"
        if attempt.kind is Kind.PERMANENT:
            raise ListingError(f"could not remove profile assignment {assignment_id}: {attempt.error_code}: "
                               f"{attempt.error_message}")
    raise ListingError(f"could not remove profile assignment {assignment_id} after {attempts} tries")


def poster(transport: Any, tokens: Any, timeout: float, acquire: Callable[[], Awaitable[Any]],
           method: str = "POST") -> Post:
    """One paced write (the write budget's), no retries of its own: ``ensure`` reads before it resends."""
    async def post(url: str, body: bytes) -> Attempt:
        await acquire()
        token = await tokens.get_token()
        return await send(transport, method, url, token=token, client_request_id=new_request_id(),
                          body=body or None, timeout=timeout)
    return post
