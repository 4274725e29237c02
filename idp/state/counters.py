"""Failure counters with a lockout (login throttling, device user-code guesses): per key, failures counted in
a window; reaching the limit locks the key for a while and starts the count afresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from idp.extensions import db
from idp.state import GRACE, PREFIX, redis_client
from idp.state.lua import Script
from idp.store import LoginThrottle


@dataclass(frozen=True)
class Limits:
    failures: int
    window: timedelta
    lockout: timedelta


# One round trip, atomic: read the counter, roll the window, count, maybe lock. Instants are the caller's
# clock (ARGV[1]) so that Redis and the database decide alike.
_COUNT = Script("""
local now, limit, window, lockout, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'failures', 'started', 'locked_until')
local locked = tonumber(h[3])
if locked and locked > now then return 0 end
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


# Core statements for what every sign-in asks (is a key locked?) and does (forget the user's counters).
_TABLE = LoginThrottle.__table__
_LOCKED = (select(_TABLE.c.key)
           .where(_TABLE.c.key.in_(bindparam("keys", expanding=True)), _TABLE.c.locked_until > bindparam("now"))
           .limit(1))
_RESET = _TABLE.delete().where(or_(
    _TABLE.c.key.in_(bindparam("keys", expanding=True)),
    (_TABLE.c.window_started_at < bindparam("stale"))
    & or_(_TABLE.c.locked_until.is_(None), _TABLE.c.locked_until < bindparam("now")),
))


def _key(key: str) -> str:
    return f"{PREFIX}throttle:{key}"


def count(key: str, limits: Limits, now: datetime) -> bool:
    """Count one failure against ``key``; True when this failure starts its lockout. In the database it does
    not commit (the caller's audit event commits with it)."""
    client = redis_client()
    if client is not None:
        ttl = int((limits.window + limits.lockout + GRACE).total_seconds())
        started = _COUNT(client, [_key(key)], [now.timestamp(), limits.failures, limits.window.total_seconds(),
                                               limits.lockout.total_seconds(), ttl])
        return bool(started)
    dialect = sqlite if db.engine.dialect.name == "sqlite" else postgresql
    db.session.execute(
        dialect.insert(LoginThrottle)
        .values(key=key, failures=0, window_started_at=now, locked_until=None)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    # FOR UPDATE serialises concurrent failures on PostgreSQL; SQLite already holds its write lock here.
    row = db.session.execute(
        select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if row.locked_until is not None and row.locked_until > now:
        return False
    if row.window_started_at + limits.window <= now:
        row.failures, row.window_started_at = 0, now
    row.failures += 1
    if row.failures < limits.failures:
        return False
    row.locked_until = now + limits.lockout
    row.failures, row.window_started_at = 0, now
    return True


def locked(keys: list[str], now: datetime) -> bool:
    """True while any of ``keys`` is locked out."""
    client = redis_client()
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(_key(key), "locked_until")
            until = pipe.execute()
        return any(u is not None and float(u) > now.timestamp() for u in until)
    db.session.flush()  # a Core read does not autoflush
    return db.session.connection().execute(_LOCKED, {"keys": keys, "now": now}).first() is not None


def reset(keys: list[str], now: datetime, window: timedelta) -> None:
    """Forget the counters of ``keys`` (a lockout in force ends too). In the database it also drops rows whose
    window and lockout are over, and does not commit; Redis expires those itself."""
    client = redis_client()
    if client is not None:
        client.delete(*(_key(k) for k in keys))
        return
    db.session.flush()  # counters the ORM holds are written before the delete (and then not used again)
    db.session.connection().execute(_RESET, {"keys": keys, "stale": now - window, "now": now})
