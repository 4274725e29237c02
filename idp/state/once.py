"""Single-use identifiers (SAML request and logout IDs, client-assertion jti): the first claim wins, across
every process and instance."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime

import redis
from sqlalchemy import delete
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from idp.clock import now
from idp.errors import first_line
from idp.extensions import db
from idp.state import PREFIX, insert_if_new, inserted, redis_client, ttl_seconds
from idp.store import ConsumedId

log = logging.getLogger(__name__)
_HELD = "idp.once.held"  # Redis keys claimed in the session's transaction

_INSERTS = insert_if_new(ConsumedId.__table__)


def claim(namespace: str, value: str, keep_until: datetime, *, commit: bool = False) -> bool:
    """Record ``value`` as used in ``namespace`` until ``keep_until``; False when it was used before.

    ``namespace`` is at most 64 characters (callers key long names by a digest). In Redis the claim takes
    effect at once (SET NX). In the database it is inserted at once, where a concurrent claim waits on the
    primary key and loses. Either way it is kept when the caller's transaction commits and given back when it
    does not, or kept at once with ``commit``: for a value that must stay used even when the request then fails
    (a client assertion's jti)."""
    client = redis_client()
    if client is not None:
        key = f"{PREFIX}once:{namespace}:{hashlib.sha256(value.encode()).hexdigest()}"
        if not commit:
            # As in the database, the claim goes with the caller's transaction: given back if that does not
            # commit (a 503 from the database after it), so that the browser's retry is not "already used".
            # The transaction first: a database that is down fails the request before anything is claimed.
            db.session.connection()
        won = bool(client.set(key, "1", nx=True, ex=ttl_seconds(keep_until, now())))
        if won and not commit:
            db.session.info.setdefault(_HELD, []).append(key)
        return won
    if secrets.randbelow(20) == 0:  # occasional cleanup keeps the table small without a job
        db.session.execute(delete(ConsumedId).where(ConsumedId.expires_at < now()))
    # A concurrent claim of the same value waits on the primary key and then inserts nothing.
    won = inserted(db.session.connection().execute(
        _INSERTS[db.engine.dialect.name], {"namespace": namespace, "value": value[:512], "expires_at": keep_until}))
    if won and commit:
        db.session.commit()
    return won


@sa_event.listens_for(Session, "after_commit")
def _kept(session: Session) -> None:
    if not session.in_nested_transaction():  # a released savepoint is not the caller's commit
        session.info.pop(_HELD, None)


@sa_event.listens_for(Session, "after_transaction_end")
def _given_back(session: Session, transaction: SessionTransaction) -> None:
    # After _kept on a commit: what is still held here was claimed in a transaction that did not commit.
    if transaction.parent is not None:
        return
    held = session.info.pop(_HELD, None)
    client = redis_client() if held else None
    if client is not None:
        try:
            client.delete(*held)
        except redis.RedisError as exc:
            log.warning("single-use identifiers not given back after a failed request: %s", first_line(exc))
