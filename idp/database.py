"""Database set-up: SQLite pragmas, and migrations applied on the embedded default."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import event, make_url, select
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from idp.config import Settings
from idp.errors import duplicate_key
from idp.extensions import db
from idp.keys import data_dir_lock

MIGRATIONS = str(Path(__file__).parent / "migrations")
# Seconds to open a PostgreSQL connection (libpq's connect_timeout, 2 at least): as long as /readyz waits.
CONNECT_TIMEOUT = 2
APPLICATION_NAME = "idp"


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer, and saves an
    # fsync per commit.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL never corrupts the database; it only lets a power cut lose the last commits.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()


# SQLSTATE 25006: the server refuses writes (a failover left the connection on the old primary, now a standby;
# a managed database out of storage). Handled as a lost connection: the pool is emptied, so the next request
# connects again, to wherever the address leads now, and this one gets 503 (idp.errors).
_READ_ONLY = "25006"


@event.listens_for(Engine, "handle_error")
def _read_only_is_a_lost_connection(context: ExceptionContext) -> None:
    if getattr(context.original_exception, "sqlstate", None) == _READ_ONLY:
        context.is_disconnect = True


def engine_options(settings: Settings) -> dict[str, Any]:
    # A thread may hold its connection while it waits on a directory: every thread of a worker gets one.
    pool_size = max(5, settings.threads)
    # A database error's text quotes its statement; without hide_parameters also its values (password hashes,
    # token and secret digests), which a logged traceback or a command's error would then show.
    options: dict[str, Any] = {"pool_size": pool_size, "hide_parameters": True}
    if settings.embedded_database:
        return options
    # Pre-ping: a connection cut by a database restart is replaced at checkout, not failed in a request.
    options.update(pool_pre_ping=True, max_overflow=10)
    if settings.effective_database_url.startswith("postgresql"):
        # A server that accepts connections and never answers (hung, overloaded) would otherwise hold each new
        # connection, pre-ping included, forever; this way it fails with 503 (idp.errors).
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **_network_bound(settings)}
        # How pg_stat_activity names our connections, unless the URL, PGAPPNAME or a service file does (libpq).
        connect_args["fallback_application_name"] = APPLICATION_NAME
        if not settings.database_prepared_statements:
            connect_args["prepare_threshold"] = None  # psycopg: never prepare
        if settings.database_statement_timeout_seconds:
            # Set at connection start, so every statement is bounded, pre-ping included: the server cancels a
            # query still running (a lock held elsewhere, an overloaded server) and that request gets 503. A
            # server gone cancels nothing: the network bound is for that.
            connect_args["options"] = _with_statement_timeout(settings)
        options["connect_args"] = connect_args
    return options


# libpq's names for the network bound; a URL that sets any of them keeps its own and gets none of ours.
NETWORK_PARAMETERS = ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")
# Linux refuses more keepalive probes than this (TCP_KEEPCNT), and libpq then refuses the connection.
_MAX_PROBES = 127


def _network_bound(settings: Settings) -> dict[str, int]:
    """libpq's parameters that drop an open connection whose server has gone silent (failed over, cut off by
    the network) after about IDP_DATABASE_NETWORK_TIMEOUT_SECONDS, instead of TCP's retries of about 15 minutes,
    during which the request and its worker thread would wait: tcp_user_timeout bounds data sent and not
    acknowledged (a pre-ping, a query), keepalives a reply awaited in silence (on Linux tcp_user_timeout also
    decides when unanswered probes end the connection; elsewhere idle + count x interval does). A healthy
    server's kernel answers both at once, however long its query runs."""
    seconds = settings.database_network_timeout_seconds
    if not seconds or any(name in make_url(settings.effective_database_url).query for name in NETWORK_PARAMETERS):
        return {}
    idle = max(1, seconds // 2)
    count = min(_MAX_PROBES, max(1, seconds - idle))
    return {"keepalives": 1, "keepalives_idle": idle, "keepalives_count": count,
            "keepalives_interval": max(1, math.ceil((seconds - idle) / count)), "tcp_user_timeout": seconds * 1000}


def _with_statement_timeout(settings: Settings) -> str:
    """libpq's ``options`` with the statement timeout added to what the URL's ``options`` (or else PGOPTIONS)
    already asks, which connect_args would otherwise replace: a search_path, a managed service's endpoint."""
    given = make_url(settings.effective_database_url).query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    if given is None:
        given = os.environ.get("PGOPTIONS")
    timeout = f"-c statement_timeout={settings.database_statement_timeout_seconds * 1000}"
    return f"{given} {timeout}" if given else timeout


def upgrade_embedded(app: Flask, settings: Settings) -> None:
    """The embedded default migrates itself; a shared database is migrated by `idp db upgrade`."""
    if not settings.embedded_database:
        return
    with data_dir_lock(settings.data_dir), app.app_context():
        upgrade(directory=MIGRATIONS)


def flushed_unique() -> bool:
    """Write the session's pending rows now. False, with the request's transaction rolled back, when a unique key
    refuses one because the row is there already (made by a concurrent request after this one looked); any
    other integrity error is raised."""
    try:
        db.session.flush()
    except IntegrityError as exc:
        db.session.rollback()
        if duplicate_key(exc):
            return False
        raise
    return True


def lock_for_removal(row: Any) -> None:
    """Hold ``row`` (an ORM object with an ``id``) until the transaction ends against rows made meanwhile that
    refer to it, so that what a removal reads next is all it takes (a foreign key's ON DELETE CASCADE would
    otherwise take, uncounted, a row another request made after the read): FOR UPDATE on PostgreSQL, which a
    reference's key check (FOR KEY SHARE) waits on, and which then fails it; on SQLite the write lock (one
    writer), taken by writing the row (its id as it is; an ``updated_at`` moves, on a row about to go). Rows
    that already refer to it and may change meanwhile are the caller's to lock. A row removed meanwhile (by a
    removal this one waited for) is a concurrent change (409), not a second removal."""
    table = type(row).__table__
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":
        held = connection.execute(table.update().where(table.c.id == row.id).values(id=table.c.id)).rowcount > 0
    else:
        held = connection.execute(select(table.c.id).where(table.c.id == row.id).with_for_update()).first() is not None
    if not held:
        raise StaleDataError(f"{table.name} row {row.id} was removed meanwhile")
