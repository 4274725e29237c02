"""The one decision: may this principal open this account role or application, now, and for how long?

Every path asks :func:`authorize`: SAML SSO (SP- and IdP-initiated), the AWS console link, OIDC authorize,
code exchange, refresh and device flow (through ``idp.oidc.server.decide``), the portal and ``idp access
show`` (with :data:`EVERYTHING`). Effective access is the union of the user's own and their groups'
assignments, an OU's assignments reaching every account in it and in its sub-OUs (also accounts added
later), expired assignments left out. A refusal is audited here, once, whatever path asked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

from sqlalchemy import ColumnElement, and_, func, or_, select

from idp import audit
from idp.audit import AuditEvent
from idp.authn.principal import Principal, group_key
from idp.errors import Forbidden
from idp.extensions import db
from idp.oidc import clients
from idp.saml import providers
from idp.store import (
    Account,
    AppAssignment,
    Assignment,
    OidcClient,
    OrganizationalUnit,
    PermissionSet,
    ServiceProvider,
)

# AWS sign-in's entity ID: its accounts are opened through account assignments, never as a plain app.
AWS_ENTITY_ID = "urn:amazon:webservices"
# AWS refuses a SessionDuration under 15 minutes.
AWS_MIN_SESSION_SECONDS = 900
ENDS_TOO_SOON = "the assignment ends in less than 15 minutes, AWS's shortest session"

AppKind = Literal["saml", "oidc"]
# OIDC grants a person signs in through; a client with none of them is a machine's and no one's app.
USER_GRANTS = frozenset({"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"})


@dataclass(frozen=True)
class AccountTarget:
    account_id: str  # AWS's 12 digits
    permission_set: str | None = None  # None: every permission set the principal holds there


@dataclass(frozen=True)
class AppTarget:
    kind: AppKind
    key: str  # the SP's entity ID or the OIDC client's client_id


@dataclass(frozen=True)
class _Everything:
    """Every account role and app the principal may open (the portal, ``idp access show``)."""


EVERYTHING = _Everything()
Target = AccountTarget | AppTarget | _Everything


@dataclass(frozen=True)
class Source:
    """Where a grant comes from, for ``idp access show`` and the audit log."""

    via: str  # "user alice" or "group engineers"
    scope: str  # "account 111122223333", "ou Production" or "app" / "open to all"
    until: datetime | None


@dataclass(frozen=True)
class RoleGrant:
    account_id: str
    account_name: str
    permission_set: str
    role_arn: str
    provider_arn: str
    signin_url: str | None  # the account's AWS sign-in endpoint; None: the global one
    relay_state: str | None
    session_seconds: int  # the permission set's duration, cut to what is left of the assignment
    until: datetime | None  # None: no end; else the latest end among the sources
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class AppGrant:
    kind: AppKind
    key: str
    name: str
    until: datetime | None
    sources: tuple[Source, ...]
    login_url: str | None = None  # an OIDC client's own start page (initiate_login_uri)


@dataclass(frozen=True)
class Grant:
    roles: tuple[RoleGrant, ...] = ()
    apps: tuple[AppGrant, ...] = ()


class AccessDenied(Forbidden):
    """Nothing is granted for the target; ``reason`` says why (audited)."""


# --- the decision ---------------------------------------------------------------------------------------


def authorize(principal: Principal, target: Target, now: datetime, *, client_ip: str | None = None) -> Grant:
    """What ``principal`` may open of ``target`` at ``now``: a Grant with at least one role or app, or
    AccessDenied (audited as ``access.denied``). For EVERYTHING, an empty Grant is an answer, not a refusal."""
    if isinstance(target, AccountTarget):
        roles, ending = _roles(principal, now, target)
        if not roles:
            _deny(principal, target, ENDS_TOO_SOON if ending else _why_no_role(principal, target, now), client_ip)
        return Grant(roles=tuple(roles))
    if isinstance(target, AppTarget):
        app = _app(principal, now, target)
        if isinstance(app, str):
            _deny(principal, target, app, client_ip)
        return Grant(apps=(app,))
    return Grant(roles=tuple(_roles(principal, now, None)[0]), apps=tuple(_apps(principal, now)))


def _deny(principal: Principal, target: Target, reason: str, client_ip: str | None) -> NoReturn:
    details: dict[str, str | None]
    if isinstance(target, AccountTarget):
        details = {"account": target.account_id, "permission_set": target.permission_set}
    else:
        assert isinstance(target, AppTarget)
        details = {"app_kind": target.kind, "app": target.key}
    audit.record(AuditEvent(type="access.denied", outcome="failure", username=principal.username,
                            sp=target.key if isinstance(target, AppTarget) else None,
                            client_ip=client_ip, reason=reason, details=details))
    raise AccessDenied("You have not been given access to this. Ask your administrator.", reason)


def _mine(model: type[Assignment] | type[AppAssignment], principal: Principal, now: datetime
          ) -> ColumnElement[bool]:
    """Rows for this user or one of their groups that have not ended."""
    who = model.user_id == principal.user_id
    if principal.groups:
        who = or_(who, group_named(model, principal.groups))
    return and_(who, or_(model.until.is_(None), model.until > now))


def group_named(model: type[Assignment] | type[AppAssignment], names: Iterable[str]) -> ColumnElement[bool]:
    """Rows for one of these groups, in any case (Principal.in_group; both indexed, migration 0013). SQL's lower()
    folds ASCII only on SQLite, so each name as spelled is asked as well; the names asked are folded in ASCII
    only (group_key), so a Kelvin sign in a directory's group name is no k."""
    spelled = list(names)
    return or_(model.group_name.in_(spelled), func.lower(model.group_name).in_({group_key(n) for n in spelled}))


def _via(row: Assignment | AppAssignment, principal: Principal) -> str:
    return f"group {row.group_name}" if row.group_name is not None else f"user {principal.username}"


# --- AWS account roles ------------------------------------------------------------------------------------


def _ou_tree() -> tuple[dict[int, int | None], dict[int, str]]:
    """parent of each OU, name of each OU (the table is small: one query, no recursion in SQL)."""
    rows = db.session.execute(select(OrganizationalUnit.id, OrganizationalUnit.parent_id,
                                     OrganizationalUnit.name)).all()
    return {r.id: r.parent_id for r in rows}, {r.id: r.name for r in rows}


def _ancestors(ou_id: int | None, parents: dict[int, int | None]) -> list[int]:
    """The OU and every OU above it (a cycle, which the services refuse, stops the walk)."""
    out: list[int] = []
    while ou_id is not None and ou_id not in out:
        out.append(ou_id)
        ou_id = parents.get(ou_id)
    return out


def _roles(principal: Principal, now: datetime, target: AccountTarget | None) -> tuple[list[RoleGrant], bool]:
    """The granted roles, and whether some role was left out because its assignment ends too soon."""
    parents, ou_names = _ou_tree()
    accounts_q = select(Account)
    if target is not None:
        accounts_q = accounts_q.where(Account.account_id == target.account_id)
    accounts = list(db.session.scalars(accounts_q))
    if not accounts:
        return [], False
    ou_chain = {a.id: _ancestors(a.ou_id, parents) for a in accounts}
    ous = {ou for chain in ou_chain.values() for ou in chain}
    query = (select(Assignment, PermissionSet).join(PermissionSet)
             .where(_mine(Assignment, principal, now))
             .where(or_(Assignment.account_id.in_([a.id for a in accounts]), Assignment.ou_id.in_(ous))))
    if target is not None and target.permission_set is not None:
        query = query.where(PermissionSet.name == target.permission_set)
    if not principal.mfa:
        query = query.where(PermissionSet.mfa_required.is_(False))

    found: dict[tuple[int, int], tuple[PermissionSet, list[Source]]] = {}
    # Sources in the order they were granted, the same on every database (and on every listing).
    for row, pset in db.session.execute(query.order_by(Assignment.id)):
        hit = [a for a in accounts if a.id == row.account_id or row.ou_id in ou_chain[a.id]]
        scope = (f"ou {ou_names.get(row.ou_id or 0)}" if row.ou_id is not None
                 else f"account {hit[0].account_id}" if hit else "")
        for account in hit:
            found.setdefault((account.id, pset.id), (pset, []))[1].append(
                Source(via=_via(row, principal), scope=scope, until=row.until))

    by_id = {a.id: a for a in accounts}
    out = [_role_grant(by_id[account_pk], pset, sources, now)
           for (account_pk, _), (pset, sources) in found.items()]
    # AWS's shortest session is 15 minutes: a role that would outlive its assignment is not offered at all.
    granted = [g for g in out if g.until is None or (g.until - now).total_seconds() >= AWS_MIN_SESSION_SECONDS]
    granted.sort(key=lambda g: (g.account_name.lower(), g.account_id, g.permission_set.lower()))
    return granted, len(granted) < len(out)


def _latest_end(sources: Iterable[Source]) -> datetime | None:
    ends = [s.until for s in sources]
    return None if any(e is None for e in ends) else max(e for e in ends if e is not None)


def _role_grant(account: Account, pset: PermissionSet, sources: list[Source], now: datetime) -> RoleGrant:
    until = _latest_end(sources)
    seconds = pset.session_duration_seconds
    if until is not None:  # a contractor's console session does not outlive the assignment
        seconds = min(seconds, int((until - now) / timedelta(seconds=1)))
    return RoleGrant(
        account_id=account.account_id, account_name=account.name, permission_set=pset.name,
        role_arn=f"arn:aws:iam::{account.account_id}:role/{pset.role_name}",
        provider_arn=account.saml_provider_arn, signin_url=account.signin_url, relay_state=pset.relay_state,
        session_seconds=seconds, until=until, sources=tuple(sources),
    )


def _why_no_role(principal: Principal, target: AccountTarget, now: datetime) -> str:
    if db.session.scalar(select(Account.id).where(Account.account_id == target.account_id)) is None:
        return "unknown account"
    if target.permission_set is not None:
        pset = db.session.scalar(select(PermissionSet).where(PermissionSet.name == target.permission_set))
        if pset is None:
            return "unknown permission set"
        if pset.mfa_required and not principal.mfa:
            return "permission set requires MFA"
    return "no assignment for this account" + (" and permission set" if target.permission_set else "")


# --- applications ------------------------------------------------------------------------------------------


def _app(principal: Principal, now: datetime, target: AppTarget) -> AppGrant | str:
    """The grant for one app, or the reason there is none."""
    if target.kind == "saml":
        if target.key == AWS_ENTITY_ID:
            return "AWS accounts are opened through account assignments"
        sp = providers.get(target.key)  # the flow's own look-up, made once per request
        if sp is None:
            return "unknown service provider"
        app_id, name, open_to_all, login_url = sp.id, sp.name, sp.open_to_all, None
        column = AppAssignment.sp_id
    else:
        client = clients.get(target.key)  # the flow's own look-up, made once per request
        if client is None:
            return "unknown client"
        app_id, name, open_to_all, login_url = client.id, client.name, client.open_to_all, client.login_url
        column = AppAssignment.client_id
    if open_to_all:
        return AppGrant(target.kind, target.key, name, None, (Source("everyone", "open to all", None),), login_url)
    rows = db.session.scalars(select(AppAssignment).where(column == app_id, _mine(AppAssignment, principal, now))
                              .order_by(AppAssignment.id))
    sources = tuple(Source(_via(r, principal), "app", r.until) for r in rows)
    if not sources:
        return "not assigned to this application"
    return AppGrant(target.kind, target.key, name, _latest_end(sources), sources, login_url)


def _apps(principal: Principal, now: datetime) -> list[AppGrant]:
    sources: dict[tuple[str, int], list[Source]] = defaultdict(list)
    for row in db.session.scalars(select(AppAssignment).where(_mine(AppAssignment, principal, now))
                                  .order_by(AppAssignment.id)):
        key = ("saml", row.sp_id) if row.sp_id is not None else ("oidc", row.client_id or 0)
        sources[key].append(Source(_via(row, principal), "app", row.until))
    everyone = (Source("everyone", "open to all", None),)
    out: list[AppGrant] = []
    for sp in db.session.scalars(select(ServiceProvider).where(
            ServiceProvider.entity_id != AWS_ENTITY_ID,
            or_(ServiceProvider.open_to_all.is_(True), ServiceProvider.id.in_(
                [k[1] for k in sources if k[0] == "saml"])))):
        mine = everyone if sp.open_to_all else tuple(sources[("saml", sp.id)])
        out.append(AppGrant("saml", sp.entity_id, sp.name, _latest_end(mine), mine))
    for client in db.session.scalars(select(OidcClient).where(
            or_(OidcClient.open_to_all.is_(True), OidcClient.id.in_([k[1] for k in sources if k[0] == "oidc"])))):
        if not set(client.grant_types) & USER_GRANTS:
            continue  # a machine client: nothing a person could open
        mine = everyone if client.open_to_all else tuple(sources[("oidc", client.id)])
        out.append(AppGrant("oidc", client.client_id, client.name, _latest_end(mine), mine, client.login_url))
    return sorted(out, key=lambda g: (g.name.lower(), g.key))
