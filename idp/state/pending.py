"""Requests parked between two browser hops (a SAML or OIDC request waiting for a sign-in, a Single Logout
chain going from SP to SP): JSON documents under a random id, with an expiry."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import bindparam, delete, select

from idp.clock import now
from idp.extensions import db
from idp.state import PREFIX, changed, from_epoch, redis_client, to_epoch, ttl_seconds
from idp.store import PendingRequest

# Core statements for the reads and deletes every parked sign-in makes (no ORM identity map needed).
_TABLE = PendingRequest.__table__
_BY_ID = select(_TABLE.c.kind, _TABLE.c.data, _TABLE.c.expires_at).where(_TABLE.c.id == bindparam("id"))
_PUT = _TABLE.insert()
_TAKE = _TABLE.delete().where(_TABLE.c.id == bindparam("id"))
_LOCK = _TABLE.update().where(_TABLE.c.id == bindparam("row")).values(id=_TABLE.c.id)
_REPLACE = _TABLE.update().where(_TABLE.c.id == bindparam("row")).values(
    kind=bindparam("new_kind"), data=bindparam("new_data"), expires_at=bindparam("until"))


def _key(pending_id: str) -> str:
    return f"{PREFIX}pending:{pending_id}"


def put(kind: str, data: dict[str, Any], expires_at: datetime) -> str:
    """Store a new document and commit; returns its id."""
    pending_id = secrets.token_urlsafe(32)
    client = redis_client()
    if client is not None:
        client.set(_key(pending_id), _document(kind, data, expires_at), ex=ttl_seconds(expires_at, now()))
        return pending_id
    if secrets.randbelow(20) == 0:  # occasional cleanup keeps the table small without a job
        db.session.execute(delete(PendingRequest).where(PendingRequest.expires_at < now()))
    db.session.connection().execute(_PUT, {"id": pending_id, "kind": kind, "data": data, "expires_at": expires_at})
    db.session.commit()
    return pending_id


def replace(kind: str, pending_id: str, data: dict[str, Any], expires_at: datetime, *, read: dict[str, Any]) -> bool:
    """Store a new version of a document if it is still as the caller ``read`` it, and commit. False when it was
    changed or taken meanwhile (a concurrent request moved on or finished with it), which must not be undone."""
    client = redis_client()
    if client is not None:
        with client.pipeline() as pipe:
            try:
                pipe.watch(_key(pending_id))  # type: ignore[no-untyped-call]  # EXEC fails on any write since
                raw = pipe.get(_key(pending_id))
                if raw is None or json.loads(raw)["data"] != read:
                    return False
                pipe.multi()
                pipe.set(_key(pending_id), _document(kind, data, expires_at), ex=ttl_seconds(expires_at, now()))
                pipe.execute()
            except redis.WatchError:
                return False
        return True
    # A no-op update first: it takes the row's lock (SQLite's write lock), so the read below is the last word.
    if changed(db.session.connection().execute(_LOCK, {"row": pending_id})) != 1 or (
            db.session.connection().execute(_BY_ID, {"id": pending_id}).one().data != read):
        db.session.rollback()
        return False
    db.session.connection().execute(_REPLACE, {"row": pending_id, "new_kind": kind, "new_data": data,
                                               "until": expires_at})
    db.session.commit()
    return True


def _document(kind: str, data: dict[str, Any], expires_at: datetime) -> str:
    return json.dumps({"kind": kind, "data": data, "expires_at": to_epoch(expires_at)})


def get(kind: str, pending_id: str) -> dict[str, Any] | None:
    """The document, or None when it is missing, expired or of another kind."""
    if not pending_id or len(pending_id) > 64:
        return None
    client = redis_client()
    if client is not None:
        raw = client.get(_key(pending_id))
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc["kind"] != kind or from_epoch(doc["expires_at"]) <= now():
            return None
        data: dict[str, Any] = doc["data"]
        return data
    db.session.flush()  # a Core read does not autoflush
    row = db.session.connection().execute(_BY_ID, {"id": pending_id}).first()
    if row is None or row.kind != kind or row.expires_at <= now():
        return None
    return dict(row.data)


def take(pending_id: str) -> bool:
    """Delete the document and commit; True for the one caller that deleted it (single use)."""
    client = redis_client()
    if client is not None:
        return bool(client.delete(_key(pending_id)))
    db.session.flush()
    result = db.session.connection().execute(_TAKE, {"id": pending_id})
    db.session.commit()
    return result.rowcount == 1
