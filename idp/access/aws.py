"""AWS federation: the SAML attributes AWS sign-in and STS read (AWS sign-in itself is registered as an SP by
idp.portal.aws, on first launch).

:func:`role_attributes` turns the roles :func:`idp.access.decide.authorize` granted in one account into what
AWS expects (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_saml_assertions.html):
``Role`` (one ``role-arn,provider-arn`` value per role, so that AWS shows its role picker when there are
several), ``RoleSessionName``, ``SessionDuration``, and, as the settings say, ``SourceIdentity`` and
``PrincipalTag:<Key>`` session tags. AWS refuses the whole sign-in over one bad character or length, so values
are made to fit here rather than passed through.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta

from idp.access.claims import ROLES, SOURCES, ReleasedAttribute
from idp.access.decide import AWS_MIN_SESSION_SECONDS, RoleGrant
from idp.authn.principal import Principal
from idp.runtime import settings

_ATTRIBUTES = "https://aws.amazon.com/SAML/Attributes/"
ROLE = _ATTRIBUTES + "Role"
ROLE_SESSION_NAME = _ATTRIBUTES + "RoleSessionName"
SESSION_DURATION = _ATTRIBUTES + "SessionDuration"
SOURCE_IDENTITY = _ATTRIBUTES + "SourceIdentity"
PRINCIPAL_TAG = _ATTRIBUTES + "PrincipalTag:"
NAME_FORMAT_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"

# AWS takes no role session longer than 12 hours.
AWS_MAX_SESSION_SECONDS = 43200

# RoleSessionName and SourceIdentity: [\w+=,.@-] in ASCII, 2 to 64 characters.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_+=,.@-]")
# Session tag values: letters, digits, spaces and _.:/=+-@, at most 256 characters.
_NOT_IN_TAG = re.compile(r"[^\w .:/=+@-]")
_TAG_VALUE_MAX = 256
# Hex digits of the digest that keeps rewritten session names apart (48 bits).
_DIGEST_CHARS = 12
# How a rewritten name ends: a valid name that already ends so is rewritten too, or a user named like another
# user's rewritten name would act as them.
_DIGESTED = re.compile(rf"\.[0-9a-f]{{{_DIGEST_CHARS}}}\Z")


def session_name(value: str) -> str:
    """``value`` as AWS accepts a RoleSessionName or SourceIdentity (``[A-Za-z0-9_+=,.@-]``, 2 to 64): kept when
    it fits. Otherwise accents are dropped (é → e), any other character becomes ``-``, and a digest of the value
    follows, so that two users never share one (``CORP\\alice`` and ``CORP-alice``; two long emails alike in
    their first 64 characters; a name that ends as a rewritten one does, which is rewritten too): AWS keeps
    SourceIdentity for the whole session, in CloudTrail and in policies."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
    name = _NOT_IN_NAME.sub("-", plain)
    if name == value and 2 <= len(name) <= 64 and not _DIGESTED.search(name):
        return name
    return f"{name[:64 - 1 - _DIGEST_CHARS]}.{hashlib.sha256(value.encode()).hexdigest()[:_DIGEST_CHARS]}"


def _tag_value(value: str) -> str:
    return _NOT_IN_TAG.sub("_", value)[:_TAG_VALUE_MAX]


def _seconds(role: RoleGrant, now: datetime) -> int:
    """The role's session length, never past its assignment's end, within what AWS accepts."""
    seconds = role.session_seconds
    if role.until is not None:
        seconds = min(seconds, int((role.until - now) / timedelta(seconds=1)))
    return max(AWS_MIN_SESSION_SECONDS, min(seconds, AWS_MAX_SESSION_SECONDS))


def _uri(attribute: str, name: str, *values: str) -> ReleasedAttribute:
    return ReleasedAttribute(attribute=attribute, name=name, values=values, name_format=NAME_FORMAT_URI)


def role_attributes(principal: Principal, roles: Sequence[RoleGrant], now: datetime) -> list[ReleasedAttribute]:
    """The AWS attributes for the roles granted in one account at ``now``; the session lasts as long as the
    shortest of them allows, since AWS applies one SessionDuration to whichever role the user picks."""
    if not roles:
        raise ValueError("an AWS sign-in needs at least one role")
    cfg = settings()
    name_source = "email" if cfg.aws_role_session_name == "email" and principal.email else "username"
    out = [
        _uri(ROLES, ROLE, *dict.fromkeys(f"{r.role_arn},{r.provider_arn}" for r in roles)),
        _uri(name_source, ROLE_SESSION_NAME, session_name(SOURCES[name_source](principal)[0])),
        _uri("session_duration", SESSION_DURATION, str(min(_seconds(r, now) for r in roles))),
    ]
    if cfg.aws_source_identity != "none":
        identity = SOURCES[cfg.aws_source_identity](principal)
        if identity:
            out.append(_uri(cfg.aws_source_identity, SOURCE_IDENTITY, session_name(identity[0])))
    for key, attribute in cfg.aws_tags:
        values = SOURCES[attribute](principal)
        if values and _tag_value(values[0]):
            out.append(_uri(attribute, PRINCIPAL_TAG + key, _tag_value(values[0])))
    return out
