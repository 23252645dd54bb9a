"""A hostile Graph server on loopback with named modes: every way a server (or what sits in front of it) was
seen to misbehave, on a raw socket so that nothing smooths the misbehaviour over.

Only ``POST`` requests get the hostile answer; ``GET`` read-backs are answered "not assigned" (an empty
list), so the engine's verification path is exercised too. Every request is recorded (method, path,
headers) for the tests' assertions, and a second listener (``elsewhere``) records whatever reaches it, to
prove that nothing, least of all a token, follows a redirect.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson

MODES = (
    "redirect",  # 302/307 to another port
    "slow-headers",  # accepts, then sends the status line and headers a byte at a time, too slowly
    "silence",  # reads the request, never answers
    "reset",  # reads the request, then closes the connection
    "huge-body",  # a 201 whose body is far larger than any Graph answer
    "huge-headers",  # one header of 1 MB
    "gzip-unasked",  # a gzip-encoded 201 although the body was not asked for gzip... or was
    "informational",  # 100 Continue and 102 Processing before the 201
    "batch-duplicate-ids",  # a $batch answer that answers every item twice, differently
    "garbage-retry-after",  # 429 with Retry-After values no parser should trust
    "retry-after-zero",  # 429 with Retry-After: 0, forever
    "echo-authorization",  # 400 whose error message quotes our Authorization header back
    "malformed",  # not HTTP at all
)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Hostile:
    mode: str
    port: int = 0
    elsewhere_port: int = 0
    requests: list[Seen] = field(default_factory=list)
    elsewhere: list[Seen] = field(default_factory=list)
    posts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/beta"


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    return Seen(method, path, headers)


def _response(status: int, body: bytes, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> bytes:
    return _response(status, orjson.dumps(body), headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


GARBAGE_RETRY_AFTER = ("soon", "-5", "1e309", "NaN", "inf", "Thu, 99 Foo 2024", "0x10", "", "  ,  ,", "9" * 400)


class _Server:
    def __init__(self, hostile: Hostile) -> None:
        self.h = hostile
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                seen = await _read_request(reader)
                if seen is None:
                    return
                self.h.requests.append(seen)
                if seen.method != "POST":
                    writer.write(_json(200, {"value": []}))
                    await writer.drain()
                    continue
                self.h.posts += 1
                if not await self.answer(seen, writer):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()

    async def answer(self, seen: Seen, writer: asyncio.StreamWriter) -> bool:
        """Write the mode's answer; False when the connection must end."""
        mode, h = self.h.mode, self.h
        if mode == "redirect":
            status = 302 if h.posts % 2 else 307
            writer.write(_response(status, b"", {"Location": f"http://127.0.0.1:{h.elsewhere_port}{seen.path}"}))
        elif mode == "slow-headers":
            for byte in b"HTTP/1.1 201 Created\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
            return False
        elif mode == "silence":
            await asyncio.sleep(3600)
        elif mode == "reset":
            writer.transport.abort()
            return False
        elif mode == "huge-body":
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 104857600\r\n\r\n")
            chunk = b" " * 65536
            for _ in range(1600):
                writer.write(chunk)
                await writer.drain()
            return False
        elif mode == "huge-headers":
            padding = b"a" * (1024 * 1024)
            writer.write(b"HTTP/1.1 201 Created\r\nX-Padding: " + padding + b"\r\nContent-Length: 2\r\n\r\n{}")
        elif mode == "gzip-unasked":
            body = gzip.compress(orjson.dumps({"id": "assignment-gz"}))
            writer.write(_response(201, body, {"Content-Encoding": "gzip"}))
        elif mode == "informational":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n")
            writer.write(_json(201, {"id": "assignment-after-1xx"}))
        elif mode == "batch-duplicate-ids":
            if seen.path.endswith("/$batch"):
                answers = [{"id": str(n), "status": s} for n in range(20) for s in (201, 404)]
                writer.write(_json(200, {"responses": answers}))
            else:
                writer.write(_json(201, {"id": "x"}))
        elif mode == "garbage-retry-after":
            value = GARBAGE_RETRY_AFTER[h.posts % len(GARBAGE_RETRY_AFTER)]
            writer.write(_error(429, "TooManyRequests", "slow down", {"Retry-After": value}))
        elif mode == "retry-after-zero":
            writer.write(_error(429, "TooManyRequests", "slow down", {"Retry-After": "0"}))
        elif mode == "echo-authorization":
            echoed = f"Invalid request header Authorization: {seen.headers.get('authorization', '')}"
            writer.write(_error(400, "BadRequest", echoed))
        elif mode == "malformed":
            writer.write(b"SMTP ready\r\n\r\n\x00\x01garbage")
            return False
        else:
            raise AssertionError(f"unknown mode {mode}")
        await writer.drain()
        return True

    async def elsewhere(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = await _read_request(reader)
        if seen is not None:
            self.h.elsewhere.append(seen)
            writer.write(_json(201, {"id": "stolen"}))
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


@contextmanager
def hostile_server(mode: str) -> Iterator[Hostile]:
    """A running hostile server (and its redirect target) on 127.0.0.1, served from a background thread."""
    assert mode in MODES, mode
    hostile = Hostile(mode)
    loop = asyncio.new_event_loop()
    server = _Server(hostile)
    ready = threading.Event()
    servers: list[asyncio.base_events.Server] = []

    async def start() -> None:
        main = await asyncio.start_server(server.handle, "127.0.0.1", 0, limit=2**20)
        other = await asyncio.start_server(server.elsewhere, "127.0.0.1", 0)
        servers.extend([main, other])
        hostile.port = main.sockets[0].getsockname()[1]
        hostile.elsewhere_port = other.sockets[0].getsockname()[1]

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        for s in servers:
            s.close()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield hostile
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
