"""The shared HTTP session: proxies from the environment, a private CA, no thread hop per request."""

from __future__ import annotations

import pytest
import trustme

from bulk_assign import AssignmentTarget, Settings
from bulk_assign.engine import env_proxy, open_session


def test_env_proxy_follows_https_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://graph.microsoft.com/beta") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    assert env_proxy("https://graph.microsoft.com/beta") == "http://proxy.corp.example:3128"
    assert env_proxy("http://127.0.0.1:8080/beta") is None  # the emulator is never proxied
    monkeypatch.setenv("NO_PROXY", "graph.microsoft.com")
    assert env_proxy("https://graph.microsoft.com/beta") is None
    assert env_proxy("https://graph.microsoft.us/beta") == "http://proxy.corp.example:3128"


async def test_session_uses_the_proxy_once_and_does_not_trust_env_per_request(monkeypatch: pytest.MonkeyPatch,
                                                                               tmp_path: object) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = Settings(target=AssignmentTarget.parse("all-devices"))
    session = open_session(settings)
    try:
        assert str(session._default_proxy) == "http://proxy.corp.example:3128"
        assert session.trust_env is False
    finally:
        await session.close()


async def test_ca_bundle_becomes_the_sessions_ssl_context(tmp_path: pytest.TempPathFactory) -> None:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"  # type: ignore[operator]
    ca.cert_pem.write_to_path(str(path))
    settings = Settings(target=AssignmentTarget.parse("all-devices"), ca_bundle=path)
    session = open_session(settings)
    try:
        context = session.connector._ssl  # type: ignore[union-attr]
        assert any(c.get("subject") for c in context.get_ca_certs())
    finally:
        await session.close()
