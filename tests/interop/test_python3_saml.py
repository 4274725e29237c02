"""python3-saml (SAML-Toolkits) as the service provider, over real HTTP against the running IdP.

The SP library builds the AuthnRequests and validates every Response in strict mode: signatures (message
and assertion) against the certificate it read from our /saml/metadata, audience, recipient, destination,
InResponseTo and validity. The browser is a ``requests.Session`` that signs in through the real login form.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lxml.etree
import pytest
import requests
from conftest import LiveServer
from helpers import make_user
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from saml_peers import (
    ATTRIBUTE_MAP,
    NAMEID_EMAIL,
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    OneLoginSp,
    PostedForm,
    idp_metadata,
    is_login_page,
    read_post_form,
    register_sp,
    sp_keys,
    submit_login,
)
from sqlalchemy import select, update

from idp import audit
from idp.config import Settings
from idp.extensions import db
from idp.keys import generate_key_pair
from idp.saml import providers
from idp.state import sessions as session_state
from idp.store import PersistentNameId, User

PASSWORD = "correct horse battery"
RELAY_STATE = "https://sp.example.test/after?tab=1&q=<a \"b\">"


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, groups=["admins", "staff"], email="alice@example.test",
              display_name="Alice Liddell")
    return live_server


def make_sp(idp: Any, **kwargs: Any) -> OneLoginSp:
    """A python3-saml SP trusting our metadata, registered with the IdP (release map: mail, groups, name)."""
    options = kwargs.pop("options", {})
    sp = OneLoginSp(idp_metadata(idp.url), **kwargs)
    register_sp(sp.metadata(), attribute_map=tuple(ATTRIBUTE_MAP), **options)
    return sp


def through_login(http: requests.Session, page: requests.Response) -> PostedForm:
    """Sign in if the IdP asks for it, then return the auto-posting form it serves."""
    if is_login_page(page):
        page = submit_login(http, page, "alice", PASSWORD)
    assert page.status_code == 200, page.text[:2000]
    return read_post_form(page.text)


def assert_valid(auth: OneLogin_Saml2_Auth) -> None:
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.is_authenticated()


def assert_alice(auth: OneLogin_Saml2_Auth) -> None:
    attributes = auth.get_attributes()
    assert attributes["groups"] == ["admins", "staff"]
    assert attributes["mail"] == ["alice@example.test"]
    assert attributes["displayName"] == ["Alice Liddell"]


def redirect_sign_in(http: requests.Session, sp: OneLoginSp, relay_state: str = RELAY_STATE) -> OneLogin_Saml2_Auth:
    url, request_id = sp.redirect_login(relay_state)
    form = through_login(http, http.get(url, timeout=10))
    assert form.fields["RelayState"] == relay_state
    auth = sp.process_response(form, request_id)
    assert_valid(auth)
    return auth


def test_sp_initiated_with_the_redirect_binding(idp: Any) -> None:
    sp = make_sp(idp)
    http = requests.Session()
    url, request_id = sp.redirect_login(RELAY_STATE)
    page = http.get(url, timeout=10)
    assert is_login_page(page), "an anonymous browser is asked to sign in first"
    page = submit_login(http, page, "alice", PASSWORD)
    # The auto-posting page: its one script runs by nonce, it cannot be framed, and it works without
    # JavaScript (a visible Continue button).
    csp = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in page.text
    assert "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
    assert '<button type="submit">Continue</button>' in page.text
    assert "&lt;a &#34;b&#34;&gt;" in page.text or "&lt;a &quot;b&quot;&gt;" in page.text, "RelayState escaped"
    form = read_post_form(page.text)
    assert form.fields["RelayState"] == RELAY_STATE
    auth = sp.process_response(form, request_id)
    assert_valid(auth)
    assert auth.get_nameid() == "alice"
    assert_alice(auth)
    assert auth.get_session_index()


def test_a_control_character_in_a_released_value_is_left_out_not_a_failed_sign_in(idp: Any) -> None:
    # As a directory's attribute would arrive (a directory sign-in writes the shadow row as the directory says;
    # only the admin's own input is refused): XML cannot carry it, so the assertion leaves that character out.
    # Not from a NameID, which names the account at the SP: that is refused (test_saml_sso_refusals).
    db.session.execute(update(User).where(User.username == "alice").values(
        display_name="Alice\x07 Liddell\ufffe", email="alice@example.test\x1b"))
    db.session.commit()
    auth = redirect_sign_in(requests.Session(), make_sp(idp))
    assert_alice(auth)
    assert auth.get_nameid() == "alice"


def test_sp_initiated_with_the_post_binding(idp: Any) -> None:
    sp = make_sp(idp, nameid_format=NAMEID_EMAIL)
    http = requests.Session()
    xml, request_id = sp.post_request()
    page = http.post(idp.url + "/saml/sso", timeout=10, data={
        "SAMLRequest": base64.b64encode(xml.encode()).decode(), "RelayState": RELAY_STATE,
    })
    form = through_login(http, page)
    assert form.fields["RelayState"] == RELAY_STATE
    auth = sp.process_response(form, request_id)
    assert_valid(auth)
    assert auth.get_nameid() == "alice@example.test"
    assert auth.get_nameid_format() == NAMEID_EMAIL
    assert_alice(auth)


def test_cross_site_post_reaches_a_signed_in_user_without_a_second_prompt(idp: Any) -> None:
    """Browsers do not send our SameSite=Lax cookie with an SP's cross-site POST; the IdP must still see
    the session (through a same-site redirect) instead of asking again or answering NoPassive."""
    sp = make_sp(idp)
    http = requests.Session()
    redirect_sign_in(http, sp)  # signs alice in
    for passive in (False, True):
        xml, request_id = sp.post_request(is_passive=passive)
        cross_site = requests.post(idp.url + "/saml/sso", allow_redirects=False, timeout=10, data={
            "SAMLRequest": base64.b64encode(xml.encode()).decode(), "RelayState": RELAY_STATE})
        assert cross_site.status_code == 303
        page = http.get(idp.url + cross_site.headers["Location"], timeout=10)
        auth = sp.process_response(read_post_form(page.text), request_id)
        assert_valid(auth)
        assert_alice(auth)


def test_signed_authn_request(idp: Any) -> None:
    sp = make_sp(idp, keys=sp_keys("python3-saml signing sp"), security={"authnRequestsSigned": True},
                 options={"require_signed_requests": True})
    http = requests.Session()
    url, _ = sp.redirect_login(RELAY_STATE)
    assert "Signature=" in url and "SigAlg=" in url
    auth = redirect_sign_in(http, sp)
    assert_alice(auth)


def test_idp_initiated(idp: Any) -> None:
    sp = make_sp(idp)
    http = requests.Session()
    page = http.get(idp.url + "/saml/init", params={"sp": sp.entity_id, "RelayState": "/dashboard"}, timeout=10)
    form = through_login(http, page)
    assert form.fields["RelayState"] == "/dashboard"
    auth = sp.process_response(form, None)
    assert_valid(auth)
    assert auth.get_nameid() == "alice"
    assert_alice(auth)


def test_an_existing_session_signs_in_without_the_login_page(idp: Any) -> None:
    sp = make_sp(idp)
    http = requests.Session()
    redirect_sign_in(http, sp)
    url, request_id = sp.redirect_login(RELAY_STATE)
    page = http.get(url, timeout=10)
    assert not is_login_page(page)
    assert_valid(sp.process_response(read_post_form(page.text), request_id))


def test_a_session_gives_an_sp_the_same_persistent_nameid_until_its_format_changes(idp: Any) -> None:
    """Single sign-on again in the same browser: the persistent NameID and SessionIndex the session recorded for
    the SP (the bridge takes them from there); once the admin switches the SP to email addresses, the address."""
    sp = make_sp(idp, options={"nameid_format": "persistent"})  # the SP asks for no format: the IdP's decides
    http = requests.Session()
    first = redirect_sign_in(http, sp)
    again = redirect_sign_in(http, sp)
    assert first.get_nameid_format() == NAMEID_PERSISTENT
    assert (again.get_nameid(), again.get_session_index()) == (first.get_nameid(), first.get_session_index())
    assert db.session.scalars(select(PersistentNameId.value)).all() == [first.get_nameid()]
    providers.update(sp.entity_id, providers.SpOptions(nameid_format="email"), actor="test")
    db.session.commit()
    switched = redirect_sign_in(http, sp)
    assert (switched.get_nameid_format(), switched.get_nameid()) == (NAMEID_EMAIL, "alice@example.test")


def test_persistent_nameid_is_stable_per_sp_and_differs_between_sps(idp: Any) -> None:
    sp1 = make_sp(idp, nameid_format=NAMEID_PERSISTENT)
    sp2 = make_sp(idp, nameid_format=NAMEID_PERSISTENT, entity_id="https://sp2.example.test/metadata",
                  acs_url="https://sp2.example.test/acs", slo_url=None)
    first = redirect_sign_in(requests.Session(), sp1)
    again = redirect_sign_in(requests.Session(), sp1)  # a new browser: a new sign-in, the same identifier
    other = redirect_sign_in(requests.Session(), sp2)
    assert first.get_nameid_format() == NAMEID_PERSISTENT
    assert first.get_nameid() == again.get_nameid()
    assert other.get_nameid() != first.get_nameid()
    assert "alice" not in first.get_nameid() and "alice" not in other.get_nameid()
    assert first.get_nameid_spnq() == sp1.entity_id
    # Single Logout will need to reach both SPs by the NameID and SessionIndex they were given.
    db.session.expire_all()
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    participants = {p.name_id: p for sid in session_state.user_session_ids(alice.id)
                    for p in session_state.participants(sid)}
    assert set(participants) == {first.get_nameid(), other.get_nameid()}
    assert participants[other.get_nameid()].session_index == other.get_session_index()
    issued = audit.events(type="saml.response")
    assert len(issued) == 3 and issued[0].sp == sp2.entity_id and issued[0].username == "alice"
    assert issued[0].details["name_id"] == other.get_nameid()
    assert issued[0].details["attributes"] == ["mail", "groups", "displayName"]
    assert issued[0].details["signed_assertion"] and issued[0].details["signed_response"]


def test_transient_nameid_differs_each_time(idp: Any) -> None:
    sp = make_sp(idp, nameid_format=NAMEID_TRANSIENT)
    http = requests.Session()
    first = redirect_sign_in(http, sp)
    second = redirect_sign_in(http, sp)
    assert first.get_nameid_format() == NAMEID_TRANSIENT
    assert first.get_nameid() != second.get_nameid()


def test_encrypted_assertion(idp: Any) -> None:
    sp = make_sp(idp, keys=sp_keys("python3-saml encrypting sp"),
                 security={"wantAssertionsEncrypted": True}, options={"encrypt_assertion": True})
    http = requests.Session()
    url, request_id = sp.redirect_login(RELAY_STATE)
    form = through_login(http, http.get(url, timeout=10))
    xml = base64.b64decode(form.fields["SAMLResponse"])
    assert b"EncryptedAssertion" in xml and b"alice" not in xml
    auth = sp.process_response(form, request_id)
    assert_valid(auth)
    assert auth.get_nameid() == "alice"
    assert_alice(auth)
    assert audit.events(type="saml.response")[0].details["encrypted"] is True
    assert _cipher(xml) == "http://www.w3.org/2009/xmlenc11#aes256-gcm"  # the SP's metadata names none


def _cipher(response: bytes) -> str:
    """The block cipher of a response's EncryptedAssertion."""
    found = lxml.etree.fromstring(response).find(
        ".//{http://www.w3.org/2001/04/xmlenc#}EncryptedData/{http://www.w3.org/2001/04/xmlenc#}EncryptionMethod")
    assert found is not None
    return str(found.get("Algorithm"))


def test_an_assertion_is_encrypted_with_a_cipher_the_sps_metadata_lists(idp: Any) -> None:
    """SAML Metadata 2.4.1.1: md:EncryptionMethod says what the SP can decrypt; an older SP lists AES-CBC only.
    python3-saml (xmlsec) decrypts what it is sent with the cipher its metadata listed."""
    cbc = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
    sp = OneLoginSp(idp_metadata(idp.url), keys=sp_keys("python3-saml encrypting sp"),
                    security={"wantAssertionsEncrypted": True})
    metadata = re.sub(rb'(<md:KeyDescriptor use="encryption">.*?</ds:KeyInfo>)',
                      rb'\1<md:EncryptionMethod Algorithm="' + cbc.encode() + rb'"/>', sp.metadata(), flags=re.DOTALL)
    assert cbc.encode() in metadata
    register_sp(metadata, attribute_map=tuple(ATTRIBUTE_MAP), encrypt_assertion=True)
    http = requests.Session()
    url, request_id = sp.redirect_login(RELAY_STATE)
    form = through_login(http, http.get(url, timeout=10))
    assert _cipher(base64.b64decode(form.fields["SAMLResponse"])) == cbc
    auth = sp.process_response(form, request_id)
    assert_valid(auth)
    assert auth.get_nameid() == "alice"


def test_a_key_kept_in_files_rotates_without_failing_an_sp_that_fetched_the_metadata_before(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """IDP_SIGNING_PUBLISHED_CERT_FILES, as deploy/README.md has it: two files set once, next and previous, both
    holding the current certificate. The new certificate goes into next, then the signing pair is swapped (as a
    rotated Kubernetes Secret lands): a python3-saml SP that fetched the metadata in between accepts what the new
    key signs, and previous keeps the old certificate published for what it signed."""
    old_key, old_cert = generate_key_pair("127.0.0.1")
    new_key, new_cert = generate_key_pair("127.0.0.1")
    key, cert = tmp_path / "idp.key", tmp_path / "idp.crt"
    key.write_bytes(old_key)
    key.chmod(0o600)
    cert.write_bytes(old_cert)
    following, previous = tmp_path / "next.crt", tmp_path / "previous.crt"
    for published in (following, previous):
        published.write_bytes(old_cert)
    server = LiveServer(make_settings, signing_key_file=key, signing_cert_file=cert,
                        signing_published_cert_files=f"{following},{previous}")
    try:
        with server.app.app_context():
            make_user("alice", PASSWORD, groups=["admins", "staff"], email="alice@example.test",
                      display_name="Alice Liddell")
            assert len(rsa_kids(server.url)) == 1  # at rest: the current certificate, once
            following.write_bytes(new_cert)
            sp = make_sp(server)  # its metadata fetched now, once
            signing = OneLogin_Saml2_IdPMetadataParser.parse(idp_metadata(server.url).decode())["idp"]
            assert len(signing["x509certMulti"]["signing"]) == 2
            redirect_sign_in(requests.Session(), sp)  # signed with the old key

            key.write_bytes(new_key)
            cert.write_bytes(new_cert)
            assert_alice(redirect_sign_in(requests.Session(), sp))  # signed with the new one, still accepted
            assert len(rsa_kids(server.url)) == 2  # the old one still published: ID tokens it signed verify
            previous.write_bytes(new_cert)
            assert len(rsa_kids(server.url)) == 1
    finally:
        server.stop()
        with server.app.app_context():
            db.engine.dispose()


def rsa_kids(base: str) -> list[str]:
    return [k["kid"] for k in requests.get(f"{base}/oauth/jwks", timeout=10).json()["keys"] if k["kty"] == "RSA"]
