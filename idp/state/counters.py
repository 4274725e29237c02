"""Failure counters with a lockout (login throttling, device user-code guesses): per key, failures counted in
a window; reaching the limit locks the key for a while and starts the count afresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from flask import has_request_context, request
from sqlalchemy import bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from idp.extensions import db
from idp.state import GRACE, PREFIX, changed, redis_client
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


# One round trip, atomic: read the counter, roll the window, count, maybe lock. Instants are the caller's
# clock (ARGV[1]) so that Redis and the database decide alike.
_COUNT = Script("""
local now, limit, window, lockout, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'failures', 'started', 'locked_until')
local locked = tonumber(h[3])
if locked and locked > now then return -1 end
local failures, started = tonumber(h[1]) or 0, tonumber(h[2]) or now
if started + window <= now then failures, started = 0, now end
failures = failures + 1
if failures < limit then
  redis.call('HSET', KEYS[1], 'failures', failures, 'started', started)
  redis.call('EXPIRE', KEYS[1], ttl)
  return 0
end
redis.call('HSET', KEYS[1], 'failures', 0, 'started', now, 'locked_until', now + lockout)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
""")


# Give back one failure counted in advance; ARGV[1] = 1 when counting it started the lockout, which then ends,
# with the failures as they were before it (ARGV[2]). A counter reset meanwhile (a success) stays reset: no key is
# made again, which would have no expiry.
_UNCOUNT = Script("""
if ARGV[1] == '1' then
  if redis.call('HEXISTS', KEYS[1], 'locked_until') == 0 then return 0 end
  redis.call('HDEL', KEYS[1], 'locked_until')
  redis.call('HSET', KEYS[1], 'failures', ARGV[2])
  return 1
end
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures'))
if failures and failures > 0 then redis.call('HSET', KEYS[1], 'failures', failures - 1) end
return 1
""")


# Core statements for what every sign-in asks (is a key locked?) and may do (forget the user's counters).
_TABLE = LoginThrottle.__table__
_READ = select(_TABLE.c.key, _TABLE.c.locked_until).where(_TABLE.c.key.in_(bindparam("keys", expanding=True)))
_RESET = _TABLE.delete().where(_TABLE.c.key.in_(bindparam("keys", expanding=True)))


def _upsert(insert: Any) -> Any:
    """A counter's row, made at its first failure; a no-op update rather than DO NOTHING where it exists: it
    locks the row, so that a concurrent collect() (which skips locked rows) cannot delete it before it is read."""
    stmt = insert(_TABLE).values(key=bindparam("row"), failures=0, window_started_at=bindparam("now"),
                                 locked_until=None)
    return stmt.on_conflict_do_update(index_elements=[_TABLE.c.key], set_={"key": stmt.excluded.key})


_UPSERT = {"sqlite": _upsert(sqlite.insert), "postgresql": _upsert(postgresql.insert)}
_FOR_UPDATE = (select(_TABLE.c.failures, _TABLE.c.window_started_at, _TABLE.c.locked_until)
               .where(_TABLE.c.key == bindparam("row")).with_for_update())
_SET = _TABLE.update().where(_TABLE.c.key == bindparam("row")).values(
    failures=bindparam("failures"), window_started_at=bindparam("started"), locked_until=bindparam("until"))
_UNLOCK = (_TABLE.update().where(_TABLE.c.key == bindparam("row"), _TABLE.c.locked_until.is_not(None))
           .values(locked_until=None, failures=bindparam("before")))
_DECREMENT = (_TABLE.update().where(_TABLE.c.key == bindparam("row"), _TABLE.c.failures > 0)
              .values(failures=_TABLE.c.failures - 1))
# The try given back was the only one counted: the row goes (every sign-in reserves its address's counter, and
# rows of addresses that only ever signed in would otherwise wait for the next failure's collection).
_FORGET_ONLY = _TABLE.delete().where(_TABLE.c.key == bindparam("row"), _TABLE.c.failures == 1,
                                     _TABLE.c.locked_until.is_(None))
# Counters whose window and lockout are both over count nothing any more. Rows another transaction holds are
# skipped, not waited for (PostgreSQL; SQLite has one writer): two failures collecting at once cannot deadlock.
_STALE = _TABLE.delete().where(_TABLE.c.key.in_(
    select(_TABLE.c.key)
    .where(_TABLE.c.window_started_at < bindparam("stale"),
           or_(_TABLE.c.locked_until.is_(None), _TABLE.c.locked_until < bindparam("now")))
    .with_for_update(skip_locked=True)))
# Keys this request read from the table, and whether each had a row: a sign-in whose counters were never
# written has nothing to reset (most sign-ins), and skips the statement.
_SEEN = "idp.counters.seen"


def _key(key: str) -> str:
    return f"{PREFIX}throttle:{key}"


def count(key: str, limits: Limits, now: datetime) -> Count:
    """Count one failure against ``key``, unless it is locked out. In the database it does not commit (the
    caller's audit event commits with it)."""
    client = redis_client()
    if client is not None:
        ttl = int((limits.window + limits.lockout + GRACE).total_seconds())
        return Count(int(_COUNT(client, [_key(key)], [now.timestamp(), limits.failures,
                                                      limits.window.total_seconds(),
                                                      limits.lockout.total_seconds(), ttl])))
    _seen()[key] = True
    # Core statements on the connection, as everywhere here (the table is never an ORM object, so nothing needs
    # flushing first): the ORM's loading and flush cost several times the SQL, and every sign-in counts a try.
    connection = db.session.connection()
    connection.execute(_UPSERT[db.engine.dialect.name], {"row": key, "now": now})
    # FOR UPDATE serialises concurrent failures on PostgreSQL; SQLite already holds its write lock here.
    failures, started, locked_until = connection.execute(_FOR_UPDATE, {"row": key}).one()
    if locked_until is not None and locked_until > now:
        return Count.LOCKED
    if started + limits.window <= now:
        failures, started = 0, now
    failures += 1
    outcome = Count.UNDER if failures < limits.failures else Count.STARTED
    if outcome is Count.STARTED:
        failures, started, locked_until = 0, now, now + limits.lockout
    connection.execute(_SET, {"row": key, "failures": failures, "started": started, "until": locked_until})
    return outcome


def uncount(key: str, limits: Limits, counted: Count) -> None:
    """Give back a failure :func:`count` counted in advance for a try that was never judged; a lockout that
    counting it started ends. In the database it does not commit."""
    client = redis_client()
    if client is not None:
        _UNCOUNT(client, [_key(key)], [int(counted is Count.STARTED), limits.failures - 1])
        return
    connection = db.session.connection()
    if counted is Count.STARTED:
        connection.execute(_UNLOCK, {"row": key, "before": limits.failures - 1})
    elif not changed(connection.execute(_FORGET_ONLY, {"row": key})):
        connection.execute(_DECREMENT, {"row": key})


def collect(now: datetime, window: timedelta) -> None:
    """Drop the counters whose window and lockout are over. Called where rows are made (after a failure is
    counted), so that a table sprayed with made-up names stays small whether or not anyone signs in. Does not
    commit; Redis expires those itself."""
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
    found = db.session.connection().execute(_READ, {"keys": keys})
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
    if all(seen.get(key) is False for key in keys):
        return
    db.session.connection().execute(_RESET, {"keys": keys})
    seen.update(dict.fromkeys(keys, False))


def _seen() -> dict[str, bool]:
    """This request's record of the keys read (outside a request, a throwaway one: nothing is skipped)."""
    if not has_request_context():
        return {}
    seen: dict[str, bool] = request.environ.setdefault(_SEEN, {})
    return seen
