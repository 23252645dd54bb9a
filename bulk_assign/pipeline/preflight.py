"""The seed call's canary: which deployment profile(s) the first devices' assignments will land on.

Why: public sources read ``POST .../{id}/deploymentProfile/assignments`` as adding the target to the
profile the device *already has* (docs/graph-facts.md), and as a 404 for a device with none. So before
the first writes the run reads ``GET .../{id}/deploymentProfile`` for the first 20 devices and says, in
the log and in summary.json, which profile or profiles that is. The reads are paced by the read budget;
the canary devices wait for them (one round of 20 reads), the rest of the run does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..graph.operations import profile_path
from ..graph.outcome import Attempt, Kind

log = logging.getLogger("bulk_assign")

CANARY = 20

Get = Callable[[str], Awaitable[Attempt]]


class ProfileCanary:
    """Reads the current profile of up to ``CANARY`` devices once; ``info`` is the summary's ``preflight``."""

    def __init__(self, get: Get, graph_url: str) -> None:
        self._get = get
        self._graph_url = graph_url
        self.info: dict[str, Any] | None = None

    async def read(self, device_ids: list[str]) -> None:
        answers = await asyncio.gather(*(self._get(self._graph_url + profile_path(d)) for d in device_ids))
        profiles: dict[str, dict[str, Any]] = {}
        none = unreadable = 0
        for attempt in answers:
            body = attempt.body if attempt.kind is Kind.SUCCESS else None
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                entry = profiles.setdefault(body["id"], {"name": str(body.get("displayName") or ""), "devices": 0})
                entry["devices"] += 1
            elif attempt.http_status == 404:
                none += 1
            else:
                unreadable += 1
        self.info = {"canary_devices": len(device_ids), "profiles": profiles, "no_profile": none,
                     "unreadable": unreadable}
        shown = "; ".join(_shown(pid, entry) for pid, entry in profiles.items()) or "none has a profile"
        log.info("preflight: of the first %d devices, %s%s%s", len(device_ids), shown,
                 f"; {none} have no profile (the seed call may answer 404 for them)" if none else "",
                 f"; {unreadable} could not be read" if unreadable else "")
        if len(profiles) > 1:
            log.warning("preflight: the first devices have %d different profiles; as public sources read the seed "
                        "call, the target is added to each device's own profile", len(profiles))


def _shown(profile_id: str, entry: dict[str, Any]) -> str:
    name = f" ({entry['name']})" if entry["name"] else ""
    return f"{entry['devices']} on profile {profile_id}{name}"
