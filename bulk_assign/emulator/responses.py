"""Answer shapes: Graph's error body, Intune's JSON-inside-``message`` quirk, and Retry-After styles.

An ``Outcome`` is what evaluating one operation produced, before it is turned into either an HTTP
response (standalone request) or a ``responses[]`` entry (batch item); both share this one description.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

RESET = "reset"  # Outcome.action: close the connection instead of answering


@dataclass(slots=True)
class Outcome:
    """Status, JSON body (or raw bytes for a malformed one), extra headers, and what to do with the socket."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    delay: float = 0.0


def graph_error(status: int, code: str, message: str, request_id: str, client_request_id: str) -> Outcome:
    """Graph's error body: code, message and innerError (date, request-id, client-request-id)."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }
    return Outcome(status, body)


def gateway_timeout(rid: str, crid: str) -> Outcome:
    """504 as a gateway sends it: no Retry-After."""
    return graph_error(504, "GatewayTimeout", "The gateway did not receive a response in time.", rid, crid)


def intune_message(url: str) -> str:
    """Intune's 429/503 ``message``: a JSON document in a string, with the Activity ID inside ``Message``."""
    activity = uuid.uuid4()
    inner = {
        "_version": 3,
        "Message": (
            "An error has occurred - Operation ID (for customer support): 00000000-0000-0000-0000-000000000000"
            f" - Activity ID: {activity} - Url: {url} - CustomApiErrorPhrase: "
        ),
        "CustomApiErrorPhrase": "",
        "RetryAfter": None,
        "ErrorSourceService": "",
        "HttpHeaders": "{}",
    }
    return orjson.dumps(inner).decode()


class RetryAfterRenderer:
    """Renders a wait in the configured ``Retry-After`` style; ``mixed`` draws a style per response."""

    _STYLES = ("int", "decimal", "list", "missing")

    def __init__(self, style: str, seed: int) -> None:
        self.style = style
        self._rng = random.Random(seed)

    def render(self, seconds: float) -> str | None:
        """The header value, or None for the ``missing`` style (Intune often sends none)."""
        style = self._rng.choice(self._STYLES) if self.style == "mixed" else self.style
        return render_retry_after(seconds, style)


def render_retry_after(seconds: float, style: str) -> str | None:
    """``int``: ceil, at least 1; ``decimal``: 3 decimals (``2.128``); ``list``: ``"<int>,120"``; ``missing``."""
    if style == "missing":
        return None
    if style == "decimal":
        return f"{max(seconds, 0.001):.3f}"
    whole = max(1, math.ceil(seconds))
    if style == "list":
        return f"{whole},120"
    return str(whole)
