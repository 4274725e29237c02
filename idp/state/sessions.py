"""SSO sessions and their participants (the SPs each session has signed in to, for Single Logout).

The lifecycle (cookies, lifetimes, listeners) is :mod:`idp.authn.session`'s; this module only stores, and hands
out frozen dataclasses in both modes, so nothing above it can tell the backends apart, except
:func:`get_joined`: in the database it reads the caller's joined rows (and a participant) with the session, in
Redis it leaves them to the caller.

Redis keeps, for a session ``<id>`` (the SHA-256 of its cookie):

- ``idp:session:<id>``: a hash of the session's fields, kept until its absolute expiry plus GRACE;
- ``idp:session:<id>:sps``: a hash of its participants, SP id -> JSON, with the same expiry;
- ``idp:session-user:<user id>``: a sorted set of the user's session ids, scored by their expiry;
- ``idp:session-nameid:<sp id>:<sha256(NameID)>``: a sorted set of the sessions in which that SP got that
  NameID, scored by their expiry (Single Logout finds sessions by it);
- ``idp:session-expiry``: every session id scored by its expiry, so that expired sessions are ended (and
  their listeners told) as in the database, not only forgotten by a TTL. An ended session stays in it, due
  END_GRACE later, until a sweep has ended it again and committed (:func:`swept`): what its end did in the
  database (tokens revoked or moved) is then never lost to a commit that failed after Redis had forgotten the
  session.

Entries of the other indexes whose session is gone are skipped and pruned when read, and dropped by score once
expired.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

import redis
from redis.client import Pipeline
from sqlalchemy import ColumnElement, Row, Select, and_, bindparam, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.extensions import db
from idp.runtime import forget_at_transaction_end, forget_per_request, per_request
from idp.state import GRACE, PREFIX, from_epoch, from_row, labelled, redis_client, to_epoch, ttl_seconds
from idp.state.lua import Script
from idp.store import ParticipantRow, SsoSessionRow


@dataclass(frozen=True)
class SsoSession:
    id: str  # SHA-256 of the cookie value: a leak of the store does not leak live sessions
    user_id: int
    authn_at: datetime
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    client_ip: str | None


@dataclass(frozen=True)
class Participant:
    """An SP that received an assertion in a session: whom Single Logout must reach, and how it knows the user."""

    session_id: str
    sp_id: int
    name_id: str
    name_id_format: str
    session_index: str


# -- Redis keys and encodings ----------------------------------------------------------------------------------
# The client decodes replies (decode_responses): the casts below narrow redis-py's annotations to str.

_EXPIRY = f"{PREFIX}session-expiry"


def _key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def _sps_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}:sps"


def _user_key(user_id: int) -> str:
    return f"{PREFIX}session-user:{user_id}"


def _nameid_key(sp_id: int, name_id: str) -> str:
    return f"{PREFIX}session-nameid:{sp_id}:{hashlib.sha256(name_id.encode()).hexdigest()}"


def _encode(s: SsoSession) -> dict[Any, Any]:
    return {"user_id": s.user_id, "authn_at": to_epoch(s.authn_at), "created_at": to_epoch(s.created_at),
            "last_seen_at": to_epoch(s.last_seen_at), "expires_at": to_epoch(s.expires_at),
            "client_ip": s.client_ip or ""}


def _decode(session_id: str, h: dict[str, str]) -> SsoSession:
    return SsoSession(id=session_id, user_id=int(h["user_id"]), authn_at=from_epoch(h["authn_at"]),
                      created_at=from_epoch(h["created_at"]), last_seen_at=from_epoch(h["last_seen_at"]),
                      expires_at=from_epoch(h["expires_at"]), client_ip=h["client_ip"] or None)


def _encode_participant(p: Participant) -> str:
    return json.dumps({"name_id": p.name_id, "format": p.name_id_format, "session_index": p.session_index})


def _decode_participant(session_id: str, sp_id: str | int, raw: str) -> Participant:
    d = json.loads(raw)
    return Participant(session_id=session_id, sp_id=int(sp_id), name_id=d["name_id"], name_id_format=d["format"],
                       session_index=d["session_index"])


def _index(pipe: Pipeline, key: str, session_id: str, expires_at: datetime, now: datetime) -> None:
    """Add a session to an index set, drop members long expired, and keep the set as long as its latest."""
    ttl = ttl_seconds(expires_at, now)
    pipe.zadd(key, {session_id: to_epoch(expires_at)})
    pipe.zremrangebyscore(key, "-inf", to_epoch(now - GRACE))
    pipe.expire(key, ttl, nx=True)
    pipe.expire(key, ttl, gt=True)


# Only while the session exists: a touch or a participant racing a logout must not bring back a partial hash.
_TOUCH = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
return 1
""")
_SAVE_PARTICIPANT = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local sp, doc, ttl, sid, score, stale = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('HSET', KEYS[2], sp, doc)
redis.call('EXPIRE', KEYS[2], ttl)
if KEYS[4] ~= KEYS[3] then redis.call('ZREM', KEYS[4], sid) end
redis.call('ZADD', KEYS[3], score, sid)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', stale)
redis.call('EXPIRE', KEYS[3], ttl, 'NX')
redis.call('EXPIRE', KEYS[3], ttl, 'GT')
return 1
""")


# -- sessions -------------------------------------------------------------------------------------------------


# Core statements (a plain row becomes the dataclass, without the ORM's identity map); a request's own session is
# read with get_joined.
_SESSION = SsoSessionRow.__table__
_SESSION_BY_ID = select(_SESSION).where(_SESSION.c.id == bindparam("id"))
_PARTICIPANT = ParticipantRow.__table__
_PARTICIPANT_BY_KEY = select(_PARTICIPANT).where(_PARTICIPANT.c.session_id == bindparam("session_id"),
                                                 _PARTICIPANT.c.sp_id == bindparam("sp_id"))
_INSERT_SESSION = _SESSION.insert()
# A session's participants and its row locked for the rest of the transaction (end()): FOR UPDATE on PostgreSQL,
# which a foreign key's share lock waits for; on SQLite a write that takes the database's one write lock (it has
# no row locks).
_LOCK_PARTICIPANTS = (select(_PARTICIPANT.c.sp_id).where(_PARTICIPANT.c.session_id == bindparam("id"))
                      .with_for_update())
_HOLD_SESSION = {"postgresql": select(_SESSION.c.id).where(_SESSION.c.id == bindparam("id")).with_for_update(),
                 "sqlite": _SESSION.update().where(_SESSION.c.id == bindparam("id")).values(id=_SESSION.c.id)}
# How long after a session's end a sweep makes sure of it (see the module's docstring).
END_GRACE = timedelta(seconds=60)
# At most this many a sweep: a sign-in that sweeps does not wait on thousands (the next sweep takes the rest).
SWEEP_BATCH = 200
_EXPIRED_IDS = select(_SESSION.c.id).where(_SESSION.c.expires_at <= bindparam("now")).limit(SWEEP_BATCH)


def _upsert_participant(insert: Any) -> Any:
    """A participant is new at a session's first response to an SP, rewritten when its NameID changes."""
    stmt = insert(_PARTICIPANT)
    return stmt.on_conflict_do_update(
        index_elements=[_PARTICIPANT.c.session_id, _PARTICIPANT.c.sp_id],
        set_={c: stmt.excluded[c] for c in ("name_id", "name_id_format", "session_index")})


_UPSERT_PARTICIPANT = {"sqlite": _upsert_participant(sqlite.insert),
                       "postgresql": _upsert_participant(postgresql.insert)}


def get(session_id: str) -> SsoSession | None:
    """The stored session (expired or not: the caller judges), or None."""
    client = redis_client()
    if client is not None:
        h = cast(dict[str, str], client.hgetall(_key(session_id)))
        return _decode(session_id, h) if h else None
    db.session.flush()  # a Core read does not autoflush
    row = db.session.connection().execute(_SESSION_BY_ID, {"id": session_id}).first()
    return from_row(SsoSession, row) if row is not None else None


_JOINED_PREFIX = "session_"  # select_joined's session columns: apart from whatever the caller joins
_PARTICIPANT_PREFIX = "participant_"  # and the participant's
# The participants this request read, by "<session id> <sp id>" (None: not one): read with the session when the
# SP is known by then (an SSO answer), else by participant(). Forgotten at a write, a commit or a rollback.
_PARTICIPANTS_READ = "idp.sessions.participants"
forget_at_transaction_end(_PARTICIPANTS_READ)


def select_joined(extend: Callable[[Select[Any], ColumnElement[int]], Select[Any]]) -> Select[Any]:
    """A session by id (its columns labelled ``session_<name>``), its participant for the SP bound as ``sp_id``
    (``participant_<name>``; none for None), and what ``extend`` joins on its user id, all by outer joins (the
    session is found whatever the joins find): the statement of :func:`get_joined`, built once by the caller."""
    with_participant = _SESSION.outerjoin(_PARTICIPANT, and_(_PARTICIPANT.c.session_id == _SESSION.c.id,
                                                            _PARTICIPANT.c.sp_id == bindparam("sp_id")))
    by_id = (select(*labelled(_SESSION.c, _JOINED_PREFIX), *labelled(_PARTICIPANT.c, _PARTICIPANT_PREFIX))
             .select_from(with_participant)
             .where(_SESSION.c.id == bindparam("id")))
    return extend(by_id, _SESSION.c.user_id)


def get_joined(session_id: str, statement: Select[Any], sp_id: int | None = None
               ) -> tuple[SsoSession | None, Sequence[Row[Any]] | None]:
    """As :func:`get`, and in the database the rows of ``statement`` (made by :func:`select_joined`), read in the
    same round trip: none when the session is not stored. In Redis the rows are None: the caller reads them.
    With ``sp_id``, the session's participant for that SP is read too: :func:`participant` answers from it."""
    if redis_client() is not None:
        return get(session_id), None
    db.session.flush()  # a Core read does not autoflush
    rows = db.session.connection().execute(statement, {"id": session_id, "sp_id": sp_id}).all()
    if not rows:
        return None, rows
    first = rows[0]
    if sp_id is not None:
        found = from_row(Participant, first, _PARTICIPANT_PREFIX) if first.participant_sp_id is not None else None
        per_request(_PARTICIPANTS_READ, f"{session_id} {sp_id}", lambda: found)
    return from_row(SsoSession, first, _JOINED_PREFIX), rows


def create(s: SsoSession, now: datetime) -> None:
    """Store a new session. In the database it is written, not committed (sign-in commits it with its login
    event)."""
    client = redis_client()
    if client is not None:
        with client.pipeline() as pipe:  # MULTI: the session and its indexes together
            pipe.hset(_key(s.id), mapping=_encode(s))
            pipe.expire(_key(s.id), ttl_seconds(s.expires_at, now))
            _index(pipe, _user_key(s.user_id), s.id, s.expires_at, now)
            pipe.zadd(_EXPIRY, {s.id: to_epoch(s.expires_at)})
            pipe.execute()
        return
    db.session.connection().execute(_INSERT_SESSION, {
        "id": s.id, "user_id": s.user_id, "authn_at": s.authn_at, "created_at": s.created_at,
        "last_seen_at": s.last_seen_at, "expires_at": s.expires_at, "client_ip": s.client_ip})


def touch(s: SsoSession, at: datetime) -> SsoSession:
    """Record activity (the idle timeout slides); returns the session as now stored. Commits in the database."""
    client = redis_client()
    if client is not None:
        _TOUCH(client, [_key(s.id)], [to_epoch(at)])
    else:
        db.session.execute(update(SsoSessionRow).where(SsoSessionRow.id == s.id).values(last_seen_at=at))
        db.session.commit()
    return replace(s, last_seen_at=at)


def delete(ids: list[str]) -> None:
    """Forget sessions and their participants. In the database it does not commit; in Redis the ids stay due in
    the expiry index (see the module's docstring)."""
    if not ids:
        return
    forget_per_request(_PARTICIPANTS_READ)
    client = redis_client()
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hget(_key(sid), "user_id")
                pipe.hgetall(_sps_key(sid))
            found = pipe.execute()
        with client.pipeline() as pipe:  # MULTI: the sessions and their index entries together
            _forget(pipe, list(zip(ids, found[::2], found[1::2], strict=True)))
            pipe.execute()
        return
    _delete_rows(ids)


def end(session_id: str) -> list[Participant]:
    """Forget one session, as :func:`delete`, and return its participants as they were when it went: an SSO
    answer recording one at the same moment is either among them, or finds the session gone (SessionGone).
    Single Logout then reaches every SP that got an assertion in the session."""
    forget_per_request(_PARTICIPANTS_READ)
    client = redis_client()
    if client is not None:
        taken: list[Participant] = []

        def take(pipe: Pipeline) -> None:
            # WATCHed: a participant saved after this read makes the MULTI fail, and this runs again.
            user_id = pipe.hget(_key(session_id), "user_id")
            sps = cast(dict[str, str], pipe.hgetall(_sps_key(session_id)))
            pipe.multi()
            _forget(pipe, [(session_id, user_id, sps)])
            taken[:] = _decoded(session_id, sps)

        client.transaction(take, _key(session_id), _sps_key(session_id))
        return taken
    _hold(session_id)
    found = participants(session_id)
    _delete_rows([session_id])
    return found


def _hold(session_id: str) -> None:
    """Lock a session's participants and row for the rest of the transaction, before they are read, participants
    first as every other deleter takes them (no deadlock): a participant being rewritten (a new NameID) waits for
    this transaction, then finds the session gone; so does a new one, whose foreign key takes a share of the
    session row's lock. SQLite has one writer: its write lock is enough."""
    connection, dialect = db.session.connection(), db.engine.dialect.name
    if dialect == "postgresql":
        connection.execute(_LOCK_PARTICIPANTS, {"id": session_id})
    connection.execute(_HOLD_SESSION[dialect], {"id": session_id})


def _forget(pipe: Pipeline, sessions: list[tuple[str, Any, dict[str, str]]]) -> None:
    """Queue the deletion of sessions (id, user id, participants as read) and of their index entries."""
    for sid, user_id, sps in sessions:
        pipe.delete(_key(sid), _sps_key(sid))
        if user_id is not None:
            pipe.zrem(_user_key(int(user_id)), sid)
        for sp_id, raw in sps.items():
            pipe.zrem(_nameid_key(int(sp_id), _decode_participant(sid, sp_id, raw).name_id), sid)
    # Due a little later, not now: a sweep elsewhere must not end a session again while this request is still
    # ending it (moving its tokens to a successor, say) and has not committed.
    pipe.zadd(_EXPIRY, dict.fromkeys([sid for sid, _, _ in sessions], to_epoch(clock.now() + END_GRACE)))


def _delete_rows(ids: list[str]) -> None:
    # Participants first: no reliance on ON DELETE CASCADE being enforced by every database.
    db.session.execute(sql_delete(ParticipantRow).where(ParticipantRow.session_id.in_(ids)))
    db.session.execute(sql_delete(SsoSessionRow).where(SsoSessionRow.id.in_(ids)))


def user_session_ids(user_id: int) -> list[str]:
    """Ids of the user's stored sessions."""
    client = redis_client()
    if client is not None:
        return _existing(client, _user_key(user_id), cast(list[str], client.zrange(_user_key(user_id), 0, -1)))
    return list(db.session.scalars(select(SsoSessionRow.id).where(SsoSessionRow.user_id == user_id)))


def expired_ids(now: datetime) -> list[str]:
    """Ids of sessions past their absolute lifetime (in Redis, and those ended since the last sweep), at most
    SWEEP_BATCH, for the caller to end (housekeeping), then to pass to :func:`swept` once committed."""
    client = redis_client()
    if client is not None:
        return cast(list[str], client.zrangebyscore(_EXPIRY, "-inf", to_epoch(now), start=0, num=SWEEP_BATCH))
    return list(db.session.connection().execute(_EXPIRED_IDS, {"now": now}).scalars())


def swept(ids: list[str]) -> None:
    """Sessions :func:`expired_ids` gave were ended and the ending committed: Redis drops them from the index."""
    client = redis_client()
    if client is not None and ids:
        client.zrem(_EXPIRY, *ids)


def _existing(client: redis.Redis, index: str, ids: list[str]) -> list[str]:
    """The ids whose session hash still exists; the others are pruned from ``index``."""
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.exists(_key(sid))
        alive = pipe.execute()
    gone = [sid for sid, a in zip(ids, alive, strict=True) if not a]
    if gone:
        client.zrem(index, *gone)
    return [sid for sid, a in zip(ids, alive, strict=True) if a]


# -- participants ---------------------------------------------------------------------------------------------


def participants(session_id: str) -> list[Participant]:
    """The SPs of a session, by SP id (registration order)."""
    client = redis_client()
    if client is not None:
        return _decoded(session_id, cast(dict[str, str], client.hgetall(_sps_key(session_id))))
    rows = db.session.scalars(
        select(ParticipantRow).where(ParticipantRow.session_id == session_id).order_by(ParticipantRow.sp_id)
    )
    return [from_row(Participant, r) for r in rows]


def _decoded(session_id: str, sps: dict[str, str]) -> list[Participant]:
    """A session's participants as Redis keeps them (its ``:sps`` hash), by SP id (registration order)."""
    return sorted((_decode_participant(session_id, sp_id, raw) for sp_id, raw in sps.items()), key=lambda p: p.sp_id)


def participant(session_id: str, sp_id: int) -> Participant | None:
    """The session's participant for that SP, or None; in the database read once per request (with the session
    when get_joined was given the SP)."""
    client = redis_client()
    if client is not None:
        raw = cast(str | None, client.hget(_sps_key(session_id), str(sp_id)))
        return _decode_participant(session_id, sp_id, raw) if raw is not None else None
    return per_request(_PARTICIPANTS_READ, f"{session_id} {sp_id}", lambda: _read_participant(session_id, sp_id))


def _read_participant(session_id: str, sp_id: int) -> Participant | None:
    db.session.flush()  # a Core read does not autoflush: a participant saved in this request is seen
    row = db.session.connection().execute(_PARTICIPANT_BY_KEY, {"session_id": session_id, "sp_id": sp_id}).first()
    return from_row(Participant, row) if row is not None else None


class SessionGone(LookupError):
    """The session ended (a logout, perhaps on another instance) while this request was answering in it."""


def save_participant(s: SsoSession, p: Participant, previous: Participant | None, now: datetime) -> None:
    """Record that ``p.sp_id`` got an assertion in ``s`` (``previous``: what :func:`participant` said before).
    In the database it does not commit (the response's audit event does). SessionGone, and nothing written,
    when the session ended meanwhile: an SP that Single Logout would never reach must not get the assertion.
    In the database that rolls back the request's transaction (PostgreSQL has aborted it)."""
    if p == previous:
        return  # already stored as it is (read in this request): nothing to write
    forget_per_request(_PARTICIPANTS_READ)
    client = redis_client()
    if client is not None:
        new_index = _nameid_key(p.sp_id, p.name_id)
        old_index = _nameid_key(previous.sp_id, previous.name_id) if previous is not None else new_index
        if not _SAVE_PARTICIPANT(client, [_key(s.id), _sps_key(s.id), new_index, old_index],
                                 [p.sp_id, _encode_participant(p), ttl_seconds(s.expires_at, now), s.id,
                                  to_epoch(s.expires_at), to_epoch(now - GRACE)]):
            raise SessionGone(s.id)
        return
    db.session.flush()  # a participant row the ORM holds (a re-authentication's move) is written first
    try:
        db.session.connection().execute(_UPSERT_PARTICIPANT[db.engine.dialect.name], {
            "session_id": p.session_id, "sp_id": p.sp_id, "name_id": p.name_id,
            "name_id_format": p.name_id_format, "session_index": p.session_index})
    except IntegrityError:
        # The session's row, which the participant's foreign key names, was deleted meanwhile.
        db.session.rollback()
        if db.session.connection().execute(_SESSION_BY_ID, {"id": s.id}).first() is None:
            raise SessionGone(s.id) from None
        raise


def continue_as(old_id: str, new: SsoSession, now: datetime) -> None:
    """Re-authentication: session ``old_id`` goes on as ``new`` (created already). Its participants move there
    and it is forgotten in one step, as :func:`end` takes them: an SP answered in the old session meanwhile (on
    another instance) is moved with the others or finds the session gone (SessionGone), never dropped from
    Single Logout. In the database it does not commit."""
    forget_per_request(_PARTICIPANTS_READ)
    client = redis_client()
    if client is None:
        _hold(old_id)
        db.session.execute(
            update(ParticipantRow).where(ParticipantRow.session_id == old_id).values(session_id=new.id)
        )
        _delete_rows([old_id])
        return

    def move(pipe: Pipeline) -> None:
        # WATCHed: a participant saved in the old session meanwhile makes this run again rather than be lost.
        user_id = pipe.hget(_key(old_id), "user_id")
        sps = cast(dict[Any, str], pipe.hgetall(_sps_key(old_id)))
        pipe.multi()
        if sps:
            pipe.hset(_sps_key(new.id), mapping=sps)
            pipe.expire(_sps_key(new.id), ttl_seconds(new.expires_at, now))
            for sp_id, raw in sps.items():
                _index(pipe, _nameid_key(int(sp_id), _decode_participant(old_id, sp_id, raw).name_id), new.id,
                       new.expires_at, now)
        _forget(pipe, [(old_id, user_id, sps)])

    client.transaction(move, _key(old_id), _sps_key(old_id))


def find_by_name_id(sp_id: int, name_id: str, indexes: list[str]) -> list[SsoSession]:
    """The stored sessions in which SP ``sp_id`` got ``name_id`` (with one of ``indexes`` as SessionIndex, when
    any are given): how Single Logout finds a session without the browser's cookie."""
    client = redis_client()
    if client is None:
        query = (select(SsoSessionRow).join(ParticipantRow, ParticipantRow.session_id == SsoSessionRow.id)
                 .where(ParticipantRow.sp_id == sp_id, ParticipantRow.name_id == name_id))
        if indexes:
            query = query.where(ParticipantRow.session_index.in_(indexes))
        return [from_row(SsoSession, r) for r in db.session.scalars(query)]
    index = _nameid_key(sp_id, name_id)
    ids = cast(list[str], client.zrange(index, 0, -1))
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.hgetall(_key(sid))
            pipe.hget(_sps_key(sid), str(sp_id))
        found = pipe.execute()
    sessions, gone = [], []
    for sid, h, raw in zip(ids, found[::2], found[1::2], strict=True):
        if not h:
            gone.append(sid)
            continue
        p = _decode_participant(sid, sp_id, raw) if raw is not None else None
        if p is not None and p.name_id == name_id and (not indexes or p.session_index in indexes):
            sessions.append(_decode(sid, h))
    if gone:
        client.zrem(index, *gone)
    return sessions
