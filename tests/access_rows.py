"""Access-model rows for tests that need a world of accounts and apps to look at (the portal's): OUs,
accounts, permission sets, assignments and app assignments, written with the ORM (needs an app context).

Rows are written as they are, without the admin services' validation, so a test can also store what those
services would refuse (a name with markup, an assignment that has already ended).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import pytest
from flask import Flask
from helpers import committed_elsewhere

from idp.access import accounts
from idp.extensions import db
from idp.store import (
    Account,
    AppAssignment,
    Assignment,
    OidcClient,
    OrganizationalUnit,
    PermissionSet,
    ServiceProvider,
    User,
)

T = TypeVar("T")


def _saved(row: T) -> T:
    db.session.add(row)
    db.session.commit()
    return row


def ou(name: str, parent: OrganizationalUnit | None = None) -> OrganizationalUnit:
    return _saved(OrganizationalUnit(name=name, parent_id=parent.id if parent else None))


def account(account_id: str, name: str, in_ou: OrganizationalUnit | None = None) -> Account:
    return _saved(Account(
        account_id=account_id, name=name, ou_id=in_ou.id if in_ou else None,
        saml_provider_arn=f"arn:aws:iam::{account_id}:saml-provider/bridge",
    ))


def permission_set(name: str, hours: int = 1, role_name: str | None = None) -> PermissionSet:
    return _saved(PermissionSet(name=name, session_duration_seconds=hours * 3600, role_name=role_name or name,
                                managed_policy_arns=[]))


def assign(pset: PermissionSet, *, user: User | None = None, group: str | None = None,
           account: Account | None = None, ou: OrganizationalUnit | None = None,
           until: datetime | None = None) -> Assignment:
    """``pset`` for a user or a group, in one account or in every account of an OU."""
    return _saved(Assignment(
        permission_set_id=pset.id, user_id=user.id if user else None, group_name=group,
        account_id=account.id if account else None, ou_id=ou.id if ou else None, until=until, created_by="test",
    ))


def assign_app(app: ServiceProvider | OidcClient, *, user: User | None = None, group: str | None = None,
               until: datetime | None = None) -> AppAssignment:
    saml = isinstance(app, ServiceProvider)
    return _saved(AppAssignment(
        sp_id=app.id if saml else None, client_id=None if saml else app.id,
        user_id=user.id if user else None, group_name=group, until=until, created_by="test",
    ))


def removed_once_found(app: Flask, monkeypatch: pytest.MonkeyPatch, lookup_name: str,
                       remove: Callable[[str], object]) -> None:
    """Another admin removes a row (``remove(key)``) right after this request's or command's next look-up of it
    (``accounts.<lookup_name>(key)``) found it."""
    lookup = getattr(accounts, lookup_name)

    def removed_meanwhile(key: str) -> Any:
        monkeypatch.setattr(accounts, lookup_name, lookup)
        found = lookup(key)
        committed_elsewhere(app, lambda: remove(key))
        return found

    monkeypatch.setattr(accounts, lookup_name, removed_meanwhile)


def ou_removed_once_found(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another admin removes the (empty) OU right after this request's or command's next look-up found it."""
    removed_once_found(app, monkeypatch, "require_ou", lambda name: accounts.remove_ou(name, actor="admin"))
