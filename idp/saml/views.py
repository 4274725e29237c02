"""SAML endpoints: metadata, SSO (SP- and IdP-initiated) and the return from the login page.

Views only move messages between HTTP and :mod:`idp.saml.sso`: they pick the binding, ask the session who
is signed in, and choose between answering at once, sending the browser to the login page, or posting a
SAML error status to a trusted ACS. A user who has not been given the app gets a 403 page (AccessDenied
from :func:`idp.saml.sso.issue`), not a Response at the SP.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Flask, Response, redirect, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from idp.authn.session import cookie_name, current_session, login_url, set_logout_propagation
from idp.authn.views import answer_after_sign_in
from idp.errors import BadRequest
from idp.extensions import csrf
from idp.prefetch import inert_on_head
from idp.runtime import settings
from idp.saml import providers, slo, sso
from idp.saml.bindings import MAX_RELAY_STATE, Inbound, decode_post, decode_redirect, post_form
from idp.saml.metadata import idp_metadata_xml

bp = Blueprint("saml", __name__, url_prefix="/saml")


@bp.record_once
def _hook_into_sign_in(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    set_logout_propagation(app, slo.start_idp_logout)
    answer_after_sign_in(app, "saml.resume", resume)


@bp.get("/metadata")
def metadata() -> Response:
    return Response(idp_metadata_xml(), mimetype="application/samlmetadata+xml")


def _post(out: sso.Outbound) -> Response:
    return post_form(out.acs_url, "SAMLResponse", out.xml, out.relay_state)


def _inbound() -> Inbound:
    limit = settings().saml_max_message_bytes
    if request.method == "POST":
        message = request.form.get("SAMLRequest")
        if not message:
            raise BadRequest("No SAML request was received.", "no SAMLRequest")
        return decode_post(message, request.form.get("RelayState"), limit)
    message = request.args.get("SAMLRequest")
    if not message:
        raise BadRequest("No SAML request was received.", "no SAMLRequest")
    return decode_redirect(message, request.args.get("RelayState"), request.query_string, limit)


def _no_passive(req: sso.SsoRequest) -> sso.SamlStatusError:
    return sso.SamlStatusError(req, "urn:oasis:names:tc:SAML:2.0:status:NoPassive",
                               "passive request without a usable session")


def answer(req: sso.SsoRequest) -> BaseResponse:
    """Answer at once when the session allows it; otherwise park the request and go to the login page.
    Also the portal's AWS console link answers with it (:func:`idp.saml.sso.aws_launch`)."""
    ip = request.remote_addr
    sp = providers.get(req.sp_entity_id)  # read once per request: receive() did
    session = current_session(sp.id if sp is not None else None)
    sso.claim(req, ip)
    try:
        if req.is_passive:
            # The SP forbids us to interact with the user: no usable session means NoPassive, never a login page.
            if session is None or req.force_authn:
                raise _no_passive(req)
            return _post(sso.issue(req, session, ip))
        if session is not None and not req.force_authn:
            return _post(sso.issue(req, session, ip))
    except sso.SamlStatusError as err:
        return _post(sso.error_response(err, ip))
    pending_id = sso.park(req)
    return redirect(login_url(url_for("saml.resume", pending_id=pending_id), force=req.force_authn))


@bp.route("/sso", methods=["GET", "POST"])
@inert_on_head  # answering HEAD would use up the request's single-use ID
def single_sign_on() -> BaseResponse:
    ip = request.remote_addr
    try:
        try:
            inbound = _inbound()
        except BadRequest as exc:
            sso.audit_refusal(exc.reason, sp=None, client_ip=ip)
            raise
        req = sso.receive(inbound, ip)
    except sso.SamlStatusError as err:
        sso.claim(err.request, ip)  # answered: used up, as an answer to it would be
        return _post(sso.error_response(err, ip))
    if request.method == "POST" and cookie_name() not in request.cookies:
        # A cross-site POST carries no SameSite=Lax cookie, but the same-site GET it is redirected to does:
        # decide there, or a signed-in user would be asked again (or refused NoPassive).
        sso.claim(req, ip)
        return redirect(url_for("saml.resume", pending_id=sso.park(req)), 303)
    return answer(req)


# The SP's auto-posted form cannot carry our CSRF token; the request is checked on its own terms.
csrf.exempt(f"{__name__}.single_sign_on")


@bp.get("/init")
@inert_on_head  # no sign-in is sent for a link checker
def idp_initiated() -> BaseResponse:
    entity_id = request.args.get("sp", "")
    relay_state = request.args.get("RelayState") or None
    if relay_state is not None and len(relay_state) > MAX_RELAY_STATE:
        sso.audit_refusal("relay state too long", sp=entity_id[:1024], client_ip=request.remote_addr)
        raise BadRequest("The RelayState is too long.", "relay state too long")
    return answer(sso.idp_initiated(entity_id, relay_state, request.remote_addr))


@bp.get("/continue/<pending_id>")
@inert_on_head  # the parked request is answered once
def resume(pending_id: str) -> BaseResponse:
    """Back from the login page: answer the parked request once the session satisfies it."""
    ip = request.remote_addr
    req = sso.pending(pending_id, ip)
    session = current_session()
    # With ForceAuthn the password must have been typed after the request came in, not before.
    if session is None or (req.force_authn and session.authn_at < req.received_at):
        if req.is_passive:
            sso.consume(pending_id, ip)
            return _post(sso.error_response(_no_passive(req), ip))
        return redirect(login_url(url_for("saml.resume", pending_id=pending_id), force=req.force_authn))
    sso.consume(pending_id, ip)
    try:
        return _post(sso.issue(req, session, ip))
    except sso.SamlStatusError as err:
        return _post(sso.error_response(err, ip))


@bp.route("/slo", methods=["GET", "POST"])
def single_logout() -> BaseResponse:
    """LogoutRequests from SPs start a logout chain; LogoutResponses from SPs continue it."""
    return slo.handle()


@bp.post("/slo/confirm/<pending_id>")
def confirm_logout(pending_id: str) -> BaseResponse:
    """The user's answer to an unsigned LogoutRequest (CSRF-checked: our own form)."""
    return slo.confirm(pending_id)


# SPs post LogoutRequests and LogoutResponses from their own forms, without our CSRF token; each message is
# checked on its own terms (signature, issuer, single-use ID, or the server-side chain state it must match).
csrf.exempt(f"{__name__}.single_logout")
