"""The tenant's Autopilot listing on the wire: its URL, its pages, and where a ``nextLink`` may send us.

Pure (no I/O): ``pipeline/listing.py`` reads the pages. What the real listing does is in
docs/graph-facts.md: pages of at most 1,000, an absolute ``@odata.nextLink`` with a ``$skiptoken`` on
Graph's own host whatever URL was called, ``$select`` answered with 500 (so it is never sent), and a
``$filter`` that only does substring matches (so it is never used to find serials).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from ..errors import ListingError
from ..tenant import TenantDevice

LISTING_PATH = "/deviceManagement/windowsAutopilotDeviceIdentities"


def listing_url(graph_url: str) -> str:
    """The first page: no ``$select`` (500), no ``$top`` (the server's page size, 1,000, is the largest)."""
    return graph_url + LISTING_PATH


def rebase_next_link(next_link: str, graph_url: str) -> str:
    """Where to read the next page, so the request and its token go only to ``--graph-url``'s origin.

    Graph's nextLink names Graph's own host. Behind a custom URL (a reverse proxy, the emulator) that host
    is not the one the user chose, so a link whose path lies under the same versioned root (``/beta/...``
    for ``.../beta``) is moved onto ``graph_url``; any other link is refused rather than followed.
    """
    link = urljoin(graph_url + "/", next_link.strip())
    parts, base = urlsplit(link), urlsplit(graph_url)
    base_path = base.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    if (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower()) and \
            parts.path.startswith(base_path + "/"):
        return link
    version_root = "/" + base_path.rpartition("/")[2]  # "/beta" or "/v1.0"
    if parts.scheme in ("http", "https") and parts.path.startswith(version_root + "/"):
        return graph_url + parts.path[len(version_root):] + query
    shown = f"{parts.scheme}://{parts.hostname}{parts.path[:60]}" if parts.hostname else next_link[:80]
    raise ListingError(f"the listing's @odata.nextLink points outside {version_root} ({shown}); it was not "
                        f"followed, so the token stays with {base.scheme}://{base.netloc}")


def parse_page(body: Any) -> tuple[list[TenantDevice], int, str | None]:
    """(devices, items without a usable id, the nextLink) of one page; ``ListingError`` for a body that is
    not a listing page (a proxy's HTML, a truncated answer): guessing would drop devices silently."""
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise ListingError("the Autopilot listing answered with a body that is not a page of devices "
                            "(no \"value\" array)")
    devices: list[TenantDevice] = []
    unusable = 0
    for item in values:
        device = TenantDevice.from_graph(item)
        if device is None:
            unusable += 1
        else:
            devices.append(device)
    link = body.get("@odata.nextLink")
    return devices, unusable, link if isinstance(link, str) and link.strip() else None
