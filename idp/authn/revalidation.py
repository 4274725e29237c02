"""Revalidation: asking a directory again about a user it vouched for, when their principal is rebuilt without a
password.

A shadow row is refreshed at each password sign-in. Between sign-ins the SSO session (new SAML assertions, OIDC
authorizations) and OIDC tokens (refresh, userinfo, device flow) rebuild the principal from that row, so a user
deleted, disabled or moved out of groups in the directory would otherwise keep the old standing until they next
type a password. Once the row's last check is older than its directory's ``revalidate_seconds``, the directory is
asked again by the user's stable id (one search with the service account):

- gone, disabled, or no longer signable (name taken): every session of the user ends (the session-ended hook
  revokes their OIDC tokens) and the caller refuses;
- still there: the shadow row gets the current profile and groups;
- the directory cannot answer: the user goes on with what we have (an outage must not sign everybody out), and
  for BACKOFF this process asks that directory about nobody (a hung server would otherwise cost every request
  of its users its whole timeout, again and again).

OIDC calls :func:`revalidated_principal`; the session calls :func:`revalidate` when it loads.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app

from idp import audit
from idp.audit import AuditEvent
from idp.authn.connectors import chain
from idp.authn.connectors.chain import Configured
from idp.authn.connectors.local import LOCAL
from idp.authn.connectors.settings import DirectoryConfig
from idp.authn.principal import Principal, UserSnapshot, principal_from_user
from idp.authn.session import end_user_sessions
from idp.clock import now
from idp.errors import DirectoryUnavailable
from idp.extensions import db
from idp.store import User

log = logging.getLogger(__name__)
EVENT = "user.revalidate"
BACKOFF = timedelta(seconds=30)
_UNANSWERED = "idp.revalidation_unanswered"  # app.extensions: directory name -> until when it is not asked


def due(user: User | UserSnapshot) -> bool:
    """Whether the user's directory must be asked again before their principal is used: never for a built-in
    user, and for a directory user once the last check is older than its directory's ``revalidate_seconds``."""
    return _due(user, _directory(user))


def _directory(user: User | UserSnapshot) -> Configured | None:
    """The configured directory that vouches for a directory user (None for a built-in user, or when it is no
    longer configured)."""
    if user.source == LOCAL or user.external_id is None:
        return None
    return next((i for i in chain.configured() if i.name == user.source), None)


def _due(user: User | UserSnapshot, item: Configured | None) -> bool:
    if user.source == LOCAL or user.external_id is None:
        return False
    if item is None or item.cfg is None:
        return True
    t = now()
    until = _unanswered().get(item.name)
    # It failed to answer lately: going on, as when it fails. An end further off than a back-off means the clock
    # went back, and is ignored: a clock step can only bring a check closer.
    if until is not None and t < until <= t + _backoff(item.cfg):
        return False
    checked = user.checked_at
    # A check "in the future" (the clock went back) counts as stale, for the same reason.
    return checked is None or not checked <= t < checked + timedelta(seconds=item.cfg.revalidate_seconds)


def revalidate(user: User) -> bool:
    """True while the user may go on (checked lately, confirmed now, or their directory is down); False once
    their sessions were ended because the directory no longer vouches for them. Commits what it changed."""
    external_id, username = user.external_id, user.username
    item = _directory(user)  # looked up once: it is a query
    if external_id is None or not _due(user, item):
        return True
    if item is None:
        # Taken out of the configuration file: nobody vouches for this row any more (`idp directory remove`
        # disables the rows of a database entry itself).
        return _refuse(user, f"directory {user.source} is no longer configured")
    try:
        verdict = chain.connector(item).recheck(external_id)
    except DirectoryUnavailable as exc:
        # checked_at stays as it was, so the first use after the back-off asks again.
        if item.cfg is not None:
            _unanswered()[item.name] = now() + _backoff(item.cfg)
        log.warning("directory %s unavailable while revalidating %s: %s", user.source, username, exc.reason)
        audit.record(AuditEvent(type=EVENT, outcome="warning", username=username, actor=f"directory:{user.source}",
                                reason=f"not rechecked, going on: {exc.reason}", details={"source": user.source}))
        return True
    _unanswered().pop(item.name, None)  # it answers again
    if verdict.principal is None:
        return _refuse(user, verdict.reason or "refused by the directory")
    db.session.commit()
    return True


def _backoff(cfg: DirectoryConfig) -> timedelta:
    # Never longer than the directory's own interval: an admin who asks for a check every few seconds keeps that.
    return min(BACKOFF, timedelta(seconds=cfg.revalidate_seconds))


def _unanswered() -> dict[str, datetime]:
    # Per app (each test builds its own), shared by the process's threads: a dict's get and set are atomic.
    found: dict[str, datetime] = current_app.extensions.setdefault(_UNANSWERED, {})
    return found


def _refuse(user: User, reason: str) -> bool:
    source, username = user.source, user.username
    ended = end_user_sessions(user.id)
    # Not marked as checked: every later use asks again until the directory vouches for the user once more.
    audit.record(AuditEvent(type=EVENT, outcome="failure", username=username, actor=f"directory:{source}",
                            reason=reason, details={"source": source, "sessions_ended": ended}))
    return False


def principal_now(user: UserSnapshot, authn_at: datetime) -> Principal | None:
    """The Principal of an active user outside a sign-in (a code, refresh token or device code exchanged), or
    None when their directory no longer vouches for them (their sessions were then ended). The directory is
    asked again only when that is due, and then about the user's row."""
    if not due(user):
        return user.principal(authn_at)
    row = db.session.get(User, user.id)
    return revalidated_principal(row, authn_at) if row is not None else None


def revalidated_principal(user: User, authn_at: datetime) -> Principal | None:
    """The Principal of a user row outside a password sign-in (OIDC refresh, userinfo, device flow), or None
    when the user is disabled here or their directory no longer vouches for them (sessions then ended)."""
    if not user.enabled or not revalidate(user):
        return None
    return principal_from_user(user, authn_at)
