"""``bulk-assign emulator`` as a real process: URL on the first stdout line, clean exit on signals, flag errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "0f6e3b4e-1111-4aaa-8bbb-123456789abc"
GROUP = "5a5a5a5a-0000-4000-8000-000000000001"
SYNCED = "5a5a5a5a-0000-4000-8000-000000000002"
BODY = {
    "@odata.type": "#microsoft.graph.windowsAutopilotDeploymentProfileAssignment",
    "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"},
}


def launch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_assign", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def post(base_url: str, device: str, token: str = "t") -> int:
    url = f"{base_url}/deviceManagement/windowsAutopilotDeviceIdentities/{device}/deploymentProfile/assignments"
    request = urllib.request.Request(
        url, data=json.dumps(BODY).encode(), headers={"Authorization": f"Bearer {token}"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signal_then_exits_0(sig: signal.Signals) -> None:
    proc = launch("--rate", "2/1m", "--seed", "3")
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/beta")
        assert [post(base_url, DEVICE) for _ in range(3)] == [201, 201, 429]
        with urllib.request.urlopen(base_url.replace("/beta", "/_emulator/counters"), timeout=10) as response:
            counters = json.load(response)
        assert counters["writes_committed"] == 2 and counters["throttled"] == 1
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""  # nothing after the URL line on stdout
    assert "Traceback" not in err and "stopped" in err


def test_inventory_and_token_flags(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.csv"
    inventory.write_text(f"id,serial\n{DEVICE},SN1\n")
    proc = launch("--inventory", str(inventory), "--token", "secret")
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert post(base_url, DEVICE, token="secret") == 201
        assert post(base_url, DEVICE, token="other") == 401
        assert post(base_url, "99999999-1111-4aaa-8bbb-123456789abc", token="secret") == 404
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def run_bad(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulk_assign", "emulator", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


def test_bad_inventory_file_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "inventory.txt"
    bad.write_text(f"# known devices\n{DEVICE}\n\nnot-a-device\n")
    result = run_bad("--inventory", str(bad))
    assert result.returncode == 2
    assert f"{bad}, line 4" in result.stderr and "not-a-device" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--rate", "fast"], "not a rate"),
        (["--tenant-rate", "0/1s"], "positive"),
        (["--faults", "1.5"], "--faults"),
        (["--fault-kinds", "503,teapot"], "teapot"),
        (["--throttle", "leaky"], "--throttle"),
        (["--retry-after", "soon"], "--retry-after"),
        (["--latency-ms", "-1"], "--latency-ms"),
        (["--inventory", "/nonexistent/inventory.txt"], "cannot read"),
        (["--static-group", "nope"], "group id is a GUID"),
        (["--synced-group", "nope"], "group id is a GUID"),
        (["--directory-read-rate", "fast"], "not a rate"),
        (["--directory-write-rate", "3000"], "unit of time"),
        (["--seed-call-semantics", "group"], "--seed-call-semantics"),
        (["--static-group", GROUP, "--dynamic-group", f"{GROUP}=t"], "both dynamic and static"),
    ],
)
def test_bad_flags_exit_2_with_a_message(args: list[str], fragment: str) -> None:
    result = run_bad(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def send(url: str, method: str, body: object) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers)


def test_directory_and_seed_semantics_flags_reach_the_tenant() -> None:
    from bulk_assign.emulator.directory import entra_device_id, object_id

    member = object_id(entra_device_id(DEVICE))
    proc = launch("--static-group", GROUP, "--synced-group", SYNCED, "--directory-write-rate", "1/1m",
                  "--directory-read-rate", "none", "--seed-call-semantics", "profile")
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        root = base_url.removesuffix("/beta")
        with urllib.request.urlopen(urllib.request.Request(  # the directory learns a device once it is shown
                f"{base_url}/deviceManagement/windowsAutopilotDeviceIdentities/{DEVICE}",
                headers={"Authorization": "Bearer t"}), timeout=10) as response:
            assert json.load(response)["azureActiveDirectoryDeviceId"] == entra_device_id(DEVICE)
        bind = {"members@odata.bind": [f"{root}/v1.0/directoryObjects/{member}"]}
        assert send(f"{base_url}/groups/{GROUP}", "PATCH", bind)[0] == 204
        status, headers = send(f"{base_url}/groups/{GROUP}", "PATCH", bind)
        assert status == 429 and int(headers["Retry-After"]) >= 1  # one directory write per minute
        assert send(f"{base_url}/groups/{SYNCED}/members/$ref", "POST", {"@odata.id": bind["members@odata.bind"][0]}
                    )[0] == 400
        assert post(base_url, DEVICE) == 404  # profile semantics: the device has no profile
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "seed call semantics profile" in err and "1 static, 1 synced" in err
