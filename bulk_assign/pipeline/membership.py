"""``--add-to-group``: the group checked and its members read once, then devices added 20 to a request.

Before any write (``GroupMembers``): ``GET /groups/{G}`` (missing: exit 2; dynamic, or synced from
on-premises AD: refused, exit 2), then the group's device members, every page; the operation marks those
devices ``already_member`` from that, with no write.

Each worker then takes up to 20 devices (``MembershipWorker``). A round resolves the Entra object ids it
does not know yet (one ``$batch`` of ``GET /devices(deviceId='...')``, under the directory's read budget),
then adds the resolved devices with one ``PATCH /groups/{G}`` (``members@odata.bind``, one directory write).
When Entra refuses the PATCH because one of them is a member already (it does not say which), the
devices are added one by one (``POST .../members/$ref``) to find it: that one is ``already_member`` when
nothing of ours can have added it, ``landed`` when an earlier try of ours may have. A failure that may
have committed is simply resent: adding a member twice changes nothing, the refusal says it is there.

Undo (``RemoveFromGroup``) goes through the same worker: one ``DELETE .../members/{id}/$ref`` per device
(a 404 there means it is gone already: ``not_member``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from ..errors import ListingError, UsageError
from ..graph.directory import (
    bind_body,
    device_lookup_path,
    group_path,
    is_already_member,
    member_ref_path,
    members_path,
    object_id_of,
    parse_members,
    ref_body,
    static_group_problem,
)
from ..graph.listing import rebase_next_link
from ..graph.operations import (
    NO_ENTRA_DEVICE,
    AddToGroup,
    RemoveFromGroup,
    classify_item,
    item_responses,
    new_request_id,
    send,
)
from ..graph.outcome import Attempt, Kind
from ..models import SkipReason
from .listing import MAX_PAGES, ListingStats
from .pacing import Pacer
from .profile_group import Get
from .state import DeviceState
from .worker import RunContext

log = logging.getLogger("bulk_assign")

_GET_ITEM = b'{"id":"%d","method":"GET","url":"%s"}'


class GroupMembers:
    """The preflight reads of ``--add-to-group`` (``get`` is a paced, retried GET at the directory's read
    budget); ``info`` goes into summary.json as ``membership``."""

    def __init__(self, graph_url: str, group: str, *, get: Get) -> None:
        self._url, self.group, self._get = graph_url, group, get
        self.info: dict[str, object] | None = None

    async def check(self) -> None:
        """The group exists and takes members through Graph (static and cloud-only)."""
        attempt = await self._get(self._url + group_path(self.group))
        if attempt.http_status == 404:
            raise UsageError(f"--add-to-group {self.group}: no such group")
        if attempt.kind is not Kind.SUCCESS:
            raise ListingError(f"--add-to-group {self.group}: the group could not be read: {attempt.error_code}: "
                               f"{attempt.error_message}; nothing was written")
        if (problem := static_group_problem(self.group, attempt.body)) is not None:
            raise UsageError(problem)

    async def read(self) -> dict[str, str]:
        """Every device member: Entra ``deviceId`` -> object id (``ListingError`` when a page cannot be read:
        a partial list would add members that are there, which Entra refuses, but the run would then call
        them ``landed`` rather than ``already_member``, and undo would remove them)."""
        stats = ListingStats()
        started = time.monotonic()
        url: str | None = self._url + members_path(self.group)
        members: dict[str, str] = {}
        while url is not None:
            if stats.pages >= MAX_PAGES:
                raise ListingError(f"the group's member listing kept sending nextLinks past {MAX_PAGES:,} pages")
            attempt = await self._get(url)
            if attempt.kind is not Kind.SUCCESS:
                raise ListingError(f"--add-to-group {self.group}: its members could not be read: {attempt.error_code}: "
                                   f"{attempt.error_message}; nothing was written")
            page, link = parse_members(attempt.body)
            members.update(page)
            stats.pages += 1
            url = rebase_next_link(link, self._url) if link is not None else None
        self.info = {"group": self.group, "members_before": len(members), "member_pages": stats.pages,
                     "seconds": round(time.monotonic() - started, 3)}
        log.info("group %s has %d device member(s) (%d page(s))", self.group, len(members), stats.pages)
        return members


class MembershipWorker:
    """Decides up to 20 devices of ``--add-to-group`` (or its undo) per round, each with its own record.

    ``objects`` (Entra ``deviceId`` -> object id) is shared by the run's workers: the member listing's ids
    and every id resolved so far, so a retry never resolves twice.
    """

    def __init__(self, ctx: RunContext, *, reads: Pacer, objects: dict[str, str]) -> None:
        self.ctx = ctx
        self._reads = reads
        self._objects = objects
        op = ctx.operation
        assert isinstance(op, AddToGroup)
        self._op = op
        self._remove = isinstance(op, RemoveFromGroup)
        self._url = ctx.settings.graph_url
        self._doubt: set[int] = set()  # states an earlier try (or an earlier run) of ours may have added

    async def process(self, states: list[DeviceState]) -> None:
        ctx = self.ctx
        ctx.start(states)
        doubt = ctx.in_doubt
        self._doubt = {id(s) for s in states if doubt is not None and s.device_id in doubt}
        await ctx.retry.run(states, self._round_remove if self._remove else self._round)

    # ------------------------------------------------------------------------------------------ adding
    async def _round(self, pending: list[DeviceState]) -> None:
        unresolved = [s for s in pending if _entra(s) not in self._objects]
        if unresolved:
            await self._resolve(unresolved)
        ready = [s for s in pending if _entra(s) in self._objects]
        if ready:
            await self._add(ready)

    async def _resolve(self, states: list[DeviceState]) -> None:
        """One ``$batch`` of device lookups; a device whose lookup did not succeed keeps that answer."""
        ctx = self.ctx
        await self._gate(states)
        await self._reads.acquire(len(states))  # each item counts against the directory's read budget
        items = b",".join(_GET_ITEM % (n, device_lookup_path(_entra(s)).encode()) for n, s in enumerate(states))
        token = await ctx.tokens.get_token()
        ctx.stats.verifications += 1  # a read, not a write: counted with the run's other reads
        sent_at = time.monotonic()
        whole = await send(ctx.transport, "POST", self._url + "/$batch", token=token,
                           client_request_id=new_request_id(), body=b'{"requests":[' + items + b"]}",
                           timeout=ctx.settings.request_timeout)
        by_id = item_responses(whole.body) if whole.kind is Kind.SUCCESS else None
        if whole.kind is Kind.SUCCESS and by_id is None:
            whole = Attempt(Kind.TRANSIENT, whole.http_status, error_code="MalformedBatchResponse",
                            error_message="the batch answer could not be read", request_id=whole.request_id)
        latency = time.monotonic() - sent_at
        for n, state in enumerate(states):
            attempt = classify_item(by_id.get(str(n))) if by_id is not None else replace(whole)
            found = object_id_of(attempt.body) if attempt.kind is Kind.SUCCESS else None
            if found is not None:
                self._objects[_entra(state)] = found
                continue
            if attempt.kind is Kind.SUCCESS:  # 200 without an id: a body we cannot use; try again
                attempt = Attempt(Kind.TRANSIENT, attempt.http_status, error_code="MalformedBatchItem",
                                  error_message="the device lookup had no object id", request_id=attempt.request_id)
            elif attempt.http_status == 404:
                attempt = Attempt(Kind.PERMANENT, 404, error_code=NO_ENTRA_DEVICE, request_id=attempt.request_id,
                                  error_message=f"Entra has no device object with deviceId {_entra(state)} (deleted "
                                                "from Entra?): it cannot join a group")
            attempt.maybe_committed = False  # a read
            ctx.account(state, attempt, token, latency)

    async def _add(self, states: list[DeviceState]) -> None:
        """One PATCH for all of ``states``; split into single adds when Entra says one is a member already."""
        ctx = self.ctx
        objects = [self._objects[_entra(s)] for s in states]
        attempt, token, latency = await self._write(states, "PATCH", group_path(self._op.group),
                                                    bind_body(self._url, objects))
        if attempt.kind is Kind.PERMANENT and is_already_member(attempt):
            ctx.gate.release()
            for state in states:
                await self._add_one(state)
            return
        self._settle(states, attempt, token, latency)

    async def _add_one(self, state: DeviceState) -> None:
        object_id = self._objects[_entra(state)]
        attempt, token, latency = await self._write([state], "POST", member_ref_path(self._op.group),
                                                    ref_body(self._url, object_id))
        if attempt.kind is Kind.PERMANENT and is_already_member(attempt):
            ours = id(state) in self._doubt  # an earlier try of ours may have added it
            attempt = Attempt(Kind.SUCCESS, request_id=attempt.request_id,
                              skip=SkipReason.LANDED if ours else SkipReason.ALREADY_MEMBER)
        self._settle([state], attempt, token, latency)

    # ---------------------------------------------------------------------------------------- removing
    async def _round_remove(self, pending: list[DeviceState]) -> None:
        for state in pending:
            object_id = self._objects.get(_entra(state))
            if object_id is None:  # not in the listing the precheck read: nothing to remove
                state.answered(Attempt(Kind.SUCCESS, skip=SkipReason.NOT_MEMBER))
                continue
            attempt, token, latency = await self._write([state], "DELETE",
                                                        member_ref_path(self._op.group, object_id), None)
            if attempt.http_status == 404 and attempt.error_code == "Request_ResourceNotFound":
                attempt = Attempt(Kind.SUCCESS, request_id=attempt.request_id, skip=SkipReason.NOT_MEMBER)
            self._settle([state], attempt, token, latency)

    # ----------------------------------------------------------------------------------------- shared
    async def _gate(self, states: list[DeviceState]) -> None:
        gate = self.ctx.gate
        if not gate.is_open():
            waited = await gate.wait()
            for state in states:
                state.throttle_waited += waited

    async def _write(self, states: list[DeviceState], method: str, path: str,
                     body: bytes | None) -> tuple[Attempt, str, float]:
        """One directory write for ``states`` at the directory's write budget (``ctx.pacer``)."""
        ctx = self.ctx
        await ctx.wait_turn(states, 1)
        token = await ctx.tokens.get_token()
        client_request_id = new_request_id()
        ctx.begin_send(states, client_request_id)
        sent_at = time.monotonic()
        attempt = await send(ctx.transport, method, self._url + path, token=token,
                             client_request_id=client_request_id, body=body, timeout=ctx.settings.request_timeout)
        return attempt, token, time.monotonic() - sent_at

    def _settle(self, states: list[DeviceState], attempt: Attempt, token: str, latency: float) -> None:
        """The run's bookkeeping for one answer shared by ``states`` (each gets its own copy)."""
        ctx = self.ctx
        if attempt.kind is Kind.THROTTLED:  # one throttle event for the request, as a whole batch's 429
            now = ctx.clock()
            for state in states:
                state.answered(attempt)
                state.throttled_for(now)
            ctx.throttled(attempt.retry_after, len(states))
            return
        for state in states:
            own = replace(attempt)
            ctx.account(state, own, token, latency)
            if own.kind is Kind.SUCCESS and not self._remove:
                own.assignment_id = self._objects.get(_entra(state))  # the member's object id, for the record
            if own.maybe_committed:
                self._doubt.add(id(state))


def _entra(state: DeviceState) -> str:
    """The device's Entra ``deviceId`` (the operation's precheck put it in the row)."""
    assert state.row is not None and state.row.value is not None
    return state.row.value
