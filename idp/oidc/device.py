"""The device authorization grant (RFC 8628): the device authorization endpoint, the polling grant, and the
user's decision on a user code.

authlib runs the protocol (client authentication, parameters, error shapes); this module stores device
codes as rows (digests only, see :class:`idp.store.OidcDeviceCode`), so that any process can answer a poll,
paces the polling (``slow_down`` adds 5 s to the interval for good), issues tokens once per device code,
and asks :func:`idp.oidc.server.decide` when the code is issued, approved and exchanged. The ``/device``
page that shows and takes user codes is :mod:`idp.oidc.device_page`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidGrantError
from authlib.oauth2.rfc8628 import (
    DEVICE_CODE_GRANT_TYPE,
    AuthorizationPendingError,
    DeviceAuthorizationEndpoint,
    ExpiredTokenError,
    SlowDownError,
)
from authlib.oauth2.rfc8628 import DeviceCodeGrant as _DeviceCodeGrant
from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError

from idp import clock
from idp.access.decide import AccessDenied
from idp.authn.principal import Principal
from idp.authn.revalidation import revalidated_principal
from idp.extensions import db
from idp.oidc import clients, consent
from idp.oidc.server import SECRET_AUTH, EndUser, active_user, audit_event, decide, decide_token
from idp.runtime import settings
from idp.store import OidcClient, OidcDeviceCode
from idp.store.oidc import DEVICE_APPROVED, DEVICE_DENIED, DEVICE_PENDING, digest

LIFETIME = timedelta(minutes=10)
INTERVAL = 5  # seconds between polls; RFC 8628 3.5 adds 5 at every slow_down
# Rows stay this long after expiry, so that a late poll still hears expired_token, not invalid_grant.
KEEP_EXPIRED = timedelta(hours=1)
# RFC 8628 6.1: consonants only (no vowels, so no words; no look-alikes such as 0/O, 1/I), 8 of them:
# 20^8 = 2.6e10 codes, plenty against a throttled guesser within a ten-minute lifetime.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_NOT_IN_ALPHABET = re.compile(f"[^{USER_CODE_ALPHABET}]")


def normalize_user_code(value: str) -> str | None:
    """What the user typed, as stored: case, dashes and spaces do not matter. None if it cannot be a code."""
    code = re.sub(r"[\s-]", "", value[:64]).upper()
    if len(code) != 8 or _NOT_IN_ALPHABET.search(code):
        return None
    return code


def display_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def verification_uri() -> str:
    return settings().base + "/device"


# --- issuing device codes -------------------------------------------------------------------------------

class DeviceAuthorization(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    """``POST /oauth/device``: a device code and a user code for a client allowed the device grant."""

    CLIENT_AUTH_METHODS = [*SECRET_AUTH, "none"]
    EXPIRES_IN = int(LIFETIME.total_seconds())
    INTERVAL = INTERVAL

    def authenticate_client(self, request: OAuth2Request) -> OidcClient:
        client: OidcClient = super().authenticate_client(request)
        decide(None, client, DEVICE_CODE_GRANT_TYPE)  # unauthorized_client unless registered for it
        return client

    def get_verification_uri(self) -> str:
        return verification_uri()

    def generate_user_code(self) -> str:
        # A code that is still stored (live, or recently expired) is not handed out again; the unique
        # constraint settles the race between two processes picking the same one.
        for _ in range(5):
            code = generate_token(8, USER_CODE_ALPHABET)
            if not db.session.scalar(select(exists().where(OidcDeviceCode.user_code_hash == digest(code)))):
                return display_user_code(code)
        raise RuntimeError("could not find a free user code")  # 5 collisions in 2.6e10: the store is broken

    def save_device_credential(self, client_id: str, scope: str | None, data: dict[str, Any]) -> None:
        client = clients.get(client_id)
        assert client is not None  # authenticated a moment ago
        t = clock.now()
        code = normalize_user_code(data["user_code"])
        assert code is not None
        granted = client.get_allowed_scope(scope)
        db.session.execute(delete(OidcDeviceCode).where(OidcDeviceCode.expires_at < t - KEEP_EXPIRED))
        db.session.add(OidcDeviceCode(
            device_code_hash=digest(data["device_code"]), user_code_hash=digest(code), client_id=client_id,
            scope=granted, status=DEVICE_PENDING, poll_interval=INTERVAL, created_at=t, expires_at=t + LIFETIME,
        ))
        audit_event("oidc.device.authorize", client_id, commit=False, details={"scope": granted})
        try:
            db.session.commit()
        except IntegrityError:  # the same user code picked by another process at the same moment
            db.session.rollback()
            raise TemporarilyUnavailable("Please retry the device authorization request.") from None


class TemporarilyUnavailable(OAuth2Error):  # type: ignore[misc]
    error = "temporarily_unavailable"
    status_code = 503


# --- polling ------------------------------------------------------------------------------------------------

class DeviceCodeGrant(_DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_AUTH, "none"]

    def authenticate_token_endpoint_client(self) -> OidcClient:
        # authlib sets request.client only after validate_device_credential, which needs it for decide().
        client: OidcClient = super().authenticate_token_endpoint_client()
        self.request.client = client
        return client

    def query_device_credential(self, device_code: str) -> OidcDeviceCode:
        row = db.session.get(OidcDeviceCode, digest(device_code)) if len(device_code) <= 256 else None
        if row is None:
            raise InvalidGrantError("The device_code is not valid.")
        return row

    def validate_device_credential(self, credential: OidcDeviceCode) -> EndUser:
        t = clock.now()
        if credential.used_at is not None:
            raise InvalidGrantError("The device_code has already been used.")
        if credential.expires_at <= t:
            raise ExpiredTokenError("The device_code has expired; start again.")
        if credential.status == DEVICE_DENIED:
            raise AccessDeniedError("The user denied the request.")
        if credential.status == DEVICE_APPROVED:
            return self._exchange(credential)
        raise self._pace(credential, t)

    def _exchange(self, credential: OidcDeviceCode) -> EndUser:
        user = active_user(credential.user_id)
        if user is None or credential.auth_time is None:
            raise InvalidGrantError("The user who approved this device is no longer active.")
        principal = revalidated_principal(user, credential.auth_time)
        if principal is None:
            raise InvalidGrantError("The user who approved this device is no longer active.")
        decide_token(principal, self.request.client, self.GRANT_TYPE)
        # One use: committed with the tokens by the token view (or rolled back with a failure).
        result = db.session.execute(
            update(OidcDeviceCode)
            .where(OidcDeviceCode.device_code_hash == credential.device_code_hash, OidcDeviceCode.used_at.is_(None))
            .values(used_at=clock.now()))
        if getattr(result, "rowcount", 0) != 1:
            raise InvalidGrantError("The device_code has already been used.")
        # Not tied to the browser's SSO session: the device is another device, and signing out of the
        # browser does not sign the television out.
        return EndUser(principal, None)

    def _pace(self, credential: OidcDeviceCode, t: datetime) -> OAuth2Error:
        """authorization_pending, or slow_down (and 5 s more interval) when polled before the interval is up.

        The check is a compare-and-set on ``last_polled_at``, so two processes answering two quick polls
        cannot both let them through. Committed now: the token view rolls back on every error answer.
        """
        last = credential.last_polled_at
        too_soon = last is not None and t < last + timedelta(seconds=credential.poll_interval)
        key = OidcDeviceCode.device_code_hash == credential.device_code_hash
        same_poll = OidcDeviceCode.last_polled_at.is_(None) if last is None else OidcDeviceCode.last_polled_at == last
        values: dict[str, Any] = {"last_polled_at": t}
        if too_soon:
            values["poll_interval"] = OidcDeviceCode.poll_interval + INTERVAL
        result = db.session.execute(update(OidcDeviceCode).where(key, same_poll).values(**values))
        if getattr(result, "rowcount", 0) != 1:  # another poll got in between: too fast as well
            too_soon = True
            db.session.execute(update(OidcDeviceCode).where(key).values(
                last_polled_at=t, poll_interval=OidcDeviceCode.poll_interval + INTERVAL))
        db.session.commit()
        if too_soon:
            return SlowDownError("Polling too fast; wait 5 seconds longer between requests from now on.")
        return AuthorizationPendingError("The user has not answered yet.")


# --- the user's decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingDevice:
    """A live, undecided device request as the ``/device`` page shows it."""

    user_code: str  # normalized
    client: OidcClient
    scope: str


def find_pending(code: str) -> PendingDevice | None:
    """The undecided, unexpired request for a normalized user code, or None."""
    row = db.session.scalar(select(OidcDeviceCode).where(OidcDeviceCode.user_code_hash == digest(code)))
    if row is None or row.status != DEVICE_PENDING or row.expires_at <= clock.now():
        return None
    client = clients.get(row.client_id)
    if client is None:
        return None
    return PendingDevice(code, client, row.scope)


def decide_device(pending: PendingDevice, principal: Principal, approve: bool) -> bool | None:
    """Record the user's answer once: whether the device is approved, or None if the request was decided or
    expired meanwhile. Approval asks decide() first; a refusal there is recorded as a denial. Audited and
    committed. A user who has not been given the client is then told so: AccessDenied (a 403 page)."""
    approved = approve
    reason = None
    denied: AccessDenied | None = None
    if approve:
        try:
            decide(principal, pending.client, DEVICE_CODE_GRANT_TYPE)
        except OAuth2Error as exc:  # not allowed: the device hears access_denied
            approved, reason = False, exc.description or exc.error
        except AccessDenied as exc:
            approved, reason, denied = False, exc.reason, exc
    t = clock.now()
    result = db.session.execute(
        update(OidcDeviceCode)
        .where(OidcDeviceCode.user_code_hash == digest(pending.user_code),
               OidcDeviceCode.status == DEVICE_PENDING, OidcDeviceCode.expires_at > t)
        .values(status=DEVICE_APPROVED if approved else DEVICE_DENIED, user_id=principal.user_id,
                auth_time=principal.authn_at, decided_at=t))
    if getattr(result, "rowcount", 0) != 1:
        db.session.rollback()
        return None
    if approved and not pending.client.first_party:
        # Listed among the user's allowed apps, where revoking it also ends the device's tokens.
        consent.remember(principal, pending.client, pending.scope, commit=False)
    audit_event("oidc.device.approve" if approved else "oidc.device.deny", pending.client.client_id,
           outcome="success" if approved else "failure", username=principal.username, reason=reason,
           details={"scope": pending.scope})
    if denied is not None:
        raise denied
    return approved
