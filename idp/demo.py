"""A demo directory: a few users with known passwords and groups, so the bridge can be tried at once.

Seeding converges instead of failing on a second run: missing users, groups and memberships are added,
and a demo user whose password no longer matches gets the demo password back (the printed credentials
must work). Never run it against a real directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from idp.access import accounts, assignments, permission_sets
from idp.access.permission_sets import PermissionSetSpec
from idp.authn import directory, passwords
from idp.errors import Conflict

ACTOR = "demo"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    display_name: str
    given_name: str
    family_name: str
    groups: tuple[str, ...]

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


GROUPS = {
    "engineering": "Builds the product",
    "finance": "Pays the bills",
    "idp-admins": "Administers the identity bridge",
}

USERS = (
    DemoUser("alice", "alice-demo-pw", "Alice Anderson", "Alice", "Anderson", ("engineering", "idp-admins")),
    DemoUser("bob", "bob-demo-pw", "Bob Brown", "Bob", "Brown", ("engineering",)),
    DemoUser("carol", "carol-demo-pw", "Carol Clark", "Carol", "Clark", ("finance",)),
)


# What the portal shows: two made-up AWS accounts (their console links reach AWS, which refuses them), an OU.
OU = "Sandbox"
ACCOUNTS = {"111111111111": ("Demo sandbox", OU), "222222222222": ("Demo production", None)}
PERMISSION_SETS = {"ReadOnly": ("ReadOnlyAccess", 1), "Administrator": ("AdministratorAccess", 4)}
GRANTS = (  # (who, permission set, account or None, OU or None)
    ("group:engineering", "ReadOnly", None, OU),
    ("group:engineering", "ReadOnly", "222222222222", None),
    ("group:idp-admins", "Administrator", "222222222222", None),
)


def seed_demo() -> tuple[DemoUser, ...]:
    """Make the demo users, groups and access exist as described above; returns the users (with passwords)."""
    _seed_directory()
    _seed_access()
    return USERS


def _seed_directory() -> None:
    for name, description in GROUPS.items():
        if directory.get_group(name) is None:
            directory.create_group(name, description=description, actor=ACTOR)
    for demo in USERS:
        user = directory.get_user(demo.username)
        if user is None:
            directory.create_user(
                demo.username, password=demo.password, actor=ACTOR, groups=demo.groups, email=demo.email,
                given_name=demo.given_name, family_name=demo.family_name, display_name=demo.display_name,
            )
            continue
        if not user.enabled:
            directory.enable_user(demo.username, actor=ACTOR)
        if not passwords.verify(user.password_hash, demo.password):
            directory.set_password(demo.username, demo.password, actor=ACTOR)
        for group_name in demo.groups:
            directory.add_member(group_name, demo.username, actor=ACTOR)


def _seed_access() -> None:
    if accounts.get_ou(OU) is None:
        accounts.add_ou(OU, actor=ACTOR)
    for account_id, (name, ou) in ACCOUNTS.items():
        if accounts.get_account(account_id) is None:
            accounts.add_account(account_id, name=name, ou=ou, actor=ACTOR,
                                 saml_provider_arn=f"arn:aws:iam::{account_id}:saml-provider/idp-bridge")
    for name, (role, hours) in PERMISSION_SETS.items():
        if permission_sets.get_permission_set(name) is None:
            permission_sets.add_permission_set(name, PermissionSetSpec(session_hours=hours, role_name=role),
                                               actor=ACTOR)
    for who, pset, account, ou in GRANTS:
        try:
            assignments.assign(who, pset, account=account, ou=ou, actor=ACTOR)
        except Conflict:  # already granted
            continue
