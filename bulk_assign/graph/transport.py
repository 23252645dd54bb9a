"""How requests reach Graph: a lean HTTP/1.1 keep-alive pool for direct connections, aiohttp otherwise.

Why a second HTTP path next to aiohttp: at thousands of devices per second the CPU spent per request
decides whether the engine or the server is the bottleneck, and aiohttp's general-purpose machinery
(request and response objects, URL parsing, cookie and header merging, payload registry, timers) costs
about 100 µs per request on a modest core, which is all of the budget a bare aiohttp loop has. Every
request the engine makes goes to one origin with a handful of fixed headers and a small body, so a pool
of keep-alive connections that writes one prebuilt buffer and lets httptools (llhttp, the parser
uvicorn uses) read the answer does the same job for about a third of that (benchmarks/README.md, (a)).

aiohttp stays where it is the better tool: a Graph URL reached through a proxy (CONNECT, proxy
authentication) and a ``ClientSession`` the caller passes in (``AiohttpTransport``).

Failures are typed by what they say about the request, because that decides whether a POST may be sent
again: ``NotSent`` (no byte left this machine: safe to resend), ``ConnectionLost`` (the request may have
arrived: read back first) and ``TimeoutError`` (same). ``graph.send`` turns them into ``Attempt``s.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

if TYPE_CHECKING:  # aiohttp loads only when a proxy or a caller's session needs it (~0.1 s per start)
    import aiohttp

MAX_BODY = 32 * 1024 * 1024  # Graph's answers are a few KB; anything this large is not an answer to us
IDLE_SECONDS = 15.0  # reuse an idle connection only this long: servers drop idle ones, and a POST on a
# connection the server is closing at that moment ends in doubt (a read-back) instead of a clean answer


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]  # names looked up case-insensitively
    body: bytes


class NotSent(ConnectionError):
    """The request never left: the connection could not be made. Resending cannot duplicate anything."""


class ConnectionLost(ConnectionError):
    """The connection failed after the request was written: it may have been carried out."""


class Transport(Protocol):
    """Sends one request to Graph and returns its answer; raises ``NotSent``, ``ConnectionLost`` or
    ``TimeoutError`` and nothing else for a failed exchange (``ValueError`` for a request it refuses)."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response: ...

    async def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class AiohttpTransport:
    """A ``ClientSession``: for proxies and for sessions the caller owns (closed only if ``own``)."""

    def __init__(self, session: aiohttp.ClientSession, *, own: bool) -> None:
        self.session = session
        self._own = own
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response:
        import aiohttp

        try:
            async with self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout) if timeout else None,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                return Response(response.status, response.headers, raw)
        except aiohttp.ClientConnectorError as exc:  # includes the proxy refusing us: nothing was sent
            raise NotSent(describe(exc)) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def close(self) -> None:
        self._closed = True
        if self._own:
            await self.session.close()

    @property
    def closed(self) -> bool:
        """Closed for the engine (a session the caller owns stays open for the caller)."""
        return self._closed


def describe(exc: BaseException) -> str:
    """A short message naming the failure; aiohttp's texts never include request headers."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class HttpPool:
    """Keep-alive HTTP/1.1 connections to the one origin of ``base_url``, at most ``limit`` at a time.

    Requests must be for URLs under that origin (the engine only ever talks to its Graph URL). Connections
    are reused most-recently-used first, so a quiet spell lets the extra ones time out instead of keeping
    all of them half-alive.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 30.0,
        user_agent: str = "bulk-assign",
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"  # compared with each URL: never sent
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal keeps its brackets
        if parts.port is not None:
            host += f":{parts.port}"
        self._prologue = f" HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response:
        head = self._head(method, url, headers, len(body) if body is not None else None)
        async with self._slots:
            conn = self._reuse() or await self._connect()
            try:
                response = await conn.exchange(head, body, timeout)
            except BaseException:
                conn.abort()
                raise
            if conn.reusable() and not self._closed:
                conn.idle_since = asyncio.get_running_loop().time()
                self._idle.append(conn)
            else:
                conn.close()
            return response

    def _head(self, method: str, url: str, headers: Mapping[str, str], length: int | None) -> bytes:
        """The request line and headers as one buffer; refuses anything that could split the request."""
        origin = self._origin
        if not url.startswith(origin) or url[len(origin) : len(origin) + 1] != "/":
            raise ValueError("the pool only sends to its own origin")  # a programming error
        path = url[len(origin) :]
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if length is not None:
            lines += f"Content-Length: {length}\r\n"
        count = len(headers) + (length is not None)
        # A CR or LF inside a path or header value (a token pasted with a newline, say) would let it write
        # headers of its own: checked by counting line breaks, which is cheap enough to do every time.
        if lines.count("\n") != count or lines.count("\r") != count or any(c in path for c in " \r\n"):
            raise ValueError("refusing a request with a line break in its path or a header")
        return f"{method} {path}{self._prologue}{lines}\r\n".encode("latin-1")

    def _reuse(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        oldest_useful = asyncio.get_running_loop().time() - IDLE_SECONDS
        while idle:
            conn = idle.pop()
            if conn.reusable() and conn.idle_since > oldest_useful:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise NotSent("the connection pool is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._all),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise NotSent(f"no connection to {self._host}:{self._port} within {self._connect_timeout:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise NotSent(f"cannot connect to {self._host}:{self._port}: {exc.strerror or exc}") from exc
        if self._closed:  # closed while we were connecting: the new connection must not outlive the pool
            conn.abort()
            raise NotSent("the connection pool is closed")
        return conn

    async def close(self) -> None:
        self._closed = True
        self._idle.clear()
        for conn in list(self._all):
            conn.close()
        self._all.clear()

    @property
    def closed(self) -> bool:
        return self._closed


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools as it arrives."""

    def __init__(self, registry: set[_Connection]) -> None:
        self._registry = registry
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._until_close = False  # the answer's body ends when the server closes (no length, not chunked)
        self._keep_alive = True
        self.closed = False
        self.idle_since = -math.inf

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"malformed HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the connection; connection_lost fails a request still waiting

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        if self._until_close and exc is None and self._waiter is not None:
            self._keep_alive = False
            self._answer()  # RFC 9112 6.3: such a body is complete when the connection closes cleanly
            return
        reason = f": {exc}" if exc else ""
        self._fail(ConnectionLost(f"the server closed the connection before answering{reason}"))

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._size = 0
        self._until_close = False

    def on_headers_complete(self) -> None:
        names = {name.lower() for name, _ in self._headers}
        status = self._parser.get_status_code()
        # httptools has no "end of input" call, so a body delimited by the close is completed by hand
        self._until_close = (
            status >= 200 and status not in (204, 304) and not names & {"content-length", "transfer-encoding"}
        )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise ValueError("response body too large")  # httptools turns this into HttpParserError
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim 1xx answer; the real one follows
        self._keep_alive = self._parser.should_keep_alive()
        self._until_close = False
        self._answer()

    def _answer(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            self.abort()  # an answer nobody asked for: the connection is out of step
            return
        self._cancel_timer()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        waiter.set_result(Response(self._parser.get_status_code(), CIMultiDict(self._headers), body))

    # --- used by the pool
    def exchange(self, head: bytes, body: bytes | None, timeout: float | None) -> asyncio.Future[Response]:
        """Write the request and return the future of its answer."""
        assert self._transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        self._waiter = waiter
        if timeout:
            self._timer = loop.call_later(timeout, self._timed_out, timeout)
        if body:
            self._transport.writelines((head, body))
        else:
            self._transport.write(head)
        return waiter

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self._waiter is None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def _timed_out(self, timeout: float) -> None:
        self._timer = None
        self._fail(TimeoutError(f"no answer within {timeout:g} s"))
        self.abort()

    def _fail(self, exc: BaseException) -> None:
        self._cancel_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
