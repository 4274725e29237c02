"""Who gets what: permission sets assigned in an account or an OU, applications assigned or open to all, and
a user's effective access as :func:`idp.access.decide.authorize` sees it.

A user is named by row, a group by name: a group of an LDAP or AD directory has no row, only the names the
users who signed in with it carry, and an admin must be able to grant to it before anyone of it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, or_, select

from idp import audit, clock
from idp.access.accounts import require_account, require_ou, until_text
from idp.access.decide import AWS_ENTITY_ID, EVERYTHING, Grant, RoleGrant, authorize, group_named
from idp.access.permission_sets import require_permission_set
from idp.audit import AuditEvent
from idp.authn import directory
from idp.authn.principal import Principal, group_key, principal_from_user
from idp.database import flushed_unique
from idp.errors import BadRequest, Conflict, NotFound
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

# --- principals -----------------------------------------------------------------------------------------

G = TypeVar("G", Assignment, AppAssignment)


@dataclass(frozen=True)
class Who:
    """Whom an assignment is for: a user (row id) or a group (name)."""

    user_id: int | None
    group_name: str | None
    username: str | None = None

    @property
    def label(self) -> str:
        return f"group {self.group_name}" if self.group_name is not None else f"user {self.username}"

    def matches(self, model: type[Assignment] | type[AppAssignment]) -> ColumnElement[bool]:
        if self.group_name is not None:  # in any case, as access is decided
            return group_named(model, [self.group_name])
        return model.user_id == self.user_id


def _group_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 255 or not name.isprintable():
        raise BadRequest(f"invalid group name {name!r}", field="principal")
    return name


def _known_group(name: str) -> bool:
    """A local group, a group some directory user signed in with (nested ones included), or a group an
    assignment already names (given as group:NAME before anyone of it signed in)."""
    if directory.get_group(name) is not None:
        return True
    for model in (Assignment, AppAssignment):
        if db.session.scalar(select(model.id).where(group_named(model, [name])).limit(1)) is not None:
            return True
    rows = db.session.scalars(select(User.external_groups).where(User.external_groups.is_not(None)))
    wanted = group_key(name)
    return any(wanted in {group_key(g) for g in groups or ()} for groups in rows)


def resolve_principal(text: str) -> Who:
    """``user:NAME``, ``group:NAME``, or a bare name: a user, else a known group (:func:`_known_group`); both a
    user and a group → ask for the prefix."""
    kind, sep, rest = text.partition(":")
    if sep and kind in ("user", "group"):
        if kind == "group":
            return Who(None, _group_name(rest))
        user = directory.get_user(rest)
        if user is None:
            raise NotFound(f"no user '{directory.normalize_username(rest)}' (a directory user can be assigned "
                           "once they have signed in; assign one of their groups meanwhile)")
        return Who(user.id, None, user.username)
    user = directory.get_user(text)
    group = text.strip() if _known_group(text.strip()) else None
    if user is not None and group is not None:
        raise BadRequest(f"'{text}' is both a user and a group: write user:{user.username} or group:{group}",
                         field="principal")
    if user is not None:
        return Who(user.id, None, user.username)
    if group is not None:
        return Who(None, group)
    raise NotFound(f"no user or group '{text.strip()}'; for a directory group nobody has signed in with yet, "
                   f"write group:{text.strip()}")


def parse_until(text: str, now: datetime, *, require_zone: bool = False) -> datetime:
    """An end as given to ``--until``, the admin API or the admin UI: an ISO date, which means the end of that day
    in UTC (the assignment works through it), or an ISO time, in UTC when it names no zone unless
    ``require_zone`` (the admin API: a time without a zone is refused). It must be later than ``now`` and a
    time UTC can hold (BadRequest otherwise)."""
    value = text.strip()
    try:
        try:  # any ISO date (2027-03-31, 20270331, 2027-W13-3): datetime.fromisoformat reads the last two as midnight
            end = datetime.combine(date.fromisoformat(value), time(), UTC) + timedelta(days=1)
        except ValueError:
            end = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{text!r} is neither an ISO date (2027-03-31) nor an ISO time "
                         "(2027-03-31T18:00:00Z)", field="until") from None
    except OverflowError:  # the end of 9999-12-31 is in year 10000
        raise BadRequest(f"{text!r} is too late: an end must be before year 10000", field="until") from None
    if end.tzinfo is None and require_zone:
        raise BadRequest(f"{text!r} needs a zone: 2027-03-31T18:00:00Z, or an offset such as +02:00",
                         field="until")
    return check_until(end, now)


def check_until(until: datetime, now: datetime) -> datetime:
    """The end, in UTC (a time without a zone is taken as UTC), or BadRequest when it is not after ``now`` or is
    a time UTC cannot hold (0001-01-01T00:00+05:00 is in year 0, 9999-12-31T23:59-05:00 in year 10000)."""
    try:
        until = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"the end {until.isoformat()} is outside the years 1 to 9999 in UTC",
                         field="until") from None
    if until <= now:
        raise BadRequest(f"the end {until.isoformat()} is already past", field="until")
    return until


@dataclass(frozen=True)
class Assigned:
    """What an assign or unassign did, for its caller to report."""

    principal: str  # "user alice" / "group engineers"
    what: str  # the permission set, or the application's name
    where: str  # "account 111122223333", "ou Production", "saml https://sp.example.com"
    until: datetime | None = None
    id: int | None = None  # the assignment's row (the admin API names assignments by it)


# --- account assignments --------------------------------------------------------------------------------


def _scope(account: str | None, ou: str | None) -> tuple[dict[str, int], str]:
    """The assignment's columns for its target, and how to name it."""
    if (account is None) == (ou is None):
        raise BadRequest("name exactly one of an account or an OU")
    if account is not None:
        row = require_account(account)
        return {"account_id": row.id}, f"account {row.account_id}"
    unit = require_ou(ou or "")
    return {"ou_id": unit.id}, f"ou {unit.name}"


def _assignment_query(who: Who, pset_id: int, target: dict[str, int]) -> Any:
    query = select(Assignment).where(who.matches(Assignment), Assignment.permission_set_id == pset_id)
    for column, value in target.items():
        query = query.where(getattr(Assignment, column) == value)
    return query


def _insert(row: Assignment | AppAssignment, duplicate: Conflict) -> None:
    """Write a new grant now, before its audit event: the same grant made by a concurrent request (a retry that
    reached another instance) after this one's check is refused by the unique index, as ``duplicate``."""
    db.session.add(row)
    if not flushed_unique():
        raise duplicate


def assign(principal: str, permission_set: str, *, account: str | None = None, ou: str | None = None,
           until: datetime | None = None, actor: str) -> Assigned:
    """Give ``principal`` (see :func:`resolve_principal`) the permission set in one account, or in every
    account of an OU and its sub-OUs, including accounts added later."""
    now = clock.now()
    until = check_until(until, now) if until is not None else None
    who = resolve_principal(principal)
    pset = require_permission_set(permission_set)
    target, where = _scope(account, ou)
    # One row per grant (a unique index): an ended one is reused. (Rows of one group in two cases, which the
    # index, exact in case, let in before names matched in any case: the live one counts.)
    existing: Assignment | None = _live_first(db.session.scalars(_assignment_query(who, pset.id, target)), now)
    if existing is not None and (existing.until is None or existing.until > now):
        raise Conflict(f"{who.label} already has {pset.name} in {where}{until_text(existing.until, now)}")
    if existing is not None:
        existing.until, existing.created_by, existing.created_at = until, actor, now
        row = existing
    else:
        row = Assignment(permission_set_id=pset.id, user_id=who.user_id, group_name=who.group_name,
                         until=until, created_by=actor, **target)
        _insert(row, Conflict(f"{who.label} already has {pset.name} in {where}"))
    audit.record(AuditEvent(type="access.assign", actor=actor, username=who.username, details={
        "principal": who.label, "permission_set": pset.name, "scope": where,
        "until": until.isoformat() if until else None}))
    return Assigned(who.label, pset.name, where, until, row.id)


def unassign(principal: str, permission_set: str, *, account: str | None = None, ou: str | None = None,
             actor: str) -> Assigned:
    who = resolve_principal(principal)
    pset = require_permission_set(permission_set)
    target, where = _scope(account, ou)
    found = list(db.session.scalars(_assignment_query(who, pset.id, target)))
    if not found:
        raise NotFound(f"{who.label} has no assignment of {pset.name} in {where}")
    # Every row of the grant (a group's, in any case): one left behind would go on granting it.
    return [_remove(row, who, pset.name, where, actor) for row in found][-1]


def _live_first(rows: Iterable[G], now: datetime) -> G | None:
    """Of a grant's rows, one that has not ended, else any."""
    found = list(rows)
    return next((r for r in found if r.until is None or r.until > now), found[0] if found else None)


def require_assignment(assignment_id: int) -> Assignment:
    # An id no integer column holds would make the database raise, not answer "none".
    row: Assignment | None = db.session.get(Assignment, assignment_id) if 0 < assignment_id < 2**31 else None
    if row is None:
        raise NotFound(f"no assignment {assignment_id}")
    return row


def unassign_by_id(assignment_id: int, *, actor: str) -> Assigned:
    """The same as :func:`unassign`, for an assignment named by its row (the admin API's way)."""
    row = require_assignment(assignment_id)
    info = describe_assignments([row])[0]
    return _remove(row, info.who, info.permission_set, info.where, actor)


def update_assignment(assignment_id: int, *, until: datetime | None, actor: str) -> Assigned:
    """Set or clear (None) the end of the assignment named by its row; an ended one runs again until the new
    end. Nothing is recorded when the end stays the same."""
    row = require_assignment(assignment_id)
    info = describe_assignments([row])[0]
    before, after = row.until, _new_end(until)
    if after != before:
        row.until = after
        audit.record(AuditEvent(type="access.assign.update", actor=actor, username=info.who.username, details={
            "principal": info.who.label, "permission_set": info.permission_set, "scope": info.where,
            "until": {"from": _iso(before), "to": _iso(after)}}))
    return Assigned(info.who.label, info.permission_set, info.where, after, row.id)


def _new_end(until: datetime | None) -> datetime | None:
    return check_until(until, clock.now()) if until is not None else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _remove(row: Assignment, who: Who, pset_name: str, where: str, actor: str) -> Assigned:
    assignment_id = row.id
    db.session.delete(row)
    audit.record(AuditEvent(type="access.unassign", actor=actor, username=who.username, details={
        "principal": who.label, "permission_set": pset_name, "scope": where}))
    return Assigned(who.label, pset_name, where, id=assignment_id)


@dataclass(frozen=True)
class AssignmentInfo:
    """An assignment with the names its row points at."""

    id: int
    who: Who
    permission_set: str
    account: str | None  # AWS's 12 digits; None for an OU's assignment
    ou: str | None
    until: datetime | None
    created_by: str
    created_at: datetime

    @property
    def where(self) -> str:
        return f"account {self.account}" if self.account is not None else f"ou {self.ou}"


def describe_assignments(rows: Sequence[Assignment]) -> list[AssignmentInfo]:
    """The rows with their names, in four queries whatever their number (a page of the admin API)."""

    def names(model: Any, column: Any, ids: Iterable[int | None]) -> dict[int, str]:
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        return {pk: name for pk, name in db.session.execute(select(model.id, column).where(model.id.in_(wanted)))}

    users = names(User, User.username, (r.user_id for r in rows))
    psets = names(PermissionSet, PermissionSet.name, (r.permission_set_id for r in rows))
    accounts = names(Account, Account.account_id, (r.account_id for r in rows))
    ous = names(OrganizationalUnit, OrganizationalUnit.name, (r.ou_id for r in rows))
    return [AssignmentInfo(r.id, Who(r.user_id, r.group_name, users.get(r.user_id or 0)),
                           psets[r.permission_set_id], accounts.get(r.account_id or 0), ous.get(r.ou_id or 0),
                           r.until, r.created_by, r.created_at) for r in rows]


def assignment_query(*, principal: str | None = None, permission_set: str | None = None,
                     account: str | None = None, ou: str | None = None, active: bool | None = None,
                     now: datetime | None = None) -> Select[tuple[Assignment]]:
    """The account assignments, oldest first: those of ``principal`` (as :func:`resolve_principal` reads it),
    of ``permission_set``, made in ``account`` or in ``ou`` (that OU's own, not its parents'), running at ``now``
    (``active`` True) or ended by then (False); None: any. A name that matches nothing is NotFound. The admin
    API and UI filter assignments with it."""
    found = select(Assignment).order_by(Assignment.id)
    if principal is not None:
        found = found.where(resolve_principal(principal).matches(Assignment))
    if permission_set is not None:
        found = found.where(Assignment.permission_set_id == require_permission_set(permission_set).id)
    if account is not None:
        found = found.where(Assignment.account_id == require_account(account).id)
    if ou is not None:
        found = found.where(Assignment.ou_id == require_ou(ou).id)
    if active is not None:
        running = or_(Assignment.until.is_(None), Assignment.until > (now or clock.now()))
        found = found.where(running if active else ~running)
    return found


# --- applications ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    kind: str  # "saml" or "oidc"
    key: str  # entity ID or client_id
    name: str
    row: ServiceProvider | OidcClient

    @property
    def column(self) -> dict[str, int]:
        return {"sp_id": self.row.id} if self.kind == "saml" else {"client_id": self.row.id}


def _app(row: ServiceProvider | OidcClient) -> App:
    if isinstance(row, ServiceProvider):
        return App("saml", row.entity_id, row.name, row)
    return App("oidc", row.client_id, row.name, row)


def resolve_app(text: str) -> App:
    """An SP's entity ID or an OIDC client's client_id, else an SP's or client's name. The AWS sign-in SP
    is refused: accounts are opened through account assignments."""
    value = text.strip()
    by_key = [*db.session.scalars(select(ServiceProvider).where(ServiceProvider.entity_id == value)),
              *db.session.scalars(select(OidcClient).where(OidcClient.client_id == value))]
    found = by_key or [*db.session.scalars(select(ServiceProvider).where(ServiceProvider.name == value)),
                       *db.session.scalars(select(OidcClient).where(OidcClient.name == value))]
    if not found:
        raise NotFound(f"no application '{value}' (an SP's entity ID, an OIDC client's id, or their name)")
    if len(found) > 1:
        raise BadRequest(f"'{value}' names several applications ("
                         + ", ".join(f"{a.kind} {a.key}" for a in map(_app, found)) + "): use the ID",
                         field="app_text")
    app = _app(found[0])
    if app.kind == "saml" and app.key == AWS_ENTITY_ID:
        raise BadRequest("AWS sign-in is not assigned as an application: its accounts are opened through "
                         "account assignments (idp assign USER_OR_GROUP PERMISSION_SET --account ACCOUNT)",
                         field="app_text")
    return app


def _app_assignments(app: App, who: Who | None = None) -> Any:
    query = select(AppAssignment)
    for column, value in app.column.items():
        query = query.where(getattr(AppAssignment, column) == value)
    return query.where(who.matches(AppAssignment)) if who is not None else query


def assign_app(app_text: str, principal: str, *, until: datetime | None = None, actor: str) -> Assigned:
    now = clock.now()
    until = check_until(until, now) if until is not None else None
    app, who = resolve_app(app_text), resolve_principal(principal)
    existing: AppAssignment | None = _live_first(db.session.scalars(_app_assignments(app, who)), now)
    if existing is not None and (existing.until is None or existing.until > now):
        raise Conflict(f"{app.name} is already assigned to {who.label}{until_text(existing.until, now)}")
    if existing is not None:
        existing.until, existing.created_by, existing.created_at = until, actor, now
        row = existing
    else:
        row = AppAssignment(user_id=who.user_id, group_name=who.group_name, until=until, created_by=actor,
                            **app.column)
        _insert(row, Conflict(f"{app.name} is already assigned to {who.label}"))
    audit.record(AuditEvent(type="access.app.assign", actor=actor, username=who.username, sp=app.key, details={
        "app": app.name, "kind": app.kind, "principal": who.label, "until": until.isoformat() if until else None}))
    return Assigned(who.label, app.name, f"{app.kind} {app.key}", until, row.id)


def unassign_app(app_text: str, principal: str, *, actor: str) -> Assigned:
    app, who = resolve_app(app_text), resolve_principal(principal)
    found = list(db.session.scalars(_app_assignments(app, who)))
    if not found:
        raise NotFound(f"{app.name} is not assigned to {who.label}")
    for row in found:  # every row of the grant, as unassign
        db.session.delete(row)
    audit.record(AuditEvent(type="access.app.unassign", actor=actor, username=who.username, sp=app.key,
                            details={"app": app.name, "kind": app.kind, "principal": who.label}))
    return Assigned(who.label, app.name, f"{app.kind} {app.key}")


def require_app_assignment(assignment_id: int) -> AppAssignment:
    # An id no integer column holds would make the database raise, not answer "none".
    row: AppAssignment | None = (db.session.get(AppAssignment, assignment_id) if 0 < assignment_id < 2**31
                                 else None)
    if row is None:
        raise NotFound(f"no application assignment {assignment_id}")
    return row


def update_app_assignment(assignment_id: int, *, until: datetime | None, actor: str) -> Assigned:
    """Set or clear (None) the end of the application assignment named by its row; an ended one runs again
    until the new end. Nothing is recorded when the end stays the same."""
    row = require_app_assignment(assignment_id)
    app = _app(db.session.get_one(ServiceProvider, row.sp_id) if row.sp_id is not None
               else db.session.get_one(OidcClient, row.client_id))
    username = db.session.get_one(User, row.user_id).username if row.user_id is not None else None
    who = Who(row.user_id, row.group_name, username)
    before, after = row.until, _new_end(until)
    if after != before:
        row.until = after
        audit.record(AuditEvent(type="access.app.update", actor=actor, username=who.username, sp=app.key, details={
            "app": app.name, "kind": app.kind, "principal": who.label,
            "until": {"from": _iso(before), "to": _iso(after)}}))
    return Assigned(who.label, app.name, f"{app.kind} {app.key}", after, row.id)


def set_open_to_all(app_text: str, on: bool, *, actor: str) -> bool:
    """Open the app to every signed-in user (``on``) or only to those assigned; False when it already was."""
    app = resolve_app(app_text)
    if app.row.open_to_all == on:
        return False
    app.row.open_to_all = on
    audit.record(AuditEvent(type="access.app.open_to_all", actor=actor, sp=app.key,
                            details={"app": app.name, "kind": app.kind, "open_to_all": on}))
    return True


def describe_apps() -> list[dict[str, Any]]:
    """Every application (AWS sign-in aside) and who may use it."""
    now = clock.now()
    rows = db.session.execute(select(AppAssignment, User.username).outerjoin(User, User.id == AppAssignment.user_id))
    assigned: dict[tuple[str, int], list[str]] = {}
    for row, username in rows:
        key = ("saml", row.sp_id) if row.sp_id is not None else ("oidc", row.client_id or 0)
        who = f"group {row.group_name}" if row.group_name is not None else f"user {username}"
        assigned.setdefault(key, []).append(who + until_text(row.until, now))
    apps = [_app(sp) for sp in db.session.scalars(select(ServiceProvider).where(
        ServiceProvider.entity_id != AWS_ENTITY_ID))] + [_app(c) for c in db.session.scalars(select(OidcClient))]
    return [{"kind": a.kind, "key": a.key, "name": a.name, "open_to_all": a.row.open_to_all,
             "assigned": sorted(assigned.get((a.kind, a.row.id), []))}
            for a in sorted(apps, key=lambda a: (a.name.lower(), a.key))]


# --- effective access -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    principal: Principal
    enabled: bool
    grant: Grant
    # Roles held through a permission set that requires MFA, which this user's sign-in would lack.
    with_mfa_only: tuple[RoleGrant, ...]


def effective_access(username: str) -> Access:
    """What the user may open now, as the one decision answers it (a read: nothing is audited)."""
    user = directory.require_user(username)
    now = clock.now()
    principal = principal_from_user(user, now)
    grant = authorize(principal, EVERYTHING, now)
    held = {(r.account_id, r.permission_set) for r in grant.roles}
    with_mfa = authorize(replace(principal, mfa=True), EVERYTHING, now)
    return Access(principal, user.enabled, grant,
                  tuple(r for r in with_mfa.roles if (r.account_id, r.permission_set) not in held))


def describe_access(found: Access) -> dict[str, Any]:
    """The access as data (times as datetimes): what ``idp access show --json`` and the admin API show."""
    p = found.principal
    return {"user": p.username, "source": p.source, "enabled": found.enabled, "groups": list(p.groups),
            "roles": [asdict(r) for r in found.grant.roles], "apps": [asdict(a) for a in found.grant.apps],
            "with_mfa_only": [asdict(r) for r in found.with_mfa_only]}
