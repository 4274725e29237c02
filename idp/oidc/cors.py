"""Cross-origin calls from browser apps (a single-page app registered as a public client): the token, revocation
and userinfo endpoints answer the origins of registered redirect URIs, as Keycloak's "web origins" default does;
discovery and the JWKS, public documents, answer any origin. No credentials mode: these endpoints read no
cookie, and the browser sends none. Every other endpoint (authorization, consent, logout, the admin API) sends
no CORS header at all, so a page of another origin cannot read what they answer."""

from __future__ import annotations

import logging

from flask import Blueprint, request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from idp.errors import first_line
from idp.extensions import db
from idp.store import OidcClient
from idp.urls import split_url

log = logging.getLogger(__name__)

PUBLIC_DOCUMENTS = frozenset({"oidc.discovery", "oidc.jwks"})
BROWSER_APP_CALLS = frozenset({"oidc.token", "oidc.revoke", "oidc.userinfo"})
# What a browser app sends: a bearer token (userinfo), a form (token, revocation), DPoP later.
_ALLOWED_HEADERS = "Authorization, Content-Type"
_PREFLIGHT_SECONDS = "600"


def origin_of(uri: str) -> str | None:
    """The origin (RFC 6454) of an http(s) URI, as a browser sends it in Origin; None for any other."""
    parts = split_url(uri)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port not in (None, default) else "")


def _registered(origin: str) -> bool:
    """Whether a registered client has a redirect URI at ``origin`` (read when a browser asks: a client added on
    another instance counts at once)."""
    return any(origin_of(uri) == origin for uris in db.session.scalars(select(OidcClient.redirect_uris))
               for uri in uris or ())


def init(bp: Blueprint) -> None:
    @bp.after_request
    def _cors(resp: BaseResponse) -> BaseResponse:
        origin = request.headers.get("Origin")
        endpoint = request.endpoint or ""
        if endpoint in PUBLIC_DOCUMENTS:
            # With or without an Origin: these answers are cached (a proxy, a CDN), and a copy first fetched
            # without one is then served to a browser app too.
            resp.headers["Access-Control-Allow-Origin"] = "*"
            return resp
        if not origin or endpoint not in BROWSER_APP_CALLS:
            return resp
        resp.vary.add("Origin")
        try:
            registered = _registered(origin)
        except SQLAlchemyError as exc:  # the answer is made: it stands, unreadable by the browser app
            log.warning("CORS: the origins of the clients could not be read: %s", first_line(exc))
            return resp
        if not registered:
            return resp
        resp.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST" if endpoint == "oidc.userinfo" else "POST"
            resp.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            resp.headers["Access-Control-Max-Age"] = _PREFLIGHT_SECONDS
        return resp
