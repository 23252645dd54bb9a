"""Access tokens for Graph behind one small seam, the ``TokenProvider``.

The engine only ever calls ``await provider.get_token()`` before each request and
``provider.invalidate(token)`` after a 401 ``InvalidAuthenticationToken``. Invalidation is by token value,
so several workers holding the same stale token cause exactly one refresh.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .. import redact
from ..errors import AuthenticationError


@runtime_checkable
class TokenProvider(Protocol):
    """Where the engine gets bearer tokens; implementations must never log or ``repr`` a token."""

    async def get_token(self) -> str:
        """A token valid for at least the next request; raises ``AuthenticationError`` when none can be had."""
        ...

    def invalidate(self, stale_token: str) -> None:
        """Graph rejected ``stale_token``; the next ``get_token`` must not return it again."""
        ...


def check_header_token(token: str, source: str) -> None:
    """Refuse a token that cannot go into an ``Authorization`` header, before anything is sent.

    Why: a CR or LF would split the header (the HTTP layer refuses it only at the first request, as a
    traceback), and a character outside latin-1 cannot be encoded at all; both are pasting mistakes.
    The message names the source and the position, never the token.
    """
    for index, char in enumerate(token):
        if char in "\r\n":
            problem = "a line break"
        elif ord(char) > 0xFF:
            problem = "a character outside latin-1"
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            problem = "a control character"
        else:
            continue
        raise AuthenticationError(f"the token from {source} holds {problem} at position {index + 1}; "
                                  "it cannot be sent in an HTTP header: copy the token again")


class StaticTokenProvider:
    """A pre-acquired token (``BULK_ASSIGN_ACCESS_TOKEN``, tests, pipelines): no refresh is possible."""

    def __init__(self, token: str, *, source: str = "BULK_ASSIGN_ACCESS_TOKEN") -> None:
        if not token.strip():
            raise AuthenticationError(f"{source} is empty")
        check_header_token(token.strip(), source)
        self._token = token.strip()
        redact.register(self._token)
        self._source = source
        self._rejected = False

    async def get_token(self) -> str:
        if self._rejected:
            raise AuthenticationError(
                f"Graph rejected the access token from {self._source} (expired or revoked); "
                "supply a fresh one or sign in with `bulk-assign login`"
            )
        return self._token

    def invalidate(self, stale_token: str) -> None:
        if stale_token == self._token:
            self._rejected = True

    def __repr__(self) -> str:
        return f"StaticTokenProvider(source={self._source!r}, token=<redacted>)"


__all__ = ["StaticTokenProvider", "TokenProvider", "check_header_token"]
