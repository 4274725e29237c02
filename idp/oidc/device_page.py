"""The ``/device`` page (RFC 8628 3.3): a signed-in user enters the code a device shows, checks which
application asks for what, and allows or denies it.

Signing in first is the shared login page (then back here, code kept). User codes are short, so failed
entries are throttled per user and per client address with the login throttle's counters (shared by every
process and instance); a successful entry does not reset them. Even with the code already in the link
(``verification_uri_complete``), the user confirms: a link can be sent by someone else (RFC 8628 5.4).
"""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from idp.authn import throttle
from idp.authn.principal import Principal
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import BadRequest
from idp.extensions import db
from idp.oidc import consent, device
from idp.oidc.server import audit_event

MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
NOT_FOUND = "That code is not valid, has expired, or was already used. Check the code on your device."
LOCKED = "Too many wrong codes. Try again later."


def _page(stage: str, status: int = 200, **context: object) -> BaseResponse:
    return BaseResponse(render_template("oidc_device.html", stage=stage, **context), status=status,
                        mimetype="text/html")


def _throttle_keys(principal: Principal) -> list[tuple[str, int]]:
    return [(f"device-user:{principal.user_id}", MAX_FAILURES_PER_USER),
            (f"device-ip:{throttle.counted_address(request.remote_addr)}", MAX_FAILURES_PER_ADDRESS)]


def _wrong_code(principal: Principal, held: list[throttle.Reservation]) -> list[str]:
    started = throttle.register_failure(*held)
    audit_event("oidc.device.code", None, outcome="failure", username=principal.username,
                reason="unknown or expired user code", details={"lockout_started": started}, commit=False)
    db.session.commit()
    return started


def _given_back(held: list[throttle.Reservation]) -> None:
    throttle.release(*held)  # a code found is no wrong code
    db.session.commit()


def show() -> BaseResponse:
    """GET: the code form, prefilled from ``?user_code=`` (verification_uri_complete)."""
    typed = request.args.get("user_code", "")[:20]
    sso = current_session()
    if sso is None:
        return redirect(login_url(url_for("oidc.device", user_code=typed) if typed else url_for("oidc.device")))
    return _page("enter", user_code=typed)


def submit() -> BaseResponse:
    """POST (CSRF-checked by Flask-WTF): look the code up; with a ``decision``, record it."""
    sso = current_session()
    if sso is None:
        return redirect(login_url(url_for("oidc.device")))
    principal = principal_for(sso)
    typed = request.form.get("user_code", "")[:64]
    # One try held against each key before the code is looked up, as a sign-in holds its tries: wrong codes sent
    # at once see each other.
    held = throttle.reserve_keys(_throttle_keys(principal))
    if held is None:
        audit_event("oidc.device.code", None, outcome="failure", username=principal.username,
                    reason="locked out after too many wrong user codes")
        return _page("enter", 429, error=LOCKED, user_code=typed)
    db.session.commit()  # the try held, for entries sent at once to see, before the code is looked up
    code = device.normalize_user_code(typed)
    decision = request.form.get("decision")
    try:
        pending = device.find_pending(code) if code else None
        # The answer sent again (a double click, Back and resend): it stands, and it is no wrong code.
        earlier = (device.earlier_decision(code, principal.user_id)
                   if pending is None and code and decision is not None else None)
    except Exception:  # no answer about the code: the try is no wrong code either
        throttle.give_back(held)
        raise
    if pending is None and earlier is None:
        started = throttle.settling(held, lambda: _wrong_code(principal, held))
        return _page("enter", error=LOCKED if started else NOT_FOUND, user_code=typed,
                     status=429 if started else 200)
    throttle.settling(held, lambda: _given_back(held))
    if pending is None:
        return _page("done", approved=earlier)
    if decision is None:
        return _page("confirm", user_code=device.display_user_code(pending.user_code),
                     client_name=pending.client.name, scopes=consent.describe(pending.scope), principal=principal)
    if decision not in ("approve", "deny"):
        raise BadRequest("Choose Allow or Deny.", f"unexpected device decision {decision[:32]!r}")
    approved = device.decide_device(pending, principal, approve=decision == "approve")
    if approved is None:  # decided or expired between the two pages
        return _page("enter", error=NOT_FOUND, user_code="")
    return _page("done", approved=approved)
