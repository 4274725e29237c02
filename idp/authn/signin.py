"""Password sign-in as one decision: throttle check, the connector chain, counters and audit events.

The login view only renders what this returns, so the same decision (and the same audit trail) would
serve any other front end. A success commits its throttle writes (and a directory user's shadow row); its
login event is left uncommitted for :func:`idp.authn.session.start_session`, to commit with the session.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

from idp import audit
from idp.audit import AuditEvent
from idp.authn import directory, throttle
from idp.authn.connectors import chain
from idp.authn.connectors.base import Verdict
from idp.authn.connectors.local import LOCAL
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


def _locked_out(name: str, client_ip: str | None, source: str | None = None) -> SignInResult:
    audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                            reason="locked out", details={"source": source} if source else {}))
    return SignInResult(Status.LOCKED)


def _refused_by(name: str, outcome: Verdict) -> str:
    """The identity source that refused: "none" when no source knows the name. A directory's verdict names its
    user as "<directory>:<stable id>"; only the built-in directory knows users without saying so, and then the
    name is one of its users'."""
    if not outcome.known:
        return "none"
    if outcome.subject:
        return outcome.subject.partition(":")[0]
    user = directory.get_user(name)
    # (A directory entry the connector could not use, ambiguous or without an id, has no subject either.)
    return LOCAL if user is not None and user.source == LOCAL else "unknown"


def sign_in(username: str, password: str, client_ip: str | None) -> SignInResult:
    name = normalize_username(username)[:255]
    items = chain.configured()
    # Counted under the folded name without a routed domain: full-width ALICE, CORP\alice and alice@corp.example are
    # one counter. The user a connector finds has a counter of its own too (throttle.subject_key).
    counted = chain.routed_name(throttle.fold(name), items)
    # Refused before the password is looked at: a lockout must not become a password oracle. The reservations
    # hold this try against the address and the name, where tries sent at the same time may have taken the limit.
    if throttle.is_locked(counted, client_ip) or (address := throttle.reserve_address(client_ip)) is None:
        return _locked_out(name, client_ip)
    if (reservation := throttle.reserve(counted)) is None:
        throttle.release(address)
        return _locked_out(name, client_ip)
    db.session.commit()  # the try held, for every other try to see, before this one's password is checked
    reserved = [address, reservation]

    def admit(subject: str) -> bool:
        # The user a connector found, held (and committed) before their password goes to the directory.
        if (for_subject := throttle.reserve_subject(subject)) is None:
            return False
        db.session.commit()
        reserved.append(for_subject)
        return True

    try:
        outcome = chain.check(name, password, items=items, admit=admit)
    except DirectoryUnavailable as exc:
        throttle.settling(reserved, functools.partial(_unjudged, name, client_ip, exc, reserved))
        return SignInResult(Status.UNAVAILABLE)
    except Exception:
        # Not judged either (the database failing under the check, say): the request fails, the tries are given
        # back, or users retrying through an outage would find themselves locked out after it.
        throttle.give_back(reserved)
        raise
    if outcome.locked:
        # The connector found a locked-out user under another spelling and stopped before the password.
        source = _refused_by(name, outcome)
        return throttle.settling(reserved, functools.partial(_locked_user, name, client_ip, source, reserved))
    if outcome.principal is None:
        started = throttle.settling(reserved, functools.partial(_failed, name, client_ip, outcome, reserved))
        return SignInResult(Status.LOCKED if started else Status.FAILED, message=outcome.message)
    # Committed now (with a directory user's shadow row), apart from the session the caller starts: a success's
    # tries are settled even when storing that session fails.
    throttle.settling(reserved, functools.partial(_succeeded, counted, outcome.subject, reserved))
    # Not committed here: the session the caller starts commits it (a sign-in is recorded together with the
    # session it opened).
    audit.record(AuditEvent(type="login", username=outcome.principal.username, client_ip=client_ip,
                            details={"source": outcome.principal.source}), commit=False)
    return SignInResult(Status.OK, outcome.principal)


def _unjudged(name: str, client_ip: str | None, exc: DirectoryUnavailable,
              reserved: list[throttle.Reservation]) -> None:
    """Record a try no directory could judge: its tries are given back."""
    throttle.release(*reserved)
    audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                            reason=exc.reason, details={"source": exc.source} if exc.source else {}))


def _locked_user(name: str, client_ip: str | None, source: str, reserved: list[throttle.Reservation]
                 ) -> SignInResult:
    """Record a try refused for a user locked out under another spelling: its tries are given back."""
    throttle.release(*reserved)
    return _locked_out(name, client_ip, source)


def _succeeded(counted: str, subject: str | None, reserved: list[throttle.Reservation]) -> None:
    """Settle a right password's tries: the name's and the user's counters cleared, the address's try given
    back; committed."""
    throttle.succeeded(counted, subject, *reserved)
    db.session.commit()


def _failed(name: str, client_ip: str | None, outcome: Verdict, reserved: list[throttle.Reservation]) -> list[str]:
    """Record a refused password: its tries count as failures; the keys whose lockout it starts."""
    started = throttle.register_failure(*reserved)
    # The source is as visible as the reason beside it ("unknown user" already says the name is nobody's).
    audit.record(AuditEvent(type="login", outcome="failure", username=name, client_ip=client_ip,
                            reason=outcome.reason, details={"source": _refused_by(name, outcome)}), commit=False)
    for key in started:
        audit.record(AuditEvent(type="login.lockout", outcome="failure", username=name, client_ip=client_ip,
                                reason=f"too many failed sign-ins for {key}"), commit=False)
    db.session.commit()
    return started
