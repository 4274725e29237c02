"""AWS accounts in a tree of organizational units, and the read-out of the assignments that reach them.

Services here and in :mod:`idp.access.permission_sets` and :mod:`idp.access.assignments` validate everything
before storing anything, take the acting admin as ``actor`` and record one ``access.*`` audit event per
change; the CLI (and the admin API) call them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from idp import audit, clock
from idp.audit import AuditEvent
from idp.database import flushed_unique, lock_for_removal
from idp.errors import BadRequest, Conflict, NotFound
from idp.extensions import db
from idp.store import Account, Assignment, OrganizationalUnit, PermissionSet, User
from idp.text import check_line
from idp.urls import split_url

_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_PROVIDER_ARN = re.compile(r"arn:aws:iam::([0-9]{12}):saml-provider/([\w.-]{1,128})", re.ASCII)
# AWS sign-in's SAML endpoints, global or regional: an assertion AWS accepts must not be posted anywhere else.
_SIGNIN_URL = re.compile(r"https://(?:[a-z0-9-]+\.)?signin\.aws\.amazon\.com/saml", re.ASCII)
_OU_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,128}")
ROOT = "(root)"


def https_url(value: str, label: str, field: str) -> str:
    """``value`` when it is an https URL; else a refusal about ``field`` that calls it ``label``."""
    parts = split_url(value)
    if parts is None or parts.scheme != "https" or not parts.hostname or len(value) > 2048:
        raise BadRequest(f"{label} must be an https URL, not {value!r}", field=field)
    return value


def _signin_url(value: str) -> str:
    if not _SIGNIN_URL.fullmatch(value):
        raise BadRequest(f"the sign-in URL must be an AWS sign-in SAML endpoint such as "
                         f"https://us-east-1.signin.aws.amazon.com/saml, not {value!r}", field="signin_url")
    # Imported here: the portal's launch reads the access model. A console launch posts only to an endpoint of
    # AWS's metadata: another (a region it does not list, a typo) would be stored and then fail every launch.
    from idp.portal.aws import signin_urls

    known = signin_urls()
    if known is not None and value not in known:
        raise BadRequest(f"{value} is not among the sign-in endpoints of AWS's SAML metadata; use "
                         "https://signin.aws.amazon.com/saml or a regional one it lists", field="signin_url")
    return value


def add_new(row: Any, what: str) -> None:
    """Add and flush a new row; a concurrent add of the same name is a Conflict, not a crash (and the OU it goes
    in removed meanwhile is a concurrent change, idp.errors)."""
    db.session.add(row)
    if not flushed_unique():
        raise Conflict(f"{what} already exists")


# --- organizational units ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OuNode:
    """One line of the OU tree, in depth-first order."""

    name: str
    parent: str | None
    depth: int  # 0: directly under the root
    accounts: int  # directly in this OU


def get_ou(name: str) -> OrganizationalUnit | None:
    ou: OrganizationalUnit | None = db.session.scalar(
        select(OrganizationalUnit).where(OrganizationalUnit.name == name.strip()))
    return ou


def require_ou(name: str) -> OrganizationalUnit:
    ou = get_ou(name)
    if ou is None:
        raise NotFound(f"no organizational unit '{name.strip()}'")
    return ou


def _chain(ou_id: int | None, rows: dict[int, OrganizationalUnit] | None = None) -> list[OrganizationalUnit]:
    """The OU and every OU above it, nearest first (the table is small: one query, or none given ``rows``)."""
    if rows is None:
        rows = {r.id: r for r in db.session.scalars(select(OrganizationalUnit))}
    out: list[OrganizationalUnit] = []
    while ou_id is not None and ou_id in rows and rows[ou_id] not in out:
        out.append(rows[ou_id])
        ou_id = rows[ou_id].parent_id
    return out


def ou_path(ou_id: int | None) -> str:
    """"Production/Payments"; "(root)" for None."""
    return "/".join(reversed([ou.name for ou in _chain(ou_id)])) if ou_id is not None else ROOT


def ou_paths() -> dict[int, str]:
    """Every OU's path by id, in one query."""
    rows = {r.id: r for r in db.session.scalars(select(OrganizationalUnit))}
    return {pk: "/".join(reversed([ou.name for ou in _chain(pk, rows)])) for pk in rows}


def ou_and_below(name: str) -> set[int]:
    """The ids of an OU and of every OU inside it: what an assignment in that OU reaches."""
    top = require_ou(name)
    rows = {r.id: r for r in db.session.scalars(select(OrganizationalUnit))}
    return {pk for pk in rows if top in _chain(pk, rows)}


def add_ou(name: str, *, parent: str | None = None, actor: str) -> OrganizationalUnit:
    name = name.strip()
    if not _OU_NAME.fullmatch(name) or name == ROOT:  # (root) is how paths name the top
        raise BadRequest(f"invalid OU name {name!r}: 1 to 128 characters, no '/', not {ROOT}", field="name")
    parent_ou = require_ou(parent) if parent is not None else None
    if get_ou(name) is not None:
        raise Conflict(f"organizational unit '{name}' already exists")
    ou = OrganizationalUnit(name=name, parent_id=parent_ou.id if parent_ou else None)
    add_new(ou, f"organizational unit '{name}'")
    audit.record(AuditEvent(type="access.ou.add", actor=actor,
                            details={"ou": name, "parent": parent_ou.name if parent_ou else None}))
    return ou


# Every OU row written as it is: a lock on the whole tree (row locks on PostgreSQL, the write lock on SQLite).
# Two moves at once each checked the tree before the other's move (A under B, B under A) and made a cycle.
_LOCK_TREE = OrganizationalUnit.__table__.update().values(parent_id=OrganizationalUnit.__table__.c.parent_id)


def move_ou(name: str, *, parent: str | None, actor: str) -> None:
    """Put an OU (with its accounts and sub-OUs) under ``parent``, or under the root for None. One move at a
    time: it checks the tree as the last move left it."""
    db.session.connection().execute(_LOCK_TREE)
    rows = {r.id: r for r in db.session.scalars(
        select(OrganizationalUnit).execution_options(populate_existing=True))}  # as committed, not as read
    ou = require_ou(name)
    new_parent = require_ou(parent) if parent is not None else None
    if new_parent is not None and ou in _chain(new_parent.id, rows):
        raise BadRequest(f"cannot move '{ou.name}' under '{new_parent.name}': "
                         f"'{new_parent.name}' is '{ou.name}' or inside it", field="parent")
    if ou.parent_id == (new_parent.id if new_parent else None):
        return  # already there: nothing changes, nothing to record
    before = ou_path(ou.parent_id)
    ou.parent_id = new_parent.id if new_parent else None
    audit.record(AuditEvent(type="access.ou.move", actor=actor,
                            details={"ou": ou.name, "from": before, "to": ou_path(ou.parent_id)}))


def remove_ou(name: str, *, actor: str) -> int:
    """Remove an empty OU; its assignments go with it. Returns how many."""
    ou = require_ou(name)
    lock_for_removal(ou)
    lock_assignments(Assignment.ou_id == ou.id)
    if _count_accounts(Account.ou_id == ou.id) or db.session.scalar(
            select(OrganizationalUnit.id).where(OrganizationalUnit.parent_id == ou.id).limit(1)) is not None:
        raise Conflict(f"organizational unit '{ou.name}' still holds accounts or OUs: move them first")
    assignments = _count(Assignment.ou_id == ou.id)
    db.session.delete(ou)
    audit.record(AuditEvent(type="access.ou.remove", actor=actor,
                            details={"ou": ou.name, "assignments_removed": assignments}))
    return assignments


def ou_tree() -> list[OuNode]:
    """Every OU, parents before children, siblings by name."""
    ous = list(db.session.scalars(select(OrganizationalUnit).order_by(OrganizationalUnit.name)))
    counts = Counter(db.session.scalars(select(Account.ou_id)))
    names = {ou.id: ou.name for ou in ous}
    out: list[OuNode] = []

    def walk(parent_id: int | None, depth: int) -> None:
        for ou in ous:
            if ou.parent_id == parent_id:
                out.append(OuNode(ou.name, names.get(parent_id or 0), depth, counts[ou.id]))
                walk(ou.id, depth + 1)

    walk(None, 0)
    return out


def root_account_count() -> int:
    return _count_accounts(Account.ou_id.is_(None))


def _count_accounts(where: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(Account).where(where)) or 0)


def _count(where: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(Assignment).where(where)) or 0)


def lock_assignments(where: Any) -> None:
    """Hold the assignments ``where`` selects until the transaction ends, after lock_for_removal of what they
    refer to: granting an ended one again updates it, which no key check makes wait (PostgreSQL; SQLite's
    write lock already holds everything)."""
    db.session.execute(select(Assignment.id).where(where).with_for_update())


# --- accounts -------------------------------------------------------------------------------------------


def get_account(account_id: str) -> Account | None:
    account: Account | None = db.session.scalar(select(Account).where(Account.account_id == account_id.strip()))
    return account


def require_account(account_id: str) -> Account:
    account = get_account(account_id)
    if account is None:
        raise NotFound(f"no account '{account_id.strip()}'")
    return account


def list_accounts() -> list[Account]:
    return list(db.session.scalars(select(Account).order_by(Account.name, Account.account_id)))


def _check_provider_arn(account_id: str, arn: str) -> str:
    arn = arn.strip()
    match = _PROVIDER_ARN.fullmatch(arn)
    if match is None:
        raise BadRequest(f"invalid SAML provider ARN {arn!r}: expected "
                         f"arn:aws:iam::{account_id}:saml-provider/NAME", field="saml_provider_arn")
    if match.group(1) != account_id:
        raise BadRequest(f"the SAML provider ARN {arn!r} is in account {match.group(1)}, not {account_id}: "
                         "AWS trusts only the identity provider of the account being opened", field="saml_provider_arn")
    return arn


def _account_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 255:
        raise BadRequest("an account name is 1 to 255 characters", field="name")
    return check_line(name, "an account name", "name")


def add_account(account_id: str, *, name: str, saml_provider_arn: str, ou: str | None = None,
                signin_url: str | None = None, actor: str) -> Account:
    account_id = account_id.strip()
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise BadRequest(f"invalid AWS account id {account_id!r}: exactly 12 digits", field="account_id")
    name = _account_name(name)
    arn = _check_provider_arn(account_id, saml_provider_arn)
    url = _signin_url(signin_url.strip()) if signin_url else None
    parent = require_ou(ou) if ou is not None else None
    if get_account(account_id) is not None:
        raise Conflict(f"account '{account_id}' already exists")
    account = Account(account_id=account_id, name=name, saml_provider_arn=arn, signin_url=url,
                      ou_id=parent.id if parent else None)
    add_new(account, f"account '{account_id}'")
    audit.record(AuditEvent(type="access.account.add", actor=actor, details={
        "account": account_id, "name": name, "saml_provider_arn": arn, "signin_url": url,
        "ou": ou_path(account.ou_id)}))
    return account


def move_account(account_id: str, *, ou: str | None, actor: str) -> None:
    """Put the account in ``ou``, or directly under the root for None: it leaves the old OU's assignments
    and gains the new one's."""
    account = require_account(account_id)
    _move(account, require_ou(ou) if ou is not None else None, actor)


def _move(account: Account, target: OrganizationalUnit | None, actor: str) -> None:
    if account.ou_id == (target.id if target else None):
        return  # already there: nothing changes, nothing to record
    before = ou_path(account.ou_id)
    account.ou_id = target.id if target else None
    audit.record(AuditEvent(type="access.account.move", actor=actor, details={
        "account": account.account_id, "from": before, "to": ou_path(account.ou_id)}))


@dataclass(frozen=True)
class AccountChanges:
    """An account's settings to change; None: unchanged. An empty sign-in URL means the global endpoint; an
    empty OU puts the account directly under the root (no OU has an empty name)."""

    name: str | None = None
    saml_provider_arn: str | None = None
    signin_url: str | None = None
    ou: str | None = None


def update_account(account_id: str, changes: AccountChanges, *, actor: str) -> dict[str, dict[str, Any]]:
    """Change the given settings, all checked before any is stored; returns what changed ({} when nothing did,
    and then records nothing). A new OU is recorded as a move, like :func:`move_account`."""
    account = require_account(account_id)
    after: dict[str, Any] = {}
    if changes.name is not None:
        after["name"] = _account_name(changes.name)
    if changes.saml_provider_arn is not None:
        after["saml_provider_arn"] = _check_provider_arn(account.account_id, changes.saml_provider_arn)
    if changes.signin_url is not None:
        url = changes.signin_url.strip()
        after["signin_url"] = _signin_url(url) if url else None
    target = require_ou(changes.ou) if changes.ou else None  # "": the root
    changed = {k: {"from": getattr(account, k), "to": v} for k, v in after.items() if getattr(account, k) != v}
    for key, change in changed.items():
        setattr(account, key, change["to"])
    moving = changes.ou is not None and account.ou_id != (target.id if target else None)
    if changed:
        # One commit for the whole change, the move's: the OU removed meanwhile fails all of it, not half.
        audit.record(AuditEvent(type="access.account.update", actor=actor, details={
            "account": account.account_id, "fields": sorted(changed), "changed": dict(changed)}), commit=not moving)
    if moving:
        changed["ou"] = {"from": ou_path(account.ou_id), "to": ou_path(target.id if target else None)}
        _move(account, target, actor)
    return changed


def remove_account(account_id: str, *, actor: str) -> int:
    """Remove an account and its own assignments (those of its OUs stay). Returns how many went."""
    account = require_account(account_id)
    lock_for_removal(account)
    lock_assignments(Assignment.account_id == account.id)
    assignments = _count(Assignment.account_id == account.id)
    db.session.delete(account)
    audit.record(AuditEvent(type="access.account.remove", actor=actor, details={
        "account": account.account_id, "name": account.name, "assignments_removed": assignments}))
    return assignments


def describe_account(account: Account) -> dict[str, Any]:
    reaching = (Assignment.account_id == account.id) | Assignment.ou_id.in_([ou.id for ou in _chain(account.ou_id)])
    return {
        "account_id": account.account_id,
        "name": account.name,
        "ou": ou_path(account.ou_id),
        "saml_provider_arn": account.saml_provider_arn,
        "signin_url": account.signin_url,
        "assignments": assignment_lines(reaching),
    }


# --- reading assignments --------------------------------------------------------------------------------


def assignment_lines(where: Any) -> list[str]:
    """Assignments as "group engineers: Admin in ou Production (until ...)", for show commands and
    refusals; an assignment past its end says "ended" (it grants nothing until it is removed)."""
    rows = db.session.execute(
        select(Assignment, PermissionSet.name, User.username, Account.account_id, OrganizationalUnit.name)
        .join(PermissionSet, PermissionSet.id == Assignment.permission_set_id)
        .outerjoin(User, User.id == Assignment.user_id)
        .outerjoin(Account, Account.id == Assignment.account_id)
        .outerjoin(OrganizationalUnit, OrganizationalUnit.id == Assignment.ou_id)
        .where(where).order_by(PermissionSet.name, Assignment.id))
    now = clock.now()
    out = []
    for row, pset, username, account_id, ou_name in rows:
        who = f"group {row.group_name}" if row.group_name is not None else f"user {username}"
        where_ = f"account {account_id}" if account_id is not None else f"ou {ou_name}"
        out.append(f"{who}: {pset} in {where_}{until_text(row.until, now)}")
    return out


def until_text(until: datetime | None, now: datetime) -> str:
    if until is None:
        return ""
    return f" ({'ended' if until <= now else 'until'} {until.isoformat()})"
