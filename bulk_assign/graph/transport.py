"""How requests reach Graph: one aiohttp ``ClientSession``, its failures typed by what they say about the request.

Failures are typed by what they say about the request, because that decides whether a POST may be sent
again. aiohttp's exceptions are translated here and nowhere else:

    ConnectionError
    ├── NotSent          no byte of the request left this machine: resending cannot duplicate anything
    │   │                (connect refused or timed out, DNS, TLS handshake, the proxy refusing CONNECT)
    │   └── CertificateFailed   the certificate did not verify: resending cannot help either
    └── ConnectionLost   the request may have arrived: read back before resending (a reset or disconnect
                         after writing, a truncated or malformed answer, an answer too large to read)
    TimeoutError         no whole answer in time: the request may have arrived, as for ConnectionLost
    ValueError           a request the transport refuses to send (a line break in a header, another origin)

A ``ServerDisconnectedError`` on a reused keep-alive connection is ``ConnectionLost`` too: the server may
have closed it as we wrote, and nothing here can prove that no byte of the request got out. When in
doubt, the engine reads back. ``graph.send`` turns these into ``Attempt``s.

Redirects are never followed: a 3xx is returned as the answer (and ``graph.operations`` reports it as a
permanent failure), so the bearer token only ever goes to the Graph URL the run was given.
"""

from __future__ import annotations

import logging
import re
import ssl
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ..config import is_loopback
from ..redact import redact

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("bulk_assign")

USER_AGENT = "bulk-assign/0.1"
MAX_BODY = 32 * 1024 * 1024  # Graph's answers are a few KB; anything this large is not an answer to us
KEEPALIVE_SECONDS = 15.0  # reuse an idle connection only this long: Graph's front ends drop idle ones, and a
# POST on a connection the server is closing at that moment ends in doubt (a read-back) instead of an answer
CONNECT_SECONDS = 30.0  # for the TCP and TLS handshake alone; the whole request has the run's timeout
SPARE_CONNECTIONS = 4  # beyond --concurrency: read-backs and the odd retry in flight next to the workers
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~/$]*")  # a path yarl would leave exactly as it is (no query, no %)


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]  # names looked up case-insensitively
    body: bytes


class NotSent(ConnectionError):
    """The request never left: the connection could not be made. Resending cannot duplicate anything."""


class CertificateFailed(NotSent):
    """The server's TLS certificate did not verify. Nothing was sent, and resending will not help: the
    same certificate will fail the same way (a TLS-inspecting proxy whose CA is not trusted, a wrong host)."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"the TLS certificate of {host} did not verify ({reason})")


class ConnectionLost(ConnectionError):
    """The connection failed after the request was written: it may have been carried out."""


class Transport(Protocol):
    """Sends one request to Graph and returns its answer; raises ``NotSent``, ``ConnectionLost`` or
    ``TimeoutError`` and nothing else for a failed exchange (``ValueError`` for a request it refuses).

    ``timeout`` bounds the whole exchange in seconds (None: the transport's own default).
    """

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response: ...

    async def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class AiohttpTransport:
    """The one ``Transport``: a ``ClientSession``, closed only if ``own``.

    ``origin`` (the Graph URL the run was given) makes every request for another scheme, host or port a
    ``ValueError`` before anything is sent: the token must never travel anywhere else. The engine passes it
    for its own session and for a caller's.

    Every caller of one run passes the same ``timeout`` (the run's ``request_timeout``), so the
    ``ClientTimeout`` for a value is built once and reused rather than once per request.
    """

    def __init__(self, session: aiohttp.ClientSession, *, own: bool, origin: str | None = None) -> None:
        self.session = session
        self._own = own
        self._closed = False
        self._origin = _origin_prefix(origin) if origin is not None else None
        # the origin as yarl writes it; None when that differs (a default port, an upper-case or IDN host)
        self._plain_origin = self._origin if self._origin is not None and str(URL(self._origin)) == self._origin \
            else None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {None: session.timeout}

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
    ) -> Response:
        _check(url, headers, self._origin)
        if self._closed or self.session.closed:
            raise NotSent("the HTTP session is closed")
        try:
            async with self.session.request(
                method,
                self._url(url),
                data=body,
                headers=headers,
                timeout=self._timeouts.get(timeout) or self._timeout(timeout),  # None: the session's own
                allow_redirects=False,
                raise_for_status=False,  # a caller's session may say True: a 4xx must stay an answer, classified
            ) as response:
                length = response.content_length
                if length is not None and length <= MAX_BODY and "Content-Encoding" not in response.headers:
                    raw = await response.read()
                else:  # no length, too long, or compressed (a small gzip can inflate without bound)
                    raw = await _read_capped(response, length)
                return Response(response.status, response.headers, raw)
        except aiohttp.ConnectionTimeoutError as exc:  # before it is a TimeoutError: no connection was made
            raise NotSent(describe(exc)) from exc
        except aiohttp.ClientConnectorCertificateError as exc:  # before ClientConnectorError, its base
            reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
            raise CertificateFailed(exc.host, reason) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS, or the proxy: nothing was sent
            raise NotSent(describe(exc)) from exc
        except aiohttp.ClientHttpProxyError as exc:  # the proxy refused CONNECT: nothing reached Graph
            raise NotSent(describe(exc)) from exc
        except TimeoutError:  # the whole exchange took too long (a TimeoutError is also an OSError: first)
            raise
        except aiohttp.InvalidURL as exc:
            raise ValueError(describe(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:  # a reset, a disconnect, a truncated or malformed answer
            raise ConnectionLost(describe(exc)) from exc

    def _url(self, url: str) -> str | URL:
        """``url`` as a ``yarl.URL`` built without re-encoding when it needs none (half the cost of parsing
        it in full, per request): the run's own origin followed by a path of plain characters only, and no
        dot segment (which only a full parse would resolve). Anything else goes to aiohttp as text."""
        origin = self._plain_origin
        if origin is not None and _PLAIN_PATH.fullmatch(url, len(origin)) and "/." not in url[len(origin) - 1:] \
                and url.startswith(origin):
            return URL(url, encoded=True)
        return url

    def _timeout(self, seconds: float | None) -> aiohttp.ClientTimeout:
        assert seconds is not None  # None is in the cache from the start
        timeout = self._timeouts[seconds] = _client_timeout(seconds)
        return timeout

    async def close(self) -> None:
        self._closed = True
        if self._own:
            await self.session.close()

    @property
    def closed(self) -> bool:
        """Closed for the engine (a session the caller owns stays open for the caller)."""
        return self._closed


async def _read_capped(response: aiohttp.ClientResponse, length: int | None) -> bytes:
    """The body, or ``ConnectionLost`` once it passes ``MAX_BODY`` (the connection is dropped, not drained)."""
    parts: list[bytes] = []
    size = length if length is not None and "Content-Encoding" not in response.headers else 0
    if size <= MAX_BODY:
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > MAX_BODY:
                break
            parts.append(chunk)
        else:
            return b"".join(parts)
    response.close()
    raise ConnectionLost(f"the answer (HTTP {response.status}) is larger than {MAX_BODY:,} bytes: not read")


def _origin_prefix(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    return f"{parts.scheme}://{parts.netloc}/"


def _check(url: str, headers: Mapping[str, str], origin: str | None) -> None:
    """Refuse what could split the request or send it elsewhere, before a connection is touched.

    A CR or LF in a header (a token pasted with a newline, say) or in the URL would let it write headers
    of its own; aiohttp refuses some of these too, but only once it holds a connection, and percent-encodes
    others in the path. Checked here, a few ``in`` tests per request, so the refusal is the same everywhere.
    """
    if origin is not None and not url.startswith(origin):
        raise ValueError("the transport only sends to the Graph URL's own origin")
    if "\r" in url or "\n" in url or " " in url:
        raise ValueError("refusing a request with a line break or space in its URL")
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError("refusing a request with a line break in a header")


def describe(exc: BaseException) -> str:
    """A short message naming the failure; aiohttp's texts never include request headers, and a URL's user
    and password (a proxy's, say) go through the one redaction every stored message gets."""
    text = redact(str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_session(
    *,
    limit: int,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | None = None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> aiohttp.ClientSession:
    """The engine's session, tuned for many small requests to one origin.

    * One ``TCPConnector`` of ``limit`` connections (the workers plus a few for read-backs): more would
      only be idle sockets; fewer would queue workers behind each other.
    * ``keepalive`` below the idle time after which Graph's front ends drop a connection, so a POST rarely
      goes out on a connection the server is closing (that answer would be a doubt and a read-back).
    * A ``DummyCookieJar``: Graph sets no cookies we need, and the default jar filters every request and
      every answer through cookie logic.
    * One ``ClientTimeout`` for the session (``total`` = the run's request timeout, ``sock_connect`` for the
      handshake), built once.
    * ``Accept-Encoding: gzip`` with ``auto_decompress`` (aiohttp's default also offers deflate and, with
      the optional packages, br and zstd; gzip is what Graph sends and what is always available).
    * ``proxy`` resolved once by the caller (``env_proxy``) instead of ``trust_env=True``, which looks up
      proxy settings and netrc in a worker thread on every request.
    * ``ssl_context``: the one context for every connection (``--ca-bundle``); None: aiohttp's default,
      which verifies against the system's CAs.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,  # one origin: ``limit`` is the bound
        keepalive_timeout=keepalive,
        ttl_dns_cache=300,  # the default 10 s would resolve Graph's name again every few seconds
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=_client_timeout(timeout),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"},
        auto_decompress=True,
        proxy=proxy,
        trust_env=False,
    )


def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    """``total`` for the whole exchange; the handshake alone is cut shorter, strictly, so that a server that
    never completes it is a ``NotSent`` (safe to resend) rather than a timeout that sends us to a read-back."""
    return aiohttp.ClientTimeout(total=total, sock_connect=min(CONNECT_SECONDS, total / 2))


def open_transport(settings: Settings) -> AiohttpTransport:
    """How this run reaches Graph: the engine's own session (see ``open_session``), through the proxy the
    environment sets for the Graph URL, if any, and trusting ``--ca-bundle`` if given."""
    ssl_context = ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else None
    proxy = env_proxy(settings.graph_url)
    if proxy is not None:
        log.info("Graph is reached through the proxy %s", redact_url(proxy))
    # read-before-write (the seed call's default) keeps as many reads in flight as writes (pipeline/readahead.py):
    # with connections for the writers only, reads and writes would queue for each other's sockets
    readers = settings.concurrency if settings.read_before_write and settings.target is not None else 0
    session = open_session(limit=settings.concurrency + readers + SPARE_CONNECTIONS,
                           timeout=settings.request_timeout, ssl_context=ssl_context, proxy=proxy)
    return AiohttpTransport(session, own=True, origin=settings.graph_url)


def redact_url(url: str) -> str:
    """A URL without its user and password (proxy URLs may carry credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``; ``NO_PROXY`` honoured).

    Loopback (the emulator) is never proxied. Looked up once per run, see ``open_session``.
    """
    parts = urlsplit(url)
    if not parts.hostname or is_loopback(parts.hostname) or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)
