"""hardening #3: one redaction for every message that is stored or printed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_assign import redact
from bulk_assign.redact import RedactingFilter

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzY3AiOiJ4In0.s1gnature-Zq9"
SECRET = "cl13nt~S3cret/with+odd=chars"


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


def test_registered_secrets_are_masked_plain_and_url_encoded() -> None:
    redact.register(TOKEN)
    redact.register(SECRET)
    for text in (f"token={TOKEN}", f"client_secret={quote(SECRET, safe='')}&x=1", f"s={quote_plus(SECRET)}",
                 f"{SECRET} and {TOKEN}"):
        clean = redact.redact(text)
        assert TOKEN not in clean and SECRET not in clean
        assert quote(SECRET, safe="") not in clean and quote_plus(SECRET) not in clean
        assert "<redacted>" in clean


def test_url_credentials_are_stripped_whatever_the_scheme() -> None:
    text = "Cannot connect to host via proxy http://ops:Pr0xyPa55@proxy.corp:3128 [refused]; socks5://u:p@h:1"
    clean = redact.redact(text)
    assert "Pr0xyPa55" not in clean and "ops:" not in clean and "u:p@" not in clean
    assert "http://<redacted>@proxy.corp:3128" in clean


@pytest.mark.parametrize("echo", [
    '{"error": {"message": "bad header Authorization: Bearer abc.def.ghi"}}',
    "authorization=Bearer abc.def.ghi",
    "'Authorization': 'Bearer abc.def.ghi'",
    "Proxy-Authorization: Basic dXNlcjpwYXNz",
    "sent bearer abc.def.ghi to the server",
])
def test_authorization_values_a_server_echoes_are_masked(echo: str) -> None:
    clean = redact.redact(echo)
    assert "abc.def.ghi" not in clean and "dXNlcjpwYXNz" not in clean


def test_ordinary_text_is_left_alone() -> None:
    redact.register("abc")  # too short to be a secret: would mask ordinary words
    text = "Authorization failed for device 0b9c3c2e-5a4e-4a35-9d7e-1f2a3b4c5d6e (abc)"
    assert redact.redact(text) == text


def test_the_log_filter_masks_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    redact.register(TOKEN)
    logger = logging.getLogger("bulk_assign.test-redact")
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("proxy %s said %s", "http://a:b@h:1", TOKEN)
        try:
            raise RuntimeError(f"boom {TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert seen and all(TOKEN not in line and "a:b@" not in line for line in seen)


@given(st.text(max_size=300))
def test_redact_never_raises_and_never_keeps_a_registered_secret(text: str) -> None:
    redact.register(SECRET)
    clean = redact.redact(text + SECRET + text)
    assert SECRET not in clean
