"""Readers: every format, every id spelling, exact line numbers, and every way a file can be unusable."""

from __future__ import annotations

import csv
import importlib.util
import io
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_assign.errors import InputFileError, UsageError
from bulk_assign.guid import normalize_guid
from bulk_assign.inputs import jsonscan, readers
from bulk_assign.inputs.readers import (
    Deduper,
    InputPlan,
    InputRows,
    detect_format,
    iter_ids,
    read_input,
    read_input_skipping,
    scan_input,
)
from bulk_assign.models import InputRow

G1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
G2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
G3 = "9b2e4b8a-3f0c-4e9a-8d7b-5c1e2f3a4b5c"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def rows(path: Path, **kwargs: Any) -> list[InputRow]:
    plan = scan_input(path, **kwargs)
    result = list(read_input(plan))
    assert plan.total_rows == len(result)
    return result


def ids(found: list[InputRow]) -> list[str | None]:
    return [row.device_id for row in found]


def lines(found: list[InputRow]) -> list[int]:
    return [row.source_line for row in found]


def file_error(path: Path, **kwargs: Any) -> InputFileError:
    with pytest.raises(InputFileError) as caught:
        scan_input(path, **kwargs)
    assert str(path) in str(caught.value)
    return caught.value


# ------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "csv"),
        ("a.TXT", "csv"),
        ("a.json", "json"),
        ("a.JSONL", "jsonl"),
        ("a.ndjson", "jsonl"),
    ],
)
def test_format_from_extension(tmp_path: Path, name: str, expected: str) -> None:
    assert detect_format(tmp_path / name, None) == expected  # the file need not exist


def test_explicit_format_wins_over_extension(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "a.csv", "JSONL") == "jsonl"


def test_unknown_explicit_format_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="csv, json or jsonl"):
        detect_format(tmp_path / "a.csv", "xml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f'  [\n"{G1}"]', "json"),
        (f'{{"value": ["{G1}"]}}', "json"),
        (f'{{"value":\n ["{G1}"]}}', "json"),
        (f'{{"id": "{G1}"}}\n{{"id": "{G2}"}}\n', "jsonl"),
        (f'{{"id": "{G1}"}}\n"{G2}"\n', "jsonl"),
        (f"id\n{G1}\n", "csv"),
        (f"\ufeff{G1}\n", "csv"),
    ],
)
def test_format_sniffed_when_extension_unknown(tmp_path: Path, content: str, expected: str) -> None:
    assert detect_format(write(tmp_path, "devices.dat", content), None) == expected


def test_sniffing_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read"):
        detect_format(tmp_path / "nope.dat", None)


# ---------------------------------------------------------------------------------------------- CSV


def test_csv_with_header(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.csv", f"deviceId,name\n{G1},a\n{G2},b\n"))
    assert ids(found) == [G1, G2]
    assert lines(found) == [2, 3]
    assert found[0].raw == G1 and found[0].error_code is None


def test_csv_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", f"\ufeffid,name\r\n{G1},a\r\n{G2},b\r\n".encode())
    plan = scan_input(path)
    assert plan.id_column == "id"  # the BOM is not part of the header name
    found = list(read_input(plan))
    assert ids(found) == [G1, G2]
    assert found[0].raw == G1  # no stray \r


def test_csv_braces_whitespace_and_upper_case_are_normalised(tmp_path: Path) -> None:
    content = f"id\n  {{{G1.upper()}}} \n\t{G2.upper()}\n{{ {G3} }}\n"
    found = rows(write(tmp_path, "d.csv", content))
    assert ids(found) == [G1, G2, G3]
    assert found[0].raw == f"  {{{G1.upper()}}} "


@pytest.mark.parametrize(
    "header",
    [
        "id",
        "ID",
        "deviceId",
        "device_id",
        "Device ID",
        "DEVICE_ID",
        "windowsAutopilotDeviceIdentityId",
        "Autopilot Device ID",
        " autopilot_device_id ",
    ],
)
def test_csv_every_id_column_alias(tmp_path: Path, header: str) -> None:
    content = f'serial,"{header}",model\nS1,{G1},m\nS2,{G2},m\n'
    plan = scan_input(write(tmp_path, "d.csv", content))
    assert plan.id_column == header
    assert ids(list(read_input(plan))) == [G1, G2]


def test_csv_specific_id_column_beats_generic_id(tmp_path: Path) -> None:
    content = f"id,windowsAutopilotDeviceIdentityId\n{G3},{G1}\n"
    assert ids(rows(write(tmp_path, "d.csv", content))) == [G1]


def test_csv_headerless_single_column(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.csv", f"{G1}\nnot-a-guid\n{G2}\n"))
    assert ids(found) == [G1, None, G2]
    assert lines(found) == [1, 2, 3]


def test_csv_headerless_with_one_guid_column(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.csv", f"S1,{G1},x\nS2,{G2},y\n"))
    assert ids(found) == [G1, G2]


def test_csv_single_unknown_header_column_is_used(tmp_path: Path) -> None:
    plan = scan_input(write(tmp_path, "d.csv", f"Identities\n{G1}\n"))
    assert plan.id_column == "Identities"
    assert ids(list(read_input(plan))) == [G1]


def test_csv_id_column_option_picks_the_column(tmp_path: Path) -> None:
    content = f"id,Other Column\n{G1},{G2}\n"
    found = rows(write(tmp_path, "d.csv", content), id_column="other_column")
    assert ids(found) == [G2]


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_csv_delimiters(tmp_path: Path, delimiter: str) -> None:
    content = f'name{delimiter}Device ID\n"a{delimiter}b"{delimiter}{G1}\nc{delimiter}{G2}\n'
    assert ids(rows(write(tmp_path, "d.csv", content))) == [G1, G2]


def test_csv_quoted_multiline_field_keeps_physical_line_numbers(tmp_path: Path) -> None:
    content = f'id,note\n{G1},"one\ntwo\nthree"\n{G2},x\n"{G3}","a\r\nb"\nbad,y\n'
    found = rows(write(tmp_path, "d.csv", content))
    assert ids(found) == [G1, G2, G3, None]
    assert lines(found) == [2, 5, 6, 8]


def test_csv_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.csv", f"id,n\n\n{G1},1\n\n,\n{G2},2\n"))
    assert ids(found) == [G1, G2]
    assert lines(found) == [3, 6]


def test_csv_invalid_and_missing_ids_are_rows(tmp_path: Path) -> None:
    content = f'id,n\nnot-a-guid,1\n,2\n"   ",3\n{G1}x,4\n{G1},5\n{G1}\n'
    found = rows(write(tmp_path, "d.csv", content))
    assert [row.error_code for row in found] == ["InvalidGuid", "MissingId", "MissingId", "InvalidGuid", None, None]
    assert found[0].error_message == '"not-a-guid" is not a device id (GUID)'
    assert found[0].raw == "not-a-guid"
    assert found[1].error_message == 'empty cell in column "id"'
    assert ids(found)[4:] == [G1, G1]  # duplicates are the engine's business


def test_csv_raw_is_truncated(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.csv", "id,n\n" + "x" * 500 + ",1\n"))
    assert found[0].raw == "x" * 200
    assert found[0].error_message is not None and len(found[0].error_message) < 150


# --------------------------------------------------------------------------------------------- JSON


def test_json_array_of_strings(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.json", f'[\n  "{G1}",\n  "{{{G2.upper()}}}", "nope"\n]\n'))
    assert ids(found) == [G1, G2, None]
    assert lines(found) == [2, 3, 3]
    assert found[2].error_code == "InvalidGuid" and found[2].raw == "nope"


def test_json_array_of_multiline_objects(tmp_path: Path) -> None:
    content = (
        "[\n"
        "  {\n"
        f'    "id": "{G1}",\n'
        '    "note": "brackets ] } [ { and \\" quotes",\n'
        '    "nested": {"a": [1, {"b": "]"}]}\n'
        "  },\n"
        "\n"
        f'  {{"deviceId": "{G2}"}}, {{"Device ID": "{G3}"}}\n'
        "]"
    )
    found = rows(write(tmp_path, "d.json", content))
    assert ids(found) == [G1, G2, G3]
    assert lines(found) == [2, 8, 8]


def test_json_graph_export_shape(tmp_path: Path) -> None:
    content = (
        "{\n"
        '  "@odata.context": "https://graph.microsoft.com/beta/$metadata#x",\n'
        '  "@odata.count": 2,\n'
        '  "value": [\n'
        f'    {{"id": "{G1}", "serialNumber": "S1"}},\n'
        f'    {{"id": "{G2}", "serialNumber": "S2"}}\n'
        "  ],\n"
        '  "@odata.nextLink": null\n'
        "}\n"
    )
    found = rows(write(tmp_path, "d.json", content))
    assert ids(found) == [G1, G2]
    assert lines(found) == [5, 6]


@pytest.mark.parametrize(
    "key",
    ["id", "deviceId", "device_id", "Device ID", "windowsAutopilotDeviceIdentityId", "Autopilot Device ID"],
)
def test_json_every_id_field_alias(tmp_path: Path, key: str) -> None:
    content = orjson.dumps([{"serial": "S", key: G1}]).decode()
    assert ids(rows(write(tmp_path, "d.json", content))) == [G1]


def test_json_id_column_option(tmp_path: Path) -> None:
    content = orjson.dumps([{"id": G1, "autopilotId": G2}]).decode()
    assert ids(rows(write(tmp_path, "d.json", content), id_column="AUTOPILOT_ID")) == [G2]


def test_json_values_that_are_not_ids_are_rows(tmp_path: Path) -> None:
    content = f'[5, null, {{"id": null}}, {{"id": 12}}, {{"id": ""}}, {{"serial": "S"}}, ["x"], "{G1}"]'
    found = rows(write(tmp_path, "d.json", content))
    codes = [row.error_code for row in found]
    assert codes == ["MissingId", "MissingId", "MissingId", "InvalidGuid", "MissingId", "MissingId", "MissingId", None]
    assert found[0].raw == "5"
    assert found[3].raw == "12"
    assert found[5].raw == '{"serial":"S"}'
    assert found[7].device_id == G1


def test_json_bom_and_crlf(tmp_path: Path) -> None:
    found = rows(write(tmp_path, "d.json", f'\ufeff[\r\n"{G1}",\r\n"{G2}"\r\n]'.encode()))
    assert ids(found) == [G1, G2]
    assert lines(found) == [2, 3]


@pytest.mark.parametrize("chunk", [1, 2, 5, 17])
def test_json_lines_survive_any_chunk_boundary(tmp_path: Path, chunk: int) -> None:
    content = f'{{"value": [\n{{"id":\n"{G1}", "x": "a\\"]}}"}},\n\n  "{G2}", 123456,\n{{"id": "{G3}"}}]}}'
    path = write(tmp_path, "d.json", content)
    with mock.patch.object(jsonscan, "CHUNK", chunk):
        found = rows(path)
    assert ids(found) == [G1, G2, None, G3]
    assert lines(found) == [2, 5, 5, 6]


# ------------------------------------------------------------------------------------------- JSONL


def test_jsonl_strings_objects_and_blank_lines(tmp_path: Path) -> None:
    content = f'"{G1}"\n\n   \n{{"deviceId": "{G2}"}}\r\n7\n"junk"\n'
    found = rows(write(tmp_path, "d.jsonl", content))
    assert ids(found) == [G1, G2, None, None]
    assert lines(found) == [1, 4, 5, 6]
    assert [row.error_code for row in found] == [None, None, "MissingId", "InvalidGuid"]


def test_jsonl_bom(tmp_path: Path) -> None:
    assert ids(rows(write(tmp_path, "d.jsonl", f'\ufeff"{G1}"\n'.encode()))) == [G1]


# ------------------------------------------------------------------------------------ unusable files


def test_missing_file(tmp_path: Path) -> None:
    error = file_error(tmp_path / "missing.csv")
    assert "cannot read" in error.problem and error.line is None


def test_directory_is_not_readable(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    assert "cannot read" in file_error(tmp_path / "dir.csv").problem


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("d.csv", b"id\n" + G1.encode() + b"\nab\xe9\n", 3),
        ("d.jsonl", b'"' + G1.encode() + b'"\n"\xff"\n', 2),
        ("d.json", b'[\n"' + G1.encode() + b'",\n{"id":\n "\xc3("}]', 4),
    ],
)
def test_not_utf8_names_the_line(tmp_path: Path, name: str, content: bytes, line: int) -> None:
    error = file_error(write(tmp_path, name, content))
    assert "not UTF-8" in error.problem
    assert error.line == line
    assert f"line {line}" in str(error)




@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", ""),
        ("d.csv", "\n\r\n  \n"),
        ("d.csv", "\ufeffid\r\n"),
        ("d.json", ""),
        ("d.json", " [ ] "),
        ("d.json", '{"value": []}'),
        ("d.jsonl", "\n\n"),
    ],
)
def test_empty_input(tmp_path: Path, name: str, content: str) -> None:
    assert "no device ids" in file_error(write(tmp_path, name, content)).problem


def test_csv_header_without_id_column(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.csv", f"asset,model\nS1,{G1[:8]}\n"))
    assert error.line == 1
    assert '"asset", "model"' in error.problem
    assert "--id-column" in error.problem
    assert f"{tmp_path / 'd.csv'}, line 1:" in str(error)


def test_csv_id_column_not_present(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.csv", f"id,serial\n{G1},S\n"), id_column="autopilotId")
    assert error.line == 1
    assert "'autopilotId'" in error.problem and '"id", "serial"' in error.problem


def test_csv_headerless_with_several_guid_columns(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.csv", f"{G1},{G2}\n"))
    assert error.line == 1 and "--id-column" in error.problem


def test_csv_unterminated_quote(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.csv", f'id,note\n{G1},ok\n{G2},"never closed\nmore\n'))
    assert error.line == 3 and "not valid CSV" in error.problem


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (f'[\n"{G1}",\n{{"id": "{G2}",\n "n": 1,,\n}}]', 4, "not valid JSON"),
        (f'[\n"{G1}",\n]', 3, "unexpected ']'"),
        (f'[\n"{G1}"\n"{G2}"]', 3, "expected ',' or ']'"),
        (f'[\n"{G1}",\n{{"id": "{G2}"', 3, "not valid JSON"),
        (f'[\n"{G1}",\n', 3, "ends early"),
        (f'[\n"{G1}",\n"broken\n"]', 3, "not valid JSON"),
        (f'[\n"{G1}", tru\n]', 2, "not valid JSON"),
        (f'["{G1}"]\n\n]', 3, "unexpected text after"),
        ('\n"just a string"', 2, "top level must be an array"),
        ("12", 1, "top level must be an array"),
        ('{\n"@odata.count": 1\n}', 1, 'a "value" array'),
        ('{\n"value": {"id": 1}\n}', 2, '"value" must be an array'),
        ('{\n"value": [], \n  oops}', 3, "member name"),
        ('{"value" [] }', 1, "expected ':'"),
    ],
)
def test_json_syntax_errors_name_the_line(tmp_path: Path, content: str, line: int, problem: str) -> None:
    error = file_error(write(tmp_path, "d.json", content))
    assert problem in error.problem
    assert error.line == line, str(error)
    assert f"line {line}:" in str(error)


def test_jsonl_syntax_error_names_the_line(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.jsonl", f'"{G1}"\n\n{{"id": \n'))
    assert error.line == 3 and "not valid JSON" in error.problem


@pytest.mark.parametrize(("name", "sep"), [("d.json", ",\n"), ("d.jsonl", "\n")])
def test_objects_without_any_id_field(tmp_path: Path, name: str, sep: str) -> None:
    items = [orjson.dumps({"asset": "S1", "model": "m"}).decode()] * 2
    content = sep.join(items)
    error = file_error(write(tmp_path, name, f"[\n{content}]" if name.endswith(".json") else content))
    assert error.line == (2 if name.endswith(".json") else 1)
    assert '"asset", "model"' in error.problem and "--id-column" in error.problem


def test_json_element_size_is_capped(tmp_path: Path) -> None:
    with (
        mock.patch.object(jsonscan, "MAX_ELEMENT", 64),
        mock.patch.object(readers, "MAX_ELEMENT", 64),
        mock.patch.object(jsonscan, "CHUNK", 16),
    ):
        error = file_error(write(tmp_path, "d.json", '[\n"' + "x" * 200 + '"]'))
    assert error.line == 2 and "longer than" in error.problem


def test_file_errors_are_input_file_errors_with_exit_code_2(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.json", "nope"))
    assert isinstance(error, UsageError) and error.exit_code == 2


def test_read_input_translates_a_file_that_vanished(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", f"id\n{G1}\n")
    plan = scan_input(path)
    path.unlink()
    with pytest.raises(InputFileError, match="cannot read"):
        list(read_input(plan))


# ------------------------------------------------------------------------------------ API and dedupe


def test_iter_ids() -> None:
    found = list(iter_ids([G1.upper(), "", "junk", 5]))  # type: ignore[list-item]
    assert ids(found) == [G1, None, None, None]
    assert lines(found) == [1, 2, 3, 4]
    assert [row.error_code for row in found] == [None, "MissingId", "InvalidGuid", "MissingId"]


def test_deduper() -> None:
    seen = Deduper()
    assert seen.add(G1) is True
    assert seen.add(G1) is False
    assert seen.add(f"{{{G1.upper()}}}") is False  # same device, other spelling
    assert seen.add(G2) is True
    assert G1 in seen and G2.upper() in seen and G3 not in seen and "junk" not in seen
    assert len(seen) == 2
    with pytest.raises(ValueError, match="not a GUID"):
        seen.add("junk")


def test_deduper_stays_under_100_bytes_per_id() -> None:
    count = 50_000
    generated = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(count)]
    tracemalloc.start()
    seen = Deduper()
    for device_id in generated:
        seen.add(device_id)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(seen) == count
    assert used / count < 100


def test_deduper_grows_and_keeps_every_key() -> None:
    """The buckets grow fourfold at 16 keys per bucket on average: nothing is lost on the way."""
    generated = [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % (1 << 128))) for i in range(70_000)]
    seen = Deduper()
    for device_id in generated:
        assert seen.add(device_id)
    assert len(seen) == len(generated) and all(seen.has(device_id.upper()) for device_id in generated)
    assert not any(seen.add(device_id) for device_id in generated[::97])
    keys = sorted(seen)
    assert keys == sorted(uuid.UUID(device_id).bytes for device_id in generated)
    again = Deduper()
    again.add_keys(b"".join(keys[::2]))
    assert len(again) == len(keys[::2]) and again.has(generated[0]) in (True, False)
    assert all(again.has_key(key) for key in keys[::2])
    seen.discard_key(keys[0])
    assert not seen.has_key(keys[0]) and len(seen) == len(keys) - 1


def test_a_row_carries_its_key(tmp_path: Path) -> None:
    """The reader makes the id's key on the way (the run de-duplicates by it); any spelling gives the same."""
    found = rows(write(tmp_path, "devices.csv", f"id\n{G1.upper()}\n{{{G1}}}\n {G2} \njunk\n"))
    assert [row.key for row in found] == [uuid.UUID(G1).bytes, uuid.UUID(G1).bytes, uuid.UUID(G2).bytes, None]
    assert ids(found) == [G1, G1, G2, None]


def _skipped(path: Path, done: list[str]) -> tuple[list[InputRow], list[InputRow | None]]:
    plan = scan_input(path)
    return list(read_input(plan)), list(read_input_skipping(plan, Deduper(uuid.UUID(d).bytes for d in done)))


def test_a_resume_leaves_out_the_rows_of_done_devices_and_keeps_every_other_row_and_line(tmp_path: Path) -> None:
    """``read_input_skipping``: a done device's row is None, any other row is what ``read_input`` reads."""
    content = (
        "#TYPE Selected.Object\r\n"
        '"Serial Number","Device ID","Note"\r\n'
        f"A1,{G1.upper()},plain\r\n"
        f'A2,{G2},"a note\nover two lines, with {G1}"\r\n'  # a quoted field: parsed, never tested
        f"{G1},{G3},the id in another column\r\n"
        "\r\n"
        f' A3 ,"{G1}",quoted: built, then the caller decides\r\n'
        f"A4,{{{G1}}},braces: built\r\n"
        f'A5,{G2},"{G1}\n{G1},{G1}"\r\n'
        f"A6,{G1}\r\n"
        "A7,junk,x\r\n"
    )
    path = write(tmp_path, "devices.csv", "\ufeff" + content)
    plain, skipping = _skipped(path, [G1])
    assert len(plain) == len(skipping) == 8
    kept = [row for row in skipping if row is not None]
    assert [row.source_line for row in kept] == [4, 6, 8, 9, 10, 13]
    assert [(row.source_line, row.device_id, row.raw) for row in kept] == [
        (row.source_line, row.device_id, row.raw) for row in plain if row.source_line in {4, 6, 8, 9, 10, 13}]
    assert [i for i, row in enumerate(skipping) if row is None] == [0, 6]  # lines 3 and 12
    assert [plain[0].device_id, plain[6].device_id, plain[3].device_id] == [G1, G1, G1]  # A3: the caller's


def test_a_headerless_file_and_json_skip_too(tmp_path: Path) -> None:
    plain, skipping = _skipped(write(tmp_path, "bare.csv", f"{G1}\n{G2}\n\n{G1.upper()}\n{G3}\n"), [G1, G3])
    assert [row and row.source_line for row in skipping] == [1, 2, None, None]  # the first row is always built
    assert [row.device_id for row in plain] == [G1, G2, G1, G3]
    doc = orjson.dumps([G1, {"id": G2}, {"id": G1.upper()}, "junk"])
    plain, skipping = _skipped(write(tmp_path, "devices.json", doc), [G1])
    assert [row and (row.source_line, row.device_id, row.error_code) for row in skipping] == [
        None, (1, G2, None), None, (1, None, "InvalidGuid")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["plain", "quoted", "multiline", "blank", "junk", "spaced"]),
                          st.sampled_from([G1, G2, G3]), st.booleans()), max_size=12))
def test_skipping_matches_reading_for_any_mix_of_rows(tmp_path_factory: Any, spec: list[tuple[str, str, bool]]) -> None:
    """Whatever the mix of quoted, multi-line, blank and odd rows: the rows that are not left out are the
    rows ``read_input`` reads, with the same lines, and only rows naming a done device plainly are left out."""
    out = ["Device ID,Note"]
    for kind, guid, upper in spec:
        cell = guid.upper() if upper else guid
        out.append({"plain": f"{cell},n", "quoted": f'"{cell}",n', "multiline": f'{cell},"x\n{G1},y\nz"',
                    "blank": "", "junk": "junk,n", "spaced": f" {cell} ,n"}[kind])
    path = write(tmp_path_factory.mktemp("mix"), "mix.csv", "\n".join(out) + "\n")
    plan = scan_input(path) if any(kind != "blank" for kind, _, _ in spec) else None
    if plan is None:
        return
    plain = list(read_input(plan))
    skipping = list(InputRows(plan).skipping(Deduper([uuid.UUID(G1).bytes])))
    assert len(plain) == len(skipping)
    for before, after in zip(plain, skipping, strict=True):
        if after is None:
            assert before.device_id == G1 and before.raw.strip() == before.raw
        else:
            assert (after.source_line, after.device_id, after.raw) == (before.source_line, before.device_id, before.raw)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_reading_is_streamed_not_loaded(tmp_path: Path, fmt: str) -> None:
    """With 64 KiB reads, a ~2 MB file must be read in well under its own size of memory."""
    count = 20_000
    guids = [str(uuid.UUID(int=i + 1)) for i in range(count)]
    if fmt == "csv":
        content = "id,serialNumber\n" + "\n".join(f"{g},SN" for g in guids)
    elif fmt == "json":
        content = orjson.dumps([{"id": g, "serialNumber": "SN"} for g in guids], option=orjson.OPT_INDENT_2).decode()
    else:
        content = "\n".join(orjson.dumps({"id": g}).decode() for g in guids)
    path = write(tmp_path, f"d.{fmt}", content)
    size = path.stat().st_size
    del content, guids
    with mock.patch.object(jsonscan, "CHUNK", 1 << 16):
        tracemalloc.start()
        plan = scan_input(path)
        last = None
        for last in read_input(plan):  # noqa: B007
            pass
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert plan.total_rows == count and last is not None and last.device_id == str(uuid.UUID(int=count))
    assert size > 700_000
    assert peak < 400_000, f"peak {peak} bytes for a {size} byte file"


# ---------------------------------------------------------------------------------------- properties

_spacing = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def messy_guid(draw: st.DrawFn) -> tuple[str, str]:
    """A GUID as people paste it: random case, optional braces, whitespace around."""
    value = str(draw(st.uuids(version=None)) if draw(st.booleans()) else draw(st.uuids()))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in value) if draw(st.booleans()) else value
    if draw(st.booleans()):
        text = "{" + text + "}"
    return draw(_spacing) + text + draw(_spacing), value.lower()


junk = st.text(max_size=50).filter(lambda s: normalize_guid(s) is None)
cells: st.SearchStrategy[tuple[str, str | None]] = st.one_of(messy_guid(), junk.map(lambda s: (s, None)))


def check(found: list[InputRow], expected: list[tuple[int, str, str | None]]) -> None:
    """One row per data row, in order, with the right line, id, raw text and error code."""
    assert len(found) == len(expected)
    for row, (line, text, device_id) in zip(found, expected, strict=True):
        assert row.source_line == line
        assert row.device_id == device_id
        assert row.raw == text[:200]
        if device_id is not None:
            assert row.error_code is None
        else:
            assert row.error_code == ("MissingId" if not text.strip() else "InvalidGuid")


def scanned(folder: Path, name: str, content: bytes, **kwargs: Any) -> list[InputRow]:
    path = folder / name
    path.write_bytes(content)
    return rows(path, **kwargs)


@settings(max_examples=150, deadline=None)
@given(data=st.lists(cells, min_size=1, max_size=30), crlf=st.booleans(), bom=st.booleans())
def test_property_csv(
    tmp_path_factory: pytest.TempPathFactory, data: list[tuple[str, str | None]], crlf: bool, bom: bool
) -> None:
    out = io.StringIO()
    # With "\n" endings the csv module would leave a lone "\r" unquoted (unreadable): quote everything there.
    writer = csv.writer(
        out, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL
    )
    writer.writerow(["Device ID", "n"])
    expected = []
    for number, (text, device_id) in enumerate(data):
        expected.append((out.getvalue().count("\n") + 1, text, device_id))
        writer.writerow([text, number])
    content = ("\ufeff" if bom else "") + out.getvalue()
    check(scanned(tmp_path_factory.mktemp("csv"), "d.csv", content.encode()), expected)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(cells, st.booleans(), st.integers(0, 2)), min_size=1, max_size=30),
)
def test_property_jsonl(
    tmp_path_factory: pytest.TempPathFactory, data: list[tuple[tuple[str, str | None], bool, int]]
) -> None:
    out: list[bytes] = []
    expected = []
    for (text, device_id), as_object, blanks in data:
        out.extend([b"  "] * blanks)
        out.append(orjson.dumps({"deviceId": text, "n": 1} if as_object else text))
        expected.append((len(out), text, device_id))
    check(scanned(tmp_path_factory.mktemp("jsonl"), "d.jsonl", b"\n".join(out) + b"\n"), expected)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(cells, st.booleans(), st.booleans()), min_size=1, max_size=20),
    export=st.booleans(),
    chunk=st.sampled_from([1, 3, 8, 1 << 20]),
)
def test_property_json(
    tmp_path_factory: pytest.TempPathFactory,
    data: list[tuple[tuple[str, str | None], bool, bool]],
    export: bool,
    chunk: int,
) -> None:
    parts = ['{"@odata.context": "x",\n "value": [\n' if export else "[\n"]
    expected = []
    for index, ((text, device_id), as_object, pretty) in enumerate(data):
        line = "".join(parts).count("\n") + 1
        item: Any = {"serial": "S]}", "id": text, "more": {"a": [1]}} if as_object else text
        encoded = orjson.dumps(item, option=orjson.OPT_INDENT_2 if pretty else 0).decode()
        parts.append(encoded + (",\n" if index < len(data) - 1 else "\n"))
        expected.append((line, text, device_id))
    parts.append("]}" if export else "]")
    with mock.patch.object(jsonscan, "CHUNK", chunk):
        check(scanned(tmp_path_factory.mktemp("json"), "d.json", "".join(parts).encode()), expected)


def test_plan_is_frozen(tmp_path: Path) -> None:
    plan = scan_input(write(tmp_path, "d.csv", f"{G1}\n"))
    assert plan == InputPlan(path=tmp_path / "d.csv", format="csv", id_column=None, total_rows=1, delimiter=",")
    mutate: Callable[[], None] = lambda: setattr(plan, "total_rows", 2)  # noqa: E731
    with pytest.raises(AttributeError):
        mutate()


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.mark.parametrize("name", ["devices.csv", "devices.json", "devices.jsonl"])
def test_samples_are_clean_examples(name: str) -> None:
    found = rows(SAMPLES / name)
    assert len(found) == 6 and all(row.device_id is not None for row in found)
    assert len({row.device_id for row in found}) == 6


def test_memory_bench_measure_is_importable_and_reports_each_format() -> None:
    spec = importlib.util.spec_from_file_location("memory_bench", SAMPLES.parent / "benchmarks" / "memory_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure(500)
    for fmt in ("csv", "json"):
        numbers = result[fmt]
        assert numbers["rows"] == 500
        assert numbers["invalid"] > 0 and numbers["duplicates"] > 0
        assert numbers["distinct"] + numbers["invalid"] + numbers["duplicates"] == 500
        assert numbers["peak_rss_mb"] >= numbers["baseline_rss_mb"] > 0


@pytest.mark.parametrize("opener", [b"[", b"{\"a\":", b"[{\"x\":\"]\"},"])
def test_deeply_nested_json_is_scanned_in_linear_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      opener: bytes) -> None:
    """Hardening #12: the scanner resumes a long element where it stopped instead of from its start.

    The work is bounded by counting the scanner's regex steps (not wall time): rescanning from the start
    after every chunk made them grow with the square of the element's length."""
    monkeypatch.setattr(jsonscan, "CHUNK", 4096)
    calls = 0
    real = jsonscan._match_end

    def counting(pattern: Any, buf: bytes, pos: int) -> int:
        nonlocal calls
        calls += 1
        return real(pattern, buf, pos)

    monkeypatch.setattr(jsonscan, "_match_end", counting)
    body = b"[" + opener * (400_000 // len(opener))
    path = write(tmp_path, "deep.json", body + b"]" * 10)
    with pytest.raises(InputFileError, match=r"deep\.json, line 1"):
        scan_input(path)
    assert calls < 6 * len(body) // len(opener) + 1000, calls  # a few steps per nesting level
