"""Fuzzing with hypothesis: any input to a parser ends as a value, a record or a clear error, never a crash.

Targets: the input readers (CSV, JSON, JSON Lines, every shape they accept), the Retry-After parser, the
batch-answer parser and the Graph error parser. Issue 8's formats join the reader targets as they land.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_assign.errors import UsageError
from bulk_assign.graph.operations import classify, classify_item, error_of, item_responses
from bulk_assign.graph.outcome import Attempt, Kind
from bulk_assign.graph.retry_after import parse_retry_after
from bulk_assign.inputs.readers import read_input, scan_input

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

guids = st.uuids().map(str)
cells = st.one_of(guids, st.text(max_size=40), guids.map(lambda g: "{" + g.upper() + "}"), st.just(""))
csv_text = st.lists(st.lists(cells, min_size=1, max_size=4), min_size=0, max_size=12).map(
    lambda rows: "\n".join(",".join(r) for r in rows))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                         st.text(max_size=30), guids)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(["id", "deviceId", "x", "value"]), inner,
                                                 max_size=4)), max_leaves=20)


def read_all(path: Path, fmt: str | None = None) -> list[object]:
    """Scan then read, like the CLI: rows, or a UsageError (InputFileError) naming the file."""
    try:
        plan = scan_input(path, fmt=fmt)
    except UsageError as exc:
        assert str(path) in str(exc) or path.name in str(exc), str(exc)
        return []
    rows = list(read_input(plan))
    for row in rows:
        assert row.device_id is None or str(uuid.UUID(row.device_id)) == row.device_id
        assert row.device_id is not None or row.error_code in ("InvalidGuid", "MissingId")
        assert row.source_line >= 1
    return list(rows)


@FUZZ
@given(data=st.binary(max_size=400), ext=st.sampled_from([".csv", ".json", ".jsonl", ".txt"]))
def test_any_bytes_end_as_rows_or_a_clear_input_error(tmp_path_factory: object, data: bytes, ext: str) -> None:
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / f"input{ext}"  # type: ignore[attr-defined]
    path.write_bytes(data)
    read_all(path)


@FUZZ
@given(text=csv_text, bom=st.booleans(), crlf=st.booleans())
def test_csv_shapes(tmp_path_factory: object, text: str, bom: bool, crlf: bool) -> None:
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "devices.csv"  # type: ignore[attr-defined]
    body = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8", "surrogatepass"))
    read_all(path)


@FUZZ
@given(value=json_values, lines=st.booleans())
def test_json_and_json_lines_shapes(tmp_path_factory: object, value: object, lines: bool) -> None:
    folder = Path(str(tmp_path_factory.mktemp("fuzz")))  # type: ignore[attr-defined]
    if lines:
        items = value if isinstance(value, list) else [value]
        path = folder / "devices.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(v) for v in items))
    else:
        path = folder / "devices.json"
        path.write_bytes(orjson.dumps(value))
    read_all(path)


@given(st.one_of(st.none(), st.text(max_size=60), st.from_regex(r"\A\s*-?\d{0,6}(\.\d{0,4})?(\s*,\s*-?\d{0,5})*\s*\Z")))
def test_retry_after_is_none_or_a_finite_non_negative_number(value: str | None) -> None:
    result = parse_retry_after(value)
    assert result is None or (math.isfinite(result) and result >= 0)


@given(body=json_values)
def test_any_batch_answer_gives_one_attempt_per_item_and_never_raises(body: object) -> None:
    by_id = item_responses(body)
    for key in ("0", "1", "2"):
        attempt = classify_item(by_id.get(key) if by_id is not None else None)
        assert isinstance(attempt, Attempt)
        if attempt.kind is Kind.SUCCESS:
            assert attempt.http_status is not None and 200 <= attempt.http_status < 300
        if attempt.kind is Kind.TRANSIENT and attempt.http_status is None:
            assert attempt.maybe_committed  # a malformed item is in doubt, never a clean failure


@given(status=st.integers(100, 599), raw=st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps)),
       retry_after=st.one_of(st.none(), st.text(max_size=20)))
def test_any_answer_classifies(status: int, raw: bytes, retry_after: str | None) -> None:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    attempt = classify(status, headers, raw)
    assert attempt.http_status == status
    if attempt.kind is not Kind.SUCCESS:
        assert attempt.error_code and attempt.error_message is not None
        code, message = error_of(orjson.loads(raw) if raw[:1] in (b"{", b"[") and _is_json(raw) else None, status,
                                 raw)
        assert isinstance(code, str) and isinstance(message, str)


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


@FUZZ
@given(text=csv_text, type_line=st.booleans(), big=st.booleans(), delimiter=st.sampled_from([",", ";", "\t"]))
def test_windows_csv_shapes(tmp_path_factory: object, text: str, type_line: bool, big: bool, delimiter: str) -> None:
    """UTF-16 with a BOM, an optional #TYPE line, European delimiters (issue 11's formats)."""
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "devices.csv"  # type: ignore[attr-defined]
    body = ("#TYPE Selected.Object\r\n" if type_line else "") + text.replace(",", delimiter).replace("\n", "\r\n")
    path.write_bytes(("\ufeff" + body).encode("utf-16-be" if big else "utf-16-le", "surrogatepass"))
    read_all(path)


@FUZZ
@given(value=json_values)
def test_utf16_json_shapes(tmp_path_factory: object, value: object) -> None:
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "devices.json"  # type: ignore[attr-defined]
    path.write_bytes(("\ufeff" + orjson.dumps(value).decode()).encode("utf-16-le"))
    read_all(path)
