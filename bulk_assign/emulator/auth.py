"""Bearer-token checks the way Graph answers them, without any real identity provider.

Tokens are accepted when present (or equal to the configured one); a JWT's ``exp`` claim is honoured and its
``appid``/``azp`` claim names the app whose budget a request charges. Signatures are not checked: tests
mint tokens with any key (or none) and make them expire on purpose.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_APP = "default"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What the emulator needs from a token: whose budget it charges and when it stops being valid."""

    app: str
    expires: float | None  # epoch seconds, from a JWT's exp claim


def _claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (three base64url segments with a JSON object in the middle), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def inspect_token(token: str) -> TokenInfo:
    """Read the app and expiry of a token; an opaque (non-JWT) token belongs to the default app."""
    claims = _claims(token)
    if claims is None:
        return TokenInfo(DEFAULT_APP, None)
    app = claims.get("appid") or claims.get("azp") or DEFAULT_APP
    exp = claims.get("exp")
    expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    return TokenInfo(str(app), expires)


class Authenticator:
    """Checks ``Authorization`` headers; caches what it learned per token (tokens repeat on every request)."""

    _CACHE_LIMIT = 4096

    def __init__(self, required_token: str | None) -> None:
        self.required_token = required_token
        self._cache: dict[str, TokenInfo] = {}

    def check(self, header: str | None, now_epoch: float) -> tuple[TokenInfo | None, str]:
        """(info, "") when the request may proceed, else (None, reason for the 401 message)."""
        if not header:
            return None, "Access token is empty."
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None, "Authorization header must use the Bearer scheme."
        token = token.strip()
        if not token:
            return None, "Access token is empty."
        if self.required_token is not None and token != self.required_token:
            return None, "Access token validation failure. Invalid audience or signature."
        info = self._cache.get(token)
        if info is None:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            info = self._cache[token] = inspect_token(token)
        if info.expires is not None and info.expires <= now_epoch:
            return None, "Lifetime validation failed, the token is expired."
        return info, ""
