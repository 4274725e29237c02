"""The access model, as in IAM Identity Center: AWS accounts in a tree of organizational units, permission sets,
and assignments of a permission set (or an application) to a user or a group.

An assignment names a user by row id (deleting the user deletes it) and a group by *name*: groups from LDAP
or Active Directory have no row here, only the names a Principal carries, and an admin must be able to grant
to them before anyone of them has signed in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, column, func
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import now
from idp.extensions import db
from idp.store.types import UTCDateTime

# Who an assignment is for: exactly one of user_id / group_name is set.
_ONE_PRINCIPAL = "(user_id IS NULL) <> (group_name IS NULL)"


def _unset_as_zero(*columns: str) -> list[Any]:
    """One grant, one row: a unique index over columns of which some are NULL (an assignment names a user or a
    group, an account or an OU), with NULL read as 0 or '' (no row id is 0, no group name empty), since NULLs
    never collide in a unique index. Without it, two identical grants made at once by two instances both
    went in, and revoking one left the other granting."""
    return [func.coalesce(column(name), "" if name == "group_name" else 0) for name in columns]


class OrganizationalUnit(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "organizational_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # NULL: directly under the root. An OU cannot be removed while it holds accounts or OUs (RESTRICT).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organizational_units.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "aws_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), unique=True)  # AWS's 12 digits
    name: Mapped[str] = mapped_column(String(255))
    # arn:aws:iam::<account>:saml-provider/<name>: the IAM identity provider that trusts this bridge.
    saml_provider_arn: Mapped[str] = mapped_column(String(2048))
    # AWS sign-in endpoint for this account (a regional one, say); NULL: the global one.
    signin_url: Mapped[str | None] = mapped_column(String(2048))
    ou_id: Mapped[int | None] = mapped_column(ForeignKey("organizational_units.id", ondelete="RESTRICT"),
                                              index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class PermissionSet(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "permission_sets"
    __table_args__ = (CheckConstraint("session_duration_seconds BETWEEN 3600 AND 43200",
                                      name="session_duration_1_to_12_hours"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)  # IAM IC allows 32 characters
    description: Mapped[str | None] = mapped_column(String(700))
    session_duration_seconds: Mapped[int] = mapped_column(default=3600)
    # The IAM role assumed in each account: arn:aws:iam::<account>:role/<role_name>.
    role_name: Mapped[str] = mapped_column(String(64))
    # Kept as documentation for whoever provisions the roles; the bridge does not call IAM.
    managed_policy_arns: Mapped[list[str]] = mapped_column(JSON, default=list)
    inline_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Where AWS sends the user after sign-in (a console URL), as the SAML RelayState.
    relay_state: Mapped[str | None] = mapped_column(String(2048))
    mfa_required: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class Assignment(db.Model):  # type: ignore[name-defined,misc]
    """A permission set for a user or group in one account, or in every account of an OU and its sub-OUs."""

    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint(_ONE_PRINCIPAL, name="assignment_one_principal"),
        CheckConstraint("(account_id IS NULL) <> (ou_id IS NULL)", name="assignment_one_target"),
        Index("ix_assignments_group", "group_name"),
        # Group names are matched in any case (idp.access.decide): lower(group_name) IN (...) by an index.
        Index("ix_assignments_group_lower", func.lower(column("group_name"))),
        Index("uq_assignments_grant", "permission_set_id", *_unset_as_zero("user_id", "group_name", "account_id",
                                                                           "ou_id"), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    permission_set_id: Mapped[int] = mapped_column(ForeignKey("permission_sets.id", ondelete="CASCADE"),
                                                   index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_name: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("aws_accounts.id", ondelete="CASCADE"))
    ou_id: Mapped[int | None] = mapped_column(ForeignKey("organizational_units.id", ondelete="CASCADE"))
    # Contractors: the assignment grants nothing from this instant on. NULL: no end.
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class AppAssignment(db.Model):  # type: ignore[name-defined,misc]
    """An application (a SAML SP or an OIDC client) for a user or group."""

    __tablename__ = "app_assignments"
    __table_args__ = (
        CheckConstraint(_ONE_PRINCIPAL, name="app_assignment_one_principal"),
        CheckConstraint("(sp_id IS NULL) <> (client_id IS NULL)", name="app_assignment_one_app"),
        Index("ix_app_assignments_group", "group_name"),
        Index("ix_app_assignments_group_lower", func.lower(column("group_name"))),
        Index("uq_app_assignments_grant", *_unset_as_zero("sp_id", "client_id", "user_id", "group_name"),
              unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sp_id: Mapped[int | None] = mapped_column(ForeignKey("service_providers.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("oidc_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_name: Mapped[str | None] = mapped_column(String(255))
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


__all__ = ["Account", "AppAssignment", "Assignment", "OrganizationalUnit", "PermissionSet"]
