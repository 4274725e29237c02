"""Accessors for what the running app holds: its settings and its key store."""

from __future__ import annotations

from flask import current_app

from idp.config import Settings
from idp.keys import KeyStore


def settings() -> Settings:
    s: Settings = current_app.extensions["idp.settings"]
    return s


def keystore() -> KeyStore:
    k: KeyStore = current_app.extensions["idp.keys"]
    return k
