"""OpenID Connect endpoints: discovery, JWKS, authorize (and its consent answer), token, userinfo,
introspection, revocation, device authorization and the ``/device`` page, and the user's allowed apps.

Views move requests between HTTP and authlib (:mod:`idp.oidc.server`) or :mod:`idp.oidc.authorize`; the
token endpoint commits what a grant stored only when the answer is a success, and audits every refusal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import MissingAuthorizationError, UnsupportedTokenTypeError
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE
from flask import Blueprint, Flask, Response, redirect, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from idp import audit, clock
from idp.audit import AuditEvent
from idp.authn import throttle
from idp.authn.principal import Principal
from idp.authn.revalidation import revalidated_principal
from idp.authn.session import current_principal, login_url, on_session_end, on_user_end
from idp.errors import BadRequest
from idp.extensions import csrf, db
from idp.keys import EC, RSA
from idp.oidc import authorize as authz
from idp.oidc import clients, connected_devices, consent, cors, device_page, logout
from idp.oidc.claims import user_claims
from idp.oidc.server import SECRET_AUTH, AccessTokenValidator, server, session_ended, still_given, user_ended
from idp.prefetch import inert_on_head
from idp.runtime import keystore, settings
from idp.store import User

bp = Blueprint("oidc", __name__)
cors.init(bp)


@bp.record_once
def _end_tokens_with_sessions(state: BlueprintSetupState) -> None:
    on_session_end(cast(Flask, state.app), session_ended)
    on_user_end(cast(Flask, state.app), user_ended)

# Token endpoint answers to a device polling for its user's decision (RFC 8628 3.5).
POLLING = ("authorization_pending", "slow_down")

_protector = ResourceProtector()
_protector.register_token_validator(AccessTokenValidator())


def _json(body: Any, status: int = 200, headers: Any = None, *, cache_seconds: int | None = None) -> Response:
    resp = Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")
    if cache_seconds is not None:
        resp.headers["Cache-Control"] = f"public, max-age={cache_seconds}"
    return resp


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    base = settings().base
    return _json({
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "end_session_endpoint": f"{base}/oauth/logout",
        "scopes_supported": list(clients.SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "authorization_response_iss_parameter_supported": True,
        "device_authorization_endpoint": f"{base}/oauth/device",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  DEVICE_CODE_GRANT_TYPE],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(clients.ID_TOKEN_ALGS),
        "token_endpoint_auth_methods_supported": [*SECRET_AUTH, "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "introspection_endpoint_auth_methods_supported": SECRET_AUTH,
        "revocation_endpoint_auth_methods_supported": [*SECRET_AUTH, "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_supported": sorted({"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp",
                                    *(r["name"] for r in clients.DEFAULT_CLAIM_MAP)}),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }, cache_seconds=300)


@bp.get("/oauth/jwks")
@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Every published key of both rings: the active ones, the next ones, and retired ones whose tokens may
    still be in use. Short cache: a client that meets an unknown kid fetches again."""
    keys = [k.public_jwk() for kind in (RSA, EC) for k in keystore(kind).ring().published]
    return _json({"keys": keys}, cache_seconds=300)


@bp.route("/oauth/authorize", methods=["GET", "POST"])
@inert_on_head  # a signed-in user's code would be issued, and its nonce used up
def authorize() -> BaseResponse:
    if request.method == "POST":
        # OIDC Core 3.1.2.1 allows POST. A cross-site POST carries no SameSite=Lax cookie, but the same-site
        # GET it is turned into does, so a signed-in user is recognised.
        query = urlencode(list(request.form.items(multi=True)))
        return redirect(url_for("oidc.authorize") + "?" + query, 303)
    return authz.handle(request.query_string.decode("utf-8", "replace"), clock.now())


@bp.get("/oauth/authorize/continue/<pending_id>")
@inert_on_head  # the parked request is decided once
def resume(pending_id: str) -> BaseResponse:
    """Back from the login page: decide the parked request against the new session."""
    return authz.resume(pending_id)


@bp.post("/oauth/authorize/consent/<pending_id>")
def consent_answer(pending_id: str) -> BaseResponse:
    """The consent page's answer (CSRF-checked): decide the parked request with it."""
    answer = request.form.get("decision", "")
    if answer not in ("allow", "deny"):
        raise BadRequest("Choose Allow or Deny.", f"unexpected consent answer {answer[:32]!r}")
    return authz.resume(pending_id, answer)


def _portal_change(change: Callable[[Principal], object]) -> BaseResponse:
    """A portal button (CSRF-checked) the signed-in user pressed: make the change, back to the portal."""
    principal = current_principal()
    if principal is None:
        return redirect(login_url("/"))
    change(principal)
    return redirect("/")


@bp.post("/oauth/consent/<client_id>/revoke")
def revoke_consent(client_id: str) -> BaseResponse:
    """The user takes back what they allowed a third-party client."""
    return _portal_change(lambda p: consent.revoke(p.user_id, p.username, client_id[:64], actor=p.username))


@bp.post("/oauth/devices/<family_id>/disconnect")
def disconnect_device(family_id: str) -> BaseResponse:
    """The user ends a device's tokens."""
    return _portal_change(
        lambda p: connected_devices.disconnect(p.user_id, p.username, family_id[:64], actor=p.username))


@bp.app_context_processor
def _allowed_apps() -> dict[str, Any]:
    # The portal lists these without authn importing the OIDC package.
    return {"allowed_apps": consent.for_user, "connected_devices": connected_devices.for_user}


# Device codes one address may have made in a login failure window (15 minutes): a household's or an office's
# devices, not a flood. Each is stored (a row or Redis keys, and an audit event) for over an hour, and a public
# client's id is no secret.
MAX_DEVICE_CODES_PER_ADDRESS = 60


@bp.post("/oauth/device")
def device_authorization() -> BaseResponse:
    # The code's place under the address's limit is held (committed) before the code is made: requests sent at
    # once see each other's, and no more of them get a code than the limit allows.
    held = throttle.reserve_keys([(f"device-issue:{throttle.counted_address(request.remote_addr)}",
                                   MAX_DEVICE_CODES_PER_ADDRESS)])
    if held is None:
        _device_refused("too many device codes from this address")
        return _json({"error": "slow_down", "error_description": "Too many device codes from this address; try "
                      "again later."}, 429, {"Retry-After": str(settings().login_lockout_seconds)})
    db.session.commit()
    return throttle.settling(held, lambda: _issue_device_code(held))


def _issue_device_code(held: list[throttle.Reservation]) -> BaseResponse:
    resp: BaseResponse = server().create_endpoint_response("device_authorization")
    if resp.status_code != 200:
        db.session.rollback()
        throttle.release(*held)
        _device_refused(_error_of(resp))
        return resp
    throttle.register_failure(*held)  # a code made counts against the address, as a failure would
    db.session.commit()
    return resp


def _device_refused(reason: str) -> None:
    audit.record(AuditEvent(type="oidc.device.authorize", outcome="failure", sp=_client_hint(),
                            client_ip=request.remote_addr, reason=reason))


@bp.route("/device", methods=["GET", "POST"])
def device() -> BaseResponse:
    """verification_uri: a short address a user can type."""
    return device_page.show() if request.method == "GET" else device_page.submit()


def _client_hint() -> str | None:
    auth = request.authorization
    value = (auth.username if auth is not None and auth.type == "basic" else None) or request.form.get("client_id")
    return value[:64] if value else None


@bp.post("/oauth/token")
def token() -> BaseResponse:
    resp: BaseResponse = server().create_token_response()
    if resp.status_code == 200:
        db.session.commit()
        return resp
    db.session.rollback()
    error = _error_of(resp)
    if error in POLLING:
        return resp  # a device waiting for its user: an answer, not a refusal (one every 5 s per device)
    audit.record(AuditEvent(
        type="oidc.token", outcome="failure", sp=_client_hint(), client_ip=request.remote_addr,
        reason=error, details={"grant_type": request.form.get("grant_type", "")[:100]},
    ))
    return resp


def _error_of(resp: BaseResponse) -> str:
    try:
        error = json.loads(resp.get_data(as_text=True)).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error or resp.status_code)


def _bearer_error(error: OAuth2Error) -> Response:
    status, body, headers = error()
    return _json(dict(body), status, headers)


def _refused(endpoint: str, resp: BaseResponse) -> BaseResponse:
    """Every denied request is an audit event, whichever endpoint refused it."""
    if resp.status_code >= 400:
        audit.record(AuditEvent(
            type=f"oidc.{endpoint}", outcome="failure", sp=_client_hint(), client_ip=request.remote_addr,
            reason=_error_of(resp),
        ))
    return resp


@bp.before_request
def _malformed_authorization_header() -> BaseResponse | None:
    # authlib's parser raises (a 500) on "Basic " with no credentials and on credentials that are not UTF-8:
    # answer invalid_client here instead. Headers it ignores (no space, other schemes) are left to it.
    header = request.headers.get("Authorization", "")
    if " " not in header:
        return None
    parts = header.split(None, 1)
    if len(parts) == 2 and parts[0].lower() != "basic":
        return None
    try:
        base64.b64decode(parts[1], validate=True).decode("utf-8")
        return None
    except (IndexError, ValueError, UnicodeDecodeError):
        return _refused(request.path.rsplit("/", 1)[-1], _json(
            {"error": "invalid_client", "error_description": "Malformed HTTP Basic credentials."}, 401,
            [("WWW-Authenticate", 'Basic realm="oauth"')]))


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> BaseResponse:
    try:
        access = _protector.acquire_token(["openid"])
    except (MissingAuthorizationError, UnsupportedTokenTypeError) as error:
        # RFC 6750 3.1: a request without a Bearer token gets the challenge alone, no error code (authlib would
        # send missing_authorization, which is no registered code).
        audit.record(AuditEvent(type="oidc.userinfo", outcome="failure", sp=_client_hint(),
                                client_ip=request.remote_addr, reason=error.error))
        return Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{settings().base}"'})
    except OAuth2Error as error:
        return _refused("userinfo", _bearer_error(error))
    user = db.session.get(User, access.user_id) if access.user_id is not None else None
    client = access.get_client()
    if user is None or not user.enabled or client is None or access.auth_time is None:
        return _refused("userinfo", _bearer_error(InvalidTokenError()))
    principal = revalidated_principal(user, access.auth_time)
    if principal is None or not still_given(principal, client.client_id):
        return _refused("userinfo", _bearer_error(InvalidTokenError()))
    return _json(user_claims(principal, client.claim_map, access.scope))


@bp.post("/oauth/introspect")
def introspect() -> BaseResponse:
    return _refused("introspect", server().create_endpoint_response("introspection"))


@bp.post("/oauth/revoke")
def revoke() -> BaseResponse:
    return _refused("revoke", server().create_endpoint_response("revocation"))


@bp.route("/oauth/logout", methods=["GET", "POST"])
def end_session() -> BaseResponse:
    return logout.end_session()


# Machine-to-machine endpoints: clients authenticate themselves (or present a bearer token); there is no
# browser form and so no CSRF token.
# end_session checks its own confirmation form's token: an RP may POST the logout request from its own page.
# authorize's POST (from an RP's page) changes nothing: it only becomes the GET that is then decided.
for _view in (authorize, token, userinfo, introspect, revoke, end_session, device_authorization):
    csrf.exempt(f"{__name__}.{_view.__name__}")
