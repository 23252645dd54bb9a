"""The tenant's Autopilot listing, ``GET /deviceManagement/windowsAutopilotDeviceIdentities``, with Intune's quirks.

What public sources report about the real listing, reproduced so the client is tested against it:
pages of at most 1,000 devices with an absolute ``@odata.nextLink`` carrying a ``$skiptoken`` (on
Graph's own host, so a client behind a custom URL must rebase it); ``$top``; ``$filter`` only as
``contains(serialNumber,'...')``, a substring match, which answers 400 for ``eq`` and for a value with
``-`` in it; and ``$select``, which answers 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .responses import Outcome, graph_error

PAGE_MAX = 1000
NEXT_LINK_ROOT = "https://graph.microsoft.com/beta"  # where Graph's nextLinks point, whatever URL was called
LISTING_PATH = "/deviceManagement/windowsAutopilotDeviceIdentities"
_CONTAINS = re.compile(r"\s*contains\(\s*serialNumber\s*,\s*'((?:[^']|'')*)'\s*\)\s*", re.IGNORECASE)


def listing_page(devices: Sequence[dict[str, Any]], query: Mapping[str, str], rid: str, crid: str) -> Outcome:
    """One page of ``devices`` (already in the tenant's order) for the listing's query parameters."""
    if "$select" in query:
        return graph_error(500, "InternalServerError", "An internal server error occurred.", rid, crid)
    selected = devices
    raw_filter = query.get("$filter")
    if raw_filter is not None:
        match = _CONTAINS.fullmatch(raw_filter)
        if match is None:
            return graph_error(400, "BadRequest", f"Invalid filter clause: {raw_filter[:80]}", rid, crid)
        needle = match.group(1).replace("''", "'")
        if "-" in needle:
            return graph_error(400, "BadRequest", "Invalid filter clause: unexpected '-'", rid, crid)
        needle = needle.lower()
        selected = [d for d in devices if needle in str(d.get("serialNumber", "")).lower()]
    try:
        top = min(PAGE_MAX, max(1, int(query.get("$top", PAGE_MAX))))
        start = max(0, int(query.get("$skiptoken", "0") or 0))
    except ValueError:
        return graph_error(400, "BadRequest", "Invalid $top or $skiptoken", rid, crid)
    page = list(selected[start:start + top])
    body: dict[str, Any] = {
        "@odata.context": f"{NEXT_LINK_ROOT}/$metadata#deviceManagement/windowsAutopilotDeviceIdentities",
        "value": page,
    }
    if start + top < len(selected):
        params = [f"$top={top}", f"$skiptoken={start + top}"]
        if raw_filter is not None:
            params.append("$filter=" + raw_filter.replace(" ", "%20").replace("'", "%27"))
        body["@odata.nextLink"] = f"{NEXT_LINK_ROOT}{LISTING_PATH}?" + "&".join(params)
    return Outcome(200, body)
