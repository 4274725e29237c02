"""Admin API tokens: created once in clear (``idp admin token create``), stored as a SHA-256 digest,
scoped read or write, revocable. Every use updates ``last_used_at``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from idp import audit, clock
from idp.audit import AuditEvent
from idp.errors import BadRequest, NotFound
from idp.extensions import db
from idp.store import AdminToken
from idp.store.oidc import digest
from idp.text import check_line

SCOPES = ("read", "write")
PREFIX = "idpat_"  # recognisable in a leaked-secret scan


@dataclass(frozen=True)
class Created:
    """What ``create`` hands back: the token is in clear here and nowhere else."""

    id: int
    name: str
    scope: str
    token: str


def create(name: str, scope: str, *, actor: str) -> Created:
    name = name.strip()
    if not name or len(name) > 255:
        raise BadRequest("a token needs a name of 1 to 255 characters")
    check_line(name, "a token's name")
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = AdminToken(name=name, scope=scope, token_hash=digest(token), created_by=actor)
    db.session.add(row)
    db.session.flush()
    audit.record(AuditEvent(type="admin.token.create", actor=actor, details={"id": row.id, "name": name,
                                                                              "scope": scope}))
    return Created(row.id, name, scope, token)


def authenticate(token: str) -> AdminToken | None:
    """The live token with this value, or None (unknown or revoked)."""
    row: AdminToken | None = db.session.scalar(select(AdminToken).where(AdminToken.token_hash == digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = clock.now()
    return row


def all_tokens() -> list[AdminToken]:
    return list(db.session.scalars(select(AdminToken).order_by(AdminToken.id)))


def revoke(token_id: int, *, actor: str) -> None:
    row = db.session.get(AdminToken, token_id)
    if row is None:
        raise NotFound(f"no admin token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        audit.record(AuditEvent(type="admin.token.revoke", actor=actor, details={"id": row.id, "name": row.name}))


def actor_of(row: AdminToken) -> str:
    """How the audit log names an API caller."""
    return f"token:{row.id}:{row.name}"
