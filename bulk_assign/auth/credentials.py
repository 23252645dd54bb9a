"""App-only credentials: a client secret from the environment, or a certificate from a PEM file.

The secret is read only from ``BULK_ASSIGN_CLIENT_SECRET``: a flag value would end up in shell history
and in ``ps`` output for every user on the machine. The certificate file holds the private key and the
certificate; Entra identifies the certificate by its SHA-1 thumbprint (the ``x5t`` header of the signed
client assertion), which is computed here so nobody has to copy it from the portal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .. import redact
from ..errors import AuthenticationError, UsageError

CLIENT_SECRET_ENV = "BULK_ASSIGN_CLIENT_SECRET"  # noqa: S105 - a variable name
CERTIFICATE_PASSWORD_ENV = "BULK_ASSIGN_CERTIFICATE_PASSWORD"  # noqa: S105 - a variable name


def client_secret_from(environ: Mapping[str, str]) -> str:
    """The client secret from the environment; a clear error (naming the variable, not a value) if unset."""
    secret = environ.get(CLIENT_SECRET_ENV, "").strip()
    if not secret:
        raise AuthenticationError(
            f"--auth client-secret needs the app's client secret in the environment variable "
            f"{CLIENT_SECRET_ENV} (it is never accepted as a flag)"
        )
    redact.register(secret)
    return secret


@dataclass(frozen=True)
class CertificateCredential:
    """What MSAL needs to sign a client assertion; the key never appears in ``repr``."""

    thumbprint: str  # SHA-1, upper-case hex, as the Entra portal shows it
    subject: str
    not_after: dt.datetime
    private_key_pem: str = field(repr=False)

    def for_msal(self) -> dict[str, str]:
        return {"private_key": self.private_key_pem, "thumbprint": self.thumbprint}


def load_certificate(
    path: Path, environ: Mapping[str, str], *, now: dt.datetime | None = None
) -> CertificateCredential:
    """Read a PEM holding a private key and its certificate (password, if any, from the environment)."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"--certificate {path}: cannot read it ({exc.strerror or exc})") from None
    password = environ.get(CERTIFICATE_PASSWORD_ENV)
    redact.register(password)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise UsageError(
            f"--certificate {path}: the private key is encrypted; put its password in {CERTIFICATE_PASSWORD_ENV}"
        ) from None
    except ValueError:
        raise UsageError(
            f"--certificate {path}: no usable PEM private key in it (it must hold the key and the certificate)"
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise UsageError(
            f"--certificate {path}: no PEM certificate in it (it must hold the key and the certificate)"
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    credential = CertificateCredential(
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Entra's x5t is SHA-1
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        private_key_pem=key_pem,
    )
    if credential.not_after <= (now or dt.datetime.now(dt.UTC)):
        raise AuthenticationError(
            f"--certificate {path}: the certificate ({credential.subject}, thumbprint {credential.thumbprint}) "
            f"expired on {credential.not_after:%Y-%m-%d}; upload a new one to the app registration"
        )
    return credential


__all__ = [
    "CERTIFICATE_PASSWORD_ENV",
    "CLIENT_SECRET_ENV",
    "CertificateCredential",
    "client_secret_from",
    "load_certificate",
]
