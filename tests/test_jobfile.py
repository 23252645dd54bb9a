"""Job files: key spelling, paths, secrets, unknown keys, TOML errors, click precedence, the sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from bulk_assign.cli.jobfile import is_secret_key, job_keys, job_path_keys, load_job_file
from bulk_assign.cli.main import run_command, run_options
from bulk_assign.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
RUN_FLAGS = {"target", "filter", "format", "id-column", "graph-url", "concurrency", "rate", "max-attempts", "limit",
             "ca-bundle", "out", "dry-run", "no-verify"}
# Options of the overnight work that the sample uses; the CLI gains them with issue 5.
OVERNIGHT_FLAGS = {"resume", "deadline", "max-runtime", "max-failure-rate"}


def write(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_become_click_names_and_values_keep_their_types(tmp_path: Path) -> None:
    path = write(tmp_path, 'target = "group:abc"\nrate = "100/20s"\nmax-attempts = 8\ndry-run = true\n'
                           'no-verify = true\nconcurrency = 4\n')
    assert load_job_file(path, RUN_FLAGS) == {"target": "group:abc", "rate": "100/20s", "max_attempts": 8,
                                              "dry_run": True, "no_verify": True, "concurrency": 4}


def test_relative_paths_resolve_against_the_job_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write(jobs, 'input = "devices.csv"\nout = "../results/wave1"\nca-bundle = "/etc/ssl/ca.pem"\n'
                'target = "all-devices"\n')
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    values = load_job_file(Path("jobs/job.toml"), RUN_FLAGS)
    assert values["input"] == str(jobs / "devices.csv")
    assert Path(values["out"]).resolve() == (tmp_path / "results" / "wave1").resolve()
    assert values["ca_bundle"] == "/etc/ssl/ca.pem"
    assert values["target"] == "all-devices"  # not a path key: untouched


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    values = load_job_file(write(tmp_path, 'out = "~/reports"\n'), RUN_FLAGS)
    assert values["out"] == str(tmp_path / "home" / "reports")


def test_path_values_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'out' must be a path in quotes"):
        load_job_file(write(tmp_path, "out = 5\n"), RUN_FLAGS)


@pytest.mark.parametrize("key", ["client-secret", "secret", "access-token", "token", "password", "client_secret",
                                 "certificate-password", "refresh-token"])
def test_secrets_are_refused_even_if_allowed(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'{key} = "hunter2"\n')
    with pytest.raises(UsageError) as info:
        load_job_file(path, RUN_FLAGS | {key})
    message = str(info.value)
    assert str(path) in message and key in message
    assert "BULK_ASSIGN_CLIENT_SECRET" in message and "BULK_ASSIGN_ACCESS_TOKEN" in message
    assert "hunter2" not in message


def test_token_cache_is_not_a_secret() -> None:
    assert not is_secret_key("token-cache") and not is_secret_key("auth") and is_secret_key("Access_Token")


def test_unknown_key_names_file_key_and_close_matches(tmp_path: Path) -> None:
    path = write(tmp_path, "max-atempts = 3\n")
    with pytest.raises(UsageError) as info:
        load_job_file(path, RUN_FLAGS)
    message = str(info.value)
    assert str(path) in message and "'max-atempts'" in message and "did you mean 'max-attempts'" in message
    with pytest.raises(UsageError, match="did you mean 'max-attempts'"):
        load_job_file(write(tmp_path, "max_attempts = 3\n"), RUN_FLAGS)


def test_unknown_key_without_close_match_lists_the_keys(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown key 'zzz'; known keys: .*concurrency.*target"):
        load_job_file(write(tmp_path, "zzz = 1\n"), RUN_FLAGS)


def test_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'target' takes a single value"):
        load_job_file(write(tmp_path, "[target]\nkind = 'group'\n"), RUN_FLAGS)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'target = "all-devices"\nrate = \nlimit = 5\n')
    with pytest.raises(UsageError) as info:
        load_job_file(path, RUN_FLAGS)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such job file"):
        load_job_file(tmp_path / "missing.toml", RUN_FLAGS)
    with pytest.raises(UsageError, match="is a folder"):
        load_job_file(tmp_path, RUN_FLAGS)
    path = tmp_path / "utf16.toml"
    path.write_bytes('target = "all-devices"\n'.encode("utf-16"))
    with pytest.raises(UsageError, match=r"not UTF-8|not valid TOML"):
        load_job_file(path, RUN_FLAGS)


def test_toml_local_time_becomes_hh_mm(tmp_path: Path) -> None:
    assert load_job_file(write(tmp_path, "deadline = 06:30:00\n"), {"deadline"}) == {"deadline": "06:30"}


def test_job_keys_of_the_run_command_map_flags_to_parameter_names() -> None:
    keys = job_keys(run_command)
    assert keys["input"] == "input_path"
    assert keys["out"] == "out_dir" and keys["filter"] == "filter_" and keys["format"] == "fmt"
    assert keys["max-attempts"] == "max_attempts" and keys["no-verify"] == "no_verify"
    assert keys["read-before-write"] == "read_before_write"  # read-before-write = false turns the default off
    assert RUN_FLAGS | {"input"} <= set(keys)
    assert {"input", "out", "ca-bundle"} <= job_path_keys(run_command)
    assert "target" not in job_path_keys(run_command)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@run_options
def echo_command(input_path: Path, **options: Any) -> None:
    click.echo(f"input={input_path}")
    for name in ("target", "graph_url", "max_attempts", "out_dir", "dry_run", "concurrency"):
        click.echo(f"{name}={options[name]!r}")


def run_echo(job: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    default_map = load_job_file(job, job_keys(echo_command), path_keys=job_path_keys(echo_command))
    result = CliRunner().invoke(echo_command, list(args), default_map=default_map, env=env or {},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return dict(line.split("=", 1) for line in result.output.splitlines())


def test_precedence_flag_over_environment_over_job_file_over_default(tmp_path: Path) -> None:
    job = write(tmp_path, 'input = "devices.csv"\ntarget = "all-devices"\ngraph-url = "https://job.example/beta"\n'
                          'max-attempts = "3"\nout = "reports"\n')
    out = run_echo(job, env={"BULK_ASSIGN_GRAPH_URL": ""})
    assert out["input"] == str(tmp_path / "devices.csv")
    assert out["target"] == "'all-devices'" and out["max_attempts"] == "3"
    assert out["graph_url"] == "'https://job.example/beta'"  # job file over default
    assert out["out_dir"] == repr(tmp_path / "reports")
    assert out["concurrency"] == "None" and out["dry_run"] == "None"  # defaults stay None for Settings
    out = run_echo(job, env={"BULK_ASSIGN_GRAPH_URL": "https://env.example/beta"})
    assert out["graph_url"] == "'https://env.example/beta'"  # environment over job file
    out = run_echo(job, "--graph-url", "https://flag.example/beta", "--max-attempts", "5", "other.csv",
                   env={"BULK_ASSIGN_GRAPH_URL": "https://env.example/beta"})
    assert out["graph_url"] == "'https://flag.example/beta'" and out["max_attempts"] == "5"  # flag over all
    assert out["input"] == "other.csv"


def test_the_sample_job_file_is_valid_and_documents_every_key() -> None:
    sample = REPO / "samples" / "job.toml"
    allowed = {**job_keys(run_command), **{flag: flag.replace("-", "_") for flag in OVERNIGHT_FLAGS}}
    values = load_job_file(sample, allowed)
    assert values["input_path"] == str(REPO / "samples" / "devices.csv")
    assert values["target"].startswith("group:")
    text = sample.read_text(encoding="utf-8")
    for flag in RUN_FLAGS | OVERNIGHT_FLAGS | {"input"}:
        assert f"\n{flag} = " in text or f"\n# {flag} = " in text, f"{flag} is not documented in samples/job.toml"
    assert "BULK_ASSIGN_CLIENT_SECRET" in text and "environment variable  >  this file" in text
