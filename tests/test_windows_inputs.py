"""Input files as Windows and its tools write them (issue 11): every fixture is written here, byte for byte."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from bulk_assign.errors import InputFileError
from bulk_assign.inputs.readers import read_input, scan_input

A, B, C = (str(uuid.UUID(int=n, version=4)) for n in (11, 22, 33))
ENTRA = [str(uuid.UUID(int=n, version=4)) for n in (101, 202, 303)]


def ids_of(path: Path) -> list[str | None]:
    return [row.device_id for row in read_input(scan_input(path))]


def utf16(text: str, *, big: bool = False) -> bytes:
    return ("\ufeff" + text).encode("utf-16-be" if big else "utf-16-le")


@pytest.mark.parametrize(("encode", "shown"), [
    (lambda s: s.encode(), "UTF-8"),
    (lambda s: b"\xef\xbb\xbf" + s.encode(), "UTF-8 (BOM)"),
    (lambda s: utf16(s), "UTF-16LE"),
    (lambda s: utf16(s, big=True), "UTF-16BE"),
])
@pytest.mark.parametrize("ext", [".csv", ".json", ".jsonl"])
def test_utf8_and_utf16_with_a_bom_read_the_same(tmp_path: Path, encode: object, shown: str, ext: str) -> None:
    text = {".csv": f"Id\r\n{A}\r\n{B}\r\n", ".json": orjson.dumps([A, B]).decode(),
            ".jsonl": f'"{A}"\n"{B}"\n'}[ext]
    path = tmp_path / f"devices{ext}"
    path.write_bytes(encode(text))  # type: ignore[operator]
    plan = scan_input(path)
    assert plan.encoding == shown and plan.total_rows == 2
    assert ids_of(path) == [A, B]
    assert shown in plan.describe()


def test_get_windowsautopilotinfo_output_utf16_with_a_type_line(tmp_path: Path) -> None:
    """Windows PowerShell 5.1: Export-Csv without -NoTypeInformation, the SDK's alphabetical columns, UTF-16."""
    text = ("#TYPE Selected.Microsoft.Graph.Beta.PowerShell.Models.MicrosoftGraphWindowsAutopilotDeviceIdentity\r\n"
            '"AzureActiveDirectoryDeviceId","GroupTag","Id","ManagedDeviceId","SerialNumber"\r\n'
            f'"{ENTRA[0]}","wave1","{A}","00000000-0000-0000-0000-000000000000","PF1ABC"\r\n'
            f'"{ENTRA[1]}","wave1","{B}","00000000-0000-0000-0000-000000000000","PF2DEF"\r\n')
    path = tmp_path / "autopilot.csv"
    path.write_bytes(utf16(text))
    plan = scan_input(path)
    assert (plan.id_column, plan.header_line, plan.total_rows, plan.encoding) == ("Id", 2, 2, "UTF-16LE")
    rows = list(read_input(plan))
    assert [r.device_id for r in rows] == [A, B]  # the Autopilot ids, never the Entra ones
    assert [r.source_line for r in rows] == [3, 4]  # the file's own line numbers


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_european_excel_delimiters_are_detected_from_the_header(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(delimiter.join(["Serial", "Id", "Model"]) + "\r\n"
                    + delimiter.join(["S1", A, "Surface Pro; 9"]) + "\r\n")
    plan = scan_input(path)
    assert plan.delimiter == delimiter and ids_of(path) == [A]


def test_quoted_headers_crlf_and_trailing_empty_columns(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_bytes(f'"Device ID","Model",,\r\n"{A}","x",,\r\n"{{{B.upper()}}}",,,\r\n'.encode())
    assert ids_of(path) == [A, B]


def test_the_autopilot_id_column_wins_over_other_guid_columns(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("AzureActiveDirectoryDeviceId,ManagedDeviceId,AzureAdDeviceId,Id\n"
                    f"{ENTRA[0]},{ENTRA[1]},{ENTRA[2]},{A}\n")
    plan = scan_input(path)
    assert plan.id_column == "Id" and ids_of(path) == [A]


def test_the_all_zero_guid_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(f"id\n00000000-0000-0000-0000-000000000000\n{A}\n")
    rows = list(read_input(scan_input(path)))
    assert rows[0].device_id is None and rows[0].error_code == "InvalidGuid" and "all-zero" in (rows[0].error_message
                                                                                                 or "")
    assert rows[1].device_id == A


@pytest.mark.parametrize(("header", "column"), [
    ("Device Serial Number,Windows Product ID,Hardware Hash", "Device Serial Number"),
    ("Device Serial Number,Windows Product ID,Hardware Hash,Group Tag,Assigned User", "Device Serial Number"),
    ("Serial number,Manufacturer,Model,Group tag,Profile status,Purchase order", "Serial number"),
    ("Manufacturer,SerialNumber", "SerialNumber"),
    ("serialNumber", "serialNumber"),
    ("Model;Serial", "Serial"),
])
def test_serial_number_files_are_detected_as_serials(tmp_path: Path, header: str, column: str) -> None:
    path = tmp_path / "hash.csv"
    delimiter = ";" if ";" in header else ","
    names = header.split(delimiter)
    cells = delimiter.join("PF1ABC " if name == column else "x" for name in names)
    path.write_bytes(utf16(header + "\r\n" + cells + "\r\n"))
    plan = scan_input(path)
    assert plan.id_type == "serial" and plan.id_column == column and "serial numbers from column" in plan.describe()
    [row] = list(read_input(plan))
    assert row.device_id is None and row.serial == "PF1ABC" and row.error_code is None


def test_id_type_id_refuses_a_serial_file_and_an_id_column_wins_over_serials(tmp_path: Path) -> None:
    path = tmp_path / "hash.csv"
    path.write_text("Device Serial Number,Windows Product ID\nPF1ABC,x\n")
    with pytest.raises(InputFileError) as caught:
        scan_input(path, id_type="id")
    assert caught.value.line == 1 and "serial numbers" in caught.value.problem
    assert "--id-type id" in caught.value.problem
    both = tmp_path / "export.csv"
    both.write_text(f"SerialNumber,Id\nPF1ABC,{A}\n")
    assert scan_input(both).id_type == "id" and ids_of(both) == [A]
    forced = scan_input(both, id_type="serial")
    assert forced.id_type == "serial" and [r.serial for r in read_input(forced)] == ["PF1ABC"]
    named = scan_input(both, id_column="serialnumber")
    assert named.id_type == "serial"


def test_a_bare_list_of_serials_with_id_type_serial(tmp_path: Path) -> None:
    path = tmp_path / "serials.txt"
    path.write_text("PF1ABC\n  pf2def \n\nPF3\n")
    plan = scan_input(path, id_type="serial")
    assert plan.total_rows == 3 and [r.serial for r in read_input(plan)] == ["PF1ABC", "pf2def", "PF3"]


def test_json_objects_with_only_a_serial_field_are_serials(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(utf16(orjson.dumps([{"SerialNumber": "S1", "Model": "m"}, {"SerialNumber": " "}]).decode()))
    plan = scan_input(path)
    assert plan.id_type == "serial"
    rows = list(read_input(plan))
    assert rows[0].serial == "S1" and rows[1].serial is None and rows[1].error_code == "MissingId"


def test_powershell_convertto_json_objects_and_a_single_object(tmp_path: Path) -> None:
    many = tmp_path / "many.json"
    many.write_bytes(utf16(orjson.dumps([{"AzureActiveDirectoryDeviceId": ENTRA[0], "Id": A, "SerialNumber": "S1"},
                                         {"AzureActiveDirectoryDeviceId": ENTRA[1], "Id": B}],
                                        option=orjson.OPT_INDENT_2).decode()))
    assert ids_of(many) == [A, B]
    single = tmp_path / "one.json"
    single.write_bytes(utf16(f'{{\r\n    "AzureActiveDirectoryDeviceId":  "{ENTRA[0]}",\r\n    "Id":  "{C}"\r\n}}'))
    plan = scan_input(single)
    assert plan.total_rows == 1 and ids_of(single) == [C]


def test_graphs_own_listing_with_a_next_link(tmp_path: Path) -> None:
    path = tmp_path / "listing.json"
    path.write_bytes(orjson.dumps({"@odata.context": "https://graph.microsoft.com/beta/$metadata#x",
                                   "value": [{"id": A, "serialNumber": "S1"}, {"id": B}],
                                   "@odata.nextLink": "https://graph.microsoft.com/beta/x?$skiptoken=abc"}))
    assert ids_of(path) == [A, B]


def test_a_binary_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_bytes(b"\x00\x01\x02PK\x03\x04\xff\xfe\xfd" * 20)
    with pytest.raises(InputFileError) as caught:
        scan_input(path)
    assert str(path) in str(caught.value)


def test_every_dry_run_says_what_it_detected(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_bytes(utf16(f"#TYPE x\r\nName;Id\r\nPC1;{A}\r\nPC2;{B}\r\n"))
    done = subprocess.run([sys.executable, "-m", "bulk_assign", "run", str(path), "--target", "all-devices",
                           "--dry-run", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said = next(line for line in done.stderr.splitlines() if "input" in line and "UTF-16LE" in line)
    assert "semicolon-delimited" in said and "header on line 2" in said and '"Id"' in said and "2 rows" in said
    assert "UTF-16LE" in (tmp_path / "out" / "run.log").read_text()


def test_mac_excel_cr_only_line_ends_are_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes(f"Model;Id\r m1;{A}\r m2;{B}\r".encode())
    plan = scan_input(path)
    assert plan.total_rows == 2 and "CR line ends" in plan.describe() and plan.delimiter == ";"
    assert [(r.source_line, r.device_id) for r in read_input(plan)] == [(2, A), (3, B)]


@pytest.mark.parametrize(("magic", "kind"), [(b"PK\x03\x04\x14\x00\x06\x00", ".xlsx"),
                                             (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".xls")])
@pytest.mark.parametrize("name", ["devices.xlsx", "devices.csv"])
def test_a_workbook_is_named_as_one_with_what_to_do(tmp_path: Path, magic: bytes, kind: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(magic + bytes(range(256)) * 4)
    with pytest.raises(InputFileError) as caught:
        scan_input(path)
    assert f"a workbook ({kind})" in caught.value.problem and "export it as CSV" in caught.value.problem
    assert "UTF-8" in caught.value.problem and str(path) in str(caught.value)


def test_one_page_of_graphs_listing_warns_that_later_pages_are_missing(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_bytes(orjson.dumps({"value": [{"id": A}], "@odata.nextLink": "https://graph.microsoft.com/beta/x"}))
    [warning] = scan_input(path).warnings
    assert "one page" in warning and "@odata.nextLink" in warning
    path.write_bytes(orjson.dumps({"value": [{"id": A}]}))
    assert scan_input(path).warnings == ()
