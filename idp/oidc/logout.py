"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): end the SSO session, SAML side included.

The post-logout redirect goes only to a URI registered for the client that the ``id_token_hint`` (or
``client_id``) names; anything else is an error page. Without a hint that names the signed-in user, the
user confirms first, so that another site cannot sign people out with a link.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import redirect, render_template, request
from flask_wtf.csrf import validate_csrf
from werkzeug.wrappers import Response as BaseResponse
from wtforms import ValidationError

from idp import audit
from idp.audit import AuditEvent
from idp.authn.session import current_principal, current_session, sign_out
from idp.errors import BadRequest
from idp.oidc import clients, id_token_hint
from idp.store.oidc import Client

# What the confirmation form carries over to its POST.
_PARAMS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")


def _refuse(reason: str, client_id: str | None) -> BadRequest:
    audit.record(AuditEvent(type="oidc.logout", outcome="failure", sp=client_id, client_ip=request.remote_addr,
                            reason=reason))
    return BadRequest("This sign-out request cannot be accepted: " + reason, reason)


def _hint_claims(hint: str) -> dict[str, Any]:
    try:
        return id_token_hint.read(hint)
    except ValueError as exc:
        raise _refuse(str(exc), None) from exc


def end_session() -> BaseResponse:
    params = {k: request.values.get(k, "")[:4096] for k in _PARAMS if request.values.get(k)}
    confirmed_by_form = request.method == "POST" and request.form.get("confirm") == "1"
    if confirmed_by_form:
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise _refuse("the confirmation form has expired", None) from exc

    claims = _hint_claims(params["id_token_hint"]) if "id_token_hint" in params else None
    client_id = params.get("client_id")
    if claims is not None:
        aud = claims["aud"] if isinstance(claims["aud"], str) else (claims["aud"] or [""])[0]
        if client_id and client_id != aud:
            raise _refuse("client_id does not match the id_token_hint", client_id[:64])
        client_id = aud
    client: Client | None = clients.get(client_id) if client_id else None
    redirect_uri = params.get("post_logout_redirect_uri")
    if redirect_uri and (client is None or redirect_uri not in client.post_logout_redirect_uris):
        raise _refuse("post_logout_redirect_uri is not registered for this client",
                      client_id[:64] if client_id else None)

    sso = current_session()
    if sso is not None:
        hinted_user = claims is not None and claims.get("sub") == str(sso.user_id)
        if not (hinted_user or confirmed_by_form):
            return BaseResponse(render_template(
                "oidc_logout.html", params=params, principal=current_principal(),
                client_name=client.name if client else None), mimetype="text/html")
        principal = current_principal()
        audit.record(AuditEvent(type="oidc.logout", username=principal.username if principal else None,
                                sp=client_id, client_ip=request.remote_addr,
                                details={"post_logout_redirect_uri": redirect_uri}), commit=False)
        # Ending the session revokes its tokens (idp.oidc.server.session_ended) and ends the SAML side too:
        # when SPs must be told, the browser goes through their Single Logout first and the chain ends with
        # the post-logout redirect (validated above).
        hop = sign_out(sso, "RP-initiated logout", return_to=_after(redirect_uri, params.get("state")))
        if hop is not None:
            return hop
    after = _after(redirect_uri, params.get("state"))
    if after:
        return redirect(after)
    return BaseResponse(render_template("logout.html", signed_out=True), mimetype="text/html")


def _after(redirect_uri: str | None, state: str | None) -> str | None:
    """The registered post-logout URI with the client's ``state``, or None."""
    if not redirect_uri:
        return None
    query = urlencode({"state": state}) if state else ""
    return redirect_uri + (("&" if "?" in redirect_uri else "?") + query if query else "")
