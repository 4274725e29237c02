"""The Principal: who signed in, as every later step (authorization, claims, issuance) sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from idp.store import User


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


def principal_from_user(user: User, authn_at: datetime) -> Principal:
    """The Principal of a user row, signed in at ``authn_at``: a built-in directory user, or the shadow row of a
    directory user, whose groups are those the directory reported at the last sign-in plus any local ones."""
    groups = {g.name for g in user.groups}
    groups.update(str(g) for g in user.external_groups or ())
    return Principal(
        user_id=user.id,
        username=user.username,
        email=user.email,
        given_name=user.given_name,
        family_name=user.family_name,
        display_name=user.display_name,
        groups=tuple(sorted(groups)),
        source=user.source,
        authn_at=authn_at,
    )
