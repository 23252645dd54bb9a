"""The transport against real servers on 127.0.0.1: ``AiohttpTransport`` on the engine's session (keep-alive,
failures typed by whether the request may have arrived, TLS, redirects, the body cap), ``graph.send``'s
mapping of those failures, and ``open_transport``'s proxy and CA choice.

Two kinds of server: ``aiohttp.web`` for ordinary HTTP, and ``RawServer`` (``asyncio.start_server``) for
servers that misbehave on purpose. Nothing in asyncio or aiohttp is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from yarl import URL

import bulk_assign.graph.transport as transport_module
from bulk_assign import AssignmentTarget, Settings
from bulk_assign.config import check_graph_url
from bulk_assign.errors import CertificateError
from bulk_assign.graph.operations import send
from bulk_assign.graph.outcome import Kind
from bulk_assign.graph.transport import (
    KEEPALIVE_SECONDS,
    USER_AGENT,
    AiohttpTransport,
    CertificateFailed,
    ConnectionLost,
    NotSent,
    Transport,
    env_proxy,
    open_session,
    open_transport,
    redact_url,
)

PATH = "/beta/deviceManagement/windowsAutopilotDeviceIdentities/9b2d5a6e-1c3f-4e8a-b7d0-2f4e6a8c0b1d"
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
              "NO_PROXY", "no_proxy")


# ------------------------------------------------------------------------------------------- raw server
@dataclass
class RawRequest:
    line: str  # "POST /path HTTP/1.1"
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes  # the request line and headers exactly as received

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class RawConn:
    """One accepted connection; the handler reads requests and writes whatever bytes it likes."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed or reset it

    async def read_request(self) -> RawRequest | None:
        """The next request, or None when the client closed the connection (``client_gone`` is set)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_gone.set()
            return None
        line, *rest = head[:-4].decode("latin-1").split("\r\n")
        headers = [(n, v.strip()) for n, _, v in (h.partition(":") for h in rest)]
        length = [int(v) for n, v in headers if n.lower() == "content-length"]
        body = await self.reader.readexactly(length[0]) if length else b""
        request = RawRequest(line, headers, body, head)
        self.server.requests.append(request)
        return request

    async def wait_gone(self) -> None:
        """Read until the client closes (or resets) the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.client_gone.set()

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write ``parts`` one by one (``pause`` apart, so each arrives in its own packet)."""
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            self.writer.write(part)
            await self.writer.drain()


Handler = Callable[[RawConn], Awaitable[None]]


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns: list[RawConn] = []
        self.requests: list[RawRequest] = []
        self.open = 0  # connections open right now
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + PATH

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = RawConn(len(self.conns), reader, writer, self)
        self.conns.append(conn)
        self.open += 1
        try:
            await self.handler(conn)
        except ConnectionError:
            conn.client_gone.set()
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            conn.writer.transport.abort()  # handlers reading see the end and return
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=0.5)
            for task in stuck:
                task.cancel()
        await self._server.wait_closed()


def response(status: int = 200, body: bytes = b"", *headers: str, reason: str = "OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def keep_answering(conn: RawConn) -> None:
    """A well-behaved keep-alive server: 200 with the connection's index and request count as the body."""
    served = 0
    while await conn.read_request() is not None:
        served += 1
        await conn.send(response(200, f"conn {conn.index} request {served}".encode()))


def first_then_normal(first: Handler) -> Handler:
    """``first`` on the first connection, ``keep_answering`` on every later one."""

    async def handler(conn: RawConn) -> None:
        await (first(conn) if conn.index == 0 else keep_answering(conn))

    return handler


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def transports() -> AsyncIterator[list[Transport]]:
    """Append every transport a test opens; all are closed afterwards."""
    opened: list[Transport] = []
    yield opened
    for transport in opened:
        await transport.close()


@pytest.fixture
def make_transport(transports: list[Transport]) -> Callable[..., AiohttpTransport]:
    def make(base: str, *, limit: int = 4, ssl_context: ssl.SSLContext | None = None,
             keepalive: float = KEEPALIVE_SECONDS) -> AiohttpTransport:
        """The engine's own session (``open_session``) for one origin, as ``open_transport`` builds it."""
        session = open_session(limit=limit, timeout=5.0, ssl_context=ssl_context, keepalive=keepalive)
        client = AiohttpTransport(session, own=True, origin=base)
        transports.append(client)
        return client

    return make


# -------------------------------------------------------------------------------------------- web server
@dataclass
class WebServer:
    base: str
    peers: list[int]  # the client port of every request: one distinct port per TCP connection

    @property
    def url(self) -> str:
        return self.base + PATH


@pytest.fixture
async def web_server() -> AsyncIterator[Callable[..., Awaitable[WebServer]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                    ssl_context: ssl.SSLContext | None = None) -> WebServer:
        peers: list[int] = []

        async def counting(request: web.Request) -> web.StreamResponse:
            assert request.transport is not None
            peers.append(request.transport.get_extra_info("peername")[1])
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", counting)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        scheme = "https" if ssl_context else "http"
        return WebServer(f"{scheme}://127.0.0.1:{port}", peers)

    yield start
    for runner in runners:
        await runner.cleanup()


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), headers={"Request-Id": "r-echo"})


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


def target() -> AssignmentTarget:
    return AssignmentTarget.parse("all-devices")


# ------------------------------------------------------------------------------- 1. keep-alive and limit
async def test_sequential_requests_reuse_one_connection(web_server: Callable[..., Awaitable[WebServer]],
                                                        make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await web_server(echo)
    client = make_transport(server.base, limit=4)
    for i in range(20):
        answer = await client.request("POST", server.url, {}, f"body {i}".encode(), 1.0)
        assert (answer.status, answer.body) == (200, f"body {i}".encode())
    assert len(server.peers) == 20
    assert len(set(server.peers)) == 1


async def test_concurrent_requests_use_at_most_limit_connections(
    web_server: Callable[..., Awaitable[WebServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    in_flight = 0
    most = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return web.Response(text=request.path)

    server = await web_server(slow)
    client = make_transport(server.base, limit=3)
    answers = await asyncio.gather(*(client.request("GET", f"{server.url}/{i}", {}, None, 1.0) for i in range(24)))
    assert [a.body for a in answers] == [f"{PATH}/{i}".encode() for i in range(24)]
    assert most == 3  # the limit is reached (the client does run requests side by side) ...
    assert len(set(server.peers)) == 3  # ... and never exceeded: three connections carried all 24


# --------------------------------------------------------------------------------- 2. Connection: close
@pytest.mark.parametrize("hang_up", [False, True])
async def test_connection_close_answer_is_not_reused(hang_up: bool,
                                                     raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                     make_transport: Callable[..., AiohttpTransport]) -> None:
    async def close_after_one(conn: RawConn) -> None:
        # Without hang_up the socket stays open: only the header tells the client not to reuse it (a client that
        # did would wait in vain on this connection, which reads nothing more).
        await conn.read_request()
        await conn.send(response(200, f"conn {conn.index}".encode(), "Connection: close"))
        if not hang_up:
            await conn.wait_gone()

    server = await raw_server(close_after_one)
    client = make_transport(server.base)
    for i in range(3):
        answer = await client.request("GET", server.url, {}, None, 0.3)
        assert answer.body == f"conn {i}".encode()
    assert len(server.conns) == 3
    if not hang_up:
        await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.3)  # and the client closed the used one


async def test_server_closing_an_idle_connection_means_a_new_one(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    async def answer_then_hang_up(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(200, f"conn {conn.index}".encode()))  # keep-alive, then the server hangs up
        conn.writer.close()
        await conn.writer.wait_closed()

    server = await raw_server(answer_then_hang_up)
    client = make_transport(server.base)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 0"
    await asyncio.sleep(0.05)  # the FIN reaches the client's loop
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1"
    assert len(server.conns) == 2


# ------------------------------------------------------------------------------ 3. bodies and headers
async def test_chunked_body_in_many_packets_is_assembled(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                         make_transport: Callable[..., AiohttpTransport]) -> None:
    async def chunked(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
                b"5\r\n{\"a\":\r\n",
                b"3\r\n123\r\n4",  # a chunk size split from its chunk
                b"\r\n,\"b\"\r\n3\r\n:4}",
                b"\r\n0\r\n\r\n",
                pause=0.01,
            )

    server = await raw_server(chunked)
    client = make_transport(server.base)
    for _ in range(2):  # and the connection stays usable after a chunked answer
        answer = await client.request("GET", server.url, {}, None, 1.0)
        assert answer.status == 200
        assert answer.body == b'{"a":123,"b":4}'
    assert len(server.conns) == 1


async def test_content_length_body_split_across_packets(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                        make_transport: Callable[..., AiohttpTransport]) -> None:
    body = bytes(range(256)) * 64  # 16 KiB, every byte value, incl. CR and LF

    async def split(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            whole = response(200, body)
            await conn.send(whole[:10], whole[10:50], whole[50:5000], whole[5000:], pause=0.01)

    server = await raw_server(split)
    client = make_transport(server.base)
    answer = await client.request("GET", server.url, {}, None, 1.0)
    assert answer.body == body
    assert (await client.request("GET", server.url, {}, None, 1.0)).body == body
    assert len(server.conns) == 1


async def test_large_body_from_aiohttp(web_server: Callable[..., Awaitable[WebServer]],
                                       make_transport: Callable[..., AiohttpTransport]) -> None:
    body = os.urandom(3 * 1024 * 1024)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=body)

    server = await web_server(big)
    answer = await make_transport(server.base).request("GET", server.url, {}, None, 2.0)
    assert len(answer.body) == len(body)
    assert answer.body == body


async def test_response_headers_are_case_insensitive(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                     make_transport: Callable[..., AiohttpTransport]) -> None:
    async def throttled(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(429, b'{"error":{"code":"TooManyRequests","message":"slow down"}}',
                                     "retry-after: 7", "REQUEST-ID: r-429", reason="Too Many Requests"))

    server = await raw_server(throttled)
    client = make_transport(server.base)
    answer = await client.request("GET", server.url, {}, None, 1.0)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.headers.get("request-id") == "r-429"
    assert answer.headers.get("Request-Id") == "r-429"
    attempt = await send(client, "POST", server.url, token="t", client_request_id="c", body=b"{}", timeout=1.0)
    assert (attempt.kind, attempt.retry_after, attempt.request_id) == (Kind.THROTTLED, 7.0, "r-429")
    assert attempt.error_code == "TooManyRequests"


async def test_interim_100_continue_then_the_real_answer(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                         make_transport: Callable[..., AiohttpTransport]) -> None:
    async def continue_first(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n",
                            response(201, b'{"id":"a1"}', "request-id: r-201"), pause=0.01)

    server = await raw_server(continue_first)
    client = make_transport(server.base)
    for _ in range(2):
        answer = await client.request("POST", server.url, {}, b"{}", 1.0)
        assert (answer.status, answer.body, answer.headers.get("request-id")) == (201, b'{"id":"a1"}', "r-201")
        assert "X-Interim" not in answer.headers  # the interim answer's headers are not the answer's
    assert len(server.conns) == 1


async def test_interim_and_final_answer_in_one_packet(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                      make_transport: Callable[..., AiohttpTransport]) -> None:
    async def together(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n" + response(200, b"final"))

    server = await raw_server(together)
    answer = await make_transport(server.base).request("POST", server.url, {}, b"x", 1.0)
    assert (answer.status, answer.body) == (200, b"final")


async def test_body_ending_with_the_connection_is_an_answer(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                            make_transport: Callable[..., AiohttpTransport]) -> None:
    async def until_close(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"hel", b"lo", pause=0.01)

    server = await raw_server(until_close)
    answer = await make_transport(server.base).request("GET", server.url, {}, None, 0.3)
    assert (answer.status, answer.body) == (200, b"hello")


# ---------------------------------------------------------------------------------- 4. refused: NotSent
async def test_connection_refused_is_not_sent(make_transport: Callable[..., AiohttpTransport]) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    client = make_transport(base)
    with pytest.raises(NotSent):
        await client.request("POST", base + PATH, {}, b"{}", 0.3)
    attempt = await send(client, "POST", base + PATH, token="t", client_request_id="c", body=b"{}", timeout=0.3)
    assert attempt.kind is Kind.TRANSIENT
    assert attempt.error_code == "ConnectionError"
    assert attempt.maybe_committed is False


# ---------------------------------------------------------------------------- 5. lost after the request
async def test_server_closing_after_reading_the_request_is_connection_lost(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    async def hang_up(conn: RawConn) -> None:
        await conn.read_request()  # the request arrived; no answer

    server = await raw_server(first_then_normal(hang_up))
    client = make_transport(server.base)
    with pytest.raises(ConnectionLost):
        await client.request("POST", server.url, {}, b"{}", 0.3)
    assert len(server.requests) == 1
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1 request 1"


async def test_connection_lost_through_send_may_be_committed(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    async def hang_up(conn: RawConn) -> None:
        await conn.read_request()

    server = await raw_server(hang_up)
    attempt = await send(make_transport(server.base), "POST", server.url, token="t", client_request_id="c",
                         body=b"{}", timeout=0.3)
    assert attempt.kind is Kind.TRANSIENT
    assert attempt.error_code == "ConnectionError"
    assert attempt.maybe_committed is True


async def test_closing_mid_body_is_connection_lost(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                   make_transport: Callable[..., AiohttpTransport]) -> None:
    async def half_an_answer(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"0123456789")[:-4])  # Content-Length 10, six bytes, then gone

    server = await raw_server(first_then_normal(half_an_answer))
    client = make_transport(server.base)
    with pytest.raises(ConnectionLost):
        await client.request("GET", server.url, {}, None, 0.3)
    assert (await client.request("GET", server.url, {}, None, 0.3)).status == 200


# ------------------------------------------------------------------------------------------ 6. timeout
async def silent(conn: RawConn) -> None:
    """Reads the request and never answers."""
    await conn.read_request()
    await conn.wait_gone()


async def test_no_answer_times_out_aborts_and_the_transport_goes_on(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    server = await raw_server(first_then_normal(silent))
    client = make_transport(server.base, limit=1)  # one slot: the timed-out request must give it back
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.request("POST", server.url, {}, b"{}", 0.2)
    elapsed = time.monotonic() - started
    assert 0.19 <= elapsed < 0.35
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.2)  # the connection was dropped
    answer = await client.request("GET", server.url, {}, None, 0.3)
    assert answer.body == b"conn 1 request 1"
    attempt = await send(client, "GET", server.url, token="t", client_request_id="c", timeout=0.3)
    assert attempt.kind is Kind.SUCCESS


async def test_timeout_through_send_may_be_committed(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                     make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await raw_server(silent)
    attempt = await send(make_transport(server.base), "POST", server.url, token="t", client_request_id="c",
                         body=b"{}", timeout=0.1)
    assert (attempt.kind, attempt.error_code, attempt.maybe_committed) == (Kind.TRANSIENT, "Timeout", True)


async def test_cancelled_request_drops_its_connection_and_frees_its_slot(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    server = await raw_server(first_then_normal(silent))
    client = make_transport(server.base, limit=1)
    task = asyncio.create_task(client.request("POST", server.url, {}, b"{}", None))
    while not server.requests:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.2)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1 request 1"


# --------------------------------------------------------------------------------- 7. malformed answers
@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 abc Nonsense\r\nContent-Length: 0\r\n\r\n",  # status is not a number
        b"SMTP ready\r\n\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",  # two lengths
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a chunk size that is no number
    ],
)
async def test_malformed_answer_is_connection_lost_and_the_transport_recovers(
    garbage: bytes, raw_server: Callable[[Handler], Awaitable[RawServer]],
    make_transport: Callable[..., AiohttpTransport]
) -> None:
    async def malformed(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(garbage)
        await conn.wait_gone()

    server = await raw_server(first_then_normal(malformed))
    client = make_transport(server.base, limit=1)
    with pytest.raises(ConnectionLost):  # generous timeouts: only the answer's shape may fail this test
        await client.request("POST", server.url, {}, b"{}", 5.0)
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 5.0)  # the out-of-step connection is dropped
    assert (await client.request("GET", server.url, {}, None, 5.0)).body == b"conn 1 request 1"


async def test_unasked_for_answer_drops_the_connection(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                       make_transport: Callable[..., AiohttpTransport]) -> None:
    async def answers_twice(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"one") + response(200, b"two"))
        await conn.wait_gone()

    server = await raw_server(first_then_normal(answers_twice))
    client = make_transport(server.base)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"one"
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.2)
    # "two" must never be taken for the answer to the next request
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1 request 1"


async def test_garbage_on_an_idle_connection_drops_it(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                      make_transport: Callable[..., AiohttpTransport]) -> None:
    async def babble(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"one"))
        await asyncio.sleep(0.01)
        await conn.send(b"\x00 not http \r\n\r\n")  # while nobody waits for an answer
        await conn.wait_gone()

    server = await raw_server(first_then_normal(babble))
    client = make_transport(server.base)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"one"
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.3)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1 request 1"


# ------------------------------------------------------------------------------ 8. refused before writing
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (PATH, {"Authorization": "Bearer t\r\nX-Injected: 1"}),
        (PATH, {"Authorization": "Bearer t\nX-Injected: 1"}),
        (PATH, {"Authorization": "Bearer t\r"}),
        (PATH, {"X-Evil\r\nX-Injected": "1"}),
        (PATH + "\r\nX-Injected: 1", {}),
        (PATH + "\n", {}),
        (PATH + " HTTP/1.0", {}),
    ],
)
async def test_line_breaks_are_refused_and_nothing_is_written(
    path: str, headers: dict[str, str], raw_server: Callable[[Handler], Awaitable[RawServer]],
    make_transport: Callable[..., AiohttpTransport]
) -> None:
    server = await raw_server(keep_answering)
    client = make_transport(server.base)
    assert (await client.request("GET", server.url, {}, None, 0.3)).status == 200  # a connection is open and idle
    with pytest.raises(ValueError, match="line break"):
        await client.request("POST", server.base + path, headers, b"{}", 0.3)
    assert (await client.request("GET", server.url, {}, None, 0.3)).status == 200
    assert [r.line for r in server.requests] == [f"GET {PATH} HTTP/1.1"] * 2  # the bad one wrote nothing
    assert all("X-Injected" not in r.head.decode("latin-1") for r in server.requests)
    assert len(server.conns) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{port}" + PATH,  # another host
        "http://127.0.0.1:{port}1" + PATH,  # another port that starts like ours
        "http://127.0.0.1:{port}@evil.example" + PATH,  # our origin as user info
        "https://127.0.0.1:{port}" + PATH,  # another scheme
        "http://127.0.0.1:{port}",  # no path at all
        "/beta/relative",
    ],
)
async def test_url_outside_the_origin_is_refused(url: str, raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                 make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await raw_server(keep_answering)
    client = make_transport(server.base + "/beta")
    with pytest.raises(ValueError, match="origin"):
        await client.request("GET", url.format(port=server.port), {}, None, 0.3)
    assert server.conns == []


async def test_transport_refuses_an_origin_that_is_not_http() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="not an http"):
            AiohttpTransport(session, own=False, origin="ftp://127.0.0.1/beta")


# --------------------------------------------------------------------------------------------- 9. HTTPS
@pytest.fixture(scope="module")
def tls_server_context(ca: trustme.CA) -> tuple[trustme.CA, ssl.SSLContext]:
    """The session's throwaway CA (conftest) and a server context with its certificate for 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return ca, context


async def test_https_with_the_ca_succeeds_and_without_it_is_not_sent(
    tls_server_context: tuple[trustme.CA, ssl.SSLContext], web_server: Callable[..., Awaitable[WebServer]],
    make_transport: Callable[..., AiohttpTransport]
) -> None:
    ca, server_context = tls_server_context
    server = await web_server(echo, server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    trusted = make_transport(server.base, ssl_context=client_context)
    for i in range(3):
        answer = await trusted.request("POST", server.url, {}, f"secret {i}".encode(), 1.0)
        assert (answer.status, answer.body) == (200, f"secret {i}".encode())
    assert len(set(server.peers)) == 1  # TLS connections are kept alive too

    untrusted = make_transport(server.base)  # the default context: the test CA is not trusted
    with pytest.raises(CertificateFailed, match=r"127\.0\.0\.1 did not verify") as caught:
        await untrusted.request("POST", server.url, {}, b"never sent", 1.0)
    assert isinstance(caught.value, NotSent)  # nothing was sent
    with pytest.raises(CertificateError, match="--ca-bundle"):  # it stops the run rather than being retried
        await send(untrusted, "POST", server.url, token="t", client_request_id="c", body=b"{}", timeout=1.0)
    assert len(server.peers) == 3  # nothing reached the handler


async def test_open_transport_with_a_ca_bundle_end_to_end(
    tls_server_context: tuple[trustme.CA, ssl.SSLContext], web_server: Callable[..., Awaitable[WebServer]],
    transports: list[Transport], tmp_path: Path, no_proxy_env: None
) -> None:
    ca, server_context = tls_server_context
    seen: list[tuple[str, str | None, bytes]] = []

    async def assign(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("User-Agent"), await request.read()))
        return web.json_response({"id": "assignment-1"}, status=201, headers={"request-id": "r-1"})

    server = await web_server(assign, server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    settings = Settings(target=target(), ca_bundle=bundle, graph_url=server.base + "/beta")
    transport = open_transport(settings)
    transports.append(transport)
    assert isinstance(transport, AiohttpTransport)
    attempt = await send(transport, "POST", settings.graph_url + PATH.removeprefix("/beta"), token="t",
                         client_request_id="c", body=b'{"x":1}', timeout=1.0)
    assert (attempt.kind, attempt.http_status, attempt.request_id) == (Kind.SUCCESS, 201, "r-1")
    assert seen == [(PATH, USER_AGENT, b'{"x":1}')]


async def test_open_transport_without_the_ca_bundle_does_not_trust_the_server(
    tls_server_context: tuple[trustme.CA, ssl.SSLContext], web_server: Callable[..., Awaitable[WebServer]],
    transports: list[Transport], no_proxy_env: None
) -> None:
    _, server_context = tls_server_context
    server = await web_server(echo, server_context)
    transport = open_transport(Settings(target=target(), graph_url=server.base + "/beta"))
    transports.append(transport)
    with pytest.raises(NotSent):
        await transport.request("GET", server.url, {}, None, 1.0)


# ---------------------------------------------------------------------------------- 10. open_transport
def test_env_proxy_follows_https_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy_env: None) -> None:
    assert env_proxy("https://graph.microsoft.com/beta") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    assert env_proxy("https://graph.microsoft.com/beta") == "http://proxy.corp.example:3128"
    assert env_proxy("http://127.0.0.1:8080/beta") is None  # the emulator is never proxied
    assert env_proxy("http://localhost:8080/beta") is None
    monkeypatch.setenv("NO_PROXY", "graph.microsoft.com")
    assert env_proxy("https://graph.microsoft.com/beta") is None
    assert env_proxy("https://graph.microsoft.us/beta") == "http://proxy.corp.example:3128"


async def test_open_transport_uses_aiohttp_through_a_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy_env: None,
                                                           transports: list[Transport],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s3cret@proxy.corp.example:3128")
    caplog.set_level(logging.INFO, logger="bulk_assign")
    transport = open_transport(Settings(target=target(), request_timeout=42))
    transports.append(transport)
    assert isinstance(transport, AiohttpTransport)
    session = transport.session
    assert str(session._default_proxy) == "http://alice:s3cret@proxy.corp.example:3128"
    assert session.trust_env is False  # the proxy was looked up once, not per request in a thread
    assert session.timeout.total == 42
    assert "proxy.corp.example:3128" in caplog.text
    assert "s3cret" not in caplog.text and "alice" not in caplog.text
    await transport.close()
    assert transport.closed and session.closed  # the engine owns this session


async def test_open_transport_is_direct_without_a_proxy_or_for_loopback(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None, transports: list[Transport]
) -> None:
    def proxy_of(settings: Settings) -> object:
        transport = open_transport(settings)
        transports.append(transport)
        assert transport.session.trust_env is False
        return transport.session._default_proxy

    assert proxy_of(Settings(target=target())) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp.example:3128")
    assert proxy_of(Settings(target=target(), graph_url="http://127.0.0.1:8080/beta")) is None
    assert str(proxy_of(Settings(target=target()))) == "http://proxy.corp.example:3128"  # control
    monkeypatch.setenv("NO_PROXY", "graph.microsoft.com")
    assert proxy_of(Settings(target=target())) is None


async def test_open_transport_tunes_its_session(no_proxy_env: None, transports: list[Transport]) -> None:
    transport = open_transport(Settings(target=target(), concurrency=12, request_timeout=100))
    transports.append(transport)
    session = transport.session
    assert isinstance(session.connector, aiohttp.TCPConnector)
    # the writers, as many readers ahead of them (read-before-write), and a few spare
    assert session.connector.limit == 12 + 12 + transport_module.SPARE_CONNECTIONS
    writes_only = open_transport(Settings(target=target(), concurrency=12, read_before_write=False))
    transports.append(writes_only)
    assert writes_only.session.connector.limit == 12 + transport_module.SPARE_CONNECTIONS  # type: ignore[union-attr]
    assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
    assert (session.timeout.total, session.timeout.sock_connect) == (100, transport_module.CONNECT_SECONDS)
    assert session.headers["Accept-Encoding"] == "gzip" and session.headers["User-Agent"] == USER_AGENT
    assert session.auto_decompress is True


async def test_requests_go_through_the_proxy_given(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                   transports: list[Transport]) -> None:
    """A plain-http Graph URL through a proxy: the proxy gets the absolute URL; the origin is Graph's."""
    proxy = await raw_server(keep_answering)
    session = open_session(limit=2, timeout=1.0, proxy=proxy.base)
    transport = AiohttpTransport(session, own=True, origin="http://graph.invalid/beta")
    transports.append(transport)
    answer = await transport.request("POST", "http://graph.invalid/beta/x", {}, b"{}", 1.0)
    assert (answer.status, answer.body) == (200, b"conn 0 request 1")
    assert [r.line for r in proxy.requests] == ["POST http://graph.invalid/beta/x HTTP/1.1"]


async def test_a_proxy_refusing_connect_is_not_sent(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                    transports: list[Transport]) -> None:
    async def refuse(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(403, b"no", reason="Forbidden"))

    proxy = await raw_server(refuse)
    transport = AiohttpTransport(open_session(limit=2, timeout=1.0, proxy=proxy.base), own=True)
    transports.append(transport)
    with pytest.raises(NotSent, match="403"):
        await transport.request("POST", "https://graph.invalid/beta/x", {"Authorization": "Bearer tok"}, b"{}", 1.0)
    assert [r.line for r in proxy.requests] == ["CONNECT graph.invalid:443 HTTP/1.1"]
    assert all(not r.values("Authorization") for r in proxy.requests)  # the token is for Graph, not the proxy


async def test_open_transport_ca_bundle_reaches_the_proxied_session(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None, transports: list[Transport], tmp_path: Path
) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    transport = open_transport(Settings(target=target(), ca_bundle=bundle))
    transports.append(transport)
    assert isinstance(transport, AiohttpTransport)
    context = transport.session.connector._ssl  # type: ignore[union-attr]
    assert isinstance(context, ssl.SSLContext)
    assert any(c.get("subject") for c in context.get_ca_certs())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@proxy:3128", "http://proxy:3128"),
        ("http://user@proxy.corp.example", "http://proxy.corp.example"),
        ("http://:pw@proxy:8080/path", "http://proxy:8080/path"),
        ("http://proxy:3128", "http://proxy:3128"),
    ],
)
def test_redact_url_hides_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_aiohttp_transport_against_a_real_server(web_server: Callable[..., Awaitable[WebServer]]) -> None:
    server = await web_server(echo)
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session, own=False)
        answer = await transport.request("POST", server.url, {"X-A": "1"}, b"payload", 1.0)
        assert (answer.status, answer.body, answer.headers.get("request-id")) == (200, b"payload", "r-echo")
        await transport.close()
        assert transport.closed and not session.closed  # the caller's session stays the caller's


async def test_a_callers_session_that_raises_for_status_still_gets_answers(
    raw_server: Callable[[Handler], Awaitable[RawServer]]
) -> None:
    async def not_found(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(404, b'{"error":{"code":"ResourceNotFound","message":"no"}}'))

    server = await raw_server(not_found)
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        transport = AiohttpTransport(session, own=False, origin=server.base)
        attempt = await send(transport, "POST", server.url, token="t", client_request_id="c", body=b"{}", timeout=1.0)
    assert (attempt.kind, attempt.http_status, attempt.error_code) == (Kind.PERMANENT, 404, "ResourceNotFound")
    assert len(server.requests) == 1


# -------------------------------------------------------------------------------------------- 11. close
async def test_close_closes_every_connection(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                             make_transport: Callable[..., AiohttpTransport]) -> None:
    gate = asyncio.Event()

    async def wait_for_three(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            if len(server.requests) >= 3:
                gate.set()
            await gate.wait()
            await conn.send(response(200, b"ok"))

    server = await raw_server(wait_for_three)
    client = make_transport(server.base, limit=3)
    await asyncio.wait_for(asyncio.gather(*(client.request("GET", server.url, {}, None, 1.0) for _ in range(3))), 1.0)
    assert len(server.conns) == 3 and server.open == 3
    await client.close()
    assert client.closed
    await asyncio.wait_for(asyncio.gather(*(c.client_gone.wait() for c in server.conns)), 0.3)
    with pytest.raises(NotSent):
        await client.request("GET", server.url, {}, None, 0.3)
    assert len(server.conns) == 3


async def test_close_fails_a_request_in_flight(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                               make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await raw_server(silent)
    client = make_transport(server.base)
    task = asyncio.create_task(client.request("POST", server.url, {}, b"{}", 1.0))
    while not server.requests:
        await asyncio.sleep(0.005)
    await client.close()
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(task, 0.3)
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.3)


async def test_close_while_a_connection_is_being_made(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                      make_transport: Callable[..., AiohttpTransport]) -> None:
    """A connection that completes after ``close()`` must not outlive the client or serve later requests."""
    server = await raw_server(keep_answering)
    client = make_transport(server.base)
    task = asyncio.create_task(client.request("GET", server.url, {}, None, 0.3))
    await asyncio.sleep(0)  # the request is now inside create_connection
    await client.close()
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(task, 0.3)
    with pytest.raises(NotSent):
        await client.request("GET", server.url, {}, None, 0.3)
    for conn in server.conns:
        await asyncio.wait_for(conn.client_gone.wait(), 0.3)


# ------------------------------------------------------------------------------------------ 12. idle limit
async def test_connection_idle_too_long_is_not_reused(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                      make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await raw_server(keep_answering)
    client = make_transport(server.base, keepalive=0.2)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 0 request 1"
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 0 request 2"  # control
    await asyncio.sleep(0.3)
    assert (await client.request("GET", server.url, {}, None, 0.3)).body == b"conn 1 request 1"
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.3)  # the stale one is closed, not leaked
    assert len(server.conns) == 2


# ---------------------------------------------------------------------------------- 13. the bytes we send
async def test_request_head_and_body_are_exact(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                               make_transport: Callable[..., AiohttpTransport]) -> None:
    server = await raw_server(keep_answering)
    client = make_transport(server.base + "/beta")
    body = b'{"a":"\xc3\xa9"}\r\n\x00\xff' * 3
    given = {"Authorization": "Bearer tok", "client-request-id": "c-1", "Content-Type": "application/json",
             "Accept": "application/json"}
    await client.request("POST", server.url + "?x=1", given, body, 0.3)
    await client.request("GET", server.url, {"Accept": "application/json"}, None, 0.3)

    post, get = server.requests
    assert post.line == f"POST {PATH}?x=1 HTTP/1.1"
    assert post.body == body
    expected = {"Host": f"127.0.0.1:{server.port}", "User-Agent": USER_AGENT, "Accept-Encoding": "gzip",
                "Content-Length": str(len(body)), **given}
    assert sorted(n.lower() for n, _ in post.headers) == sorted(n.lower() for n in expected)  # each once
    for name, value in expected.items():
        assert post.values(name) == [value]

    assert get.line == f"GET {PATH} HTTP/1.1"
    assert get.values("Content-Length") == [] and get.body == b""
    assert sorted(n.lower() for n, _ in get.headers) == ["accept", "accept-encoding", "host", "user-agent"]
    assert len(server.conns) == 1


def test_a_graph_url_with_user_info_is_refused() -> None:
    """aiohttp would turn user info in a URL into Basic credentials: such a Graph URL never gets this far."""
    with pytest.raises(ValueError, match="no user name or password"):
        check_graph_url("https://user:pw@graph.microsoft.com/beta")


# ------------------------------------------------------------------------------------ 14. the body cap
@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
async def test_an_answer_over_the_cap_is_connection_lost_not_memory(
    framing: str, monkeypatch: pytest.MonkeyPatch, raw_server: Callable[[Handler], Awaitable[RawServer]],
    make_transport: Callable[..., AiohttpTransport]
) -> None:
    monkeypatch.setattr(transport_module, "MAX_BODY", 4096)

    async def huge(conn: RawConn) -> None:
        await conn.read_request()
        if framing == "content-length":  # announced, never sent: refused on the header alone
            await conn.send(b"HTTP/1.1 201 Created\r\nContent-Length: 4097\r\n\r\n")
        elif framing == "chunked":
            await conn.send(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
                            *[b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(5)])
        else:
            await conn.send(b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n", b"y" * 5000)
        await conn.wait_gone()

    server = await raw_server(first_then_normal(huge))
    client = make_transport(server.base)
    with pytest.raises(ConnectionLost, match="larger than 4,096 bytes"):
        await client.request("POST", server.url, {}, b"{}", 1.0)
    await asyncio.wait_for(server.conns[0].client_gone.wait(), 0.5)  # dropped, not drained
    attempt = await send(client, "GET", server.url, token="t", client_request_id="c", timeout=1.0)
    assert attempt.kind is Kind.SUCCESS  # the transport goes on
    assert (await client.request("GET", server.url, {}, None, 1.0)).body.startswith(b"conn ")


async def test_an_answer_at_the_cap_is_read(monkeypatch: pytest.MonkeyPatch,
                                            raw_server: Callable[[Handler], Awaitable[RawServer]],
                                            make_transport: Callable[..., AiohttpTransport]) -> None:
    monkeypatch.setattr(transport_module, "MAX_BODY", 4096)

    async def exactly(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"z" * 4096
                            + b"\r\n0\r\n\r\n", response(200, b"w" * 4096))

    server = await raw_server(exactly)
    client = make_transport(server.base)
    assert (await client.request("GET", server.url, {}, None, 1.0)).body == b"z" * 4096


async def test_a_gzip_answer_is_decompressed(web_server: Callable[..., Awaitable[WebServer]],
                                             make_transport: Callable[..., AiohttpTransport]) -> None:
    seen: list[str | None] = []

    async def gzipped(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding"))
        answer = web.Response(body=b'{"id":"a1"}' * 100, content_type="application/json")
        answer.enable_compression(web.ContentCoding.gzip)
        return answer

    server = await web_server(gzipped)
    answer = await make_transport(server.base).request("GET", server.url, {}, None, 1.0)
    assert answer.headers.get("Content-Encoding") == "gzip"  # it did travel compressed
    assert answer.body == b'{"id":"a1"}' * 100
    assert seen == ["gzip"]


async def test_cookies_are_never_kept(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                      make_transport: Callable[..., AiohttpTransport]) -> None:
    async def sets_cookies(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(200, b"ok", "Set-Cookie: session=abc; Path=/"))

    server = await raw_server(sets_cookies)
    client = make_transport(server.base)
    for _ in range(2):
        await client.request("GET", server.url, {}, None, 1.0)
    assert [r.values("Cookie") for r in server.requests] == [[], []]


# ------------------------------------------------------------------- 15. a reused connection that dies
async def test_a_post_on_a_reused_connection_the_server_drops_is_lost_and_not_resent(
    raw_server: Callable[[Handler], Awaitable[RawServer]], make_transport: Callable[..., AiohttpTransport]
) -> None:
    """aiohttp sees ``ServerDisconnectedError``; the POST may have landed, so it is neither resent nor NotSent."""

    async def one_then_drop(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(response(200, b"first"))  # keep-alive: the client will reuse this connection
        await conn.read_request()  # the second request arrives; the server goes away without an answer

    server = await raw_server(first_then_normal(one_then_drop))
    client = make_transport(server.base)
    assert (await client.request("POST", server.url, {}, b"{}", 1.0)).body == b"first"
    with pytest.raises(ConnectionLost, match="ServerDisconnected"):
        await client.request("POST", server.url, {}, b"{}", 1.0)
    assert len(server.requests) == 2 and len(server.conns) == 1  # not silently sent again
    attempt = await send(client, "POST", server.url, token="t", client_request_id="c", body=b"{}", timeout=1.0)
    assert attempt.kind is Kind.SUCCESS


# ------------------------------------------------------------------------------------ 16. redirects
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_returned_not_followed(status: int,
                                                   raw_server: Callable[[Handler], Awaitable[RawServer]],
                                                   make_transport: Callable[..., AiohttpTransport]) -> None:
    elsewhere = await raw_server(keep_answering)

    async def redirect(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            await conn.send(response(status, b"", f"Location: {elsewhere.url}", reason="Moved"))

    server = await raw_server(redirect)
    client = make_transport(server.base)
    answer = await client.request("POST", server.url, {"Authorization": "Bearer tok"}, b"{}", 1.0)
    assert answer.status == status
    attempt = await send(client, "POST", server.url, token="tok", client_request_id="c", body=b"{}", timeout=1.0)
    assert (attempt.kind, attempt.error_code) == (Kind.PERMANENT, "Redirect")
    assert f"127.0.0.1:{elsewhere.port}" in (attempt.error_message or "")
    assert elsewhere.conns == [] and elsewhere.requests == []


# ------------------------------------------------------------------------ 17. the token stays private
async def test_failures_never_carry_the_token(raw_server: Callable[[Handler], Awaitable[RawServer]],
                                              make_transport: Callable[..., AiohttpTransport]) -> None:
    token = "eyJ-very-secret-token"
    behaviours: list[bytes | None] = [None, b"SMTP ready\r\n\r\n", response(200, b"0123456789")[:-4]]

    async def misbehave(conn: RawConn) -> None:
        await conn.read_request()
        garbage = behaviours[conn.index] if conn.index < len(behaviours) else None
        if garbage:
            await conn.send(garbage)

    server = await raw_server(misbehave)
    client = make_transport(server.base)
    for _ in behaviours:
        with pytest.raises(ConnectionLost) as caught:
            await client.request("POST", server.url, {"Authorization": f"Bearer {token}"}, b"{}", 1.0)
        chain = [caught.value, caught.value.__cause__]
        assert all(token not in str(e) and token not in repr(e) for e in chain)
        attempt = await send(client, "POST", server.url, token=token, client_request_id="c", body=b"{}", timeout=1.0)
        assert token not in repr(attempt)


@pytest.mark.parametrize("own_session", [True, False])
async def test_a_redirected_write_fails_the_device_and_the_token_stays_home(
    own_session: bool, web_server: Callable[..., Awaitable[WebServer]], tmp_path: Path, no_proxy_env: None
) -> None:
    """End to end: Graph's URL answers 307 to another loopback server, which records whatever reaches it."""
    from bulk_assign import assign_profiles
    from bulk_assign.store.reports import read_jsonl

    token = "eyJ-the-bearer-token"
    reached: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"id": "stolen"}, status=201)

    elsewhere = await web_server(record)

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": elsewhere.base + request.path_qs})

    graph = await web_server(redirect)
    device = "9b2d5a6e-1c3f-4e8a-b7d0-2f4e6a8c0b1d"
    out = tmp_path / "out"
    session = None if own_session else aiohttp.ClientSession()
    try:
        # the write itself is redirected here (a redirected read fails the device too: tests/test_readahead.py)
        summary = await assign_profiles([device], target="all-devices", graph_url=graph.base + "/beta",
                                        token_provider=token, out_dir=out, session=session,
                                        read_before_write=False)
    finally:
        if session is not None:
            assert not session.closed  # the caller's session stays the caller's
            await session.close()
    assert reached == []  # no request, so no Authorization header, ever reached the other server
    assert summary.counts.get("failed") == 1
    (record_,) = list(read_jsonl(out / "results.jsonl"))
    assert (record_["status"], record_["http_status"], record_["error_code"]) == ("failed", 307, "Redirect")
    assert elsewhere.base.removeprefix("http://") in record_["error_message"]
    assert record_["attempts"] == 1  # permanent: not retried
    assert len(graph.peers) == 2 and len(set(graph.peers)) == 1  # the canary read and the write, one connection
    for path in out.iterdir():
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path.name


async def test_a_handshake_that_never_completes_is_not_sent(transports: list[Transport]) -> None:
    """A listener whose accept queue is full drops further SYNs: the connect times out, nothing was sent."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue (its length depends on the kernel): later SYNs are dropped
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            await asyncio.sleep(0.05)
            transport = AiohttpTransport(open_session(limit=2, timeout=0.6), own=True)
            transports.append(transport)
            started = time.monotonic()
            with pytest.raises(NotSent, match="ConnectionTimeout"):
                await transport.request("POST", f"http://127.0.0.1:{port}{PATH}", {}, b"{}", 0.6)
            assert time.monotonic() - started < 0.55  # the handshake's own limit, half the request's
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize(
    ("path", "prebuilt"),
    [
        (PATH + "/deploymentProfile/assignments", True),  # the engine's own URLs: built without re-encoding
        ("/beta/$batch", True),
        ("/v1.0/a~b_c-d/", True),
        ("/beta/a/../b", False),  # a dot segment: only a full parse resolves it
        ("/beta/./b", False),
        ("/beta/x?$filter=a eq 'b'".replace(" ", "%20"), False),  # a query, a percent escape
        ("/beta/caf\u00e9", False),  # not ASCII: it needs encoding
    ],
)
async def test_a_prebuilt_url_is_sent_exactly_as_aiohttp_would_send_the_text(
        path: str, prebuilt: bool, raw_server: Callable[[Handler], Awaitable[RawServer]],
        make_transport: Callable[..., AiohttpTransport]) -> None:
    """``_url`` skips yarl's re-encoding only for the run's origin followed by plain characters: the request
    line is the one aiohttp writes for the same text."""
    server = await raw_server(keep_answering)
    client = make_transport(server.base + "/beta")
    url = server.base + path
    assert isinstance(client._url(url), URL) is prebuilt
    assert (await client.request("GET", url, {}, None, 2.0)).status == 200
    async with aiohttp.ClientSession() as plain, plain.get(url) as answer:
        assert answer.status == 200
    assert server.requests[0].line == server.requests[1].line


def test_an_origin_yarl_writes_otherwise_is_never_prebuilt() -> None:
    async def check() -> None:
        async with aiohttp.ClientSession() as session:
            for origin in ("https://GRAPH.example.com/beta", "https://graph.example.com:443/beta"):
                client = AiohttpTransport(session, own=False, origin=origin)
                assert client._url(origin + "/$batch") == origin + "/$batch"  # text: aiohttp parses it in full

    asyncio.run(check())
