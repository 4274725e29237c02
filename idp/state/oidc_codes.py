"""OIDC authorization codes: issued at the authorization endpoint, exchanged once at the token endpoint.

A code is stored under its SHA-256 only. Once exchanged it is kept, marked used, until ``KEEP`` after its
expiry: another exchange is then a replay, and the caller revokes what the first one issued (RFC 6749
4.1.2). The nonce of each code is remembered as long, for the replay check of authentication requests.
The end of an SSO session makes its unused codes unusable; a session continued under a new id (the same
user signing in again) takes its codes along.

In Redis a code is a hash ``idp:code:<digest>``; its nonce a key ``idp:nonce:<client>:<digest>``. An ended
session leaves a marker ``idp:code-session:<id>`` (empty, or the id it continues under), kept as long as a
code issued in it can live, which the scripts that read and redeem a code follow. A marker rather than a set
of each session's codes: ending a session is one write whatever its codes, and a code saved while its
session was ending is caught as well, since the marker is read at the exchange. (The scripts follow markers
they are not given as KEYS: a single Redis server, with replicas or not, not Redis Cluster.)
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from authlib.oidc.core import AuthorizationCodeMixin
from redis.typing import EncodableT, FieldT
from sqlalchemy import ColumnElement, Row, Select, bindparam, delete, exists, select, update

from idp.clock import now
from idp.extensions import db
from idp.state import PREFIX, from_epoch, from_row, labelled, redis_client, to_epoch, ttl_seconds
from idp.state.lua import Script
from idp.store import OidcAuthorizationCode, SsoSessionRow

LIFETIME = timedelta(minutes=2)
KEEP = timedelta(minutes=10)


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):  # type: ignore[misc]
    code_hash: str
    client_id: str
    user_id: int
    # The SSO session of the sign-in (followed to its successor, if it went on under a new id), for logout.
    session_id: str | None
    redirect_uri: str
    scope: str
    nonce: str | None
    auth_time: datetime
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: datetime
    used_at: datetime | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return ["pwd"]


class Use(enum.Enum):
    FIRST = "first"  # this exchange marked the code used
    AGAIN = "again"  # it was used before: a replay
    GONE = "gone"  # expired, or its session ended or moved on, since it was read


def _key(code_hash: str) -> str:
    return f"{PREFIX}code:{code_hash}"


def _nonce_key(client_id: str, nonce: str) -> str:
    return f"{PREFIX}nonce:{client_id}:{hashlib.sha256(nonce.encode()).hexdigest()}"


_SESSION_MARKERS = f"{PREFIX}code-session:"

# Where a session went: itself while live, its successor's live id, or '' once ended. Markers live only a
# little longer than codes, so chains are short; one longer than 16 counts as ended.
_LIVE = """
local function live(sid)
  for _ = 1, 16 do
    local nxt = redis.call('GET', ARGV[1] .. sid)
    if not nxt then return sid end
    if nxt == '' then return '' end
    sid = nxt
  end
  return ''
end
"""

# KEYS[1] the code; ARGV[1] the marker prefix. The code's fields, and its session as it is now ('~live').
_FIND = Script(_LIVE + """
local fields = redis.call('HGETALL', KEYS[1])
local sid = redis.call('HGET', KEYS[1], 'session_id')
if sid then
  table.insert(fields, '~live')
  table.insert(fields, live(sid))
end
return fields
""")

# KEYS[1] the code; ARGV[1] the marker prefix, ARGV[2] now, ARGV[3] the session the caller read ('' if none).
# Marks the code used if it is unused, unexpired and its session still where the caller saw it.
_USE = Script(_LIVE + """
local h = redis.call('HMGET', KEYS[1], 'expires_at', 'used_at', 'session_id')
if not h[1] then return 'gone' end
if h[2] then return 'again' end
if tonumber(h[1]) <= tonumber(ARGV[2]) then return 'gone' end
if (h[3] and live(h[3]) or '') ~= ARGV[3] then return 'gone' end
redis.call('HSET', KEYS[1], 'used_at', ARGV[2])
return 'first'
""")


def save(code: AuthorizationCode) -> None:
    """Store a new code. In the database it is added to the caller's transaction; in Redis it is stored at
    once, with its nonce, in one MULTI."""
    t = now()
    client = redis_client()
    if client is not None:
        ttl = ttl_seconds(code.expires_at + KEEP, t)
        fields: dict[FieldT, EncodableT] = {
            "client_id": code.client_id, "user_id": code.user_id, "redirect_uri": code.redirect_uri,
            "scope": code.scope, "auth_time": to_epoch(code.auth_time), "expires_at": to_epoch(code.expires_at),
        }
        for name in ("session_id", "nonce", "code_challenge", "code_challenge_method"):
            value = getattr(code, name)
            if value is not None:
                fields[name] = value
        with client.pipeline() as pipe:
            pipe.hset(_key(code.code_hash), mapping=fields)
            pipe.expire(_key(code.code_hash), ttl)
            if code.nonce is not None:
                pipe.set(_nonce_key(code.client_id, code.nonce), to_epoch(code.expires_at + KEEP), ex=ttl)
            pipe.execute()
        return
    if secrets.randbelow(20) == 0:  # occasional cleanup keeps the table small without a job
        db.session.execute(delete(OidcAuthorizationCode).where(OidcAuthorizationCode.expires_at < t - KEEP))
    # A Core INSERT on the connection: the row is not read back in this request, and the ORM's flush costs more
    # than the SQL.
    db.session.connection().execute(_INSERT, dict(
        code_hash=code.code_hash, client_id=code.client_id, user_id=code.user_id, session_id=code.session_id,
        redirect_uri=code.redirect_uri, scope=code.scope, nonce=code.nonce, auth_time=code.auth_time,
        code_challenge=code.code_challenge, code_challenge_method=code.code_challenge_method, created_at=t,
        expires_at=code.expires_at))


_INSERT = OidcAuthorizationCode.__table__.insert()


def find(code_hash: str) -> AuthorizationCode | None:
    """The code, used or not, expired or not (the caller decides); a code whose session has ended and that
    was not used is returned as expired."""
    client = redis_client()
    if client is not None:
        flat = _FIND(client, [_key(code_hash)], [_SESSION_MARKERS])
        if not flat:
            return None
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        expires_at = from_epoch(h["expires_at"])
        used_at = from_epoch(h["used_at"]) if "used_at" in h else None
        session_id = h.get("session_id")
        if session_id is not None and h["~live"]:
            session_id = h["~live"]
        elif session_id is not None and used_at is None:
            expires_at = min(expires_at, now())
        return AuthorizationCode(
            code_hash=code_hash, client_id=h["client_id"], user_id=int(h["user_id"]), session_id=session_id,
            redirect_uri=h["redirect_uri"], scope=h["scope"], nonce=h.get("nonce"),
            auth_time=from_epoch(h["auth_time"]), code_challenge=h.get("code_challenge"),
            code_challenge_method=h.get("code_challenge_method"), expires_at=expires_at, used_at=used_at)
    # A Core select: the row is read fresh (never an object held in the session) and the ORM's loading costs
    # more than the statement.
    row = db.session.connection().execute(_FIND_ROW, {"code_hash": code_hash}).first()
    return from_row(AuthorizationCode, row) if row is not None else None


def select_joined(extend: Callable[[Select[Any], ColumnElement[int]], Select[Any]]) -> Select[Any]:
    """A code by its digest (its columns labelled ``code_<name>``) with what ``extend`` joins on its user id, by
    an outer join (the code is found whatever the join finds): the statement of :func:`find_joined`, built once
    by the caller."""
    by_hash = (select(*labelled(_CODES.c, _JOINED_PREFIX))
               .where(_CODES.c.code_hash == bindparam("code_hash")))
    return extend(by_hash, _CODES.c.user_id)


def find_joined(code_hash: str, statement: Select[Any]) -> tuple[AuthorizationCode | None, Sequence[Row[Any]] | None]:
    """As :func:`find`, and in the database the rows of ``statement`` (made by :func:`select_joined`), read in the
    same round trip: none when there is no such code. In Redis the rows are None: the caller reads them."""
    if redis_client() is not None:
        return find(code_hash), None
    rows = db.session.connection().execute(statement, {"code_hash": code_hash}).all()
    return (from_row(AuthorizationCode, rows[0], _JOINED_PREFIX) if rows else None), rows


def use(code: AuthorizationCode, t: datetime) -> Use:
    """Mark ``code`` (as :func:`find` read it) used, in one atomic step; only one exchange gets FIRST.

    In the database the mark joins the caller's transaction: a concurrent exchange, or the end of the code's
    session, waits on the row and is decided after it. In Redis the mark takes effect at once, so the
    caller's transaction (the tokens issued from the code) is committed first: an exchange that loses a race
    must find what the winner issued in order to revoke it.
    """
    client = redis_client()
    if client is not None:
        db.session.commit()
        result = _USE(client, [_key(code.code_hash)], [_SESSION_MARKERS, to_epoch(t), code.session_id or ""])
        return Use(result)
    conn = db.session.connection()
    if code.session_id is None:
        result = conn.execute(_USE_SESSIONLESS, {"code": code.code_hash, "t": t})
    else:
        if conn.dialect.name == "postgresql":
            conn.execute(_HOLD_SESSION, {"sid": code.session_id})
        result = conn.execute(_USE_IN_SESSION, {"code": code.code_hash, "t": t, "sid": code.session_id})
    if result.rowcount == 1:
        return Use.FIRST
    used = conn.execute(_USED_AT, {"code_hash": code.code_hash}).scalar()
    return Use.AGAIN if used is not None else Use.GONE


_CODES = OidcAuthorizationCode.__table__
_FIND_ROW = select(_CODES).where(_CODES.c.code_hash == bindparam("code_hash"))
_JOINED_PREFIX = "code_"  # select_joined's code columns: apart from whatever the caller joins
_USED_AT = select(_CODES.c.used_at).where(_CODES.c.code_hash == bindparam("code_hash"))
# Marks a code used if it is unused, unexpired and still in the session it was read in.
# (Parameters named unlike columns: an UPDATE keeps those names for its SET clause.)
_MARK_USED = update(_CODES).where(_CODES.c.code_hash == bindparam("code"), _CODES.c.used_at.is_(None),
                                  _CODES.c.expires_at > bindparam("t")).values(used_at=bindparam("t"))
_USE_SESSIONLESS = _MARK_USED.where(_CODES.c.session_id.is_(None))
# ... and whose session is still there: a code saved just after its session ended (read by its authorization
# request before the end, committed after it) is one the end could not expire. On PostgreSQL the session row is
# share-locked first (_HOLD_SESSION), as a session's end locks it before expiring its codes: an end in progress
# is waited for and then found, and an end that comes after waits for this exchange and revokes what it issued.
# On SQLite the UPDATE holds the one write lock and reads the session under it.
_SESSIONS = SsoSessionRow.__table__
_USE_IN_SESSION = _MARK_USED.where(_CODES.c.session_id == bindparam("sid"),
                                   exists().where(_SESSIONS.c.id == bindparam("sid")))
_HOLD_SESSION = select(_SESSIONS.c.id).where(_SESSIONS.c.id == bindparam("sid")).with_for_update(read=True)


def nonce_seen(client_id: str, nonce: str, t: datetime) -> bool:
    """Whether a code remembered now was issued to ``client_id`` for this nonce."""
    client = redis_client()
    if client is not None:
        until = cast(str | None, client.get(_nonce_key(client_id, nonce)))
        return until is not None and from_epoch(until) > t
    found = db.session.connection().execute(_NONCE_SEEN, {"client_id": client_id, "nonce": nonce, "since": t - KEEP})
    return bool(found.scalar())


_NONCE_SEEN = select(exists().where(_CODES.c.client_id == bindparam("client_id"), _CODES.c.nonce == bindparam("nonce"),
                                    _CODES.c.expires_at > bindparam("since")))


def session_ended(ids: list[str], successor: str | None, t: datetime) -> None:
    """Sessions ``ids`` ended (``successor`` None: their unused codes expire now) or go on as ``successor``
    (their codes follow). In the database this joins the caller's transaction; call it before revoking the
    sessions' tokens, so that an exchange in flight is decided first and its tokens are found."""
    client = redis_client()
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            for session_id in ids:
                # A session ends once: a sweep ending it again (sessions.swept) keeps how it ended.
                pipe.set(_SESSION_MARKERS + session_id, successor or "", ex=ttl_seconds(t + LIFETIME, t), nx=True)
            pipe.execute()
        return
    c = OidcAuthorizationCode
    if successor is not None:
        db.session.execute(update(c).where(c.session_id.in_(ids)).values(session_id=successor))
    else:
        db.session.execute(update(c).where(c.session_id.in_(ids), c.used_at.is_(None), c.expires_at > t)
                           .values(expires_at=t))


def forget_client(client_id: str) -> None:
    """A client is being deleted. In the database its codes go with it (in the caller's transaction). Redis
    keeps them until they expire: none can be exchanged, since the token endpoint authenticates the client
    first and client ids are random, never given again."""
    if redis_client() is None:
        db.session.execute(delete(OidcAuthorizationCode).where(OidcAuthorizationCode.client_id == client_id))
