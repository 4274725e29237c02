"""What /saml/sso refuses, and how: an error page with the right status (nothing sent to an unverified
address), or the SAML status the spec names posted to the SP's registered ACS, and an audit event each time.

Requests are built by python3-saml (the SP library), not by us; the browser is Flask's test client.
"""

from __future__ import annotations

import base64
import time
import tracemalloc
import zlib
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import audit_insert_lost, csrf_token, form_action, login, make_user
from lxml import etree
from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml_peers import ATTRIBUTE_MAP, NAMEID_EMAIL, SP_ACS_URL, OneLoginSp, read_post_form, register_sp, sp_keys
from sqlalchemy import update

from idp import audit
from idp.authn import directory
from idp.extensions import db
from idp.saml import providers
from idp.saml.providers import SpOptions
from idp.store import User

PASSWORD = "correct horse battery"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
IDP_BASE = "http://127.0.0.1:5000"  # the default IDP_BASE_URL the app fixture runs with


@pytest.fixture
def alice(app: Flask) -> None:
    make_user("alice", PASSWORD, groups=["staff"], email="alice@example.test")


def register(client: FlaskClient, **kwargs: Any) -> OneLoginSp:
    options = kwargs.pop("options", {})
    sp = OneLoginSp(client.get("/saml/metadata").data, **kwargs)
    register_sp(sp.metadata(), attribute_map=tuple(ATTRIBUTE_MAP), **options)
    return sp


@pytest.fixture
def sp(client: FlaskClient, alice: None) -> OneLoginSp:
    return register(client)


def post_request(client: FlaskClient, xml: str | bytes, relay_state: str | None = None) -> Any:
    data = {"SAMLRequest": base64.b64encode(xml if isinstance(xml, bytes) else xml.encode()).decode()}
    if relay_state is not None:
        data["RelayState"] = relay_state
    return client.post("/saml/sso", data=data)


def local(url: str) -> str:
    """The IdP URL an SP library built, as a path: the test client keeps its cookies for its own host."""
    assert url.startswith(IDP_BASE + "/"), url
    return url.removeprefix(IDP_BASE)


def refusals() -> list[audit.AuditEvent]:
    return audit.events(type="saml.refused")


def responses_issued() -> int:
    return len(audit.events(type="saml.response"))


def assert_refused(resp: Any, status: int, reason_part: str) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)[:1000]
    assert 'id="saml-post"' not in resp.get_data(as_text=True), "nothing may be posted anywhere"
    events = refusals()
    assert events, "every refusal is audited"
    assert reason_part.lower() in (events[0].reason or "").lower(), events[0].reason


def sign_in_and_continue(client: FlaskClient, resp: Any, password: str = PASSWORD) -> Any:
    """From a redirect to the login page: sign in there (the POST answers the parked request itself; a
    redirect back to /saml/continue/<id>, should one come, is followed)."""
    assert resp.status_code == 302, resp.status_code
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/login"
    query = parse_qs(location.query)
    done = login(client, "alice", password, next=query["next"][0], force="force" in query)
    if done.status_code != 302:
        return done
    return client.get(done.headers["Location"])


def status_codes(form_fields: dict[str, str]) -> list[str]:
    root = etree.fromstring(base64.b64decode(form_fields["SAMLResponse"]))
    return [c.get("Value") for c in root.iter(f"{{{SAMLP}}}StatusCode")]


# --- sign-in problems -------------------------------------------------------------------------------------

def test_wrong_password_issues_no_response(client: FlaskClient, sp: OneLoginSp) -> None:
    url, _ = sp.redirect_login("rs")
    resp = client.get(local(url))
    page = sign_in_and_continue(client, resp, password="wrong password here")
    assert page.status_code == 200
    assert "Incorrect username or password" in page.get_data(as_text=True)
    assert 'id="saml-post"' not in page.get_data(as_text=True)
    # Going to the continuation without signing in just leads back to the login page.
    again = client.get(parse_qs(urlsplit(resp.headers["Location"]).query)["next"][0])
    assert again.status_code == 302 and urlsplit(again.headers["Location"]).path == "/login"
    assert responses_issued() == 0
    assert [e.outcome for e in audit.events(type="login")] == ["failure"]


@pytest.mark.parametrize("how", ["cli", "flag"])
def test_disabled_users_live_session_yields_no_assertion(client: FlaskClient, sp: OneLoginSp, how: str) -> None:
    url, _ = sp.redirect_login("rs")
    form = read_post_form(sign_in_and_continue(client, client.get(local(url))).get_data(as_text=True))
    assert form.action == SP_ACS_URL
    assert responses_issued() == 1
    if how == "cli":  # `idp user disable`: ends the sessions at once
        assert directory.disable_user("alice", actor="test") == 1
    else:  # the flag flipped underneath a live session (another process, a directory edit)
        user = directory.require_user("alice")
        user.enabled = False
        db.session.commit()
    url, _ = sp.redirect_login("rs")
    resp = client.get(local(url))
    assert resp.status_code == 302 and urlsplit(resp.headers["Location"]).path == "/login"
    page = sign_in_and_continue(client, resp)
    assert 'id="saml-post"' not in page.get_data(as_text=True)
    assert responses_issued() == 1


def test_force_authn_asks_for_the_password_again(client: FlaskClient, sp: OneLoginSp, frozen_clock: Any) -> None:
    url, _ = sp.redirect_login("rs")
    sign_in_and_continue(client, client.get(local(url)))
    frozen_clock.advance(seconds=5)
    url, request_id = sp.redirect_login("rs", force_authn=True)
    resp = client.get(local(url))
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query)["force"] == ["1"]
    # Skipping the login page does not help: the old sign-in predates the request.
    skipped = client.get(parse_qs(location.query)["next"][0])
    assert skipped.status_code == 302 and urlsplit(skipped.headers["Location"]).path == "/login"
    page = client.get(resp.headers["Location"])
    assert 'name="password"' in page.get_data(as_text=True), "the login form is shown despite the session"
    frozen_clock.advance(seconds=2)
    done = client.post(form_action(page.get_data(as_text=True)), data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "username": "alice", "password": PASSWORD})
    assert done.status_code == 200  # the login POST answers the parked request itself
    form = read_post_form(done.get_data(as_text=True))
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    assert root.get("InResponseTo") == request_id
    assert responses_issued() == 2


def test_is_passive_without_session_answers_no_passive_to_the_acs(client: FlaskClient, sp: OneLoginSp) -> None:
    url, request_id = sp.redirect_login("keep-me", is_passive=True)
    resp = client.get(local(url))
    assert resp.status_code == 200
    form = read_post_form(resp.get_data(as_text=True))
    assert form.action == SP_ACS_URL
    assert form.fields["RelayState"] == "keep-me"
    assert status_codes(form.fields) == [f"urn:oasis:names:tc:SAML:2.0:status:{s}" for s in ("Responder", "NoPassive")]
    auth = sp.process_response(form, request_id)
    assert "was Responder" in (auth.get_last_error_reason() or "")
    assert not auth.is_authenticated()
    assert "passive" in (refusals()[0].reason or "")
    assert responses_issued() == 0


def test_unsupported_nameid_policy_answers_invalid_nameid_policy(client: FlaskClient, alice: None) -> None:
    sp = register(client, nameid_format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName")
    url, _ = sp.redirect_login("rs")
    form = read_post_form(client.get(local(url)).get_data(as_text=True))
    assert form.action == SP_ACS_URL
    assert status_codes(form.fields)[-1] == "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
    assert refusals()


@pytest.mark.parametrize("namespace", ["another", "its own", "blank"])
def test_a_nameid_policy_for_another_namespace_answers_invalid_nameid_policy(
        client: FlaskClient, sp: OneLoginSp, namespace: str) -> None:
    """SAML Core 3.4.1.1: an identifier qualified by another SP (or an affiliation) cannot be given; one in the
    requester's own namespace is what it gets anyway."""
    login(client, "alice", PASSWORD)
    xml, request_id = sp.post_request()
    qualifier = {"another": "https://other-sp.example.test", "its own": sp.entity_id, "blank": " "}[namespace]
    xml = xml.replace("<samlp:NameIDPolicy", f'<samlp:NameIDPolicy SPNameQualifier="{qualifier}"')
    form = read_post_form(post_request(client, xml).get_data(as_text=True))
    assert form.action == SP_ACS_URL
    auth = sp.process_response(form, request_id)
    if namespace != "another":
        assert auth.is_authenticated(), auth.get_last_error_reason()
        return
    assert status_codes(form.fields) == [f"urn:oasis:names:tc:SAML:2.0:status:{s}"
                                         for s in ("Requester", "InvalidNameIDPolicy")]
    assert not auth.is_authenticated() and responses_issued() == 0


AC = "urn:oasis:names:tc:SAML:2.0:ac:classes:"


PPT = AC + "PasswordProtectedTransport"


@pytest.mark.parametrize(("classes", "comparison", "stated"), [
    ([PPT], "exact", PPT),  # what python3-saml asks by default
    ([AC + "X509", PPT], "exact", PPT),
    ([AC + "unspecified"], "exact", PPT),
    ([AC + "X509"], "exact", None),
    ([AC + "Password"], "exact", AC + "Password"),  # a password sign-in over TLS is one with a password too
    (["https://refeds.org/profile/mfa"], "minimum", None),
    ([AC + "Password"], "minimum", PPT),
    ([PPT], "better", None),
    ([AC + "Password"], "better", PPT),
    ([AC + "Smartcard"], "maximum", PPT),
    ([AC + "Password"], "maximum", AC + "Password"),
    ([AC + "InternetProtocol"], "maximum", None),
    (["urn:example:our-own-level-3"], "minimum", None),
])
def test_requested_authn_context(client: FlaskClient, alice: None, classes: list[str], comparison: str,
                                 stated: str | None) -> None:
    """SAML Core 3.3.2.2.1: a context the password sign-in cannot meet is answered NoAuthnContext, before the
    user types a password; one it meets gets an assertion that says how it was met."""
    sp = register(client, security={"requestedAuthnContext": classes,
                                    "requestedAuthnContextComparison": comparison})
    url, request_id = sp.redirect_login("rs")
    first = client.get(local(url))
    if stated is None:
        form = read_post_form(first.get_data(as_text=True))
        assert status_codes(form.fields) == [f"urn:oasis:names:tc:SAML:2.0:status:{s}"
                                             for s in ("Responder", "NoAuthnContext")]
        assert not sp.process_response(form, request_id).is_authenticated()
        assert "RequestedAuthnContext" in (refusals()[0].reason or "")
        return
    form = read_post_form(sign_in_and_continue(client, first).get_data(as_text=True))
    auth = sp.process_response(form, request_id)
    assert auth.is_authenticated(), auth.get_last_error_reason()
    assert auth.get_nameid() == "alice"
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    refs = [e.text for e in root.iter("{urn:oasis:names:tc:SAML:2.0:assertion}AuthnContextClassRef")]
    assert refs == [stated]


def test_a_malformed_requested_authn_context_is_refused(client: FlaskClient, sp: OneLoginSp) -> None:
    xml, _ = sp.post_request()
    assert 'Comparison="exact"' in xml
    assert_refused(post_request(client, xml.replace('Comparison="exact"', 'Comparison="most"')), 400,
                   "Comparison")


@pytest.mark.parametrize("named", ["alice", "bob"])
def test_a_request_naming_its_subject_is_answered_only_for_that_user(client: FlaskClient, sp: OneLoginSp,
                                                                    named: str) -> None:
    """SAML Core 3.4.1: with a <Subject>, the assertion's subject must match it; alice signing in where the SP
    asked for bob gets AuthnFailed at the SP, no assertion."""
    make_user("bob", PASSWORD)
    url, request_id = sp.redirect_login("rs", name_id_value_req=named)
    form = read_post_form(sign_in_and_continue(client, client.get(local(url))).get_data(as_text=True))
    auth = sp.process_response(form, request_id)
    if named == "alice":
        assert auth.is_authenticated(), auth.get_last_error_reason()
        assert auth.get_nameid() == "alice"
        return
    assert status_codes(form.fields) == [f"urn:oasis:names:tc:SAML:2.0:status:{s}"
                                         for s in ("Responder", "AuthnFailed")]
    assert not auth.is_authenticated()
    assert "signed in as alice, not the Subject" in (refusals()[0].reason or "")
    assert responses_issued() == 0
    # The SP is told that much, not who is signed in: it may know users by opaque NameIDs only.
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    message = root.findtext(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusMessage")
    assert message == "the user signed in is not the Subject the request names"


def test_a_subject_we_cannot_read_is_request_unsupported(client: FlaskClient, sp: OneLoginSp) -> None:
    xml, _ = sp.post_request()
    encrypted = xml.replace("<samlp:NameIDPolicy",
                            "<saml:Subject><saml:EncryptedID/></saml:Subject><samlp:NameIDPolicy")
    assert encrypted != xml
    form = read_post_form(post_request(client, encrypted).get_data(as_text=True))
    assert status_codes(form.fields)[-1] == "urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported"
    assert responses_issued() == 0


def test_email_nameid_for_a_user_without_email(client: FlaskClient, app: Flask) -> None:
    make_user("alice", PASSWORD)
    sp = register(client, nameid_format=NAMEID_EMAIL)
    url, _ = sp.redirect_login("rs")
    page = sign_in_and_continue(client, client.get(local(url)))
    form = read_post_form(page.get_data(as_text=True))
    assert status_codes(form.fields)[-1] == "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
    assert responses_issued() == 0


def test_an_email_nameid_xml_cannot_carry_is_refused_not_rewritten(client: FlaskClient, app: Flask) -> None:
    # As a directory may hold it: written without the control character, it would name ceo@corp.test.
    make_user("alice", PASSWORD)
    db.session.execute(update(User).where(User.username == "alice").values(email="ceo\x01@corp.test"))
    db.session.commit()
    sp = register(client, nameid_format=NAMEID_EMAIL)
    url, _ = sp.redirect_login("rs")
    form = read_post_form(sign_in_and_continue(client, client.get(local(url))).get_data(as_text=True))
    assert status_codes(form.fields)[-1] == "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
    assert "ceo@corp.test" not in base64.b64decode(form.fields["SAMLResponse"]).decode()
    assert responses_issued() == 0


# --- requests refused before anything is sent ------------------------------------------------------------

def test_unknown_sp(client: FlaskClient, alice: None) -> None:
    sp = OneLoginSp(client.get("/saml/metadata").data)  # never registered
    url, _ = sp.redirect_login("rs")
    resp = client.get(local(url))
    assert_refused(resp, 400, "unknown service provider")
    assert "Unknown service provider" in resp.get_data(as_text=True)
    assert refusals()[0].sp == sp.entity_id


def test_an_issuer_longer_than_the_audit_column_is_still_audited(client: FlaskClient, alice: None) -> None:
    # PostgreSQL refused the audit row of a 3000-character Issuer, so the refusal went unrecorded.
    issuer = "https://sp.example.test/" + "x" * 3000
    xml = (f'<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
           f'ID="_long" Version="2.0" IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>{issuer}</saml:Issuer>'
           "</samlp:AuthnRequest>")
    assert_refused(post_request(client, xml), 400, "unknown service provider")
    assert refusals()[0].sp == issuer[:1024]


def test_idp_initiated_for_an_unknown_sp_is_404(client: FlaskClient) -> None:
    resp = client.get("/saml/init?sp=https://nobody.example.test/")
    assert_refused(resp, 404, "unknown service provider")


def test_acs_url_not_in_metadata(client: FlaskClient, sp: OneLoginSp) -> None:
    evil = OneLoginSp(client.get("/saml/metadata").data, acs_url="https://evil.example.test/acs")
    url, _ = evil.redirect_login("rs")
    resp = client.get(local(url))
    assert_refused(resp, 400, "ACS URL not in metadata")
    assert "evil.example.test" not in resp.get_data(as_text=True)


def test_an_acs_url_dropped_from_the_metadata_while_the_user_signs_in_gets_nothing(
        client: FlaskClient, sp: OneLoginSp, tmp_path: Any) -> None:
    url, _ = sp.redirect_login("rs")
    resp = client.get(local(url))  # parked: the user is on the login page
    # Meanwhile (on another instance, say) the SP's metadata is refreshed: it now lists another ACS only.
    moved = OneLoginSp(client.get("/saml/metadata").data, acs_url="https://sp.example.test/new-acs")
    source = tmp_path / "sp-metadata.xml"
    source.write_bytes(moved.metadata())
    row = providers.get_or_404(sp.entity_id)
    row.metadata_source = str(source)
    db.session.commit()
    assert providers.refresh(sp.entity_id, actor="test")
    db.session.commit()
    page = sign_in_and_continue(client, resp)
    assert_refused(page, 400, "ACS URL no longer in metadata")
    assert SP_ACS_URL not in page.get_data(as_text=True)
    assert responses_issued() == 0


def test_tampered_signed_post_request(client: FlaskClient, alice: None) -> None:
    sp = register(client, keys=sp_keys("signing sp"), security={"authnRequestsSigned": True})
    xml, _ = sp.post_request()
    tampered = xml.replace(SP_ACS_URL, "https://evil.example.test/acs")
    assert tampered != xml
    assert_refused(post_request(client, tampered), 400, "signature")


def test_tampered_signed_redirect_request(client: FlaskClient, alice: None) -> None:
    sp = register(client, keys=sp_keys("signing sp"), security={"authnRequestsSigned": True})
    url, _ = sp.redirect_login("original")
    tampered = url.replace("RelayState=original", "RelayState=changed")
    assert tampered != url
    assert_refused(client.get(local(tampered)), 400, "signature")
    assert client.get(local(url)).status_code == 302  # the untouched request is fine


def test_unsigned_request_when_signatures_are_required(client: FlaskClient, alice: None) -> None:
    register(client, keys=sp_keys("signing sp"), options={"require_signed_requests": True})
    unsigned = OneLoginSp(client.get("/saml/metadata").data, keys=sp_keys("signing sp"))
    url, _ = unsigned.redirect_login("rs")
    assert_refused(client.get(local(url)), 400, "unsigned")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_sha1_signed_request_refused_unless_allowed(client: FlaskClient, alice: None, binding: str) -> None:
    sha1 = {"authnRequestsSigned": True, "signatureAlgorithm": RSA_SHA1, "digestAlgorithm": SHA1}
    sp = register(client, keys=sp_keys("signing sp"), security=sha1)

    def send() -> Any:
        if binding == "redirect":
            return client.get(local(sp.redirect_login("rs")[0]))
        return post_request(client, sp.post_request()[0], "rs")

    assert_refused(send(), 400, "SHA-1")
    providers.update(sp.entity_id, SpOptions(allow_sha1=True), actor="test")
    db.session.commit()
    resp = send()
    # Accepted: on to the login page (a POST without our cookie first goes through /saml/continue).
    assert resp.status_code in (302, 303)
    assert urlsplit(resp.headers["Location"]).path.startswith(("/login", "/saml/continue/"))


def test_replayed_request_id(client: FlaskClient, sp: OneLoginSp) -> None:
    xml, _ = sp.post_request()
    first = post_request(client, xml)
    assert first.status_code == 303  # accepted, parked, decided on the same-site GET
    assert_refused(post_request(client, xml), 400, "replayed")


def test_stale_issue_instant(client: FlaskClient, sp: OneLoginSp, app: Flask, frozen_clock: Any) -> None:
    url, _ = sp.redirect_login("rs")
    frozen_clock.advance(seconds=app.extensions["idp.settings"].saml_clock_skew_seconds + 30)
    assert_refused(client.get(local(url)), 400, "IssueInstant")


def test_destination_of_another_idp(client: FlaskClient, sp: OneLoginSp) -> None:
    xml, _ = sp.post_request()
    moved = xml.replace('Destination="http://127.0.0.1:5000/saml/sso"', 'Destination="https://other.test/sso"')
    assert moved != xml
    assert_refused(post_request(client, moved), 400, "destination")


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_a_signed_request_must_name_its_destination(client: FlaskClient, alice: None, binding: str) -> None:
    """SAML Bindings 3.4.5.2 and 3.5.5.2: a signed message MUST carry Destination, so that it cannot be
    replayed to another IdP the SP trusts; an unsigned one may leave it out."""
    sp = register(client, keys=sp_keys("signing sp"), security={"authnRequestsSigned": True})
    auth = sp.auth()
    xml = OneLogin_Saml2_Authn_Request(auth.get_settings()).get_xml()
    xml = xml if isinstance(xml, str) else xml.decode()
    bare = xml.replace(f'Destination="{IDP_BASE}/saml/sso"', "")
    assert bare != xml

    def send(request: str, signed: bool) -> Any:
        if binding == "post":
            if signed:
                request = OneLogin_Saml2_Utils.add_sign(request, sp.settings["sp"]["privateKey"],
                                                        sp.settings["sp"]["x509cert"]).decode()
            return post_request(client, request, "rs")
        params = {"SAMLRequest": OneLogin_Saml2_Utils.deflate_and_base64_encode(request), "RelayState": "rs"}
        if signed:
            auth.add_request_signature(params)
        return client.get("/saml/sso?" + urlencode(params))

    assert_refused(send(bare, signed=True), 400, "signed request without Destination")
    assert responses_issued() == 0
    assert_refused(send(bare.replace('ID="', 'ID="x'), signed=False), 400, "unsigned")  # it must sign

    plain = register(client, entity_id="https://plain.example.test/sp", acs_url="https://plain.example.test/acs")
    unsigned = OneLogin_Saml2_Authn_Request(plain.auth().get_settings()).get_xml()
    unsigned = (unsigned if isinstance(unsigned, str) else unsigned.decode()).replace(
        f'Destination="{IDP_BASE}/saml/sso"', "")
    accepted = send(unsigned, signed=False)
    assert accepted.status_code in (302, 303), accepted.get_data(as_text=True)[:500]


def test_expired_continuation(client: FlaskClient) -> None:
    resp = client.get("/saml/continue/nonexistent")
    assert_refused(resp, 400, "expired")
    assert "go back to the application" in resp.get_data(as_text=True)


# --- hostile XML and compression ------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_x" Version="2.0"
 IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>&xxe;</saml:Issuer></samlp:AuthnRequest>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
 xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_x" Version="2.0"
 IssueInstant="2030-01-01T00:00:00Z"><saml:Issuer>&lol9;</saml:Issuer></samlp:AuthnRequest>"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_hostile_xml_is_refused_quickly(client: FlaskClient, sp: OneLoginSp, payload: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        resp = post_request(client, payload)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 1024 * 1024, "no entity expansion"
    body = resp.get_data(as_text=True)
    assert "root:" not in body and "lollol" not in body
    assert_refused(resp, 400, "DTD")


def test_deflate_bomb_via_redirect(client: FlaskClient, sp: OneLoginSp) -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(b"<a>" + b"A" * (100 * 1024 * 1024)) + deflater.flush()
    assert len(bomb) < 200 * 1024
    query = urlencode({"SAMLRequest": base64.b64encode(bomb).decode()})
    tracemalloc.start()
    started = time.perf_counter()
    try:
        resp = client.get("/saml/sso?" + query)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 1024 * 1024, f"inflating used {peak} bytes"
    assert_refused(resp, 400, "too large")


def test_garbage_is_a_clear_400(client: FlaskClient, sp: OneLoginSp) -> None:
    assert_refused(client.get("/saml/sso?SAMLRequest=%%%not-base64"), 400, "base64")
    assert_refused(client.post("/saml/sso", data={"SAMLRequest": base64.b64encode(b"<a><b></a>").decode()}),
                   400, "")
    assert_refused(client.get("/saml/sso"), 400, "no SAMLRequest")


def test_what_is_not_one_authn_request_is_refused(client: FlaskClient, sp: OneLoginSp) -> None:
    # Another message sent to the SSO endpoint; then an AuthnRequest naming two issuers, where which one counts
    # would be up to the parser.
    issuer = f"<saml:Issuer>{sp.entity_id}</saml:Issuer>"
    head = (f'xmlns:samlp="{SAMLP}" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_m1" Version="2.0" '
            'IssueInstant="2030-01-01T00:00:00Z"')
    logout = f"<samlp:LogoutRequest {head}>{issuer}<saml:NameID>alice</saml:NameID></samlp:LogoutRequest>"
    assert_refused(post_request(client, logout), 400, "not an AuthnRequest")
    twice = f"<samlp:AuthnRequest {head}>{issuer}<saml:Issuer>https://other.example.test/</saml:Issuer>" \
            "</samlp:AuthnRequest>"
    assert_refused(post_request(client, twice), 400, "malformed request")
    assert responses_issued() == 0


# --- where answers go ------------------------------------------------------------------------------------

def test_acs_is_chosen_only_among_registered_endpoints(client: FlaskClient, alice: None) -> None:
    """URL, index or neither: the answer goes to the metadata endpoint so named, or the default one."""
    sp = OneLoginSp(client.get("/saml/metadata").data)
    second = '<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" ' \
             'Location="https://sp.example.test/acs2" index="0"/>'
    metadata = sp.metadata().decode().replace("</md:SPSSODescriptor>", second + "</md:SPSSODescriptor>")
    register_sp(metadata.encode())
    login(client, "alice", PASSWORD)

    def answered_at(xml: str) -> str:
        resp = post_request(client, xml)
        assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
        return read_post_form(resp.get_data(as_text=True)).action

    xml, _ = sp.post_request()
    assert answered_at(xml) == SP_ACS_URL
    bare = sp.post_request()[0].replace(f'AssertionConsumerServiceURL="{SP_ACS_URL}"', "")
    assert "AssertionConsumerServiceURL" not in bare
    # SAML Metadata 2.2.3: with none marked isDefault, the first in the metadata, whatever the indexes.
    assert answered_at(bare) == SP_ACS_URL, "no URL: the first endpoint is the default"
    for index in ("0", "00"):  # an xs:unsignedShort: "00" is 0
        by_index = sp.post_request()[0].replace(f'AssertionConsumerServiceURL="{SP_ACS_URL}"',
                                                f'AssertionConsumerServiceIndex="{index}"')
        assert answered_at(by_index) == "https://sp.example.test/acs2"
    for index in ("7", "1" * 5000):  # int() refuses a string of more than 4,300 digits: no 500 for that
        unknown_index = sp.post_request()[0].replace(f'AssertionConsumerServiceURL="{SP_ACS_URL}"',
                                                     f'AssertionConsumerServiceIndex="{index}"')
        assert_refused(post_request(client, unknown_index), 400, "ACS index")


def test_a_processing_instruction_in_a_request_is_refused(client: FlaskClient, sp: OneLoginSp) -> None:
    # <Issuer>sp<?x?>.evil</Issuer> reads as "sp", while a signature would cover ".evil" as well.
    xml, _ = sp.post_request()
    with_pi = xml.replace("</saml:Issuer>", "<?x?>.evil.example</saml:Issuer>", 1)
    assert with_pi != xml
    assert_refused(post_request(client, with_pi), 400, "processing instruction")


def test_requested_nameid_format_must_match_the_configured_one(client: FlaskClient, alice: None) -> None:
    """An SP set to an opaque persistent NameID cannot obtain the email address by asking for it."""
    register(client, options={"nameid_format": "persistent"})
    asks_email = OneLoginSp(client.get("/saml/metadata").data, nameid_format=NAMEID_EMAIL)
    login(client, "alice", PASSWORD)
    url, request_id = asks_email.redirect_login("rs")
    form = read_post_form(client.get(local(url)).get_data(as_text=True))
    auth = asks_email.process_response(form, request_id)
    xml = base64.b64decode(form.fields["SAMLResponse"]).decode()
    assert "alice@example.test" not in xml
    assert "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy" in xml
    assert auth.get_errors() != [] and "emailAddress requested" in (auth.get_last_error_reason() or "")
    # Answered, if with a refusal: the request is used up, as an assertion would have used it.
    assert_refused(client.get(local(url)), 400, "replayed request")




def test_a_request_id_used_on_one_binding_is_refused_on_the_other(client: FlaskClient, sp: OneLoginSp) -> None:
    xml, _ = sp.post_request()
    assert post_request(client, xml).status_code == 303
    deflated = zlib.compress(xml.encode())[2:-4]
    replay = client.get("/saml/sso?" + urlencode({"SAMLRequest": base64.b64encode(deflated).decode()}))
    assert_refused(replay, 400, "replayed")


def test_signing_never_starts_a_program(client: FlaskClient, alice: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """pysaml2's default backend runs xmlsec1 per signature (~40/s per core); ours must sign in-process,
    encryption included. An injected fault makes any subprocess during the sign-in fail the test."""
    import subprocess

    encrypting = register(client, keys=sp_keys("encrypting sp"), security={"wantAssertionsEncrypted": True},
                          options={"encrypt_assertion": True})

    def no_subprocess(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a program was started while signing: {args[:1]}")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_subprocess)
    login(client, "alice", PASSWORD)
    url, request_id = encrypting.redirect_login("rs")
    form = read_post_form(client.get(local(url)).get_data(as_text=True))
    root = etree.fromstring(base64.b64decode(form.fields["SAMLResponse"]))
    assert root.find("{urn:oasis:names:tc:SAML:2.0:assertion}EncryptedAssertion") is not None
    monkeypatch.undo()
    auth = encrypting.process_response(form, request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()


def test_a_head_request_does_not_use_up_the_request(client: FlaskClient, sp: OneLoginSp) -> None:
    url, _ = sp.redirect_login("rs")
    assert client.head(local(url)).status_code == 200  # a link checker or prefetcher
    assert client.get(local(url)).status_code == 302  # the browser's own visit still works
    assert refusals() == []


def test_a_head_request_does_not_answer_a_parked_request(client: FlaskClient, sp: OneLoginSp) -> None:
    url, request_id = sp.redirect_login("rs")
    parked = urlsplit(client.get(local(url)).headers["Location"])
    resume = parse_qs(parked.query)["next"][0]
    assert resume.startswith("/saml/continue/")
    login(client, "alice", PASSWORD)  # signed in elsewhere (another tab): the parked request still waits
    assert client.head(resume).status_code == 200  # a link checker or prefetcher
    assert responses_issued() == 0
    form = read_post_form(client.get(resume).get_data(as_text=True))  # the browser's own visit is answered
    assert sp.process_response(form, request_id).is_authenticated()


def test_a_request_whose_answer_failed_on_the_database_can_be_sent_again(
        client: FlaskClient, sp: OneLoginSp) -> None:
    """The request's ID is claimed with the answer: the database lost as the answer is recorded is a 503, and
    the browser's retry of the same request is answered, not refused as a replay (Redis claims at once, and
    gives the claim back when the request's transaction does not commit)."""
    url, _ = sp.redirect_login("rs")
    sign_in_and_continue(client, client.get(local(url)))
    url, request_id = sp.redirect_login("rs")
    with audit_insert_lost("saml.response"):
        assert client.get(local(url)).status_code == 503
    again = client.get(local(url))
    assert again.status_code == 200, again.get_data(as_text=True)[:500]
    form = read_post_form(again.get_data(as_text=True))
    assert etree.fromstring(base64.b64decode(form.fields["SAMLResponse"])).get("InResponseTo") == request_id
    # Once answered, it is used.
    assert_refused(client.get(local(url)), 400, "replayed request")
