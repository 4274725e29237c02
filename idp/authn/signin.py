"""Password sign-in as one decision: throttle check, the connector chain, counters and audit events.

The login view only renders what this returns, so the same decision (and the same audit trail) would
serve any other front end.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from idp import audit
from idp.audit import AuditEvent
from idp.authn import throttle
from idp.authn.connectors import chain
from idp.authn.directory import normalize_username
from idp.authn.principal import Principal
from idp.errors import DirectoryUnavailable
from idp.extensions import db


class Status(Enum):
    OK = "ok"
    FAILED = "failed"
    LOCKED = "locked"
    # No identity source accepted the credentials and one could not be asked: not the user's fault, not counted.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class SignInResult:
    status: Status
    principal: Principal | None = None
    # What to tell the user instead of the generic refusal (see connectors.base.Verdict.message).
    message: str | None = None


def sign_in(username: str, password: str, client_ip: str | None) -> SignInResult:
    name = normalize_username(username)[:255]
    if throttle.is_locked(name, client_ip):
        # Refused before the password is looked at: a lockout must not become a password oracle.
        audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                                reason="locked out"))
        return SignInResult(Status.LOCKED)
    try:
        outcome = chain.check(name, password)
    except DirectoryUnavailable as exc:
        audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                                reason=exc.reason))
        return SignInResult(Status.UNAVAILABLE)
    if outcome.principal is None:
        audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                                reason=outcome.reason), commit=False)
        started = throttle.register_failure(name, client_ip)
        for key in started:
            audit.record(AuditEvent(type="login.lockout", outcome="failure", username=name, client_ip=client_ip,
                                    reason=f"too many failed sign-ins for {key}"), commit=False)
        db.session.commit()
        return SignInResult(Status.LOCKED if started else Status.FAILED, message=outcome.message)
    throttle.reset_user(name)
    # Commits the shadow row of a directory user together with the event.
    audit.record(AuditEvent(type="login", username=outcome.principal.username, client_ip=client_ip,
                            details={"source": outcome.principal.source}))
    return SignInResult(Status.OK, outcome.principal)
