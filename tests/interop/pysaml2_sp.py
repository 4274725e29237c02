"""A pysaml2 service provider (``Saml2Client``) configured in code, for interoperability tests.

The SP is never served over HTTP: its endpoints live on a host that does not exist, and the tests hand the
messages the IdP sends there (redirects and auto-posting forms) to this object by hand. It signs and
verifies with pysaml2's default backend (the ``xmlsec1`` program), which is fine for a test peer.
"""

from __future__ import annotations

import base64
import functools
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import lxml.html
import requests
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.response import AuthnResponse, LogoutResponse
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.sigver import verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.keys import generate_key_pair

XMLSEC1 = "/usr/bin/xmlsec1"


@functools.cache
def _key_material() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """A signing and an encryption key pair, made once per test run (RSA generation is slow)."""
    return generate_key_pair("pysaml2 sp signing"), generate_key_pair("pysaml2 sp encryption")


@dataclass(frozen=True)
class Message:
    """A SAML message on its way to the SP, as the browser would deliver it."""

    binding: str
    saml: str  # the SAMLRequest or SAMLResponse value as sent (deflated+base64 or base64)
    relay_state: str | None
    is_response: bool
    sig_alg: str | None = None
    signature: str | None = None


class Pysaml2Sp:
    """One pysaml2 SP: its keys in ``workdir``, its metadata, and a client once the IdP's metadata is known."""

    def __init__(self, workdir: Path, base: str = "http://sp2.pysaml2.test", *,
                 nameid_format: str = NAMEID_FORMAT_PERSISTENT) -> None:
        self.base = base.rstrip("/")
        self.entity_id = f"{self.base}/metadata"
        self.acs_url = f"{self.base}/acs"
        self.slo_url = f"{self.base}/slo"
        self.nameid_format = nameid_format
        (sign_key, sign_cert), (enc_key, enc_cert) = _key_material()
        workdir.mkdir(parents=True, exist_ok=True)
        self.key_file = workdir / "sp.key"
        self.cert_file = workdir / "sp.crt"
        self.enc_key_file = workdir / "sp-enc.key"
        self.enc_cert_file = workdir / "sp-enc.crt"
        for path, data in ((self.key_file, sign_key), (self.cert_file, sign_cert),
                           (self.enc_key_file, enc_key), (self.enc_cert_file, enc_cert)):
            path.write_bytes(data)
        self._client: Saml2Client | None = None

    # -- configuration ----------------------------------------------------------------------------------

    def _config(self, idp_metadata: bytes | None) -> SPConfig:
        conf: dict[str, Any] = {
            "entityid": self.entity_id,
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "encryption_keypairs": [{"key_file": str(self.enc_key_file), "cert_file": str(self.enc_cert_file)}],
            "xmlsec_binary": XMLSEC1,
            "allow_unknown_attributes": True,
            # pysaml2 still defaults to RSA-SHA1, which the IdP refuses unless an SP is set to allow it.
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)],
                        "single_logout_service": [
                            (self.slo_url, BINDING_HTTP_REDIRECT),
                            (self.slo_url, BINDING_HTTP_POST),
                        ],
                    },
                    "name_id_format": [self.nameid_format],
                    "authn_requests_signed": True,
                    "logout_requests_signed": True,
                    "logout_responses_signed": True,
                    "want_assertions_signed": True,
                    "want_response_signed": True,
                    "allow_unsolicited": False,
                },
            },
        }
        if idp_metadata is not None:
            conf["metadata"] = {"inline": [idp_metadata.decode()]}
        config = SPConfig()
        config.load(conf)
        return config

    def metadata_xml(self) -> bytes:
        """The SP's metadata, as pysaml2 itself writes it (signing and encryption certificates, ACS, SLO)."""
        text = create_metadata_string(None, config=self._config(None), sign=False)
        return text if isinstance(text, bytes) else text.encode()

    def connect(self, idp_metadata: bytes) -> Saml2Client:
        """Build the client, trusting exactly the IdP described by ``idp_metadata``."""
        self._client = Saml2Client(config=self._config(idp_metadata))
        return self._client

    @property
    def client(self) -> Saml2Client:
        assert self._client is not None, "connect() first"
        return self._client

    # -- sign-in -------------------------------------------------------------------------------------------

    def login_url(self, relay_state: str = "") -> tuple[str, str]:
        """A signed AuthnRequest on the Redirect binding: (request id, URL to send the browser to)."""
        req_id, info = self.client.prepare_for_authenticate(
            relay_state=relay_state, binding=BINDING_HTTP_REDIRECT, sign=True, sigalg=SIG_RSA_SHA256,
            nameid_format=self.nameid_format,
        )
        return req_id, _location(info)

    def accept_response(self, saml_response: str, outstanding: dict[str, str]) -> AuthnResponse:
        """Validate a posted Response the way pysaml2 does (signatures against the IdP's metadata, decryption)."""
        return self.client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding=outstanding)

    # -- logout --------------------------------------------------------------------------------------------

    def logout_url(self, name_id: NameID) -> str:
        """Start Single Logout for ``name_id`` at the IdP on the Redirect binding; the URL to send the browser to."""
        responses = self.client.global_logout(name_id, reason="user clicked sign out", sign=True,
                                               sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
        assert len(responses) == 1, responses
        ((binding, info),) = responses.values()
        assert binding == BINDING_HTTP_REDIRECT, binding
        return _location(info)

    def logout_form(self, name_id: NameID) -> tuple[str, dict[str, str]]:
        """Start Single Logout on the HTTP-POST binding (enveloped signature): (form action, form fields)."""
        responses = self.client.do_logout(
            name_id, [self.idp_entity_id()], reason="user clicked sign out", expire=None, sign=True,
            expected_binding=BINDING_HTTP_POST, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
        )
        ((binding, info),) = responses.values()
        assert binding == BINDING_HTTP_POST, binding
        form = lxml.html.fromstring(info["data"]).xpath("//form")[0]
        return str(form.get("action")), _form_fields(form)

    def accept_logout_response(self, message: Message) -> LogoutResponse:
        """Check the IdP's LogoutResponse: on Redirect the detached signature with the IdP's metadata cert."""
        assert message.is_response
        if message.binding == BINDING_HTTP_REDIRECT:
            self.verify_redirect_signature(message)
        response = self.client.parse_logout_request_response(message.saml, message.binding)
        assert response is not None, "pysaml2 did not accept the LogoutResponse"
        return response

    def answer_logout_request(self, message: Message, name_id: NameID) -> dict[str, Any]:
        """Handle the IdP's LogoutRequest; returns pysaml2's http info for the LogoutResponse it sends back."""
        assert not message.is_response
        info: dict[str, Any] = self.client.handle_logout_request(
            message.saml, name_id, message.binding, sign=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
            relay_state=message.relay_state,
            sigalg=message.sig_alg, signature=message.signature,
        )
        return info

    def verify_redirect_signature(self, message: Message) -> None:
        if message.sig_alg is None or message.signature is None:
            raise AssertionError("the IdP's Redirect-binding message is unsigned")
        key = "SAMLResponse" if message.is_response else "SAMLRequest"
        saml_msg = {key: message.saml, "SigAlg": message.sig_alg, "Signature": message.signature}
        if message.relay_state is not None:
            saml_msg["RelayState"] = message.relay_state
        certs = self.client.metadata.certs(self.idp_entity_id(), "idpsso", "signing")
        assert certs, "no IdP signing certificate in metadata"
        ok = any(verify_redirect_signature(saml_msg, self.client.sec.sec_backend, cert=c[1]) for c in certs)
        assert ok, "the IdP's Redirect-binding signature does not verify"

    def idp_entity_id(self) -> str:
        ids = list(self.client.metadata.identity_providers())
        assert len(ids) == 1, ids
        return str(ids[0])

    def is_logged_in(self, name_id: NameID) -> bool:
        return bool(self.client.is_logged_in(name_id))

    def owns(self, url: str) -> bool:
        return url.startswith(self.base + "/")


def _location(info: dict[str, Any]) -> str:
    for name, value in info["headers"]:
        if name.lower() == "location":
            return str(value)
    raise AssertionError(f"no Location in {info!r}")


def message_from_redirect(url: str) -> Message:
    """The SAML message carried by a Redirect-binding URL."""
    query = parse_qs(urlsplit(url).query)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    saml = one("SAMLResponse")
    is_response = saml is not None
    if saml is None:
        saml = one("SAMLRequest")
    assert saml is not None, f"no SAML message in {url}"
    return Message(BINDING_HTTP_REDIRECT, saml, one("RelayState"), is_response, one("SigAlg"), one("Signature"))


def message_from_form(fields: dict[str, str]) -> Message:
    """The SAML message carried by an auto-posting form's fields."""
    is_response = "SAMLResponse" in fields
    saml = fields["SAMLResponse"] if is_response else fields["SAMLRequest"]
    return Message(BINDING_HTTP_POST, saml, fields.get("RelayState"), is_response)


def decoded(message: Message) -> bytes:
    """The XML of a message (for assertions in tests)."""
    if message.binding == BINDING_HTTP_POST:
        return base64.b64decode(message.saml)
    return zlib.decompress(base64.b64decode(message.saml), -15)


# -- the browser ----------------------------------------------------------------------------------------------


@dataclass
class Hop:
    """Where the browser got to: a message leaving for an SP (redirect or auto-posting form), or an IdP page."""

    response: requests.Response
    redirect: str | None = None
    form_action: str | None = None
    form_fields: dict[str, str] | None = None
    asked_password: bool = False

    @property
    def message(self) -> Message:
        if self.redirect is not None:
            return message_from_redirect(self.redirect)
        assert self.form_fields is not None, f"no SAML message: {self.response.status_code} {self.response.text[:300]}"
        return message_from_form(self.form_fields)

    @property
    def destination(self) -> str:
        target = self.redirect or self.form_action
        assert target is not None, f"no message left the IdP: {self.response.status_code}"
        return target.split("?", 1)[0]


class Browser:
    """A ``requests.Session`` standing in for the user's browser at the IdP.

    It follows the IdP's own redirects, fills in the real login form (CSRF token included) when asked to
    and a password is known, and stops where a message leaves for a service provider.
    """

    def __init__(self, idp_url: str, username: str | None = None, password: str | None = None) -> None:
        self.idp = idp_url.rstrip("/")
        self.username = username
        self.password = password
        self.session = requests.Session()

    def get(self, url: str) -> Hop:
        return self._drive(self.session.get(url, allow_redirects=False, timeout=30))

    def post(self, url: str, fields: dict[str, str]) -> Hop:
        return self._drive(self.session.post(url, data=fields, allow_redirects=False, timeout=30))

    def _drive(self, resp: requests.Response) -> Hop:
        asked = False
        while True:
            if resp.status_code in (301, 302, 303, 307, 308):
                location = urljoin(resp.url, resp.headers["Location"])
                if not location.startswith(self.idp + "/"):
                    return Hop(resp, redirect=location, asked_password=asked)
                resp = self.session.get(location, allow_redirects=False, timeout=30)
                continue
            if resp.status_code != 200 or "html" not in resp.headers.get("Content-Type", ""):
                return Hop(resp, asked_password=asked)
            page = lxml.html.fromstring(resp.text)
            login = page.xpath("//form[.//input[@name='password']]")
            if login:
                if asked or self.password is None:
                    return Hop(resp, asked_password=True)
                asked = True
                fields = _form_fields(login[0])
                fields.update(username=self.username or "", password=self.password)
                action = urljoin(resp.url, login[0].get("action") or resp.url)
                resp = self.session.post(action, data=fields, allow_redirects=False, timeout=30)
                continue
            saml = page.xpath("//form[.//input[@name='SAMLResponse' or @name='SAMLRequest']]")
            if saml:
                action = urljoin(resp.url, saml[0].get("action"))
                return Hop(resp, form_action=action, form_fields=_form_fields(saml[0]), asked_password=asked)
            return Hop(resp, asked_password=asked)


def _form_fields(form: Any) -> dict[str, str]:
    return {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}


def p3_request(url: str, post: dict[str, str] | None = None) -> dict[str, Any]:
    """python3-saml's view of a browser request arriving at an SP's ``url`` (the other test SP).

    The raw query goes along so that python3-saml checks Redirect signatures over the bytes as sent.
    """
    parts = urlsplit(url)
    return {
        "https": "on" if parts.scheme == "https" else "off",
        "http_host": parts.netloc,
        "script_name": parts.path,
        "get_data": {k: v[0] for k, v in parse_qs(parts.query).items()},
        "post_data": post or {},
        "query_string": parts.query,
        "validate_signature_from_qs": True,
    }


def python3_saml_sign_in(browser: Browser, settings: dict[str, Any],
                         return_to: str = "https://sp.example.test/app") -> OneLogin_Saml2_Auth:
    """Sign in to a python3-saml SP (SP-initiated, Redirect binding); its Auth object after the ACS."""
    acs_url = settings["sp"]["assertionConsumerService"]["url"]
    auth = OneLogin_Saml2_Auth(p3_request(acs_url), settings)
    hop = browser.get(auth.login(return_to=return_to))
    assert hop.destination == acs_url, hop.response.text[:500]
    assert hop.form_fields is not None
    acs = OneLogin_Saml2_Auth(p3_request(acs_url, post=hop.form_fields), settings)
    acs.process_response(request_id=auth.get_last_request_id())
    assert acs.get_errors() == [], acs.get_last_error_reason()
    assert acs.is_authenticated()
    return acs
