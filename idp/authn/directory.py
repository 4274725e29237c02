"""The built-in directory: user and group services, and password authentication against it.

Every change takes the acting party (``actor``) as an argument and records one audit event, so the same
services serve the CLI, a future admin API and the tests alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.orm.exc import StaleDataError

from idp import audit
from idp.audit import AuditEvent
from idp.authn import passwords
from idp.authn.principal import Principal, load_snapshot
from idp.authn.session import end_user_sessions
from idp.clock import now
from idp.database import flushed_unique
from idp.errors import BadRequest, Conflict, NotFound
from idp.extensions import db
from idp.saml.xmlsafe import fits_xml
from idp.store import Group, User
from idp.text import check_line

# Lower-case, no spaces: usernames end up in NameIDs, logs and CLI arguments.
USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,254}")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# A syntax check only (one @, a dotted domain, no spaces): deliverability is the mail system's business.
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
PROFILE_FIELDS = ("email", "given_name", "family_name", "display_name")
UNKNOWN_USER = "unknown user"


@dataclass(frozen=True)
class AuthnOutcome:
    """The result of a password check: a principal, or the precise reason for the audit log (never shown)."""

    username: str
    principal: Principal | None
    reason: str | None = None


def normalize_username(username: str) -> str:
    return username.strip().lower()


# --- users -------------------------------------------------------------------------------------------------


def get_user(username: str) -> User | None:
    name = normalize_username(username)
    if not name or len(name) > 255:
        return None
    user: User | None = db.session.scalar(select(User).where(User.username == name))
    return user


def require_user(username: str) -> User:
    user = get_user(username)
    if user is None:
        raise NotFound(f"no user '{normalize_username(username)}'")
    return user


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.username)))


def search_users(*, q: str | None = None, source: str | None = None) -> Select[tuple[User]]:
    """Users by username: those whose username or email contains ``q`` (any case), from ``source`` ("local" or
    a directory's name); None or "" for either: any. The admin API and UI list people with it."""
    found = select(User).order_by(User.username)
    if q:
        part = q.strip().lower()
        found = found.where(or_(User.username.contains(part, autoescape=True),
                                func.lower(User.email).contains(part, autoescape=True)))
    if source:
        found = found.where(User.source == source)
    return found


def require_local(user: User) -> User:
    """The user, when the built-in directory owns them; Conflict for a directory (LDAP, AD) user, whose row is
    the directory's: the admin API and UI neither change nor delete it (the next sign-in would bring it back,
    without its persistent NameIDs and consents). The CLI's ``idp user disable|enable`` may still block or allow
    one locally (:func:`disable_user`, :func:`enable_user`)."""
    if user.source != "local":
        raise Conflict(f"'{user.username}' is managed by directory {user.source}: change them there")
    return user


def _check_profile(values: dict[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, value in values.items():
        if name not in PROFILE_FIELDS:
            raise BadRequest(f"unknown user field '{name}'", field=name)
        value = value.strip() if value is not None else None
        value = value or None
        if value is not None and len(value) > (320 if name == "email" else 255):
            raise BadRequest(f"{name.replace('_', ' ')} is too long", field=name)
        if value is not None and not fits_xml(value):  # SAML assertions carry it
            raise BadRequest(f"{name.replace('_', ' ')} may not contain a control character", field=name)
        if name == "email" and value is not None and not EMAIL.fullmatch(value):
            raise BadRequest(f"invalid email address '{value}'", field="email")
        out[name] = value
    return out


def check_new_user(username: str, groups: Iterable[str] = (), **profile: str | None,
                   ) -> tuple[str, dict[str, str | None], list[Group]]:
    """What :func:`create_user` checks before it hashes a password (the CLI asks for one only after these):
    the normalized name, the profile fields, the groups; BadRequest, Conflict or NotFound."""
    name = normalize_username(username)
    if not USERNAME.fullmatch(name):
        raise BadRequest(
            f"invalid username '{username}': use letters, digits and . _ @ + - (starting with a letter or digit)",
            field="username",
        )
    checked = _check_profile(profile)
    if get_user(name) is not None:
        raise Conflict(f"user '{name}' already exists")
    return name, checked, [require_group(g) for g in dict.fromkeys(groups)]


def create_user(
    username: str,
    *,
    password: str | None,
    actor: str,
    groups: Iterable[str] = (),
    email: str | None = None,
    given_name: str | None = None,
    family_name: str | None = None,
    display_name: str | None = None,
) -> User:
    """Add a user. ``password=None`` makes an account that cannot sign in with a password (yet)."""
    name, profile, member_of = check_new_user(username, groups, email=email, given_name=given_name,
                                              family_name=family_name, display_name=display_name)
    password_hash = passwords.hash_password(password) if password is not None else None
    user = User(username=name, password_hash=password_hash, enabled=True, **profile)
    user.groups = member_of
    db.session.add(user)
    if not flushed_unique():  # a concurrent `user add` of the same name won the race
        raise Conflict(f"user '{name}' already exists")
    audit.record(AuditEvent(type="user.create", actor=actor, username=name,
                            details={"groups": [g.name for g in member_of]}))
    return user


def update_user(username: str, *, actor: str, enabled: bool | None = None, password: str | None = None,
                **changes: str | None) -> User:
    """Change profile fields (email, given_name, family_name, display_name; ``None`` or "" clears one), the
    password, and whether the user may sign in, all or nothing: every value is checked before any is set.
    A directory user is their directory's (Conflict, :func:`require_local`), ``enabled`` included."""
    user = require_local(require_user(username))
    profile = _check_profile(changes)
    password_hash = passwords.hash_password(password) if password is not None else None
    events: list[AuditEvent] = []
    if changes:
        for name, value in profile.items():
            setattr(user, name, value)
        events.append(AuditEvent(type="user.update", actor=actor, username=user.username,
                                 details={"fields": sorted(changes)}))
    disabling = enabled is False and user.enabled
    # Once for both: a new password signs the user out everywhere (but here, for who set their own), a disable
    # everywhere.
    ended = (end_user_sessions(user.id, keep_current=not disabling)
             if password_hash is not None or disabling else 0)
    if password_hash is not None:
        user.password_hash = password_hash
        events.append(AuditEvent(type="user.set_password", actor=actor, username=user.username,
                                 details={"sessions_ended": ended}))
    if enabled is not None and enabled != user.enabled:
        user.enabled = enabled
        if enabled:
            events.append(AuditEvent(type="user.enable", actor=actor, username=user.username))
        else:
            events.append(AuditEvent(type="user.disable", actor=actor, username=user.username,
                                     details={"sessions_ended": ended}))
    # One commit, with the last event: each event's own commit would keep the changes with the first of them, and
    # a failure after it would leave an answer of failure, the changes stored and the rest unaudited.
    for i, event in enumerate(events, start=1):
        audit.record(event, commit=i == len(events))
    return user


# disable_user and enable_user take directory users too, on purpose: the CLI's documented local override
# (idp.authn.connectors.shadow: a directory user can be disabled here), not the admin API's or UI's PATCH.
def disable_user(username: str, *, actor: str) -> int:
    """Disable the user and end their live sessions at once. Returns how many sessions were ended."""
    user = require_user(username)
    user.enabled = False
    ended = end_user_sessions(user.id)
    audit.record(AuditEvent(type="user.disable", actor=actor, username=user.username,
                            details={"sessions_ended": ended}))
    return ended


def enable_user(username: str, *, actor: str) -> None:
    user = require_user(username)
    user.enabled = True
    audit.record(AuditEvent(type="user.enable", actor=actor, username=user.username))


def set_password(username: str, password: str, *, actor: str) -> None:
    user = require_local(require_user(username))
    user.password_hash = passwords.hash_password(password)
    # A new password is how an admin answers a stolen account: whoever signed in with the old one is signed out
    # everywhere (as Okta does), but here, for who set their own.
    ended = end_user_sessions(user.id, keep_current=True)
    audit.record(AuditEvent(type="user.set_password", actor=actor, username=user.username,
                            details={"sessions_ended": ended}))


def delete_user(username: str, *, actor: str) -> None:
    """Delete a local user and end their sessions; a directory user is Conflict (:func:`require_local`)."""
    user = require_local(require_user(username))
    name = user.username
    ended = end_user_sessions(user.id)
    db.session.delete(user)
    audit.record(AuditEvent(type="user.delete", actor=actor, username=name, details={"sessions_ended": ended}))


# --- groups ------------------------------------------------------------------------------------------------


def get_group(name: str) -> Group | None:
    """The local group of that name in any case (names are unique in any case, and ASCII: lower() folds them)."""
    group: Group | None = db.session.scalar(select(Group).where(func.lower(Group.name) == name.strip().lower()))
    return group


def require_group(name: str) -> Group:
    group = get_group(name)
    if group is None:
        raise NotFound(f"no group '{name.strip()}'")
    return group


def list_groups() -> list[Group]:
    return list(db.session.scalars(select(Group).order_by(Group.name)))


def create_group(name: str, *, actor: str, description: str | None = None) -> Group:
    name = name.strip()
    if not GROUP_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid group name '{name}': use letters, digits and . _ - (starting with a letter or digit)",
            field="name",
        )
    if get_group(name) is not None or db.session.scalar(
        select(func.count()).select_from(Group).where(func.lower(Group.name) == name.lower())
    ):
        # Names differing only in case would be indistinguishable to most SPs.
        raise Conflict(f"group '{name}' already exists")
    group = Group(name=name, description=_description(description))
    db.session.add(group)
    if not flushed_unique():
        raise Conflict(f"group '{name}' already exists")
    audit.record(AuditEvent(type="group.create", actor=actor, details={"group": name}))
    return group


def _description(text: str | None) -> str | None:
    text = (text or "").strip() or None
    if text is not None and len(text) > 1024:
        raise BadRequest("a group's description is at most 1024 characters", field="description")
    return check_line(text, "a group's description", "description", lines=True) if text is not None else None


def update_group(name: str, *, description: str | None, actor: str) -> Group:
    """Change a local group's description (None or "" clears it); nothing is recorded when it stays the same."""
    group = require_group(name)
    before, after = group.description, _description(description)
    if after != before:
        group.description = after
        audit.record(AuditEvent(type="group.update", actor=actor, details={
            "group": group.name, "description": {"from": before, "to": after}}))
    return group


def delete_group(name: str, *, actor: str) -> None:
    """Remove a local group and its memberships. Assignments name groups, not rows (a directory's groups have
    none), so an assignment to this name stays and applies again to a group of the same name."""
    group = require_group(name)
    members = [u.username for u in group.members]
    db.session.delete(group)
    audit.record(AuditEvent(type="group.delete", actor=actor, details={"group": group.name, "members": members}))


def add_member(group_name: str, username: str, *, actor: str) -> bool:
    """Put the user in the group. False (and no change) when already a member, also when a concurrent request
    (a retried PUT on another instance) made them one after this one looked."""
    group, user = require_group(group_name), require_user(username)
    if group in user.groups:
        return False
    user.groups.append(group)
    if not flushed_unique():
        return False
    audit.record(AuditEvent(type="group.add_member", actor=actor, username=user.username,
                            details={"group": group.name}))
    return True


def remove_member(group_name: str, username: str, *, actor: str) -> None:
    group, user = require_group(group_name), require_user(username)
    not_a_member = NotFound(f"user '{user.username}' is not a member of group '{group.name}'")
    if group not in user.groups:
        raise not_a_member
    user.groups.remove(group)
    try:
        db.session.flush()
    except StaleDataError:  # a concurrent request took them out after this one looked: as if it came second
        db.session.rollback()
        raise not_a_member from None
    audit.record(AuditEvent(type="group.remove_member", actor=actor, username=user.username,
                            details={"group": group.name}))


# --- authentication ----------------------------------------------------------------------------------------


# What a password check reads (a Core row, not an ORM User: the sign-in needs no identity map).
_USERS = User.__table__
_CREDENTIALS = select(_USERS.c.id, _USERS.c.password_hash, _USERS.c.enabled, _USERS.c.source).where(
    _USERS.c.username == bindparam("username"))


def check_credentials(username: str, password: str, *, equalise_unknown: bool = True) -> AuthnOutcome:
    """Verify a password. Failures are results with a reason; every path costs one argon2 verification,
    so the answer's timing does not tell whether the user exists. ``equalise_unknown=False`` leaves that cost
    of an unknown user to the caller: the connector chain pays it once, only when no directory knew the user."""
    name = normalize_username(username)
    row = None
    if name and len(name) <= 255:
        db.session.flush()  # a Core read does not autoflush
        row = db.session.connection().execute(_CREDENTIALS, {"username": name}).first()
    if row is None or row.source != "local":
        # A directory user's shadow row has no password here: their directory decides.
        if equalise_unknown:
            passwords.dummy_verify(password)
        return AuthnOutcome(name[:255], None, UNKNOWN_USER)
    if not passwords.verify(row.password_hash, password):
        return AuthnOutcome(name, None, "bad password")
    if not row.enabled:
        return AuthnOutcome(name, None, "user disabled")
    if row.password_hash and passwords.needs_rehash(row.password_hash):
        # The hash parameters changed since this password was stored: upgrade it now that we know it.
        db.session.execute(update(User).where(User.id == row.id)
                           .values(password_hash=passwords.hash_password(password, check=False)))
        db.session.commit()
    user = load_snapshot(row.id)
    if user is None:  # deleted while its password was checked
        return AuthnOutcome(name, None, UNKNOWN_USER)
    return AuthnOutcome(name, user.principal(now()))


def authenticate(username: str, password: str) -> Principal | None:
    """The connector seam: a Principal for good credentials of an enabled user, else None."""
    return check_credentials(username, password).principal
