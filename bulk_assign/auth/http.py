"""The HTTP session MSAL uses: our CA bundle really applied, and a timeout so sign-in can never hang.

Two traps in MSAL's default session (``requests``) for an unattended job:

* ``verify=`` on the session loses to ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in the environment
  (requests merges the environment into every request over the session setting), so ``--ca-bundle``
  would silently be ignored wherever those variables are set. Passing ``verify`` per request wins.
* No timeout: a token request stuck on a half-open connection would hold the renewal lock all night.
* No size limit: an answer is read whole into memory. Token answers are a few KB; a larger one is cut
  off at ``MAX_BODY`` and the request fails, so a hostile or broken endpoint cannot exhaust memory.

Proxy variables (``HTTPS_PROXY``, ``NO_PROXY``) keep working: the session still trusts the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)
MAX_BODY = 1024 * 1024  # token and discovery answers are a few KB


class _Session(requests.Session):
    def __init__(self, ca_bundle: Path | None, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._ca_bundle = str(ca_bundle) if ca_bundle else None
        self._timeout = timeout
        adapter = HTTPAdapter(max_retries=1)  # what MSAL's own session does: one quiet retry
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        if self._ca_bundle:
            kwargs["verify"] = self._ca_bundle  # per request: beats REQUESTS_CA_BUNDLE from the environment
        kwargs["stream"] = True  # read below, at most MAX_BODY
        response = super().request(method, url, *args, **kwargs)
        try:
            body = response.raw.read(MAX_BODY + 1, decode_content=True)
        finally:
            response.close()
        if len(body) > MAX_BODY:
            raise requests.exceptions.ConnectionError(f"the answer from {response.url.split('?')[0]} is larger "
                                                      f"than {MAX_BODY // 1024} KB: not a sign-in answer")
        response._content = body  # what .text and .json() read
        return response


def msal_http_client(ca_bundle: Path | None = None, *, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Any:
    """A ``requests.Session`` for MSAL's ``http_client=``: honours ``ca_bundle`` and always times out."""
    return _Session(ca_bundle, timeout)


__all__ = ["DEFAULT_TIMEOUT", "msal_http_client"]
