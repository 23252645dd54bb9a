"""Pure tests for the value parsers (durations, rates, Graph URL) and Settings validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bulk_assign.config import (
    DEFAULT_GRAPH_URL,
    Rate,
    Settings,
    check_graph_url,
    is_loopback,
    parse_duration,
    rate_warning,
)
from bulk_assign.errors import UsageError
from bulk_assign.models import AssignmentTarget

G = "0f8fad5b-d9cb-469f-a165-70867728950e"
TARGET = AssignmentTarget.parse(f"group:{G}")


# ------------------------------------------------------------------------------------------------ durations
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("1m", 60.0),
        ("6h", 21600.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("  20s  ", 20.0),
        ("20 s", 20.0),
        ("1M", 60.0),
        ("20S", 20.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_default_unit() -> None:
    assert parse_duration("5", default_unit="m") == 300.0
    assert parse_duration("5s", default_unit="m") == 5.0
    assert parse_duration("250", default_unit="ms") == pytest.approx(0.25)


@pytest.mark.parametrize("text", ["", "   ", "s", "m5", "-5s", "5x", "5 sec", "1.s", ".5s", "1h-30m", "5s!", "five"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_parse_duration_unit_scale(n: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * scale)
    assert parse_duration(f"{n}{unit.upper()}") == pytest.approx(n * scale)


# ------------------------------------------------------------------------------------------------ rates
@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("100/20s", 100, 20.0),
        ("200/1m", 200, 60.0),
        ("5/1s", 5, 1.0),
        (" 7 / 2s ", 7, 2.0),
        ("1000/250ms", 1000, 0.25),
        ("3/1h30m", 3, 5400.0),
    ],
)
def test_rate_parse(text: str, count: int, period: float) -> None:
    rate = Rate.parse(text)
    assert rate == Rate(count, period)
    assert rate.per_second == pytest.approx(count / period)


@pytest.mark.parametrize(("text", "suggestion"), [("100", "100/20s"), ("5/1", "5/1s"), (" 7 / 2 ", "7/2s"),
                                                    ("5/0", "5/0s")])
def test_rate_needs_its_unit_of_time(text: str, suggestion: str) -> None:
    """Hardening #11: ``--rate 100`` meant 100 per second, 20 times Intune's limit."""
    with pytest.raises(ValueError, match=f"needs its unit of time, e.g. {suggestion}"):
        Rate.parse(text)


@pytest.mark.parametrize("text", ["15", "0.5", "1h 30"])
def test_parse_duration_needs_a_unit(text: str) -> None:
    with pytest.raises(ValueError, match="needs a unit of time"):
        parse_duration(text)


def test_rate_above_intune_budget_warns_towards_a_real_tenant_only() -> None:
    assert rate_warning(Rate(100, 20.0), DEFAULT_GRAPH_URL) is None
    assert rate_warning(Rate(1000, 1.0), "http://127.0.0.1:8080/beta") is None
    warning = rate_warning(Rate(100, 1.0), DEFAULT_GRAPH_URL)
    assert warning is not None and "20x Intune's documented budget of 100/20s" in warning


def test_rate_parse_passes_a_rate_through() -> None:
    rate = Rate(3, 4.0)
    assert Rate.parse(rate) is rate


@pytest.mark.parametrize("text", ["", "abc", "100/", "/20s", "1.5/1s", "100/20x", "100/20s/3", "x/1s"])
def test_rate_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate; write N/T"):
        Rate.parse(text)


@pytest.mark.parametrize("text", ["0/20s", "-1/20s", "5/0s", "5/0ms"])
def test_rate_parse_rejects_non_positive(text: str) -> None:
    with pytest.raises(ValueError, match="must both be positive"):
        Rate.parse(text)


def test_rate_str() -> None:
    assert str(Rate(100, 20.0)) == "100/20s"
    assert str(Rate(200, 60.0)) == "200/60s"
    assert str(Rate(5, 0.25)) == "5/0.25s"


@given(count=st.integers(1, 10**6), period=st.integers(1, 86400))
def test_rate_str_round_trips_for_whole_second_periods(count: int, period: int) -> None:
    rate = Rate(count, float(period))
    assert Rate.parse(str(rate)) == rate


def test_rate_is_frozen() -> None:
    rate = Rate(1, 1.0)
    with pytest.raises(AttributeError):
        rate.count = 2  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ Graph URL
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://graph.microsoft.com/beta", "https://graph.microsoft.com/beta"),
        ("https://graph.microsoft.com/beta/", "https://graph.microsoft.com/beta"),
        ("  https://graph.microsoft.us/beta/  ", "https://graph.microsoft.us/beta"),
        ("https://proxy.example:8443/graph/beta", "https://proxy.example:8443/graph/beta"),
        ("http://127.0.0.1:8080/beta", "http://127.0.0.1:8080/beta"),
        ("http://127.9.9.9/beta", "http://127.9.9.9/beta"),
        ("http://localhost:1234/beta/", "http://localhost:1234/beta"),
        ("http://LOCALHOST:1234/beta", "http://LOCALHOST:1234/beta"),
        ("http://[::1]:8000/beta", "http://[::1]:8000/beta"),
    ],
)
def test_check_graph_url_accepts(url: str, expected: str) -> None:
    assert check_graph_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://graph.microsoft.com/beta",
        "http://10.0.0.1/beta",
        "http://0.0.0.0:8080/beta",
        "http://localhost.evil.example/beta",
        "http://127.0.0.1.nip.io/beta",
        "http://[::2]/beta",
    ],
)
def test_check_graph_url_refuses_plain_http_off_loopback(url: str) -> None:
    with pytest.raises(ValueError, match=r"plain http:// is only allowed on loopback"):
        check_graph_url(url)


@pytest.mark.parametrize(
    "url", ["graph.microsoft.com/beta", "ftp://graph.microsoft.com/beta", "https://", "file:///etc/passwd", ""]
)
def test_check_graph_url_refuses_non_http(url: str) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        check_graph_url(url)


@pytest.mark.parametrize("url", ["https://graph.microsoft.com", "https://graph.microsoft.com/", "http://127.0.0.1:8/",
                                 "https://proxy.example/graph", "https://graph.microsoft.com/beta/x"])
def test_check_graph_url_needs_the_api_version(url: str) -> None:
    """Hardening #11: a root without /beta or /v1.0 sends every write to a path Graph does not have."""
    with pytest.raises(ValueError, match=r"must end in the API version, e\.g\. .*/beta \(or /v1\.0\)"):
        check_graph_url(url)


def test_check_graph_url_accepts_v1() -> None:
    assert check_graph_url("https://graph.microsoft.com/v1.0/") == "https://graph.microsoft.com/v1.0"


@pytest.mark.parametrize("url", ["https://graph.microsoft.com/beta?x=1", "https://graph.microsoft.com/beta#frag"])
def test_check_graph_url_refuses_query_and_fragment(url: str) -> None:
    with pytest.raises(ValueError, match="takes no query or fragment"):
        check_graph_url(url)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.255.0.3", True), ("::1", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("example.com", False), ("::", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# ------------------------------------------------------------------------------------------------ Settings
def test_settings_defaults() -> None:
    s = Settings.build(target=TARGET)
    assert s.graph_url == DEFAULT_GRAPH_URL == "https://graph.microsoft.com/beta"
    assert s.concurrency == 8
    assert s.rate == Rate(100, 20.0)
    assert s.max_attempts == 8
    assert s.limit is None
    assert s.dry_run is False
    assert s.verify is True


def test_read_before_write_is_the_default_and_the_read_budget_follows_the_write_budget() -> None:
    s = Settings.build(target=TARGET)
    assert s.read_before_write is True and s.read_rate == Rate(500, 20.0)  # 5x 100/20s: with the writes,
    # 600 of Intune's 1,000 requests per 20 s
    fast = Settings.build(target=TARGET, rate="1000/1s")  # a rehearsal against the emulator: reads scale too
    assert fast.read_rate == Rate(5000, 1.0)
    assert Settings.build(target=TARGET, rate="1000/1s", read_rate="30/1m").read_rate == Rate(30, 60.0)
    assert Settings.build(target=TARGET, rate="1000/1s", read_rate=None).read_rate == Rate(5000, 1.0)
    assert Settings.build(target=TARGET, read_before_write=False).read_before_write is False
    with pytest.raises(UsageError, match="rate: 'fast' is not a rate"):  # a bad rate is reported once, as itself
        Settings.build(target=TARGET, rate="fast")


def test_settings_parse_rate_strings_and_urls() -> None:
    s = Settings.build(target=TARGET, rate="50/10s", read_rate="300/1m", graph_url="http://127.0.0.1:9/beta/")
    assert s.rate == Rate(50, 10.0)
    assert s.read_rate == Rate(300, 60.0)
    assert s.graph_url == "http://127.0.0.1:9/beta"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"concurrency": 513}, "concurrency: Input should be less than or equal to 512"),
        ({"max_attempts": 0}, "max_attempts:"),
        ({"limit": 0}, "limit:"),
        ({"rate": "fast"}, "rate: 'fast' is not a rate; write N/T"),
        ({"rate": "0/1s"}, "rate: '0/1s': the count and the period must both be positive"),
        ({"graph_url": "http://graph.microsoft.com/beta"}, "graph_url: 'http://graph.microsoft.com/beta': plain"),
        ({"max_retry_after": 0}, "max_retry_after:"),
        ({"unknown_option": 1}, "unknown_option: Extra inputs are not permitted"),
        ({"ca_bundle": Path("/nonexistent/ca.pem")}, "ca_bundle: /nonexistent/ca.pem: no such CA bundle file"),
    ],
)
def test_settings_build_turns_validation_errors_into_usage_error(values: dict[str, object], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.build(target=TARGET, **values)
    assert fragment in str(info.value)
    assert "Value error, " not in str(info.value)
    assert info.value.exit_code == 2


def test_settings_build_reports_every_problem_at_once() -> None:
    with pytest.raises(UsageError) as info:
        Settings.build(target=TARGET, concurrency=0, rate="nope")
    text = str(info.value)
    assert "concurrency:" in text and "rate:" in text and "; " in text


def test_a_run_needs_a_target_but_read_only_settings_do_not() -> None:
    from bulk_assign import BulkAssigner

    settings = Settings.build()  # status and inventory read only: no target
    assert settings.target is None and settings.public_dict()["target"] is None
    with pytest.raises(UsageError, match="nothing to do"):
        BulkAssigner(settings, token_provider="t")


def test_settings_accepts_an_existing_ca_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.build(target=TARGET, ca_bundle=bundle).ca_bundle == bundle


def test_settings_are_frozen() -> None:
    s = Settings.build(target=TARGET)
    with pytest.raises(ValidationError):
        s.concurrency = 9  # type: ignore[misc]


def test_public_dict_describes_target_and_rate() -> None:
    data = Settings.build(target=TARGET, rate="10/5s").public_dict()
    assert data["target"] == f"group:{G}"
    assert data["rate"] == "10/5s"
    assert data["graph_url"] == DEFAULT_GRAPH_URL
    assert data["concurrency"] == 8
