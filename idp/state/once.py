"""Single-use identifiers (SAML request and logout IDs, client-assertion jti): the first claim wins, across
every process and instance."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from idp.clock import now
from idp.extensions import db
from idp.state import PREFIX, redis_client, ttl_seconds
from idp.store import ConsumedId

# On PostgreSQL, RETURNING says whether the row went in (psycopg reports no rowcount for an INSERT); SQLite
# reports its rowcount, and RETURNING would need SQLite 3.35.
_INSERTS = {
    "sqlite": sqlite.insert(ConsumedId).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(ConsumedId).on_conflict_do_nothing().returning(ConsumedId.namespace),
}


def claim(namespace: str, value: str, keep_until: datetime, *, commit: bool = False) -> bool:
    """Record ``value`` as used in ``namespace`` until ``keep_until``; False when it was used before.

    ``namespace`` is at most 64 characters (callers key long names by a digest). In Redis the claim takes
    effect at once (SET NX). In the database it is inserted at once, where a concurrent claim waits on the
    primary key and loses; it is committed with the caller's transaction, or at once with ``commit``:
    for a value that must stay used even when the request then fails (a client assertion's jti)."""
    client = redis_client()
    if client is not None:
        key = f"{PREFIX}once:{namespace}:{hashlib.sha256(value.encode()).hexdigest()}"
        return bool(client.set(key, "1", nx=True, ex=ttl_seconds(keep_until, now())))
    if secrets.randbelow(20) == 0:  # occasional cleanup keeps the table small without a job
        db.session.execute(delete(ConsumedId).where(ConsumedId.expires_at < now()))
    # ON CONFLICT DO NOTHING (SQLite and PostgreSQL alike): a concurrent claim of the same value waits on the
    # primary key and then inserts nothing. One statement, no savepoint, nothing raised.
    dialect = db.engine.dialect.name
    result = db.session.connection().execute(
        _INSERTS[dialect], {"namespace": namespace, "value": value[:512], "expires_at": keep_until})
    inserted = result.first() is not None if dialect == "postgresql" else result.rowcount == 1
    if inserted and commit:
        db.session.commit()
    return inserted
