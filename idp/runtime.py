"""Accessors for what the running app holds: its settings and its key store."""

from __future__ import annotations

from flask import current_app

from idp.config import Settings
from idp.keys import RSA, KeyStore


def settings() -> Settings:
    s: Settings = current_app.extensions["idp.settings"]
    return s


def keystore(kind: str = RSA) -> KeyStore:
    """The key ring of one key type: RSA (SAML, RS256) by default, or EC (ES256)."""
    k: KeyStore = current_app.extensions["idp.keys" if kind == RSA else f"idp.keys.{kind}"]
    return k
