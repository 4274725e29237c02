"""Failure counters with a lockout (login throttling, device user-code guesses): per key, failures counted in
a window; reaching the limit locks the key for a while and starts the count afresh.

A try may be reserved before it is judged (:func:`reserve`): it is then in flight, and tries in flight and
failures together are held to the limit, so that tries sent at once see each other; but only a failure counts
as one (:func:`count` with ``reserved``), and only failures start a lockout. Rolling the window forgets the
tries in flight too, so that one whose request never ended (a killed worker, a database lost before the try
was settled) holds its place until the window rolls (after a lockout in force, if one started meanwhile).
Tries sent across a window's end can see twice the limit, as failures can with any fixed window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from flask import has_request_context, request
from sqlalchemy import bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from idp.extensions import db
from idp.state import GRACE, PREFIX, changed, insert_if_new, inserted, redis_client
from idp.state.lua import Script
from idp.store import LoginThrottle


@dataclass(frozen=True)
class Limits:
    failures: int
    window: timedelta
    lockout: timedelta


class Count(Enum):
    UNDER = 0  # counted, under the limit
    STARTED = 1  # counted, and it reached the limit: the lockout starts now
    LOCKED = -1  # not counted: the key was locked out already


# The counter's state and its window rolled, shared by the scripts below: instants are the caller's clock
# (ARGV[1]) so that Redis and the database decide alike.
_READ = """
local now, limit, window, lockout, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'failures', 'started', 'locked_until', 'in_flight')
local locked = tonumber(h[3])
local failures, started, in_flight = tonumber(h[1]) or 0, tonumber(h[2]) or now, tonumber(h[4]) or 0
"""
_ROLL = """
if started + window <= now then failures, started, in_flight = 0, now, 0 end
"""

# Reserve a try: 1, held in flight; 0, refused (locked out, or the limit taken by failures and tries in flight).
_RESERVE = Script(_READ + """
if locked and locked > now then return 0 end
""" + _ROLL + """
if failures + in_flight >= limit then return 0 end
redis.call('HSET', KEYS[1], 'failures', failures, 'started', started, 'in_flight', in_flight + 1)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
""")

# Count one failure (ARGV[6] = 1: a reserved try, no longer in flight), unless the key is locked out; maybe lock.
_COUNT = Script(_READ + """
if ARGV[6] == '1' and in_flight > 0 then in_flight = in_flight - 1 end
if locked and locked > now then
  redis.call('HSET', KEYS[1], 'in_flight', in_flight)
  return -1
end
""" + _ROLL + """
failures = failures + 1
if failures < limit then
  redis.call('HSET', KEYS[1], 'failures', failures, 'started', started, 'in_flight', in_flight)
  redis.call('EXPIRE', KEYS[1], ttl)
  return 0
end
redis.call('HSET', KEYS[1], 'failures', 0, 'started', now, 'locked_until', now + lockout, 'in_flight', in_flight)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
""")

# Give back a reserved try. A counter gone meanwhile (a success reset it) is not made again: it would have no
# expiry. One that held only this try goes, as its row does in the database (its window would outlive it).
_RELEASE = Script("""
local h = redis.call('HMGET', KEYS[1], 'failures', 'locked_until', 'in_flight')
local in_flight = tonumber(h[3])
if not in_flight or in_flight <= 0 then return 1 end
if (tonumber(h[1]) or 0) == 0 and not h[2] and in_flight <= 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'in_flight', in_flight - 1)
end
return 1
""")


# Core statements for what every sign-in asks (is a key locked?) and may do (forget the user's counters).
_TABLE = LoginThrottle.__table__
_LOCKS = select(_TABLE.c.key, _TABLE.c.locked_until).where(_TABLE.c.key.in_(bindparam("keys", expanding=True)))
_RESET = _TABLE.delete().where(_TABLE.c.key == bindparam("row"))


def _upsert(insert: Any) -> Any:
    """A counter's row, made at its first try; a no-op update rather than DO NOTHING where it exists: it locks
    the row, so that a concurrent collect() (which skips locked rows) cannot delete it before it is read."""
    stmt = insert(_TABLE).values(key=bindparam("row"), failures=0, window_started_at=bindparam("now"),
                                 locked_until=None, in_flight=0)
    return stmt.on_conflict_do_update(index_elements=[_TABLE.c.key], set_={"key": stmt.excluded.key})


_UPSERT = {"sqlite": _upsert(sqlite.insert), "postgresql": _upsert(postgresql.insert)}


# A key without a counter gets one holding this try, in one statement (most sign-ins: their name's and their
# address's counters went with their last success); where one exists, nothing happens.
_FIRST_TRY = insert_if_new(_TABLE)
_FOR_UPDATE = (select(_TABLE.c.failures, _TABLE.c.window_started_at, _TABLE.c.locked_until, _TABLE.c.in_flight)
               .where(_TABLE.c.key == bindparam("row")).with_for_update())
_SET = _TABLE.update().where(_TABLE.c.key == bindparam("row")).values(
    failures=bindparam("failures"), window_started_at=bindparam("started"), locked_until=bindparam("until"),
    in_flight=bindparam("in_flight"))
# The try given back was all the row held: it goes (every sign-in reserves its address's counter, and rows of
# addresses that only ever signed in would otherwise wait for the next failure's collection).
_FORGET_IDLE = _TABLE.delete().where(_TABLE.c.key == bindparam("row"), _TABLE.c.failures == 0,
                                     _TABLE.c.in_flight <= 1, _TABLE.c.locked_until.is_(None))
_LANDED = (_TABLE.update().where(_TABLE.c.key == bindparam("row"), _TABLE.c.in_flight > 0)
           .values(in_flight=_TABLE.c.in_flight - 1))
# Counters whose window and lockout are both over count nothing any more. Rows another transaction holds are
# skipped, not waited for (PostgreSQL; SQLite has one writer): two failures collecting at once cannot deadlock.
_STALE = _TABLE.delete().where(_TABLE.c.key.in_(
    select(_TABLE.c.key)
    .where(_TABLE.c.window_started_at < bindparam("stale"),
           or_(_TABLE.c.locked_until.is_(None), _TABLE.c.locked_until < bindparam("now")))
    .with_for_update(skip_locked=True)))
# Keys this request read from the table, and whether each had a row: keys read and found without one have
# nothing to reset, and skip the statement.
_SEEN = "idp.counters.seen"


def _key(key: str) -> str:
    return f"{PREFIX}throttle:{key}"


def _script_args(limits: Limits, now: datetime) -> list[float]:
    ttl = int((limits.window + limits.lockout + GRACE).total_seconds())
    return [now.timestamp(), limits.failures, limits.window.total_seconds(), limits.lockout.total_seconds(), ttl]


@dataclass
class _Row:
    """A counter's row in the database, locked for this transaction (made if missing), its window rolled."""

    key: str
    failures: int
    started: datetime
    locked_until: datetime | None
    in_flight: int

    @classmethod
    def lock(cls, key: str, limits: Limits, now: datetime) -> _Row:
        _seen()[key] = True
        # Core statements on the connection, as everywhere here (the table is never an ORM object, so nothing
        # needs flushing first): the ORM's loading and flush cost several times the SQL, and every sign-in
        # reserves its tries.
        connection = db.session.connection()
        connection.execute(_UPSERT[db.engine.dialect.name], {"row": key, "now": now})
        # FOR UPDATE serialises concurrent tries on PostgreSQL; SQLite already holds its write lock here.
        row = cls(key, *connection.execute(_FOR_UPDATE, {"row": key}).one())
        if row.started + limits.window <= now and not row.locked(now):
            row.failures, row.started, row.in_flight = 0, now, 0
        return row

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def store(self) -> None:
        db.session.connection().execute(_SET, {"row": self.key, "failures": self.failures,
                                               "started": self.started, "until": self.locked_until,
                                               "in_flight": self.in_flight})


def in_transaction() -> bool:
    """True when counters are rows written in the request's transaction, False when they are in Redis."""
    return redis_client() is None


def reserve(key: str, limits: Limits, now: datetime) -> bool:
    """Hold one try in flight against ``key`` before it is judged: False, holding nothing, while the key is
    locked out or its failures and the tries in flight take its limit. The try ends with :func:`count` (a
    failure, ``reserved``) or :func:`release`. In the database it does not commit."""
    client = redis_client()
    if client is not None:
        return bool(_RESERVE(client, [_key(key)], _script_args(limits, now)))
    if inserted(db.session.connection().execute(_FIRST_TRY[db.engine.dialect.name], {
            "key": key, "failures": 0, "window_started_at": now, "locked_until": None, "in_flight": 1})):
        _seen()[key] = True
        return True
    row = _Row.lock(key, limits, now)
    if row.locked(now) or row.failures + row.in_flight >= limits.failures:
        return False
    row.in_flight += 1
    row.store()
    return True


def count(key: str, limits: Limits, now: datetime, *, reserved: bool = False) -> Count:
    """Count one failure against ``key``, unless it is locked out; ``reserved``: a try :func:`reserve` held,
    which lands. In the database it does not commit (the caller's audit event commits with it)."""
    client = redis_client()
    if client is not None:
        return Count(int(_COUNT(client, [_key(key)], [*_script_args(limits, now), int(reserved)])))
    row = _Row.lock(key, limits, now)
    if reserved:
        row.in_flight = max(0, row.in_flight - 1)
    if row.locked(now):
        outcome = Count.LOCKED
    else:
        row.failures += 1
        outcome = Count.UNDER if row.failures < limits.failures else Count.STARTED
        if outcome is Count.STARTED:
            row.failures, row.started, row.locked_until = 0, now, now + limits.lockout
    row.store()
    return outcome


def release(key: str) -> None:
    """Give back a try :func:`reserve` held that is no failure (a success, or a try never judged). In the
    database it does not commit."""
    client = redis_client()
    if client is not None:
        _RELEASE(client, [_key(key)], [])
        return
    connection = db.session.connection()
    if not changed(connection.execute(_FORGET_IDLE, {"row": key})):
        connection.execute(_LANDED, {"row": key})


def collect(now: datetime, window: timedelta) -> None:
    """Drop the counters whose window and lockout are over. Called after a failure is counted (the rows a
    success made are gone with it), so that a table sprayed with made-up names stays small whether or not anyone
    signs in. Does not commit; Redis expires those itself."""
    if redis_client() is None:
        db.session.connection().execute(_STALE, {"stale": now - window, "now": now})


def locked(keys: list[str], now: datetime) -> bool:
    """True while any of ``keys`` is locked out."""
    client = redis_client()
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(_key(key), "locked_until")
            until = pipe.execute()
        return any(u is not None and float(u) > now.timestamp() for u in until)
    found = db.session.connection().execute(_LOCKS, {"keys": keys})
    rows: dict[str, datetime | None] = {key: until for key, until in found}
    _seen().update({key: key in rows for key in keys})
    return any(until is not None and until > now for until in rows.values())


def reset(keys: list[str]) -> None:
    """Forget the counters of ``keys`` (a lockout in force ends too). In the database it does not commit, and
    is skipped when this request read every key and found none (a counter written meanwhile by a concurrent
    failure then stays: it counts against the user a little longer, never in their favour)."""
    client = redis_client()
    if client is not None:
        client.delete(*(_key(k) for k in keys))
        return
    seen = _seen()
    # One row at a time, in key order: one statement for all would lock them in whatever order its plan visits
    # them (a sequential scan: as stored), and a concurrent failure locks them in key order (throttle).
    for key in sorted(keys):
        if seen.get(key) is not False:
            db.session.connection().execute(_RESET, {"row": key})
            seen[key] = False


def _seen() -> dict[str, bool]:
    """This request's record of the keys read (outside a request, a throwaway one: nothing is skipped)."""
    if not has_request_context():
        return {}
    seen: dict[str, bool] = request.environ.setdefault(_SEEN, {})
    return seen
