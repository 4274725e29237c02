"""Shared builders for python3-saml service providers in tests: keys, settings and SP metadata.

python3-saml (SAML-Toolkits) writes the metadata, so what the IdP is fed is a real SP's, not ours.
"""

from __future__ import annotations

import base64
import copy
import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from idp import clock
from idp.keys import generate_key_pair
from idp.saml import providers
from idp.store import ServiceProvider

SP_ENTITY_ID = "https://sp.example.test/metadata"
SP_ACS_URL = "https://sp.example.test/acs"
SP_SLO_URL = "https://sp.example.test/slo"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"


@functools.cache
def sp_keys(label: str = "python3-saml sp") -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM), made once per label per test run: RSA generation is slow."""
    return generate_key_pair(label)


def cert_b64(cert_pem: bytes) -> str:
    """A PEM certificate as base64 DER, the way metadata and ds:X509Certificate carry it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def python3_saml_settings(
    idp_metadata: bytes | None = None,
    *,
    entity_id: str = SP_ENTITY_ID,
    acs_url: str = SP_ACS_URL,
    slo_url: str | None = SP_SLO_URL,
    nameid_format: str = NAMEID_UNSPECIFIED,
    keys: tuple[bytes, bytes] | None = None,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A python3-saml settings dict for an SP; with ``idp_metadata``, trusting exactly that IdP.

    ``security`` overrides python3-saml's security options (authnRequestsSigned, wantAssertionsEncrypted, ...).
    ``keys`` defaults to :func:`sp_keys`; pass ``keys=(b"", b"")`` for an SP without a certificate.
    """
    key_pem, cert_pem = keys if keys is not None else sp_keys()
    sp: dict[str, Any] = {
        "entityId": entity_id,
        "assertionConsumerService": {"url": acs_url, "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
        "NameIDFormat": nameid_format,
        "x509cert": cert_pem.decode(),
        "privateKey": key_pem.decode(),
    }
    if slo_url:
        sp["singleLogoutService"] = {
            "url": slo_url, "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
        }
    settings: dict[str, Any] = {
        "strict": True,
        "debug": False,
        "sp": sp,
        "security": {
            "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "wantAssertionsSigned": True,
            "wantMessagesSigned": False,
            "rejectDeprecatedAlgorithm": True,
            **(security or {}),
        },
    }
    if idp_metadata is not None:
        settings["idp"] = OneLogin_Saml2_IdPMetadataParser.parse(idp_metadata.decode())["idp"]
    return settings


def python3_saml_metadata(**kwargs: Any) -> bytes:
    """SP metadata as python3-saml writes it; keyword arguments as for :func:`python3_saml_settings`.

    It lists the SP certificate for signing, and for encryption too when
    ``security={"wantAssertionsEncrypted": True}``; AuthnRequestsSigned follows ``authnRequestsSigned``.
    """
    settings = OneLogin_Saml2_Settings(python3_saml_settings(**kwargs), sp_validation_only=True)
    xml = settings.get_sp_metadata()
    text = xml.decode() if isinstance(xml, bytes) else xml
    # python3-saml makes it valid for two days from the real clock; a test that set the bridge's clock elsewhere
    # gets it as written at that time.
    until = (clock.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return re.sub(r'validUntil="[^"]*"', f'validUntil="{until}"', text, count=1).encode()


# --- Driving python3-saml SPs and the browser side over real HTTP (C1) ------------------------------------

BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
# What the tests ask the IdP to release (the SP's attribute_map); groups is multi-valued.
ATTRIBUTE_MAP = [
    {"attribute": "email", "name": "mail"},
    {"attribute": "groups", "name": "groups"},
    {"attribute": "display_name", "name": "displayName"},
]


@dataclass(frozen=True)
class PostedForm:
    """An auto-posting form the IdP served: where it posts and what."""

    action: str
    fields: dict[str, str]


def read_post_form(html: str) -> PostedForm:
    """The IdP's auto-posting SAML form, as a browser would submit it (fails if the page has none)."""
    doc = lxml.html.fromstring(html)
    forms = [f for f in doc.forms if f.get("id") == "saml-post"]
    assert forms, f"no SAML form on the page:\n{html[:2000]}"
    form = forms[0]
    fields = {i.get("name"): i.get("value") or "" for i in form.inputs if i.get("name")}
    return PostedForm(str(form.get("action")), fields)


def submit_login(http: requests.Session, page: requests.Response, username: str, password: str) -> requests.Response:
    """Fill in and post the login form on ``page`` (with its CSRF token), following redirects."""
    doc = lxml.html.fromstring(page.text)
    assert doc.forms, f"no login form at {page.url}:\n{page.text[:2000]}"
    form = doc.forms[0]
    data = {i.get("name"): i.get("value") or "" for i in form.inputs if i.get("name")}
    data.update(username=username, password=password)
    return http.post(urljoin(page.url, form.get("action") or page.url), data=data, timeout=10)


def is_login_page(resp: requests.Response) -> bool:
    return urlsplit(resp.url).path == "/login" and 'name="password"' in resp.text


class OneLoginSp:
    """A python3-saml SP whose ACS lives on a host that does not exist: the test carries the IdP's form
    to :meth:`process_response` by hand, as the browser would have posted it."""

    def __init__(self, idp_metadata: bytes, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.entity_id: str = kwargs.get("entity_id", SP_ENTITY_ID)
        self.acs_url: str = kwargs.get("acs_url", SP_ACS_URL)
        self.settings = python3_saml_settings(idp_metadata, **kwargs)
        self.settings["security"].setdefault("wantMessagesSigned", True)

    def metadata(self) -> bytes:
        return python3_saml_metadata(**self.kwargs)

    def _request_data(self, post: dict[str, str] | None = None) -> dict[str, Any]:
        url = urlsplit(self.acs_url)
        https = url.scheme == "https"
        return {
            "https": "on" if https else "off",
            "http_host": url.hostname,
            "server_port": str(url.port or (443 if https else 80)),
            "script_name": url.path,
            "get_data": {},
            "post_data": post or {},
        }

    def auth(self, post: dict[str, str] | None = None) -> OneLogin_Saml2_Auth:
        return OneLogin_Saml2_Auth(self._request_data(post), old_settings=copy.deepcopy(self.settings))

    def redirect_login(self, relay_state: str, **options: Any) -> tuple[str, str]:
        """(the HTTP-Redirect URL to the IdP, the AuthnRequest ID); signed if the SP's settings say so."""
        auth = self.auth()
        url = auth.login(return_to=relay_state, **options)
        return url, auth.get_last_request_id()

    def post_request(self, **options: Any) -> tuple[str, str]:
        """(the AuthnRequest XML for the HTTP-POST binding, its ID); enveloped-signed when
        authnRequestsSigned is set, with the SP's signatureAlgorithm."""
        settings = OneLogin_Saml2_Settings(copy.deepcopy(self.settings))
        request = OneLogin_Saml2_Authn_Request(settings, **options)
        xml = request.get_xml()
        security = settings.get_security_data()
        if security.get("authnRequestsSigned"):
            xml = OneLogin_Saml2_Utils.add_sign(
                xml, settings.get_sp_key(), settings.get_sp_cert(),
                sign_algorithm=security["signatureAlgorithm"], digest_algorithm=security["digestAlgorithm"],
            )
        return xml if isinstance(xml, str) else xml.decode(), request.get_id()

    def process_response(self, form: PostedForm, request_id: str | None) -> OneLogin_Saml2_Auth:
        """Validate the posted Response as the SP would; asserts it was posted to this SP's ACS."""
        assert form.action == self.acs_url, f"posted to {form.action}, not to the ACS {self.acs_url}"
        auth = self.auth(form.fields)
        auth.process_response(request_id=request_id)
        return auth


def register_sp(metadata: bytes, **options: Any) -> ServiceProvider:
    """Register an SP through the service with these :class:`providers.SpOptions`; open to every signed-in
    user unless ``open_to_all=False`` (a test about access then assigns it)."""
    options.setdefault("open_to_all", True)
    return providers.add(metadata, None, providers.SpOptions(**options), actor="test")


def idp_metadata(base_url: str) -> bytes:
    resp = requests.get(base_url + "/saml/metadata", timeout=10)
    resp.raise_for_status()
    return resp.content


def sign_in_at_a_new_sp(idp_url: str, username: str, password: str,
                        attribute_map: tuple[dict[str, Any], ...] = tuple(ATTRIBUTE_MAP)) -> OneLogin_Saml2_Auth:
    """Register a python3-saml SP with this release map, then sign in through it with the real login form.
    Returns the SP's view of the response, which it has already validated (asserted error-free)."""
    sp = OneLoginSp(idp_metadata(idp_url))
    register_sp(sp.metadata(), attribute_map=attribute_map)
    http = requests.Session()
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    page = submit_login(http, page, username, password)
    auth = sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    return auth
