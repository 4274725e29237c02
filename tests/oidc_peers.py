"""Shared pieces for OIDC tests: authlib's client side as the relying party, a browser that signs in, and
the device grant's device and browser sides.

The relying party is authlib's ``OAuth2Session`` with authlib's own OpenID Connect client mixin, so ID
tokens are checked by authlib's client code (JWKS signature, iss, aud, nonce, exp, at_hash), not ours.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt as pyjwt
import lxml.html
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.sync_openid import OpenIDMixin
from authlib.integrations.requests_client import OAuth2Session
from saml_peers import submit_login

from idp.oidc import clients
from idp.oidc.clients import ClientOptions

REDIRECT_URI = "https://rp.example.test/callback"
PASSWORD = "correct horse battery"
ALL_SCOPES = "openid profile email groups"


class AuthlibRp(OAuth2Session, OpenIDMixin):  # type: ignore[misc]
    """authlib's requests client plus authlib's OpenID Connect client logic, reading our discovery document."""

    def __init__(self, issuer: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        resp = requests.get(issuer + "/.well-known/openid-configuration", timeout=10)
        resp.raise_for_status()
        self.server_metadata: dict[str, Any] = resp.json()

    def load_server_metadata(self) -> dict[str, Any]:
        return self.server_metadata

    def _get_session(self) -> Any:
        return contextlib.nullcontext(self)


def register(**options: Any) -> clients.Registered:
    """A client registered through the service; first-party (no consent page) and open to every signed-in
    user unless told otherwise (a test about access passes ``open_to_all=False`` and assigns it)."""
    options.setdefault("name", "relying party")
    options.setdefault("first_party", True)
    options.setdefault("open_to_all", True)
    options.setdefault("redirect_uris", (REDIRECT_URI,))
    return clients.add(ClientOptions(**options), actor="test")


def rp(issuer: str, reg: clients.Registered, **kwargs: Any) -> AuthlibRp:
    kwargs.setdefault("scope", ALL_SCOPES)
    kwargs.setdefault("redirect_uri", REDIRECT_URI)
    kwargs.setdefault("code_challenge_method", "S256")
    kwargs.setdefault("client_secret", reg.client_secret)
    return AuthlibRp(issuer, client_id=reg.client_id, **kwargs)


@dataclass
class Authorization:
    url: str  # the authorization request
    state: str
    nonce: str
    verifier: str


def start(session: AuthlibRp, **params: Any) -> Authorization:
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = session.create_authorization_url(
        session.server_metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **params)
    return Authorization(url, state, nonce, verifier)


@dataclass
class Arrival:
    """Where the browser was finally sent back to the client, and whether it had to sign in or consent."""

    url: str
    login_prompts: int
    consent_prompts: int = 0

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


def browse(http: requests.Session, url: str, username: str | None = "alice", password: str = PASSWORD,
           consent: str | None = None, redirect_uri: str = REDIRECT_URI) -> Arrival:
    """Follow the IdP's redirects like a browser, signing in on the login page when shown (with
    ``username``), answering a consent page with ``consent`` ("allow" or "deny"; None: a consent page is a
    failure), until the IdP sends the browser to the client's ``redirect_uri`` (the URL is returned instead
    of followed: the default's host does not exist)."""
    prompts = consents = 0
    for _ in range(12):
        resp = http.get(url, allow_redirects=False, timeout=10)
        while resp.status_code == 200 and is_consent_page(resp.text):
            assert consent is not None, "the IdP asked for consent"
            consents += 1
            resp = answer_consent(http, resp, consent)
        if resp.is_redirect:
            url = urljoin(resp.url, resp.headers["Location"])
            if url.startswith(redirect_uri):
                return Arrival(url, prompts, consents)
            continue
        assert resp.status_code == 200, (resp.status_code, resp.text[:1000])
        assert urlsplit(resp.url).path == "/login" and 'name="password"' in resp.text, resp.text[:1000]
        assert username is not None, "the IdP asked for a password"
        prompts += 1
        form = lxml.html.fromstring(resp.text).forms[0]
        data = {i.get("name"): i.get("value") or "" for i in form.inputs if i.get("name")}
        data.update(username=username, password=password)
        posted = http.post(urljoin(resp.url, form.get("action") or resp.url), data=data,
                           headers={"Referer": resp.url}, allow_redirects=False, timeout=10)
        assert posted.is_redirect, posted.text[:1000]
        url = urljoin(posted.url, posted.headers["Location"])
    raise AssertionError("too many redirects")


def is_consent_page(page: str) -> bool:
    return 'name="decision" value="allow"' in page


def answer_consent(http: requests.Session, page: requests.Response, decision: str) -> requests.Response:
    """Press Allow or Deny on the consent page (its form, its CSRF token)."""
    form = lxml.html.fromstring(page.text).forms[0]
    data = {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}
    data["decision"] = decision
    return http.post(urljoin(page.url, form.get("action")), data=data, headers={"Referer": page.url},
                     allow_redirects=False, timeout=10)


def login_page_username(http: requests.Session, url: str) -> str:
    """Follow redirects to the login page and return the prefilled username."""
    resp = http.get(url, timeout=10)
    doc = lxml.html.fromstring(resp.text)
    return str(doc.forms[0].inputs["username"].value or "")


def pyjwt_validate(idp: Any, id_token: str, client_id: str, algorithm: str) -> dict[str, Any]:
    """PyJWT, knowing nothing of authlib: key from our JWKS by kid, signature, iss, aud, exp."""
    jwks = pyjwt.PyJWKClient(idp.url + "/oauth/jwks")
    key = jwks.get_signing_key_from_jwt(id_token)
    claims: dict[str, Any] = pyjwt.decode(
        id_token, key.key, algorithms=[algorithm], audience=client_id, issuer=idp.url,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    return claims


# --- the device grant (RFC 8628): a device client written from the RFC with plain requests, and the user's
# browser on the /device page ------------------------------------------------------------------------------

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def device_authorization(idp: Any, client_id: str, scope: str = "openid profile email") -> dict[str, Any]:
    resp = requests.post(idp.url + "/oauth/device", data={"client_id": client_id, "scope": scope}, timeout=10)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def poll(idp: Any, client_id: str, device_code: str) -> requests.Response:
    return requests.post(idp.url + "/oauth/token", timeout=10, data={
        "grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id})


def error_of(resp: requests.Response) -> str:
    assert resp.status_code == 400, (resp.status_code, resp.text)
    return str(resp.json()["error"])


def open_device_page(http: requests.Session, url: str, username: str = "alice") -> requests.Response:
    """Visit the link from the device; sign in through the real login form when sent there."""
    resp = http.get(url, timeout=10)
    if 'name="password"' in resp.text:
        resp = submit_login(http, resp, username, PASSWORD)
    assert resp.status_code == 200 and "Connect a device" in resp.text, resp.text[:1000]
    return resp


def post_form(http: requests.Session, page: requests.Response, **fields: str) -> requests.Response:
    form = lxml.html.fromstring(page.text).forms[0]
    data = {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}
    data.update(fields)
    return http.post(urljoin(page.url, form.get("action")), data=data, headers={"Referer": page.url}, timeout=10)
