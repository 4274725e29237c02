"""Accessors for what the running app holds (its settings and its key store), and what one request keeps."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from flask import current_app, has_request_context, request
from sqlalchemy import Select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from idp.config import Settings
from idp.extensions import db
from idp.keys import RSA, KeyStore


def settings() -> Settings:
    s: Settings = current_app.extensions["idp.settings"]
    return s


def keyed_digest(message: str) -> str:
    """HMAC-SHA256 of ``message`` with the app's secret key (hex): a value that can be stored, or sent ahead, and
    that nobody without the secret can tell or reverse. Instances that share IDP_SECRET_KEY agree on it."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


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


def forget_at_transaction_end(name: str) -> None:
    """Drop the look-ups kept under ``name`` at every commit and rollback of the request's transaction: a commit
    may follow a wait (a directory asked again) or change the rows, a rollback may undo a change read back."""
    for ending in ("after_commit", "after_soft_rollback"):
        sa_event.listen(Session, ending, lambda *_: forget_per_request(name))


class RequestRows(Generic[T]):
    """One row per key as the flows read it: selected by ``statement`` (its columns in the order of the fields of
    ``make``, a frozen dataclass; the key bound as ``key``) with one Core statement, since the ORM's loading cost
    more than the query, and kept for the rest of the request, until a commit or :meth:`forget`."""

    def __init__(self, name: str, statement: Select[Any], make: Callable[..., T]) -> None:
        self.name, self.statement, self.make = name, statement, make
        forget_at_transaction_end(name)

    def get(self, key: str) -> T | None:
        return per_request(self.name, key, lambda: self._read(key))

    def _read(self, key: str) -> T | None:
        session = db.session()  # the request's session, looked up once
        session.flush()  # a Core read does not autoflush: a change made earlier in this request is seen
        row = session.connection().execute(self.statement, {"key": key}).first()
        return self.make(*row) if row is not None else None

    def forget(self) -> None:
        """Registering, changing or removing a row invalidates what this request looked up."""
        forget_per_request(self.name)
