"""Accessors for what the running app holds (its settings and its key store), and what one request keeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, has_request_context, request

from idp.config import Settings
from idp.keys import RSA, KeyStore


def settings() -> Settings:
    s: Settings = current_app.extensions["idp.settings"]
    return s


def keystore(kind: str = RSA) -> KeyStore:
    """The key ring of one key type: RSA (SAML, RS256) by default, or EC (ES256)."""
    k: KeyStore = current_app.extensions["idp.keys" if kind == RSA else f"idp.keys.{kind}"]
    return k


T = TypeVar("T")


def per_request(name: str, key: str, load: Callable[[], T]) -> T:
    """``load()`` once per request for each ``key`` of the look-ups kept under ``name`` (every time outside a
    request): what several steps of one request ask for is read once."""
    if not has_request_context():
        return load()
    memo: dict[str, Any] = request.environ.setdefault(name, {})
    if key not in memo:
        memo[key] = load()
    found: T = memo[key]
    return found


def forget_per_request(name: str) -> None:
    """Drop this request's look-ups kept under ``name``: the next ask reads again."""
    if has_request_context():
        request.environ.pop(name, None)
