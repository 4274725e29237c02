"""The built-in directory: users, groups, membership; and shadow rows for users of external directories.

A user signed in by an LDAP/AD connector gets a row here too (``source`` names the connector, ``external_id``
holds the directory's immutable id, ``password_hash`` stays NULL), refreshed at each sign-in, so that sessions,
SAML persistent NameIDs, OIDC subjects and consents keep pointing at one stable ``users.id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Table, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.clock import now
from idp.extensions import db
from idp.store.types import UTCDateTime

group_members = Table(
    "group_members",
    db.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"
    # The id is the user's OIDC subject: never given twice, also on SQLite (migration 0014).
    __table_args__ = (UniqueConstraint("source", "external_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    given_name: Mapped[str | None] = mapped_column(String(255))
    family_name: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # "local" for the built-in directory, else the name of the connector that vouches for this user.
    source: Mapped[str] = mapped_column(String(64), default="local", server_default="local")
    external_id: Mapped[str | None] = mapped_column(String(255))
    # Group names the directory reported at the last sign-in (nested ones resolved), beside local groups.
    external_groups: Mapped[list[Any] | None] = mapped_column(JSON)
    # When the directory last vouched for this shadow row (a sign-in or a revalidation): a principal rebuilt
    # without a password asks the directory again once this is older than its revalidate_seconds.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)

    groups: Mapped[list[Group]] = relationship(
        secondary=group_members, back_populates="members", order_by="Group.name"
    )


class Group(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)

    members: Mapped[list[User]] = relationship(
        secondary=group_members, back_populates="groups", order_by="User.username"
    )


# Names differing only in case would be one group to most SPs (names are ASCII: lower() is the same in SQLite
# and PostgreSQL).
Index("uq_groups_name_any_case", func.lower(Group.name), unique=True)
