"""The Microsoft clouds bulk-assign can talk to: Graph root, sign-in host and scopes travel together.

A token for one cloud is useless in another, so ``--cloud`` picks all three at once, and the scopes are
always derived from the cloud's own Graph host. A custom ``--graph-url`` (a proxy, the local emulator)
only changes where requests go, never what the token is issued for: Entra would refuse to mint a token
for ``http://127.0.0.1:8080`` anyway, and a token scoped to a rehearsal host must not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError

#: The one permission the assignment POST needs (delegated; application where the tenant grants it).
GRAPH_PERMISSION = "DeviceManagementServiceConfig.ReadWrite.All"


@dataclass(frozen=True, slots=True)
class Cloud:
    """One national cloud: where Graph lives, where sign-in happens, and the scopes that follow."""

    name: str
    graph_url: str  # the versioned root every request path is relative to
    authority_host: str  # e.g. https://login.microsoftonline.com

    @property
    def graph_resource(self) -> str:
        """``https://graph.microsoft.com``: the resource the token is issued for (no version path)."""
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def app_scope(self) -> str:
        """App-only flows request every application permission granted to the app at once."""
        return f"{self.graph_resource}/.default"

    @property
    def delegated_scope(self) -> str:
        """Delegated flows ask for the one permission they need (MSAL adds openid/profile/offline_access)."""
        return f"{self.graph_resource}/{GRAPH_PERMISSION}"

    def authority_for(self, tenant: str) -> str:
        return f"{self.authority_host}/{tenant}"


CLOUDS: dict[str, Cloud] = {
    cloud.name: cloud
    for cloud in (
        Cloud("global", "https://graph.microsoft.com/beta", "https://login.microsoftonline.com"),
        Cloud("usgov", "https://graph.microsoft.us/beta", "https://login.microsoftonline.us"),
        Cloud("usgov-dod", "https://dod-graph.microsoft.us/beta", "https://login.microsoftonline.us"),
        Cloud("china", "https://microsoftgraph.chinacloudapi.cn/beta", "https://login.chinacloudapi.cn"),
    )
}


def get_cloud(name: str) -> Cloud:
    """The cloud called ``name``; a ``UsageError`` listing the valid names otherwise."""
    try:
        return CLOUDS[name.strip().lower()]
    except KeyError:
        raise UsageError(f"unknown cloud {name!r}; choose one of {', '.join(CLOUDS)}") from None


__all__ = ["CLOUDS", "GRAPH_PERMISSION", "Cloud", "get_cloud"]
