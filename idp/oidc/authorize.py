"""The authorization endpoint's decisions: answer at once from the SSO session, send the browser to sign
in (and park the request meanwhile), ask for consent (a third-party client, or ``prompt=consent``), or refuse.

Refusals follow RFC 6749 4.1.2.1: until authlib has matched the client and its redirect URI exactly, a
refusal is our error page and nothing is redirected; after that, the error goes to that redirect URI with
the request's ``state``. ``prompt=login`` and ``max_age`` are satisfied only by a sign-in made after the
request arrived (or recently enough), as with SAML ForceAuthn.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    LoginRequiredError,
    RegistrationNotSupportedError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from flask import redirect as flask_redirect
from flask import render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from idp import audit, clock
from idp.access.decide import AccessDenied
from idp.audit import AuditEvent
from idp.authn.principal import Principal
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import BadRequest
from idp.oidc import consent, id_token_hint
from idp.oidc.claims import subject
from idp.oidc.server import EndUser, access_denied, decide, server
from idp.runtime import settings
from idp.state import pending as pending_state
from idp.store.oidc import Client

PENDING_KIND = "oidc-authorize"
PENDING_LIFETIME = timedelta(minutes=10)
MAX_QUERY = 8192


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, args: MultiDict[str, str]) -> None:
        self._args = args

    @property
    def data(self) -> MultiDict[str, str]:
        return self._args

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key in self._args:
            values[key].extend(self._args.getlist(key))
        return values


class AuthorizeRequest(OAuth2Request):  # type: ignore[misc]
    """An authorization request rebuilt from its query string, so that a parked request is replayed exactly."""

    def __init__(self, query: str, pairs: list[tuple[str, str]]) -> None:
        """``pairs``: the query's parameters, those sent blank left out (RFC 6749 3.1)."""
        super().__init__("GET", settings().base + "/oauth/authorize?" + query)
        self._args: MultiDict[str, str] = MultiDict(pairs)
        self.payload = _Payload(self._args)

    @property
    def args(self) -> MultiDict[str, str]:
        return self._args

    @property
    def form(self) -> MultiDict[str, str]:
        return MultiDict()


def _refuse(req: OAuth2Request | None, error: OAuth2Error, client_id: str | None) -> BaseResponse:
    audit.record(AuditEvent(type="oidc.authorize", outcome="failure", sp=client_id, client_ip=request.remote_addr,
                            reason=f"{error.error}: {error.description or ''}".strip(": ")[:1024]))
    if req is not None and error.redirect_uri:
        if req.payload is not None:
            error.state = req.payload.state
        return _answered(server().handle_error_response(req, error))
    raise BadRequest(
        "This sign-in request cannot be accepted: " + (error.description or error.error or "invalid request"),
        f"{error.error}: {error.description}",
    )


def handle(query: str, received_at: datetime, pending_id: str | None = None, answer: str | None = None
           ) -> BaseResponse:
    """Decide an authorization request (fresh from ``/oauth/authorize``, resumed after sign-in, or with the
    user's ``answer`` from the consent page: "allow" or "deny")."""
    # Parsed once. RFC 6749 3.1: a parameter sent blank counts as not sent, for the checks below and for authlib
    # alike (a blank copy before the real one was what authlib read: `max_age=&max_age=0` skipped the sign-in).
    pairs = parse_qsl(query)
    args = MultiDict(pairs)
    client_id = args.get("client_id")
    client_label = client_id[:64] if client_id else None
    if len(query) > MAX_QUERY:
        raise BadRequest("The sign-in request is too long.", "authorization request too long")
    # authlib quotes these two in its error descriptions, which may only hold printable ASCII without
    # quotes or backslashes; anything else would make it raise instead of answering.
    if not all(_ECHOED.fullmatch(args.get(name, "")) for name in ("response_type", "redirect_uri")):
        return _refuse(None, InvalidRequestError("response_type or redirect_uri has characters no client uses."),
                       client_label)
    if "openid" in args.get("scope", "").split() and not args.get("redirect_uri"):
        # OIDC Core 3.1.2.1: required, even when the client has registered only one.
        return _refuse(None, InvalidRequestError("redirect_uri is required."), client_label)
    try:
        req = AuthorizeRequest(query, pairs)
    except OAuth2Error as error:  # e.g. plain http on a non-loopback address
        return _refuse(None, error, client_label)
    sso = current_session()
    end_user = EndUser(principal_for(sso), sso.id) if sso is not None else None
    try:
        grant = server().get_consent_grant(req, end_user=end_user)
    except OAuth2Error as error:
        return _refuse(req, error, client_label)
    redirect_uri: str = grant.redirect_uri
    data = req.payload.data
    prompts = (data.get("prompt") or "").split()
    try:
        # RFC 6749 3.1: no parameter more than once, a blank one counting as not sent (authlib checks five; sent
        # twice, nonce or prompt would mean whichever copy a reader takes). RFC 8707's resource may repeat.
        sent = Counter(key for key, _ in pairs if key != "resource")
        if repeated := sorted(key for key, n in sent.items() if n > 1):
            raise InvalidRequestError(f"{repeated[0]} may be sent once only.", redirect_uri=redirect_uri)
        # OIDC Core 6: request objects are not supported (discovery says so); their parameters, in them, would
        # go unread.
        for name, unsupported in _UNSUPPORTED.items():
            if args.get(name):
                raise unsupported(f"{name} is not supported here.", redirect_uri=redirect_uri)
        if args.get("response_mode") not in (None, "query"):
            # Answered in the query all the same, the client would miss the code where it waits for it.
            raise InvalidRequestError("response_mode may only be query here.", redirect_uri=redirect_uri)
        max_age = _max_age(data.get("max_age"), redirect_uri)
        if len(data.get("nonce") or "") > MAX_NONCE:  # the column's size; refuse rather than fail to store
            raise InvalidRequestError(f"nonce may be at most {MAX_NONCE} characters.", redirect_uri=redirect_uri)
    except OAuth2Error as error:
        return _refuse(req, error, client_label)

    now = clock.now()
    # Back from the login page with a sign-in made after the request arrived: that satisfies prompt=login
    # and max_age. On first arrival any existing sign-in predates the request (timestamps are whole seconds,
    # so "before" cannot be told from "in the same second" by comparing them).
    signed_in_since = pending_id is not None and sso is not None and sso.authn_at >= received_at
    too_old = max_age is not None and sso is not None and now - sso.authn_at >= timedelta(seconds=max_age)
    # select_account: the login page is where another account is chosen (as Keycloak does), its name filled in.
    reauthenticate = ("login" in prompts or "select_account" in prompts or too_old) and not signed_in_since
    if sso is None or reauthenticate:
        if "none" in prompts:
            return _refuse(req, LoginRequiredError(redirect_uri=redirect_uri), client_label)
        pid = pending_id or park(query, received_at)
        return flask_redirect(_login_url(url_for("oidc.resume", pending_id=pid),
                                         force=reauthenticate, hint=data.get("login_hint")))
    assert end_user is not None
    if "none" in prompts and data.get("id_token_hint") and not _names(data["id_token_hint"], end_user.principal):
        # OIDC Core 3.1.2.1: the client asks about the user its ID token names; another user is signed in here.
        return _refuse(req, LoginRequiredError(redirect_uri=redirect_uri), client_label)
    client: Client = grant.request.client
    scope: str = grant.request.scope or ""
    try:
        decide(end_user.principal, client, "authorization_code")
    except (OAuth2Error, AccessDenied) as error:
        _done(pending_id)
        why = error.message if isinstance(error, AccessDenied) else error.description or "access denied"
        return _refuse(req, access_denied(redirect_uri, req.payload.state, why), client_label)
    if answer == "deny":
        _done(pending_id)
        return _refuse(req, access_denied(redirect_uri, req.payload.state, "The user did not allow the request."),
                       client_label)
    if answer is None and ("consent" in prompts or consent.needed(end_user.principal, client, scope)):
        if "none" in prompts:
            _done(pending_id)
            return _refuse(req, ConsentRequiredError(redirect_uri=redirect_uri), client_label)
        # The request waits for the answer like it waits for a sign-in; the form names it.
        pid = pending_id or park(query, received_at)
        return BaseResponse(render_template(
            "oidc_consent.html", client_name=client.name, scopes=consent.describe(scope),
            principal=end_user.principal, action=url_for("oidc.consent_answer", pending_id=pid),
        ), mimetype="text/html")
    _done(pending_id)
    if answer == "allow" and not client.first_party:
        consent.remember(end_user.principal, client, scope)
    return _issue(req, grant, end_user)


def _issue(req: OAuth2Request, grant: Any, end_user: EndUser) -> BaseResponse:
    """authlib's create_authorization_response without its second validate_authorization_request: the grant
    was validated on this same request by get_consent_grant (a superset: it adds the prompt check), and the
    second pass only repeated the client look-up and the nonce query."""
    try:
        response: BaseResponse = server().handle_response(
            *grant.create_authorization_response(grant.redirect_uri, end_user))
    except OAuth2Error as error:
        error.state = req.payload.state
        response = server().handle_error_response(req, error)
    grant.execute_hook("after_authorization_response", response)
    return _answered(response)


def _answered(response: BaseResponse) -> BaseResponse:
    """An authorization response as it leaves: with our issuer (RFC 9207)."""
    server().execute_hook("after_create_authorization_response", response)
    return response


def _names(hint: str, principal: Principal) -> bool:
    """Whether ``hint`` is an ID token of ours about ``principal``."""
    try:
        return id_token_hint.read(hint).get("sub") == subject(principal)
    except ValueError:
        return False


def _done(pending_id: str | None) -> None:
    if pending_id is not None:
        consume(pending_id)


MAX_NONCE = 512
_UNSUPPORTED: dict[str, type[OAuth2Error]] = {
    "request": RequestNotSupportedError, "request_uri": RequestURINotSupportedError,
    "registration": RegistrationNotSupportedError}
_ECHOED = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_DIGITS = re.compile(r"[0-9]{1,9}")


def _max_age(value: str | None, redirect_uri: str) -> int | None:
    if value is None or value == "":
        return None
    if not _DIGITS.fullmatch(value):  # ASCII only: str.isdigit() also takes "²", which int() refuses
        raise InvalidRequestError("max_age must be a whole number of seconds.", redirect_uri=redirect_uri)
    return int(value)


def _login_url(next_path: str, *, force: bool, hint: str | None) -> str:
    url = login_url(next_path, force=force)
    if hint:
        # Only prefills the username field; the user can change it.
        url += ("&" if "?" in url else "?") + urlencode({"login_hint": hint[:255]})
    return url


# --- waiting for a sign-in --------------------------------------------------------------------------------

def park(query: str, received_at: datetime) -> str:
    return pending_state.put(PENDING_KIND, {"query": query, "received_at": received_at.isoformat()},
                             clock.now() + PENDING_LIFETIME)


_EXPIRED = "This sign-in request has expired; go back to the application and try again."


def pending(pending_id: str) -> dict[str, Any]:
    data = pending_state.get(PENDING_KIND, pending_id)
    if data is None:
        raise BadRequest(_EXPIRED, "pending authorization request missing or expired")
    return data


def consume(pending_id: str) -> None:
    if not pending_state.take(pending_id):
        raise BadRequest(_EXPIRED, "pending authorization request already used")


def resume(pending_id: str, answer: str | None = None) -> BaseResponse:
    data = pending(pending_id)
    return handle(data["query"], datetime.fromisoformat(data["received_at"]), pending_id, answer)
