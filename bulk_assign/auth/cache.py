"""Where the delegated sign-in survives between runs: the MSAL token cache on disk.

The cache holds a refresh token that is good for up to 90 days, so it is treated like a password file:

* Windows and macOS: msal-extensions encrypts it (DPAPI, the login keychain). Neither needs a person at
  a desktop to unlock it for the user's own jobs.
* Linux: the libsecret keyring is usually locked or absent under cron/systemd, and a job that waits for
  a keyring prompt would wait all night, so the cache is a plain file that only its owner can read:
  created with mode 0600 (never briefly world-readable), replaced atomically (a crash mid-write never
  leaves half a cache), in a directory created with mode 0700.

Whichever is used is announced in one line (``CacheStore.description``), so nobody has to guess where
their refresh token lives. Next to the cache sits a small settings file remembering the tenant, client id
and authority of the last ``login``, so that ``bulk-assign run`` needs no sign-in flags afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import msal
import platformdirs

from ..errors import AuthenticationError
from ..safefs import check_dir, ensure_dir, open_read, write_atomic

log = logging.getLogger("bulk_assign.auth")

APP_NAME = "bulk-assign"
CACHE_FILE_NAME = "token-cache.json"
PRIVATE_FILE_MODE = 0o600


def default_cache_path() -> Path:
    """``~/.config/bulk-assign/token-cache.json`` on Linux, the platform equivalent elsewhere."""
    return platformdirs.user_config_path(APP_NAME) / CACHE_FILE_NAME


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that nobody but the owner can ever read it, atomically.

    The folder is created with mode 0700 and refused if it is a symlink, someone else's, or writable by
    others (``safefs.check_dir``). The temporary file gets a random name, ``O_EXCL``/``O_NOFOLLOW`` and mode
    0600 at creation, in the target's folder (so ``os.replace`` is a rename on one file system).
    """
    ensure_dir(path.parent, "token cache folder", mode=0o700)
    write_atomic(path, data, mode=PRIVATE_FILE_MODE)


def _read_private_file(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist; tightens a file others can read, with a warning.

    Opened without following a symlink, and tightened through the open descriptor (``fchmod``), so a
    link planted as the cache can neither be read nor have its target's mode changed.
    """
    if not path.parent.exists():
        return None
    check_dir(path.parent, "token cache folder")
    try:
        handle = open_read(path)
    except FileNotFoundError:
        return None
    with handle:
        info = os.fstat(handle.fileno())
        if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s was readable by other users; restricting it to mode 0600", path)
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
        return handle.read()


class _Backend:
    """Bytes in, bytes out: the 0600 file, or an msal-extensions encrypted persistence."""

    description = ""

    def load(self) -> str | None:
        raise NotImplementedError

    def save(self, text: str) -> None:
        raise NotImplementedError

    def delete(self) -> bool:
        raise NotImplementedError


class _PrivateFile(_Backend):
    def __init__(self, path: Path, note: str = "") -> None:
        self.path = path
        self.description = f"token cache: {path} (plain file readable only by you, mode 0600{note})"

    def load(self) -> str | None:
        data = _read_private_file(self.path)
        return None if data is None else data.decode("utf-8")

    def save(self, text: str) -> None:
        write_private_file(self.path, text.encode("utf-8"))

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class _Encrypted(_Backend):
    def __init__(self, persistence: Any, path: Path, kind: str) -> None:
        self._persistence = persistence
        self.path = path
        self.description = f"token cache: {path} (encrypted with {kind})"

    def load(self) -> str | None:
        from msal_extensions.persistence import PersistenceNotFound

        try:
            text = self._persistence.load()
        except PersistenceNotFound:
            return None
        return str(text) if text else None

    def save(self, text: str) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._persistence.save(text)

    def delete(self) -> bool:
        existed = self.load() is not None
        if existed:
            self._persistence.save("{}")  # the keychain entry outlives the signal file otherwise
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return existed


def _encrypted_backend(path: Path, platform: str) -> _Backend | None:
    """DPAPI on Windows, the keychain on macOS; None where that needs an unlocked desktop keyring."""
    if not (platform.startswith("win") or platform == "darwin"):
        return None
    kind = "Windows DPAPI" if platform.startswith("win") else "the macOS keychain"
    try:
        from msal_extensions import build_encrypted_persistence

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _Encrypted(build_encrypted_persistence(str(path)), path, kind)
    except Exception as exc:  # unavailable here: say so and fall back to the private file
        log.warning("encrypted token cache unavailable (%s: %s); using a 0600 file", type(exc).__name__, exc)
        return None


class CacheStore:
    """Loads and saves one MSAL ``SerializableTokenCache`` (and the last login's settings) at one place."""

    def __init__(self, path: Path | None = None, *, platform: str = sys.platform) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        backend = _encrypted_backend(self.path, platform)
        self._backend: _Backend = backend or _PrivateFile(self.path)
        self.settings_path = self.path.with_name(self.path.name + ".settings.json")

    @property
    def description(self) -> str:
        """One line saying where the cache is and how it is protected (never its contents)."""
        return self._backend.description

    @property
    def encrypted(self) -> bool:
        return isinstance(self._backend, _Encrypted)

    def load(self) -> msal.SerializableTokenCache:
        """The cache as saved last time; an empty cache if there is none yet."""
        cache = msal.SerializableTokenCache()
        try:
            text = self._backend.load()
            if text:
                cache.deserialize(text)
        except (OSError, ValueError) as exc:
            raise AuthenticationError(
                f"the token cache {self.path} cannot be read ({type(exc).__name__}); "
                "run `bulk-assign logout` and `bulk-assign login` to start afresh"
            ) from None
        return cache

    def save(self, cache: msal.SerializableTokenCache) -> bool:
        """Persist ``cache`` if MSAL changed it (a renewed or rotated token); True if it wrote."""
        if not cache.has_state_changed:
            return False
        self._backend.save(cache.serialize())
        return True

    def delete(self) -> bool:
        """Forget everything: the cache and the remembered login settings. True if a cache existed."""
        existed = self._backend.delete()
        with contextlib.suppress(FileNotFoundError):
            self.settings_path.unlink()
        return existed

    def load_settings(self) -> dict[str, str]:
        """Tenant, client id, authority and cloud of the last ``login`` ({} if none)."""
        try:
            data = json.loads((_read_private_file(self.settings_path) or b"{}").decode("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def save_settings(self, settings: dict[str, str | None]) -> None:
        clean = {k: v for k, v in settings.items() if v}
        write_private_file(self.settings_path, json.dumps(clean, indent=2).encode("utf-8"))

    def __repr__(self) -> str:
        return f"CacheStore({self.description!r})"


def cached_accounts(cache: msal.SerializableTokenCache) -> list[dict[str, Any]]:
    """Accounts recorded in ``cache`` (username, realm, home_account_id, environment); never secrets."""
    return [dict(a) for a in cache.search(msal.TokenCache.CredentialType.ACCOUNT)]


__all__ = ["CacheStore", "cached_accounts", "default_cache_path", "write_private_file"]
