"""A small fake of the Entra ID endpoints MSAL talks to, over real HTTPS on 127.0.0.1.

It serves OIDC discovery, the device code endpoint and the token endpoint (device_code, refresh_token,
client_credentials with a secret or a certificate assertion), issues JWT-shaped tokens with a configurable
lifetime, counts every token-endpoint hit per grant type, and can revoke refresh tokens. It runs on its
own event loop in a background thread, so MSAL's blocking calls (from ``asyncio.to_thread`` in the test's
loop, or from a subprocess) never wait on the loop that is waiting for them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import ssl
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An unsigned-looking JWT (nobody checks signatures here): header.payload.signature."""
    head = header or {"typ": "JWT", "alg": "RS256", "kid": "fake"}
    return ".".join(
        (b64url(json.dumps(head).encode()), b64url(json.dumps(claims).encode()), b64url(uuid.uuid4().bytes))
    )


def jwt_claims(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


def jwt_header(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[0])))


@dataclass
class FakeUser:
    oid: str = "8d3c3a7e-1111-4b0e-9c1e-000000000001"
    username: str = "ops@contoso.example"


@dataclass
class FakeEntra:
    """Configure, ``start()``, point MSAL at ``authority`` with ``ca_path`` as the CA bundle."""

    ca: trustme.CA
    workdir: Path
    tenant: str = "72f988bf-0000-4000-8000-00000000aaaa"
    expires_in: int = 3600
    pending_polls: int = 0  # authorization_pending answers before the device code is "approved"
    short_exp_once: float | None = None  # next access token's exp claim is this close, whatever expires_in says
    graph_resource: str = "https://graph.microsoft.com"
    user: FakeUser = field(default_factory=FakeUser)
    client_secrets: dict[str, str] = field(default_factory=dict)  # client_id -> secret
    client_thumbprints: dict[str, str] = field(default_factory=dict)  # client_id -> SHA-1 hex

    hits: Counter[str] = field(default_factory=Counter)
    scopes_requested: list[str] = field(default_factory=list)
    assertion_headers: list[dict[str, Any]] = field(default_factory=list)
    issued_access_tokens: list[str] = field(default_factory=list)
    issued_refresh_tokens: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> client id
        self._device_codes: dict[str, tuple[int, str]] = {}  # device code -> (polls left, scope)
        self._auth_codes: dict[str, tuple[str, str]] = {}  # authorization code -> (scope, nonce): browser flow
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.ca_path = self.workdir / "fake-entra-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant}"

    def start(self) -> FakeEntra:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-entra", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", self._devicecode)
        app.router.add_get("/{tenant}/oauth2/v2.0/authorize", self._authorize)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(ssl_context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def __enter__(self) -> FakeEntra:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    # -- controls --------------------------------------------------------------------------------------

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh_tokens.clear()

    @property
    def token_hits(self) -> int:
        return sum(v for k, v in self.hits.items() if k.startswith("token:"))

    def secrets(self) -> list[str]:
        """Everything issued that must never show up in output."""
        return [*self.issued_access_tokens, *self.issued_refresh_tokens]

    # -- endpoints -------------------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        tenant = request.match_info["tenant"]
        root = f"{self.base_url}/{tenant}"
        return web.json_response(
            {
                "issuer": f"{self.base_url}/{self.tenant}/v2.0",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "NA",
            }
        )

    async def _devicecode(self, request: web.Request) -> web.Response:
        self.hits["devicecode"] += 1
        form = await request.post()
        self.scopes_requested.append(str(form.get("scope", "")))
        code = f"dc-{uuid.uuid4()}"
        self._device_codes[code] = (self.pending_polls, str(form.get("scope", "")))
        user_code = "FAKE" + str(next(self._seq)).zfill(4)
        return web.json_response(
            {
                "device_code": code,
                "user_code": user_code,
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 60,
                "interval": 1,
                "message": f"To sign in, open https://microsoft.com/devicelogin and enter the code {user_code}.",
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        """The 'browser' signs in at once: the code comes back as JSON for fake_browser() to post on."""
        self.hits["authorize"] += 1
        self.scopes_requested.append(request.query.get("scope", ""))
        code = f"ac-{uuid.uuid4()}"
        self._auth_codes[code] = (request.query.get("scope", ""), request.query.get("nonce", ""))
        return web.json_response({"code": code})

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        grant = form.get("grant_type", "")
        short = {DEVICE_GRANT: "device_code"}.get(grant, grant)
        self.hits[f"token:{short}"] += 1
        client_id = form.get("client_id", "")
        if grant == DEVICE_GRANT:
            pending = self._device_codes.get(form.get("device_code", ""))
            if pending is None:
                return self._error(400, "expired_token", "AADSTS70019: the device code expired.")
            left, scope = pending
            if left > 0:
                self._device_codes[form["device_code"]] = (left - 1, scope)
                return self._error(400, "authorization_pending", "AADSTS70016: pending.")
            del self._device_codes[form["device_code"]]
            return web.json_response(self._user_tokens(client_id, scope))
        if grant == "authorization_code":
            issued = self._auth_codes.pop(form.get("code", ""), None)
            if issued is None or not form.get("code_verifier"):
                return self._error(400, "invalid_grant", "AADSTS70000: bad authorization code.")
            return web.json_response(self._user_tokens(client_id, issued[0], nonce=issued[1]))
        if grant == "refresh_token":
            with self._lock:
                owner = self._refresh_tokens.get(form.get("refresh_token", ""))
            if owner is None or owner != client_id:
                return self._error(
                    400, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked."
                )
            return web.json_response(self._user_tokens(client_id, form.get("scope", "")))
        if grant == "client_credentials":
            problem = self._check_client(client_id, form)
            if problem:
                return self._error(401, "invalid_client", problem)
            return web.json_response(self._app_tokens(client_id, form.get("scope", "")))
        return self._error(400, "unsupported_grant_type", f"AADSTS70003: {grant!r}")

    def _check_client(self, client_id: str, form: dict[str, str]) -> str | None:
        if "client_assertion" in form:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return "AADSTS700024: bad client_assertion_type"
            header = jwt_header(form["client_assertion"])
            self.assertion_headers.append(header)
            expected = self.client_thumbprints.get(client_id)
            sent = str(header.get("x5t", "")).rstrip("=")  # MSAL pads it; Entra accepts either
            if expected is None or sent != b64url(bytes.fromhex(expected)):
                return (
                    "AADSTS700027: the certificate with identifier used to sign the client assertion is not registered"
                )
            claims = jwt_claims(form["client_assertion"])
            if claims.get("iss") != client_id or claims.get("sub") != client_id:
                return "AADSTS700023: bad assertion issuer/subject"
            return None
        if self.client_secrets.get(client_id) is None or form.get("client_secret") != self.client_secrets[client_id]:
            return "AADSTS7000215: Invalid client secret provided."
        return None

    @staticmethod
    def _error(status: int, error: str, description: str) -> web.Response:
        return web.json_response(
            {"error": error, "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}", "error_codes": [1]},
            status=status,
        )

    def _access_token(self, client_id: str, extra: dict[str, Any]) -> str:
        now = int(time.time())
        exp = now + self.expires_in
        if self.short_exp_once is not None:  # Graph will reject it long before the client expects
            exp, self.short_exp_once = now + int(self.short_exp_once), None
        token = make_jwt(
            {
                "aud": self.graph_resource,
                "iss": f"https://sts.windows.net/{self.tenant}/",
                "iat": now,
                "nbf": now,
                "exp": exp,
                "appid": client_id,
                "tid": self.tenant,
                "uti": str(uuid.uuid4()),
                **extra,
            }
        )
        self.issued_access_tokens.append(token)
        return token

    def _user_tokens(self, client_id: str, scope: str, nonce: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        refresh = f"rt-{uuid.uuid4()}-{uuid.uuid4()}"
        with self._lock:
            self._refresh_tokens[refresh] = client_id
        self.issued_refresh_tokens.append(refresh)
        id_token = make_jwt(
            {
                "aud": client_id,
                "iss": f"{self.base_url}/{self.tenant}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "tid": self.tenant,
                "oid": self.user.oid,
                "sub": self.user.oid,
                "preferred_username": self.user.username,
                "name": "Ops Engineer",
                "ver": "2.0",
                **({"nonce": nonce} if nonce else {}),
            }
        )
        granted = " ".join(s for s in scope.split() if s.startswith("http")) or scope
        return {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": self._access_token(
                client_id,
                {
                    "oid": self.user.oid,
                    "preferred_username": self.user.username,
                    "scp": "DeviceManagementServiceConfig.ReadWrite.All",
                },
            ),
            "refresh_token": refresh,
            "id_token": id_token,
            "client_info": b64url(json.dumps({"uid": self.user.oid, "utid": self.tenant}).encode()),
        }

    def _app_tokens(self, client_id: str, scope: str) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": self._access_token(
                client_id, {"oid": str(uuid.uuid4()), "roles": ["DeviceManagementServiceConfig.ReadWrite.All"]}
            ),
        }


def sha1_thumbprint_of(cert_pem: bytes) -> str:
    """What Entra shows as the certificate's thumbprint: SHA-1 of its DER encoding, in hex."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest()


def make_certificate_pem(
    path: Path, *, days: int = 30, password: bytes | None = None, common_name: str = "bulk-assign test"
) -> bytes:
    """Write a PEM with a fresh RSA key and a self-signed certificate to ``path``; returns the cert PEM."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=abs(days) + 1) if days < 0 else now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(key_pem + cert_pem)
    return cert_pem


def fake_browser(url: str, ca_file: str) -> None:
    """What a person's browser would do: open the sign-in page, then post the code to MSAL's listener."""
    import ssl as _ssl
    import urllib.parse
    import urllib.request

    context = _ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, context=context, timeout=30) as reply:
        code = json.loads(reply.read())["code"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    body = urllib.parse.urlencode({"code": code, "state": query["state"][0]}).encode()
    with urllib.request.urlopen(query["redirect_uri"][0], data=body, timeout=30) as reply:
        reply.read()


if __name__ == "__main__":  # BROWSER="python tests/fake_entra.py %s" (CA file in FAKE_ENTRA_CA)
    import os
    import sys

    fake_browser(sys.argv[1], os.environ["FAKE_ENTRA_CA"])
