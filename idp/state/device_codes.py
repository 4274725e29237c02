"""Device authorizations (RFC 8628): a device code the device polls with and a user code the user types,
both stored as digests (idp.store.oidc.OidcDeviceCode says which), with the user's decision, the polling pace
and the single exchange.

Each step that must happen once is one atomic operation: a user code is taken once, a decision is recorded
only while the request is pending, polls are paced by a compare-and-set, and a device code yields tokens
once. Authorizations are kept ``KEEP_EXPIRED`` past their expiry, so that a late poll still hears
``expired_token`` and a user code is not handed out again soon.

In Redis an authorization is a hash ``idp:device:<device code digest>``, found from its user code through
``idp:device-user:<user code digest>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from authlib.oauth2.rfc8628 import DeviceCredentialMixin
from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError

from idp.clock import now
from idp.extensions import db
from idp.state import PREFIX, changed, from_epoch, from_row, redis_client, to_epoch, ttl_seconds
from idp.state.lua import Script
from idp.store import OidcDeviceCode

KEEP_EXPIRED = timedelta(hours=1)

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"


@dataclass(frozen=True)
class DeviceCode(DeviceCredentialMixin):  # type: ignore[misc]
    device_code_hash: str
    user_code_hash: str
    client_id: str
    scope: str
    expires_at: datetime
    poll_interval: int  # seconds; grows at every slow_down
    status: str = PENDING
    user_id: int | None = None  # who approved or denied
    auth_time: datetime | None = None
    last_polled_at: datetime | None = None
    used_at: datetime | None = None
    decided_at: datetime | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user_code(self) -> str:
        return self.user_code_hash  # only the digest is kept

    def is_expired(self) -> bool:
        return now() >= self.expires_at


def _key(device_code_hash: str) -> str:
    return f"{PREFIX}device:{device_code_hash}"


def _user_key(user_code_hash: str) -> str:
    return f"{PREFIX}device-user:{user_code_hash}"


# KEYS[1] the authorization, KEYS[2] its user code; ARGV[1] TTL, ARGV[2] the device code digest, then fields.
_ISSUE = Script("""
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
""")

# KEYS[1] the authorization; ARGV[1] now, ARGV[2] the step. 1 when polled before the interval was up (and
# the interval grows by the step), 0 otherwise; either way this poll is the last one now.
_PACE = Script("""
local h = redis.call('HMGET', KEYS[1], 'last_polled_at', 'poll_interval')
if not h[2] then return 0 end
local last, interval = tonumber(h[1]), tonumber(h[2])
if last and tonumber(ARGV[1]) < last + interval then
  redis.call('HSET', KEYS[1], 'last_polled_at', ARGV[1], 'poll_interval', interval + tonumber(ARGV[2]))
  return 1
end
redis.call('HSET', KEYS[1], 'last_polled_at', ARGV[1])
return 0
""")

# KEYS[1] the authorization; ARGV[1] now. 1 for the one exchange that marked it used.
_USE = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'used_at', ARGV[1])
""")

# KEYS[1] the authorization; ARGV[1] now, ARGV[2] the status, ARGV[3] user id, ARGV[4] auth time.
_DECIDE = Script("""
local h = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if h[1] ~= 'pending' or tonumber(h[2]) <= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'user_id', ARGV[3], 'auth_time', ARGV[4], 'decided_at', ARGV[1])
return 1
""")


def user_code_taken(user_code_hash: str) -> bool:
    """Whether a user code is stored (live, or recently expired): it is not handed out again."""
    client = redis_client()
    if client is not None:
        return bool(client.exists(_user_key(user_code_hash)))
    return bool(db.session.scalar(select(exists().where(OidcDeviceCode.user_code_hash == user_code_hash))))


def issue(code: DeviceCode) -> bool:
    """Store a new authorization; False when its user code was taken meanwhile (by another process). In the
    database it joins the caller's transaction; in Redis it is stored at once."""
    t = now()
    client = redis_client()
    if client is not None:
        fields: list[str | int | float] = [
            "user_code_hash", code.user_code_hash, "client_id", code.client_id, "scope", code.scope,
            "status", code.status, "poll_interval", code.poll_interval, "expires_at", to_epoch(code.expires_at),
        ]
        ttl = ttl_seconds(code.expires_at + KEEP_EXPIRED, t)
        keys = [_key(code.device_code_hash), _user_key(code.user_code_hash)]
        return bool(_ISSUE(client, keys, [ttl, code.device_code_hash, *fields]))
    db.session.execute(delete(OidcDeviceCode).where(OidcDeviceCode.expires_at < t - KEEP_EXPIRED))
    try:
        with db.session.begin_nested():
            db.session.add(OidcDeviceCode(
                device_code_hash=code.device_code_hash, user_code_hash=code.user_code_hash,
                client_id=code.client_id, scope=code.scope, status=code.status, poll_interval=code.poll_interval,
                created_at=t, expires_at=code.expires_at))
    except IntegrityError:  # the unique user code, stored by a concurrent transaction
        return False
    return True


def _from_hash(device_code_hash: str, h: dict[str, str]) -> DeviceCode:
    def instant(name: str) -> datetime | None:
        return from_epoch(h[name]) if name in h else None

    return DeviceCode(
        device_code_hash=device_code_hash, user_code_hash=h["user_code_hash"], client_id=h["client_id"],
        scope=h["scope"], expires_at=from_epoch(h["expires_at"]), poll_interval=int(h["poll_interval"]),
        status=h["status"], user_id=int(h["user_id"]) if "user_id" in h else None, auth_time=instant("auth_time"),
        last_polled_at=instant("last_polled_at"), used_at=instant("used_at"), decided_at=instant("decided_at"))


def find(device_code_hash: str) -> DeviceCode | None:
    client = redis_client()
    if client is not None:
        h = cast(dict[str, str], client.hgetall(_key(device_code_hash)))
        return _from_hash(device_code_hash, h) if h else None
    row = db.session.get(OidcDeviceCode, device_code_hash, populate_existing=True)
    return from_row(DeviceCode, row) if row is not None else None


def find_by_user_code(user_code_hash: str) -> DeviceCode | None:
    client = redis_client()
    if client is not None:
        device_code_hash = cast(str | None, client.get(_user_key(user_code_hash)))
        return find(device_code_hash) if device_code_hash is not None else None
    row = db.session.scalar(select(OidcDeviceCode).where(OidcDeviceCode.user_code_hash == user_code_hash)
                            .execution_options(populate_existing=True))
    return from_row(DeviceCode, row) if row is not None else None


def pace(code: DeviceCode, t: datetime, step: int) -> bool:
    """Record a poll of a pending authorization; True when it came before the interval was up, which then
    grows by ``step`` seconds for good. A compare-and-set on the last poll, so that two quick polls answered
    by two processes cannot both pass. Committed in the database (the token endpoint rolls back its refusals)."""
    client = redis_client()
    if client is not None:
        return bool(_PACE(client, [_key(code.device_code_hash)], [to_epoch(t), step]))
    c = OidcDeviceCode
    last = code.last_polled_at
    too_soon = last is not None and t < last + timedelta(seconds=code.poll_interval)
    same_poll = c.last_polled_at.is_(None) if last is None else c.last_polled_at == last
    values: dict[str, Any] = {"last_polled_at": t}
    if too_soon:
        values["poll_interval"] = c.poll_interval + step
    result = db.session.execute(update(c).where(c.device_code_hash == code.device_code_hash, same_poll)
                                .values(**values))
    if changed(result) != 1:  # another poll got in between: too fast as well
        too_soon = True
        db.session.execute(update(c).where(c.device_code_hash == code.device_code_hash)
                           .values(last_polled_at=t, poll_interval=c.poll_interval + step))
    db.session.commit()
    return too_soon


def use(device_code_hash: str, t: datetime) -> bool:
    """Mark an approved authorization used; True for the one exchange that did. In the database it joins
    the caller's transaction (committed with the tokens); in Redis it takes effect at once, so a failure
    after it leaves the device code spent rather than usable twice."""
    client = redis_client()
    if client is not None:
        return bool(_USE(client, [_key(device_code_hash)], [to_epoch(t)]))
    c = OidcDeviceCode
    result = db.session.execute(update(c).where(c.device_code_hash == device_code_hash, c.used_at.is_(None))
                                .values(used_at=t))
    return changed(result) == 1


def decide(device_code_hash: str, approved: bool, user_id: int, auth_time: datetime, t: datetime) -> bool:
    """Record the user's answer, only while the authorization is pending and unexpired; True if recorded.
    In the database it joins the caller's transaction."""
    status = APPROVED if approved else DENIED
    client = redis_client()
    if client is not None:
        return bool(_DECIDE(client, [_key(device_code_hash)], [to_epoch(t), status, user_id, to_epoch(auth_time)]))
    c = OidcDeviceCode
    result = db.session.execute(
        update(c).where(c.device_code_hash == device_code_hash, c.status == PENDING, c.expires_at > t)
        .values(status=status, user_id=user_id, auth_time=auth_time, decided_at=t))
    return changed(result) == 1


# KEYS[1] the authorization; ARGV[1] when it was decided, ARGV[2] the status, ARGV[3] user id. Back to pending
# if that decision is still the one recorded and nothing was exchanged with it.
_UNDECIDE = Script("""
local h = redis.call('HMGET', KEYS[1], 'status', 'user_id', 'decided_at', 'used_at')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] or h[3] ~= ARGV[1] or h[4] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending')
redis.call('HDEL', KEYS[1], 'user_id', 'auth_time', 'decided_at')
return 1
""")


def undecide(device_code_hash: str, approved: bool, user_id: int, t: datetime) -> None:
    """Take back the decision :func:`decide` recorded at ``t`` when what goes with it (the consent, the audit
    event) could not be stored: in Redis it took effect at once; in the database the caller's rollback takes it
    back. The request is pending again, for the user's retry, unless it was exchanged meanwhile."""
    client = redis_client()
    if client is not None:
        _UNDECIDE(client, [_key(device_code_hash)], [to_epoch(t), APPROVED if approved else DENIED, user_id])


def forget_client(client_id: str) -> None:
    """A client is being deleted. In the database its authorizations go with it (in the caller's
    transaction). Redis keeps them until they expire: the device page ignores those of unknown clients, and
    the token endpoint authenticates the client first (client ids are never given again)."""
    if redis_client() is None:
        db.session.execute(delete(OidcDeviceCode).where(OidcDeviceCode.client_id == client_id))
