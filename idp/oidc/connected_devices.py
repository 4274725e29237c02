"""The devices a user connected with the device flow (a TV, a CLI), listed on the portal and disconnected there.

A device's tokens belong to no browser session, so signing out leaves it connected; and a first-party client
asks no consent, so the portal's allowed apps do not list it. A device here is one token family (a device code
exchanged once, then each refresh token for the next) that still holds a live token. Disconnecting revokes the
family: the device's next refresh is invalid_grant, its access token inactive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, or_, select

from idp import audit, clock
from idp.audit import AuditEvent
from idp.errors import NotFound
from idp.extensions import db
from idp.oidc import server
from idp.store import OidcClient, OidcToken


@dataclass(frozen=True)
class ConnectedDevice:
    family_id: str
    client_name: str
    since: datetime  # the device's first token


def _mine(user_id: int) -> ColumnElement[bool]:
    return and_(OidcToken.user_id == user_id, OidcToken.session_id.is_(None))


def for_user(user_id: int) -> list[ConnectedDevice]:
    t = clock.now()
    live = and_(OidcToken.revoked_at.is_(None), OidcToken.refresh_used_at.is_(None),
                or_(OidcToken.expires_at > t, OidcToken.refresh_expires_at > t))
    rows = db.session.execute(
        select(OidcToken.family_id, OidcClient.name, func.min(OidcToken.issued_at))
        .join(OidcClient, OidcClient.client_id == OidcToken.client_id)
        .where(_mine(user_id))
        .group_by(OidcToken.family_id, OidcClient.name)
        .having(func.sum(case((live, 1), else_=0)) > 0)
        .order_by(func.min(OidcToken.issued_at)))
    return [ConnectedDevice(family, name, since) for family, name, since in rows]


def disconnect(user_id: int, username: str, family_id: str, actor: str) -> int:
    """Revoke one connected device's tokens; how many ended. NotFound for a family not the user's device's."""
    client_id: str | None = db.session.scalar(select(OidcToken.client_id).where(
        _mine(user_id), OidcToken.family_id == family_id).limit(1))
    if client_id is None:
        raise NotFound("no such device is connected to your account")
    count = server.revoke_tokens(_mine(user_id), OidcToken.family_id == family_id)
    audit.record(AuditEvent(type="oidc.device.disconnect", username=username, actor=actor, sp=client_id,
                            details={"family": family_id, "revoked_tokens": count}))
    return count
