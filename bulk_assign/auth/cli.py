"""Click glue: the shared sign-in options, and the ``login`` / ``logout`` / ``whoami`` commands.

``bulk_assign/cli.py`` adds the options to ``run`` with ``@auth_options`` and registers the commands with
``cli.add_command(login_command, "login")`` and so on. Every command here turns ``BulkAssignError`` into
one ``bulk-assign: ...`` line on stderr and its exit code (3 authentication, 2 usage): never a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from ..errors import BulkAssignError
from .clouds import CLOUDS
from .options import AUTH_KINDS, CLIENT_ENV, TENANT_ENV, AuthOptions

F = TypeVar("F", bound=Callable[..., Any])
_KEYS = ("auth", "tenant_id", "client_id", "authority", "token_cache", "certificate", "cloud")
_PATH = click.Path(dir_okay=False, path_type=Path)

_TENANT = click.option("--tenant-id", envvar=TENANT_ENV, metavar="TENANT", help="Directory (tenant) id or domain.")
_CLIENT = click.option(
    "--client-id", envvar=CLIENT_ENV, metavar="APP_ID", help="Application (client) id of the app registration."
)
_AUTHORITY = click.option(
    "--authority",
    envvar="BULK_ASSIGN_AUTHORITY",
    metavar="URL",
    help="Sign-in authority overriding the cloud's (sovereign cloud, local identity provider); "
    "instance discovery is turned off.",
)
_CACHE = click.option(
    "--token-cache",
    envvar="BULK_ASSIGN_TOKEN_CACHE",
    type=_PATH,
    help="Token cache file (default: bulk-assign/token-cache.json in your config directory).",
)
_CLOUD = click.option(
    "--cloud",
    envvar="BULK_ASSIGN_CLOUD",
    type=click.Choice(list(CLOUDS)),
    default="global",
    show_default=True,
    help="Microsoft cloud: sets the Graph URL, the sign-in host and the scopes together.",
)
_AUTH = click.option(
    "--auth",
    envvar="BULK_ASSIGN_AUTH",
    type=click.Choice(AUTH_KINDS),
    help="delegated (a `bulk-assign login` account; the default when one is cached), client-secret "
    "(secret in BULK_ASSIGN_CLIENT_SECRET) or certificate (--certificate).",
)
_CERT = click.option(
    "--certificate",
    envvar="BULK_ASSIGN_CERTIFICATE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM file with the private key and certificate for --auth certificate.",
)
_CA = click.option(
    "--ca-bundle",
    envvar="BULK_ASSIGN_CA_BUNDLE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trust this CA bundle for sign-in (a proxy with TLS inspection).",
)


def auth_options(f: F) -> F:
    """Add ``--auth --tenant-id --client-id --authority --token-cache --certificate --cloud`` to a command."""
    for option in reversed((_AUTH, _TENANT, _CLIENT, _AUTHORITY, _CACHE, _CERT, _CLOUD)):
        f = option(f)
    return f


def auth_options_from(kwargs: dict[str, Any], *, ca_bundle: Path | None = None) -> AuthOptions:
    """Pop the ``@auth_options`` keys from click's kwargs (``--ca-bundle`` belongs to the caller)."""
    values = {key: kwargs.pop(key, None) for key in _KEYS}
    return AuthOptions(
        auth=values["auth"],
        tenant_id=values["tenant_id"] or None,
        client_id=values["client_id"] or None,
        authority=values["authority"] or None,
        token_cache=values["token_cache"],
        certificate=values["certificate"],
        cloud=values["cloud"] or "global",
        ca_bundle=ca_bundle,
    )


def _errors_exit(f: F) -> F:
    """BulkAssignError -> one line on stderr and its exit code; never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BulkAssignError as exc:
            click.echo(f"bulk-assign: {exc}", err=True)
            raise SystemExit(exc.exit_code) from None
        except OSError as exc:  # e.g. the token cache directory is not writable
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"bulk-assign:{where} {exc.strerror or exc}", err=True)
            raise SystemExit(2) from None

    return cast(F, wrapper)


def _stderr(line: str) -> None:
    click.echo(line, err=True)


@click.command("login")
@_TENANT
@_CLIENT
@_AUTHORITY
@_CACHE
@_CLOUD
@_CA
@click.option("--browser", is_flag=True, help="Interactive browser sign-in instead of device code.")
@_errors_exit
def login_command(browser: bool, ca_bundle: Path | None, **kwargs: Any) -> None:
    """Sign in once (device code by default) and keep the token cache for unattended runs."""
    logging.getLogger("msal").setLevel(logging.ERROR)  # its warnings name endpoints, not secrets; keep quiet
    from .signin import login  # msal loads only for the commands that sign in

    login(auth_options_from(kwargs, ca_bundle=ca_bundle), browser=browser, echo=_stderr)


@click.command("logout")
@_CACHE
@_errors_exit
def logout_command(**kwargs: Any) -> None:
    """Forget the signed-in account: delete the token cache."""
    from .signin import logout

    logout(auth_options_from(kwargs), echo=click.echo)


@click.command("whoami")
@_CACHE
@_errors_exit
def whoami_command(**kwargs: Any) -> None:
    """Who is signed in, in which tenant, and until when the cached access token is good (never the token)."""
    from .signin import whoami

    for number, identity in enumerate(whoami(auth_options_from(kwargs))):
        if number:
            click.echo("")
        for line in identity.lines():
            click.echo(line)


__all__ = ["auth_options", "auth_options_from", "login_command", "logout_command", "whoami_command"]
