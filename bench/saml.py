"""The SAML side of the benchmarks: the benchmark's service provider and its two flows, the same against the
bridge and against SimpleSAMLphp (only the SSO URL differs).

Every flow sends a fresh AuthnRequest (HTTP-Redirect binding, a new ID each time: the bridge refuses a replayed
ID) and checks what comes back: a POST form whose SAMLResponse is a success with two signatures (response and
assertion).
"""

from __future__ import annotations

import base64
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode, urljoin

import requests
from harness import FlowError, expect, form

SP_ENTITY_ID = "https://sp.bench.example/metadata"
ACS_URL = "https://sp.bench.example/acs"
SP_METADATA = f"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ENTITY_ID}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="{ACS_URL}" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"""
SUCCESS = b'Value="urn:oasis:names:tc:SAML:2.0:status:Success"'


def authn_request_url(sso_url: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="_{uuid.uuid4().hex}" Version="2.0" IssueInstant="{now}" Destination="{sso_url}" '
        f'AssertionConsumerServiceURL="{ACS_URL}" '
        'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
        f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer></samlp:AuthnRequest>"
    )
    deflated = zlib.compress(xml.encode())[2:-4]
    return f"{sso_url}?{urlencode({'SAMLRequest': base64.b64encode(deflated).decode()})}"


def check_response(resp: requests.Response) -> None:
    """A POST form to our ACS carrying a successful, twice-signed SAML response."""
    expect(resp, 200)
    post = form(resp.text, "SAMLResponse")
    if post.action != ACS_URL:
        raise FlowError(f"the response form posts to {post.action!r}, not the ACS")
    xml = base64.b64decode(post.fields["SAMLResponse"])
    if SUCCESS not in xml:
        raise FlowError(f"not a success: {xml[:400]!r}")
    if xml.count(b"SignatureValue>") < 4:  # opening and closing tags of two signatures
        raise FlowError("the response and its assertion are not both signed")


def requests_made(resp: requests.Response) -> int:
    return len(resp.history) + 1


@dataclass
class PasswordSignIn:
    """A user without a session: AuthnRequest, the login form, the credentials posted, the signed response."""

    sso_url: str
    username: str
    password: str

    def setup(self, http: requests.Session) -> None:
        pass

    def once(self, http: requests.Session) -> int:
        http.cookies.clear()
        page = expect(http.get(authn_request_url(self.sso_url), timeout=30), 200)
        login = form(page.text, "password")
        done = http.post(urljoin(page.url, login.action), timeout=30,
                         data={**login.fields, "username": self.username, "password": self.password})
        check_response(done)
        return requests_made(page) + requests_made(done)


@dataclass
class SsoWithSession:
    """A user who signed in once (in setup, through the same server's login form) asks for another response."""

    sso_url: str
    username: str
    password: str

    def setup(self, http: requests.Session) -> None:
        PasswordSignIn(self.sso_url, self.username, self.password).once(http)

    def once(self, http: requests.Session) -> int:
        resp = http.get(authn_request_url(self.sso_url), timeout=30)
        check_response(resp)
        return requests_made(resp)
