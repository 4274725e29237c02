"""Consent: what a user allowed a third-party client to receive, remembered, listed and revocable.

First-party clients (``--first-party``) never ask. For the others, a request is covered when every scope it
asks for was allowed before; allowing adds the new scopes to the remembered ones. Revoking forgets the
consent and revokes the client's tokens for that user, so that the application really loses access.
Services take the acting user or admin as an argument, so the CLI, the home page and the authorization
endpoint share them; each change is an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from idp import audit, clock
from idp.audit import AuditEvent
from idp.authn.principal import Principal
from idp.errors import Conflict, NotFound, duplicate_key
from idp.extensions import db
from idp.oidc import server
from idp.store import OidcClient, OidcConsent, OidcToken
from idp.store.oidc import Client

# What the consent page says each scope gives away.
SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in with your account here (an identifier that stays the same)",
    "profile": "Your name and username",
    "email": "Your email address",
    "groups": "The groups you belong to",
}


def describe(scope: str) -> list[str]:
    return [SCOPE_DESCRIPTIONS.get(s, s) for s in scope.split()]


@dataclass(frozen=True)
class AllowedApp:
    client_id: str
    name: str
    scope: str
    granted_at: datetime


def _row(user_id: int, client_id: str) -> OidcConsent | None:
    return db.session.get(OidcConsent, (user_id, client_id))


_KEY = (OidcConsent.user_id == bindparam("user"), OidcConsent.client_id == bindparam("client"))
_SCOPE = select(OidcConsent.scope).where(*_KEY)
_INSERT = insert(OidcConsent).values(user_id=bindparam("user"), client_id=bindparam("client"),
                                     scope=bindparam("allowed"), granted_at=bindparam("t"), updated_at=bindparam("t"))
_MERGE = (update(OidcConsent).where(*_KEY, OidcConsent.scope == bindparam("before"))
          .values(scope=bindparam("allowed"), updated_at=bindparam("t")))
# Consents to one client by one user at once: two tabs, a double click. More would be someone's loop.
_TRIES = 3


def needed(principal: Principal, client: Client, scope: str) -> bool:
    """Must the user be asked before ``client`` gets ``scope``?"""
    if client.first_party:
        return False
    row = _row(principal.user_id, client.client_id)
    return row is None or not set(scope.split()) <= set(row.scope.split())


def remember(principal: Principal, client: Client, scope: str, *, commit: bool = True) -> None:
    """Record that the user allowed ``scope`` (in addition to what was allowed before). Two consents to the
    same client at once (two tabs, each allowed) add up: the scopes are written only over those this request
    read, else read again and merged again; a first consent that finds another made meanwhile adds to it."""
    t = clock.now()
    key = {"user": principal.user_id, "client": client.client_id}
    for _ in range(_TRIES):
        before: str | None = db.session.execute(_SCOPE, key).scalar()
        allowed = " ".join(dict.fromkeys([*(before or "").split(), *scope.split()]))
        if before is None:
            try:
                with db.session.begin_nested():  # losing the race undoes only this insert
                    db.session.execute(_INSERT, {**key, "allowed": allowed, "t": t})
                break
            except IntegrityError as exc:
                if not duplicate_key(exc):
                    raise
        elif db.session.connection().execute(_MERGE, {**key, "before": before, "allowed": allowed, "t": t}).rowcount:
            break
    else:
        raise Conflict("this consent changed meanwhile; try again")
    audit.record(AuditEvent(type="oidc.consent.grant", username=principal.username, sp=client.client_id,
                            details={"scope": allowed}), commit=commit)


def for_user(user_id: int) -> list[AllowedApp]:
    rows = db.session.execute(
        select(OidcConsent, OidcClient.name)
        .join(OidcClient, OidcClient.client_id == OidcConsent.client_id)
        .where(OidcConsent.user_id == user_id)
        .order_by(OidcClient.name, OidcConsent.client_id))
    return [AllowedApp(c.client_id, name, c.scope, c.granted_at) for c, name in rows]


def revoke(user_id: int, username: str, client_id: str, actor: str) -> int:
    """Forget the consent and revoke the client's tokens for this user; returns how many tokens ended."""
    if _row(user_id, client_id) is None:
        raise NotFound(f"{username} has not allowed client '{client_id}'")
    db.session.execute(delete(OidcConsent).where(OidcConsent.user_id == user_id,
                                                 OidcConsent.client_id == client_id))
    count = server.revoke_tokens(OidcToken.user_id == user_id, OidcToken.client_id == client_id)
    audit.record(AuditEvent(type="oidc.consent.revoke", username=username, actor=actor, sp=client_id,
                            details={"revoked_tokens": count}))
    return count

