"""Shadow rows: the ``users`` row that stands for a directory user inside the bridge.

Keyed by (source, external_id), the directory's immutable id, and refreshed at each sign-in (username,
profile, groups), so a renamed directory user keeps their sessions, SAML persistent NameIDs, OIDC subject
and consents. The row has no password (the directory decides), can be disabled locally like any user, and
never takes a username that another source already holds: one name, one identity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from idp import audit
from idp.audit import AuditEvent
from idp.authn.connectors.base import Verdict
from idp.authn.connectors.ldap import DirectoryEntry
from idp.authn.principal import UserSnapshot
from idp.clock import now
from idp.extensions import db
from idp.store import Group, User, group_members


def _clip(value: str | None, size: int = 255) -> str | None:
    return value[:size] if value else None


# What provision reads and writes: Core statements on the users table. A sign-in changes its row every time
# (checked_at at least), and an ORM object's load and flush cost several times these statements.
_USERS = User.__table__
_GROUPS = Group.__table__
# The user's row and the name's holder, with their local groups (one row per group).
_FIND = (select(_USERS.c.id, _USERS.c.username, _USERS.c.source, _USERS.c.external_id, _USERS.c.enabled,
                _GROUPS.c.name.label("group_name"))
         .select_from(_USERS.outerjoin(group_members).outerjoin(_GROUPS))
         .where(or_(and_(_USERS.c.source == bindparam("source"), _USERS.c.external_id == bindparam("external_id")),
                    _USERS.c.username == bindparam("username"))))


def provision(source: str, entry: DirectoryEntry, groups: tuple[str, ...], *, groups_as_of: datetime | None = None,
              retry: bool = True) -> Verdict:
    """The Principal of a directory user whose password was just verified, or who was just found again by their
    stable id (revalidation): the row made or refreshed, and marked as checked now, or when ``groups`` were read
    from the directory if earlier (a cache's): the next revalidation is then due that much sooner, so a group
    the user has lost meanwhile does not stand for a whole revalidate_seconds from now."""
    username = entry.username.strip().lower()[:255]
    # The user's row (with their local groups) and whoever holds the name, read by one statement: two could
    # straddle the commit of a concurrent first sign-in of the same user, and take its new row for another user's
    # (sign-in refused).
    db.session.flush()  # a Core read does not autoflush
    conn = db.session.connection()
    found = conn.execute(_FIND, {"source": source, "external_id": entry.external_id, "username": username}).all()
    user = next((u for u in found if u.source == source and u.external_id == entry.external_id), None)
    holder = next((u for u in found if u.username == username), None)
    if holder is not None and holder is not user:
        other = "a local user" if holder.source == "local" else f"a user of directory {holder.source}"
        return Verdict(None, f"username '{username}' already belongs to {other}", known=True)
    if user is not None and not user.enabled:
        return Verdict(None, "user disabled", known=True)
    t = now()
    profile = dict(email=_clip(entry.email, 320), given_name=_clip(entry.given_name),
                   family_name=_clip(entry.family_name), display_name=_clip(entry.display_name))
    checked = min(t, groups_as_of) if groups_as_of is not None else t
    values = dict(username=username, **profile, external_groups=list(groups), checked_at=checked)
    try:
        if user is None:
            # The new id as the driver reports it (no RETURNING: SQLite has it only from 3.35).
            user_id = cast("Row[Any]", conn.execute(insert(_USERS).values(
                source=source, external_id=entry.external_id, password_hash=None, enabled=True, **values,
            )).inserted_primary_key)[0]
        else:
            user_id = user.id
            conn.execute(update(_USERS).where(_USERS.c.id == user_id).values(**values))
    except IntegrityError:
        # A concurrent first sign-in of the same user made the row (or took the name): look again, once.
        db.session.rollback()
        if retry:
            return provision(source, entry, groups, groups_as_of=groups_as_of, retry=False)
        return Verdict(None, f"cannot store the shadow row of '{username}'", known=True)
    # A User object of this row that the request already holds (revalidation starts from one) reads it again.
    held = db.session.identity_map.get(db.session.identity_key(User, user_id))
    if held is not None:
        db.session.expire(held)
    if user is None:
        audit.record(AuditEvent(type="user.provision", actor=f"directory:{source}", username=username,
                                details={"source": source, "external_id": entry.external_id}), commit=False)
    # The row as just written, with the local groups read above (a new row has none): not read again.
    local = sorted(r.group_name for r in found if user is not None and r.id == user.id and r.group_name is not None)
    snapshot = UserSnapshot(id=user_id, username=username, **profile, enabled=True, source=source,
                            external_id=entry.external_id, external_groups=groups, checked_at=checked,
                            groups=tuple(local))
    return Verdict(snapshot.principal(t), known=True)
