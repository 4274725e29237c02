"""Shadow rows: the ``users`` row that stands for a directory user inside the bridge.

Keyed by (source, external_id), the directory's immutable id, and refreshed at each sign-in (username,
profile, groups), so a renamed directory user keeps their sessions, SAML persistent NameIDs, OIDC subject
and consents. The row has no password (the directory decides), can be disabled locally like any user, and
never takes a username that another source already holds: one name, one identity.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from idp import audit
from idp.audit import AuditEvent
from idp.authn.connectors.base import Verdict
from idp.authn.connectors.ldap import DirectoryEntry
from idp.authn.principal import principal_from_user
from idp.clock import now
from idp.extensions import db
from idp.store import User


def _clip(value: str | None, size: int = 255) -> str | None:
    return value[:size] if value else None


def provision(source: str, entry: DirectoryEntry, groups: tuple[str, ...], *, retry: bool = True) -> Verdict:
    """The Principal of a directory user whose password was just verified, or who was just found again by their
    stable id (revalidation): the row made or refreshed, and marked as checked now."""
    username = entry.username.strip().lower()[:255]
    # The user's row and whoever holds the name, read by one statement: two could straddle the commit of a
    # concurrent first sign-in of the same user, and take its new row for another user's (sign-in refused).
    found = db.session.scalars(select(User).where(
        or_(and_(User.source == source, User.external_id == entry.external_id), User.username == username))).all()
    user = next((u for u in found if u.source == source and u.external_id == entry.external_id), None)
    holder = next((u for u in found if u.username == username), None)
    if holder is not None and holder is not user:
        other = "a local user" if holder.source == "local" else f"a user of directory {holder.source}"
        return Verdict(None, f"username '{username}' already belongs to {other}", known=True)
    if user is None:
        user = User(username=username, source=source, external_id=entry.external_id, password_hash=None,
                    enabled=True)
        db.session.add(user)
        created = True
    else:
        created = False
        if not user.enabled:
            return Verdict(None, "user disabled", known=True)
    user.username = username
    user.email = _clip(entry.email, 320)
    user.given_name = _clip(entry.given_name)
    user.family_name = _clip(entry.family_name)
    user.display_name = _clip(entry.display_name)
    user.external_groups = list(groups)
    user.checked_at = now()
    try:
        db.session.flush()
    except IntegrityError:
        # A concurrent first sign-in of the same user made the row (or took the name): look again, once.
        db.session.rollback()
        if retry:
            return provision(source, entry, groups, retry=False)
        return Verdict(None, f"cannot store the shadow row of '{username}'", known=True)
    if created:
        audit.record(AuditEvent(type="user.provision", actor=f"directory:{source}", username=username,
                                details={"source": source, "external_id": entry.external_id}), commit=False)
    return Verdict(principal_from_user(user, now()), known=True)
