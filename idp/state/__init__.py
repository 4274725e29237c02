"""Short-lived state that every process and instance must share: SSO sessions, login throttling counters,
single-use identifiers, parked requests and OIDC codes.

Each module here owns one kind of state and keeps it in Redis when ``IDP_REDIS_URL`` is set, in the database
otherwise (one instance, or several on PostgreSQL without Redis). Either way the same rules hold: expiry is
decided by comparing stored instants with :func:`idp.clock.now` (Redis TTLs only collect garbage, with a
margin), and a single use is decided by one atomic operation of the backend, never read-then-write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis
from flask import Flask, current_app
from sqlalchemy import Column, CursorResult, Insert, Label, Result, Table
from sqlalchemy.dialects import postgresql, sqlite

from idp.config import Settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

_CLIENT = "idp.redis"
PREFIX = "idp:"
# Redis keeps a key this much longer than its own expiry says, so a clock a little ahead of Redis's (or a
# frozen test clock) still finds it; the stored instant decides.
GRACE = timedelta(minutes=5)
# Seconds a Redis command may take before the request fails with 503 instead of hanging.
TIMEOUT = 2.0


def init_app(app: Flask, settings: Settings) -> None:
    if settings.redis_url is None:
        return
    app.extensions[_CLIENT] = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
        health_check_interval=30, retry_on_timeout=False,
    )


def drop_idle_connections() -> None:
    """Redis refused a write as a replica (a failover behind one address left the old primary up): the idle
    connections, the one that met it among them, are closed, so that the next commands connect to wherever the
    address leads now. (Not through redis-py's retry: a WATCHed transaction retries that without end.)"""
    client = redis_client()
    if client is not None:
        client.connection_pool.disconnect(inuse_connections=False)


def redis_client() -> redis.Redis | None:
    """The app's Redis client, or None when state lives in the database."""
    client: redis.Redis | None = current_app.extensions.get(_CLIENT)
    return client


def ttl_seconds(expires_at: datetime, now: datetime) -> int:
    """How long Redis keeps a key for something valid until ``expires_at``: at least a second, plus GRACE."""
    return max(1, int((expires_at - now + GRACE).total_seconds()))


def to_epoch(t: datetime) -> float:
    return t.timestamp()


def from_epoch(value: str | float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


D = TypeVar("D", bound="DataclassInstance")


def labelled(columns: Iterable[Column[Any]], prefix: str) -> list[Label[Any]]:
    """Columns under ``prefix`` + their names: in a statement that joins other tables (the user's, ...) they keep
    apart from those, and :func:`from_row` reads them back."""
    return [c.label(prefix + c.name) for c in columns]


def from_row(cls: type[D], row: Any, prefix: str = "", **given: Any) -> D:
    """The dataclass ``cls`` from a row (ORM or Core) holding its fields as ``prefix`` + field name; the fields
    in ``given`` are taken from there instead."""
    return cls(**{f.name: getattr(row, prefix + f.name) for f in fields(cls) if f.name not in given}, **given)


def insert_if_new(table: Table) -> dict[str, Insert]:
    """INSERT ... ON CONFLICT DO NOTHING into ``table``, per dialect, its values given when it runs; whether
    it inserted is :func:`inserted`. A concurrent insert of the same key waits on the primary key, then inserts
    nothing: one statement, no savepoint, nothing raised. PostgreSQL says whether the row went in by RETURNING
    (psycopg reports no row count for it); SQLite by its row count (RETURNING would need SQLite 3.35)."""
    key = next(iter(table.primary_key.columns))
    return {"sqlite": sqlite.insert(table).on_conflict_do_nothing(),
            "postgresql": postgresql.insert(table).on_conflict_do_nothing().returning(key)}


def inserted(result: Result[Any]) -> bool:
    """Whether an :func:`insert_if_new` statement inserted its row."""
    cursor = cast(CursorResult[Any], result)
    return cursor.first() is not None if cursor.returns_rows else cursor.rowcount == 1


def changed(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE changed: Session.execute is typed as returning a plain Result, which has no
    count, but for such a statement it returns the cursor's, which has."""
    return cast(CursorResult[Any], result).rowcount
