"""Planted symlinks and unsafe folders: bulk-assign never writes, truncates or chmods through a link."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bulk_assign.auth.cache import CacheStore, write_private_file
from bulk_assign.errors import UsageError
from bulk_assign.safefs import check_dir, write_atomic
from bulk_assign.store.folderlock import FolderLock
from bulk_assign.store.history import merge_reports
from bulk_assign.store.journal import IntentJournal, seal_torn_tail
from bulk_assign.store.reports import ReportWriter

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks and modes: POSIX")

PRECIOUS = b"precious, not bulk-assign's\n"


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(PRECIOUS)
    path.chmod(0o644)
    return path


def untouched(path: Path) -> bool:
    return path.read_bytes() == PRECIOUS and stat.S_IMODE(path.stat().st_mode) == 0o644


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULK_ASSIGN_")}
    return subprocess.run([sys.executable, "-m", "bulk_assign", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("name", ["results.jsonl", "results.csv", "failures.csv", "invalid.csv", "run.log"])
def test_cli_refuses_a_report_planted_as_a_symlink(tmp_path: Path, name: str) -> None:
    """Hardening #4: each report file name, planted as a link to a file of the user's."""
    target = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(target)
    devices = tmp_path / "d.csv"
    devices.write_text(f"id\n{uuid.uuid4()}\nnot-a-guid\n")
    done = cli("run", str(devices), "--target", "all-devices", "--dry-run", "--resume", "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(out / name) in done.stderr and "symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert untouched(target)


def test_journal_and_lock_and_torn_tail_never_follow_a_link(tmp_path: Path) -> None:
    target = victim(tmp_path)
    for name in ("journal.log", ".bulk-assign.lock", "results.jsonl"):
        out = tmp_path / name.strip(".")
        out.mkdir()
        (out / name).symlink_to(target)
        with pytest.raises(UsageError, match="symbolic link"):
            if name == "journal.log":
                IntentJournal(out, "r")
            elif name == ".bulk-assign.lock":
                FolderLock(out).acquire()
            else:
                seal_torn_tail(out / name)  # opened r+b to truncate a torn tail: refused, not followed
    assert untouched(target)


async def test_atomic_rewrites_replace_planted_links_and_tmp_names(tmp_path: Path) -> None:
    """summary.json and the merged CSVs: a link at the name is replaced, a planted old-style .tmp ignored."""
    target = victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json.tmp", "results.csv.tmp", "failures.csv.tmp", "invalid.csv.tmp"):
        (out / name).symlink_to(target)
    write_atomic(out / "summary.json", b"{}")
    merge_reports(out)
    assert untouched(target)
    (out / "summary.json").unlink()
    (out / "summary.json").symlink_to(target)
    write_atomic(out / "summary.json", b"{}")
    assert not (out / "summary.json").is_symlink() and untouched(target)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_unsafe_output_folders_are_refused_by_name(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(UsageError, match=f"{link} is a symbolic link"):
        FolderLock(link).acquire()
    with pytest.raises(UsageError, match=f"{link} is a symbolic link"):
        ReportWriter(link)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match=f"{shared} can be written by other users"):
        FolderLock(shared).acquire()
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with pytest.raises(UsageError, match="can be written by other users"):
        check_dir(sticky)
    if os.geteuid() == 0:  # only root can give a folder away
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
        with pytest.raises(UsageError, match=f"{foreign} belongs to another user"):
            check_dir(foreign)


def test_cli_names_a_world_writable_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    devices = tmp_path / "d.csv"
    devices.write_text(f"id\n{uuid.uuid4()}\n")
    done = cli("run", str(devices), "--target", "all-devices", "--dry-run", "--out", str(out))
    assert done.returncode == 2 and str(out) in done.stderr and "Traceback" not in done.stderr


def test_token_cache_never_reads_or_chmods_through_a_link(tmp_path: Path) -> None:
    target = victim(tmp_path)
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    (folder / "token-cache.json").symlink_to(target)
    store = CacheStore(folder / "token-cache.json", platform="linux")
    with pytest.raises(UsageError, match="symbolic link"):
        store.load()
    assert untouched(target)  # the old code chmod-ed the link's target to 0600
    linked = tmp_path / "cache-link"
    linked.symlink_to(folder, target_is_directory=True)
    with pytest.raises(UsageError, match=f"token cache folder {linked} is a symbolic link"):
        write_private_file(linked / "token-cache.json", b"{}")
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    with pytest.raises(UsageError, match="can be written by other users"):
        write_private_file(open_folder / "token-cache.json", b"{}")


def test_stale_temporaries_of_a_killed_rewrite_are_removed_and_nothing_else(tmp_path: Path) -> None:
    from bulk_assign.safefs import remove_stale_temporaries

    stale = tmp_path / ".index.txt.0123456789ab.tmp"
    stale.write_text("half")
    keep = [tmp_path / "index.txt", tmp_path / ".index.txt.tmp", tmp_path / ".x.0123456789ab.tmp.bak"]
    for path in keep:
        path.write_text("keep")
    (tmp_path / ".dir.0123456789ab.tmp").mkdir()
    assert remove_stale_temporaries(tmp_path) == [stale.name]
    assert not stale.exists() and all(p.exists() for p in keep) and (tmp_path / ".dir.0123456789ab.tmp").is_dir()
