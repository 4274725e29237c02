"""The SSO session: a random cookie in the browser, a record keyed by its SHA-256 on the server (stored by
:mod:`idp.state.sessions`, in Redis or the database).

The server decides everything (idle and absolute lifetimes, a disabled user), so ending a session anywhere
(logout, Single Logout, `idp user disable`, another process) takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request, url_for
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from idp import audit
from idp.audit import AuditEvent
from idp.authn.principal import Principal, UserSnapshot, load_snapshot, snapshot_of, with_snapshot
from idp.clock import now
from idp.errors import first_line
from idp.extensions import db
from idp.runtime import settings
from idp.state import sessions
from idp.state.sessions import Participant, SsoSession
from idp.store import User

log = logging.getLogger(__name__)


COOKIE = "idp_session"


def cookie_name() -> str:
    """COOKIE, or on https its __Host- name."""
    return settings().cookie_name(COOKIE)


# A protocol that signs users in elsewhere (SAML Single Logout) ends the session itself and may answer with
# the first hop of its logout chain, which ends by redirecting to ``return_to`` when one is given.
# Registered by the protocol so that authn never imports it.
LogoutPropagation = Callable[[SsoSession, str, str | None], BaseResponse | None]
_PROPAGATION = "idp.logout_propagation"


def set_logout_propagation(app: Flask, propagate: LogoutPropagation) -> None:
    app.extensions[_PROPAGATION] = propagate


def sign_out(sso: SsoSession, reason: str, return_to: str | None = None) -> BaseResponse | None:
    """End ``sso`` everywhere it reached; a response means the browser must visit the SPs first, after which
    it is sent to ``return_to`` (an absolute URL the caller has validated) instead of a signed-out page."""
    propagate: LogoutPropagation | None = current_app.extensions.get(_PROPAGATION)
    if propagate is not None:
        return propagate(sso, reason, return_to)
    end_session(sso, reason)
    return None
# last_seen_at is rewritten at most this often: sliding the idle timeout must not cost a write per request.
_TOUCH_EVERY = timedelta(seconds=60)
# Per-request state lives in the WSGI environ, not in `g`: an app context can outlive one request.
_CACHE = "idp.sso_session"
_COOKIE_ACTION = "idp.sso_cookie"
_USER = "idp.sso_user"
# A request's session and its user with their groups, read together in the database.
_SESSION_AND_USER = sessions.select_joined(with_snapshot)
# When this process next looks for sessions past their absolute lifetime (app.extensions, by our clock).
_NEXT_SWEEP = "idp.sessions.next_sweep"
_SWEEP_EVERY = timedelta(seconds=60)
_UNSET: Any = object()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _client_ip() -> str | None:
    return request.remote_addr if has_request_context() else None


def current_session(sp_id: int | None = None) -> SsoSession | None:
    """The valid session of this request's cookie (cached per request), or None. An expired or orphaned
    session is removed and its cookie cleared. ``sp_id``: the SP about to be answered, whose participant is
    then read with the session in the database (see state.sessions.participant), when this is the request's
    first look at its session."""
    if not has_request_context():
        return None
    cached = request.environ.get(_CACHE, _UNSET)
    if cached is not _UNSET:
        result: SsoSession | None = cached
        return result
    sso = _load(request.cookies.get(cookie_name()), sp_id)
    request.environ[_CACHE] = sso
    return sso


def _load(token: str | None, sp_id: int | None) -> SsoSession | None:
    if not token:
        return None
    if len(token) > 128:
        _clear_cookie()
        return None
    sso, rows = sessions.get_joined(_digest(token), _SESSION_AND_USER, sp_id)
    if sso is None:
        _clear_cookie()
        return None
    t = now()
    if (ended := _lifetime_over(sso, t)) is not None:
        _expire(sso, ended)
        _clear_cookie()
        return None
    # The user with their groups, kept for the request (principal_for reads it from there): read with the session
    # in the database, in a statement of its own with Redis.
    user = snapshot_of(rows) if rows is not None else load_snapshot(sso.user_id)
    if user is None or not user.enabled:
        end_session(sso, "user disabled")
        return None
    # Imported here: revalidation reaches the connector chain, whose local connector imports this module.
    from idp.authn.revalidation import due, revalidate

    if due(user):
        row = db.session.get(User, user.id)
        if row is None:  # deleted since the line above
            end_session(sso, "user deleted")
            return None
        if not revalidate(row):
            # The directory no longer vouches for the user: revalidate ended all their sessions, this one too.
            _clear_cookie()
            return None
        user = UserSnapshot.of(row)  # as the directory's answer left it
    request.environ[_USER] = user
    if t - sso.last_seen_at >= _TOUCH_EVERY:
        sso = sessions.touch(sso, t)
    return sso


def _lifetime_over(sso: SsoSession, t: datetime, *, idle: bool = True) -> str | None:
    """Why ``sso`` has ended by ``t`` (by its idle timeout too unless ``idle`` is False), or None while it goes
    on."""
    if t >= sso.expires_at:
        return "absolute lifetime reached"
    if idle and t >= sso.last_seen_at + timedelta(seconds=settings().session_idle_seconds):
        return "idle timeout"
    return None


def _expire(sso: SsoSession, reason: str) -> None:
    """End a session whose time is up, with what was issued in it; committed (with its audit event)."""
    username = _username(sso.user_id)
    _delete([sso.id])
    audit.record(AuditEvent(type="session.expire", username=username, client_ip=_client_ip(), reason=reason))


def session_goes_on(session_id: str) -> bool:
    """Whether the SSO session ``session_id`` (which an OIDC refresh token was issued in) is still there and
    within its absolute lifetime; one past it is ended now, with the tokens issued in it. Its idle timeout is the
    browser's: a client refreshes when its access token runs out, an hour, longer than the idle timeout (30
    minutes), and must not end the user's sign-in everywhere by doing so; nor does it keep a browser's session
    alive."""
    sso = sessions.get(session_id)
    if sso is None:
        return False
    if (ended := _lifetime_over(sso, now(), idle=False)) is not None:
        _expire(sso, ended)
        return False
    return True


def _username(user_id: int) -> str | None:
    name: str | None = db.session.scalar(select(User.username).where(User.id == user_id))
    return name


def _delete(ids: list[str], successor: str | None = None) -> None:
    sessions.delete(ids)
    _ended(ids, successor)


def _ended(ids: list[str], successor: str | None) -> None:
    for listener in current_app.extensions.get(_ENDED, ()):
        listener(ids, successor)


# What was issued in a session ends with it (OIDC tokens); a protocol registers a listener, so authn never
# imports it. ``successor`` is set when the same user signed in again: the session goes on under a new id.
SessionEnded = Callable[[list[str], str | None], None]
_ENDED = "idp.session_ended"


def on_session_end(app: Flask, listener: SessionEnded) -> None:
    app.extensions.setdefault(_ENDED, []).append(listener)


# And what a user was issued outside any session, when all of theirs are ended for them (end_user_sessions).
UserEnded = Callable[[int], None]
_USER_ENDED = "idp.user_ended"


def on_user_end(app: Flask, listener: UserEnded) -> None:
    app.extensions.setdefault(_USER_ENDED, []).append(listener)


def current_principal() -> Principal | None:
    sso = current_session()
    return principal_for(sso) if sso is not None else None


def principal_for(sso: SsoSession) -> Principal:
    """The Principal of ``sso``'s user as this request loaded it with the session (read again for another
    session's user)."""
    user: UserSnapshot | None = request.environ.get(_USER) if has_request_context() else None
    if user is None or user.id != sso.user_id:
        user = load_snapshot(sso.user_id)
    if user is None:
        raise LookupError(f"session of a deleted user {sso.user_id}")
    return user.principal(sso.authn_at)


def start_session(user_id: int) -> SsoSession:
    """Begin a session after a successful sign-in: always a new id (no fixation). Re-authenticating the
    same user keeps the SPs already signed in to, so Single Logout still reaches them; a different user
    replaces the old session altogether."""
    cfg = settings()
    t = now()
    token = secrets.token_urlsafe(32)
    new = SsoSession(
        id=_digest(token), user_id=user_id, authn_at=t, created_at=t, last_seen_at=t,
        expires_at=t + timedelta(seconds=cfg.session_max_seconds), client_ip=_client_ip(),
    )
    old = current_session()
    sessions.create(new, t)
    if old is not None and old.user_id == user_id:
        sessions.continue_as(old.id, new, t)
        _ended([old.id], new.id)
    elif old is not None:
        end_session(old, "replaced by another user's sign-in", commit=False)
    db.session.commit()
    request.environ[_CACHE] = new
    # The user as loaded with the old session is not the user this sign-in has just read (a directory's groups
    # and profile, as a re-authentication left them): an answer given in this request reads them again.
    request.environ.pop(_USER, None)
    request.environ[_COOKIE_ACTION] = token
    _sweep(t)
    return new


def _sweep(t: datetime) -> None:
    """Housekeeping after a sign-in, at most once a minute per process: sessions past their absolute lifetime
    (refused when read whatever; this ends them and their participants) and, in Redis, ends to make sure of
    (sessions.delete). Its own transaction: a sweep that fails costs the sign-in nothing, and is tried again."""
    due = current_app.extensions.get(_NEXT_SWEEP, t)
    if not (t >= due or due > t + _SWEEP_EVERY):  # (the second: our clock was set back)
        return
    current_app.extensions[_NEXT_SWEEP] = t + _SWEEP_EVERY
    try:
        expired = sessions.expired_ids(t)
        if expired:
            _delete(expired)
        db.session.commit()
        sessions.swept(expired)
    except (SQLAlchemyError, RedisError) as exc:
        db.session.rollback()
        log.warning("session housekeeping failed (tried again in a minute): %s", first_line(exc))
        return
    if len(expired) == sessions.SWEEP_BATCH:  # more are due: the next sign-in sweeps again
        current_app.extensions[_NEXT_SWEEP] = t


def end_session(sso: SsoSession, reason: str, *, commit: bool = True) -> list[Participant]:
    """Delete the session, clear the cookie when it is this request's, audit "logout". Returns the session's
    participants as they were when it ended (every SP that got an assertion in it), for Single Logout."""
    username = _username(sso.user_id)
    participants = sessions.end(sso.id)
    _ended([sso.id], None)
    if has_request_context():
        token = request.cookies.get(cookie_name())
        if token and _digest(token) == sso.id:
            request.environ[_CACHE] = None
            _clear_cookie()
    audit.record(
        AuditEvent(type="logout", username=username, client_ip=_client_ip(), reason=reason,
                   details={"participants": len(participants)}),
        commit=commit,
    )
    return participants


def end_user_sessions(user_id: int, *, keep_current: bool = False) -> int:
    """End every session of a user (disabled, deleted, their password reset, refused by their directory), and
    what they hold outside any session (the OIDC tokens of a device they approved). With ``keep_current``, the
    session this request comes with stays if it is theirs (who sets their own password stays signed in here).
    In the database it does not commit: the caller's change does (Redis forgets the sessions at once)."""
    ids = sessions.user_session_ids(user_id)
    current = current_session() if keep_current else None
    if current is not None and current.user_id == user_id:
        ids = [i for i in ids if i != current.id]
    if ids:
        _delete(ids)
    for listener in current_app.extensions.get(_USER_ENDED, ()):
        listener(user_id)
    return len(ids)


def login_url(next_path: str, force: bool = False) -> str:
    """Where to send a browser to sign in and come back to ``next_path`` (a local path)."""
    if force:
        return url_for("authn.login", next=next_path, force=1)
    return url_for("authn.login", next=next_path)


def _clear_cookie() -> None:
    if has_request_context() and request.cookies.get(cookie_name()):
        request.environ[_COOKIE_ACTION] = ""


def apply_cookie(resp: Response) -> Response:
    """after_request hook: write or clear the session cookie as this request decided."""
    action = request.environ.get(_COOKIE_ACTION)
    if action is None:
        return resp
    secure = settings().https
    if action:
        # A browser-session cookie: the server-side lifetimes are what count.
        resp.set_cookie(cookie_name(), action, path="/", httponly=True, samesite="Lax", secure=secure)
    else:
        resp.delete_cookie(cookie_name(), path="/", httponly=True, samesite="Lax", secure=secure)
    return resp
