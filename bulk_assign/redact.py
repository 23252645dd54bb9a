"""One redaction for every message bulk-assign stores or prints: records, logs, stderr, exceptions.

Why one function and a registry: a secret reaches a message by many roads (a proxy error quoting the
proxy URL with its password, a server echoing our ``Authorization`` header in an error body, an MSAL
error quoting the client secret), and each road patched on its own leaves the next one open. So every
message leaves through ``redact``, which removes

- the secrets this process holds (registered as they are read or acquired: the bearer token, the
  client secret, the certificate password), in their plain and URL-encoded forms;
- ``user:password@`` in any URL;
- the value of any ``Authorization``/``Proxy-Authorization`` header or ``Bearer`` credential quoted in text.

The registry keeps only what is needed to recognise a secret, in memory, and never prints it.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "<redacted>"
_MIN_SECRET = 6  # shorter strings would mask ordinary words; no real token or secret is this short

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]*@")
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+|basic\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*")

_lock = threading.Lock()
_secrets: set[str] = set()
_variants: tuple[str, ...] = ()


def register(secret: str | None) -> None:
    """Mask ``secret`` (and its URL-encoded forms) in every later ``redact``."""
    global _variants
    if not secret or len(secret.strip()) < _MIN_SECRET:
        return
    secret = secret.strip()
    with _lock:
        if secret in _secrets:
            return
        _secrets.add(secret)
        forms = {v for s in _secrets for v in (s, quote(s, safe=""), quote_plus(s))}
        _variants = tuple(sorted(forms, key=len, reverse=True))  # longest first: no partial leftovers


def forget_all() -> None:
    """Drop every registered secret (tests; a process that runs several unrelated jobs)."""
    global _variants
    with _lock:
        _secrets.clear()
        _variants = ()


def redact(text: str) -> str:
    """``text`` without any registered secret, URL credentials or quoted authorization values."""
    if not text:
        return text
    for variant in _variants:
        if variant in text:
            text = text.replace(variant, MASK)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    """Redacts every log record's final message, so no handler (run.log, stderr) can write a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
