"""Pure tests for the Graph call's building blocks: paths, headers, error parsing, response classification."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from bulk_assign.graph.operations import (
    DEVICE_PATH,
    AssignProfile,
    assignments_path,
    checked_guid,
    classify,
    headers,
    new_request_id,
    parse_error,
)
from bulk_assign.graph.outcome import Kind
from bulk_assign.models import AssignmentTarget, assignment_body

G = "0f8fad5b-d9cb-469f-a165-70867728950e"
DEVICE = "9b2d5a6e-1c3f-4e8a-b7d0-2f4e6a8c0b1d"


def graph_error(code: str, message: str, request_id: str = "r-1") -> bytes:
    return orjson.dumps(
        {"error": {"code": code, "message": message,
                   "innerError": {"date": "2024-01-01T00:00:00", "request-id": request_id}}}
    )


INTUNE_MESSAGE = json.dumps(
    {
        "_version": 3,
        "Message": "An internal server error has occurred - Operation ID (for customer support): "
        "00000000-0000-0000-0000-000000000000 - Activity ID: 1111 - Url: https://fef.msub02.manage.microsoft.com/x",
        "CustomApiErrorPhrase": "",
        "RetryAfter": None,
        "ErrorSourceService": "",
        "HttpHeaders": "{}",
    }
)


# ------------------------------------------------------------------------------------------------ paths
def test_assign_profile_path_and_body() -> None:
    target = AssignmentTarget.parse(f"group:{G}")
    op = AssignProfile(target)
    assert op.name == "assign-profile"
    assert op.path(DEVICE) == (
        f"/deviceManagement/windowsAutopilotDeviceIdentities/{DEVICE}/deploymentProfile/assignments"
    )
    assert op.path(DEVICE) == assignments_path(DEVICE)
    assert orjson.loads(op.body(DEVICE)) == assignment_body(target)
    assert op.body(DEVICE) is op.body(G)  # built once and reused


@pytest.mark.parametrize(
    "device_id",
    [
        "../../users",
        DEVICE.upper(),  # a GUID, but not normalised
        "{" + DEVICE + "}",
        " " + DEVICE,
        DEVICE + "/../../users",
        DEVICE + "?$select=id",
        "",
        "me",
    ],
)
def test_path_refuses_anything_but_a_normalised_guid(device_id: str) -> None:
    op = AssignProfile(AssignmentTarget.parse("all-devices"))
    with pytest.raises(ValueError, match="not a normalised GUID"):
        op.path(device_id)
    with pytest.raises(ValueError, match="not a normalised GUID"):
        assignments_path(device_id)
    with pytest.raises(ValueError, match="not a normalised GUID"):
        checked_guid(device_id)


@given(text=st.text(max_size=50))
def test_paths_only_ever_contain_a_guid_segment(text: str) -> None:
    try:
        path = assignments_path(text)
    except ValueError:
        return
    segment = path.removeprefix(DEVICE_PATH).removesuffix("/deploymentProfile/assignments")
    assert segment == text
    assert len(segment) == 36 and set(segment) <= set("0123456789abcdef-")


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"id": "a-1", "target": {}}, "a-1"), ({"id": 5}, None), ({}, None), (None, None), ([{"id": "x"}], None)],
)
def test_success_id(body: object, expected: str | None) -> None:
    assert AssignProfile(AssignmentTarget.parse("all-devices")).success_id(body) == expected


# ------------------------------------------------------------------------------------------------ headers
def test_headers_with_json_body() -> None:
    assert headers("tok", "crid-1", json_body=True) == {
        "Authorization": "Bearer tok",
        "client-request-id": "crid-1",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }


def test_headers_without_body_have_no_content_type() -> None:
    out = headers("tok", "crid-2", json_body=False)
    assert "Content-Type" not in out
    assert out["Authorization"] == "Bearer tok"
    assert out["client-request-id"] == "crid-2"


def test_request_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert {text[19] for text in ids} == set("89ab")  # every variant digit occurs, none other


# ------------------------------------------------------------------------------------------------ classify
@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_success(status: int) -> None:
    attempt = classify(status, {"request-id": "rq"}, b'{"id": "assignment-1"}')
    assert attempt.kind is Kind.SUCCESS
    assert attempt.http_status == status
    assert attempt.request_id == "rq"
    assert attempt.body == {"id": "assignment-1"}
    assert attempt.error_code is None
    assert attempt.maybe_committed is False


@pytest.mark.parametrize("raw", [b"", b"not json", b"{truncated", b"\xff\xfe"])
def test_malformed_2xx_body_is_still_success(raw: bytes) -> None:
    attempt = classify(201, {}, raw)
    assert attempt.kind is Kind.SUCCESS
    assert attempt.body is None
    assert attempt.request_id is None


def test_429_is_throttled_with_retry_after() -> None:
    hdrs = CIMultiDict({"retry-after": "2.128", "Request-Id": "rq-429"})
    attempt = classify(429, hdrs, graph_error("TooManyRequests", "Too many requests"))
    assert attempt.kind is Kind.THROTTLED
    assert attempt.http_status == 429
    assert attempt.retry_after == pytest.approx(2.128)
    assert attempt.error_code == "TooManyRequests"
    assert attempt.error_message == "Too many requests"
    assert attempt.request_id == "rq-429"
    assert attempt.maybe_committed is False


def test_429_without_retry_after() -> None:
    attempt = classify(429, {}, b"")
    assert attempt.kind is Kind.THROTTLED
    assert attempt.retry_after is None
    assert attempt.error_code == "HTTP429"


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_statuses_are_possibly_committed(status: int) -> None:
    attempt = classify(status, {"Retry-After": "30,120"}, graph_error("ServiceUnavailable", "try later"))
    assert attempt.kind is Kind.TRANSIENT
    assert attempt.maybe_committed is True
    assert attempt.retry_after == 120.0
    assert attempt.error_code == "ServiceUnavailable"


def test_401_is_auth() -> None:
    attempt = classify(401, {}, graph_error("InvalidAuthenticationToken", "Access token has expired."))
    assert attempt.kind is Kind.AUTH
    assert attempt.error_code == "InvalidAuthenticationToken"
    assert attempt.maybe_committed is False


@pytest.mark.parametrize("status", [400, 403, 404, 409, 405, 418, 501])
def test_other_statuses_are_permanent(status: int) -> None:
    attempt = classify(status, {"Retry-After": "5"}, graph_error("BadRequest", "nope"))
    assert attempt.kind is Kind.PERMANENT
    assert attempt.http_status == status
    assert attempt.maybe_committed is False
    assert attempt.error_code == "BadRequest"


@pytest.mark.parametrize(
    ("status", "location", "named"),
    [
        (302, "https://login.evil.example:8443/path?token=abc", "to login.evil.example:8443"),
        (307, "http://127.0.0.1:9/beta/x", "to 127.0.0.1:9"),
        (301, "https://graph.microsoft.com/v1.0/x", "to graph.microsoft.com"),
        (308, "/beta/elsewhere", "to another path on the same host"),
        (303, None, "without a Location"),
        (302, "http://[::1", "to an unreadable Location"),
    ],
)
def test_a_redirect_is_permanent_and_names_only_the_host(status: int, location: str | None, named: str) -> None:
    headers = {"Location": location} if location is not None else {}
    attempt = classify(status, CIMultiDict(headers), graph_error("BadRequest", "nope"))
    assert (attempt.kind, attempt.http_status, attempt.error_code) == (Kind.PERMANENT, status, "Redirect")
    assert attempt.maybe_committed is False
    assert attempt.error_message is not None and named in attempt.error_message
    assert "never followed" in attempt.error_message
    assert all(s not in attempt.error_message for s in ("token=abc", "/path", "elsewhere", "/beta"))


@given(status=st.integers(100, 599))
def test_classify_covers_every_status(status: int) -> None:
    attempt = classify(status, {}, b"")
    expected = (
        Kind.SUCCESS if 200 <= status < 300
        else Kind.THROTTLED if status == 429
        else Kind.TRANSIENT if status in (408, 500, 502, 503, 504)
        else Kind.AUTH if status == 401
        else Kind.PERMANENT
    )
    assert attempt.kind is expected
    assert attempt.maybe_committed is (expected is Kind.TRANSIENT)


# ------------------------------------------------------------------------------------------------ parse_error
def test_parse_error_plain_graph_shape() -> None:
    raw = graph_error("ResourceNotFound", "Resource not found for the segment 'deploymentProfile'.")
    assert parse_error(raw, 404) == ("ResourceNotFound", "Resource not found for the segment 'deploymentProfile'.")


def test_parse_error_unpacks_intune_json_inside_message() -> None:
    code, message = parse_error(graph_error("InternalServerError", INTUNE_MESSAGE), 500)
    assert code == "InternalServerError"
    assert message.startswith("An internal server error has occurred - Operation ID")
    assert "Activity ID: 1111" in message
    assert "_version" not in message and "{" not in message


def test_parse_error_intune_with_custom_phrase() -> None:
    inner = json.dumps({"_version": 3, "Message": "Conflict - Activity ID: 42", "CustomApiErrorPhrase": "Already"})
    assert parse_error(graph_error("Conflict", inner), 409) == ("Conflict", "Conflict - Activity ID: 42 | Already")


def test_parse_error_intune_with_only_a_phrase() -> None:
    inner = json.dumps({"_version": 3, "Message": "  ", "CustomApiErrorPhrase": "DeviceNotFound"})
    assert parse_error(graph_error("NotFound", inner), 404) == ("NotFound", "DeviceNotFound")


def test_parse_error_keeps_raw_message_when_inner_json_is_empty_or_broken() -> None:
    empty = json.dumps({"_version": 3, "Message": "", "CustomApiErrorPhrase": ""})
    assert parse_error(graph_error("BadRequest", empty), 400) == ("BadRequest", empty)
    broken = '{"_version": 3, "Message": "cut off'
    assert parse_error(graph_error("BadRequest", broken), 400) == ("BadRequest", broken)
    listy = "[1, 2]"
    assert parse_error(graph_error("BadRequest", listy), 400) == ("BadRequest", listy)


def test_parse_error_missing_code_falls_back_to_status() -> None:
    raw = orjson.dumps({"error": {"message": "something"}})
    assert parse_error(raw, 403) == ("HTTP403", "something")
    raw = orjson.dumps({"error": {"code": "", "message": None}})
    assert parse_error(raw, 400) == ("HTTP400", "")


@pytest.mark.parametrize(
    ("raw", "status", "expected"),
    [
        (b"", 503, ("HTTP503", "HTTP 503 with no error body")),
        (b"   \n", 502, ("HTTP502", "HTTP 502 with no error body")),
        (b"<html>Bad Gateway</html>", 502, ("HTTP502", "<html>Bad Gateway</html>")),
        (b'{"error": "just a string"}', 400, ("HTTP400", '{"error": "just a string"}')),
        (b'["error"]', 400, ("HTTP400", '["error"]')),
        (b'{"message": "no error key"}', 500, ("HTTP500", '{"message": "no error key"}')),
    ],
)
def test_parse_error_non_graph_bodies_keep_the_raw_text(raw: bytes, status: int, expected: tuple[str, str]) -> None:
    assert parse_error(raw, status) == expected


def test_parse_error_shortens_long_raw_text() -> None:
    code, message = parse_error(b"x" * 5000, 500)
    assert code == "HTTP500"
    assert message == "x" * 300


def test_parse_error_survives_invalid_utf8() -> None:
    code, message = parse_error(b"\xff\xfebad gateway", 502)
    assert code == "HTTP502"
    assert message.endswith("bad gateway")
    assert "\ufffd" in message


def test_classify_uses_parse_error() -> None:
    attempt = classify(500, {"request-id": "rq-5"}, graph_error("InternalServerError", INTUNE_MESSAGE))
    assert attempt.kind is Kind.TRANSIENT
    assert attempt.error_code == "InternalServerError"
    assert attempt.error_message is not None and attempt.error_message.startswith("An internal server error")
    assert attempt.request_id == "rq-5"
    assert attempt.retry_after is None
