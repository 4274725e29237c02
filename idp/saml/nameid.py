"""The NameID a service provider gets for a user: which format, and its value.

- emailAddress: the user's email (a user without one cannot be named this way);
- persistent: a random opaque value per (user, SP), created on first use and stable afterwards, so two SPs
  cannot link their users by it;
- transient: random for every response;
- unspecified: the username.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from idp.authn.principal import Principal
from idp.extensions import db
from idp.saml.providers import RegisteredSp
from idp.saml.xmlsafe import fits_xml
from idp.store import PersistentNameId

EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"

SUPPORTED = (EMAIL, PERSISTENT, TRANSIENT, UNSPECIFIED)


class NameIdPolicyError(Exception):
    """The SP asked for (or is set to) a NameID we cannot give: answered with InvalidNameIDPolicy."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NameId:
    value: str
    format: str
    # Which SP the value is meant for (persistent and transient values only mean something to that SP).
    sp_name_qualifier: str | None = None


def choose_format(configured: str, requested: str | None) -> str:
    """The SP's configured format. The admin's choice wins over the request: an SP set to an opaque
    persistent ID must not obtain the user's email by asking for emailAddress, so a request for any other
    specific format is refused (InvalidNameIDPolicy) rather than honoured."""
    chosen = configured if configured in SUPPORTED else UNSPECIFIED
    if requested and requested not in (UNSPECIFIED, chosen):
        # (What the SP sent comes after the colon: the part before is a metrics label, idp.ops.metrics.)
        raise NameIdPolicyError(f"NameID format not allowed for this SP: {requested} requested, {chosen} set")
    return chosen


def name_id_for(principal: Principal, sp: RegisteredSp, fmt: str) -> NameId:
    if fmt == EMAIL:
        if not principal.email:
            raise NameIdPolicyError("user has no email address for an emailAddress NameID")
        return NameId(_whole(principal.email), EMAIL)
    if fmt == PERSISTENT:
        # Made whatever the request's AllowCreate says: pysaml2 SPs send "false" by default (README).
        return NameId(persistent_value(principal.user_id, sp.id), PERSISTENT, sp.entity_id)
    if fmt == TRANSIENT:
        return NameId("_" + secrets.token_hex(20), TRANSIENT, sp.entity_id)
    if fmt == UNSPECIFIED:
        return NameId(_whole(principal.username), UNSPECIFIED)
    raise NameIdPolicyError(f"unsupported NameID format: {fmt}")


def _whole(value: str) -> str:
    """A NameID from a directory as it is: one holding a character XML cannot carry is refused, not written
    without it, which could name another account at the SP ("ceo\x01@corp" is not "ceo@corp")."""
    if not fits_xml(value):
        raise NameIdPolicyError("the user's name or email holds a character XML cannot carry (a control "
                                "character): fix it in the directory")
    return value


# Built once: it runs for every assertion with a persistent NameID.
_PERSISTENT_VALUE = select(PersistentNameId.value).where(
    PersistentNameId.user_id == bindparam("user_id"), PersistentNameId.sp_id == bindparam("sp_id")
)


def persistent_value(user_id: int, sp_id: int) -> str:
    """The user's stable identifier at this SP, created on first use."""
    key = {"user_id": user_id, "sp_id": sp_id}
    existing: str | None = db.session.connection().execute(_PERSISTENT_VALUE, key).scalar()
    if existing is not None:
        return existing
    value = secrets.token_hex(20)
    try:
        # A savepoint, so that losing a race with a concurrent first sign-in only undoes this insert.
        with db.session.begin_nested():
            db.session.add(PersistentNameId(user_id=user_id, sp_id=sp_id, value=value))
    except IntegrityError:
        existing = db.session.connection().execute(_PERSISTENT_VALUE, key).scalar()
        if existing is None:
            raise
        return existing
    return value
