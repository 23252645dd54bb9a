"""An in-process ``Transport`` that answers with a function: fast unit tests of the pipeline, no sockets.

Like httpx's ``MockTransport``: the handler gets each request and returns a ``Response`` (or raises
``NotSent``, ``ConnectionLost`` or ``TimeoutError`` to play a failed exchange). End-to-end behaviour is
still tested against the emulator on loopback; this tier is for the worker, batch and collector logic,
where a scripted answer says more than a whole server.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

import orjson

from .transport import Response


class Request(NamedTuple):
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None

    def json(self) -> object:
        return orjson.loads(self.body or b"null")


Handler = Callable[[Request], Response | Awaitable[Response]]


class MockTransport:
    """Calls ``handler`` for every request; keeps the requests it saw (``requests``) for assertions."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._closed = False
        self.requests: list[Request] = []

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        request = Request(method, url, dict(headers), body)
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


def json_response(status: int, body: object = None, headers: Mapping[str, str] | None = None) -> Response:
    """A ``Response`` with a JSON body (Graph's usual answer)."""
    raw = b"" if body is None else orjson.dumps(body)
    return Response(status, {"Content-Type": "application/json", **(headers or {})}, raw)
