"""A demo directory: a few users with known passwords and groups, so the bridge can be tried at once.

Seeding converges instead of failing on a second run: missing users, groups and memberships are added,
and a demo user whose password no longer matches gets the demo password back (the printed credentials
must work). Never run it against a real directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from idp.authn import directory, passwords

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


def seed_demo() -> tuple[DemoUser, ...]:
    """Make the demo users and groups exist as described above; returns the users (with passwords)."""
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
    return USERS
