"""Service-account passwords: read from a file or an environment variable named in the settings, or stored
encrypted in the database (Fernet, key derived from the app's secret key). Never stored or logged in clear.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from idp.authn.connectors.settings import DirectoryConfig
from idp.errors import DirectoryUnavailable

_INFO = b"idp directory bind password v1"


def _fernet() -> Fernet:
    secret = str(current_app.config["SECRET_KEY"]).encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(password: str) -> str:
    return _fernet().encrypt(password.encode()).decode()


def decrypt(token: str, directory: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        # The secret key changed since the password was stored: the admin must set it again.
        raise DirectoryUnavailable(
            "The directory is unavailable right now. Try again in a few minutes.",
            f"directory {directory}: the stored bind password cannot be decrypted (IDP_SECRET_KEY changed?); "
            f"set it again with `idp directory add {directory} ... --bind-password-stdin`",
        ) from None


def read_file(path: Path, directory: str) -> str:
    """A bind_password_file's password (its text, stripped), or DirectoryUnavailable saying what is wrong."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        why = f"cannot read bind_password_file {path} ({exc.strerror})"
    except UnicodeDecodeError:
        why = f"bind_password_file {path} is not UTF-8 text"
    else:
        if value:
            return value
        # An empty password makes an LDAP simple bind anonymous (RFC 4513 5.1.2): never the service's bind.
        why = f"bind_password_file {path} is empty"
    raise DirectoryUnavailable("The directory is unavailable right now. Try again in a few minutes.",
                               f"directory {directory}: {why}")


def bind_password(cfg: DirectoryConfig, encrypted: str | None) -> str | None:
    """The service account's password, from wherever the settings say it is."""
    if encrypted is not None:
        return decrypt(encrypted, cfg.name)
    if cfg.bind_password_file is not None:
        return read_file(cfg.bind_password_file, cfg.name)
    if cfg.bind_password_env is not None:
        value = os.environ.get(cfg.bind_password_env)
        if not value:
            raise DirectoryUnavailable("The directory is unavailable right now. Try again in a few minutes.",
                                       f"directory {cfg.name}: {cfg.bind_password_env} is not set")
        return value
    return None
