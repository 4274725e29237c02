"""The Principal: who signed in, as every later step (authorization, claims, issuance) sees it."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, inspect, select

from idp.extensions import db
from idp.store import Group, User, group_members

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def group_key(name: str) -> str:
    """A group name as group names are compared: ASCII letters in any case, every other character as it is, as
    SQL's lower() folds them on SQLite. Unicode case folding would make a long s (U+017F) an s, a Kelvin sign
    (U+212A) a k and a ligature two letters: a group so named in a directory would pass for the admin group."""
    return name.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    groups: tuple[str, ...]
    # Which identity source vouched for this user: "local" (built-in directory) or a connector's name.
    source: str
    authn_at: datetime
    mfa: bool = False

    def in_group(self, name: str) -> bool:
        """Group names are matched in any case (:func:`group_key`), as local groups are unique in any case and
        Active Directory's are case-insensitive: an assignment to group:engineers is Engineers' too."""
        wanted = group_key(name)
        return any(group_key(g) == wanted for g in self.groups)


@dataclass(frozen=True)
class UserSnapshot:
    """What a user row says, with the names of their local groups: read with one statement per request where an
    SSO session is used, so the hot paths carry no ORM object."""

    id: int
    username: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    enabled: bool
    source: str
    external_id: str | None
    external_groups: tuple[str, ...]
    checked_at: datetime | None
    groups: tuple[str, ...]

    @classmethod
    def of(cls, user: User) -> UserSnapshot:
        return cls(id=user.id, username=user.username, email=user.email, given_name=user.given_name,
                   family_name=user.family_name, display_name=user.display_name, enabled=user.enabled,
                   source=user.source, external_id=user.external_id,
                   external_groups=tuple(str(g) for g in user.external_groups or ()), checked_at=user.checked_at,
                   groups=tuple(g.name for g in user.groups))

    def principal(self, authn_at: datetime) -> Principal:
        """A built-in directory user's Principal, or a directory user's (the groups the directory reported at the
        last sign-in, plus any local ones)."""
        return Principal(
            user_id=self.id,
            username=self.username,
            email=self.email,
            given_name=self.given_name,
            family_name=self.family_name,
            display_name=self.display_name,
            groups=tuple(sorted({*self.groups, *self.external_groups})),
            source=self.source,
            authn_at=authn_at,
        )


_USERS = User.__table__
_GROUPS = Group.__table__
_COLUMNS = ("id", "username", "email", "given_name", "family_name", "display_name", "enabled", "source",
            "external_id", "external_groups", "checked_at")  # never the password hash


# The snapshot's columns under their own names, one row per local group.
_SNAPSHOT = (*(_USERS.c[name] for name in _COLUMNS), _GROUPS.c.name.label("group_name"))
_WITH_GROUPS = (
    select(*_SNAPSHOT)
    .select_from(_USERS.outerjoin(group_members).outerjoin(_GROUPS))
    .where(_USERS.c.id == bindparam("id"))
    .order_by(_GROUPS.c.name)  # as User.groups
)


def with_snapshot(statement: Select[Any], user_id: ColumnElement[int]) -> Select[Any]:
    """``statement`` outer-joined with the user whose id is ``user_id`` and their local groups, as load_snapshot
    reads them (snapshot_of turns its rows into the snapshot, None when no user matched)."""
    return (statement.add_columns(*_SNAPSHOT)
            .outerjoin(_USERS, _USERS.c.id == user_id).outerjoin(group_members).outerjoin(_GROUPS)
            .order_by(_GROUPS.c.name))


def snapshot_of(rows: Sequence[Row[Any]]) -> UserSnapshot | None:
    """The snapshot in rows with the snapshot's columns (load_snapshot's, with_snapshot's), or None when there is
    no row or no user in it."""
    if not rows or rows[0].id is None:
        return None
    u = rows[0]
    return UserSnapshot(id=u.id, username=u.username, email=u.email, given_name=u.given_name,
                        family_name=u.family_name, display_name=u.display_name, enabled=u.enabled, source=u.source,
                        external_id=u.external_id, external_groups=tuple(str(g) for g in u.external_groups or ()),
                        checked_at=u.checked_at, groups=tuple(r.group_name for r in rows if r.group_name is not None))


def load_snapshot(user_id: int) -> UserSnapshot | None:
    """The user and their local groups in one statement (one row per group), or None. A Core read does not
    autoflush: changes pending in the session are flushed first, so that it sees them as the ORM would."""
    db.session.flush()
    return snapshot_of(db.session.connection().execute(_WITH_GROUPS, {"id": user_id}).all())


def principal_from_user(user: User, authn_at: datetime) -> Principal:
    """The Principal of a user row, signed in at ``authn_at``. Groups the row has not loaded are read with the
    snapshot's statement: the ORM's lazy load of the relationship costs several times more."""
    if "groups" in inspect(user).unloaded:
        snapshot = load_snapshot(user.id)
        if snapshot is not None:
            return snapshot.principal(authn_at)
    return UserSnapshot.of(user).principal(authn_at)
