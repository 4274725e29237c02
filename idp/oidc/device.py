"""The device authorization grant (RFC 8628): the device authorization endpoint, the polling grant, and the
user's decision on a user code.

authlib runs the protocol (client authentication, parameters, error shapes); this module keeps device
codes in :mod:`idp.state.device_codes` (digests only, shared by every process and instance), paces the
polling (``slow_down`` adds 5 s to the interval for good), issues tokens once per device code,
and asks :func:`idp.oidc.server.decide` when the code is issued, approved and exchanged. The ``/device``
page that shows and takes user codes is :mod:`idp.oidc.device_page`.
"""

from __future__ import annotations

import contextlib
import logging
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

from idp import clock
from idp.access.decide import AccessDenied
from idp.authn.principal import Principal
from idp.authn.revalidation import principal_now
from idp.errors import first_line
from idp.extensions import db
from idp.oidc import clients, consent
from idp.oidc.server import SECRET_AUTH, EndUser, active_user, audit_event, decide, decide_token
from idp.runtime import keyed_digest, settings
from idp.state import device_codes
from idp.state.device_codes import DeviceCode
from idp.store.oidc import Client, digest

log = logging.getLogger(__name__)

LIFETIME = timedelta(minutes=10)
# How long after an approval a missing consent is taken for one still being committed, not withdrawn.
CONSENT_SETTLING = timedelta(seconds=10)
INTERVAL = 5  # seconds between polls; RFC 8628 3.5 adds 5 at every slow_down
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


def user_code_digest(code: str) -> str:
    """How a normalized user code is stored and looked up: keyed with the server's secret. Eight letters of
    twenty are some 2^35 codes, which a plain SHA-256 of each would give back from a copy of the database or
    Redis within a code's lifetime; without the key, the stored value says nothing."""
    return keyed_digest(f"oidc-device-user-code {code}")


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

    def authenticate_client(self, request: OAuth2Request) -> Client:
        client: Client = super().authenticate_client(request)
        decide(None, client, DEVICE_CODE_GRANT_TYPE)  # unauthorized_client unless registered for it
        return client

    def get_verification_uri(self) -> str:
        return verification_uri()

    def generate_user_code(self) -> str:
        # A code that is still stored (live, or recently expired) is not handed out again; device_codes.issue
        # settles the race between two processes picking the same one.
        for _ in range(5):
            code = generate_token(8, USER_CODE_ALPHABET)
            if not device_codes.user_code_taken(user_code_digest(code)):
                return display_user_code(code)
        raise RuntimeError("could not find a free user code")  # 5 collisions in 2.6e10: the store is broken

    def save_device_credential(self, client_id: str, scope: str | None, data: dict[str, Any]) -> None:
        client = clients.get(client_id)
        assert client is not None  # authenticated a moment ago
        t = clock.now()
        code = normalize_user_code(data["user_code"])
        assert code is not None
        granted = client.get_allowed_scope(scope)
        issued = device_codes.issue(DeviceCode(
            device_code_hash=digest(data["device_code"]), user_code_hash=user_code_digest(code), client_id=client_id,
            scope=granted, expires_at=t + LIFETIME, poll_interval=INTERVAL))
        if not issued:  # the same user code picked by another process at the same moment
            raise TemporarilyUnavailable("Please retry the device authorization request.")
        audit_event("oidc.device.authorize", client_id, details={"scope": granted})


class TemporarilyUnavailable(OAuth2Error):  # type: ignore[misc]
    error = "temporarily_unavailable"
    status_code = 503


# --- polling ------------------------------------------------------------------------------------------------

class DeviceCodeGrant(_DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_AUTH, "none"]

    def authenticate_token_endpoint_client(self) -> Client:
        # authlib sets request.client only after validate_device_credential, which needs it for decide().
        client: Client = super().authenticate_token_endpoint_client()
        self.request.client = client
        return client

    def query_device_credential(self, device_code: str) -> DeviceCode:
        found = device_codes.find(digest(device_code)) if len(device_code) <= 256 else None
        if found is None or found.client_id != self.request.client.client_id:
            raise InvalidGrantError("The device_code is not valid.")
        return found

    def validate_device_credential(self, credential: DeviceCode) -> EndUser:
        t = clock.now()
        if credential.used_at is not None:
            raise InvalidGrantError("The device_code has already been used.")
        if credential.expires_at <= t:
            raise ExpiredTokenError("The device_code has expired; start again.")
        if credential.status == device_codes.DENIED:
            raise AccessDeniedError("The user denied the request.")
        if credential.status == device_codes.APPROVED:
            return self._exchange(credential)
        raise self._pace(credential, t)

    def _exchange(self, credential: DeviceCode) -> EndUser:
        user = active_user(credential.user_id)
        if user is None or credential.auth_time is None:
            raise InvalidGrantError("The user who approved this device is no longer active.")
        principal = principal_now(user, credential.auth_time)
        if principal is None:
            raise InvalidGrantError("The user who approved this device is no longer active.")
        decide_token(principal, self.request.client, self.GRANT_TYPE)
        if consent.needed(principal, self.request.client, credential.scope):  # withdrawn since the approval
            if credential.decided_at is not None and clock.now() - credential.decided_at < CONSENT_SETTLING:
                # In Redis the approval is seen at once, its consent once the approving request commits: a poll
                # between the two waits for it rather than hear a final access_denied.
                raise AuthorizationPendingError("The approval is being recorded.")
            raise AccessDeniedError("The user has withdrawn their consent to this client.")
        if not device_codes.use(credential.device_code_hash, clock.now()):
            raise InvalidGrantError("The device_code has already been used.")
        # Not tied to the browser's SSO session: the device is another device, and signing out of the
        # browser does not sign the television out.
        return EndUser(principal, None)

    def _pace(self, credential: DeviceCode, t: datetime) -> OAuth2Error:
        """authorization_pending, or slow_down (and 5 s more interval) when polled before the interval is up."""
        if device_codes.pace(credential, t, INTERVAL):
            return SlowDownError("Polling too fast; wait 5 seconds longer between requests from now on.")
        return AuthorizationPendingError("The user has not answered yet.")


# --- the user's decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingDevice:
    """A live, undecided device request as the ``/device`` page shows it."""

    user_code: str  # normalized
    device_code_hash: str
    client: Client
    scope: str


def find_pending(code: str) -> PendingDevice | None:
    """The undecided, unexpired request for a normalized user code, or None."""
    found = device_codes.find_by_user_code(user_code_digest(code))
    if found is None or found.status != device_codes.PENDING or found.expires_at <= clock.now():
        return None
    client = clients.get(found.client_id)
    if client is None:
        return None
    return PendingDevice(code, found.device_code_hash, client, found.scope)


def earlier_decision(code: str, user_id: int) -> bool | None:
    """Whether this user already approved (True) or denied (False) the request of a normalized user code; None
    when they did not decide it."""
    found = device_codes.find_by_user_code(user_code_digest(code))
    if found is None or found.user_id != user_id or found.status == device_codes.PENDING:
        return None
    return found.status == device_codes.APPROVED


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
    if not device_codes.decide(pending.device_code_hash, approved, principal.user_id, principal.authn_at, t):
        db.session.rollback()
        return None
    try:
        if approved and not pending.client.first_party:
            # Listed among the user's allowed apps, where revoking it also ends the device's tokens.
            consent.remember(principal, pending.client, pending.scope, commit=False)
        audit_event("oidc.device.approve" if approved else "oidc.device.deny", pending.client.client_id,
                    outcome="success" if approved else "failure", username=principal.username, reason=reason,
                    details={"scope": pending.scope})
    except Exception:
        # In Redis the decision took effect at once: an approval left without the consent the device's exchange
        # asks for would be refused there (access_denied). Taken back, the user's retry decides again.
        with contextlib.suppress(Exception):
            db.session.rollback()
        try:
            device_codes.undecide(pending.device_code_hash, approved, principal.user_id, t)
        except Exception as exc:
            log.warning("a device decision whose consent was not stored stands: %s", first_line(exc))
        raise
    if denied is not None:
        raise denied
    return approved
